"""RedisStateStore against its own redis-server (started per test on a free port so a test
may stop, freeze and restart it): the memory store's answers, correct across instances under
concurrency, bounded when Redis is gone or hung, and back by itself when Redis returns."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import redis
from redis.crc import key_slot

from router.circuit import CircuitSettings
from router.state.base import BudgetScope, RateLimit, Reservation, StateUnavailable
from router.state.gcra import gcra
from router.state.memory import MemoryStateStore
from router.state.redis_store import RedisStateStore
from tests.processes import RedisServer, free_port

SCOPE = BudgetScope(name="key:web-app", window="2026-11-25", limit_micros=1_000, window_ttl_s=3600)
CIRCUIT = CircuitSettings(failure_threshold=3, base_ejection_s=1.0)
TIMEOUT_S = 0.25


def admin_client(server: RedisServer) -> redis.Redis:
    """A plain client for looking at keys, outside the store under test."""
    return redis.Redis(port=server.port, socket_timeout=2)


@pytest.fixture()
def server() -> Iterator[RedisServer]:
    srv = RedisServer().start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture()
async def stores(server: RedisServer):
    pair = [RedisStateStore(server.url, circuit=CIRCUIT, timeout_s=TIMEOUT_S) for _ in range(2)]
    for store in pair:  # the app opens the pool at start-up (self_test); timing tests start after that
        assert await store.ping()
    yield pair
    for store in pair:
        await store.aclose()


# budgets ----------------------------------------------------------------------------------


async def test_concurrent_reserves_from_two_instances_admit_exactly_what_fits(stores):
    a, b = stores
    amount, k = 77, 13
    scope = BudgetScope(name="team:web", window="2026-11", limit_micros=k * amount, window_ttl_s=3600)
    results = await asyncio.gather(*[(a, b)[i % 2].reserve(scope, f"r{i}", amount, 60) for i in range(200)])
    admitted = [i for i, r in enumerate(results) if r.admitted]
    assert len(admitted) == k
    assert all(r.spent_micros + r.reserved_micros <= scope.limit_micros for r in results)
    assert await b.budget_usage(scope) == Reservation(True, 0, k * amount)
    # every admitted reservation settled twice, concurrently, from both instances: charged once
    settled = await asyncio.gather(*[s.settle(scope, f"r{i}", amount - 7) for i in admitted for s in (a, b)])
    assert sum(settled) == k
    assert await a.budget_usage(scope) == Reservation(True, k * (amount - 7), 0)


async def test_settle_charges_once_and_release_frees_room(stores):
    a, b = stores
    assert await a.reserve(SCOPE, "one", 600, 60) == Reservation(True, 0, 600)
    assert await b.reserve(SCOPE, "two", 600, 60) == Reservation(False, 0, 600)
    assert await a.settle(SCOPE, "one", 500) is True
    assert await b.settle(SCOPE, "one", 500) is False
    assert await a.settle(SCOPE, "one", 900) is False
    assert await b.budget_usage(SCOPE) == Reservation(True, 500, 0)
    assert await b.reserve(SCOPE, "three", 500, 60) == Reservation(True, 500, 500)
    assert not (await a.reserve(SCOPE, "four", 1, 60)).admitted
    await a.release(SCOPE, "three")
    await a.release(SCOPE, "three")  # releasing twice (or an unknown id) is harmless
    assert await b.budget_usage(SCOPE) == Reservation(True, 500, 0)
    assert (await a.reserve(SCOPE, "four", 500, 60)).admitted


async def test_an_abandoned_reservation_expires_after_its_ttl(stores):
    a, b = stores
    assert (await a.reserve(SCOPE, "lost", 900, 1)).admitted
    assert not (await b.reserve(SCOPE, "next", 200, 60)).admitted
    assert (await b.budget_usage(SCOPE)).reserved_micros == 900
    await asyncio.sleep(1.2)
    assert await b.budget_usage(SCOPE) == Reservation(True, 0, 0)
    assert await b.reserve(SCOPE, "next", 200, 60) == Reservation(True, 0, 200)


async def test_budget_keys_share_a_hash_tag_and_expire_with_the_window(stores, server):
    a, _ = stores
    await a.reserve(SCOPE, "x", 100, 60)
    await a.settle(SCOPE, "x", 80)
    await a.reserve(SCOPE, "y", 100, 60)
    admin = admin_client(server)
    tag = "tr:{budget:key:web-app:2026-11-25}"
    keys = [f"{tag}:spent", f"{tag}:res", f"{tag}:exp", f"{tag}:settled"]
    assert all(admin.exists(k) for k in keys)
    assert len({key_slot(k.encode()) for k in keys}) == 1
    assert all(SCOPE.window_ttl_s - 5 < admin.ttl(k) <= SCOPE.window_ttl_s for k in keys)
    assert admin.get(f"{tag}:spent") == b"80"
    assert admin.hgetall(f"{tag}:settled") == {b"x": b"80"}
    assert admin.hgetall(f"{tag}:res") == {b"y": b"100"}
    admin.close()


# rate limits ------------------------------------------------------------------------------


async def test_request_rate_holds_across_two_instances(stores):
    a, b = stores
    limit = RateLimit("key:hammer", requests_per_minute=30, tokens_per_minute=0)
    started = time.monotonic()
    admitted = 0
    while time.monotonic() - started < 2:
        decisions = await asyncio.gather(*[(a, b)[i % 2].admit(limit, 10) for i in range(8)])
        admitted += sum(d.admitted for d in decisions)
    elapsed = time.monotonic() - started
    assert 30 <= admitted <= 30 + 30 * elapsed / 60 + 1
    denied = await b.admit(limit, 1)
    assert not denied.admitted
    assert 0 < denied.retry_after_s <= 2.0 + 0.1  # one interval (60/30 s) at most
    assert denied.remaining_requests == 0 and denied.remaining_tokens == -1
    assert 58 < denied.reset_requests_s <= 60.0


async def test_token_limit_denies_atomically_with_the_request_limit(stores, server):
    a, b = stores
    limit = RateLimit("key:tpm", requests_per_minute=100, tokens_per_minute=1_000)
    first = await a.admit(limit, 900)
    assert first.admitted and first.retry_after_s == 0.0
    assert first.remaining_requests in (98, 99) and first.remaining_tokens in (99, 100)
    assert first.reset_requests_s == pytest.approx(0.6, abs=0.01)
    assert first.reset_tokens_s == pytest.approx(54.0, abs=0.01)
    denied = await b.admit(limit, 200)  # 900 + 200 > one minute's worth of tokens
    assert not denied.admitted
    assert denied.retry_after_s == pytest.approx(6.0, abs=0.1)
    assert denied.remaining_tokens in (99, 100)
    assert denied.reset_tokens_s == pytest.approx(54.0, abs=0.1)
    after = await a.admit(limit, 50)  # the denied request consumed no request slot either
    assert after.admitted and after.remaining_requests in (97, 98)
    never = await a.admit(limit, 5_000)  # more than the burst: denied, never admissible
    assert not never.admitted and never.retry_after_s > 60
    admin = admin_client(server)
    for key in ("tr:{rl:key:tpm}:rpm", "tr:{rl:key:tpm}:tpm"):
        assert 0 < admin.pttl(key) <= 61_000  # TATs carry PX expiry
    admin.close()


async def test_zero_rates_are_unlimited(stores):
    a, _ = stores
    for _ in range(50):
        decision = await a.admit(RateLimit("key:free", 0, 0), 1_000_000)
        assert (decision.admitted, decision.remaining_requests, decision.remaining_tokens) == (True, -1, -1)
        assert (decision.retry_after_s, decision.reset_requests_s, decision.reset_tokens_s) == (0.0, 0.0, 0.0)
    only_tokens = await a.admit(RateLimit("key:tok", 0, 600), 60)
    assert only_tokens.admitted and only_tokens.remaining_requests == -1 and only_tokens.reset_requests_s == 0.0
    assert only_tokens.reset_tokens_s == pytest.approx(gcra(None, 0.0, 60, 600).reset_s, abs=1e-3)


# model health -----------------------------------------------------------------------------


async def test_failures_through_one_instance_open_the_circuit_for_both(stores):
    a, b = stores
    now = time.time()
    await a.record_failure("m1", now, immediate=False, total_models=4)
    await b.record_failure("m1", now, immediate=False, total_models=4)
    seen = await b.health(["m1", "m2"])
    assert set(seen) == {"m1"}
    assert seen["m1"].consecutive_failures == 2 and seen["m1"].state(now) == "closed"
    opened = await a.record_failure("m1", now, immediate=False, total_models=4)
    assert opened.state(now) == "open" and opened.ejections == 1
    assert opened.open_until == pytest.approx(now + CIRCUIT.base_ejection_s)
    assert (await b.health(["m1"]))["m1"] == opened
    assert (await a.health([])) == {}


async def test_only_one_of_many_concurrent_claimers_gets_the_probe(stores):
    a, b = stores
    now = time.time()
    assert (await a.record_failure("m1", now, immediate=True, total_models=4)).state(now) == "open"
    assert all(
        await asyncio.gather(*[(a, b)[i % 2].claim_probe("m1", now) for i in range(10)])
    )  # open: no probe to claim
    later = now + 1.5  # half-open
    claims = await asyncio.gather(*[(a, b)[i % 2].claim_probe("m1", later) for i in range(50)])
    assert sum(claims) == 1
    expired = later + CIRCUIT.probe_timeout_s + 0.1  # the probe was never reported: another may probe
    assert sum(await asyncio.gather(*[(a, b)[i % 2].claim_probe("m1", expired) for i in range(20)])) == 1
    reopened = await b.record_failure("m1", expired, immediate=False, total_models=4)  # a failed probe reopens, longer
    assert reopened.state(expired) == "open" and reopened.ejections == 2
    assert reopened.open_until == pytest.approx(expired + 2 * CIRCUIT.base_ejection_s)
    assert all(await asyncio.gather(*[a.claim_probe("never-failed", later) for _ in range(5)]))


async def test_success_closes_and_latency_is_an_ewma_seen_by_all(stores):
    a, b = stores
    now = time.time()
    assert await a.record_success("fresh", None) == (await MemoryStateStore().record_success("fresh", None))
    assert await a.health(["fresh"]) == {}  # a success alone creates no health record
    await a.record_failure("m1", now, immediate=True, total_models=4)
    await a.record_rate_limited("m1", now, 5.0)
    closed = await b.record_success("m1", 1.0, now)
    assert closed.state(now) == "closed" and closed.open_until == 0.0
    assert closed.ejections == 1 and closed.healthy_since == now  # the multiplier decays from now
    assert closed.cooldown_until == pytest.approx(now + 5.0)  # a success keeps a 429 cooldown
    await a.record_success("m1", 2.0)
    assert (await b.latencies())["m1"] == pytest.approx(1.0 + 0.2 * (2.0 - 1.0))


async def test_rate_limited_cools_the_model_down_everywhere(stores):
    a, b = stores
    now = time.time()
    first = await a.record_rate_limited("m1", now, None)
    assert first.cooldown_until == pytest.approx(now + CIRCUIT.default_cooldown_s)
    await b.record_rate_limited("m1", now, 10_000.0)  # capped
    await a.record_rate_limited("m1", now, 2.0)  # never shortens
    seen = (await a.health(["m1"]))["m1"]
    assert seen.cooldown_until == pytest.approx(now + CIRCUIT.max_cooldown_s)
    assert seen.unavailable_until(now) == pytest.approx(now + CIRCUIT.max_cooldown_s)
    assert seen.consecutive_failures == 0 and seen.state(now) == "closed"


async def test_at_most_the_ejected_share_is_open_even_across_instances(stores):
    a, b = stores
    now = time.time()
    for _ in range(3):
        await a.record_failure("m1", now, immediate=False, total_models=2)
    # b has never read or written m1, yet knows that one of the two models is already out
    for _ in range(3):
        kept = await b.record_failure("m2", now, immediate=False, total_models=2)
    assert kept.state(now) == "closed" and kept.consecutive_failures == 3
    states = {m: h.state(now) for m, h in (await b.health(["m1", "m2"])).items()}
    assert states == {"m1": "open", "m2": "closed"}
    # once m1 is no longer open the next failure of m2 may eject it
    later = now + 1.5
    assert (await b.record_failure("m2", later, immediate=False, total_models=2)).state(later) == "open"
    # an immediate (auth) failure opens regardless of the share
    assert (await a.record_failure("m3", later, immediate=True, total_models=2)).state(later) == "open"


# cache ------------------------------------------------------------------------------------


async def test_cache_is_shared_and_expires(stores, server):
    a, b = stores
    key = "ab" * 32
    assert await a.cache_get(key) is None
    await a.cache_put(key, b'\x00{"v": 1}', 1)
    assert await b.cache_get(key) == b'\x00{"v": 1}'
    admin = admin_client(server)
    assert 0 < admin.ttl(f"tr:cache:{key}") <= 1
    admin.close()
    await asyncio.sleep(1.1)
    assert await b.cache_get(key) is None
    await a.cache_put(key, b"v", 60)
    await a.cache_put(key, b"v", 0)  # a zero ttl keeps nothing (as the memory store)
    assert await b.cache_get(key) is None


# outages ------------------------------------------------------------------------------------


def _every_call(store: RedisStateStore, tag: str):  # type: ignore[no-untyped-def]
    scope = BudgetScope(name=f"key:{tag}", window="w", limit_micros=100, window_ttl_s=60)
    return {
        "reserve": lambda: store.reserve(scope, "r", 1, 60),
        "settle": lambda: store.settle(scope, "r", 1),
        "release": lambda: store.release(scope, "r"),
        "budget_usage": lambda: store.budget_usage(scope),
        "admit": lambda: store.admit(RateLimit(f"key:{tag}", 60, 600), 1),
        "health": lambda: store.health(["m1", "m2"]),
        "record_success": lambda: store.record_success("m1", 0.1),
        "record_failure": lambda: store.record_failure("m1", time.time(), immediate=False, total_models=2),
        "record_rate_limited": lambda: store.record_rate_limited("m1", time.time(), 1.0),
        "claim_probe": lambda: store.claim_probe("m1", time.time()),
        "latencies": lambda: store.latencies(),
        "cache_get": lambda: store.cache_get("k"),
        "cache_put": lambda: store.cache_put("k", b"v", 5),
        "self_test": lambda: store.self_test(),
    }


async def _assert_all_unavailable(store: RedisStateStore, tag: str) -> None:
    for name, call in _every_call(store, tag).items():
        started = time.monotonic()
        with pytest.raises(StateUnavailable):
            await call()
        elapsed = time.monotonic() - started
        assert elapsed < 1.0, f"{name} took {elapsed:.2f}s"
        assert elapsed < 2 * TIMEOUT_S + 0.15, f"{name} took {elapsed:.2f}s"
    started = time.monotonic()
    assert await store.ping() is False
    assert time.monotonic() - started < 1.0


async def test_a_stopped_redis_fails_fast_and_the_same_instance_recovers(server):
    store = RedisStateStore(server.url, circuit=CIRCUIT, timeout_s=TIMEOUT_S)
    try:
        await store.self_test()
        for call in _every_call(store, "before").values():  # warm the pool and the script cache
            await call()
        await asyncio.gather(*[store.reserve(SCOPE, f"w{i}", 1, 60) for i in range(20)])  # several pooled connections
        server.stop()
        await _assert_all_unavailable(store, "down")
        server.restart()  # same port, empty: the scripts must be reloaded by the same instance
        assert await store.ping() is True
        results = await asyncio.gather(*[call() for call in _every_call(store, "after").values()])
        assert results[0] == Reservation(True, 0, 1)
        assert (await store.reserve(SCOPE, "again", 5, 60)) == Reservation(True, 0, 5)
    finally:
        await store.aclose()


async def test_a_restart_between_calls_costs_no_failed_call(server):
    store = RedisStateStore(server.url, timeout_s=TIMEOUT_S)
    try:
        await asyncio.gather(*[store.reserve(SCOPE, f"w{i}", 1, 60) for i in range(30)])  # 30 pooled connections
        server.restart()
        await asyncio.sleep(0.1)
        results = await asyncio.gather(
            *[store.reserve(SCOPE, f"n{i}", 1, 60) for i in range(30)]
        )  # stale ones replaced
        assert all(r.admitted for r in results)
    finally:
        await store.aclose()


async def test_a_hung_redis_times_out_and_recovers_when_it_resumes(server):
    store = RedisStateStore(server.url, circuit=CIRCUIT, timeout_s=TIMEOUT_S)
    try:
        assert (await store.reserve(SCOPE, "before", 1, 60)).admitted
        server.freeze()
        try:
            await _assert_all_unavailable(store, "hung")
        finally:
            server.thaw()
        assert await store.ping() is True
        usage = await store.budget_usage(SCOPE)
        assert usage.reserved_micros >= 1
        assert (await store.admit(RateLimit("key:after-hang", 60, 0), 1)).admitted
    finally:
        await store.aclose()


async def test_an_unreachable_redis_at_start_up_is_unavailable_not_an_error():
    store = RedisStateStore(f"redis://127.0.0.1:{free_port()}/0", timeout_s=TIMEOUT_S)
    try:
        started = time.monotonic()
        with pytest.raises(StateUnavailable, match="unreachable"):
            await store.self_test()
        assert time.monotonic() - started < 1.0
    finally:
        await store.aclose()


# self-test ----------------------------------------------------------------------------------


async def test_self_test_passes_and_leaves_no_keys(server):
    store = RedisStateStore(server.url)
    try:
        await store.self_test()
        admin = admin_client(server)
        assert admin.dbsize() == 0
        assert len(admin.script_exists(*[s.sha for s in store.scripts.values()])) == len(store.scripts)
        assert all(admin.script_exists(*[s.sha for s in store.scripts.values()]))
        admin.close()
    finally:
        await store.aclose()


async def test_self_test_refuses_a_user_without_scripting(server):
    admin = admin_client(server)
    admin.execute_command("ACL", "SETUSER", "noscript", "on", ">pw", "~*", "+@all", "-@scripting")
    admin.close()
    store = RedisStateStore(f"redis://noscript:pw@127.0.0.1:{server.port}/0")
    try:
        with pytest.raises(RuntimeError, match=r"refused the router's Lua scripts.*\+@scripting"):
            await store.self_test()
        # the same user at run time: unavailable (the fallbacks apply), never an unhandled error
        with pytest.raises(StateUnavailable):
            await store.reserve(SCOPE, "r", 1, 60)
    finally:
        await store.aclose()


async def test_self_test_refuses_bad_credentials(server):
    admin = admin_client(server)
    admin.execute_command("ACL", "SETUSER", "router", "on", ">right", "~*", "+@all")
    admin.close()
    store = RedisStateStore(f"redis://router:wrong@127.0.0.1:{server.port}/0")
    try:
        with pytest.raises(RuntimeError, match="credentials"):
            await store.self_test()
    finally:
        await store.aclose()


async def test_self_test_refuses_a_redis_with_evalsha_renamed():
    renamed = RedisServer("--rename-command", "EVALSHA", "").start()
    store = RedisStateStore(renamed.url)
    try:
        with pytest.raises(RuntimeError, match="EVALSHA"):
            await store.self_test()
    finally:
        await store.aclose()
        renamed.stop()


# the memory store is the reference ------------------------------------------------------------


async def _scripted(store) -> list:  # type: ignore[no-untyped-def]
    scope = BudgetScope(name="key:same", window="2026-11-25", limit_micros=1_000, window_ttl_s=3600)
    rpm_tpm = RateLimit("key:same", requests_per_minute=5, tokens_per_minute=100)
    tpm_only = RateLimit("key:tok", requests_per_minute=0, tokens_per_minute=50)
    out: list = []
    out.append(await store.reserve(scope, "x", 700, 60))
    out.append(await store.reserve(scope, "y", 400, 60))
    out.append(await store.settle(scope, "x", 650))
    out.append(await store.settle(scope, "x", 650))
    out.append(await store.reserve(scope, "z", 350, 60))
    out.append(await store.budget_usage(scope))
    out.append(await store.reserve(scope, "w", 1, 60))
    await store.release(scope, "z")
    out.append(await store.budget_usage(scope))
    out.append(await store.settle(scope, "never-reserved", 100))
    out.append(await store.reserve(scope, "v", 250, 60))
    out.append(await store.reserve(scope, "v", 0, 60))  # same id again: replaced
    out.append(await store.budget_usage(scope))
    out.append(await store.settle(scope, "v", 250))
    out.append(await store.budget_usage(scope))
    for tokens in (30, 30, 30, 30, 5, 1, 0, 0, 0):
        out.append(await store.admit(rpm_tpm, tokens))
    for tokens in (20, 20, 20, 0, 60):
        out.append(await store.admit(tpm_only, tokens))
    return out


def _comparable(answer):  # type: ignore[no-untyped-def]
    """Rate decisions compared exactly on admission, closely on the clock-derived numbers."""
    if not hasattr(answer, "retry_after_s"):
        return answer
    return (
        answer.admitted,
        answer.remaining_requests,
        answer.remaining_tokens,
        answer.retry_after_s,
        answer.reset_requests_s,
        answer.reset_tokens_s,
    )


async def test_memory_and_redis_stores_give_the_same_answers(stores):
    redis_store, _ = stores
    expected = await _scripted(MemoryStateStore(CIRCUIT))
    got = await _scripted(redis_store)
    assert len(got) == len(expected)
    for i, (mine, reference) in enumerate(zip(got, expected, strict=False)):
        mine, reference = _comparable(mine), _comparable(reference)
        if isinstance(mine, tuple) and len(mine) == 6:
            assert mine[0] == reference[0], f"step {i}: {mine} != {reference}"
            for m, r in zip(mine[1:3], reference[1:3], strict=False):  # floor() at a boundary may round either way
                assert abs(m - r) <= 1, f"step {i}: {mine} != {reference}"
            assert mine[3:] == pytest.approx(reference[3:], abs=0.05), f"step {i}: {mine} != {reference}"
        else:
            assert mine == reference, f"step {i}: {mine} != {reference}"
    assert [a for a in expected[:5]] == [
        Reservation(True, 0, 700),
        Reservation(False, 0, 700),
        True,
        False,
        Reservation(True, 650, 350),
    ]


async def test_memory_and_redis_stores_agree_on_circuit_transitions(stores):
    redis_store, _ = stores
    memory = MemoryStateStore(CIRCUIT)
    t0 = 1_000_000.0  # the health calls take the caller's clock, so both runs see the same times
    steps = [
        ("fail", "a", t0, False, 3),
        ("fail", "a", t0 + 0.1, False, 3),
        ("success", "a", None),
        ("fail", "a", t0 + 0.2, False, 3),
        ("fail", "a", t0 + 0.3, False, 3),
        ("fail", "a", t0 + 0.4, False, 3),  # opens (1 of 3 allowed)
        ("fail", "b", t0 + 0.5, False, 3),
        ("fail", "b", t0 + 0.5, False, 3),
        ("fail", "b", t0 + 0.5, False, 3),  # would be the second open of three: kept closed
        ("probe", "a", t0 + 0.6),
        ("probe", "a", t0 + 1.5),  # half-open: claimed
        ("probe", "a", t0 + 1.6),  # already claimed
        ("fail", "a", t0 + 1.7, False, 3),  # the probe failed: open again, longer
        ("limited", "c", t0 + 1.7, 2.5),
        ("limited", "c", t0 + 1.7, None),
        ("fail", "c", t0 + 1.8, True, 3),  # immediate
        ("probe", "c", t0 + 2.9),
        ("success", "c", 0.3, t0 + 3.0),  # closed, the multiplier kept
        ("success", "c", 0.6, t0 + 3.1),
        ("probe", "never", t0),
    ]

    async def run(store) -> list:  # type: ignore[no-untyped-def]
        out: list = []
        for step in steps:
            kind, model = step[0], step[1]
            if kind == "fail":
                out.append(await store.record_failure(model, step[2], immediate=step[3], total_models=step[4]))
            elif kind == "success":
                out.append(await store.record_success(model, step[2], *step[3:]))
            elif kind == "limited":
                out.append(await store.record_rate_limited(model, step[2], step[3]))
            else:
                out.append(await store.claim_probe(model, step[2]))
        out.append(dict(await store.health(["a", "b", "c", "never"])))
        out.append(dict(await store.latencies()))
        return out

    expected, got = await run(memory), await run(redis_store)
    assert got[:-1] == expected[:-1]
    assert got[-1] == pytest.approx(expected[-1])
