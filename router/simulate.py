"""Replay traffic through a policy: what it would route where, and what that would cost.

The same pure engine as ``serve`` decides each request (``policy.engine.decide``, rules,
tiers, escalation, context windows, capabilities, key routes) with every model healthy; the
cost is the request's usage × the chosen model's price and the savings are against
``defaults.baseline_model``, both by ``router.costs`` as the proxy bills them. No upstream is
called. Input is JSONL, read one line at a time (constant memory), two kinds of line:

- a request: ``{"body": {...}, "headers": {...}, "key": "<key name>", "usage": {...}}``
  (only ``body`` is required; ``team`` labels a request whose key the policy lacks; a Responses body is translated to chat first; without ``usage``
  the engine's estimate is used and counted as estimated);
- a line of the proxy's own access log (``logger`` = ``router.access``): it carries the
  asked route, the key's name, the router's prompt count, requested output, capabilities,
  the values of the headers the policy reads, tokens and, on an escalating route, the
  predicted difficulty (there is no prompt to score again).

Other log lines are ignored; anything else is a malformed line, reported with its number.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import IO, Any

import orjson

from router import costs
from router.errors import InvalidRequest, PermissionDenied, RouterError
from router.policy.engine import Decision, decide
from router.policy.features import RequestFeatures, features_for, with_difficulty
from router.policy.model import ClientKey, Policy
from router.types import MODEL_KIND, Operation, Usage

ACCESS_LOGGER = "router.access"
OPERATIONS: frozenset[str] = frozenset(MODEL_KIND)


@dataclass(frozen=True, slots=True)
class RequestLine:
    """A request as a client sent it (``body``) with what really happened (``usage``)."""

    line: str  # "file:number"
    body: dict[str, Any]
    headers: Mapping[str, str]
    key: str | None
    usage: Usage | None
    team: str | None = None  # a label for a request whose key the policy does not know


@dataclass(frozen=True, slots=True)
class LoggedLine:
    """One access-log line of a routed request."""

    line: str
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Malformed:
    line: str
    problem: str


Traffic = RequestLine | LoggedLine


@dataclass(frozen=True, slots=True)
class Replayed:
    """What one request did under a policy: the decision, its usage and cost, or why it
    could not be routed (``reason``)."""

    line: str
    route: str
    team: str
    tier: str
    model: str | None
    difficulty: float | None
    usage: Usage
    estimated: bool
    cost_usd: float
    savings_usd: float
    reason_code: str | None = None
    reason: str | None = None


# reading ---------------------------------------------------------------------------------------
def read_traffic(name: str, stream: IO[bytes]) -> Iterator[Traffic | Malformed]:
    """The requests of one JSONL stream, a line at a time; blank lines and log lines that are
    not a routed request are skipped, anything unreadable is a ``Malformed`` naming its line."""
    for number, raw in enumerate(stream, start=1):
        if not raw.strip():
            continue
        where = f"{name}:{number}"
        try:
            item = parse_line(where, raw)
        except ValueError as exc:
            yield Malformed(where, str(exc))
            continue
        if item is not None:
            yield item


def parse_line(where: str, raw: bytes) -> Traffic | None:
    """A request or an access-log line; None for another log line; ValueError says what is wrong."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise ValueError("a line must be a JSON object")
    if "body" in data:
        return _request_line(where, data)
    if "logger" in data:
        routed = data.get("logger") == ACCESS_LOGGER and data.get("operation") in OPERATIONS
        return LoggedLine(where, data) if routed else None
    raise ValueError('neither a request ({"body": …}) nor a line of the access log')


def _request_line(where: str, data: dict[str, Any]) -> RequestLine:
    body, headers, key, team = data["body"], data.get("headers") or {}, data.get("key"), data.get("team")
    if not isinstance(body, dict):
        raise ValueError("'body' must be a JSON object (a chat, responses or embeddings request)")
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ValueError("'headers' must map header names to strings")
    if not all(value is None or isinstance(value, str) for value in (key, team)):
        raise ValueError("'key' and 'team' must be names (strings)")
    usage = data.get("usage")
    lowered = {k.lower(): v for k, v in headers.items()}
    return RequestLine(where, body, lowered, key, None if usage is None else _usage(usage), team)


