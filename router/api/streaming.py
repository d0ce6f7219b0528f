"""A ``Streaming`` answer as OpenAI server-sent events: formatting only.

Every chunk gets the answering model's name. The client sees exactly one usage chunk
(``choices: []``) before ``[DONE]`` if it asked for one (``stream_options.include_usage``),
and none otherwise. A stream that failed after its first chunk (``Streaming.failure``)
ends, after the chunks read before the failure, with an in-band error event and
``[DONE]``: never a clean-looking truncated 200. Timeouts, usage and the request's end
belong to the stream (``router.dispatch.Streaming``); ``SSEResponse`` only makes sure
it is closed, even if the response was never sent.

Another endpoint's stream reuses the same response either with a ``shape`` (one chat chunk
in, one chunk of its own out: legacy completions) or with a ``Relay`` (one chunk in, any
number of its own events out, plus its own tail on success or failure: the Responses API).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any, Protocol

import orjson
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from router.dispatch import Streaming
from router.errors import error_body
from router.types import ErrorReason

DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


Shape = Callable[[dict[str, Any]], dict[str, Any]]  # a chat chunk as another endpoint's chunk


class Relay(Protocol):
    """Turns one stream's chunks into another endpoint's framed events (data in, bytes out)."""

    def start(self) -> bytes:
        """The events sent before the first chunk's."""

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        """The events one chunk makes (none: ``b""``)."""

    async def end(self, stream: Streaming) -> bytes:
        """The tail once the chunks are read: a success's or, if ``stream.failure``, a failure's."""


class SSEResponse(StreamingResponse):
    """An event stream whose ``Streaming`` is always closed, even if it was never iterated.
    ``shape`` turns each chat chunk (the usage chunk too) into another endpoint's chunk;
    a ``relay`` replaces the chat framing altogether (``client_wants_usage`` is then unused)."""

    def __init__(
        self,
        stream: Streaming,
        headers: Mapping[str, str],
        client_wants_usage: bool,
        shape: Shape | None = None,
        relay: Relay | None = None,
    ) -> None:
        super().__init__(
            _events(stream, client_wants_usage, shape) if relay is None else _relayed(stream, relay),
            media_type="text/event-stream",
            headers={**SSE_HEADERS, **headers},
        )
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await stream_until_disconnect(self, receive, send)
        finally:
            await self.stream.aclose()


async def stream_until_disconnect(response: StreamingResponse, receive: Receive, send: Send) -> None:
    """Starlette's ``StreamingResponse`` behaviour for an ASGI 2.3 server (uvicorn): send the
    body until it ends or the client disconnects, whichever comes first. Starlette does it
    with an anyio task group and a second task per response; here one watcher task cancels
    the sending task, which measured ~10 % of a streamed request's instructions less."""
    sending = asyncio.current_task()
    assert sending is not None
    gone = sent = False

    async def watch() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        if not sent:  # uvicorn also says "disconnect" once the response is complete
            gone = True
            sending.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        await response.stream_response(send)
    except asyncio.CancelledError:
        if not gone or sending.uncancel() > 0:  # cancelled from outside too: not ours to swallow
            raise
    finally:
        sent = True
        watcher.cancel()


async def _events(stream: Streaming, client_wants_usage: bool, shape: Shape | None) -> AsyncGenerator[bytes, None]:
    model_name = stream.model.name
    last: dict[str, Any] = {}
    try:
        batch = stream.first_batch()
        while batch:
            last = batch[-1]
            payload = b"".join(
                p for chunk in batch if (p := _client_chunk(chunk, model_name, client_wants_usage, shape))
            )
            if payload:
                yield payload  # chunks that arrived together leave together: one write, not one per chunk
            batch = await stream.next_batch()
        if stream.failure is not None:
            yield _error_event(stream.failure) + DONE
            return
        if client_wants_usage:
            usage = _usage_chunk(last, model_name, stream.usage_object())
            yield sse(usage if shape is None else shape(usage))
        yield DONE
    finally:
        await stream.aclose()  # the request is finished before the response's last byte


async def _relayed(stream: Streaming, relay: Relay) -> AsyncGenerator[bytes, None]:
    try:
        payload = relay.start()
        batch = stream.first_batch()
        while batch:
            payload += b"".join(map(relay.chunk, batch))
            if payload:
                yield payload  # chunks that arrived together leave together
                payload = b""
            batch = await stream.next_batch()
        yield payload + await relay.end(stream)
    finally:
        await stream.aclose()


def stream_failure_message(reason: ErrorReason) -> tuple[str, str]:
    """A failure after the first chunk, for the client: its error type and message."""
    if reason == "internal_error":  # a chunk the router could not read: our failure
        return "server_error", "The router could not relay the rest of this stream; the answer is incomplete."
    return "upstream_error", f"The upstream failed during the stream ({reason}); the answer is incomplete."


def _error_event(reason: ErrorReason) -> bytes:
    error_type, message = stream_failure_message(reason)
    return sse(error_body(message, error_type, None, reason))


def _client_chunk(
    chunk: dict[str, Any], model_name: str, client_wants_usage: bool, shape: Shape | None
) -> bytes | None:
    if not chunk.get("choices"):
        return None  # the usage-only chunk: re-emitted once at the end if the client asked
    chunk["model"] = model_name
    if client_wants_usage:
        chunk["usage"] = None
    else:
        chunk.pop("usage", None)
    return sse(chunk if shape is None else shape(chunk))


def _usage_chunk(last: dict[str, Any], model_name: str, usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": last.get("id", ""),
        "object": "chat.completion.chunk",
        "created": last.get("created", 0),
        "model": model_name,
        "system_fingerprint": last.get("system_fingerprint"),
        "choices": [],
        "usage": usage,
    }
