"""The state-store interface: model health (circuit breaking, cooldowns) and latencies."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from router.circuit import ModelHealth


class StateStore(Protocol):
    async def health(self, models: Iterable[str]) -> Mapping[str, ModelHealth]:
        """Current health of the given models (absent ones are healthy)."""

    async def record_success(self, model: str, latency_s: float | None) -> ModelHealth: ...

    async def record_failure(self, model: str, now: float, *, immediate: bool, total_models: int) -> ModelHealth: ...

    async def record_rate_limited(self, model: str, now: float, retry_after_s: float | None) -> ModelHealth: ...

    async def claim_probe(self, model: str, now: float) -> bool: ...

    async def latencies(self) -> Mapping[str, float]: ...

    async def ping(self) -> bool: ...

    async def aclose(self) -> None: ...
