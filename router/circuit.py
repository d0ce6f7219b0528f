"""Circuit breaking per model, as pure transitions over a ``ModelHealth`` record.

closed ──N consecutive failures──▶ open (base × multiplier, capped)
open ──time passes──▶ half-open ──one probe succeeds──▶ closed (multiplier kept, decaying)
                                  └─probe fails──▶ open again, longer
The multiplier is the number of ejections in a row. As in Envoy, a recovered model keeps it
and loses one for every ``decay_s`` it stays healthy (closed since ``healthy_since``): a
flapping model is ejected for longer each time, a model that stayed healthy starts again
from the base time. A provider-auth failure opens the circuit at once. A 429 does not count
as a failure; it cools the model down for the upstream's Retry-After instead.
"""

from __future__ import annotations

import math
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
    ejection_decay_s: float | None = None  # healthy time that takes one off the multiplier; None: base_ejection_s

    @property
    def decay_s(self) -> float:
        return self.base_ejection_s if self.ejection_decay_s is None else self.ejection_decay_s


@dataclass(frozen=True, slots=True)
class ModelHealth:
    consecutive_failures: int = 0
    ejections: int = 0  # the multiplier as of ``healthy_since`` (ejections in a row)
    open_until: float = 0.0
    cooldown_until: float = 0.0
    probe_until: float = 0.0
    healthy_since: float = 0.0  # when a success closed the circuit after an ejection; 0: not since

    def state(self, now: float) -> CircuitState:
        if self.open_until > now:
            return "open"
        if self.ejections > 0 and not self.healthy_since:
            return "half_open"
        return "closed"

    def unavailable_until(self, now: float) -> float | None:
        """When this model may be tried again, or None if it may be tried now."""
        probing = self.probe_until if self.ejections and not self.healthy_since else 0.0
        until = max(self.open_until, self.cooldown_until, probing)
        return until if until > now else None


def multiplier(health: ModelHealth, now: float, settings: CircuitSettings) -> int:
    """Ejections in a row, less one for every ``decay_s`` the model has stayed healthy."""
    if not health.healthy_since:
        return health.ejections
    healthy_for = max(0.0, now - health.healthy_since)
    return max(0, health.ejections - math.floor(healthy_for / settings.decay_s))


def on_success(health: ModelHealth, now: float, settings: CircuitSettings) -> ModelHealth:
    since = health.healthy_since or now
    left = multiplier(replace(health, healthy_since=since), now, settings)
    if left == 0:
        return ModelHealth(cooldown_until=health.cooldown_until)
    return ModelHealth(ejections=health.ejections, cooldown_until=health.cooldown_until, healthy_since=since)


def on_failure(
    health: ModelHealth, now: float, settings: CircuitSettings, *, may_eject: bool, immediate: bool = False
) -> ModelHealth:
    failures = health.consecutive_failures + 1
    reopen = health.state(now) == "half_open"
    if immediate or reopen or (failures >= settings.failure_threshold and may_eject):
        ejections = multiplier(health, now, settings) + 1
        duration = min(settings.base_ejection_s * ejections, settings.max_ejection_s)
        return ModelHealth(0, ejections, now + duration, health.cooldown_until, 0.0, 0.0)
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
