"""The request path between thin handlers and the parts: decide, dispatch, account.

One ``Gateway`` per policy: it holds the policy, the adapters built from it, the state
store, the dispatcher and the accountant, so a policy swap is one reference swap.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from router.accounting import Accountant, RequestRecord
from router.circuit import ModelHealth
from router.dispatch import Answered, Dispatcher
from router.errors import InvalidRequest, NoCandidate, RouterError, UpstreamFailure
from router.metrics import Metrics
from router.policy.engine import Decision, decide
from router.policy.features import chat_features, embedding_features
from router.policy.model import Policy
from router.providers.base import ProviderAdapter, Usage
from router.state.base import StateStore


class Gateway:
    def __init__(self, policy: Policy, adapters: Mapping[str, ProviderAdapter], store: StateStore, metrics: Metrics) -> None:
        self.policy = policy
        self.adapters = adapters
        self.store = store
        self.metrics = metrics
        self.accountant = Accountant(metrics)
        self.dispatcher = Dispatcher(policy, adapters, store, self.accountant, metrics)

    async def decide(self, body: Mapping[str, Any], headers: Mapping[str, str], kind: str) -> Decision:
        features = (chat_features if kind == "chat" else embedding_features)(body, headers)
        now = time.time()
        health = await self.store.health(self.policy.models)
        unavailable = {name: _unavailable_reason(h, now) for name, h in health.items() if h.unavailable_until(now) is not None}
        latency = await self.store.latencies()
        decision = decide(
            self.policy, body.get("model"), features, kind=kind, tier_override=headers.get("x-router-tier"), unavailable=unavailable, latency_s=latency
        )
        if not decision.candidates:
            raise no_candidate_error(decision, health, now)
        return decision

    def record(self, request_id: str, decision: Decision, operation: str, stream: bool) -> RequestRecord:
        return RequestRecord(request_id, operation, decision.route, decision.tier, stream=stream, prompt_tokens=decision.prompt_tokens)

    async def complete(self, decision: Decision, body: dict[str, Any], request: Request, record: RequestRecord, *, embedding: bool = False) -> Answered:
        """Non-stream call; cancelled (and the upstream dropped) if the client goes away."""
        try:
            answered = await cancel_on_disconnect(request, self.dispatcher.complete(decision, body, request.headers, record, embedding=embedding))
        except RouterError as error:
            self.fail(record, error)
            raise
        except asyncio.CancelledError:
            record.outcome = "cancelled"
            self.finish(record)
            raise
        record.model = answered.model
        usage = answered.completion.usage
        if usage is None:
            usage = self.accountant.estimate_usage(record, _completion_text(answered.completion.body))
        record.usage = usage
        self.finish(record)
        return answered

    async def open_stream(self, decision: Decision, body: dict[str, Any], request: Request, record: RequestRecord) -> Answered:
        try:
            answered = await self.dispatcher.open_stream(decision, body, request.headers, record)
        except RouterError as error:
            self.fail(record, error)
            raise
        record.model = answered.model
        return answered

    def estimate_usage(self, record: RequestRecord):  # type: ignore[no-untyped-def]
        return lambda text: Usage(record.prompt_tokens, self.accountant.estimate_usage(record, text).output_tokens, 0)

    def fail(self, record: RequestRecord, error: RouterError) -> None:
        record.error_type = error.code or error.error_type
        if isinstance(error, UpstreamFailure):
            record.outcome = "rate_limited" if error.status == 429 else ("timeout" if error.status == 504 else "upstream_error")
        else:
            record.outcome = "client_error"
        self.finish(record)

    def finish(self, record: RequestRecord) -> None:
        self.accountant.finish(record, self.policy)


async def cancel_on_disconnect(request: Request, work):  # type: ignore[no-untyped-def]
    """Run ``work``; cancel it as soon as the client disconnects (the body is already read)."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                task.cancel()
                return

    watcher = asyncio.ensure_future(watch())
    try:
        return await task
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


def no_candidate_error(decision: Decision, health: Mapping[str, Any], now: float) -> RouterError:
    relevant = [e for e in decision.excluded if e.kind != "policy"] or list(decision.excluded)
    reasons = "; ".join(f"{e.model}: {e.reason}" for e in relevant[:8])
    message = f"No model can serve this request for '{decision.requested}' (tier '{decision.tier}'). {reasons}"
    kinds = {e.kind for e in decision.excluded}
    if "request" in kinds and "unavailable" not in kinds:
        return InvalidRequest(message, param="messages", code="no_model_fits_request")
    waits = [until - now for e in decision.excluded if e.kind == "unavailable" and e.model in health for until in [health[e.model].unavailable_until(now)] if until]
    if waits:
        cooling = [h for name, h in health.items() if h.cooldown_until > now]
        retry_after = str(max(1, round(min(waits))))
        status = 429 if cooling and all(health[e.model].cooldown_until > now for e in decision.excluded if e.kind == "unavailable" and e.model in health) else 503
        code = "rate_limit_exceeded" if status == 429 else "no_candidate_model"
        return NoCandidate(message, status=status, code=code, headers={"retry-after": retry_after})
    return NoCandidate(message)
