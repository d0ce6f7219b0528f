"""Whole operations: each runs one request from its decision to its last byte's accounting.

``Gateway`` is built once per process with the services that outlive policy reloads (the
state store, metrics, the accountant and its measured throughput, the dispatcher and its
retry budget, the log throttles). Each operation (``chat``, ``text_completion``, ``responses``,
``embeddings``, ``explain``) gets the request's pinned ``PolicySnapshot`` and returns a
``CompletedReply`` (a JSON body and headers) or a ``StreamingReply`` (a ``Streaming`` whose end
finishes the request).

A routed request is owned here alone: its ``RequestRecord`` is opened before the decision
(so a request refused by it still gets an outcome, a metric and an access-log line),
filled and finished only in this module, inside ``_owning``: however it ends (an answer,
an error, a cancel, the client leaving, an exception nobody expected) it is finished
exactly once and its budget reservations are settled or released. A stream leaves
``_owning`` with its first chunks; its end hook (``_end_stream``) finishes it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from starlette.requests import Request

from router import budgets
from router.accounting import Accountant, RequestRecord
from router.circuit import ModelHealth
from router.dispatch import Completed, Dispatcher, Streaming
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
from router.policy.features import RequestFeatures, features_for, with_difficulty
from router.policy.model import ClientKey, Model, Policy, ShadowRule
from router.providers.base import Completion, Usage
from router.responses import BuiltinToolUnsupported, to_chat_request, to_responses_object
from router.shadow.evaluator import Shadow, ShadowOptions
from router.snapshot import PolicySnapshot
from router.state.base import RateDecision, RateLimit, StateStore, StateUnavailable
from router.types import MODEL_KIND, Operation, Outcome

log = logging.getLogger("router.gateway")
RESERVATION_GRACE_S = 60
NOT_CACHE_KEY = frozenset({"stream", "stream_options"})
OTHER_ROUTE = "other"  # the route label of a request refused before its route was known
T = TypeVar("T")


@dataclass(slots=True)
class CompletedReply:
    """A whole answer: the JSON body to send and every header it adds (routing, cost,
    ``x-ratelimit-*``, ``x-router-cache``). The request is already finished."""

    body: dict[str, Any]
    headers: dict[str, str]


@dataclass(slots=True)
class StreamingReply:
    """A streamed answer: read it to the end or close it; either finishes the request."""

    stream: Streaming
    headers: dict[str, str]


Reply = CompletedReply | StreamingReply
DEFAULT_RESPONSES_TTL_S = 7 * 24 * 3600


@dataclass(slots=True)
class ResponseContext:
    """A Responses API request's own business beside its chat reply: the response's id and
    time, the body as sent (echoed in the ``response`` object) and, unless ``store`` is false,
    the conversation's input items to keep with the answer (``Gateway.keep_response``)."""

    response_id: str
    created_at: int
    body: Mapping[str, Any]
    team: str
    input_items: list[Any] | None


@dataclass(slots=True)
class ResponsesStreamingReply:
    """A streamed Responses answer: the chat stream to translate, and what to store at its end."""

    stream: Streaming
    headers: dict[str, str]
    context: ResponseContext
    native: bool = False  # the stream's chunks are the upstream's own Responses events


