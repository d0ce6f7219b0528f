"""Shared state under a burst (issue 9, item 10): the Redis store keeps a bounded pool of
connections opened once and reused, so a burst waits for a connection instead of opening one
per call (each with its handshake) under the outage deadline; the deadline still bounds an
outage. Real redis-server processes; the product-level test runs two `router serve` replicas."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client import CollectorRegistry, Gauge

from router.auth import digest_of
from router.state.base import BudgetScope, Reservation, StateBusy, StateUnavailable
from router.state.memory import MemoryStateStore
from router.state.redis_store import RedisStateStore
from router.state.resilient import ResilientStore
from tests.fakes import FakeOpenAIUpstream
from tests.harness import write_policy
from tests.processes import RedisServer, RouterProcess

TIMEOUT_S = 0.25  # ROUTER_REDIS_TIMEOUT_MS's default


@pytest.fixture()
def server() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


def _connections(server: RedisServer) -> tuple[int, int]:
    """(clients connected now, connections ever accepted), not counting this look."""
    admin = redis.Redis(port=server.port, socket_timeout=2)
    try:
        clients, stats = admin.info("clients"), admin.info("stats")
        return int(clients["connected_clients"]) - 1, int(stats["total_connections_received"]) - 1
    finally:
        admin.close()


async def test_1000_concurrent_reserves_from_two_cold_instances_admit_exactly_what_fits(server):
    stores = [RedisStateStore(server.url, timeout_s=TIMEOUT_S) for _ in range(2)]  # not opened beforehand
    try:
        amount, room = 77, 130
        scope = BudgetScope(name="team:burst", window="2026-11", limit_micros=room * amount, window_ttl_s=3600)
        results = await asyncio.gather(*[stores[i % 2].reserve(scope, f"r{i}", amount, 60) for i in range(1000)])
        assert sum(r.admitted for r in results) == room
        assert all(r.spent_micros + r.reserved_micros <= scope.limit_micros for r in results)
        assert await stores[1].budget_usage(scope) == Reservation(True, 0, room * amount)
    finally:
        for store in stores:
            await store.aclose()


async def test_bursts_reuse_a_bounded_pool_of_connections_opened_once(server):
    store = RedisStateStore(server.url, timeout_s=TIMEOUT_S, max_connections=8)
    scope = BudgetScope(name="key:pool", window="w", limit_micros=10**12, window_ttl_s=60)
    try:
        await store.self_test()  # at start-up: scripts checked, pool opened
        connected, accepted = _connections(server)
        assert connected == 8
        for burst in range(3):
            results = await asyncio.gather(*[store.reserve(scope, f"{burst}-{i}", 1, 60) for i in range(500)])
            assert all(r.admitted for r in results)
        assert _connections(server) == (8, accepted + 1)  # + this second look: none opened for the bursts
    finally:
        await store.aclose()


async def test_a_burst_against_a_hung_redis_fails_every_call_within_one_deadline(server):
    store = RedisStateStore(server.url, timeout_s=TIMEOUT_S, max_connections=8)
    scope = BudgetScope(name="key:hung", window="w", limit_micros=10**9, window_ttl_s=60)
    try:
        await store.self_test()
        server.freeze()
        try:
            started = time.monotonic()
            outcomes = await asyncio.gather(
                *[store.reserve(scope, f"r{i}", 1, 60) for i in range(400)], return_exceptions=True
            )
            elapsed = time.monotonic() - started
        finally:
            server.thaw()
        assert all(isinstance(o, StateUnavailable) and not isinstance(o, StateBusy) for o in outcomes)
        # 400 calls over 8 connections: the waiters fail with the first timeouts, not 50 deadlines later
        assert elapsed < 2 * store.deadline_s + 0.3, f"{elapsed:.2f}s"
        assert (await store.reserve(scope, "after", 1, 60)).admitted
    finally:
        await store.aclose()


async def test_waiting_too_long_for_a_connection_refuses_the_call_without_marking_the_store_down(server):
    redis_store = RedisStateStore(server.url, timeout_s=TIMEOUT_S, max_connections=1, pool_wait_s=0.0)
    up = Gauge("state_store_up", "test", registry=CollectorRegistry())
    store = ResilientStore(redis_store, MemoryStateStore(), up)
    scope = BudgetScope(name="key:busy", window="w", limit_micros=10**9, window_ttl_s=60)
    try:
        assert await redis_store.ping()
        outcomes = await asyncio.gather(
            *[store.reserve(scope, f"r{i}", 1, 60) for i in range(50)], return_exceptions=True
        )
        refused = [o for o in outcomes if isinstance(o, BaseException)]
        assert refused and all(isinstance(o, StateBusy) for o in refused)
        assert store.is_up and up._value.get() == 1
        assert (await store.reserve(scope, "next", 1, 60)).admitted  # not "marked down" for a second
    finally:
        await store.aclose()


# through the product ------------------------------------------------------------------------

BUDGET_KEY = "sk-tr-burst-0123456789"


def _large_budget_policy(upstream_url: str) -> str:
    return f"""
    version: 1
    tiers: [standard]
    providers:
      up: {{type: openai, base_url: "{upstream_url}", api_key: sk-x}}
    models:
      model-a: {{provider: up, upstream: gpt-4o-mini, tier: standard, price: {{input: 1, output: 1}}, context_window: 128000}}
    routes: {{standard: {{tier: standard}}}}
    keys:
      - {{hash: "sha256:{digest_of(BUDGET_KEY)}", name: burst, team: web, budget: {{usd: 1000, per: day}}}}
    defaults: {{route: standard, retries: 0, timeout_s: 30, ttft_timeout_s: 30, expected_output_tokens: 5}}
    """


async def _wave(urls: list[str], size: int) -> list[int]:
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        responses = await asyncio.gather(
            *[
                http.post(
                    f"{urls[i % len(urls)]}/v1/chat/completions",
                    json={"messages": [{"role": "user", "content": f"hi {i}"}]},
                    headers={"authorization": f"Bearer {BUDGET_KEY}"},
                )
                for i in range(size)
            ]
        )
    return [r.status_code for r in responses]


@pytest.mark.slow
def test_waves_of_400_concurrent_budgeted_requests_through_two_replicas_are_all_answered(tmp_path: Path, server):
    with FakeOpenAIUpstream() as upstream:
        policy = write_policy(tmp_path, _large_budget_policy(upstream.base_url))
        env = {"ROUTER_REDIS_URL": server.url, "ROUTER_REPLICAS": "2"}
        replicas = [RouterProcess(policy, env=env).start() for _ in range(2)]
        try:
            waves = [asyncio.run(_wave([r.url for r in replicas], 400)) for _ in range(3)]
        finally:
            for replica in replicas:
                replica.stop()
    for number, statuses in enumerate(waves, 1):
        assert statuses == [200] * 400, f"wave {number}: {sorted(set(statuses))} {statuses.count(503)} × 503"
    assert "state store unreachable" not in "".join(r.logs() for r in replicas)
