"""Relay an upstream chunk stream to the client as OpenAI server-sent events.

Every chunk gets the answering model's name. Usage is captured wherever it arrives; the
client sees exactly one usage chunk (``choices: []``) before ``[DONE]`` if it asked for
one, and none otherwise. Chunks more than ``idle_s`` apart, a stream past ``total_s``
(counted from the start of the request), an upstream failure after the first chunk, or a
chunk the relay cannot read end the stream with an in-band error event and ``[DONE]``:
never a clean-looking truncated 200. Whatever happens, the client going away or the
response never being sent included, ``on_finish`` runs exactly once with the usage
(reported or estimated): ``RelayResponse`` closes its relay when it is done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from router.accounting import StreamTally
from router.errors import error_body
from router.logthrottle import LogThrottle
from router.policy.model import Timeouts
from router.providers.base import ChunkStream, UpstreamError, Usage

log = logging.getLogger("router.stream")
failure_log = LogThrottle(log)
DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
INTERNAL_ERROR = "internal_error"


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class Relay:
    """The client's side of one upstream stream, ended (closed upstream, ``on_finish``)
    exactly once: by the relay itself, or by ``aclose`` if it never got to run."""

    def __init__(
        self,
        first_chunks: list[dict[str, Any]],
        stream: ChunkStream,
        model_name: str,
        client_wants_usage: bool,
        timeouts: Timeouts,
        started: float,
        estimate_usage: Callable[[str], Usage],
        on_finish: Callable[[StreamTally], Awaitable[None]],
    ) -> None:
        self.stream = stream
        self.estimate_usage = estimate_usage
        self.on_finish = on_finish
        self.ended = False
        deadline = started + timeouts.total_s  # the total timeout counts from the start of the request
        self.chunks = self._relay(first_chunks, model_name, client_wants_usage, timeouts.idle_s, deadline)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.chunks

    async def aclose(self) -> None:
        await self.chunks.aclose()  # a suspended relay runs its own end
        if not self.ended:  # it never started: the client left before the response was sent
            tally = StreamTally()
            tally.outcome = "cancelled"
            await self._end(tally)

    async def _relay(
        self,
        first_chunks: list[dict[str, Any]],
        model_name: str,
        client_wants_usage: bool,
        idle_s: float,
        deadline: float,
    ) -> AsyncGenerator[bytes, None]:
        tally = StreamTally()
        stream = self.stream
        last: dict[str, Any] = first_chunks[-1] if first_chunks else {}
        try:
            iterator = aiter(stream)
            batch = list(first_chunks)
            while batch:
                last = batch[-1]
                payload = b"".join(
                    p for chunk in batch if (p := _client_chunk(chunk, model_name, client_wants_usage, tally))
                )
                if payload:
                    if tally.first_chunk_at is None:
                        tally.first_chunk_at = time.perf_counter()
                    yield payload  # chunks that arrived together leave together: one write, not one per chunk
                batch = await _next_batch(stream, iterator, idle_s, deadline, tally)
            if tally.usage is None:
                tally.usage, tally.estimated = self.estimate_usage("".join(tally.text)), True
            if client_wants_usage:
                yield sse(_usage_chunk(last, model_name, tally.usage))
            yield DONE
        except UpstreamError as error:
            tally.outcome, tally.error_reason = (
                ("timeout" if error.reason in ("idle_timeout", "timeout") else "stream_error"),
                error.reason,
            )
            failure_log.warning(
                "upstream failed mid-stream",
                key=(model_name, error.reason),
                extra={"model": model_name, "reason": error.reason},
            )
            message = f"The upstream failed during the stream ({error.reason}); the answer is incomplete."
            yield sse(error_body(message, "upstream_error", None, error.reason))
            yield DONE
        except (asyncio.CancelledError, GeneratorExit):
            tally.outcome = "cancelled"
            raise
        except Exception as unexpected:  # a chunk we cannot read: our failure, not the model's
            tally.outcome, tally.error_reason, tally.blames_model = "stream_error", INTERNAL_ERROR, False
            failure_log.warning(
                "unexpected error mid-stream",
                key=(model_name, type(unexpected).__name__),
                extra={"model": model_name, "error": type(unexpected).__name__},
            )
            message = "The router could not relay the rest of this stream; the answer is incomplete."
            yield sse(error_body(message, "server_error", None, INTERNAL_ERROR))
            yield DONE
        finally:
            await self._end(tally)

    async def _end(self, tally: StreamTally) -> None:
        if self.ended:
            return
        self.ended = True
        if tally.usage is None:
            tally.usage, tally.estimated = self.estimate_usage("".join(tally.text)), True
        await asyncio.shield(_close_and_finish(self.stream, tally, self.on_finish))


class RelayResponse(StreamingResponse):
    """An event stream whose relay is always ended, even if it was never iterated."""

    def __init__(self, relay: Relay, headers: Mapping[str, str]) -> None:
        super().__init__(relay, media_type="text/event-stream", headers={**SSE_HEADERS, **headers})
        self.relay = relay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.relay.aclose()


async def _close_and_finish(
    stream: ChunkStream, tally: StreamTally, on_finish: Callable[[StreamTally], Awaitable[None]]
) -> None:
    try:
        await stream.aclose()
    finally:
        await on_finish(tally)


async def _next_batch(
    stream: ChunkStream, iterator: AsyncIterator[dict[str, Any]], idle_s: float, deadline: float, tally: StreamTally
) -> list[dict[str, Any]]:
    """The next chunk, waited for, and every chunk already read behind it (empty at the end)."""
    chunk = await _next_chunk(iterator, idle_s, deadline, tally)
    batch = []
    buffered = getattr(stream, "buffered", None)
    while chunk is not None:
        batch.append(chunk)
        if buffered is None or not buffered():
            break
        chunk = await anext(iterator, None)
    return batch


async def _next_chunk(
    iterator: AsyncIterator[dict[str, Any]], idle_s: float, deadline: float, tally: StreamTally
) -> dict[str, Any] | None:
    remaining = deadline - time.perf_counter()
    limit = min(idle_s, remaining)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(max(limit, 0)):
            return await anext(iterator, None)
    except TimeoutError:
        reason = "idle_timeout" if idle_s < remaining else "timeout"
        raise UpstreamError(
            reason,
            "no chunk within the idle timeout" if reason == "idle_timeout" else "stream exceeded the total timeout",
        ) from None
    finally:
        tally.upstream_s += time.perf_counter() - started


def _client_chunk(chunk: dict[str, Any], model_name: str, client_wants_usage: bool, tally: StreamTally) -> bytes | None:
    usage = chunk.get("usage")
    if usage:
        tally.usage = Usage.from_openai(usage) or tally.usage
    choices = chunk.get("choices")
    if not choices:
        return None  # the usage-only chunk: re-emitted once at the end if the client asked
    for choice in choices:
        delta = choice.get("delta") or {}
        if delta.get("content"):
            tally.text.append(delta["content"])
        for call in delta.get("tool_calls") or ():
            arguments = (call.get("function") or {}).get("arguments")
            if arguments:
                tally.text.append(arguments)
    chunk["model"] = model_name
    if client_wants_usage:
        chunk["usage"] = None
    else:
        chunk.pop("usage", None)
    return sse(chunk)


def _usage_chunk(last: dict[str, Any], model_name: str, usage: Usage) -> dict[str, Any]:
    return {
        "id": last.get("id", ""),
        "object": "chat.completion.chunk",
        "created": last.get("created", 0),
        "model": model_name,
        "system_fingerprint": last.get("system_fingerprint"),
        "choices": [],
        "usage": usage.to_openai(),
    }
