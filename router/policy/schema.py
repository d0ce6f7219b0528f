"""The raw policy schema: the YAML's shape, strict, before any cross-reference check.

Unknown keys are rejected (``extra="forbid"``) so a misspelt key is an error, never
silently ignored. The load step (``loader.py``) turns this into ``model.Policy``.

Every number has a lower and an upper bound, and the comment next to it says why: a value
outside them is a typo or a unit mistake (``ttft_timeout_s: 1e-9``, ``context_window: 1e30``)
that would otherwise load and then time out, eject or mis-price every request.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Capability = Literal["tools", "vision", "json_schema"]


# Timeouts (seconds). Under 0.1 s a connect, first-token or idle timeout fires on healthy
# upstreams (a TLS handshake alone can take that) and ejects them; under 1 s no model call
# completes. A total of 24 h allows the longest reasoning stream; 10 minutes to connect and
# an hour between tokens are already far past any upstream that still works.
MIN_STEP_S = 0.1
MIN_TOTAL_S = 1.0
MAX_CONNECT_S = 600.0
MAX_WAIT_S = 3_600.0
MAX_TOTAL_S = 86_400.0
# Tokens: the largest context windows hold 10M; 100M leaves room and stops 1e30.
MAX_TOKENS = 100_000_000
# Each retry is another full upstream call for the same request (Envoy's budget is 20 %).
MAX_RETRIES = 5


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class RawProvider(Strict):
    type: Literal["openai", "litellm", "simulated"]
    base_url: str | None = None
    api_key: str | None = None
    headers: dict[str, str] = {}
    standby: bool = False
    # a pool needs a connection; past 100,000 the process runs out of file descriptors first
    max_connections: int | None = Field(default=None, ge=1, le=100_000)
    # simulated: up to 10 minutes, longer than any timeout can wait
    latency_ms: float | None = Field(default=None, ge=0, le=600_000)
    # simulated: under 1 token/s a stream outlives every timeout; 1M/s is beyond any model
    tokens_per_second: float | None = Field(default=None, ge=1, le=1_000_000)
    # simulated: a probability
    failure_rate: float | None = Field(default=None, ge=0, le=1)
    unsupported_params: list[str] = []
    on_unsupported: Literal["drop", "refuse"] = "drop"
    # openai: "native" sends /v1/responses requests upstream as Responses requests
    responses_api: Literal["translate", "native"] = "translate"


class RawPrice(Strict):
    # USD per 1M tokens: free (0) up to 100,000, some 150 times the priciest model listed
    input: float = Field(ge=0, le=100_000)
    output: float = Field(ge=0, le=100_000)
    cached_input: float | None = Field(default=None, ge=0, le=100_000)


class RawTimeouts(Strict):
    """Per-route or per-model overrides of the defaults' timeouts (seconds), bounded as there."""

    timeout_s: float | None = Field(default=None, ge=MIN_TOTAL_S, le=MAX_TOTAL_S)
    connect_timeout_s: float | None = Field(default=None, ge=MIN_STEP_S, le=MAX_CONNECT_S)
    ttft_timeout_s: float | None = Field(default=None, ge=MIN_STEP_S, le=MAX_WAIT_S)
    idle_timeout_s: float | None = Field(default=None, ge=MIN_STEP_S, le=MAX_WAIT_S)


class RawModel(Strict):
    provider: str
    tier: str
    upstream: str | None = None
    catalog: str | None = None
    kind: Literal["chat", "embedding"] | None = None
    price: RawPrice | None = None
    # no GPU server rents for more than $10,000 an hour; a price of 0 is stated with price:
    gpu_hour_usd: float | None = Field(default=None, gt=0, le=10_000)
    # under 1 token/s the derived price is absurd; 1M/s is beyond any server
    gpu_tokens_per_second: float | None = Field(default=None, ge=1, le=1_000_000)
    # fewer than 16 tokens cannot hold one chat turn; the largest windows are 10M tokens
    context_window: int | None = Field(default=None, ge=16, le=MAX_TOKENS)
    # budgets reserve this many output tokens, so it must be a real model's figure
    max_output_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    capabilities: list[Capability] | None = None
    timeouts: RawTimeouts | None = None


class RawEscalationStep(Strict):
    # a difficulty is a probability: a step above 0 takes every request, one above 1 none
    above: float = Field(gt=0, lt=1)
    tier: str


class RawRoute(Strict):
    tier: str
    fallback_tier: str | None = None
    escalate: list[RawEscalationStep] | None = Field(default=None, min_length=1)
    models: list[str] | None = Field(default=None, min_length=1)
    timeouts: RawTimeouts | None = None
    retries: int | None = Field(default=None, ge=0, le=MAX_RETRIES)
    cache: RawRouteCache | None = None


