"""Circuit breaking per model, as pure transitions over a ``ModelHealth`` record.

closed ──N consecutive failures──▶ open (base × ejections, capped)
open ──time passes──▶ half-open ──one probe succeeds──▶ closed
                                  └─probe fails──▶ open again, longer
A provider-auth failure opens the circuit at once. A 429 does not count as a failure; it
cools the model down for the upstream's Retry-After instead.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from router.types import CircuitState


@dataclass(frozen=True, slots=True)
class CircuitSettings:
    failure_threshold: int = 5
    base_ejection_s: float = 30.0
    max_ejection_s: float = 300.0
    max_ejected_share: float = 0.5
    probe_timeout_s: float = 30.0
    default_cooldown_s: float = 1.0
    max_cooldown_s: float = 300.0


@dataclass(frozen=True, slots=True)
class ModelHealth:
    consecutive_failures: int = 0
    ejections: int = 0
    open_until: float = 0.0
    cooldown_until: float = 0.0
    probe_until: float = 0.0

    def state(self, now: float) -> CircuitState:
        if self.open_until > now:
            return "open"
        if self.ejections > 0:
            return "half_open"
        return "closed"

    def unavailable_until(self, now: float) -> float | None:
        """When this model may be tried again, or None if it may be tried now."""
        until = max(self.open_until, self.cooldown_until, self.probe_until if self.ejections else 0.0)
        return until if until > now else None


def on_success(health: ModelHealth) -> ModelHealth:
    return ModelHealth(cooldown_until=health.cooldown_until)


def on_failure(
    health: ModelHealth, now: float, settings: CircuitSettings, *, may_eject: bool, immediate: bool = False
) -> ModelHealth:
    failures = health.consecutive_failures + 1
    reopen = health.state(now) == "half_open"
    if immediate or reopen or (failures >= settings.failure_threshold and may_eject):
        ejections = health.ejections + 1
        duration = min(settings.base_ejection_s * ejections, settings.max_ejection_s)
        return replace(health, consecutive_failures=0, ejections=ejections, open_until=now + duration, probe_until=0.0)
    return replace(health, consecutive_failures=failures)


def on_rate_limited(
    health: ModelHealth, now: float, retry_after_s: float | None, settings: CircuitSettings
) -> ModelHealth:
    wait = min(retry_after_s if retry_after_s is not None else settings.default_cooldown_s, settings.max_cooldown_s)
    return replace(health, cooldown_until=max(health.cooldown_until, now + wait))


def claim_probe(health: ModelHealth, now: float, settings: CircuitSettings) -> ModelHealth | None:
    """The health record with a probe claimed, or None if this caller may not probe."""
    if health.state(now) != "half_open":
        return health
    if health.probe_until > now:
        return None
    return replace(health, probe_until=now + settings.probe_timeout_s)
