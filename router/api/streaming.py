"""Relay an upstream chunk stream to the client as OpenAI server-sent events.

Every chunk gets the answering model's name. Usage is captured wherever it arrives; the
client sees exactly one usage chunk (``choices: []``) before ``[DONE]`` if it asked for
one, and none otherwise. A failure after the first chunk ends the stream with an in-band
error event and ``[DONE]``, never a clean-looking truncated 200.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from router.errors import error_body
from router.providers.base import ChunkStream, UpstreamError, Usage

log = logging.getLogger("router.stream")
DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def relay(
    first_chunk: dict[str, Any],
    stream: ChunkStream,
    model_name: str,
    client_wants_usage: bool,
    on_finish: Callable[[Usage | None, str], None],
) -> AsyncIterator[bytes]:
    usage: Usage | None = None
    last = first_chunk
    outcome = "success"
    try:
        chunk: dict[str, Any] | None = first_chunk
        iterator = aiter(stream)
        while chunk is not None:
            last = chunk
            usage = Usage.from_openai(chunk.get("usage")) or usage
            if chunk.get("choices"):
                chunk["model"] = model_name
                if client_wants_usage:
                    chunk["usage"] = None
                else:
                    chunk.pop("usage", None)
                yield sse(chunk)
            chunk = await anext(iterator, None)
        if client_wants_usage and usage is not None:
            yield sse(_usage_chunk(last, model_name, usage))
        yield DONE
    except UpstreamError as error:
        outcome = "stream_error"
        log.warning("upstream failed mid-stream", extra={"model": model_name, "reason": error.reason})
        yield sse(error_body(f"The upstream failed during the stream ({error.reason}); the answer is incomplete.", "upstream_error", None, error.reason))
        yield DONE
    finally:
        await stream.aclose()
        on_finish(usage, outcome)


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