class RawComparison(Strict):
    """Prompt tokens: never negative, never more than a context window holds."""

    gt: int | None = Field(default=None, ge=0, le=MAX_TOKENS)
    gte: int | None = Field(default=None, ge=0, le=MAX_TOKENS)
    lt: int | None = Field(default=None, ge=0, le=MAX_TOKENS)
    lte: int | None = Field(default=None, ge=0, le=MAX_TOKENS)
    eq: int | None = Field(default=None, ge=0, le=MAX_TOKENS)

    @model_validator(mode="after")
    def _one_bound(self) -> RawComparison:
        if all(v is None for v in (self.gt, self.gte, self.lt, self.lte, self.eq)):
            raise ValueError("needs at least one of gt, gte, lt, lte, eq")
        return self


class RawWhen(Strict):
    prompt_tokens: RawComparison | None = None
    header: dict[str, str] | None = Field(default=None, min_length=1)
    tools: bool | None = None
    route: list[str] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_condition(self) -> RawWhen:
        if all(v is None for v in (self.prompt_tokens, self.header, self.tools, self.route)):
            raise ValueError("needs at least one condition: prompt_tokens, header, tools or route")
        return self


class RawSet(Strict):
    tier: str | None = None
    models: list[str] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_action(self) -> RawSet:
        if self.tier is None and self.models is None:
            raise ValueError("needs tier or models")
        return self


class RawRule(Strict):
    name: str | None = None
    when: RawWhen
    set: RawSet


class RawBudget(Strict):
    # a budget of 0 admits nothing (leave the key out instead); $10M a period is no limit
    usd: float = Field(gt=0, le=10_000_000)
    per: Literal["day", "month"]


class RawLimits(Strict):
    # 0 would refuse every request; above these a limit limits nothing
    rpm: int | None = Field(default=None, gt=0, le=10_000_000)
    tpm: int | None = Field(default=None, gt=0, le=10_000_000_000)


class RawKey(Strict):
    hash: str
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    team: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    routes: list[str] | None = Field(default=None, min_length=1)
    allow_tier_override: bool = False
    admin: bool = False
    budget: RawBudget | None = None
    limits: RawLimits | None = None

    @field_validator("hash")
    @classmethod
    def _digest(cls, value: str) -> str:
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", value):
            raise ValueError(
                "must be 'sha256:' and 64 lowercase hex digits, as printed by `router keys new` (never the key itself)"
            )
        return value


class RawTeam(Strict):
    budget: RawBudget | None = None


class RawRouteCache(Strict):
    # at least a second; a month at most, after which prices and models have changed
    ttl_s: int = Field(ge=1, le=30 * 86_400)


class RawShadow(Strict):
    """One shadow-evaluation rule (``router.shadow``): which answers to re-ask a reference
    model for, and who judges the pair."""

    route: str
    # a share of answers: above 0 (0 shadows nothing; leave the rule out), at most all of them
    sample: float = Field(gt=0, le=1)
    reference: str
    judge: str
    budget: RawBudget
    keep_prompts: bool = False
    judge_prompt: str | None = Field(default=None, min_length=1)


class RawDefaults(Strict):
    route: str
    timeout_s: float = Field(default=120, ge=MIN_TOTAL_S, le=MAX_TOTAL_S)
    connect_timeout_s: float = Field(default=5, ge=MIN_STEP_S, le=MAX_CONNECT_S)
    ttft_timeout_s: float = Field(default=20, ge=MIN_STEP_S, le=MAX_WAIT_S)
    idle_timeout_s: float = Field(default=60, ge=MIN_STEP_S, le=MAX_WAIT_S)
    retries: int = Field(default=2, ge=0, le=MAX_RETRIES)
    # a Retry-After longer than 5 minutes is not waited for: the next candidate is tried
    max_retry_wait_s: float = Field(default=10, ge=0, le=300)
    # one failure ejects on any blip; past 1,000 a dead model is never ejected
    eject_after_failures: int = Field(default=5, ge=1, le=1000)
    # under a second an ejection ends before the next request; an hour at most (it grows)
    ejection_s: float = Field(default=30, ge=1, le=3_600)
    baseline_model: str | None = None
    # what the engine ranks by for a request without max_tokens: at least one token, at most 1M
    expected_output_tokens: int = Field(default=256, ge=1, le=1_000_000)
    # the output cap sent upstream (and reserved) for a budgeted request without max_tokens
    max_output_tokens: int = Field(default=4096, ge=1, le=1_000_000)
    concrete_model_fallback: bool = True
    # OpenAI's own limit for n is 128
    max_n: int = Field(default=16, ge=1, le=128)


class RawPolicy(Strict):
    version: Literal[1]
    tiers: list[str] = Field(min_length=1)
    providers: dict[str, RawProvider] = Field(min_length=1)
    models: dict[str, RawModel] = Field(min_length=1)
    routes: dict[str, RawRoute] = {}
    rules: list[RawRule] = []
    keys: list[RawKey] | None = None
    teams: dict[str, RawTeam] = {}
    shadow: list[RawShadow] = []
    defaults: RawDefaults