def _usage(usage: Any) -> Usage:
    if not isinstance(usage, dict):
        raise ValueError("'usage' must be an object: prompt_tokens, completion_tokens, cached_tokens")
    details = usage.get("prompt_tokens_details")
    cached = usage.get("cached_tokens", details.get("cached_tokens", 0) if isinstance(details, dict) else 0)
    counts = [usage.get("prompt_tokens"), usage.get("completion_tokens", 0), cached or 0]
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        raise ValueError("'usage': prompt_tokens, completion_tokens and cached_tokens must be counts (integers ≥ 0)")
    prompt, completion, cached_count = (int(c) for c in counts)
    return Usage(prompt, completion, cached_count)


# replaying -------------------------------------------------------------------------------------
class Replayer:
    """Decides requests under one policy, all models healthy."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.keys_by_name: dict[str, ClientKey] = {k.name: k for k in policy.keys.values()}

    def replay(self, traffic: Traffic) -> Replayed:
        if isinstance(traffic, RequestLine):
            return self._replay_request(traffic)
        return self._replay_logged(traffic)

    def _replay_request(self, request: RequestLine) -> Replayed:
        key = self.keys_by_name.get(request.key) if request.key else None
        team = key.team if key else (request.team or "none")
        asked = request.body.get("model") or self.policy.defaults.route
        try:
            operation, chat_body = _routed_body(self.policy, request.body)
            asked = chat_body.get("model") or self.policy.defaults.route
            kind = MODEL_KIND[operation]
            features = features_for(kind, chat_body, request.headers)
            if kind == "chat":
                features = with_difficulty(self.policy, asked, chat_body, features)
            decision = self._decide(asked, kind, features, key)
        except RouterError as exc:
            return self._unroutable(request.line, str(asked), team, exc)
        return self._priced(request.line, team, kind, decision, features, request.usage)

    def _replay_logged(self, logged: LoggedLine) -> Replayed:
        fields = logged.fields
        key_name = fields.get("key")
        key = self.keys_by_name.get(key_name) if isinstance(key_name, str) else None
        team = key.team if key else str(fields.get("team") or "none")
        asked = str(fields.get("route") or self.policy.defaults.route)
        operation: Operation = fields["operation"]
        kind = MODEL_KIND[operation]
        try:
            features = _logged_features(self.policy, asked, fields)
            decision = self._decide(asked, kind, features, key)
        except (RouterError, ValueError, TypeError) as exc:
            error = exc if isinstance(exc, RouterError) else InvalidRequest(f"unreadable access-log fields ({exc})")
            return self._unroutable(logged.line, asked, team, error)
        usage = Usage(
            _count(fields.get("input_tokens")), _count(fields.get("output_tokens")), _count(fields.get("cached_tokens"))
        )
        replayed = self._priced(logged.line, team, kind, decision, features, usage)
        if fields.get("cost_estimated") is True:
            return _with_estimated(replayed)
        return replayed

    def _decide(self, asked: str, kind: str, features: RequestFeatures, key: ClientKey | None) -> Decision:
        """The gateway's checks of the key, then the engine, all models healthy."""
        tier_override = features.headers.get("x-router-tier")
        if key is not None:
            if key.routes is not None and asked not in key.routes:
                raise PermissionDenied(
                    f"This key may not use '{asked}'. Allowed: {', '.join(sorted(key.routes))}.",
                    code="model_not_allowed",
                )
            if tier_override is not None and not key.allow_tier_override:
                raise PermissionDenied(
                    "This key may not override the tier (x-router-tier).", code="tier_override_not_allowed"
                )
        decision = decide(self.policy, asked, features, kind=kind, tier_override=tier_override)
        if not decision.candidates:
            from router.gateway import no_candidate_error  # the message the proxy would answer with

            raise _NoCandidate(decision, no_candidate_error(decision, {}, 0.0))
        return decision

    def _priced(
        self,
        line: str,
        team: str,
        kind: str,
        decision: Decision,
        features: RequestFeatures,
        usage: Usage | None,
    ) -> Replayed:
        model = decision.candidates[0].model
        estimated = usage is None
        if usage is None:  # what the engine expects: the counted prompt and the expected output
            output = 0 if kind == "embedding" else decision.expected_output_tokens * max(features.n, 1)
            usage = Usage(decision.prompt_tokens, output, 0)
        cost = costs.cost_usd(model, usage)
        return Replayed(
            line,
            decision.route,
            team,
            decision.tier,
            model.name,
            decision.difficulty,
            usage,
            estimated,
            cost,
            costs.savings_usd(self.policy, model, cost, usage),
        )

    def _unroutable(self, line: str, asked: str, team: str, error: RouterError) -> Replayed:
        decision = error.decision if isinstance(error, _NoCandidate) else None
        cause = error.cause if isinstance(error, _NoCandidate) else error
        known = asked in self.policy.routes or asked in self.policy.models or asked in self.policy.tiers
        return Replayed(
            line,
            decision.route if decision else (asked if known else "other"),
            team,
            decision.tier if decision else "none",
            None,
            decision.difficulty if decision else None,
            Usage(),
            False,
            0.0,
            0.0,
            reason_code=cause.code or cause.error_type,
            reason=cause.message,
        )


