"""Real processes for tests that need them: `router serve`, redis-server, nginx."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

PROVIDER_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GROQ_API_KEY", "TOGETHER_API_KEY", "LOCAL_LLM_URL")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def send_raw(port: int, request: bytes, until: bytes | None = None) -> bytes:
    """Bytes no HTTP client would send, written to the proxy's socket; the answer as read
    until the connection closes (or ``until`` shows up, for a server that keeps it open)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(request)
        answer = b""
        while until is None or until not in answer:
            received = conn.recv(65536)
            if not received:
                break
            answer += received
    return answer


#: How long a test waits for something to become ready (a server to answer, a process to
#: start). A wait for readiness, not an assertion of speed: under load a cold start (litellm's
#: import alone) takes tens of seconds, so this is generous; a ready server ends it at once.
START_WAIT_S = 120.0


def wait_until(condition: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.02) -> float:
    """Poll ``condition`` until it returns something true; the seconds that took.

    Connection errors while polling count as "not yet"; an AssertionError naming ``what``
    when ``timeout_s`` passes first.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    while True:
        try:
            if condition():
                return time.monotonic() - started
        except (OSError, httpx.HTTPError):
            pass
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s}s")
        time.sleep(interval_s)


class RouterProcess:
    """`python -m router serve` on a free port, with its stderr kept in a file."""

    def __init__(self, policy: Path, *, env: dict[str, str] | None = None, workers: int = 1) -> None:
        self.port = free_port()
        self.log = Path(tempfile.mkstemp(prefix="router-", suffix=".log")[1])
        base = {k: v for k, v in os.environ.items() if k not in PROVIDER_KEYS and not k.startswith("ROUTER_")}
        self.env = {**base, "ROUTER_LOG_LEVEL": "warning", **(env or {})}
        self.args = [
            sys.executable,
            "-m",
            "router",
            "serve",
            "--policy",
            str(policy),
            "--port",
            str(self.port),
            "--workers",
            str(workers),
        ]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RouterProcess:
        self.process = subprocess.Popen(
            self.args, env=self.env, stdout=subprocess.DEVNULL, stderr=self.log.open("wb"), start_new_session=True
        )
        wait_until(self._healthy, START_WAIT_S, "router start")
        return self

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"router serve exited with {self.process.returncode} at start:\n{self.logs()}")
        return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200

    def stop(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait(timeout=10)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def __enter__(self) -> RouterProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisServer:
    """A private redis-server on a free port, so a test may stop, freeze and restart it."""

    def __init__(self, *extra: str) -> None:
        self.port = free_port()
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(
                "redis-server is not installed: run scripts/services.sh (make test does) or apt-get install redis-server"
            )
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            *self.extra,
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._answers_ping, START_WAIT_S, "redis start")
        return self

    def _answers_ping(self) -> bool:
        assert self.process is not None and self.process.poll() is None, "redis-server exited at start"
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith(b"+PONG")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)  # a frozen server cannot act on SIGTERM
            self.process.terminate()
            self.process.wait(timeout=10)

    def restart(self) -> RedisServer:
        """Stop and start again on the same port (empty: nothing is saved)."""
        self.stop()
        return self.start()

    def freeze(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class NginxBalancer:
    """Debian's nginx on loopback in front of several replicas (SSE buffering off)."""

    def __init__(self, directory: Path, upstream_ports: list[int]) -> None:
        self.directory = directory
        self.port = free_port()
        servers = "\n".join(f"    server 127.0.0.1:{port};" for port in upstream_ports)
        temp = {name: directory / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
        for path in temp.values():
            path.mkdir(parents=True, exist_ok=True)
        self.config = directory / "nginx.conf"
        self.config.write_text(
            f"""
daemon off;
worker_processes 1;
error_log {directory}/error.log warn;
pid {directory}/nginx.pid;
events {{ worker_connections 512; }}
http {{
  access_log off;
  client_body_temp_path {temp["body"]};
  proxy_temp_path {temp["proxy"]};
  fastcgi_temp_path {temp["fastcgi"]};
  uwsgi_temp_path {temp["uwsgi"]};
  scgi_temp_path {temp["scgi"]};
  upstream routers {{
{servers}
    keepalive 32;
  }}
  server {{
    listen 127.0.0.1:{self.port};
    client_max_body_size 32m;
    location / {{
      proxy_pass http://routers;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 300s;
    }}
  }}
}}
"""
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> NginxBalancer:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.access(binary, os.X_OK):
            pytest.fail(
                "nginx is not installed: run scripts/services.sh (make test does) or apt-get install nginx-light"
            )
        self.process = subprocess.Popen(
            [binary, "-c", str(self.config), "-p", str(self.directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(
            lambda: socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close() is None,
            START_WAIT_S,
            "nginx start",
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
