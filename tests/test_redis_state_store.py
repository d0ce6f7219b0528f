"""The Redis state store against a private redis-server: the same answers as the
in-process store, correct under concurrency across instances, bounded when Redis is gone."""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest

from router.circuit import CircuitSettings
from router.state.base import BudgetScope, RateLimit, StateUnavailable
from router.state.memory import MemoryStateStore
from router.state.redis_store import RedisStateStore
from tests.processes import RedisServer

SCOPE = BudgetScope(name="key:test", window="2026-11-25", limit_micros=1_000, window_ttl_s=3600)


@pytest.fixture()
def redis_server():
    with RedisServer() as server:
        yield server


@pytest.fixture()
async def stores(redis_server):
    pair = [RedisStateStore(redis_server.url, circuit=CircuitSettings(failure_threshold=3, base_ejection_s=1)) for _ in range(2)]
    yield pair
    for store in pair:
        await store.aclose()


async def test_concurrent_reservations_from_two_instances_never_exceed_the_limit(stores):
    a, b = stores
    results = await asyncio.gather(*[(a, b)[i % 2].reserve(SCOPE, f"r{i}", 100, 60) for i in range(200)])
    assert sum(r.admitted for r in results) == 10
    usage = await a.budget_usage(SCOPE)
    assert usage.reserved_micros == 1_000 and usage.spent_micros == 0


async def test_settle_charges_once_and_release_frees_room(stores):
    a, b = stores
    assert (await a.reserve(SCOPE, "one", 600, 60)).admitted
    assert not (await b.reserve(SCOPE, "two", 600, 60)).admitted
    assert await a.settle(SCOPE, "one", 500) is True
    assert await b.settle(SCOPE, "one", 500) is False  # a repeated settlement charges nothing
    assert (await a.budget_usage(SCOPE)).spent_micros == 500
    assert (await b.reserve(SCOPE, "three", 400, 60)).admitted
    await b.release(SCOPE, "three")
    usage = await a.budget_usage(SCOPE)
    assert (usage.spent_micros, usage.reserved_micros) == (500, 0)


async def test_an_abandoned_reservation_expires(stores):
    a, _ = stores
    assert (await a.reserve(SCOPE, "lost", 1_000, 1)).admitted
    assert not (await a.reserve(SCOPE, "next", 1, 60)).admitted
    await asyncio.sleep(1.2)
    assert (await a.reserve(SCOPE, "next", 1, 60)).admitted
    assert (await a.budget_usage(SCOPE)).reserved_micros == 1


async def test_gcra_across_two_instances(stores):
    a, b = stores
    limit = RateLimit("key:rl", requests_per_minute=30, tokens_per_minute=0)
    started = time.monotonic()
    admitted = 0
    while time.monotonic() - started < 2:
        decisions = await asyncio.gather(a.admit(limit, 1), b.admit(limit, 1))
        admitted += sum(d.admitted for d in decisions)
    elapsed = time.monotonic() - started
    assert 30 <= admitted <= 30 + 30 * elapsed / 60 + 1
    denied = await a.admit(limit, 1)
    assert not denied.admitted and 0 < denied.retry_after_s <= 2.1


async def test_token_limit_is_checked_with_the_request_limit_atomically(stores):
    a, _ = stores
    limit = RateLimit("key:tpm", requests_per_minute=100, tokens_per_minute=1_000)
    assert (await a.admit(limit, 900)).admitted
    denied = await a.admit(limit, 200)
    assert not denied.admitted
    after = await a.admit(limit, 50)  # the denied request consumed no request slot either
    assert after.admitted and after.remaining_requests == 98


async def test_circuit_state_is_shared_and_one_probe_is_claimed(stores):
    a, b = stores
    now = time.time()
    for _ in range(3):
        await a.record_failure("m1", now, immediate=False, total_models=4)
    seen = (await b.health(["m1", "m2"]))
    assert set(seen) == {"m1"} and seen["m1"].state(now) == "open"
    later = now + 1.5
    claims = await asyncio.gather(*[(a, b)[i % 2].claim_probe("m1", later) for i in range(20)])
    assert sum(claims) == 1
    await b.record_success("m1", 0.2)
    assert (await a.health(["m1"]))["m1"].state(later) == "closed"
    assert (await a.latencies())["m1"] == pytest.approx(0.2)


async def test_at_most_a_share_of_models_is_ejected(stores):
    a, _ = stores
    now = time.time()
    for model in ("m1", "m2"):
        for _ in range(3):
            await a.record_failure(model, now, immediate=False, total_models=2)
    states = {m: h.state(now) for m, h in (await a.health(["m1", "m2"])).items()}
    assert sorted(states.values()) == ["closed", "open"]


async def test_cache_entries_expire(stores):
    a, b = stores
    await a.cache_put("k", b"v", 1)
    assert await b.cache_get("k") == b"v"
    await asyncio.sleep(1.1)
    assert await b.cache_get("k") is None


async def test_unreachable_redis_fails_fast_and_the_same_instance_recovers(redis_server):
    store = RedisStateStore(redis_server.url, timeout_s=0.2)
    assert (await store.reserve(SCOPE, "a", 1, 60)).admitted
    redis_server.stop()
    for call in (lambda: store.reserve(SCOPE, "b", 1, 60), lambda: store.admit(RateLimit("x", 1, 0), 1), lambda: store.health(["m"]), lambda: store.cache_get("k")):
        started = time.monotonic()
        with pytest.raises(StateUnavailable):
            await call()
        assert time.monotonic() - started < 1.0
    assert await store.ping() is False
    redis_server.start_on_same_port()
    assert await store.ping() is True
    assert (await store.reserve(SCOPE, "c", 1, 60)).admitted
    await store.aclose()


async def test_self_test_refuses_a_redis_that_will_not_run_scripts(redis_server):
    cli = ["redis-cli", "-p", str(redis_server.port)]
    subprocess.run([*cli, "ACL", "SETUSER", "noscript", "on", ">pw", "~*", "+@all", "-@scripting"], check=True, capture_output=True)
    good = RedisStateStore(redis_server.url)
    await good.self_test()
    refused = RedisStateStore(f"redis://noscript:pw@127.0.0.1:{redis_server.port}/0")
    with pytest.raises(RuntimeError, match="refused the router's Lua scripts"):
        await refused.self_test()
    await good.aclose()
    await refused.aclose()


async def test_memory_and_redis_stores_give_the_same_answers(stores):
    redis_store, _ = stores
    memory = MemoryStateStore()
    limit = RateLimit("key:same", requests_per_minute=5, tokens_per_minute=100)
    for store in (memory, redis_store):
        answers = []
        answers.append((await store.reserve(SCOPE, "x", 700, 60)).admitted)
        answers.append((await store.reserve(SCOPE, "y", 400, 60)).admitted)
        answers.append(await store.settle(SCOPE, "x", 650))
        answers.append(await store.settle(SCOPE, "x", 650))
        answers.append((await store.reserve(SCOPE, "z", 350, 60)).admitted)
        usage = await store.budget_usage(SCOPE)
        answers.append((usage.spent_micros, usage.reserved_micros))
        answers += [(await store.admit(limit, 30)).admitted for _ in range(5)]
        if store is memory:
            expected = answers
        else:
            assert answers == expected
    assert expected[:5] == [True, False, True, False, True]
