"""In-process state: the default, exact for one process, per-worker with several."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from router import circuit
from router.circuit import CircuitSettings, ModelHealth

LATENCY_WEIGHT = 0.2  # weight of the newest observation in the moving average


class MemoryStateStore:
    def __init__(self, settings: CircuitSettings | None = None) -> None:
        self.settings = settings or CircuitSettings()
        self._health: dict[str, ModelHealth] = {}
        self._latency: dict[str, float] = {}

    async def health(self, models: Iterable[str]) -> Mapping[str, ModelHealth]:
        return {m: self._health[m] for m in models if m in self._health}

    async def record_success(self, model: str, latency_s: float | None) -> ModelHealth:
        if latency_s is not None:
            previous = self._latency.get(model)
            self._latency[model] = latency_s if previous is None else previous + LATENCY_WEIGHT * (latency_s - previous)
        current = self._health.get(model)
        if current is None:
            return ModelHealth()
        updated = circuit.on_success(current)
        self._health[model] = updated
        return updated

    async def record_failure(self, model: str, now: float, *, immediate: bool, total_models: int) -> ModelHealth:
        opened = sum(1 for h in self._health.values() if h.state(now) == "open")
        may_eject = (opened + 1) <= max(1, int(total_models * self.settings.max_ejected_share))
        updated = circuit.on_failure(self._health.get(model, ModelHealth()), now, self.settings, may_eject=may_eject, immediate=immediate)
        self._health[model] = updated
        return updated

    async def record_rate_limited(self, model: str, now: float, retry_after_s: float | None) -> ModelHealth:
        updated = circuit.on_rate_limited(self._health.get(model, ModelHealth()), now, retry_after_s, self.settings)
        self._health[model] = updated
        return updated

    async def claim_probe(self, model: str, now: float) -> bool:
        claimed = circuit.claim_probe(self._health.get(model, ModelHealth()), now, self.settings)
        if claimed is None:
            return False
        if model in self._health:
            self._health[model] = claimed
        return True

    async def latencies(self) -> Mapping[str, float]:
        return self._latency

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None
