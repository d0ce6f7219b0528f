#!/usr/bin/env bash
# Start (installing if missing) the local services the test suite talks to.
set -euo pipefail

ensure_redis() {
  if command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
    return
  fi
  if ! command -v redis-server >/dev/null; then
    apt_install redis-server redis-tools
  fi
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 50); do
    redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG && return
    sleep 0.1
  done
  echo "redis did not start" >&2
  exit 1
}

apt_install() {
  if [ -z "${APT_UPDATED:-}" ]; then
    apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Prometheus and promtool (tests start their own Prometheus on a free port).
ensure_prometheus() {
  command -v prometheus >/dev/null && command -v promtool >/dev/null && return
  apt_install prometheus
  # the package may start a system instance; the tests do not need it
  (systemctl stop prometheus prometheus-node-exporter 2>/dev/null || service prometheus stop 2>/dev/null || true) >/dev/null 2>&1
}

# nginx for the scale-out test (two replicas behind a balancer on loopback).
ensure_nginx() {
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || apt_install nginx-light
}

# kubectl for rendering deploy/k8s with kustomize itself (test_deploy_files).
ensure_kubectl() {
  command -v kubectl >/dev/null || apt_install kubernetes-client
}

ensure_redis
ensure_prometheus
ensure_nginx
ensure_kubectl
