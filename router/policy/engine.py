"""The routing decision: a pure function of the request's features and the policy.

No I/O, no clock, no globals: given the same inputs it returns the same ranked
candidates, each with its estimated cost, and the reason every other model was left out.
Ranking: a model asked by name first, then the lowest estimated cost; at equal cost the lowest
tier that meets the request (a faster higher-tier model never takes a ``small`` request from a
free small model), then the lowest observed latency, then the name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from router.errors import InvalidRequest, ModelNotFound
from router.policy.features import RequestFeatures
from router.policy.model import EscalationStep, Model, Policy, Provider, Route, Rule

UNKNOWN_LATENCY = float("inf")


@dataclass(frozen=True, slots=True)
class Candidate:
    model: Model
    estimated_cost_usd: float


@dataclass(frozen=True, slots=True)
class Exclusion:
    """Why a model was left out. ``kind``: ``policy`` (tier, route, rule), ``request``
    (the request does not fit it) or ``unavailable`` (it fits but cannot be called now)."""

    model: str
    reason: str
    kind: str


@dataclass(frozen=True, slots=True)
class Decision:
    requested: str
    route: str
    tier: str
    reasons: tuple[str, ...]
    prompt_tokens: int
    expected_output_tokens: int
    candidates: tuple[Candidate, ...]
    excluded: tuple[Exclusion, ...]
    difficulty: float | None = None  # the request's predicted difficulty, on an escalating route
    escalation_tier: str | None = None  # the tier its difficulty step chose (the floor included)


@dataclass(frozen=True, slots=True)
class _Target:
    """What the asked name resolves to before rules: tier bounds and allowed models."""

    route: str
    tier_rank: int
    ceiling_rank: int = 0
    allowed: frozenset[str] | None = None
    pinned: str | None = None
    reasons: tuple[str, ...] = field(default=())


def decide(
    policy: Policy,
    requested: str | None,
    features: RequestFeatures,
    *,
    kind: str = "chat",
    tier_override: str | None = None,
    unavailable: Mapping[str, str] | None = None,
    latency_s: Mapping[str, float] | None = None,
) -> Decision:
    target = _resolve(policy, requested or policy.defaults.route, kind)
    route = policy.routes.get(target.route)
    escalation_tier = None
    if route is not None and route.escalate and kind == "chat" and features.difficulty is not None:
        target = _escalate(policy, route, target, features.difficulty)
        escalation_tier = policy.tiers[target.tier_rank]
    if tier_override is not None:
        target = _override_tier(policy, target, tier_override)
    target = _apply_rules(policy.rules, target, features)
    expected_output = features.requested_output_tokens or policy.defaults.expected_output_tokens
    candidates: list[Candidate] = []
    excluded: list[Exclusion] = []
    for model in policy.models.values():
        if model.kind != kind:
            continue
        exclusion = _exclusion(policy, model, target, features, unavailable or {})
        if exclusion is None:
            candidates.append(Candidate(model, _estimated_cost(model, features, expected_output)))
        else:
            excluded.append(exclusion)
    latency = latency_s or {}
    candidates.sort(  # equal cost: the lowest tier that meets the request (highest rank), then latency
        key=lambda c: (
            c.model.name != target.pinned,
            c.estimated_cost_usd,
            -c.model.tier_rank,
            latency.get(c.model.name, UNKNOWN_LATENCY),
            c.model.name,
        )
    )
    return Decision(
        requested=requested or policy.defaults.route,
        route=target.route,
        tier=policy.tiers[target.tier_rank],
        reasons=target.reasons,
        prompt_tokens=features.prompt_tokens,
        expected_output_tokens=expected_output,
        candidates=tuple(candidates),
        excluded=tuple(excluded),
        difficulty=features.difficulty if escalation_tier is not None else None,
        escalation_tier=escalation_tier,
    )


def escalation_step(route: Route, difficulty: float) -> EscalationStep | None:
    """The highest step whose ``above`` the difficulty exceeds; None keeps the route's tier."""
    chosen = None
    for step in route.escalate:
        if difficulty > step.above:
            chosen = step
    return chosen


def escalation_reason(route: Route, difficulty: float, step: EscalationStep | None) -> str:
    """``difficulty 0.74 > 0.70 → frontier``, or why the request stays on the route's tier."""
    threshold = step.above if step is not None else route.escalate[0].above
    limit = f"{threshold:.2f}" if round(threshold, 2) == threshold else f"{threshold:g}"
    shown = _figure(difficulty, threshold, max(2, len(limit) - 2))
    if step is not None:
        return f"difficulty {shown} > {limit} → {step.tier}"
    return f"difficulty {shown} ≤ {limit} → {route.tier} (the route's tier)"


def _figure(value: float, threshold: float, digits: int) -> str:
    """``digits`` decimals, more when they would show the value equal to ``threshold``."""
    text = f"{value:.{digits}f}"
    while value != threshold and float(text) == threshold and digits < 9:
        digits += 1
        text = f"{value:.{digits}f}"
    return text


def _escalate(policy: Policy, route: Route, target: _Target, difficulty: float) -> _Target:
    step = escalation_step(route, difficulty)
    reasons = (*target.reasons, escalation_reason(route, difficulty, step))
    if step is None:
        return replace(target, reasons=reasons)
    rank = step.tier_rank
    return replace(target, tier_rank=rank, ceiling_rank=min(target.ceiling_rank, rank), reasons=reasons)


def valid_names(policy: Policy, kind: str = "chat") -> list[str]:
    """Every name a client may send as ``model``: routes, tiers, then concrete models."""
    names = list(policy.routes)
    names += [t for t in policy.tiers if t not in policy.routes]
    names += [m.name for m in policy.models.values() if m.kind == kind]
    return names


