"""Every Prometheus metric the proxy exports, in one place.

Names follow the OpenTelemetry GenAI semantic conventions in their Prometheus form; the
router's own figures use the ``router_`` prefix. Label values come only from the policy
(routes, tiers, models, providers, teams) or from fixed vocabularies; anything else is
recorded as ``other``. With several uvicorn workers the values live in
``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` merges them.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from typing import Any, overload

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from router.policy.model import Policy
from router.types import OUTCOMES, CircuitState

__all__ = ["CIRCUIT_STATES", "OUTCOMES", "Metrics", "multiprocess_enabled"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
DIFFICULTY_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))  # 0.05 … 1.0
CIRCUIT_STATES: dict[CircuitState, int] = {"closed": 0, "half_open": 1, "open": 2}
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._circuit: dict[tuple[str, str], CircuitState] = {}  # the state each circuit gauge shows
        r = self.registry
        client_labels = [
            "gen_ai_operation_name",
            "gen_ai_provider_name",
            "gen_ai_request_model",
            "gen_ai_response_model",
            "error_type",
        ]
        self.operation_duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "Duration of each upstream attempt",
            client_labels,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.token_usage = Histogram(
            "gen_ai_client_token_usage",
            "Tokens per upstream call",
            [*client_labels, "gen_ai_token_type"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.request_duration = Histogram(
            "gen_ai_server_request_duration_seconds",
            "End-to-end request duration in the proxy",
            ["route", "tier", "gen_ai_response_model", "error_type"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.time_to_first_token = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time to the first streamed chunk",
            ["route", "gen_ai_provider_name", "gen_ai_response_model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "router_requests",
            "Routed requests by outcome",
            ["route", "tier", "model", "provider", "outcome"],
            registry=r,
        )
        self.cost = Counter(
            "router_cost_usd",
            "Cost of answered requests in USD",
            ["route", "tier", "model", "provider", "team", "estimated"],
            registry=r,
        )
        self.savings = Counter(
            "router_savings_usd", "Cost avoided against defaults.baseline_model, in USD", ["route", "team"], registry=r
        )
        self.tokens = Counter(
            "router_tokens",
            "Tokens by model and type (input, output; cached is part of input, reasoning part of output)",
            ["model", "provider", "type"],
            registry=r,
        )
        self.fallbacks = Counter(
            "router_fallbacks",
            "Moves from a failed candidate to the next",
            ["from_model", "to_model", "reason"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "router_upstream_errors", "Failed upstream attempts", ["model", "provider", "reason"], registry=r
        )
        self.overhead = Histogram(
            "router_overhead_seconds",
            "Proxy time excluding upstream time",
            ["route"],
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.difficulty = Histogram(
            "router_difficulty",
            "Predicted difficulty of requests on routes that escalate by it",
            ["route"],
            buckets=DIFFICULTY_BUCKETS,
            registry=r,
        )
        self.escalations = Counter(
            "router_escalations",
            "Requests on an escalating route by the tier its difficulty step chose (the route's own tier included)",
            ["route", "tier"],
            registry=r,
        )
        self.inflight = Gauge(
            "router_inflight_requests",
            "Requests waiting on an upstream",
            ["provider"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.circuit_state = Gauge(
            "router_circuit_state",
            "0 closed, 1 half-open, 2 open",
            ["model", "provider"],
            registry=r,
            multiprocess_mode="max",
        )
        self.budget_rejections = Counter(
            "router_budget_rejections", "Requests refused by a budget", ["team"], registry=r
        )
        self.rate_limited = Counter("router_rate_limited", "Requests refused by a rate limit", ["team"], registry=r)
        self.policy_reloads = Counter("router_policy_reloads", "Policy reloads by result", ["result"], registry=r)
        self.state_store_up = Gauge(
            "router_state_store_up",
            "1 while the shared state store (Redis) answers",
            registry=r,
            multiprocess_mode="min",
        )
        self.shadow_verdicts = Counter(
            "router_shadow_verdicts",
            "Shadow-evaluated answers by the judge's verdict on the cheaper answer against the reference",
            ["route", "model", "reference_model", "verdict"],
            registry=r,
        )
        self.shadow_cost = Counter(
            "router_shadow_cost_usd",
            "What shadow evaluation spent (reference and judge calls), in USD",
            ["route"],
            registry=r,
        )
        self.shadow_dropped = Counter(
            "router_shadow_dropped", "Sampled answers not shadow-evaluated, by reason", ["reason"], registry=r
        )
        self.policy_info = Gauge(
            "router_policy_info",
            "The policy this replica runs (value 1)",
            ["sha256"],
            registry=r,
            multiprocess_mode="max",
        )

    @overload
    def child(self, metric: Histogram, *values: str) -> HistogramChild: ...
    @overload
    def child(self, metric: Counter, *values: str) -> CounterChild: ...
    @overload
    def child(self, metric: Gauge, *values: str) -> Gauge: ...
    def child(self, metric: Counter | Gauge | Histogram, *values: str) -> HistogramChild | CounterChild | Gauge:
        """``metric.labels(*values)``, remembered: the hot path skips label validation.
        Values are positional, in the metric's label order; all come from the policy or
        fixed vocabularies, so the cache is bounded like the series themselves. A counter's
        or histogram's child comes wrapped so that ``inc``/``observe`` go straight to its values."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            labelled = metric.labels(*values)
            if isinstance(labelled, Histogram):
                found = HistogramChild(labelled)
            elif isinstance(labelled, Counter):
                found = CounterChild(labelled)
            else:
                found = labelled
            self._children[key] = found
        return found

    def prime(self, policy: Policy, teams: tuple[str, ...] = ("none",)) -> None:
        """Create the series that are zero until something happens, so dashboards and
        alerts see 0 rather than no data: circuit states, rejections, reload results."""
        for model in policy.models.values():
            self.circuit_state.labels(model=model.name, provider=model.provider).set(0)
            self._circuit[(model.name, model.provider)] = "closed"
        for team in teams:
            self.budget_rejections.labels(team=team)
            self.rate_limited.labels(team=team)
        for result in ("success", "failure"):
            self.policy_reloads.labels(result=result)
        for route in policy.routes.values():
            for tier in (route.tier, *(step.tier for step in route.escalate)) if route.escalate else ():
                self.escalations.labels(route=route.name, tier=tier)

    def exposition(self) -> bytes:
        if multiprocess_enabled():
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated
            return generate_latest(registry)
        return generate_latest(self.registry)

    def show_policy(self, sha256: str, previous: str | None = None) -> None:
        if previous and previous != sha256:
            self.policy_info.labels(sha256=previous).set(0)
        self.policy_info.labels(sha256=sha256).set(1)

    def set_circuit(self, model: str, provider: str, state: CircuitState) -> None:
        """The model's circuit gauge, written only when its state changes (every request
        reads every model's health)."""
        key = (model, provider)
        if self._circuit.get(key) != state:
            self.child(self.circuit_state, model, provider).set(CIRCUIT_STATES[state])
            self._circuit[key] = state


class CounterChild:
    """A labelled counter's ``inc`` without prometheus_client's per-call label and exemplar
    checks (the labels were checked once, when the child was made)."""

    __slots__ = ("_value",)

    def __init__(self, child: Counter) -> None:
        self._value = child._value

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self._value.inc(amount)


class HistogramChild:
    """A labelled histogram's ``observe``: the sum, then the one bucket found by bisection
    (prometheus_client walks the bounds in order; the bucket is the same)."""

    __slots__ = ("_bounds", "_buckets", "_sum")

    def __init__(self, child: Histogram) -> None:
        self._sum = child._sum
        self._buckets = child._buckets
        self._bounds = child._upper_bounds

    def observe(self, amount: float) -> None:
        self._sum.inc(amount)
        index = bisect_left(self._bounds, amount)
        if index < len(self._buckets):
            self._buckets[index].inc(1)