class _NoCandidate(RouterError):
    """No model can serve the decided request: the decision, and the error the proxy answers."""

    def __init__(self, decision: Decision, cause: RouterError) -> None:
        super().__init__(cause.message)
        self.decision, self.cause = decision, cause


def _routed_body(policy: Policy, body: dict[str, Any]) -> tuple[Operation, dict[str, Any]]:
    """The operation and the chat (or embeddings) body, after the checks its endpoint makes."""
    from router.api.requests import check_body_shape, check_explain_body
    from router.api.responses import check_responses_body, is_responses_body
    from router.responses import to_chat_request

    check_body_shape(body)
    if is_responses_body(body, policy):
        check_responses_body(body)
        return "responses", to_chat_request(body)  # a stored conversation is not at hand offline
    return check_explain_body(body, policy.defaults.max_n), body


def _logged_features(policy: Policy, asked: str, fields: Mapping[str, Any]) -> RequestFeatures:
    """The engine's view of a logged request: what ``serve`` logged of it, and the logged
    difficulty when ``asked`` escalates under ``policy`` (a line without one is not escalated)."""
    headers = fields.get("headers") or {}
    if not isinstance(headers, dict):
        raise ValueError("'headers' is not an object")
    prompt = fields.get("estimated_prompt_tokens")
    requested = fields.get("max_output_tokens")
    difficulty = fields.get("difficulty")
    route = policy.routes.get(asked)
    return RequestFeatures(
        prompt_tokens=_count(prompt if prompt is not None else fields.get("input_tokens")),
        requested_output_tokens=requested if isinstance(requested, int) else None,
        n=_count(fields.get("n")) or 1,
        needs=frozenset(fields.get("needs") or ()),
        headers={str(k).lower(): str(v) for k, v in headers.items()},
        params=frozenset(fields.get("params") or ()),
        difficulty=float(difficulty) if difficulty is not None and route is not None and route.escalate else None,
    )


def _count(value: Any) -> int:
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"a token count is {value!r}")
    return value


def _with_estimated(replayed: Replayed) -> Replayed:
    return replace(replayed, estimated=True)


# totals ----------------------------------------------------------------------------------------
@dataclass(slots=True)
class Bucket:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, replayed: Replayed) -> None:
        self.requests += 1
        self.input_tokens += replayed.usage.input_tokens
        self.output_tokens += replayed.usage.output_tokens
        self.cost_usd += replayed.cost_usd

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost_usd, 10),
        }


@dataclass(slots=True)
class Totals:
    """One policy's report, added to a request at a time."""

    policy: str
    requests: int = 0
    unroutable: Counter[str] = field(default_factory=Counter)
    estimated_usage: int = 0
    cost_usd: float = 0.0
    savings_usd: float = 0.0
    by_route: dict[str, Bucket] = field(default_factory=dict)
    by_team: dict[str, Bucket] = field(default_factory=dict)
    by_tier: dict[str, Bucket] = field(default_factory=dict)
    by_model: dict[str, Bucket] = field(default_factory=dict)

    def add(self, replayed: Replayed) -> None:
        self.requests += 1
        if replayed.reason_code is not None:
            self.unroutable[replayed.reason_code] += 1
        self.estimated_usage += replayed.estimated
        self.cost_usd += replayed.cost_usd
        self.savings_usd += replayed.savings_usd
        for table, name in (
            (self.by_route, replayed.route),
            (self.by_team, replayed.team),
            (self.by_tier, replayed.tier),
            (self.by_model, replayed.model or "none"),
        ):
            bucket = table.get(name)
            if bucket is None:
                bucket = table[name] = Bucket()
            bucket.add(replayed)

    @property
    def baseline_cost_usd(self) -> float:
        return self.cost_usd + self.savings_usd

    @property
    def savings_percent(self) -> float:
        return 100 * self.savings_usd / self.baseline_cost_usd if self.baseline_cost_usd else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "requests": self.requests,
            "unroutable": {"requests": sum(self.unroutable.values()), "reasons": dict(self.unroutable.most_common())},
            "estimated_usage": self.estimated_usage,
            "cost_usd": round(self.cost_usd, 10),
            "baseline_cost_usd": round(self.baseline_cost_usd, 10),
            "savings_usd": round(self.savings_usd, 10),
            "by_route": _buckets(self.by_route),
            "by_team": _buckets(self.by_team),
            "by_tier": _buckets(self.by_tier),
            "by_model": _buckets(self.by_model),
        }


