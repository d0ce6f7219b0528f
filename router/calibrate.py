"""``router calibrate``: the ``escalate`` thresholds that send given shares of a sample to each tier.

Pure apart from scoring: the shares name tiers above the route's own tier, as fractions of
the whole sample (``frontier=0.25,standard=0.5``: the hardest quarter to frontier, the next
half to standard, the rest stays). Each threshold is a quantile of the sample's predicted
difficulties, placed between two neighbouring scores and written with the fewest decimals
that keep it there, so the printed YAML reproduces the shares on the sample.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from router.policy.model import Policy, Route


class CalibrationError(ValueError):
    """An argument or sample line that cannot be used; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class Threshold:
    tier: str
    above: float
    requests: int  # how many of the sample's requests the step sends to this tier


def route_to_calibrate(policy: Policy, name: str) -> Route:
    route = policy.routes.get(name)
    if route is None:
        raise CalibrationError(
            f"--route: '{name}' is not a route of this policy (routes: {', '.join(policy.route_names())})"
        )
    if route.models and all(policy.models[m].kind == "embedding" for m in route.models if m in policy.models):
        raise CalibrationError(f"--route: '{name}' is an embedding route; difficulty is predicted for chat requests")
    return route


def parse_shares(text: str, policy: Policy, route: Route) -> list[tuple[str, float]]:
    """``frontier=0.25,standard=0.5`` (or ``25%``) as (tier, share), the highest tier first."""
    shares: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        tier, sep, value = item.partition("=")
        tier = tier.strip()
        if not sep:
            raise CalibrationError(f"--share: '{item}' is not tier=share (e.g. frontier=0.25)")
        if tier not in policy.tiers:
            raise CalibrationError(f"--share: unknown tier '{tier}' (tiers: {', '.join(policy.tiers)})")
        if policy.tier_rank(tier) >= route.tier_rank:
            raise CalibrationError(f"--share: '{tier}' is not above the route's tier '{route.tier}'")
        if tier in shares:
            raise CalibrationError(f"--share: '{tier}' is given twice")
        shares[tier] = _share(item, value.strip())
    if not shares:
        raise CalibrationError("--share: name at least one tier, e.g. frontier=0.25")
    if sum(shares.values()) > 1 + 1e-9:
        raise CalibrationError(f"--share: the shares add up to {sum(shares.values()):g}, more than the whole sample")
    return sorted(shares.items(), key=lambda item: policy.tier_rank(item[0]))


def _share(item: str, value: str) -> float:
    try:
        share = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise CalibrationError(f"--share: '{item}': the share must be a number such as 0.25 or 25%") from None
    if not 0 < share <= 1:
        raise CalibrationError(f"--share: '{item}': the share must be above 0 and at most 1")
    return share


def read_sample(data: bytes, source: str) -> list[list[Mapping[str, Any]]]:
    """The ``messages`` of each chat body in a JSONL sample (blank lines skipped)."""
    conversations = []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            body = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise CalibrationError(f"{source}:{number}: not valid JSON ({exc.msg})") from None
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not messages:
            raise CalibrationError(
                f"{source}:{number}: a chat request body with a non-empty 'messages' list is expected"
            )
        conversations.append(messages)
    if not conversations:
        raise CalibrationError(f"{source}: the sample holds no requests")
    return conversations


def thresholds(scores: Sequence[float], shares: Sequence[tuple[str, float]]) -> list[Threshold]:
    """One threshold per share (highest tier first): the tiers at or above each one get the
    sum of their shares of ``scores``, as nearly as ties between scores allow."""
    ranked = sorted(scores)
    n = len(ranked)
    found: list[Threshold] = []
    cumulative, sent = 0.0, 0
    for tier, share in shares:
        cumulative += share
        above = _between(ranked, round(cumulative * n))
        exceeding = sum(1 for s in ranked if s > above)
        found.append(Threshold(tier, above, exceeding - sent))
        sent = exceeding
    return found


def _between(ranked: Sequence[float], k: int) -> float:
    """A short number in (0, 1) that exactly ``k`` of the ascending ``ranked`` scores exceed
    (or as near as ties allow)."""
    n = len(ranked)
    low = ranked[n - k - 1] if k < n else 0.0
    high = ranked[n - k] if k > 0 else 1.0
    middle = (low + high) / 2
    for digits in range(2, 10):
        candidate = round(middle, digits)
        if low <= candidate < high and 0 < candidate < 1:
            return candidate
    return min(max(middle, 1e-9), 1 - 1e-9)


def escalate_yaml(found: Sequence[Threshold]) -> str:
    """The ``escalate:`` block, ascending as the policy wants it."""
    steps = [f"  - {{above: {t.above:g}, tier: {t.tier}}}" for t in reversed(found)]
    return "\n".join(["escalate:", *steps])


def report(route: Route, found: Sequence[Threshold], total: int, source: str) -> str:
    lines = [f"route '{route.name}' (its own tier: {route.tier}), {total} requests in {source}:"]
    for t in found:
        lines.append(f"  {t.tier:<12} above {t.above:<10g} {t.requests / total:6.1%} of the sample ({t.requests})")
    rest = total - sum(t.requests for t in found)
    lines.append(f"  {route.tier:<12} {'(the rest)':<16} {rest / total:6.1%} of the sample ({rest})")
    ascending = [t.above for t in reversed(found)]
    if any(b <= a for a, b in itertools.pairwise(ascending)):
        lines.append("warning: two thresholds coincide (ties in the sample); widen the shares or use a larger sample")
    lines += ["", f"paste under routes.{route.name} in the policy:", escalate_yaml(found)]
    return "\n".join(lines)
