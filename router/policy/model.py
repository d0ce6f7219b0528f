"""The validated, frozen policy the engine and dispatcher read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from router.types import BudgetPeriod, ModelKind, UnsupportedParamPolicy

PER_MILLION = 1_000_000


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    type: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    standby: bool = False
    enabled: bool = True
    disabled_reason: str | None = None
    max_connections: int | None = None
    latency_ms: float = 0.0
    tokens_per_second: float = 0.0
    failure_rate: float = 0.0
    unsupported_params: frozenset[str] = frozenset()
    on_unsupported: UnsupportedParamPolicy = "drop"
    responses_api: str = "translate"  # "native": /v1/responses goes upstream as a Responses request


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens."""

    input: float
    output: float
    cached_input: float | None = None

    def cost_usd(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> float:
        cached = min(cached_tokens, input_tokens) if self.cached_input is not None else 0
        cached_price = self.cached_input if self.cached_input is not None else self.input
        return (
            (input_tokens - cached) * self.input + cached * cached_price + output_tokens * self.output
        ) / PER_MILLION


def gpu_price(gpu_hour_usd: float, tokens_per_second: float) -> Price:
    """A self-hosted model's price from its GPU cost and output throughput:
    USD per 1M output tokens = gpu_hour_usd / 3600 / tokens_per_second × 1M (input is free:
    prefill is an order of magnitude faster than decoding)."""
    return Price(0.0, gpu_hour_usd / 3600 / tokens_per_second * PER_MILLION)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. ``ttft_s``: to the first content chunk; ``idle_s``: between chunks."""

    connect_s: float
    ttft_s: float
    idle_s: float
    total_s: float

    def override(self, changes: Mapping[str, float]) -> Timeouts:
        return Timeouts(**{**{f: getattr(self, f) for f in ("connect_s", "ttft_s", "idle_s", "total_s")}, **changes})


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    provider: str
    upstream: str
    tier: str
    tier_rank: int
    kind: ModelKind
    price: Price
    price_source: str
    context_window: int
    max_output_tokens: int | None
    capabilities: frozenset[str]
    timeouts: Mapping[str, float] = field(default_factory=dict)
    gpu_hour_usd: float | None = None


@dataclass(frozen=True, slots=True)
class EscalationStep:
    """A request whose predicted difficulty is above ``above`` goes to ``tier`` (or higher)."""

    above: float
    tier: str
    tier_rank: int


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    tier: str
    tier_rank: int
    ceiling_rank: int
    models: frozenset[str] | None = None
    timeouts: Mapping[str, float] = field(default_factory=dict)
    retries: int | None = None
    cache_ttl_s: int | None = None
    escalate: tuple[EscalationStep, ...] = ()  # ascending by ``above``; empty: the route never escalates


@dataclass(frozen=True, slots=True)
class Comparison:
    gt: int | None = None
    gte: int | None = None
    lt: int | None = None
    lte: int | None = None
    eq: int | None = None

    def holds(self, value: int) -> bool:
        return (
            (self.gt is None or value > self.gt)
            and (self.gte is None or value >= self.gte)
            and (self.lt is None or value < self.lt)
            and (self.lte is None or value <= self.lte)
            and (self.eq is None or value == self.eq)
        )


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    prompt_tokens: Comparison | None = None
    headers: Mapping[str, str] | None = None
    uses_tools: bool | None = None
    routes: frozenset[str] | None = None
    set_tier: str | None = None
    set_tier_rank: int | None = None
    set_models: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Budget:
    usd: float
    per: BudgetPeriod


@dataclass(frozen=True, slots=True)
class ShadowRule:
    """A loaded ``shadow:`` entry. ``route`` is as written (a route name or ``*``);
    ``reference_rank`` is the reference tier's rank (or the reference model's tier's):
    only answers of a lower tier (a higher rank) are shadowed."""

    route: str
    sample: float
    reference: str
    reference_model: str | None  # set when ``reference`` names a model, else it names a tier
    reference_rank: int
    judge: str
    budget: Budget
    keep_prompts: bool = False
    judge_prompt: str | None = field(default=None, repr=False)  # the override's text


@dataclass(frozen=True, slots=True)
class ClientKey:
    """A client key, known only by its SHA-256 digest."""

    name: str
    team: str
    digest: str = field(repr=False)
    routes: frozenset[str] | None = None
    allow_tier_override: bool = False
    admin: bool = False
    budget: Budget | None = None
    rpm: int | None = None
    tpm: int | None = None


@dataclass(frozen=True, slots=True)
class Defaults:
    route: str
    timeout_s: float
    connect_timeout_s: float
    ttft_timeout_s: float
    idle_timeout_s: float
    retries: int
    max_retry_wait_s: float
    eject_after_failures: int
    ejection_s: float
    baseline_model: str | None
    expected_output_tokens: int
    concrete_model_fallback: bool
    max_n: int
    max_output_tokens: int = 4096  # output cap of a budgeted request that sets none


@dataclass(frozen=True, slots=True)
class Policy:
    source: str
    sha256: str
    tiers: tuple[str, ...]
    providers: Mapping[str, Provider]
    models: Mapping[str, Model]
    routes: Mapping[str, Route]
    rules: tuple[Rule, ...]
    defaults: Defaults
    keys: Mapping[str, ClientKey] = field(default_factory=dict)  # by hex digest
    team_budgets: Mapping[str, Budget] = field(default_factory=dict)
    # route name → its shadow rule ("*" already expanded): one dict lookup per request
    shadow: Mapping[str, ShadowRule] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()  # located, e.g. a literal api_key in the file
    # Worked out once per policy for the access log (what a replay needs, nothing more): the
    # request headers the engine reads (the rules' and ``x-router-tier``), and the body
    # parameters a provider that refuses unsupported ones would refuse.
    read_headers: frozenset[str] = field(default=frozenset(), init=False)
    refusable_params: frozenset[str] = field(default=frozenset(), init=False)

    def __post_init__(self) -> None:
        for name in ("providers", "models", "routes", "keys", "team_budgets", "shadow"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))
        read = {name for rule in self.rules if rule.headers for name in rule.headers}
        object.__setattr__(self, "read_headers", frozenset({*read, "x-router-tier"}))
        refusable = {p for v in self.providers.values() if v.on_unsupported == "refuse" for p in v.unsupported_params}
        object.__setattr__(self, "refusable_params", frozenset(refusable))

    def timeouts_for(self, route: str, model: Model) -> Timeouts:
        d = self.defaults
        base = Timeouts(d.connect_timeout_s, d.ttft_timeout_s, d.idle_timeout_s, d.timeout_s)
        route_overrides = self.routes[route].timeouts if route in self.routes else {}
        return base.override(route_overrides).override(model.timeouts)

    def retries_for(self, route: str) -> int:
        configured = self.routes[route].retries if route in self.routes else None
        return self.defaults.retries if configured is None else configured

    @property
    def escalates(self) -> bool:
        """Whether any route escalates by difficulty (only then is the predictor loaded)."""
        return any(route.escalate for route in self.routes.values())

    def tier_rank(self, tier: str) -> int:
        return self.tiers.index(tier)

    def route_names(self) -> list[str]:
        return sorted(self.routes)

    def teams(self) -> tuple[str, ...]:
        """Every team label value: ``none`` (no key) plus the teams of keys and budgets."""
        return ("none", *sorted({k.team for k in self.keys.values()} | set(self.team_budgets)))
