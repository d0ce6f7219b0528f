"""The policy a request runs under: one immutable snapshot, swapped whole on reload.

A snapshot holds what a policy file decides (the policy, the adapters built from it, every
timeout worked out once); the per-process services (state store, metrics, accountant,
retry budget, log throttles) outlive it. ``PolicyMiddleware`` pins the current snapshot
to each request and counts the requests still running on it, so a reload can close the
old adapters once nothing uses them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from router.policy.model import Model, Policy, Timeouts
from router.providers.base import ProviderAdapter


class InFlight:
    """How many requests (streams included) run on a snapshot right now."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


@dataclass(frozen=True, slots=True, eq=False)
class PolicySnapshot:
    policy: Policy
    adapters: Mapping[str, ProviderAdapter]
    route_timeouts: Mapping[tuple[str, str], Timeouts]  # (route, model) where the route overrides
    model_timeouts: Mapping[str, Timeouts]  # defaults with each model's own overrides
    inflight: InFlight = field(default_factory=InFlight)

    @classmethod
    def build(cls, policy: Policy, adapters: Mapping[str, ProviderAdapter]) -> PolicySnapshot:
        route_timeouts = {
            (route.name, model.name): policy.timeouts_for(route.name, model)
            for route in policy.routes.values()
            if route.timeouts
            for model in policy.models.values()
        }
        model_timeouts = {model.name: policy.timeouts_for("", model) for model in policy.models.values()}
        return cls(policy, MappingProxyType(dict(adapters)), MappingProxyType(route_timeouts), model_timeouts)

    def timeouts(self, route: str, model: Model) -> Timeouts:
        """The timeouts of ``model`` when called for ``route`` (a route, tier or model name)."""
        return self.route_timeouts.get((route, model.name)) or self.model_timeouts[model.name]


class LivePolicy:
    """The snapshot new requests are pinned to; a reload swaps it whole. Set once the
    adapters exist (in the app's lifespan), before any request is served."""

    __slots__ = ("snapshot",)
    snapshot: PolicySnapshot
