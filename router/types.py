"""The router's vocabulary: the value types and fixed string sets every layer shares.

Nothing here imports from the rest of the router, so any module may import it. A string
set is a ``Literal`` alias: mypy checks every use, and metric labels drawn from one stay
bounded by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

# What a request asks the router to do; also the ``gen_ai_operation_name`` metric label
# (OpenTelemetry GenAI values). ``embeddings`` is the operation; ``embedding`` is a model's kind.
# ``responses`` is OpenAI's Responses API, served by chat models.
Operation = Literal["chat", "embeddings", "responses"]
# What a model does, as the policy file (and litellm's model map ``mode``) names it.
ModelKind = Literal["chat", "embedding"]
MODEL_KIND: dict[Operation, ModelKind] = {"chat": "chat", "embeddings": "embedding", "responses": "chat"}

# How a request ended: the ``outcome`` of ``router_requests_total`` and the access log.
Outcome = Literal[
    "success",
    "client_error",
    "upstream_error",
    "no_candidate",
    "rate_limited",
    "stream_error",
    "cancelled",
    "timeout",
    "unavailable",  # the state store is down and the feature fails closed (503)
    "internal_error",  # an exception nobody expected, answered as an accounted 502
]
OUTCOMES: frozenset[str] = frozenset(get_args(Outcome))

# Why one upstream attempt failed: ``UpstreamError.reason``, the ``reason`` and
# ``error_type`` metric labels, and the code of an in-band stream error. ``internal_error``
# is the router's own failure while relaying a stream.
ErrorReason = Literal[
    "connect_error",
    "timeout",
    "ttft_timeout",
    "idle_timeout",
    "rate_limited",
    "server_error",
    "auth_error",
    "client_error",
    "bad_response",
    "stream_error",
    "saturated",
    "internal_error",
]

CircuitState = Literal["closed", "half_open", "open"]
BudgetPeriod = Literal["day", "month"]
# What a provider does with a request parameter it does not support.
UnsupportedParamPolicy = Literal["drop", "refuse"]
ReloadResultKind = Literal["success", "unchanged", "failure"]


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one answer used (``providers.base.usage_from_openai`` reads OpenAI's shape)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0

    def to_openai(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }


@dataclass(frozen=True, slots=True)
class BudgetScope:
    """One budget: ``name`` like ``key:web-app`` or ``team:web``, its window and limit."""

    name: str
    window: str  # e.g. "2026-11-25" (per day) or "2026-11" (per month)
    limit_micros: int
    window_ttl_s: int  # how long the window's counters are kept
    per: BudgetPeriod = "day"  # when the window resets


@dataclass(frozen=True, slots=True)
class RateLimit:
    """GCRA limits for one client key; a zero rate means unlimited."""

    name: str
    requests_per_minute: int
    tokens_per_minute: int
