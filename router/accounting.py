"""What one request did and cost: recorded as metrics and as one access-log line.

A ``RequestRecord`` travels with the request and is written by its owner, the gateway's
operation, alone; the dispatcher keeps its attempts in the record's ``Trail``.
``Accountant.finish`` turns a finished record into metrics once. Usage the upstream did not
report is estimated with the tokenizer and marked so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from router import costs
from router.metrics import Metrics
from router.policy import tokens
from router.policy.model import Model, Policy, Price, gpu_price
from router.types import OUTCOMES, BudgetScope, ErrorReason, Operation, Outcome, Usage


@dataclass(slots=True)
class Trail:
    """The upstream attempts of one request, kept by the dispatcher."""

    attempts: int = 0
    upstream_s: float = 0.0  # time spent waiting on upstreams, streams included
    last_model: Model | None = None  # the model that failed last, if any


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    operation: Operation
    route: str  # a route, tier or model of the policy, or "other" before one is known
    tier: str = "none"
    team: str = "none"
    stream: bool = False
    prompt_tokens: int = 0
    started: float = field(default_factory=time.perf_counter)
    trail: Trail = field(default_factory=Trail)
    ttft_s: float | None = None
    model: Model | None = None
    usage: Usage | None = None
    usage_estimated: bool = False
    outcome: Outcome = "success"
    error_type: str = "none"  # an ErrorReason, an HTTP status, "cancelled" or "none": bounded
    cost_usd: float = 0.0
    finished: bool = False
    key_name: str | None = None
    reservations: list[BudgetScope] = field(default_factory=list)  # scopes holding a reservation
    reserved_micros: int = 0  # a budget's reservation: no candidate may be sent more output than it covers
    requested_output_tokens: int | None = None  # the client's max_tokens / max_completion_tokens
    n: int = 1


class StreamTally:
    """What a ``dispatch.Streaming`` saw: usage, generated text (for estimates), upstream
    wait, first chunk, outcome, and whether its failure is the model's (a bug of ours is not)."""

    __slots__ = (
        "blames_model",
        "error_reason",
        "estimated",
        "first_chunk_at",
        "outcome",
        "text",
        "upstream_s",
        "usage",
    )

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.estimated = False
        self.text: list[str] = []
        self.upstream_s = 0.0
        self.first_chunk_at: float | None = None
        self.outcome: Outcome = "success"
        self.error_reason: ErrorReason | None = None
        self.blames_model = True


THROUGHPUT_WEIGHT = 0.2


class Accountant:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.tokens_per_second: dict[str, float] = {}

    def price_of(self, model: Model) -> Price:
        """The policy price; for ``gpu_hour_usd`` models, from the measured throughput."""
        measured = self.tokens_per_second.get(model.name)
        if model.gpu_hour_usd is None or not measured:
            return model.price
        return gpu_price(model.gpu_hour_usd, measured)

    def _measure_throughput(self, record: RequestRecord, model: Model, usage: Usage) -> None:
        upstream_s = record.trail.upstream_s
        if record.outcome != "success" or record.usage_estimated or usage.output_tokens < 1 or upstream_s <= 0:
            return
        observed = usage.output_tokens / upstream_s
        previous = self.tokens_per_second.get(model.name)
        self.tokens_per_second[model.name] = (
            observed if previous is None else previous + THROUGHPUT_WEIGHT * (observed - previous)
        )

    def attempt(
        self,
        record: RequestRecord,
        model: Model,
        duration_s: float,
        error_reason: ErrorReason | None,
        usage: Usage | None = None,
    ) -> None:
        m = self.metrics
        labels = (record.operation, model.provider, model.upstream, model.name, error_reason or "none")
        m.child(m.operation_duration, *labels).observe(duration_s)
        if error_reason:
            m.child(m.upstream_errors, model.name, model.provider, error_reason).inc()
        if usage is not None:
            m.child(m.token_usage, *labels, "input").observe(usage.input_tokens)
            m.child(m.token_usage, *labels, "output").observe(usage.output_tokens)

    def fallback(self, from_model: Model, to_model: Model, reason: str) -> None:
        self.metrics.child(self.metrics.fallbacks, from_model.name, to_model.name, reason).inc()

    def estimate_usage(self, prompt_tokens: int, output_text: str) -> Usage:
        return Usage(prompt_tokens, tokens.count_text(output_text), 0)

    def finish(self, record: RequestRecord, policy: Policy) -> float:
        """Count a finished request (once: its owner marks it ``finished``); its cost in USD."""
        elapsed = time.perf_counter() - record.started
        outcome = record.outcome if record.outcome in OUTCOMES else "other"
        model, m = record.model, self.metrics
        model_name = model.name if model else "none"
        provider = model.provider if model else "none"
        m.child(m.requests, record.route, record.tier, model_name, provider, outcome).inc()
        m.child(m.request_duration, record.route, record.tier, model_name, record.error_type).observe(elapsed)
        m.child(m.overhead, record.route).observe(max(0.0, elapsed - record.trail.upstream_s))
        if record.ttft_s is not None and model is not None:
            m.child(m.time_to_first_token, record.route, provider, model_name).observe(record.ttft_s)
        if model is not None and record.usage is not None:
            return self._bill(record, policy, model, record.usage)
        return 0.0

    def _bill(self, record: RequestRecord, policy: Policy, model: Model, usage: Usage) -> float:
        m = self.metrics
        if model.gpu_hour_usd is not None:
            self._measure_throughput(record, model, usage)
        cost_usd = costs.cost_usd(model, usage, self.price_of(model))
        estimated = "true" if record.usage_estimated else "false"
        m.child(m.cost, record.route, record.tier, model.name, model.provider, record.team, estimated).inc(cost_usd)
        saved = costs.savings_usd(policy, model, cost_usd, usage)
        m.child(m.savings, record.route, record.team).inc(max(saved, 0.0))
        m.child(m.tokens, model.name, model.provider, "input").inc(usage.input_tokens)
        m.child(m.tokens, model.name, model.provider, "output").inc(usage.output_tokens)
        if usage.cached_tokens:
            m.child(m.tokens, model.name, model.provider, "cached").inc(usage.cached_tokens)
        return cost_usd


def access_fields(record: RequestRecord) -> dict[str, object]:
    """The routed part of a request's access-log line: never a key or a prompt."""
    usage = record.usage or Usage()
    return {
        "operation": record.operation,
        "route": record.route,
        "tier": record.tier,
        "team": record.team,
        "model": record.model.name if record.model else None,
        "provider": record.model.provider if record.model else None,
        "stream": record.stream,
        "attempts": record.trail.attempts,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cached_tokens": usage.cached_tokens,
        "cost_usd": round(record.cost_usd, 10),
        "cost_estimated": record.usage_estimated,
        "ttft_s": round(record.ttft_s, 6) if record.ttft_s is not None else None,
        "outcome": record.outcome,
        "error_type": record.error_type,
    }
