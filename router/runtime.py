"""What every request handler reads: the live policy and the parts built from it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from starlette.requests import Request

from router.dispatch import Dispatcher
from router.policy.model import Policy
from router.providers.base import ProviderAdapter
from router.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    policy: Policy
    adapters: dict[str, ProviderAdapter] = field(default_factory=dict)
    dispatcher: Dispatcher | None = None
    loaded_at: int = field(default_factory=lambda: int(time.time()))
    ready: bool = False


def runtime_of(request: Request) -> Runtime:
    return request.app.state.runtime