def _buckets(table: Mapping[str, Bucket]) -> dict[str, Any]:
    ordered = sorted(table.items(), key=lambda item: (-item[1].cost_usd, -item[1].requests, item[0]))
    return {name: bucket.to_json() for name, bucket in ordered}


@dataclass(slots=True)
class Moves:
    """Requests whose model differs between two policies: (from, to) → count and costs."""

    pairs: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def add(self, before: Replayed, after: Replayed) -> None:
        pair = (before.model or "none", after.model or "none")
        if pair[0] == pair[1]:
            return
        tally = self.pairs.get(pair)
        if tally is None:
            tally = self.pairs[pair] = [0, 0.0, 0.0]
        tally[0] += 1
        tally[1] += before.cost_usd
        tally[2] += after.cost_usd

    def to_json(self) -> list[dict[str, Any]]:
        rows = [
            {
                "from": source,
                "to": target,
                "requests": int(count),
                "cost_usd_before": round(before, 10),
                "cost_usd_after": round(after, 10),
                "cost_delta_usd": round(after - before, 10),
            }
            for (source, target), (count, before, after) in self.pairs.items()
        ]
        return sorted(rows, key=lambda r: (-abs(r["cost_delta_usd"]), -r["requests"], r["from"], r["to"]))


def per_request_json(replayed: Replayed) -> dict[str, Any]:
    row: dict[str, Any] = {
        "route": replayed.route,
        "team": replayed.team,
        "tier": replayed.tier,
        "model": replayed.model,
        "difficulty": None if replayed.difficulty is None else round(replayed.difficulty, 6),
        "input_tokens": replayed.usage.input_tokens,
        "output_tokens": replayed.usage.output_tokens,
        "cached_tokens": replayed.usage.cached_tokens,
        "usage_estimated": replayed.estimated,
        "cost_usd": round(replayed.cost_usd, 10),
        "savings_usd": round(replayed.savings_usd, 10),
    }
    if replayed.reason is not None:
        row["unroutable"] = replayed.reason_code
        row["reason"] = replayed.reason
    return row


@dataclass(slots=True)
class Simulation:
    """The whole run: each policy's totals, the moves between the first two, malformed lines."""

    totals: list[Totals]
    moves: Moves = field(default_factory=Moves)
    malformed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"policies": [t.to_json() for t in self.totals], "moves": self.moves.to_json()}

    def cost_increase_percent(self) -> float | None:
        """How much more the compared policy costs than the first, in percent (None without one)."""
        if len(self.totals) < 2:
            return None
        before, after = self.totals[0].cost_usd, self.totals[1].cost_usd
        if before == 0:
            return 0.0 if after == 0 else float("inf")
        return 100 * (after - before) / before


def simulate(
    replayers: list[Replayer],
    paths: list[str],
    traffic: Iterable[Traffic | Malformed],
    on_malformed: Callable[[Malformed], None] | None = None,
    on_request: Callable[[Traffic, list[Replayed]], None] | None = None,
) -> Simulation:
    """Replay every request of ``traffic`` under each replayer's policy, one at a time."""
    result = Simulation([Totals(path) for path in paths])
    for item in traffic:
        if isinstance(item, Malformed):
            result.malformed += 1
            if on_malformed is not None:
                on_malformed(item)
            continue
        outcomes = [replayer.replay(item) for replayer in replayers]
        for totals, replayed in zip(result.totals, outcomes, strict=True):
            totals.add(replayed)
        if len(outcomes) > 1:
            result.moves.add(outcomes[0], outcomes[1])
        if on_request is not None:
            on_request(item, outcomes)
    return result
