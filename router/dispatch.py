"""Walk a routing decision: call candidates in cost order until one answers.

- A connect error, timeout, 429, 5xx, refused provider key, unreadable body or in-band error
  before the first content chunk moves on to the next candidate; each model is tried once.
- The last candidate may be retried (``retries``) with exponential backoff and full jitter,
  honouring ``Retry-After`` up to ``max_retry_wait_s``, within a retry budget.
- An upstream 4xx is the request's fault: returned as it is, no retry, no fallback.
- Every attempt updates the model's health (circuit breaker, cooldown) in the state store,
  except a wait for a busy provider's connections (``blames_model`` False): that provider's
  other candidates are skipped, and if nothing else answers the client gets 503 + Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from router import budgets
from router.accounting import Accountant, RequestRecord
from router.errors import InvalidRequest, RouterError, UpstreamFailure, UpstreamSaturated
from router.logthrottle import LogThrottle
from router.metrics import Metrics
from router.policy.engine import Decision
from router.policy.model import Model, Policy, Timeouts
from router.providers.base import ChunkStream, Completion, ProviderAdapter, UpstreamCall, UpstreamError
from router.state.base import StateStore

log = logging.getLogger("router.dispatch")
BACKOFF_BASE_S = 0.25
SAME_MODEL_RETRYABLE = frozenset(
    {"connect_error", "timeout", "ttft_timeout", "server_error", "rate_limited", "bad_response", "stream_error"}
)


@dataclass(slots=True)
class Answered:
    model: Model
    completion: Completion | None = None
    stream: ChunkStream | None = None
    first_chunks: list[dict[str, Any]] = field(default_factory=list)
    attempt_started: float = 0.0  # a stream's attempt is recorded when the stream ends
    inflight: Any = None  # a stream holds its provider's in-flight slot until it ends


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


Attempt = Callable[[ProviderAdapter, UpstreamCall], Awaitable[Answered]]


class Dispatcher:
    def __init__(
        self,
        policy: Policy,
        adapters: Mapping[str, ProviderAdapter],
        store: StateStore,
        accountant: Accountant,
        metrics: Metrics,
    ) -> None:
        self.policy = policy
        self.adapters = adapters
        self.store = store
        self.accountant = accountant
        self.metrics = metrics
        self.budget = RetryBudget()
        self._timeouts: dict[tuple[str, str], Timeouts] = {}
        self.failure_log = LogThrottle(log)

    async def complete(
        self,
        decision: Decision,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        record: RequestRecord,
        *,
        embedding: bool = False,
    ) -> Answered:
        async def attempt(adapter: ProviderAdapter, call: UpstreamCall) -> Answered:
            method = adapter.embed if embedding else adapter.complete
            async with asyncio.timeout(call.timeouts.total_s):
                return Answered(call.model, completion=await method(call))

        return await self._walk(decision, body, headers, record, attempt)

    async def open_stream(
        self, decision: Decision, body: Mapping[str, Any], headers: Mapping[str, str], record: RequestRecord
    ) -> Answered:
        """Open a stream and read up to its first content chunk: until then, failures fall back."""

        async def attempt(adapter: ProviderAdapter, call: UpstreamCall) -> Answered:
            stream: ChunkStream | None = None
            try:
                async with asyncio.timeout(call.timeouts.ttft_s):
                    stream = await adapter.stream(call)
                    iterator = aiter(stream)
                    buffered = await _read_until_content(iterator)
            except BaseException:
                if stream is not None:
                    await stream.aclose()
                raise
            return Answered(call.model, stream=_Resumed(stream, iterator), first_chunks=buffered)

        return await self._walk(decision, body, headers, record, attempt)

    async def _walk(
        self,
        decision: Decision,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        record: RequestRecord,
        attempt: Attempt,
    ) -> Answered:
        failures: list[tuple[Model, UpstreamError]] = []
        self.budget.active += 1
        try:
            last_index = len(decision.candidates) - 1
            for index, candidate in enumerate(decision.candidates):
                model = candidate.model
                if any(f.reason == "saturated" and m.provider == model.provider for m, f in failures):
                    continue  # its provider's connections are all busy: no second wait
                if not await self.store.claim_probe(model.name, time.time()):
                    continue  # half-open and another request is probing it
                if failures:
                    self.accountant.fallback(failures[-1][0], model, failures[-1][1].reason)
                retries = self.policy.retries_for(decision.route) if index == last_index else 0
                answered = await self._try_model(
                    model, body, headers, record, attempt, failures, retries, decision.route
                )
                if answered is not None:
                    return answered
        finally:
            self.budget.active -= 1
        raise exhausted_error(failures)

    async def _try_model(
        self,
        model: Model,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        record: RequestRecord,
        attempt: Attempt,
        failures: list[tuple[Model, UpstreamError]],
        retries: int,
        route: str,
    ) -> Answered | None:
        call = UpstreamCall(
            model, self._capped(body, model, record), headers, self.timeouts(route, model), record.request_id
        )
        adapter = self.adapters[model.provider]
        for retry in range(retries + 1):
            record.attempts += 1
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
                record.upstream_s += elapsed
                try:
                    await self._healthy(model, elapsed)
                except BaseException:  # cancelled: an opened stream must not outlive the request
                    inflight.dec()
                    if answered.stream is not None:
                        await answered.stream.aclose()
                    raise
                if answered.completion is not None:
                    inflight.dec()
                    self.accountant.attempt(record, model, elapsed, None, answered.completion.usage)
                else:
                    answered.attempt_started, answered.inflight = started, inflight
                return answered
            inflight.dec()
            elapsed = time.perf_counter() - started
            record.upstream_s += elapsed
            record.model = model  # a failed request is counted against the model that failed last
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
                    "attempt": record.attempts,
                },
            )
            failures.append((model, error))
            if error.blames_model:
                await self._unhealthy(model, error)
            wait = self._retry_wait(error, retry)
            if retry == retries or wait is None or not self.budget.try_acquire():
                return None
            try:
                await asyncio.sleep(wait)
            finally:
                self.budget.release()
        return None

    def _capped(self, body: Mapping[str, Any], model: Model, record: RequestRecord) -> Mapping[str, Any]:
        """A budgeted request goes up with the output limit its reservation covers on this
        model (the cap when the client set none; lower than the client's on a pricier fallback)."""
        if not record.reserved_micros:
            return body
        limit = budgets.covered_output(
            self.policy.defaults,
            model,
            self.accountant.price_of(model),
            record.prompt_tokens,
            record.requested_output_tokens,
            record.n,
            record.reserved_micros,
        )
        if limit is None:
            return body
        if "max_completion_tokens" in body or "max_tokens" in self.policy.providers[model.provider].unsupported_params:
            return {**body, "max_completion_tokens": limit}
        return {**body, "max_tokens": limit}

    def timeouts(self, route: str, model: Model) -> Timeouts:
        """The route's and model's timeouts, worked out once per policy."""
        key = (route, model.name)
        found = self._timeouts.get(key)
        if found is None:
            found = self._timeouts[key] = self.policy.timeouts_for(route, model)
        return found

    def _retry_wait(self, error: UpstreamError, retry: int) -> float | None:
        if error.reason not in SAME_MODEL_RETRYABLE:
            return None
        cap = self.policy.defaults.max_retry_wait_s
        if error.retry_after_s is not None:
            return error.retry_after_s if error.retry_after_s <= cap else None
        return random.uniform(0, min(cap, BACKOFF_BASE_S * 2**retry))

    async def _healthy(self, model: Model, latency_s: float) -> None:
        health = await self.store.record_success(model.name, latency_s)
        self.metrics.set_circuit(model.name, model.provider, health.state(time.time()))

    async def stream_ended(
        self,
        record: RequestRecord,
        answered: Answered,
        usage: Any,
        error_reason: str | None,
        blames_model: bool = True,
    ) -> None:
        """Record a streamed attempt once it is over: its whole duration, usage and any
        mid-stream failure (which also counts against the model's health if it is the model's)."""
        answered.inflight.dec()
        self.accountant.attempt(
            record, answered.model, time.perf_counter() - answered.attempt_started, error_reason, usage
        )
        if error_reason and blames_model:
            await self._unhealthy(answered.model, UpstreamError(error_reason, "failed mid-stream"))

    async def _unhealthy(self, model: Model, error: UpstreamError) -> None:
        now = time.time()
        if error.reason == "rate_limited":
            health = await self.store.record_rate_limited(model.name, now, error.retry_after_s)
        else:
            immediate = error.reason == "auth_error"
            health = await self.store.record_failure(
                model.name, now, immediate=immediate, total_models=len(self.policy.models)
            )
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
    return False


class _Resumed:
    """A chunk stream whose first chunks have already been read."""

    def __init__(self, stream: ChunkStream, iterator: AsyncIterator[dict[str, Any]]) -> None:
        self.stream = stream
        self.iterator = iterator

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self.iterator

    def buffered(self) -> bool:
        buffered = getattr(self.stream, "buffered", None)
        return bool(buffered and buffered())

    async def aclose(self) -> None:
        await self.stream.aclose()


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
