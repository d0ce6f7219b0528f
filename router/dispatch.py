"""Walk a routing decision: call candidates in order until one answers.

A connect error, timeout, 429, 5xx or provider-auth failure before the first content byte
moves on to the next candidate (each model at most once); an upstream 4xx is the client's
problem and is returned as it is, without fallback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from router.errors import InvalidRequest, NoCandidate, RouterError, UpstreamFailure
from router.policy.engine import Decision
from router.policy.model import Model, Policy
from router.providers.base import (
    ChunkStream,
    Completion,
    ProviderAdapter,
    Timeouts,
    UpstreamCall,
    UpstreamError,
)

log = logging.getLogger("router.dispatch")


@dataclass(slots=True)
class Attempts:
    """What happened to each candidate tried for one request."""

    failures: list[tuple[str, UpstreamError]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.failures) + 1


@dataclass(slots=True)
class Answered:
    model: Model
    attempts: Attempts
    completion: Completion | None = None
    stream: ChunkStream | None = None
    first_chunk: dict[str, Any] | None = None


class Dispatcher:
    def __init__(self, policy: Policy, adapters: Mapping[str, ProviderAdapter]) -> None:
        self.policy = policy
        self.adapters = adapters

    async def complete(self, decision: Decision, body: Mapping[str, Any], headers: Mapping[str, str], request_id: str, *, embedding: bool = False) -> Answered:
        async def call(adapter: ProviderAdapter, upstream_call: UpstreamCall) -> Answered:
            method = adapter.embed if embedding else adapter.complete
            return Answered(upstream_call.model, Attempts(), completion=await method(upstream_call))

        return await self._walk(decision, body, headers, request_id, call)

    async def open_stream(self, decision: Decision, body: Mapping[str, Any], headers: Mapping[str, str], request_id: str) -> Answered:
        """Open a stream and wait for its first chunk: until then, failures fall back."""

        async def call(adapter: ProviderAdapter, upstream_call: UpstreamCall) -> Answered:
            stream = await adapter.stream(upstream_call)
            iterator = aiter(stream)
            try:
                async with asyncio.timeout(upstream_call.timeouts.ttft_s):
                    first = await anext(iterator)
            except TimeoutError:
                await stream.aclose()
                raise UpstreamError("ttft_timeout", "upstream sent no first chunk within the first-token timeout") from None
            except StopAsyncIteration:
                await stream.aclose()
                raise UpstreamError("bad_response", "upstream ended the stream before any chunk") from None
            except BaseException:
                await stream.aclose()
                raise
            return Answered(upstream_call.model, Attempts(), stream=_Resumed(stream, iterator), first_chunk=first)

        return await self._walk(decision, body, headers, request_id, call)

    async def _walk(self, decision, body, headers, request_id, call) -> Answered:  # type: ignore[no-untyped-def]
        if not decision.candidates:
            raise no_candidate_error(decision)
        attempts = Attempts()
        defaults = self.policy.defaults
        timeouts = Timeouts(defaults.connect_timeout_s, defaults.ttft_timeout_s, defaults.timeout_s)
        for candidate in decision.candidates:
            model = candidate.model
            upstream_call = UpstreamCall(model, body, headers, timeouts, request_id)
            try:
                answered = await call(self.adapters[model.provider], upstream_call)
            except UpstreamError as error:
                if not error.retryable:
                    raise client_error(error) from None
                log.warning("upstream attempt failed", extra={"request_id": request_id, "model": model.name, "reason": error.reason})
                attempts.failures.append((model.name, error))
                continue
            answered.attempts = attempts
            return answered
        raise exhausted_error(attempts)


class _Resumed:
    """A chunk stream whose first chunk has already been read."""

    def __init__(self, stream: ChunkStream, iterator: AsyncIterator[dict[str, Any]]) -> None:
        self.stream = stream
        self.iterator = iterator

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self.iterator

    async def aclose(self) -> None:
        await self.stream.aclose()


def client_error(error: UpstreamError) -> RouterError:
    body = (error.client_body or {}).get("error", {})
    return InvalidRequest(
        body.get("message") or error.message,
        param=body.get("param"),
        code=body.get("code"),
        status=error.status or 400,
    )


def exhausted_error(attempts: Attempts) -> RouterError:
    model, last = attempts.failures[-1]
    tried = ", ".join(f"{name} ({failure.reason})" for name, failure in attempts.failures)
    headers = {"x-should-retry": "false", "x-router-attempts": str(len(attempts.failures))}
    if last.reason == "auth_error":
        return UpstreamFailure(f"The upstream provider refused its credentials; tried {tried}.", code="upstream_auth_error", status=502, headers=headers)
    if all(f.reason == "rate_limited" for _, f in attempts.failures):
        waits = [f.retry_after_s for _, f in attempts.failures if f.retry_after_s is not None]
        if waits:
            headers["retry-after"] = str(max(1, round(min(waits))))
        return UpstreamFailure(f"Every candidate model is rate limited; tried {tried}.", code="upstream_rate_limited", status=429, headers=headers)
    status = 504 if last.reason in ("timeout", "ttft_timeout") else 502
    return UpstreamFailure(f"Every candidate model failed; tried {tried}. Last error: {last.message}.", status=status, headers=headers)


def no_candidate_error(decision: Decision) -> RouterError:
    relevant = [e for e in decision.excluded if e.kind != "policy"] or list(decision.excluded)
    reasons = "; ".join(f"{e.model}: {e.reason}" for e in relevant[:8])
    message = f"No model can serve this request for '{decision.requested}' (tier '{decision.tier}'). {reasons}"
    kinds = {e.kind for e in decision.excluded}
    if "request" in kinds and "unavailable" not in kinds:
        return InvalidRequest(message, param="messages", code="no_model_fits_request")
    return NoCandidate(message)
