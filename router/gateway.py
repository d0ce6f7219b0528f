"""The request path between thin handlers and the parts: decide, admit, dispatch, account.

One ``Gateway`` per policy: it holds the policy, the adapters built from it, the state
store, the dispatcher and the accountant, so a policy swap is one reference swap and a
request sees one policy from start to end.

A routed request is one operation (``chat``, ``embeddings``) that owns it from the
decision on, inside ``_owning``: however it ends (an answer, an error, a cancel, the
client leaving, an exception nobody expected) its record is finished exactly once and its
budget reservations are settled or released. A stream leaves ``_owning`` with its first
chunks; from then on the relay owns it and ``end_stream`` finishes it.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import math
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from starlette.requests import Request

from router import budgets
from router.accounting import Accountant, RequestRecord, StreamTally
from router.circuit import ModelHealth
from router.dispatch import Answered, Dispatcher
from router.errors import (
    ClientDisconnected,
    InternalFailure,
    InvalidRequest,
    NoCandidate,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    RouterError,
    StateStoreDown,
    UpstreamFailure,
)
from router.logthrottle import LogThrottle
from router.metrics import Metrics
from router.policy.engine import Decision, decide
from router.policy.features import RequestFeatures, features_for
from router.policy.model import ClientKey, Policy
from router.providers.base import Completion, ProviderAdapter, Usage
from router.state.base import RateDecision, RateLimit, StateStore, StateUnavailable

log = logging.getLogger("router.gateway")
RESERVATION_GRACE_S = 60
NOT_CACHE_KEY = frozenset({"stream", "stream_options"})
T = TypeVar("T")


@dataclass(slots=True)
class Reply:
    """What an operation hands the HTTP layer: the answer, how it was routed, and the
    headers it adds (``x-ratelimit-*``, ``x-router-cache``). A streamed answer's record is
    finished by ``Gateway.end_stream``, which the relay calls when the stream is over."""

    answered: Answered
    decision: Decision
    record: RequestRecord
    headers: dict[str, str]


class Gateway:
    def __init__(
        self, policy: Policy, adapters: Mapping[str, ProviderAdapter], store: StateStore, metrics: Metrics
    ) -> None:
        self.policy = policy
        self.adapters = adapters
        self.store = store
        self.metrics = metrics
        self.accountant = Accountant(metrics)
        self.dispatcher = Dispatcher(policy, adapters, store, self.accountant, metrics)
        self.inflight = 0
        self.failure_log = LogThrottle(log)

    # operations ----------------------------------------------------------------------------
    async def chat(self, request: Request, body: dict[str, Any], key: ClientKey | None) -> Reply:
        """Rate limits, then the cache (a hit costs nothing and reserves nothing), then the
        budget reservation, then the upstream call."""
        decision, features = await self._decide(body, request.headers, "chat", key)
        record = self._open_record(request, decision, "chat", bool(body.get("stream")), key)
        async with self._owning(record):
            limits = await self._rate_limit(decision, record, key, features.n)
            cache_key = self.cache_key(decision, body, record)
            cached = await self.cached(cache_key, record)
            if cached is not None:
                return Reply(cached, decision, record, {**limits, "x-router-cache": "hit"})
            await self._reserve(decision, features, record, key)
            if record.stream:
                work = self.dispatcher.open_stream(decision, body, request.headers, record)
                answered = await cancel_on_disconnect(request, work)
                record.model = answered.model
                return Reply(answered, decision, record, limits)
            answered = await self._complete(request, decision, body, record)
            await self.remember(cache_key, decision, answered)
            return Reply(answered, decision, record, {**limits, **({"x-router-cache": "miss"} if cache_key else {})})

    async def embeddings(self, request: Request, body: dict[str, Any], key: ClientKey | None) -> Reply:
        decision, features = await self._decide(body, request.headers, "embedding", key)
        record = self._open_record(request, decision, "embeddings", False, key)
        async with self._owning(record):
            limits = await self._rate_limit(decision, record, key, 1)
            await self._reserve(decision, features, record, key)
            answered = await self._complete(request, decision, body, record, embedding=True)
            return Reply(answered, decision, record, limits)

    async def end_stream(self, record: RequestRecord, answered: Answered, tally: StreamTally) -> None:
        """The relay's end hook: account the streamed attempt and finish the request."""
        record.usage, record.usage_estimated = tally.usage, tally.estimated
        record.upstream_s += tally.upstream_s
        if tally.first_chunk_at is not None:
            record.ttft_s = tally.first_chunk_at - record.started
        record.outcome = tally.outcome
        if tally.error_reason or tally.outcome == "cancelled":
            record.error_type = tally.error_reason or "cancelled"
        await self.dispatcher.stream_ended(record, answered, tally.usage, tally.error_reason, tally.blames_model)
        await self.finish(record)

    @asynccontextmanager
    async def _owning(self, record: RequestRecord) -> AsyncIterator[None]:
        """The one place a request's end is accounted. A non-stream request is finished when
        the block ends; a stream that got its first chunks is finished by ``end_stream``."""
        try:
            yield
        except RouterError as error:
            await self.fail(record, error)
            raise
        except asyncio.CancelledError:
            record.outcome, record.error_type = "cancelled", "cancelled"
            await asyncio.shield(self.finish(record))
            raise
        except Exception as unexpected:
            self._log_unexpected(record, unexpected)
            failure = InternalFailure("The router could not complete this request; the failure has been logged.")
            await self.fail(record, failure)
            raise failure from None
        if not record.stream:
            await self.finish(record)

    def _log_unexpected(self, record: RequestRecord, error: Exception) -> None:
        frame = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
        where = f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno} {frame.name}" if frame else "unknown"
        self.failure_log.warning(
            "unexpected error while handling a request",
            key=(type(error).__name__, where),
            extra={"request_id": record.request_id, "error": type(error).__name__, "where": where},
        )

    def _open_record(
        self, request: Request, decision: Decision, operation: str, stream: bool, key: ClientKey | None
    ) -> RequestRecord:
        record = request.state.record = self.record(request.state.request_id, decision, operation, stream, key)
        return record

    # decide --------------------------------------------------------------------------------
    async def decide(
        self, body: Mapping[str, Any], headers: Mapping[str, str], kind: str, key: ClientKey | None
    ) -> Decision:
        return (await self._decide(body, headers, kind, key))[0]

    async def _decide(
        self, body: Mapping[str, Any], headers: Mapping[str, str], kind: str, key: ClientKey | None
    ) -> tuple[Decision, RequestFeatures]:
        asked = body.get("model") or self.policy.defaults.route
        tier_override = headers.get("x-router-tier")
        if key is not None:
            if key.routes is not None and asked not in key.routes:
                raise PermissionDenied(
                    f"This key may not use '{asked}'. Allowed: {', '.join(sorted(key.routes))}.",
                    param="model",
                    code="model_not_allowed",
                )
            if tier_override is not None and not key.allow_tier_override:
                raise PermissionDenied(
                    "This key may not override the tier (x-router-tier).",
                    param="x-router-tier",
                    code="tier_override_not_allowed",
                )
        features = features_for(kind, body, headers)
        now = time.time()
        health = await self.store.health(self.policy.models)
        for name, model_health in health.items():  # half-open and expired ejections show on the gauge
            self.metrics.set_circuit(name, self.policy.models[name].provider, model_health.state(now))
        unavailable = {
            name: _unavailable_reason(h, now) for name, h in health.items() if h.unavailable_until(now) is not None
        }
        latency = await self.store.latencies()
        decision = decide(
            self.policy,
            asked,
            features,
            kind=kind,
            tier_override=tier_override,
            unavailable=unavailable,
            latency_s=latency,
        )
        if not decision.candidates:
            raise no_candidate_error(decision, health, now)
        return decision, features

    def record(
        self, request_id: str, decision: Decision, operation: str, stream: bool, key: ClientKey | None
    ) -> RequestRecord:
        return RequestRecord(
            request_id,
            operation,
            decision.route,
            decision.tier,
            team=key.team if key else "none",
            stream=stream,
            prompt_tokens=decision.prompt_tokens,
            key_name=key.name if key else None,
        )

    # admit: rate limits, then budgets ---------------------------------------------------
    async def _rate_limit(
        self, decision: Decision, record: RequestRecord, key: ClientKey | None, n: int
    ) -> dict[str, str]:
        limit = budgets.rate_limit(key)
        if limit is None or key is None:
            return {}
        tokens = decision.prompt_tokens + decision.expected_output_tokens * max(n, 1)
        if limit.tokens_per_minute and tokens > limit.tokens_per_minute:
            raise RateLimited(
                f"This request needs about {tokens} tokens, more than the key's limit of {limit.tokens_per_minute} tokens per minute.",
                code="tokens_exceed_limit",
                status=429,
            )
        try:
            verdict = await self.store.admit(limit, tokens)
        except StateUnavailable:
            raise StateStoreDown(
                "Rate limits cannot be checked right now (shared state unreachable); retry shortly.",
                headers={"retry-after": "1"},
            ) from None
        headers = _ratelimit_headers(limit, verdict)
        if not verdict.admitted:
            self.metrics.rate_limited.labels(team=record.team).inc()
            retry_after = str(max(1, round(verdict.retry_after_s + 0.499)))
            raise RateLimited(
                f"Rate limit reached for key '{key.name}'; retry after {retry_after}s.",
                headers={**headers, "retry-after": retry_after},
            )
        return headers

    async def _reserve(
        self, decision: Decision, features: RequestFeatures, record: RequestRecord, key: ClientKey | None
    ) -> None:
        """Reserve what the request may cost at most; each candidate is then sent the output
        limit the reservation covers (``Dispatcher._capped``), so none can spend more."""
        scopes = budgets.budget_scopes(self.policy, key)
        if not scopes:
            return
        defaults = self.policy.defaults
        amount = budgets.reservation_micros(
            defaults,
            [c.model for c in decision.candidates],
            decision.prompt_tokens,
            features.requested_output_tokens,
            features.n,
            self.accountant.price_of,
        )
        record.reserved_micros, record.requested_output_tokens, record.n = (
            amount,
            features.requested_output_tokens,
            features.n,
        )
        ttl = math.ceil(defaults.timeout_s * (defaults.retries + 2) + min(RESERVATION_GRACE_S, defaults.timeout_s))
        for scope in scopes:
            record.reservations.append(scope)  # before the call: a cancel mid-call still releases it
            try:
                reservation = await self.store.reserve(scope, record.request_id, amount, ttl)
            except StateUnavailable:
                raise StateStoreDown(
                    "Budgets cannot be checked right now (shared state unreachable); retry shortly.",
                    headers={"retry-after": "1"},
                ) from None
            if not reservation.admitted:
                record.reservations.pop()
                self.metrics.budget_rejections.labels(team=record.team).inc()
                raise QuotaExceeded(
                    f"The {scope.name.replace(':', ' ')} budget of ${scope.limit_micros / 1e6:g} per {scope.per} is used up "
                    f"(spent ${reservation.spent_micros / 1e6:.4f}, reserved ${reservation.reserved_micros / 1e6:.4f}).",
                    headers={"retry-after": str(budgets.seconds_until_reset(scope.per))},
                )

    async def _release(self, record: RequestRecord) -> None:
        for scope in record.reservations:
            await self.store.release(scope, record.request_id)
        record.reservations.clear()

    async def _settle(self, record: RequestRecord) -> None:
        if not record.reservations:
            return
        if record.model is None or record.usage is None:
            await self._release(record)
            return
        actual = budgets.to_micros(record.cost_usd)
        for scope in record.reservations:
            await self.store.settle(scope, record.request_id, actual)
        record.reservations.clear()

    # cache ---------------------------------------------------------------------------------
    def cache_key(self, decision: Decision, body: Mapping[str, Any], record: RequestRecord) -> str | None:
        route = self.policy.routes.get(decision.route)
        if route is None or route.cache_ttl_s is None or body.get("stream"):
            return None
        material = {
            "team": record.team,
            "route": decision.route,
            "model": decision.candidates[0].model.name,
            "body": {k: v for k, v in body.items() if k not in NOT_CACHE_KEY},
        }
        return hashlib.sha256(orjson.dumps(material, option=orjson.OPT_SORT_KEYS)).hexdigest()

    async def cached(self, cache_key: str | None, record: RequestRecord) -> Answered | None:
        """A stored answer: a successful request of its model that cost nothing."""
        if cache_key is None:
            return None
        raw = await self.store.cache_get(cache_key)
        if raw is None:
            return None
        entry = orjson.loads(raw)
        model = self.policy.models.get(entry["model"])
        if model is None:
            return None
        record.model, record.usage, record.outcome = model, Usage(), "success"
        return Answered(model, completion=Completion(entry["body"], Usage()))

    async def remember(self, cache_key: str | None, decision: Decision, answered: Answered) -> None:
        """Store only an answer from the model the key was made for (never a fallback's)."""
        if cache_key is None or answered.completion is None or answered.model.name != decision.candidates[0].model.name:
            return
        ttl = self.policy.routes[decision.route].cache_ttl_s or 0
        await self.store.cache_put(
            cache_key, orjson.dumps({"model": answered.model.name, "body": answered.completion.body}), ttl
        )

    # dispatch ------------------------------------------------------------------------------
    async def _complete(
        self,
        request: Request,
        decision: Decision,
        body: dict[str, Any],
        record: RequestRecord,
        *,
        embedding: bool = False,
    ) -> Answered:
        """Non-stream call; cancelled (and the upstream dropped) if the client goes away."""
        work = self.dispatcher.complete(decision, body, request.headers, record, embedding=embedding)
        answered = await cancel_on_disconnect(request, work)
        record.model = answered.model
        completion = answered.completion
        assert completion is not None
        usage = completion.usage
        if usage is None:
            usage = self.accountant.estimate_usage(record, _completion_text(completion.body))
        record.usage = usage
        return answered

    def estimate_usage(self, record: RequestRecord) -> Callable[[str], Usage]:
        return functools.partial(self.accountant.estimate_usage, record)

    async def fail(self, record: RequestRecord, error: RouterError) -> None:
        record.outcome = outcome_of(error)
        # a bounded label value, unlike upstream error codes
        record.error_type = "cancelled" if record.outcome == "cancelled" else str(error.status)
        await asyncio.shield(self.finish(record))

    async def finish(self, record: RequestRecord) -> None:
        """Metrics and the access-log fields once, then settle or release the reservations."""
        self.accountant.finish(record, self.policy)
        await self._settle(record)


