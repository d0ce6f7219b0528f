"""In-process state: the default. Exact for one process; with several workers or replicas
each keeps its own (use Redis to share)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from router import circuit
from router.circuit import CircuitSettings, ModelHealth
from router.state.base import BudgetScope, RateDecision, RateLimit, Reservation
from router.state.gcra import GcraResult, gcra

LATENCY_WEIGHT = 0.2  # weight of the newest observation in the moving average
MAX_CACHE_ENTRIES = 10_000
MAX_STORED_RESPONSES = 10_000  # the oldest goes first past this (use Redis to keep more)


@dataclass
class _Budget:
    spent: int = 0
    reservations: dict[str, tuple[int, float]] = field(default_factory=dict)
    settled: set[str] = field(default_factory=set)

    def drop_expired(self, now: float) -> None:
        for rid in [rid for rid, (_, expires) in self.reservations.items() if expires <= now]:
            del self.reservations[rid]

    def reserved(self) -> int:
        return sum(amount for amount, _ in self.reservations.values())


class MemoryStateStore:
    def __init__(self, settings: CircuitSettings | None = None) -> None:
        self.settings = settings or CircuitSettings()
        self._health: dict[str, ModelHealth] = {}
        self._latency: dict[str, float] = {}
        self._budgets: dict[tuple[str, str], _Budget] = {}
        self._tats: dict[str, float] = {}
        self._cache: dict[str, tuple[bytes, float]] = {}
        self._responses: dict[str, tuple[bytes, float]] = {}

    # model health -----------------------------------------------------------------------
    async def health(self, models: Iterable[str]) -> Mapping[str, ModelHealth]:
        return {m: self._health[m] for m in models if m in self._health}

    async def record_success(self, model: str, latency_s: float | None, now: float | None = None) -> ModelHealth:
        if latency_s is not None:
            previous = self._latency.get(model)
            self._latency[model] = latency_s if previous is None else previous + LATENCY_WEIGHT * (latency_s - previous)
        current = self._health.get(model)
        if current is None:
            return ModelHealth()
        updated = circuit.on_success(current, time.time() if now is None else now, self.settings)
        self._health[model] = updated
        return updated

    async def record_failure(self, model: str, now: float, *, immediate: bool, total_models: int) -> ModelHealth:
        opened = sum(1 for h in self._health.values() if h.state(now) == "open")
        may_eject = (opened + 1) <= max(1, int(total_models * self.settings.max_ejected_share))
        updated = circuit.on_failure(
            self._health.get(model, ModelHealth()), now, self.settings, may_eject=may_eject, immediate=immediate
        )
        self._health[model] = updated
        return updated

    async def record_rate_limited(self, model: str, now: float, retry_after_s: float | None) -> ModelHealth:
        updated = circuit.on_rate_limited(self._health.get(model, ModelHealth()), now, retry_after_s, self.settings)
        self._health[model] = updated
        return updated

    async def claim_probe(self, model: str, now: float) -> bool:
        current = self._health.get(model)
        if current is None:
            return True  # never failed: closed, nothing to probe
        claimed = circuit.claim_probe(current, now, self.settings)
        if claimed is None:
            return False
        if model in self._health:
            self._health[model] = claimed
        return True

    async def latencies(self) -> Mapping[str, float]:
        return self._latency

    # budgets ------------------------------------------------------------------------------
    def _budget(self, scope: BudgetScope) -> _Budget:
        budget = self._budgets.setdefault((scope.name, scope.window), _Budget())
        budget.drop_expired(time.time())
        return budget

    async def reserve(self, scope: BudgetScope, reservation_id: str, amount_micros: int, ttl_s: int) -> Reservation:
        budget = self._budget(scope)
        reserved = budget.reserved()
        if budget.spent + reserved + amount_micros > scope.limit_micros:
            return Reservation(False, budget.spent, reserved)
        budget.reservations[reservation_id] = (amount_micros, time.time() + ttl_s)
        return Reservation(True, budget.spent, reserved + amount_micros)

    async def settle(self, scope: BudgetScope, reservation_id: str, actual_micros: int) -> bool:
        budget = self._budget(scope)
        if reservation_id in budget.settled:
            return False
        budget.reservations.pop(reservation_id, None)
        budget.settled.add(reservation_id)
        budget.spent += actual_micros
        return True

    async def release(self, scope: BudgetScope, reservation_id: str) -> None:
        self._budget(scope).reservations.pop(reservation_id, None)

    async def budget_usage(self, scope: BudgetScope) -> Reservation:
        budget = self._budget(scope)
        return Reservation(True, budget.spent, budget.reserved())

    # rate limits --------------------------------------------------------------------------
    async def admit(self, limit: RateLimit, tokens: int) -> RateDecision:
        now = time.time()
        checks = [
            (f"{limit.name}:rpm", 1, limit.requests_per_minute),
            (f"{limit.name}:tpm", tokens, limit.tokens_per_minute),
        ]
        results = [
            (key, gcra(self._tats.get(key), now, cost, rate)) if rate else (key, None) for key, cost, rate in checks
        ]
        admitted = all(r is None or r.admitted for _, r in results)
        if admitted:
            for key, result in results:
                if result is not None:
                    self._tats[key] = result.new_tat
        return _rate_decision(admitted, [r for _, r in results])

    # cache --------------------------------------------------------------------------------
    async def cache_get(self, key: str) -> bytes | None:
        entry = self._cache.get(key)
        if entry is None or entry[1] <= time.time():
            self._cache.pop(key, None)
            return None
        return entry[0]

    async def cache_put(self, key: str, value: bytes, ttl_s: int) -> None:
        if len(self._cache) >= MAX_CACHE_ENTRIES:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = (value, time.time() + ttl_s)

    # stored responses -----------------------------------------------------------------------
    async def response_get(self, response_id: str) -> bytes | None:
        entry = self._responses.get(response_id)
        if entry is None or entry[1] <= time.time():
            self._responses.pop(response_id, None)
            return None
        return entry[0]

    async def response_put(self, response_id: str, value: bytes, ttl_s: int) -> None:
        if len(self._responses) >= MAX_STORED_RESPONSES:
            self._responses.pop(next(iter(self._responses)))
        self._responses[response_id] = (value, time.time() + ttl_s)

    async def response_delete(self, response_id: str) -> bool:
        found = await self.response_get(response_id) is not None  # an expired one is not there
        self._responses.pop(response_id, None)
        return found

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


def _rate_decision(admitted: bool, results: list[GcraResult | None]) -> RateDecision:
    requests, tokens = results
    retry = max((r.retry_after_s for r in results if r is not None and not r.admitted), default=0.0)
    return RateDecision(
        admitted=admitted,
        retry_after_s=retry,
        remaining_requests=requests.remaining if requests else -1,
        remaining_tokens=tokens.remaining if tokens else -1,
        reset_requests_s=requests.reset_s if requests else 0.0,
        reset_tokens_s=tokens.reset_s if tokens else 0.0,
    )
