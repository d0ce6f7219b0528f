"""The state-store interface: everything replicas must agree on.

- model health (circuit breaking, cooldowns) and observed latencies;
- budgets: reserve an estimate atomically before calling upstream, settle with the actual
  cost after (idempotently), release on failure; abandoned reservations expire;
- rate limits: GCRA over requests and tokens per minute, both checked atomically;
- an exact-match response cache;
- stored Responses API responses (``store``, ``previous_response_id``), kept for a TTL.

Money is integer micro-dollars. Every implementation gives the same answers; the Redis one
makes them hold across replicas. Implementations raise ``StateUnavailable`` when their
backend cannot be reached within its timeout.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from router.circuit import ModelHealth
from router.types import BudgetScope, RateLimit

__all__ = ["MICRO", "BudgetScope", "RateDecision", "RateLimit", "Reservation", "StateStore", "StateUnavailable"]

MICRO = 1_000_000


class StateUnavailable(Exception):
    """The shared state cannot be reached right now."""


class StateBusy(StateUnavailable):
    """The shared state is reachable but every connection to it stayed busy: this call is
    refused, and the store is not declared down (a burst is not an outage)."""


@dataclass(frozen=True, slots=True)
class Reservation:
    admitted: bool
    spent_micros: int
    reserved_micros: int


@dataclass(frozen=True, slots=True)
class RateDecision:
    admitted: bool
    retry_after_s: float
    remaining_requests: int
    remaining_tokens: int
    reset_requests_s: float
    reset_tokens_s: float


class StateStore(Protocol):
    # model health
    async def health(self, models: Iterable[str]) -> Mapping[str, ModelHealth]: ...
    async def record_success(self, model: str, latency_s: float | None, now: float | None = None) -> ModelHealth:
        """Close the circuit (keeping a decaying multiplier); ``now`` defaults to ``time.time()``."""

    async def record_failure(self, model: str, now: float, *, immediate: bool, total_models: int) -> ModelHealth: ...
    async def record_rate_limited(self, model: str, now: float, retry_after_s: float | None) -> ModelHealth: ...
    async def claim_probe(self, model: str, now: float) -> bool: ...
    async def latencies(self) -> Mapping[str, float]: ...

    # budgets
    async def reserve(self, scope: BudgetScope, reservation_id: str, amount_micros: int, ttl_s: int) -> Reservation: ...
    async def settle(self, scope: BudgetScope, reservation_id: str, actual_micros: int) -> bool:
        """Charge ``actual_micros`` and drop the reservation; False if already settled."""

    async def release(self, scope: BudgetScope, reservation_id: str) -> None: ...
    async def budget_usage(self, scope: BudgetScope) -> Reservation:
        """Spent and currently reserved (expired reservations dropped)."""

    # rate limits
    async def admit(self, limit: RateLimit, tokens: int) -> RateDecision: ...

    # response cache
    async def cache_get(self, key: str) -> bytes | None: ...
    async def cache_put(self, key: str, value: bytes, ttl_s: int) -> None: ...

    # stored responses (Responses API), an opaque document per response id
    async def response_get(self, response_id: str) -> bytes | None: ...
    async def response_put(self, response_id: str, value: bytes, ttl_s: int) -> None: ...
    async def response_delete(self, response_id: str) -> bool:
        """True if it was there."""

    async def ping(self) -> bool: ...
    async def aclose(self) -> None: ...
