"""The ejection multiplier decays instead of resetting (issue 9, item 11): a model that fails,
recovers through a half-open probe and fails again is ejected for longer the second time; one
that stays healthy for ``decay_s`` per ejection starts again from the base time (as Envoy's
outlier detection). The same steps run on the in-process store and on the Redis (Lua) store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from router.circuit import CircuitSettings, ModelHealth, multiplier, on_failure, on_success
from router.state.base import StateStore
from router.state.memory import MemoryStateStore
from router.state.redis_store import RedisStateStore
from tests.processes import RedisServer

CIRCUIT = CircuitSettings(failure_threshold=2, base_ejection_s=10.0, max_ejection_s=300.0)  # decay_s = 10
T0 = 1_000_000.0  # health calls take the caller's clock: the steps below are exact


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, redis_server: RedisServer) -> AsyncIterator[StateStore]:
    if request.param == "memory":
        yield MemoryStateStore(CIRCUIT)
        return
    redis_store = RedisStateStore(redis_server.url, circuit=CIRCUIT, prefix=f"tr:{request.node.name}")
    yield redis_store
    await redis_store.aclose()


async def _eject(store: StateStore, model: str, now: float) -> ModelHealth:
    for _ in range(CIRCUIT.failure_threshold):
        health = await store.record_failure(model, now, immediate=False, total_models=10)
    assert health.state(now) == "open"
    return health


async def _recover_by_probe(store: StateStore, model: str, health: ModelHealth) -> ModelHealth:
    probe_at = health.open_until + 0.5
    assert health.state(probe_at) == "half_open"
    assert await store.claim_probe(model, probe_at)
    closed = await store.record_success(model, 0.1, probe_at + 0.1)
    assert closed.state(probe_at + 0.1) == "closed"
    return closed


async def test_a_model_that_fails_again_after_a_probe_is_ejected_for_longer(store: StateStore) -> None:
    first = await _eject(store, "flappy", T0)
    assert first.open_until - T0 == 10.0
    closed = await _recover_by_probe(store, "flappy", first)
    again_at = closed.healthy_since + 1.0  # healthy for 1 s: well under decay_s
    second = await _eject(store, "flappy", again_at)
    assert second.open_until - again_at == 20.0 and second.ejections == 2
    third_at = (await _recover_by_probe(store, "flappy", second)).healthy_since + 1.0
    third = await _eject(store, "flappy", third_at)
    assert third.ejections == 3 and third.open_until - third_at == 30.0
    assert (await store.health(["flappy"]))["flappy"] == third


async def test_the_multiplier_decays_by_one_for_every_decay_period_the_model_stays_healthy(store: StateStore) -> None:
    health = await _eject(store, "m", T0)
    for _ in range(2):  # three ejections in a row
        health = await _eject(store, "m", (await _recover_by_probe(store, "m", health)).healthy_since)
    assert health.ejections == 3
    closed = await _recover_by_probe(store, "m", health)
    healthy_for_two_periods = closed.healthy_since + 2 * CIRCUIT.decay_s + 0.5  # 3 - 2 = 1 left
    after_decay = await _eject(store, "m", healthy_for_two_periods)
    assert after_decay.ejections == 2 and after_decay.open_until - healthy_for_two_periods == 20.0
    closed = await _recover_by_probe(store, "m", after_decay)
    long_healthy = closed.healthy_since + 2 * CIRCUIT.decay_s
    assert await store.record_success("m", 0.1, long_healthy) == ModelHealth()  # fully decayed: a clean record
    fresh = await _eject(store, "m", long_healthy + 1)
    assert fresh.ejections == 1 and fresh.open_until - (long_healthy + 1) == CIRCUIT.base_ejection_s


async def test_a_recovered_model_is_closed_not_half_open_while_its_multiplier_decays(store: StateStore) -> None:
    closed = await _recover_by_probe(store, "r", await _eject(store, "r", T0))
    later = closed.healthy_since + 1.0
    assert closed.ejections == 1 and closed.unavailable_until(later) is None
    assert all([await store.claim_probe("r", later) for _ in range(3)])  # nothing to claim when closed
    one_failure = await store.record_failure("r", later, immediate=False, total_models=10)
    assert one_failure.state(later) == "closed"  # a single failure does not re-eject a recovered model


@pytest.mark.parametrize(
    ("health", "now", "expected"),
    [
        (ModelHealth(ejections=3), 50.0, 3),  # open or half-open: no decay
        (ModelHealth(ejections=3, healthy_since=100.0), 100.0, 3),
        (ModelHealth(ejections=3, healthy_since=100.0), 109.9, 3),
        (ModelHealth(ejections=3, healthy_since=100.0), 110.0, 2),
        (ModelHealth(ejections=3, healthy_since=100.0), 125.0, 1),
        (ModelHealth(ejections=3, healthy_since=100.0), 1_000.0, 0),
        (ModelHealth(ejections=3, healthy_since=100.0), 90.0, 3),  # a clock behind: never grows
    ],
)
def test_multiplier_table(health: ModelHealth, now: float, expected: int) -> None:
    assert multiplier(health, now, CIRCUIT) == expected


def test_pure_transitions_keep_then_decay_the_multiplier() -> None:
    ejected = on_failure(ModelHealth(), 0.0, CIRCUIT, may_eject=True, immediate=True)
    closed = on_success(ejected, 10.5, CIRCUIT)
    assert closed == ModelHealth(ejections=1, healthy_since=10.5)
    assert on_failure(closed, 11.0, CIRCUIT, may_eject=True, immediate=True).open_until == 11.0 + 20.0
    assert on_failure(closed, 20.5, CIRCUIT, may_eject=True, immediate=True).open_until == 20.5 + 10.0
    assert on_success(closed, 20.5, CIRCUIT) == ModelHealth()