class Gateway:
    def __init__(
        self,
        store: StateStore,
        metrics: Metrics,
        *,
        responses_ttl_s: int = DEFAULT_RESPONSES_TTL_S,
        shadow: ShadowOptions | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.responses_ttl_s = responses_ttl_s
        self.accountant = Accountant(metrics)
        self.dispatcher = Dispatcher(store, self.accountant, metrics)
        self.failure_log = LogThrottle(log)
        self.shadow = Shadow(store, metrics, self.accountant, shadow or ShadowOptions())

    # operations ----------------------------------------------------------------------------
    async def chat(
        self, request: Request, snapshot: PolicySnapshot, body: dict[str, Any], key: ClientKey | None
    ) -> Reply:
        return await self._converse(request, snapshot, body, key, "chat")

    async def text_completion(
        self, request: Request, snapshot: PolicySnapshot, chat_body: dict[str, Any], key: ClientKey | None
    ) -> Reply:
        """A legacy completion, already translated to a chat body (``router.completions``):
        routed, admitted and accounted exactly as chat, counted as ``text_completion``."""
        return await self._converse(request, snapshot, chat_body, key, "text_completion")

    async def _converse(
        self,
        request: Request,
        snapshot: PolicySnapshot,
        body: dict[str, Any],
        key: ClientKey | None,
        operation: Operation,
    ) -> Reply:
        """Decide, then rate limits, then the cache (a hit costs nothing and reserves
        nothing, but is counted and rate limited like any answer), then the budget
        reservation, then the upstream call."""
        policy = snapshot.policy
        record = self._open_record(request, policy, body, operation, bool(body.get("stream")), key)
        async with self._owning(policy, record):
            decision, features = await self._decide(policy, record, body, request.headers, operation, key)
            headers = await self._rate_limit(decision, record, key, features.n)
            cache_key = self.cache_key(policy, decision, body, record)
            answered: Completed | Streaming | None = await self.cached(policy, cache_key, record)
            if answered is not None:
                headers["x-router-cache"] = "hit"
            else:
                await self._reserve(policy, decision, features, record, key)
                if record.stream:
                    answered = await self._open_stream(request, snapshot, decision, body, record)
                else:
                    answered = await self._complete(request, snapshot, decision, body, record, operation)
                    await self.remember(policy, cache_key, decision, answered)
                    if cache_key:
                        headers["x-router-cache"] = "miss"
        reply = self._reply(answered, decision, record, headers)
        shadow = policy.shadow.get(decision.route)  # the only cost on a route without a rule
        if shadow is not None:
            self._shadow(snapshot, shadow, decision.route, record, body, reply)
        return reply

    def _shadow(
        self,
        snapshot: PolicySnapshot,
        rule: ShadowRule,
        route: str,
        record: RequestRecord,
        body: Mapping[str, Any],
        reply: Reply,
    ) -> None:
        """Offer the finished answer to shadow evaluation (``router.shadow``): a whole answer
        now, a stream from its end hook once it ended well. A cached answer is not offered."""

        def offer(model: Model, answer: Any, usage: Usage | None) -> None:
            output_tokens = usage.output_tokens if usage else 0
            self.shadow.offer(
                snapshot,
                rule,
                route,
                record.request_id,
                body,
                model,
                answer,
                record.prompt_tokens,
                output_tokens,
                record.difficulty,
            )

        if isinstance(reply, StreamingReply):

            async def end_then_offer(stream: Streaming) -> None:
                await self._end_stream(stream)
                if stream.tally.outcome == "success":
                    offer(stream.model, "".join(stream.tally.text), stream.tally.usage)

            reply.stream.on_end = end_then_offer
        elif record.outcome == "success" and record.model is not None and reply.headers.get("x-router-cache") != "hit":
            offer(record.model, reply.body, record.usage)

    async def embeddings(
        self, request: Request, snapshot: PolicySnapshot, body: dict[str, Any], key: ClientKey | None
    ) -> Reply:
        policy = snapshot.policy
        record = self._open_record(request, policy, body, "embeddings", False, key)
        async with self._owning(policy, record):
            decision, features = await self._decide(policy, record, body, request.headers, "embeddings", key)
            headers = await self._rate_limit(decision, record, key, 1)
            await self._reserve(policy, decision, features, record, key)
            answered = await self._complete(request, snapshot, decision, body, record, "embeddings")
        return self._reply(answered, decision, record, headers)

    async def responses(
        self, request: Request, snapshot: PolicySnapshot, body: dict[str, Any], key: ClientKey | None
    ) -> CompletedReply | ResponsesStreamingReply:
        """OpenAI's Responses API over the chat path: the body (with the stored conversation of
        ``previous_response_id``) becomes a chat body, decided, admitted and dispatched as chat
        (no response cache), and the answer becomes a ``response`` object, kept unless
        ``store`` is false. A stream is translated by the caller, who hands the finished
        ``response`` to ``keep_response``."""
        policy = snapshot.policy
        record = self._open_record(request, policy, body, "responses", bool(body.get("stream")), key)
        async with self._owning(policy, record):
            previous = await self.previous_items(body, key)
            natives = [p.name for p in policy.providers.values() if p.responses_api == "native"]
            builtin_refused: BuiltinToolUnsupported | None = None
            try:
                chat_body = to_chat_request(body, previous_items=previous, native_providers=natives)
            except BuiltinToolUnsupported as refused:
                if not natives:
                    raise
                builtin_refused = refused  # unless every candidate takes the request natively
                chat_body = to_chat_request(_without_builtin_tools(body), previous_items=previous)
            decision, features = await self._decide(policy, record, chat_body, request.headers, "responses", key)
            native = all(policy.providers[c.model.provider].responses_api == "native" for c in decision.candidates)
            if builtin_refused is not None and not native:
                raise builtin_refused
            headers = await self._rate_limit(decision, record, key, features.n)
            await self._reserve(policy, decision, features, record, key)
            conversation = _conversation(previous, body.get("input"))
            context = ResponseContext(
                f"resp_{uuid.uuid4().hex}",
                int(time.time()),
                body,
                record.team,
                None if body.get("store") is False else conversation,
            )
            upstream_body = _native_body(body, conversation) if native else chat_body
            if record.stream:
                answered: Completed | Streaming = await self._open_stream(
                    request, snapshot, decision, upstream_body, record, native
                )
            else:
                operation: Operation = "responses" if native else "chat"
                answered = await self._complete(request, snapshot, decision, upstream_body, record, operation)
        reply = self._reply(answered, decision, record, headers)
        if isinstance(reply, StreamingReply):
            return ResponsesStreamingReply(reply.stream, reply.headers, context, native)
        if native:  # the upstream's own response object, under the router's id and model name
            response = reply.body
            response["id"] = context.response_id
            await self.keep_response(context, response)
            return CompletedReply(response, reply.headers)
        response = to_responses_object(
            reply.body,
            request=body,
            response_id=context.response_id,
            created_at=context.created_at,
            completed_at=int(time.time()),
        )
        await self.keep_response(context, response)
        return CompletedReply(response, reply.headers)

    async def previous_items(self, body: Mapping[str, Any], key: ClientKey | None) -> list[Any]:
        """The stored conversation ``previous_response_id`` continues (its input and output
        items, oldest first), or none. Another team's response is as absent as a missing one."""
        previous_id = body.get("previous_response_id")
        if previous_id is None:
            return []
        if not isinstance(previous_id, str):
            raise InvalidRequest("'previous_response_id' must be a string.", param="previous_response_id")
        stored = await self.stored_response(previous_id, key)
        if stored is None:
            raise InvalidRequest(
                f"Previous response with id '{previous_id}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
                status=404,
            )
        return [*stored["input_items"], *stored["response"]["output"]]

    async def stored_response(self, response_id: str, key: ClientKey | None) -> dict[str, Any] | None:
        """The stored document (``response``, ``input_items``, ``team``) if ``key``'s team made it."""
        try:
            raw = await self.store.response_get(response_id)
        except StateUnavailable:
            raise StateStoreDown(
                "Stored responses cannot be read right now (shared state unreachable); retry shortly.",
                headers={"retry-after": "1"},
            ) from None
        if raw is None:
            return None
        stored: dict[str, Any] = orjson.loads(raw)
        return stored if stored.get("team") == (key.team if key else "none") else None

    async def delete_response(self, response_id: str, key: ClientKey | None) -> bool:
        if await self.stored_response(response_id, key) is None:
            return False
        try:
            return await self.store.response_delete(response_id)
        except StateUnavailable:
            raise StateStoreDown(
                "Stored responses cannot be deleted right now (shared state unreachable); retry shortly.",
                headers={"retry-after": "1"},
            ) from None

    async def keep_response(self, context: ResponseContext, response: Mapping[str, Any]) -> None:
        """Store a finished response (completed or incomplete, never failed) unless ``store`` is false."""
        if context.input_items is None or response.get("status") not in ("completed", "incomplete"):
            return
        document = {"team": context.team, "input_items": context.input_items, "response": response}
        try:
            await self.store.response_put(context.response_id, orjson.dumps(document), self.responses_ttl_s)
        except StateUnavailable:  # the answer is given; it just cannot be continued
            self.failure_log.warning(
                "a response could not be stored", key=("response_put",), extra={"response_id": context.response_id}
            )

    async def explain(
        self,
        snapshot: PolicySnapshot,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        operation: Operation,
        key: ClientKey | None,
    ) -> Decision:
        """The decision a request would get now, without calling anything or counting it."""
        return (await self._decide(snapshot.policy, None, body, headers, operation, key))[0]

    def _reply(
        self, answered: Completed | Streaming, decision: Decision, record: RequestRecord, headers: dict[str, str]
    ) -> Reply:
        model = answered.model
        headers |= {
            "x-router-model": model.name,
            "x-router-provider": model.provider,
            "x-router-tier": decision.tier,
            "x-router-route": decision.route,
            "x-router-attempts": str(record.trail.attempts),
        }
        if decision.difficulty is not None:
            headers["x-router-difficulty"] = f"{decision.difficulty:.3f}"
        if isinstance(answered, Streaming):
            answered.on_end = self._end_stream
            return StreamingReply(answered, headers)
        body = answered.completion.body
        body["model"] = model.name
        headers["x-router-cost-usd"] = f"{record.cost_usd:.8f}"
        if record.usage_estimated:
            headers["x-router-cost-estimated"] = "true"
        return CompletedReply(body, headers)

    async def _end_stream(self, stream: Streaming) -> None:
        """A stream's end hook (``Streaming.aclose``): account what it did, finish the request."""
        record, tally = stream.record, stream.tally
        record.usage, record.usage_estimated = tally.usage, tally.estimated
        if tally.first_chunk_at is not None:
            record.ttft_s = tally.first_chunk_at - record.started
        record.outcome = tally.outcome
        if tally.error_reason or tally.outcome == "cancelled":
            record.error_type = tally.error_reason or "cancelled"
        await self._finish(stream.snapshot.policy, record)

    @asynccontextmanager
    async def _owning(self, policy: Policy, record: RequestRecord) -> AsyncIterator[None]:
        """The one place a request's end is accounted. A non-stream request is finished when
        the block ends; a stream that got its first chunks is finished by ``_end_stream``."""
        try:
            yield
        except RouterError as error:
            await self._fail(policy, record, error)
            raise
        except asyncio.CancelledError:
            record.outcome, record.error_type = "cancelled", "cancelled"
            await asyncio.shield(self._finish(policy, record))
            raise
        except Exception as unexpected:
            self._log_unexpected(record, unexpected)
            failure = InternalFailure("The router could not complete this request; the failure has been logged.")
            await self._fail(policy, record, failure)
            raise failure from None
        if not record.stream:
            await self._finish(policy, record)

    def _log_unexpected(self, record: RequestRecord, error: Exception) -> None:
        frame = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
        where = f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno} {frame.name}" if frame else "unknown"
        self.failure_log.warning(
            "unexpected error while handling a request",
            key=(type(error).__name__, where),
            extra={"request_id": record.request_id, "error": type(error).__name__, "where": where},
        )

    def _open_record(
        self,
        request: Request,
        policy: Policy,
        body: Mapping[str, Any],
        operation: Operation,
        stream: bool,
        key: ClientKey | None,
    ) -> RequestRecord:
        """The request's record, before anything can refuse it. Until the decision names the
        route, its label is the asked name if the policy knows it, else ``other``: bounded."""
        asked = body.get("model") or policy.defaults.route
        known = asked in policy.routes or asked in policy.models or asked in policy.tiers
        record = request.state.record = RequestRecord(
            request.state.request_id,
            operation,
            asked if known else OTHER_ROUTE,
            team=key.team if key else "none",
            stream=stream,
            key_name=key.name if key else None,
        )
        return record

    # decide --------------------------------------------------------------------------------
    async def _decide(
        self,
        policy: Policy,
        record: RequestRecord | None,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        operation: Operation,
        key: ClientKey | None,
    ) -> tuple[Decision, RequestFeatures]:
        asked = body.get("model") or policy.defaults.route
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
        kind = MODEL_KIND[operation]
        features = features_for(kind, body, headers)
        if kind == "chat":
            features = with_difficulty(policy, asked, body, features)
        now = time.time()
        health = await self.store.health(policy.models)
        for name, model_health in health.items():  # half-open and expired ejections show on the gauge
            self.metrics.set_circuit(name, policy.models[name].provider, model_health.state(now))
        unavailable = {
            name: _unavailable_reason(h, now) for name, h in health.items() if h.unavailable_until(now) is not None
        }
        latency = await self.store.latencies()
        decision = decide(
            policy,
            asked,
            features,
            kind=kind,
            tier_override=tier_override,
            unavailable=unavailable,
            latency_s=latency,
        )
        if record is not None:
            record.route, record.tier, record.prompt_tokens = decision.route, decision.tier, decision.prompt_tokens
            record.difficulty, record.escalation_tier = decision.difficulty, decision.escalation_tier
            record.requested_output_tokens, record.n = features.requested_output_tokens, features.n
            record.needs, record.refusable_params = features.needs, features.params & policy.refusable_params
            sent = {name: value for name in policy.read_headers if (value := headers.get(name)) is not None}
            record.read_headers = sent or None
        if not decision.candidates:
            raise no_candidate_error(decision, health, now)
        return decision, features

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
        self,
        policy: Policy,
        decision: Decision,
        features: RequestFeatures,
        record: RequestRecord,
        key: ClientKey | None,
    ) -> None:
        """Reserve what the request may cost at most; each candidate is then sent the output
        limit the reservation covers (``Dispatcher._capped``), so none can spend more."""
        scopes = budgets.budget_scopes(policy, key)
        if not scopes:
            return
        defaults = policy.defaults
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
    def cache_key(
        self, policy: Policy, decision: Decision, body: Mapping[str, Any], record: RequestRecord
    ) -> str | None:
        route = policy.routes.get(decision.route)
        if route is None or route.cache_ttl_s is None or body.get("stream"):
            return None
        material = {
            "team": record.team,
            "route": decision.route,
            "model": decision.candidates[0].model.name,
            "body": {k: v for k, v in body.items() if k not in NOT_CACHE_KEY},
        }
        return hashlib.sha256(orjson.dumps(material, option=orjson.OPT_SORT_KEYS)).hexdigest()

    async def cached(self, policy: Policy, cache_key: str | None, record: RequestRecord) -> Completed | None:
        """A stored answer: a successful request of its model that cost nothing."""
        if cache_key is None:
            return None
        raw = await self.store.cache_get(cache_key)
        if raw is None:
            return None
        entry = orjson.loads(raw)
        model = policy.models.get(entry["model"])
        if model is None:
            return None
        record.model, record.usage, record.outcome = model, Usage(), "success"
        return Completed(model, Completion(entry["body"], Usage()))

    async def remember(self, policy: Policy, cache_key: str | None, decision: Decision, answered: Completed) -> None:
        """Store only an answer from the model the key was made for (never a fallback's)."""
        if cache_key is None or answered.model.name != decision.candidates[0].model.name:
            return
        ttl = policy.routes[decision.route].cache_ttl_s or 0
        await self.store.cache_put(
            cache_key, orjson.dumps({"model": answered.model.name, "body": answered.completion.body}), ttl
        )

    # dispatch ------------------------------------------------------------------------------
    async def _complete(
        self,
        request: Request,
        snapshot: PolicySnapshot,
        decision: Decision,
        body: dict[str, Any],
        record: RequestRecord,
        operation: Operation,
    ) -> Completed:
        """Non-stream call; cancelled (and the upstream dropped) if the client goes away."""
        work = self.dispatcher.complete(snapshot, decision, body, request.headers, record, operation)
        completed = await cancel_on_disconnect(request, work)
        record.model = completed.model
        usage = completed.completion.usage
        if usage is None:
            usage = self.accountant.estimate_usage(record.prompt_tokens, _completion_text(completed.completion.body))
            record.usage_estimated = True
        record.usage = usage
        return completed

    async def _open_stream(
        self,
        request: Request,
        snapshot: PolicySnapshot,
        decision: Decision,
        body: dict[str, Any],
        record: RequestRecord,
        native_responses: bool = False,
    ) -> Streaming:
        work = self.dispatcher.open_stream(snapshot, decision, body, request.headers, record, native_responses)
        stream = await cancel_on_disconnect(request, work)
        record.model = stream.model
        return stream

    async def _fail(self, policy: Policy, record: RequestRecord, error: RouterError) -> None:
        record.outcome = outcome_of(error)
        # a bounded label value, unlike upstream error codes
        record.error_type = "cancelled" if record.outcome == "cancelled" else str(error.status)
        await asyncio.shield(self._finish(policy, record))

    async def _finish(self, policy: Policy, record: RequestRecord) -> None:
        """Metrics and the access-log fields once, then settle or release the reservations."""
        if record.finished:
            return
        record.finished = True
        if record.model is None:
            record.model = record.trail.last_model  # a failure counts against the model that failed last
        record.cost_usd = self.accountant.finish(record, policy)
        await self._settle(record)


def outcome_of(error: RouterError) -> Outcome:
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
    """Run ``work`` in the request's own task; cancel it as soon as the client disconnects
    (the body is already read) and raise ``ClientDisconnected``. One watcher task per call."""
    current = asyncio.current_task()
    assert current is not None
    gone = finished = False

    async def watch() -> None:
        nonlocal gone
        while (await request.receive())["type"] != "http.disconnect":
            pass
        if not finished:
            gone = True
            current.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if gone and current.uncancel() == 0:  # ours alone, not also a shutdown's
            raise ClientDisconnected("The client closed the connection before the answer was ready.") from None
        raise
    finally:
        finished = True
        watcher.cancel()


def _unavailable_reason(health: ModelHealth, now: float) -> str:
    if health.open_until > now:
        return f"circuit open for {health.open_until - now:.0f}s more after repeated failures"
    if health.cooldown_until > now:
        return f"rate limited upstream; cooling down for {health.cooldown_until - now:.0f}s more"
    return "half-open: a probe request is in flight"


def _conversation(previous: Sequence[Any], given: Any) -> list[Any]:
    """The items a stored response keeps as its input: the conversation it continued, then
    this request's input (a string as a user message; items already in the conversation,
    which clients often resend, once)."""
    if isinstance(given, str):
        return [*previous, {"type": "message", "role": "user", "content": [{"type": "input_text", "text": given}]}]
    seen = {identity for item in previous for identity in _identities(item)}
    return [*previous, *(item for item in given or () if seen.isdisjoint(_identities(item)))]


def _without_builtin_tools(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body as routing sees it when built-in tools may yet be served natively."""
    tools = body.get("tools") or ()
    trimmed = {**body, "tools": [t for t in tools if isinstance(t, Mapping) and t.get("type") == "function"]}
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping) and choice.get("type") != "function":
        del trimmed["tool_choice"]
    return trimmed


def _native_body(body: Mapping[str, Any], conversation: list[Any]) -> dict[str, Any]:
    """A Responses body for a native upstream: the stored conversation inlined (the router's
    response ids mean nothing upstream), nothing kept upstream."""
    native = {**body, "input": conversation, "store": False}
    native.pop("previous_response_id", None)
    return native


def _identities(item: Any) -> list[tuple[str, str]]:
    if not isinstance(item, Mapping):
        return []
    found = [("id", item["id"])] if isinstance(item.get("id"), str) else []
    if item.get("type") in ("function_call", "function_call_output") and isinstance(item.get("call_id"), str):
        found.append((item["type"], item["call_id"]))
    return found


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
