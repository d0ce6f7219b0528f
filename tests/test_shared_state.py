"""Budgets, rate limits and health that hold across replicas: two `router serve`
processes sharing one real Redis (a private redis-server, so it can be stopped)."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from router.auth import digest_of
from router.budgets import budget_scopes
from router.policy.loader import load_policy
from router.state.redis_store import RedisStateStore
from tests.fakes import FakeOpenAIUpstream, Hang
from tests.harness import metric_sum, scrape, write_policy
from tests.processes import RedisServer, RouterProcess, wait_until

BUDGET_KEY = "sk-tr-budget-0123456789"
LIMITED_KEY = "sk-tr-limited-0123456789"
HELLO = [{"role": "user", "content": "hi"}]
PROMPT_TOKENS = 7  # what the router counts for HELLO; the fake reports the same, so estimate == actual
PRICE_PER_TOKEN = 0.001  # $1000 per 1M input tokens, output free: each request costs exactly $0.007
REQUEST_COST = PROMPT_TOKENS * PRICE_PER_TOKEN
ROOM_FOR = 5


def shared_policy(upstream_url: str, rpm: int = 60, timeout_s: float = 5) -> str:
    return f"""
    version: 1
    tiers: [standard]
    providers:
      up: {{type: openai, base_url: "{upstream_url}", api_key: sk-x}}
    models:
      model-a: {{provider: up, upstream: gpt-4o-mini, tier: standard, price: {{input: 1000, output: 0}}, context_window: 128000}}
    routes: {{standard: {{tier: standard}}}}
    keys:
      - {{hash: "sha256:{digest_of(BUDGET_KEY)}", name: budgeted, team: web, budget: {{usd: {ROOM_FOR * REQUEST_COST:.6f}, per: day}}}}
      - {{hash: "sha256:{digest_of(LIMITED_KEY)}", name: limited, team: batch, limits: {{rpm: {rpm}}}}}
    defaults: {{route: standard, retries: 0, timeout_s: {timeout_s}, ttft_timeout_s: {timeout_s}, expected_output_tokens: 5}}
    """


@pytest.fixture()
def redis_server():
    with RedisServer() as server:
        yield server


@pytest.fixture()
def shared_upstream():
    with FakeOpenAIUpstream(usage=(PROMPT_TOKENS, 5, 0)) as server:
        yield server


def two_replicas(policy_path, redis_url: str, **env: str) -> tuple[RouterProcess, RouterProcess]:
    settings = {"ROUTER_REDIS_URL": redis_url, "ROUTER_REPLICAS": "2", **env}
    return RouterProcess(policy_path, env=settings).start(), RouterProcess(policy_path, env=settings).start()


def post(url: str, key: str, timeout: float = 10) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        json={"messages": HELLO},
        headers={"authorization": f"Bearer {key}"},
        timeout=timeout,
    )


def budget_usage(policy_path, redis_url: str):  # type: ignore[no-untyped-def]
    policy = load_policy(policy_path)
    key = next(k for k in policy.keys.values() if k.name == "budgeted")
    (scope,) = budget_scopes(policy, key)

    async def read():  # type: ignore[no-untyped-def]
        store = RedisStateStore(redis_url)
        try:
            return await store.budget_usage(scope)
        finally:
            await store.aclose()

    return asyncio.run(read())


def test_a_budget_admits_exactly_what_it_has_room_for_across_two_replicas(tmp_path, redis_server, shared_upstream):
    policy = write_policy(tmp_path, shared_policy(shared_upstream.base_url))
    a, b = two_replicas(policy, redis_server.url)
    try:
        with ThreadPoolExecutor(max_workers=50) as pool:
            responses = list(pool.map(lambda i: post((a, b)[i % 2].url, BUDGET_KEY), range(50)))
    finally:
        a.stop(), b.stop()
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == ROOM_FOR
    assert statuses.count(429) == 50 - ROOM_FOR
    assert all(r.json()["error"]["code"] == "insufficient_quota" for r in responses if r.status_code == 429)
    usage = budget_usage(policy, redis_server.url)
    assert usage.spent_micros <= round(ROOM_FOR * REQUEST_COST * 1e6)
    assert usage.spent_micros == round(ROOM_FOR * REQUEST_COST * 1e6)
    assert usage.reserved_micros == 0  # nothing left reserved


def test_a_reservation_of_a_killed_replica_expires(tmp_path, redis_server, shared_upstream):
    policy = write_policy(tmp_path, shared_policy(shared_upstream.base_url, timeout_s=1))
    shared_upstream.script(Hang(30))
    replica = RouterProcess(policy, env={"ROUTER_REDIS_URL": redis_server.url}).start()
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(post, replica.url, BUDGET_KEY, 30)
        assert shared_upstream.wait_for_requests(1, timeout=5)
        replica.kill()
        with pytest.raises(httpx.HTTPError):
            pending.result()
    assert budget_usage(policy, redis_server.url).reserved_micros > 0
    # reservation ttl = timeout_s × (retries + 2) + min(60, timeout_s) = 3 s
    wait_until(lambda: budget_usage(policy, redis_server.url).reserved_micros == 0, 6, "the reservation to expire")
    assert budget_usage(policy, redis_server.url).spent_micros == 0


def test_a_rate_limit_holds_across_two_replicas(tmp_path, redis_server, shared_upstream):
    rpm = 60
    policy = write_policy(tmp_path, shared_policy(shared_upstream.base_url, rpm=rpm))
    a, b = two_replicas(policy, redis_server.url)
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            responses = list(pool.map(lambda i: post((a, b)[i % 2].url, LIMITED_KEY), range(160)))
        elapsed = time.monotonic() - started
    finally:
        a.stop(), b.stop()
    admitted = sum(r.status_code == 200 for r in responses)
    limited = [r for r in responses if r.status_code == 429]
    assert admitted <= rpm + rpm * elapsed / 60 + 1  # burst + rate × time
    assert admitted >= rpm
    assert len(limited) == len(responses) - admitted
    assert all(
        r.headers["x-ratelimit-limit-requests"] == str(rpm) and int(r.headers["retry-after"]) >= 1 for r in limited
    )


def test_redis_stopped_mid_traffic_follows_the_table_and_recovers(tmp_path, redis_server, shared_upstream):
    policy = write_policy(tmp_path, shared_policy(shared_upstream.base_url, rpm=600))
    replica = RouterProcess(
        policy, env={"ROUTER_REDIS_URL": redis_server.url, "ROUTER_REDIS_TIMEOUT_MS": "200"}
    ).start()
    try:
        assert post(replica.url, BUDGET_KEY).status_code == 200
        redis_server.stop()
        started = time.monotonic()
        budgeted = post(replica.url, BUDGET_KEY)
        budget_answer_s = time.monotonic() - started
        limited = post(replica.url, LIMITED_KEY)  # rate limits fall back to local limits
        readiness = httpx.get(f"{replica.url}/readyz").status_code
        down = metric_sum(scrape(replica.url, key=LIMITED_KEY), "router_state_store_up")
        redis_server.restart()
        wait_until(lambda: post(replica.url, BUDGET_KEY).status_code == 200, 10, "service to recover without a restart")
        up = metric_sum(scrape(replica.url, key=LIMITED_KEY), "router_state_store_up")
    finally:
        replica.stop()
    assert budgeted.status_code == 503 and budgeted.json()["error"]["code"] == "state_store_unavailable"
    assert budget_answer_s < 1.0
    assert limited.status_code == 200
    assert readiness == 503
    assert down == 0 and up == 1
    assert "state store unreachable" in replica.logs() and "reachable again" in replica.logs()
