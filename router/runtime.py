"""What every request handler reads: settings, metrics and the live gateway."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from router.gateway import Gateway
from router.metrics import Metrics
from router.settings import Settings
from router.state.base import StateStore


@dataclass
class Runtime:
    settings: Settings
    metrics: Metrics
    store: StateStore
    gateway: Gateway | None = None
    reloader: Any = None
    loaded_at: int = field(default_factory=lambda: int(time.time()))
    ready: bool = False


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime
