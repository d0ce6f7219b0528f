"""Walk a routing decision: call candidates in cost order until one answers, and own an
answered stream's whole life.

- A connect error, timeout, 429, 5xx, refused provider key, unreadable body or in-band error
  before the first content chunk moves on to the next candidate; each model is tried once.
- The last candidate may be retried (``retries``) with exponential backoff and full jitter,
  honouring ``Retry-After`` up to ``max_retry_wait_s``, within a retry budget.
- An upstream 4xx is the request's fault: returned as it is, no retry, no fallback.
- Every attempt updates the model's health (circuit breaker, cooldown) in the state store,
  except a wait for a busy provider's connections (``blames_model`` False): that provider's
  other candidates are skipped, and if nothing else answers the client gets 503 + Retry-After.

Every timeout is applied here, with values from the policy snapshot: connect (handed to
the adapter in ``UpstreamCall.timeouts``), time to first content chunk, the gap between
chunks (idle) and the total, counted from the start of the request for streamed and
non-streamed answers alike. A ``Streaming`` answer applies idle and total itself while it
is read, and ends exactly once (upstream closed, attempt accounted, ``on_end`` called).

Dispatch writes only ``record.trail`` (its attempts); the gateway owns the rest of the record.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import Gauge

from router import budgets
from router.accounting import Accountant, RequestRecord, StreamTally
from router.errors import InvalidRequest, RouterError, UpstreamFailure, UpstreamSaturated
from router.logthrottle import LogThrottle
from router.metrics import Metrics
from router.policy import tokens
from router.policy.engine import Decision
from router.policy.model import Model, Timeouts
from router.providers.base import (
    ChunkStream,
    Completion,
    ProviderAdapter,
    UpstreamCall,
    UpstreamError,
    Usage,
    usage_from_openai,
    usage_from_responses,
)
from router.providers.openai_compat import OpenAICompatibleAdapter
from router.snapshot import PolicySnapshot
from router.state.base import StateStore
from router.types import ErrorReason, Operation

log = logging.getLogger("router.dispatch")
stream_log = logging.getLogger("router.stream")
BACKOFF_BASE_S = 0.25
SAME_MODEL_RETRYABLE = frozenset(
    {"connect_error", "timeout", "ttft_timeout", "server_error", "rate_limited", "bad_response", "stream_error"}
)


@dataclass(slots=True)
class Completed:
    """A whole answer (chat completion or embeddings) from ``model``."""

    model: Model
    completion: Completion


class RetryBudget:
    """Retries in flight stay under ``ratio`` of active requests (at least ``minimum``)."""

    def __init__(self, ratio: float = 0.2, minimum: int = 3) -> None:
        self.ratio, self.minimum = ratio, minimum
        self.active = 0
        self.retrying = 0

    def try_acquire(self) -> bool:
        if self.retrying >= max(self.minimum, int(self.active * self.ratio)):
            return False
        self.retrying += 1
        return True

    def release(self) -> None:
        self.retrying -= 1


Answer = TypeVar("Answer", "Completed", "Streaming")  # what one attempt returns: whole or streamed


class Dispatcher:
    """One per process: its retry budget and log throttle outlive policy reloads."""

    def __init__(self, store: StateStore, accountant: Accountant, metrics: Metrics) -> None:
        self.store = store
        self.accountant = accountant
        self.metrics = metrics
        self.budget = RetryBudget()
        self.failure_log = LogThrottle(log)
        self.stream_failure_log = LogThrottle(stream_log)

    async def complete(
        self,
        snapshot: PolicySnapshot,
        decision: Decision,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        record: RequestRecord,
        operation: Operation,
    ) -> Completed:
        deadline = record.started  # the total timeout counts from the start of the request

        async def attempt(adapter: ProviderAdapter, call: UpstreamCall) -> Completed:
            if operation == "responses":  # only native providers are given a Responses body
                method = _native(adapter).responses
            else:
                method = adapter.embed if operation == "embeddings" else adapter.complete
            async with asyncio.timeout(max(deadline + call.timeouts.total_s - time.perf_counter(), 0.0)):
                return Completed(call.model, await method(call))

        return await self._walk(snapshot, decision, body, headers, record, attempt)

    async def open_stream(
        self,
        snapshot: PolicySnapshot,
        decision: Decision,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        record: RequestRecord,
        native_responses: bool = False,
    ) -> Streaming:
        """Open a stream and read up to its first content chunk: until then, failures fall back.
        ``native_responses``: the body is a Responses request and the stream its events."""

        async def attempt(adapter: ProviderAdapter, call: UpstreamCall) -> Streaming:
            stream: ChunkStream | None = None
            try:
                async with asyncio.timeout(call.timeouts.ttft_s):
                    if native_responses:
                        stream = await _native(adapter).responses_stream(call)
                    else:
                        stream = await adapter.stream(call)
                    iterator = aiter(stream)
                    buffered = await _read_until_content(iterator)
            except BaseException:
                if stream is not None:
                    await stream.aclose()
                raise
            return Streaming(self, snapshot, record, call.model, stream, iterator, buffered, call.timeouts)

        return await self._walk(snapshot, decision, body, headers, record, attempt)

    async def _walk(
        self,
        snapshot: PolicySnapshot,
        decision: Decision,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        record: RequestRecord,
        attempt: Callable[[ProviderAdapter, UpstreamCall], Awaitable[Answer]],
    ) -> Answer:
        failures: list[tuple[Model, UpstreamError]] = []
        self.budget.active += 1
        try:
            last_index = len(decision.candidates) - 1
            for index, candidate in enumerate(decision.candidates):
                model = candidate.model
                if any(f.reason == "saturated" and m.provider == model.provider for m, f in failures):
                    continue  # its provider's connections are all busy: no second wait
                if _past_total(record, snapshot.timeouts(decision.route, model)):
                    continue  # the request's total timeout is spent: no call could answer in time
                if not await self.store.claim_probe(model.name, time.time()):
                    continue  # half-open and another request is probing it
                if failures:
                    self.accountant.fallback(failures[-1][0], model, failures[-1][1].reason)
                retries = snapshot.policy.retries_for(decision.route) if index == last_index else 0
                answered = await self._try_model(
                    snapshot, model, body, headers, record, attempt, failures, retries, decision.route
                )
                if answered is not None:
                    return answered
        finally:
            self.budget.active -= 1
        raise exhausted_error(failures)

    async def _try_model(
        self,
        snapshot: PolicySnapshot,
        model: Model,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        record: RequestRecord,
        attempt: Callable[[ProviderAdapter, UpstreamCall], Awaitable[Answer]],
        failures: list[tuple[Model, UpstreamError]],
        retries: int,
        route: str,
    ) -> Answer | None:
        call = UpstreamCall(
            model,
            self._capped(snapshot, body, model, record),
            headers,
            snapshot.timeouts(route, model),
            record.request_id,
        )
        adapter = snapshot.adapters[model.provider]
        trail = record.trail
        for retry in range(retries + 1):
            trail.attempts += 1
            started = time.perf_counter()
            inflight = self.metrics.child(self.metrics.inflight, model.provider)
            inflight.inc()
            try:
                answered = await attempt(adapter, call)
            except TimeoutError:
                error = UpstreamError(
                    "ttft_timeout" if record.stream else "timeout", "upstream did not answer within the timeout"
                )
            except UpstreamError as exc:
                error = exc
            except BaseException:
                inflight.dec()
                raise
            else:
                elapsed = time.perf_counter() - started
                trail.upstream_s += elapsed
                try:
                    await self._healthy(model, elapsed)
                except BaseException:  # cancelled: an opened stream must not outlive the request
                    inflight.dec()
                    if isinstance(answered, Streaming):
                        await answered.upstream.aclose()
                    raise
                if isinstance(answered, Completed):
                    inflight.dec()
                    self.accountant.attempt(record, model, elapsed, None, answered.completion.usage)
                else:
                    answered.attempt_started, answered.inflight = started, inflight
                return answered
            inflight.dec()
            elapsed = time.perf_counter() - started
            trail.upstream_s += elapsed
            trail.last_model = model  # a failed request is counted against the model that failed last
            self.accountant.attempt(record, model, elapsed, error.reason)
            if not error.retryable:
                raise client_error(error)
            self.failure_log.warning(
                "upstream attempt failed",
                key=(model.name, error.reason),
                extra={
                    "request_id": record.request_id,
                    "model": model.name,
                    "reason": error.reason,
                    "attempt": trail.attempts,
                },
            )
            failures.append((model, error))
            if error.blames_model:
                await self._unhealthy(model, error, len(snapshot.policy.models))
            wait = self._retry_wait(snapshot, error, retry)
            if retry == retries or wait is None or _past_total(record, call.timeouts, wait):
                return None
            if not self.budget.try_acquire():
                return None
            try:
                await asyncio.sleep(wait)
            finally:
                self.budget.release()
        return None

    def _capped(
        self, snapshot: PolicySnapshot, body: Mapping[str, Any], model: Model, record: RequestRecord
    ) -> Mapping[str, Any]:
        """A budgeted request goes up with the output limit its reservation covers on this
        model (the cap when the client set none; lower than the client's on a pricier fallback)."""
        if not record.reserved_micros:
            return body
        limit = budgets.covered_output(
            snapshot.policy.defaults,
            model,
            self.accountant.price_of(model),
            record.prompt_tokens,
            record.requested_output_tokens,
            record.n,
            record.reserved_micros,
        )
        if limit is None:
            return body
        if "messages" not in body and "input" in body:  # a native Responses request
            return {**body, "max_output_tokens": limit}
        if (
            "max_completion_tokens" in body
            or "max_tokens" in snapshot.policy.providers[model.provider].unsupported_params
        ):
            return {**body, "max_completion_tokens": limit}
        return {**body, "max_tokens": limit}

    def _retry_wait(self, snapshot: PolicySnapshot, error: UpstreamError, retry: int) -> float | None:
        if error.reason not in SAME_MODEL_RETRYABLE:
            return None
        cap = snapshot.policy.defaults.max_retry_wait_s
        if error.retry_after_s is not None:
            return error.retry_after_s if error.retry_after_s <= cap else None
        return random.uniform(0, min(cap, BACKOFF_BASE_S * 2**retry))

    async def _healthy(self, model: Model, latency_s: float) -> None:
        health = await self.store.record_success(model.name, latency_s)
        self.metrics.set_circuit(model.name, model.provider, health.state(time.time()))

    async def _unhealthy(self, model: Model, error: UpstreamError, total_models: int) -> None:
        now = time.time()
        if error.reason == "rate_limited":
            health = await self.store.record_rate_limited(model.name, now, error.retry_after_s)
        else:
            immediate = error.reason == "auth_error"
            health = await self.store.record_failure(model.name, now, immediate=immediate, total_models=total_models)
        state = health.state(now)
        self.metrics.set_circuit(model.name, model.provider, state)
        if state == "open":
            log.warning(
                "circuit opened",
                extra={
                    "model": model.name,
                    "until_s": round(health.open_until - now, 1),
                    "ejections": health.ejections,
                },
            )


def _past_total(record: RequestRecord, timeouts: Timeouts, wait_s: float = 0.0) -> bool:
    """Whether a non-stream request's total timeout (from its start) is spent, after ``wait_s``."""
    return not record.stream and time.perf_counter() + wait_s - record.started >= timeouts.total_s


async def _read_until_content(iterator: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    buffered: list[dict[str, Any]] = []
    while True:
        try:
            chunk = await anext(iterator)
        except StopAsyncIteration:
            raise UpstreamError("bad_response", "upstream ended the stream before any content") from None
        buffered.append(chunk)
        if _has_content(chunk):
            return buffered


OPENING_EVENTS = frozenset({"response.created", "response.in_progress"})
FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
DELTA_EVENTS = frozenset({"response.output_text.delta", "response.function_call_arguments.delta"})


def _has_content(chunk: dict[str, Any]) -> bool:
    if chunk.get("usage"):
        return True
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if (
            delta.get("content")
            or delta.get("tool_calls")
            or delta.get("function_call")
            or delta.get("refusal")
            or choice.get("finish_reason")
        ):
            return True
    kind = chunk.get("type")  # a native Responses event: anything after the response's opening
    return kind is not None and kind not in OPENING_EVENTS


class Streaming:
    """An answered stream: the upstream, the chunks read up to its first content, and the
    rest read in batches (``next_batch``: chunks that arrived together leave together) under the idle and
    total timeouts. Its usage and text are tallied as they pass; a failure after the first
    chunk (an upstream error, a timeout, a chunk the router cannot read) is kept in
    ``failure`` after the chunks read before it, and ends the stream. ``aclose`` ends
    the stream exactly once, however far it was read: the upstream is closed, the attempt
    is accounted, and ``on_end`` (the gateway's, which finishes the request) runs."""

    __slots__ = (
        "_iterator",
        "attempt_started",
        "deadline",
        "dispatcher",
        "ended",
        "failure",
        "finished",
        "first_chunks",
        "idle_s",
        "inflight",
        "model",
        "on_end",
        "record",
        "snapshot",
        "tally",
        "upstream",
    )

    def __init__(
        self,
        dispatcher: Dispatcher,
        snapshot: PolicySnapshot,
        record: RequestRecord,
        model: Model,
        upstream: ChunkStream,
        iterator: AsyncIterator[dict[str, Any]],
        first_chunks: list[dict[str, Any]],
        timeouts: Timeouts,
    ) -> None:
        self.dispatcher = dispatcher
        self.snapshot = snapshot
        self.record = record
        self.model = model
        self.upstream = upstream
        self._iterator = iterator
        self.first_chunks = first_chunks
        self.idle_s = timeouts.idle_s
        self.deadline = record.started + timeouts.total_s  # counted from the start of the request
        self.tally = StreamTally()
        self.failure: ErrorReason | None = None
        self.finished = False  # read to its end, cleanly or with a failure
        self.ended = False
        self.attempt_started = 0.0
        self.inflight: Gauge | None = None  # the provider's in-flight slot, held until the end
        self.on_end: Callable[[Streaming], Awaitable[None]] | None = None

    def first_batch(self) -> list[dict[str, Any]]:
        """The chunks read while the stream was opened (up to its first content)."""
        batch = self._tallied(self.first_chunks)
        self.tally.first_chunk_at = time.perf_counter()
        return batch

    async def next_batch(self) -> list[dict[str, Any]]:
        """The next chunks; empty once the stream is over (then see ``failure``)."""
        batch = [] if self.failure is not None else await self._read_batch()
        if not batch:
            self.finished = True
        return batch

    def _tallied(self, chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``chunks`` up to the first one that cannot be read (then ``failure`` is set)."""
        for index, chunk in enumerate(chunks):
            try:
                _tally_chunk(chunk, self.tally)
            except Exception as error:
                self._failed(error)
                return chunks[:index]
        return chunks

    async def _read_batch(self) -> list[dict[str, Any]]:
        """The next chunk, waited for, and every chunk already read behind it; empty at the
        end. A failure keeps the chunks read before it: they are sent, then the error."""
        batch: list[dict[str, Any]] = []
        tally, upstream, iterator = self.tally, self.upstream, self._iterator
        try:
            chunk = await self._next_chunk()
            while chunk is not None:
                _tally_chunk(chunk, tally)
                batch.append(chunk)
                if not upstream.buffered():
                    break
                chunk = await anext(iterator, None)
        except Exception as error:
            self._failed(error)
        return batch

    async def _next_chunk(self) -> dict[str, Any] | None:
        started = time.perf_counter()
        remaining = self.deadline - started
        try:
            async with asyncio.timeout(max(min(self.idle_s, remaining), 0.0)):
                return await anext(self._iterator, None)
        except TimeoutError:
            if self.idle_s < remaining:
                raise UpstreamError("idle_timeout", "no chunk within the idle timeout") from None
            raise UpstreamError("timeout", "stream exceeded the total timeout") from None
        finally:
            self.tally.upstream_s += time.perf_counter() - started

    def _failed(self, error: Exception) -> None:
        tally, model = self.tally, self.model.name
        if isinstance(error, UpstreamError):
            reason = error.reason
            tally.outcome = "timeout" if reason in ("idle_timeout", "timeout") else "stream_error"
            self.dispatcher.stream_failure_log.warning(
                "upstream failed mid-stream", key=(model, reason), extra={"model": model, "reason": reason}
            )
        else:  # a chunk we cannot read: our failure, not the model's
            reason, tally.outcome, tally.blames_model = "internal_error", "stream_error", False
            self.dispatcher.stream_failure_log.warning(
                "unexpected error mid-stream",
                key=(model, type(error).__name__),
                extra={"model": model, "error": type(error).__name__},
            )
        self.failure = tally.error_reason = reason

    def usage(self) -> Usage:
        """The usage the upstream reported, else an estimate from the text (marked so)."""
        tally = self.tally
        if tally.usage is None:
            tally.usage, tally.estimated = (
                Usage(self.record.prompt_tokens, tokens.count_text("".join(tally.text)), 0),
                True,
            )
        return tally.usage

    def usage_object(self) -> dict[str, Any]:
        """The usage object for the client: the upstream's own, every field it sent
        (reasoning, cached and audio token details), else the estimate in OpenAI's shape."""
        usage = self.usage()
        reported = self.tally.reported_usage
        return reported if reported is not None and not self.tally.estimated else usage.to_openai()

    async def aclose(self) -> None:
        """End the stream once: a stream not read to its end was cancelled (the client left)."""
        if self.ended:
            return
        self.ended = True
        if not self.finished and self.failure is None:
            self.tally.outcome = "cancelled"
        await asyncio.shield(self._end())

    async def _end(self) -> None:
        tally = self.tally
        try:
            await self.upstream.aclose()
        finally:
            usage = self.usage()
            self.record.trail.upstream_s += tally.upstream_s
            if self.inflight is not None:
                self.inflight.dec()
            dispatcher = self.dispatcher
            dispatcher.accountant.attempt(
                self.record, self.model, time.perf_counter() - self.attempt_started, tally.error_reason, usage
            )
            try:
                if tally.error_reason and tally.blames_model:
                    error = UpstreamError(tally.error_reason, "failed mid-stream")
                    await dispatcher._unhealthy(self.model, error, len(self.snapshot.policy.models))
            finally:
                if self.on_end is not None:
                    await self.on_end(self)


def _tally_chunk(chunk: dict[str, Any], tally: StreamTally) -> None:
    """Capture usage wherever it arrives, and the text an estimate would count."""
    usage = chunk.get("usage")
    if usage:
        tally.usage = usage_from_openai(usage) or tally.usage
        tally.reported_usage = usage
    choices = chunk.get("choices")
    if not choices:
        if "type" in chunk:  # a native Responses event
            _tally_event(chunk, tally)
        return
    for choice in choices:
        delta = choice.get("delta") or {}
        if delta.get("content"):
            tally.text.append(delta["content"])
        for call in delta.get("tool_calls") or ():
            arguments = (call.get("function") or {}).get("arguments")
            if arguments:
                tally.text.append(arguments)


def _tally_event(event: dict[str, Any], tally: StreamTally) -> None:
    kind = event["type"]
    if kind in FINAL_EVENTS:
        usage = usage_from_responses((event.get("response") or {}).get("usage"))
        tally.usage = usage or tally.usage
    elif kind in DELTA_EVENTS:
        delta = event.get("delta")
        if isinstance(delta, str):
            tally.text.append(delta)


def _native(adapter: ProviderAdapter) -> OpenAICompatibleAdapter:
    if not isinstance(adapter, OpenAICompatibleAdapter):  # the policy loader allows native on openai only
        raise UpstreamError("bad_response", "this provider cannot take a Responses request")
    return adapter


def client_error(error: UpstreamError) -> RouterError:
    body = (error.client_body or {}).get("error", {})
    return InvalidRequest(
        body.get("message") or error.message, param=body.get("param"), code=body.get("code"), status=error.status or 400
    )


def exhausted_error(failures: list[tuple[Model, UpstreamError]]) -> RouterError:
    if not failures:
        return UpstreamFailure(
            "Every candidate model is being probed after recent failures; retry shortly.",
            code="no_candidate_model",
            status=503,
            headers={"retry-after": "1"},
        )
    _, last = failures[-1]
    tried = ", ".join(f"{model.name} ({failure.reason})" for model, failure in failures)
    headers = {"x-should-retry": "false", "x-router-attempts": str(len(failures))}
    if last.reason == "auth_error":
        return UpstreamFailure(
            f"The upstream provider refused its credentials; tried {tried}.",
            code="upstream_auth_error",
            status=502,
            headers=headers,
        )
    if all(f.reason == "rate_limited" for _, f in failures):
        waits = [f.retry_after_s for _, f in failures if f.retry_after_s is not None]
        headers["retry-after"] = str(max(1, round(min(waits)))) if waits else "1"
        return UpstreamFailure(
            f"Every candidate model is rate limited; tried {tried}.",
            code="upstream_rate_limited",
            status=429,
            headers=headers,
        )
    if all(f.reason in ("saturated", "rate_limited") for _, f in failures):
        waits = [f.retry_after_s for _, f in failures if f.retry_after_s is not None]
        headers["retry-after"] = str(max(1, round(min(waits)))) if waits else "1"
        del headers["x-should-retry"]  # busy, not broken: a client's own retry after the wait is welcome
        return UpstreamSaturated(
            f"Every candidate model is busy (no upstream connection free in time); tried {tried}. Retry shortly.",
            headers=headers,
        )
    status = 504 if last.reason in ("timeout", "ttft_timeout", "idle_timeout") else 502
    return UpstreamFailure(
        f"Every candidate model failed; tried {tried}. Last error: {last.message}.", status=status, headers=headers
    )
