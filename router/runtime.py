"""What every request handler reads: the per-process services, built once in ``create_app``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from starlette.requests import Request

from router.gateway import Gateway
from router.metrics import Metrics
from router.reload import PolicyReloader
from router.settings import Settings
from router.snapshot import LivePolicy
from router.state.base import StateStore


@dataclass
class Runtime:
    settings: Settings
    metrics: Metrics
    store: StateStore
    gateway: Gateway
    live: LivePolicy  # the policy snapshot new requests are pinned to
    reloader: PolicyReloader
    loaded_at: int = field(default_factory=lambda: int(time.time()))
    ready: bool = False


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime
