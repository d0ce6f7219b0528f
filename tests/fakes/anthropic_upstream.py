"""A scriptable fake Anthropic upstream that speaks the Messages API wire format on a real socket.

Twin of :mod:`tests.fakes.openai_upstream`. Everything here mimics what
api.anthropic.com puts on the wire for ``POST /v1/messages``: the ``message``
JSON object, Anthropic-shaped errors (``{"type": "error", "error": {...}}``) and
the literal SSE framing with both ``event:`` and ``data:`` lines
(``message_start``, ``content_block_start``, ``ping``, ``content_block_delta``...,
``content_block_stop``, ``message_delta``, ``message_stop``).

Usage from a sync or async test::

    with FakeAnthropicUpstream() as upstream:
        upstream.script(Reply(text="hi"), ErrorReply(529), Hang(5))
        ...  # point litellm / the proxy at upstream.base_url (no /v1: litellm appends /v1/messages)
        assert upstream.requests[0].headers["x-api-key"] == "sk-ant-test"

The server runs in a daemon thread with its own event loop (see
:class:`tests.fakes.threaded_server.ThreadedAiohttpServer`), so it works no
matter which loop (if any) the test runs in.

Standalone::

    python -m tests.fakes.anthropic_upstream --port 8002
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import re
import sys
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .threaded_server import RecordedRequest, ThreadedAiohttpServer
from .threaded_server import RequestContext as _Ctx

__all__ = [
    "DEFAULT_TOOL_INPUT",
    "ERROR_TYPES",
    "AnthropicBehaviour",
    "ErrorReply",
    "FakeAnthropicUpstream",
    "Hang",
    "RawReply",
    "RecordedRequest",
    "Reply",
    "StreamError",
    "StreamThenReset",
    "anthropic_error",
    "main",
    "serve_forever",
]

DEFAULT_TOOL_INPUT: dict[str, Any] = {"city": "Paris"}
DEFAULT_MODEL = "claude-haiku-4-5"
MESSAGES_PATH = "/v1/messages"

# (input_tokens, output_tokens), (input, output, cache_read_input_tokens),
# (input, output, cache_read, cache_creation_input_tokens), or a complete Anthropic
# ``usage`` dict that is sent verbatim.
UsageSpec = tuple[int, int] | tuple[int, int, int] | tuple[int, int, int, int] | dict

# HTTP status -> (Anthropic error type, default message), per Anthropic's "Errors" docs.
ERROR_TYPES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: (
        "rate_limit_error",
        "This request would exceed the rate limit for your organization of 50 requests per minute. "
        "For details, refer to: https://docs.claude.com/en/api/rate-limits.",
    ),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}


def anthropic_error(message: str, type: str = "invalid_request_error") -> dict:
    """An Anthropic-shaped error body: ``{"type": "error", "error": {"type", "message"}}``."""
    return {"type": "error", "error": {"type": type, "message": message}}


def _default_error_body(status: int) -> dict:
    type_, message = ERROR_TYPES.get(
        status, ("api_error" if status >= 500 else "invalid_request_error", f"Error {status}")
    )
    return anthropic_error(message, type_)


# --------------------------------------------------------------------------- behaviours


@dataclass
class Reply:
    """A normal reply, with overrides.

    ``text``: assistant text (default ``f"Hello from {model}."``).
    ``usage``: (input, output[, cache_read[, cache_creation]]) or a full usage dict.
    ``tool_input``: the ``input`` of a tool_use block, a dict (or a raw JSON string, streamed as-is);
    default ``{"city": "Paris"}``.
    ``delay_s``: wait before sending headers. ``chunk_delay_s``: wait before each SSE event.
    ``stop_reason``: override ("max_tokens", "stop_sequence", "refusal", ...).
    ``tool_use``: None = tool_use block iff the request has tools and tool_choice isn't
    ``{"type": "none"}``; True = always (name "get_weather" if there are no tools); False = never.
    ``status`` / ``headers``: HTTP status and extra response headers.
    """

    text: str | None = None
    usage: UsageSpec | None = None
    tool_input: dict | str | None = None
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    stop_reason: str | None = None
    tool_use: bool | None = None
    status: int = 200
    headers: dict[str, str] | None = None


@dataclass
class ErrorReply:
    """An HTTP error. ``body`` may be a dict (JSON-encoded), str or bytes; None = Anthropic-shaped
    default whose ``error.type`` follows the status (529 overloaded_error, 429 rate_limit_error,
    400 invalid_request_error, 401 authentication_error, 500 api_error, ...)."""

    status: int
    body: bytes | str | dict | None = None
    headers: dict[str, str] | None = None
    content_type: str = "application/json"


@dataclass
class StreamError:
    """Stream normally for ``after_deltas`` content_block_delta events, then send an SSE
    ``event: error`` (Anthropic-shaped body) and end the response, as Anthropic does when it
    overloads mid-stream. A non-streaming request gets the same error as an HTTP error whose
    status matches ``error_type`` (529 for overloaded_error)."""

    after_deltas: int = 2
    error_type: str = "overloaded_error"
    message: str = "Overloaded"
    text: str | None = None
    chunk_delay_s: float = 0.0


@dataclass
class Hang:
    """Accept the request and send nothing for ``seconds``; then drop the connection without a response."""

    seconds: float = 60.0


@dataclass
class StreamThenReset:
    """Send message_start, content_block_start, ping and ``after_deltas`` content_block_delta events,
    then abort the TCP connection.

    ``rst=True`` sends a real TCP RST (SO_LINGER 0); False closes with a FIN mid-body.
    For a non-streaming request, headers (with the full Content-Length) and half of the
    JSON body are sent before the abort.
    """

    after_deltas: int = 2
    text: str | None = None
    chunk_delay_s: float = 0.0
    rst: bool = True


@dataclass
class RawReply:
    """Arbitrary bytes with the given status and Content-Type."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] | None = None


AnthropicBehaviour = Reply | ErrorReply | StreamError | Hang | StreamThenReset | RawReply
Behaviour = AnthropicBehaviour


# --------------------------------------------------------------------------- helpers


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def _usage_dict(spec: UsageSpec) -> dict:
    if isinstance(spec, dict):
        return dict(spec)
    input_tokens, output_tokens, *rest = spec
    cache_read = rest[0] if len(rest) > 0 else 0
    cache_creation = rest[1] if len(rest) > 1 else 0
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": cache_creation,
        "cache_read_input_tokens": cache_read,
    }


def _split_words(text: str) -> list[str]:
    """Split into word pieces (leading whitespace kept) whose concatenation is exactly ``text``."""
    pieces = re.findall(r"\s*\S+", text)
    rest = text[len("".join(pieces)) :]
    if rest:
        pieces.append(rest)
    return pieces or [""]


def _split_json(partial: str, parts: int = 4) -> list[str]:
    """Fragments whose concatenation is ``partial``: an initial empty one (as Anthropic sends) + ~parts."""
    size = max(1, -(-len(partial) // parts))
    return [""] + [partial[i : i + size] for i in range(0, len(partial), size)]


def _pick_tool(body: dict) -> str | None:
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    if not tools or (isinstance(choice, dict) and choice.get("type") == "none"):
        return None
    if isinstance(choice, dict) and choice.get("type") == "tool" and choice.get("name"):
        return str(choice["name"])
    for tool in tools:
        if isinstance(tool, dict) and tool.get("name"):
            return str(tool["name"])
    return None


def _status_for_error_type(error_type: str) -> int:
    for status, (type_, _) in ERROR_TYPES.items():
        if type_ == error_type:
            return status
    return 500


def _sse(event: str, data: dict) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + _dumps(data) + b"\n\n"


# --------------------------------------------------------------------------- the server


class FakeAnthropicUpstream(ThreadedAiohttpServer):
    """Scriptable fake Anthropic Messages API on 127.0.0.1 (OS-assigned port by default).

    ``base_url`` has no ``/v1`` (litellm's ``api_base`` for ``anthropic/...`` models; it posts
    to ``{api_base}/v1/messages``).

    ``usage``: default usage of every reply. ``tool_input``: default tool_use input.
    ``require_auth``: answer 401 authentication_error if ``x-api-key`` is missing (and, if
    ``api_key`` is set, if it differs); 400 if ``anthropic-version`` is missing - like the real API.

    Thread-safe observation API: ``requests``, ``last_request``, ``disconnects``,
    ``disconnect_times``, ``wait_for_requests``/``wait_for_disconnects`` (blocking) and their
    ``await_*`` twins.
    """

    thread_name = "fake-anthropic-upstream"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        usage: UsageSpec = (20, 5, 0, 0),
        tool_input: dict | str | None = None,
        chunk_delay_s: float = 0.0,
        require_auth: bool = True,
        api_key: str | None = None,
    ) -> None:
        super().__init__(host=host, port=port)
        self.usage = usage
        self.tool_input = tool_input if tool_input is not None else dict(DEFAULT_TOOL_INPUT)
        self.chunk_delay_s = chunk_delay_s
        self.require_auth = require_auth
        self.api_key = api_key

        self._script: collections.deque[AnthropicBehaviour] = collections.deque()
        self._ids = itertools.count(1)

    # ----------------------------------------------------------------- app

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def messages_url(self) -> str:
        return self.base_url + MESSAGES_PATH

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(MESSAGES_PATH, self._handle_messages)
        app.router.add_route("*", "/{tail:.*}", self._handle_unknown)
        return app

    # ----------------------------------------------------------------- scripting / observation

    def script(self, *replies: AnthropicBehaviour) -> None:
        """Enqueue behaviours, consumed one per /v1/messages request in order (then default behaviour)."""
        with self._cond:
            self._script.extend(replies)

    @property
    def pending_scripts(self) -> int:
        with self._cond:
            return len(self._script)

    def _clear_scripts(self) -> None:  # reset() calls this with self._cond held
        self._script.clear()

    @property
    def messages_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == MESSAGES_PATH]

    # ----------------------------------------------------------------- internals

    def _next_behaviour(self) -> AnthropicBehaviour | None:
        with self._cond:
            return self._script.popleft() if self._script else None

    @staticmethod
    def _base_headers(extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {
            "request-id": f"req_fake{uuid.uuid4().hex[:24]}",
            "anthropic-organization-id": "00000000-0000-0000-0000-000000000000",
        }
        if extra:
            headers.update(extra)
        return headers

    def _json_response(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> web.Response:
        hdrs = self._base_headers(headers)
        hdrs["Content-Type"] = "application/json"
        return web.Response(status=status, body=_dumps(obj), headers=hdrs)

    def _error_response(self, status: int, message: str | None = None, type_: str | None = None) -> web.Response:
        body = _default_error_body(status)
        if message is not None:
            body["error"]["message"] = message
        if type_ is not None:
            body["error"]["type"] = type_
        return self._json_response(status, body)

    async def _generic(self, ctx: _Ctx, behaviour: AnthropicBehaviour) -> web.StreamResponse | None:
        """Behaviours that don't depend on the request body; None otherwise."""
        if isinstance(behaviour, ErrorReply):
            body = behaviour.body
            if body is None:
                body = _default_error_body(behaviour.status)
            data = _dumps(body) if isinstance(body, (dict, list)) else body.encode() if isinstance(body, str) else body
            hdrs = self._base_headers(behaviour.headers)
            hdrs["Content-Type"] = behaviour.content_type
            return web.Response(status=behaviour.status, body=data, headers=hdrs)
        if isinstance(behaviour, RawReply):
            hdrs = dict(behaviour.headers or {})
            hdrs["Content-Type"] = behaviour.content_type
            return web.Response(status=behaviour.status, body=behaviour.body, headers=hdrs)
        if isinstance(behaviour, Hang):
            await self._sleep(ctx, behaviour.seconds)
            return await self._drop(ctx)  # time is up (or shutting down): close without a response
        return None

    def _validate(self, rec: RecordedRequest) -> web.Response | None:
        """The checks api.anthropic.com makes before it looks at the script."""
        if self.require_auth:
            key = rec.headers.get("x-api-key")
            bearer = rec.headers.get("authorization", "")
            if not key and not bearer.lower().startswith("bearer "):
                return self._error_response(401, "x-api-key header is required")
            if self.api_key is not None and key != self.api_key and bearer[7:] != self.api_key:
                return self._error_response(401, "invalid x-api-key")
            if not rec.headers.get("anthropic-version"):
                return self._error_response(400, "anthropic-version: header is required")
        body = rec.json
        if not isinstance(body, dict):
            return self._error_response(400, "There was an issue with your request body: invalid JSON")
        for name in ("model", "max_tokens", "messages"):
            if name not in body:
                return self._error_response(400, f"{name}: Field required")
        return None

    # ----------------------------------------------------------------- handlers

    async def _handle_unknown(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        return self._error_response(404, "Not Found", "not_found_error")

    async def _handle_messages(self, request: web.Request) -> web.StreamResponse:
        ctx = _Ctx(request)
        rec = await self._record(request)
        try:
            invalid = self._validate(rec)
            if invalid is not None:
                return invalid
            behaviour = self._next_behaviour()
            generic = await self._generic(ctx, behaviour) if behaviour is not None else None
            if generic is not None:
                return generic
            body: dict = rec.json
            stream = bool(body.get("stream"))
            if isinstance(behaviour, StreamThenReset):
                return await self._messages_reset(ctx, body, behaviour)
            if isinstance(behaviour, StreamError):
                if not stream:
                    return self._error_response(
                        _status_for_error_type(behaviour.error_type), behaviour.message, behaviour.error_type
                    )
                return await self._messages_stream(
                    ctx, body, Reply(text=behaviour.text, chunk_delay_s=behaviour.chunk_delay_s), error=behaviour
                )
            reply = behaviour if isinstance(behaviour, Reply) else Reply()
            if reply.delay_s and not await self._sleep(ctx, reply.delay_s):
                return await self._drop(ctx)
            if stream:
                return await self._messages_stream(ctx, body, reply)
            return self._json_response(reply.status, self._message(body, reply), reply.headers)
        except asyncio.CancelledError:
            self._note_disconnect(ctx)
            raise

    # ----------------------------------------------------------------- message payloads

    def _plan(self, body: dict, reply: Reply) -> dict:
        model = str(body.get("model") or DEFAULT_MODEL)
        tool = None if reply.tool_use is False else _pick_tool(body)
        if tool is None and reply.tool_use is True:
            tool = "get_weather"
        tool_input = reply.tool_input if reply.tool_input is not None else self.tool_input
        if isinstance(tool_input, str):
            partial_json, input_obj = tool_input, json.loads(tool_input)
        else:
            partial_json, input_obj = json.dumps(tool_input), tool_input
        return {
            "id": f"msg_fake{next(self._ids):06d}{uuid.uuid4().hex[:16]}",
            "model": model,
            "tool": tool,
            "tool_id": f"toolu_fake{uuid.uuid4().hex[:20]}",
            "input": input_obj,
            "partial_json": partial_json,
            "text": reply.text if reply.text is not None else f"Hello from {model}.",
            "stop_reason": reply.stop_reason or ("tool_use" if tool else "end_turn"),
            "usage": _usage_dict(reply.usage if reply.usage is not None else self.usage),
        }

    def _message(self, body: dict, reply: Reply) -> dict:
        plan = self._plan(body, reply)
        if plan["tool"]:
            content = [{"type": "tool_use", "id": plan["tool_id"], "name": plan["tool"], "input": plan["input"]}]
        else:
            content = [{"type": "text", "text": plan["text"]}]
        return {
            "id": plan["id"],
            "type": "message",
            "role": "assistant",
            "model": plan["model"],
            "content": content,
            "stop_reason": plan["stop_reason"],
            "stop_sequence": None,
            "usage": plan["usage"],
        }

    @staticmethod
    def _stream_events(plan: dict) -> tuple[list[bytes], list[bytes], list[bytes]]:
        """(head, deltas, tail): message_start..ping, the content_block_delta events, and
        content_block_stop..message_stop."""
        start_usage = dict(plan["usage"])
        start_usage["output_tokens"] = 1
        head = [
            _sse(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": plan["id"],
                        "type": "message",
                        "role": "assistant",
                        "model": plan["model"],
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": start_usage,
                    },
                },
            )
        ]
        if plan["tool"]:
            block: dict[str, Any] = {"type": "tool_use", "id": plan["tool_id"], "name": plan["tool"], "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": frag} for frag in _split_json(plan["partial_json"])]
        else:
            block = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": piece} for piece in _split_words(plan["text"])]
        head.append(_sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}))
        head.append(_sse("ping", {"type": "ping"}))
        delta_events = [
            _sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": d}) for d in deltas
        ]
        tail = [
            _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
            _sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": plan["stop_reason"], "stop_sequence": None},
                    "usage": {"output_tokens": plan["usage"].get("output_tokens", 0)},
                },
            ),
            _sse("message_stop", {"type": "message_stop"}),
        ]
        return head, delta_events, tail

    async def _prepare_sse(self, request: web.Request, status: int, extra: dict[str, str] | None) -> web.StreamResponse:
        hdrs = self._base_headers(extra)
        hdrs["Content-Type"] = "text/event-stream"
        hdrs["Cache-Control"] = "no-cache"
        resp = web.StreamResponse(status=status, headers=hdrs)
        await resp.prepare(request)
        return resp

    async def _send_frames(self, ctx: _Ctx, resp: web.StreamResponse, frames: list[bytes], delay: float) -> bool:
        for frame in frames:
            if delay and not await self._sleep(ctx, delay):
                return False
            if not await self._write(ctx, resp, frame):
                return False
        return True

    async def _messages_stream(
        self, ctx: _Ctx, body: dict, reply: Reply, error: StreamError | None = None
    ) -> web.StreamResponse:
        plan = self._plan(body, reply)
        head, deltas, tail = self._stream_events(plan)
        if error is not None:
            frames = head + deltas[: max(0, error.after_deltas)]
            frames.append(_sse("error", anthropic_error(error.message, error.error_type)))
        else:
            frames = head + deltas + tail
        resp = await self._prepare_sse(ctx.request, reply.status, reply.headers)
        if not await self._send_frames(ctx, resp, frames, reply.chunk_delay_s or self.chunk_delay_s):
            return resp
        try:
            await resp.write_eof()
        except (ConnectionError, OSError):
            self._note_disconnect(ctx)
        return resp

    async def _messages_reset(self, ctx: _Ctx, body: dict, behaviour: StreamThenReset) -> web.StreamResponse:
        reply = Reply(text=behaviour.text)
        if not body.get("stream"):
            data = _dumps(self._message(body, reply))
            hdrs = self._base_headers()
            hdrs["Content-Type"] = "application/json"
            resp = web.StreamResponse(status=200, headers=hdrs)
            resp.content_length = len(data)
            await resp.prepare(ctx.request)
            await self._write(ctx, resp, data[: len(data) // 2])
            await self._abort(ctx, behaviour.rst)
            return resp
        head, deltas, _ = self._stream_events(self._plan(body, reply))
        frames = head + deltas[: max(0, behaviour.after_deltas)]
        resp = await self._prepare_sse(ctx.request, 200, None)
        if await self._send_frames(ctx, resp, frames, behaviour.chunk_delay_s or self.chunk_delay_s):
            await self._abort(ctx, behaviour.rst)
        return resp


# --------------------------------------------------------------------------- standalone


async def serve_forever(
    port: int = 8002,
    host: str = "127.0.0.1",
    *,
    upstream: FakeAnthropicUpstream | None = None,
) -> None:
    """Serve the fake in the *current* event loop until cancelled."""
    up = upstream or FakeAnthropicUpstream(host=host, port=port)
    up.host = host
    up._stopping = False
    runner = await up._start_runner(port)
    print(f"fake Anthropic upstream listening on {up.base_url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        up._stopping = True
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.anthropic_upstream", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002, help="0 = OS-assigned")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between SSE events")
    parser.add_argument(
        "--usage",
        default="20,5,0,0",
        help="input,output[,cache_read[,cache_creation]] token counts reported in usage",
    )
    args = parser.parse_args(argv)
    usage = tuple(int(x) for x in args.usage.split(","))
    if len(usage) not in (2, 3, 4):
        parser.error("--usage takes 2 to 4 comma-separated integers")
    upstream = FakeAnthropicUpstream(host=args.host, port=args.port, usage=usage, chunk_delay_s=args.chunk_delay)  # type: ignore[arg-type]
    try:
        asyncio.run(serve_forever(args.port, args.host, upstream=upstream))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
