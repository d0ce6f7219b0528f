"""GCRA (the generic cell rate algorithm) over one "theoretical arrival time" per limit.

A limit of ``rate`` per minute admits a burst of up to ``rate`` at once, then one every
60/rate seconds. The same arithmetic runs in Python (in-process store) and in Lua (Redis).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class GcraResult:
    admitted: bool
    new_tat: float
    retry_after_s: float
    remaining: int
    reset_s: float


def gcra(tat: float | None, now: float, cost: float, rate_per_minute: int) -> GcraResult:
    interval = WINDOW_S / rate_per_minute
    start = max(tat if tat is not None else now, now)
    new_tat = start + cost * interval
    ahead = new_tat - now
    if ahead > WINDOW_S:
        current = start - now
        remaining = max(0, math.floor((WINDOW_S - current) / interval))
        return GcraResult(False, start, ahead - WINDOW_S, remaining, current)
    remaining = max(0, math.floor((WINDOW_S - ahead) / interval))
    return GcraResult(True, new_tat, 0.0, remaining, ahead)
