"""Budget windows, reservation amounts and rate-limit inputs for a client key (pure: no I/O)."""

from __future__ import annotations

import calendar
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from router.policy.model import PER_MILLION, Budget, ClientKey, Defaults, Model, Policy, Price
from router.state.base import MICRO
from router.types import BudgetPeriod, BudgetScope, RateLimit

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


def scope(name: str, budget: Budget, now: datetime | None = None) -> BudgetScope:
    """The current window of a named budget (a shadow rule's, ``router.shadow``)."""
    return _scope(name, budget, now or datetime.now(UTC))


def _scope(name: str, budget: Budget, now: datetime) -> BudgetScope:
    if budget.per == "day":
        window, ttl = now.strftime("%Y-%m-%d"), 2 * DAY_S
    else:
        days = calendar.monthrange(now.year, now.month)[1]
        window, ttl = now.strftime("%Y-%m"), (days + 2) * DAY_S
    return BudgetScope(name=name, window=window, limit_micros=to_micros(budget.usd), window_ttl_s=ttl, per=budget.per)


def seconds_until_reset(per: BudgetPeriod, now: datetime | None = None) -> int:
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
    candidates: Sequence[Model],
    prompt_tokens: int,
    requested_output: int | None,
    n: int,
    price_of: Callable[[Model], Price],
) -> int:
    """What to reserve: the first candidate's prompt + the output it may produce (the
    client's ``max_tokens``, else its cap) × n, and at least what any fallback needs for its
    prompt and one token per choice. ``covered_output`` keeps every candidate inside it."""
    first = candidates[0]
    output = requested_output if requested_output is not None else output_cap(defaults, first, prompt_tokens)
    most = price_of(first).cost_usd(prompt_tokens, output * max(n, 1))
    for model in candidates[1:]:
        most = max(most, price_of(model).cost_usd(prompt_tokens, max(n, 1)))
    return max(1, to_micros(most))


def covered_output(
    defaults: Defaults,
    model: Model,
    price: Price,
    prompt_tokens: int,
    requested_output: int | None,
    n: int,
    reserved_micros: int,
) -> int | None:
    """The output limit to send ``model`` so that it cannot spend more than was reserved;
    None when the client's own ``max_tokens`` is already covered."""
    wanted = requested_output if requested_output is not None else output_cap(defaults, model, prompt_tokens)
    if price.output > 0:
        room_usd = reserved_micros / MICRO - price.cost_usd(prompt_tokens, 0)
        affordable = math.floor(room_usd * PER_MILLION / price.output / max(n, 1) + 1e-6)  # float noise
        wanted = min(wanted, max(1, affordable))
    return wanted if requested_output is None or wanted < requested_output else None
