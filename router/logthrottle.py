"""At most one log line per kind of event per interval, with a count of those held back.

A storm of failing requests (1k/s against a dead upstream) must not turn into 1k log
lines a second; the access log still has one line per request.
"""

from __future__ import annotations

import logging
import time
from typing import Any


class LogThrottle:
    def __init__(self, logger: logging.Logger, interval_s: float = 1.0) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._last: dict[tuple[str, ...], tuple[float, int]] = {}

    def warning(self, message: str, key: tuple[str, ...], extra: dict[str, Any]) -> None:
        now = time.monotonic()
        last, held_back = self._last.get(key, (-self.interval_s, 0))
        if now - last < self.interval_s:
            self._last[key] = (last, held_back + 1)
            return
        self._last[key] = (now, 0)
        self.logger.warning(message, extra={**extra, "suppressed_since_last": held_back})
