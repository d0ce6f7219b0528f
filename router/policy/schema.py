"""The raw policy schema: the YAML's shape, strict, before any cross-reference check.

Unknown keys are rejected (``extra="forbid"``) so a misspelt key is an error, never
silently ignored. The load step (``loader.py``) turns this into ``model.Policy``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Capability = Literal["tools", "vision", "json_schema"]
PositiveInt = Field(gt=0)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class RawProvider(Strict):
    type: Literal["openai", "litellm", "simulated"]
    base_url: str | None = None
    api_key: str | None = None
    headers: dict[str, str] = {}
    standby: bool = False
    max_connections: int | None = Field(default=None, gt=0, le=100_000)
    latency_ms: float | None = Field(default=None, ge=0, le=600_000)
    tokens_per_second: float | None = Field(default=None, gt=0, le=1_000_000)
    failure_rate: float | None = Field(default=None, ge=0, le=1)
    unsupported_params: list[str] = []
    on_unsupported: Literal["drop", "refuse"] = "drop"


class RawPrice(Strict):
    input: float = Field(ge=0, le=100_000)
    output: float = Field(ge=0, le=100_000)
    cached_input: float | None = Field(default=None, ge=0, le=100_000)


class RawTimeouts(Strict):
    """Per-route or per-model overrides of the defaults' timeouts (seconds)."""

    timeout_s: float | None = Field(default=None, gt=0, le=86_400)
    connect_timeout_s: float | None = Field(default=None, gt=0, le=600)
    ttft_timeout_s: float | None = Field(default=None, gt=0, le=3_600)
    idle_timeout_s: float | None = Field(default=None, gt=0, le=3_600)


class RawModel(Strict):
    provider: str
    tier: str
    upstream: str | None = None
    catalog: str | None = None
    kind: Literal["chat", "embedding"] | None = None
    price: RawPrice | None = None
    gpu_hour_usd: float | None = Field(default=None, gt=0, le=10_000)
    gpu_tokens_per_second: float | None = Field(default=None, gt=0, le=1_000_000)
    context_window: int | None = Field(default=None, gt=0)
    max_output_tokens: int | None = Field(default=None, gt=0)
    capabilities: list[Capability] | None = None
    timeouts: RawTimeouts | None = None


class RawRoute(Strict):
    tier: str
    fallback_tier: str | None = None
    models: list[str] | None = Field(default=None, min_length=1)
    timeouts: RawTimeouts | None = None
    retries: int | None = Field(default=None, ge=0, le=5)
    cache: RawRouteCache | None = None


class RawComparison(Strict):
    gt: int | None = None
    gte: int | None = None
    lt: int | None = None
    lte: int | None = None
    eq: int | None = None

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
    usd: float = Field(gt=0, le=10_000_000)
    per: Literal["day", "month"]


class RawLimits(Strict):
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
    ttl_s: int = Field(gt=0, le=30 * 86_400)


class RawDefaults(Strict):
    route: str
    timeout_s: float = Field(default=120, gt=0, le=86_400)
    connect_timeout_s: float = Field(default=5, gt=0, le=600)
    ttft_timeout_s: float = Field(default=20, gt=0, le=3_600)
    idle_timeout_s: float = Field(default=60, gt=0, le=3_600)
    retries: int = Field(default=2, ge=0, le=5)
    max_retry_wait_s: float = Field(default=10, ge=0, le=300)
    eject_after_failures: int = Field(default=5, ge=1, le=1000)
    ejection_s: float = Field(default=30, gt=0, le=3_600)
    baseline_model: str | None = None
    expected_output_tokens: int = Field(default=256, gt=0, le=1_000_000)
    max_output_tokens: int = Field(default=4096, gt=0, le=1_000_000)  # sent upstream for budgeted requests without one
    concrete_model_fallback: bool = True
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
    defaults: RawDefaults
