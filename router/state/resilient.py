"""Redis with a documented behaviour for when it is unreachable.

| feature        | Redis unreachable (default)                          | setting                                  |
|----------------|------------------------------------------------------|------------------------------------------|
| budgets        | closed: 503, nothing admitted unaccounted            | ROUTER_REDIS_ON_FAILURE_BUDGETS=open     |
| rate limits    | local: each replica enforces limit ÷ ROUTER_REPLICAS | ROUTER_REDIS_ON_FAILURE_RATE_LIMITS=closed/open |
| model health   | local: this replica's own circuit breakers           | —                                        |
| response cache | bypassed                                             | —                                        |
| stored responses | kept on this replica; read here first, else 503    | —                                        |

After a failure Redis is not asked again for ``RETRY_AFTER_S`` (so requests do not each
pay the timeout), then it is tried again: service recovers by itself when Redis is back.
``router_state_store_up`` and one log line per transition say which mode is in force.

Model health is read at most every ``HEALTH_CACHE_S`` and latencies every
``LATENCY_CACHE_S``; a success is written only when it changes something (a model that had
failures) or at most every ``SUCCESS_WRITE_S`` per model for the latency average; a probe is
claimed in Redis only for a model that is half-open. On the happy path a request costs
Redis nothing but its budget and rate-limit scripts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from typing import TypeVar

from prometheus_client import Gauge

from router.circuit import ModelHealth
from router.state.base import (
    BudgetScope,
    RateDecision,
    RateLimit,
    Reservation,
    StateBusy,
    StateStore,
    StateUnavailable,
)
from router.state.memory import MemoryStateStore

log = logging.getLogger("router.state")
T = TypeVar("T")
RETRY_AFTER_S = 1.0
HEALTH_CACHE_S = 0.25
LATENCY_CACHE_S = 1.0
SUCCESS_WRITE_S = 1.0


class ResilientStore:
    def __init__(
        self,
        primary: StateStore,
        local: MemoryStateStore,
        up_gauge: Gauge,
        *,
        budgets_on_failure: str = "closed",
        rate_limits_on_failure: str = "local",
        replicas: int = 1,
    ) -> None:
        self.primary = primary
        self.local = local
        self.up_gauge = up_gauge
        self.budgets_on_failure = budgets_on_failure
        self.rate_limits_on_failure = rate_limits_on_failure
        self.replicas = replicas
        self.down_until = 0.0
        self.is_up = True
        up_gauge.set(1)
        self._health: dict[str, ModelHealth] = {}
        self._health_read_at = -HEALTH_CACHE_S
        self._latencies: Mapping[str, float] = {}
        self._latencies_read_at = -LATENCY_CACHE_S
        self._success_written_at: dict[str, float] = {}

    async def _try(self, call: Callable[[], Awaitable[T]]) -> T:
        if self.down_until > time.monotonic():
            raise StateUnavailable("state store marked down")
        try:
            result = await call()
        except StateBusy:
            raise  # a burst, not an outage: refuse this call only
        except StateUnavailable:
            self.mark_down()
            raise
        self._mark(True)
        return result

    def mark_down(self) -> None:
        self.down_until = time.monotonic() + RETRY_AFTER_S
        self._mark(False)

    def _mark(self, up: bool) -> None:
        if up == self.is_up:
            return
        self.is_up = up
        self.up_gauge.set(1 if up else 0)
        if up:
            log.warning("state store reachable again: shared budgets, limits and health restored")
        else:
            log.error(
                "state store unreachable: budgets %s, rate limits %s, health local, cache bypassed",
                "refused (503)" if self.budgets_on_failure == "closed" else "not enforced",
                {"local": f"local (limit / {self.replicas})", "closed": "refused (503)", "open": "not enforced"}[
                    self.rate_limits_on_failure
                ],
            )

    # model health: fall back to this replica's own view ---------------------------------
    async def health(self, models: Iterable[str]) -> Mapping[str, ModelHealth]:
        models = list(models)
        if time.monotonic() - self._health_read_at < HEALTH_CACHE_S:
            return {m: self._health[m] for m in models if m in self._health}
        try:
            fresh = await self._try(lambda: self.primary.health(models))
        except StateUnavailable:
            return await self.local.health(models)
        self._health, self._health_read_at = dict(fresh), time.monotonic()
        return fresh

    async def record_success(self, model: str, latency_s: float | None, now: float | None = None) -> ModelHealth:
        now = time.time() if now is None else now
        known = self._health.get(model)
        recovering = known is not None and (known.consecutive_failures or known.state(now) != "closed")
        last_write = self._success_written_at.get(model, -SUCCESS_WRITE_S)
        if not recovering and time.monotonic() - last_write < SUCCESS_WRITE_S:
            return known or ModelHealth()
        self._success_written_at[model] = time.monotonic()
        try:
            health = await self._try(lambda: self.primary.record_success(model, latency_s, now))
        except StateUnavailable:
            return await self.local.record_success(model, latency_s, now)
        self._remember(model, health)
        return health

    async def record_failure(self, model: str, now: float, *, immediate: bool, total_models: int) -> ModelHealth:
        try:
            health = await self._try(
                lambda: self.primary.record_failure(model, now, immediate=immediate, total_models=total_models)
            )
        except StateUnavailable:
            return await self.local.record_failure(model, now, immediate=immediate, total_models=total_models)
        self._remember(model, health)
        return health

    async def record_rate_limited(self, model: str, now: float, retry_after_s: float | None) -> ModelHealth:
        try:
            health = await self._try(lambda: self.primary.record_rate_limited(model, now, retry_after_s))
        except StateUnavailable:
            return await self.local.record_rate_limited(model, now, retry_after_s)
        self._remember(model, health)
        return health

    async def claim_probe(self, model: str, now: float) -> bool:
        known = self._health.get(model)
        if known is None or known.state(now) != "half_open":
            return True  # closed (or open, which the engine already left out): nothing to claim
        try:
            return await self._try(lambda: self.primary.claim_probe(model, now))
        except StateUnavailable:
            return await self.local.claim_probe(model, now)

    async def latencies(self) -> Mapping[str, float]:
        if time.monotonic() - self._latencies_read_at < LATENCY_CACHE_S:
            return self._latencies
        try:
            self._latencies = await self._try(self.primary.latencies)
        except StateUnavailable:
            return await self.local.latencies()
        self._latencies_read_at = time.monotonic()
        return self._latencies

    def _remember(self, model: str, health: ModelHealth) -> None:
        self._health[model] = health

    # budgets: closed (StateUnavailable → 503) or open ------------------------------------
    async def reserve(self, scope: BudgetScope, reservation_id: str, amount_micros: int, ttl_s: int) -> Reservation:
        try:
            return await self._try(lambda: self.primary.reserve(scope, reservation_id, amount_micros, ttl_s))
        except StateUnavailable:
            if self.budgets_on_failure == "closed":
                raise
            return Reservation(True, 0, 0)

    async def settle(self, scope: BudgetScope, reservation_id: str, actual_micros: int) -> bool:
        try:
            return await self._try(lambda: self.primary.settle(scope, reservation_id, actual_micros))
        except StateUnavailable:
            log.error("could not settle a budget reservation; it will expire", extra={"budget": scope.name})
            return False

    async def release(self, scope: BudgetScope, reservation_id: str) -> None:
        try:
            await self._try(lambda: self.primary.release(scope, reservation_id))
        except StateUnavailable:
            pass  # the reservation expires by itself

    async def budget_usage(self, scope: BudgetScope) -> Reservation:
        return await self._try(lambda: self.primary.budget_usage(scope))

    # rate limits: local share, closed or open --------------------------------------------
    async def admit(self, limit: RateLimit, tokens: int) -> RateDecision:
        try:
            return await self._try(lambda: self.primary.admit(limit, tokens))
        except StateUnavailable:
            if self.rate_limits_on_failure == "closed":
                raise
            if self.rate_limits_on_failure == "open":
                return RateDecision(True, 0.0, -1, -1, 0.0, 0.0)
            share = replace(
                limit,
                requests_per_minute=_share(limit.requests_per_minute, self.replicas),
                tokens_per_minute=_share(limit.tokens_per_minute, self.replicas),
            )
            return await self.local.admit(share, tokens)

    # cache: bypassed ---------------------------------------------------------------------
    async def cache_get(self, key: str) -> bytes | None:
        try:
            return await self._try(lambda: self.primary.cache_get(key))
        except StateUnavailable:
            return None

    async def cache_put(self, key: str, value: bytes, ttl_s: int) -> None:
        try:
            await self._try(lambda: self.primary.cache_put(key, value, ttl_s))
        except StateUnavailable:
            pass

    # stored responses: this replica keeps what it could not write; a miss it cannot check is an error
    async def response_get(self, response_id: str) -> bytes | None:
        kept = await self.local.response_get(response_id)
        if kept is not None:
            return kept
        return await self._try(lambda: self.primary.response_get(response_id))

    async def response_put(self, response_id: str, value: bytes, ttl_s: int) -> None:
        try:
            await self._try(lambda: self.primary.response_put(response_id, value, ttl_s))
        except StateUnavailable:
            await self.local.response_put(response_id, value, ttl_s)

    async def response_delete(self, response_id: str) -> bool:
        kept = await self.local.response_delete(response_id)
        return await self._try(lambda: self.primary.response_delete(response_id)) or kept

    async def ping(self) -> bool:
        try:
            return await self.primary.ping()
        except StateUnavailable:
            return False

    async def aclose(self) -> None:
        await self.primary.aclose()


def _share(rate: int, replicas: int) -> int:
    return max(1, rate // replicas) if rate else 0
