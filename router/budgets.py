"""Budget windows, reservation amounts and rate-limit inputs for a client key (pure: no I/O)."""

from __future__ import annotations

import calendar
import math
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from router.policy.model import Budget, ClientKey, Defaults, Model, Policy, Price
from router.state.base import MICRO, BudgetScope, RateLimit

DAY_S = 86_400


def budget_scopes(policy: Policy, key: ClientKey | None, now: datetime | None = None) -> list[BudgetScope]:
    """The budgets one request counts against: its key's and its team's."""
    if key is None:
        return []
    now = now or datetime.now(UTC)
    scopes = []
    if key.budget is not None:
        scopes.append(_scope(f"key:{key.name}", key.budget, now))
    team_budget = policy.team_budgets.get(key.team)
    if team_budget is not None:
        scopes.append(_scope(f"team:{key.team}", team_budget, now))
    return scopes


def _scope(name: str, budget: Budget, now: datetime) -> BudgetScope:
    if budget.per == "day":
        window, ttl = now.strftime("%Y-%m-%d"), 2 * DAY_S
    else:
        days = calendar.monthrange(now.year, now.month)[1]
        window, ttl = now.strftime("%Y-%m"), (days + 2) * DAY_S
    return BudgetScope(name=name, window=window, limit_micros=to_micros(budget.usd), window_ttl_s=ttl, per=budget.per)


def seconds_until_reset(per: str, now: datetime | None = None) -> int:
    now = now or datetime.now(UTC)
    if per == "day":
        tomorrow = datetime(now.year, now.month, now.day, tzinfo=UTC).timestamp() + DAY_S
        return max(1, math.ceil(tomorrow - now.timestamp()))
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return max(1, math.ceil(datetime(year, month, 1, tzinfo=UTC).timestamp() - now.timestamp()))


def to_micros(usd: float) -> int:
    return math.ceil(usd * MICRO - 1e-9)


def rate_limit(key: ClientKey | None) -> RateLimit | None:
    if key is None or (key.rpm is None and key.tpm is None):
        return None
    return RateLimit(name=f"key:{key.name}", requests_per_minute=key.rpm or 0, tokens_per_minute=key.tpm or 0)


def output_cap(defaults: Defaults, model: Model, prompt_tokens: int) -> int:
    """The most output tokens a budgeted request without ``max_tokens`` may produce on
    ``model``: the policy's ``max_output_tokens``, the model's own limit, and what its
    context window leaves after the prompt, whichever is smallest (at least 1)."""
    cap = min(defaults.max_output_tokens, model.context_window - prompt_tokens)
    if model.max_output_tokens is not None:
        cap = min(cap, model.max_output_tokens)
    return max(1, cap)


def reservation_micros(
    defaults: Defaults,
    models: Iterable[Model],
    prompt_tokens: int,
    requested_output: int | None,
    n: int,
    price_of: Callable[[Model], Price],
) -> int:
    """What to reserve so that no candidate can spend more: prompt + the output each model
    may produce (the client's ``max_tokens``, else its cap) × n, at the costliest candidate."""
    most = 0.0
    for model in models:
        output = requested_output if requested_output is not None else output_cap(defaults, model, prompt_tokens)
        most = max(most, price_of(model).cost_usd(prompt_tokens, output * max(n, 1)))
    return max(1, to_micros(most))