def _resolve(policy: Policy, name: str, kind: str) -> _Target:
    route = policy.routes.get(name)
    if route is not None:
        return _Target(
            route.name,
            route.tier_rank,
            route.ceiling_rank,
            route.models,
            reasons=(f"route '{name}' asks for tier '{route.tier}'",),
        )
    if name in policy.tiers:
        return _Target(name, policy.tier_rank(name), reasons=(f"tier '{name}' asked directly",))
    model = policy.models.get(name)
    if model is not None and model.kind == kind:
        allowed = None if policy.defaults.concrete_model_fallback else frozenset({name})
        return _Target(
            name,
            model.tier_rank,
            ceiling_rank=model.tier_rank,
            allowed=allowed,
            pinned=name,
            reasons=(
                f"model '{name}' asked by name; fallback within tier '{model.tier}'"
                if allowed is None
                else f"model '{name}' asked by name",
            ),
        )
    raise ModelNotFound(
        f"The model '{name}' does not exist on this router. Valid values: {', '.join(valid_names(policy, kind))}.",
        param="model",
    )


def _override_tier(policy: Policy, target: _Target, tier: str) -> _Target:
    if tier not in policy.tiers:
        raise InvalidRequest(
            f"x-router-tier '{tier}' is not a tier of this policy; use one of: {', '.join(policy.tiers)}.",
            param="x-router-tier",
        )
    rank = policy.tier_rank(tier)
    return _Target(
        target.route,
        rank,
        min(target.ceiling_rank, rank),
        target.allowed,
        target.pinned,
        (*target.reasons, f"x-router-tier header set tier '{tier}'"),
    )


def _apply_rules(rules: tuple[Rule, ...], target: _Target, features: RequestFeatures) -> _Target:
    for rule in rules:
        if not _matches(rule, target, features):
            continue
        tier_rank, allowed, reasons = target.tier_rank, target.allowed, list(target.reasons)
        if rule.set_tier_rank is not None and rule.set_tier_rank < tier_rank:
            tier_rank = rule.set_tier_rank
            reasons.append(f"rule '{rule.name}' raised the tier to '{rule.set_tier}'")
        if rule.set_models is not None:
            allowed = rule.set_models if allowed is None else allowed & rule.set_models
            reasons.append(f"rule '{rule.name}' restricted models to {', '.join(sorted(rule.set_models))}")
        if len(reasons) == len(target.reasons):
            reasons.append(f"rule '{rule.name}' matched; the tier was already '{rule.set_tier}' or better")
        return _Target(
            target.route, tier_rank, min(target.ceiling_rank, tier_rank), allowed, target.pinned, tuple(reasons)
        )
    return target


def _matches(rule: Rule, target: _Target, features: RequestFeatures) -> bool:
    if rule.routes is not None and target.route not in rule.routes:
        return False
    if rule.prompt_tokens is not None and not rule.prompt_tokens.holds(features.prompt_tokens):
        return False
    if rule.uses_tools is not None and rule.uses_tools != features.uses_tools:
        return False
    if rule.headers is not None:
        return all(features.headers.get(name) == value for name, value in rule.headers.items())
    return True


def _exclusion(
    policy: Policy, model: Model, target: _Target, features: RequestFeatures, unavailable: Mapping[str, str]
) -> Exclusion | None:
    reason = _policy_reason(policy, model, target)
    if reason:
        return Exclusion(model.name, reason, "policy")
    provider = policy.providers[model.provider]
    reason = _request_reason(model, features) or _unsupported_reason(provider, features)
    if reason:
        return Exclusion(model.name, reason, "request")
    if not provider.enabled:
        return Exclusion(
            model.name, f"provider '{provider.name}' is disabled: {provider.disabled_reason}", "unavailable"
        )
    if model.name in unavailable:
        return Exclusion(model.name, unavailable[model.name], "unavailable")
    return None


def _policy_reason(policy: Policy, model: Model, target: _Target) -> str | None:
    if target.allowed is not None and model.name not in target.allowed:
        return f"not among the models allowed for '{target.route}'"
    if model.tier_rank > target.tier_rank:
        return f"tier '{model.tier}' is below the required tier '{policy.tiers[target.tier_rank]}'"
    if model.tier_rank < target.ceiling_rank:
        return f"tier '{model.tier}' is above the highest tier allowed for '{target.route}' ('{policy.tiers[target.ceiling_rank]}')"
    return None


def _request_reason(model: Model, features: RequestFeatures) -> str | None:
    requested_output = features.requested_output_tokens or 0
    needed = features.prompt_tokens + requested_output
    if needed > model.context_window:
        return f"needs {needed} tokens (prompt + requested output), context window is {model.context_window}"
    if requested_output and model.max_output_tokens and requested_output > model.max_output_tokens:
        return f"requested output of {requested_output} tokens exceeds its limit of {model.max_output_tokens}"
    missing = features.needs - model.capabilities
    if missing:
        return f"lacks capability: {', '.join(sorted(missing))}"
    return None


def _unsupported_reason(provider: Provider, features: RequestFeatures) -> str | None:
    if provider.on_unsupported != "refuse":
        return None
    refused = features.params & provider.unsupported_params
    return f"provider '{provider.name}' does not support: {', '.join(sorted(refused))}" if refused else None


def _estimated_cost(model: Model, features: RequestFeatures, expected_output: int) -> float:
    n = max(features.n, 1)
    return model.price.cost_usd(features.prompt_tokens, expected_output * n)