def outcome_of(error: RouterError) -> str:
    """The ``outcome`` a failed request is counted and logged with, in step with its status."""
    if isinstance(error, ClientDisconnected):
        return "cancelled"
    if isinstance(error, InternalFailure):
        return "internal_error"
    if isinstance(error, UpstreamFailure):
        return "rate_limited" if error.status == 429 else ("timeout" if error.status == 504 else "upstream_error")
    if isinstance(error, (RateLimited, QuotaExceeded)):
        return "rate_limited"
    if isinstance(error, NoCandidate):
        return "no_candidate"
    if isinstance(error, StateStoreDown):
        return "unavailable"
    return "client_error"


def _ratelimit_headers(limit: RateLimit, verdict: RateDecision) -> dict[str, str]:
    headers: dict[str, str] = {}
    if limit.requests_per_minute:
        headers |= {
            "x-ratelimit-limit-requests": str(limit.requests_per_minute),
            "x-ratelimit-remaining-requests": str(max(verdict.remaining_requests, 0)),
            "x-ratelimit-reset-requests": f"{verdict.reset_requests_s:.3f}s",
        }
    if limit.tokens_per_minute:
        headers |= {
            "x-ratelimit-limit-tokens": str(limit.tokens_per_minute),
            "x-ratelimit-remaining-tokens": str(max(verdict.remaining_tokens, 0)),
            "x-ratelimit-reset-tokens": f"{verdict.reset_tokens_s:.3f}s",
        }
    return headers


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run ``work``; cancel it as soon as the client disconnects (the body is already read)
    and raise ``ClientDisconnected``."""
    task = asyncio.ensure_future(work)
    gone = False

    async def watch() -> None:
        nonlocal gone
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                gone = True
                task.cancel()
                return

    watcher = asyncio.ensure_future(watch())
    try:
        return await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if gone and (current is None or not current.cancelling()):
            raise ClientDisconnected("The client closed the connection before the answer was ready.") from None
        raise
    finally:
        watcher.cancel()


def _unavailable_reason(health: ModelHealth, now: float) -> str:
    if health.open_until > now:
        return f"circuit open for {health.open_until - now:.0f}s more after repeated failures"
    if health.cooldown_until > now:
        return f"rate limited upstream; cooling down for {health.cooldown_until - now:.0f}s more"
    return "half-open: a probe request is in flight"


def _completion_text(body: dict[str, Any]) -> str:
    parts = []
    for choice in body.get("choices") or ():
        message = choice.get("message") or {}
        parts.append(message.get("content") or "")
        for call in message.get("tool_calls") or ():
            parts.append((call.get("function") or {}).get("arguments") or "")
    return "".join(parts)


def no_candidate_error(decision: Decision, health: Mapping[str, ModelHealth], now: float) -> RouterError:
    relevant = [e for e in decision.excluded if e.kind != "policy"] or list(decision.excluded)
    reasons = "; ".join(f"{e.model}: {e.reason}" for e in relevant[:8])
    message = f"No model can serve this request for '{decision.requested}' (tier '{decision.tier}'). {reasons}"
    kinds = {e.kind for e in decision.excluded}
    if "request" in kinds and "unavailable" not in kinds:
        return InvalidRequest(message, param="messages", code="no_model_fits_request")
    waiting = {e.model: health[e.model] for e in decision.excluded if e.kind == "unavailable" and e.model in health}
    waits = [until - now for h in waiting.values() if (until := h.unavailable_until(now))]
    if not waits:
        return NoCandidate(message)
    retry_after = str(max(1, round(min(waits))))
    if all(h.cooldown_until > now for h in waiting.values()):
        return NoCandidate(message, status=429, code="rate_limit_exceeded", headers={"retry-after": retry_after})
    return NoCandidate(message, headers={"retry-after": retry_after})
