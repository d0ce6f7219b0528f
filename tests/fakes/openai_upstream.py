"""A scriptable fake OpenAI upstream that speaks OpenAI's wire format on a real socket.

The proxy under test forwards requests to it, so everything here mimics what
api.openai.com actually puts on the wire: the JSON shapes of ``chat.completion``,
``chat.completion.chunk``, embeddings and models, and the literal
``data: <json>\\n\\n`` SSE framing terminated by ``data: [DONE]\\n\\n``.

Usage from a sync or async test::

    with FakeOpenAIUpstream() as upstream:
        upstream.script(Reply(content="hi"), ErrorReply(429), Hang(5))
        ...  # point the proxy at upstream.base_url
        assert upstream.requests[0].json["model"] == "gpt-4o-mini"

The server runs in a daemon thread with its own event loop (see
:class:`tests.fakes.threaded_server.ThreadedAiohttpServer`), so it works no
matter which loop (if any) the test runs in.

Standalone::

    python -m tests.fakes.openai_upstream --port 8001
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import hashlib
import itertools
import re
import struct
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .threaded_server import RecordedRequest, ThreadedAiohttpServer
from .threaded_server import RequestContext as _Ctx

__all__ = [
    "DEFAULT_MODELS",
    "DEFAULT_TOOL_ARGUMENTS",
    "Behaviour",
    "EchoHeaderError",
    "ErrorReply",
    "FakeOpenAIUpstream",
    "Hang",
    "RawReply",
    "RecordedRequest",
    "Reply",
    "StreamThenReset",
    "StreamWithoutDone",
    "StreamWithoutUsage",
    "main",
    "openai_error",
    "serve_forever",
]

DEFAULT_TOOL_ARGUMENTS = '{"city": "Paris"}'
DEFAULT_MODELS: tuple[str, ...] = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-nano", "text-embedding-3-small")
SYSTEM_FINGERPRINT = "fp_fake"
_MODEL_CREATED = 1_700_000_000

# (prompt_tokens, completion_tokens) or (prompt_tokens, completion_tokens, cached_tokens),
# or a complete OpenAI ``usage`` dict that is sent verbatim.
UsageSpec = tuple[int, int] | tuple[int, int, int] | dict


# --------------------------------------------------------------------------- behaviours


@dataclass
class Reply:
    """A normal (successful-shaped) reply, with overrides.

    ``content``: assistant text (default ``f"Hello from {model}."``).
    ``usage``: (prompt, completion[, cached]) or a full usage dict.
    ``tool_arguments``: arguments string for a tool call (default ``'{"city": "Paris"}'``).
    ``status``: HTTP status of the reply.
    ``delay_s``: wait before sending headers. ``chunk_delay_s``: wait before each SSE chunk.
    ``finish_reason``: override ("length", "content_filter", ...).
    ``tool_call``: None = tool call iff the request has tools and tool_choice != "none";
    True = always a tool call; False = never.
    ``headers``: extra response headers.
    ``send_done`` / ``send_usage``: wire-shape knobs (see StreamWithoutDone / StreamWithoutUsage).
    """

    content: str | None = None
    usage: UsageSpec | None = None
    tool_arguments: str | None = None
    status: int = 200
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    finish_reason: str | None = None
    tool_call: bool | None = None
    headers: dict[str, str] | None = None
    send_done: bool = True
    send_usage: bool = True


@dataclass
class StreamWithoutDone(Reply):
    """Streams normally (incl. finish chunk / usage chunk) but ends the body without ``data: [DONE]``."""

    send_done: bool = False


@dataclass
class StreamWithoutUsage(Reply):
    """Streams while ignoring ``stream_options.include_usage``: no usage chunk, no ``"usage": null``."""

    send_usage: bool = False


@dataclass
class ErrorReply:
    """An error response. ``body`` may be a dict (JSON-encoded), str or bytes; None = OpenAI-shaped default."""

    status: int
    body: bytes | str | dict | None = None
    content_type: str = "application/json"
    headers: dict[str, str] | None = None


@dataclass
class Hang:
    """Accept the request and send nothing for ``seconds``; then drop the connection without a response."""

    seconds: float = 60.0


@dataclass
class StreamThenReset:
    """Send the role chunk plus ``chunks_before_reset`` content chunks, then abort the TCP connection.

    ``rst=True`` sends a real TCP RST (SO_LINGER 0); False closes with a FIN mid-body.
    For a non-streaming request, headers (with the full Content-Length) and half of the
    JSON body are sent before the abort.
    """

    chunks_before_reset: int = 2
    content: str | None = None
    chunk_delay_s: float = 0.0
    rst: bool = True


@dataclass
class RawReply:
    """Arbitrary bytes with the given status and Content-Type (truncated JSON, SSE to a non-stream call, ...)."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] | None = None


@dataclass
class EchoHeaderError:
    """An OpenAI-shaped error whose message quotes a request header, as some servers do
    (``Invalid authorization header: Bearer sk-…``)."""

    status: int = 400
    header: str = "authorization"


Behaviour = Reply | ErrorReply | Hang | StreamThenReset | RawReply | EchoHeaderError

_ERROR_DEFAULTS: dict[int, tuple[str, str, str | None]] = {
    400: ("invalid_request_error", "Invalid request.", None),
    401: (
        "invalid_request_error",
        "Incorrect API key provided: x. You can find your API key at https://platform.openai.com/account/api-keys.",
        "invalid_api_key",
    ),
    403: ("invalid_request_error", "You are not allowed to sample from this model.", None),
    404: ("invalid_request_error", "The model does not exist or you do not have access to it.", "model_not_found"),
    429: ("rate_limit_exceeded", "Rate limit reached. Please try again in 1s.", "rate_limit_exceeded"),
    500: ("server_error", "The server had an error while processing your request. Sorry about that!", None),
    503: ("server_error", "The engine is currently overloaded, please try again later.", None),
}


def openai_error(
    message: str,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict:
    """An OpenAI-shaped error body: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _default_error_body(status: int) -> dict:
    type_, message, code = _ERROR_DEFAULTS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", f"Error {status}", None)
    )
    return openai_error(message, type_, None, code)


# --------------------------------------------------------------------------- helpers


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def _usage_dict(spec: UsageSpec) -> dict:
    if isinstance(spec, dict):
        return spec
    prompt, completion, *rest = spec
    cached = rest[0] if rest else 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _split_words(text: str) -> list[str]:
    """Split into word pieces (leading whitespace kept) whose concatenation is exactly ``text``."""
    pieces = re.findall(r"\s*\S+", text)
    rest = text[len("".join(pieces)) :]
    if rest:
        pieces.append(rest)
    return pieces


def _split_arguments(arguments: str, parts: int = 4) -> list[str]:
    """At least 3 fragments (possibly empty) whose concatenation is ``arguments``."""
    size = max(1, -(-len(arguments) // parts))
    frags = [arguments[i : i + size] for i in range(0, len(arguments), size)]
    while len(frags) < 3:
        frags.append("")
    return frags


def _tool_name(tool: Any) -> str | None:
    if not isinstance(tool, dict):
        return None
    for key in ("function", "custom"):
        sub = tool.get(key)
        if isinstance(sub, dict) and sub.get("name"):
            return str(sub["name"])
    name = tool.get("name")
    return str(name) if name else None


def _pick_tool(body: dict) -> str | None:
    tools = body.get("tools") or []
    choice = body.get("tool_choice", "auto")
    if not tools or choice == "none":
        return None
    if isinstance(choice, dict):
        named = _tool_name(choice)
        if named:
            return named
    for tool in tools:
        name = _tool_name(tool)
        if name:
            return name
    return None


def _embedding_for(item: Any, dims: int) -> list[float]:
    digest = hashlib.sha256(_dumps(item)).digest()
    while len(digest) < dims:
        digest += hashlib.sha256(digest).digest()
    vec = [(b / 127.5) - 1.0 for b in digest[:dims]]
    norm = sum(v * v for v in vec) ** 0.5 or 1.0
    # round-trip through float32 so base64 and float encodings agree exactly
    return list(struct.unpack(f"<{dims}f", struct.pack(f"<{dims}f", *(v / norm for v in vec))))


def _token_count(item: Any) -> int:
    if isinstance(item, str):
        return max(1, len(item.split()))
    if isinstance(item, list):
        return max(1, len(item))
    return 1


# --------------------------------------------------------------------------- the server


class FakeOpenAIUpstream(ThreadedAiohttpServer):
    """Scriptable fake OpenAI server on 127.0.0.1 (OS-assigned port by default).

    Thread-safe observation API: ``requests``, ``disconnects``, ``disconnect_times``,
    ``wait_for_requests``/``wait_for_disconnects`` (blocking) and their ``await_*`` twins.
    """

    thread_name = "fake-openai-upstream"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        usage: UsageSpec = (20, 5, 0),
        chunk_delay_s: float = 0.0,
        models: Iterable[str] = DEFAULT_MODELS,
        embedding_dims: int = 8,
        request_id_must_be_uuid: bool = False,
    ) -> None:
        """``request_id_must_be_uuid``: answer an empty 400 to any ``x-request-id`` that is
        not a UUID, before routing, as llama-cpp-python's server does (starlette-context's
        ``RequestIdPlugin`` with its default ``validate=True``)."""
        super().__init__(host=host, port=port)
        self.request_id_must_be_uuid = request_id_must_be_uuid
        self.usage = usage
        self.chunk_delay_s = chunk_delay_s
        self.models = tuple(models)
        self.embedding_dims = embedding_dims

        self._chat_script: collections.deque[Behaviour] = collections.deque()
        self._embeddings_script: collections.deque[Behaviour] = collections.deque()
        self._ids = itertools.count(1)

    # ----------------------------------------------------------------- app

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def build_app(self) -> web.Application:
        middlewares = [self._uuid_request_id] if self.request_id_must_be_uuid else []
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=middlewares)
        app.router.add_post("/v1/chat/completions", self._handle_chat)
        app.router.add_post("/v1/embeddings", self._handle_embeddings)
        app.router.add_get("/v1/models", self._handle_models)
        app.router.add_get("/v1/models/{model}", self._handle_model)
        app.router.add_route("*", "/{tail:.*}", self._handle_unknown)
        return app

    @web.middleware
    async def _uuid_request_id(self, request: web.Request, handler: Any) -> web.StreamResponse:
        value = request.headers.get("x-request-id")
        if value is not None:
            try:
                uuid.UUID(value, version=4)
            except ValueError:
                await self._record(request)
                return web.Response(status=400)  # empty body, as starlette-context answers
        return await handler(request)

    # ----------------------------------------------------------------- scripting / observation

    def script(self, *replies: Behaviour) -> None:
        """Enqueue behaviours, consumed one per chat request in order (then default behaviour)."""
        with self._cond:
            self._chat_script.extend(replies)

    def script_embeddings(self, *replies: Behaviour) -> None:
        """Same as script() for /v1/embeddings (Reply uses only status/delay_s/usage/headers)."""
        with self._cond:
            self._embeddings_script.extend(replies)

    @property
    def pending_scripts(self) -> int:
        with self._cond:
            return len(self._chat_script) + len(self._embeddings_script)

    def _clear_scripts(self) -> None:  # reset() calls this with self._cond held
        self._chat_script.clear()
        self._embeddings_script.clear()

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == "/v1/chat/completions"]

    # ----------------------------------------------------------------- internals

    def _next_behaviour(self, queue: collections.deque) -> Behaviour | None:
        with self._cond:
            return queue.popleft() if queue else None

    def _base_headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {
            "x-request-id": f"req_fake{uuid.uuid4().hex[:24]}",
            "openai-processing-ms": "1",
            "openai-version": "2020-10-01",
        }
        if extra:
            headers.update(extra)
        return headers

    def _json_response(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> web.Response:
        hdrs = self._base_headers(headers)
        hdrs["Content-Type"] = "application/json"
        return web.Response(status=status, body=_dumps(obj), headers=hdrs)

    async def _generic(self, ctx: _Ctx, behaviour: Behaviour) -> web.StreamResponse | None:
        """Endpoint-independent behaviours; None if ``behaviour`` is endpoint-specific."""
        if isinstance(behaviour, ErrorReply):
            body = behaviour.body
            if body is None:
                body = _default_error_body(behaviour.status)
            data = _dumps(body) if isinstance(body, (dict, list)) else body.encode() if isinstance(body, str) else body
            hdrs = self._base_headers(behaviour.headers)
            hdrs["Content-Type"] = behaviour.content_type
            return web.Response(status=behaviour.status, body=data, headers=hdrs)
        if isinstance(behaviour, EchoHeaderError):
            quoted = ctx.request.headers.get(behaviour.header, "")
            body = openai_error(f"Invalid value for header '{behaviour.header}': {quoted}")
            return self._json_response(behaviour.status, body)
        if isinstance(behaviour, RawReply):
            hdrs = dict(behaviour.headers or {})
            hdrs["Content-Type"] = behaviour.content_type
            return web.Response(status=behaviour.status, body=behaviour.body, headers=hdrs)
        if isinstance(behaviour, Hang):
            await self._sleep(ctx, behaviour.seconds)
            return await self._drop(ctx)  # time is up (or shutting down): close without a response
        return None

    # ----------------------------------------------------------------- handlers

    async def _handle_unknown(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        return self._json_response(404, openai_error(f"Invalid URL ({request.method} {request.path})"), None)

    async def _handle_models(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        data = [{"id": m, "object": "model", "created": _MODEL_CREATED, "owned_by": "openai"} for m in self.models]
        return self._json_response(200, {"object": "list", "data": data})

    async def _handle_model(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        model = request.match_info["model"]
        if model not in self.models:
            return self._json_response(
                404,
                openai_error(f"The model '{model}' does not exist", code="model_not_found", param="model"),
            )
        return self._json_response(
            200, {"id": model, "object": "model", "created": _MODEL_CREATED, "owned_by": "openai"}
        )

    async def _handle_embeddings(self, request: web.Request) -> web.StreamResponse:
        ctx = _Ctx(request)
        rec = await self._record(request)
        behaviour = self._next_behaviour(self._embeddings_script)
        generic = await self._generic(ctx, behaviour) if behaviour is not None else None
        if generic is not None:
            return generic
        reply = behaviour if isinstance(behaviour, Reply) else Reply()
        body = rec.json
        if not isinstance(body, dict) or "input" not in body:
            return self._json_response(400, openai_error("'input' is a required property", param="input"))
        if reply.delay_s and not await self._sleep(ctx, reply.delay_s):
            return await self._drop(ctx)
        raw_input = body["input"]
        if isinstance(raw_input, str) or (isinstance(raw_input, list) and raw_input and isinstance(raw_input[0], int)):
            items = [raw_input]
        elif isinstance(raw_input, list):
            items = list(raw_input)
        else:
            items = [raw_input]
        dims = int(body.get("dimensions") or self.embedding_dims)
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, item in enumerate(items):
            vec = _embedding_for(item, dims)
            emb: Any = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode() if as_base64 else vec
            data.append({"object": "embedding", "index": index, "embedding": emb})
        if reply.usage is not None:
            usage = (
                reply.usage
                if isinstance(reply.usage, dict)
                else {"prompt_tokens": reply.usage[0], "total_tokens": reply.usage[0]}
            )
        else:
            tokens = sum(_token_count(i) for i in items)
            usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        payload = {
            "object": "list",
            "data": data,
            "model": body.get("model") or "text-embedding-3-small",
            "usage": usage,
        }
        return self._json_response(reply.status, payload, reply.headers)

    async def _handle_chat(self, request: web.Request) -> web.StreamResponse:
        ctx = _Ctx(request)
        rec = await self._record(request)
        behaviour = self._next_behaviour(self._chat_script)
        try:
            generic = await self._generic(ctx, behaviour) if behaviour is not None else None
            if generic is not None:
                return generic
            body = rec.json
            if not isinstance(body, dict):
                return self._json_response(
                    400,
                    openai_error(
                        "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
                        "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
                        "sent was not valid JSON. If you have trouble figuring out how to fix this, please "
                        "contact us through our help center at help.openai.com.)"
                    ),
                )
            if isinstance(behaviour, StreamThenReset):
                return await self._chat_reset(ctx, body, behaviour)
            reply = behaviour if isinstance(behaviour, Reply) else Reply()
            if reply.delay_s and not await self._sleep(ctx, reply.delay_s):
                return await self._drop(ctx)
            if body.get("stream"):
                return await self._chat_stream(ctx, body, reply)
            return self._json_response(reply.status, self._completion(body, reply), reply.headers)
        except asyncio.CancelledError:
            self._note_disconnect(ctx)
            raise

    # ----------------------------------------------------------------- chat payloads

    def _chat_plan(self, body: dict, reply: Reply | StreamThenReset) -> dict:
        model = str(body.get("model") or "gpt-4o-mini")
        n = max(1, int(body.get("n") or 1))
        tool_flag = getattr(reply, "tool_call", None)
        tool = None if tool_flag is False else _pick_tool(body)
        if tool is None and tool_flag is True:
            tool = "get_weather"
        content = reply.content if reply.content is not None else f"Hello from {model}."
        usage_spec = getattr(reply, "usage", None)
        return {
            "id": f"chatcmpl-fake{next(self._ids):06d}{uuid.uuid4().hex[:16]}",
            "created": int(time.time()),
            "model": model,
            "n": n,
            "tool": tool,
            "arguments": getattr(reply, "tool_arguments", None) or DEFAULT_TOOL_ARGUMENTS,
            "content": content,
            "finish_reason": getattr(reply, "finish_reason", None) or ("tool_calls" if tool else "stop"),
            "usage": _usage_dict(usage_spec if usage_spec is not None else self.usage),
        }

    def _completion(self, body: dict, reply: Reply) -> dict:
        plan = self._chat_plan(body, reply)
        choices = []
        for index in range(plan["n"]):
            if plan["tool"]:
                message: dict[str, Any] = {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": f"call_{uuid.uuid4().hex[:24]}",
                            "type": "function",
                            "function": {"name": plan["tool"], "arguments": plan["arguments"]},
                        }
                    ],
                    "refusal": None,
                    "annotations": [],
                }
            else:
                message = {"role": "assistant", "content": plan["content"], "refusal": None, "annotations": []}
            choices.append(
                {"index": index, "message": message, "logprobs": None, "finish_reason": plan["finish_reason"]}
            )
        return {
            "id": plan["id"],
            "object": "chat.completion",
            "created": plan["created"],
            "model": plan["model"],
            "choices": choices,
            "usage": plan["usage"],
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }

    @staticmethod
    def _choice_deltas(plan: dict, index: int) -> list[dict]:
        """Per-choice chunk ``choices[0]`` entries: role chunk, body chunks, finish chunk."""

        def entry(delta: dict, finish: str | None = None) -> dict:
            return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}

        if plan["tool"]:
            first = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "index": 0,
                        "id": f"call_{uuid.uuid4().hex[:24]}",
                        "type": "function",
                        "function": {"name": plan["tool"], "arguments": ""},
                    }
                ],
                "refusal": None,
            }
            body = [
                {"tool_calls": [{"index": 0, "function": {"arguments": frag}}]}
                for frag in _split_arguments(plan["arguments"])
            ]
        else:
            first = {"role": "assistant", "content": "", "refusal": None}
            body = [{"content": word} for word in _split_words(plan["content"])]
        return [entry(first)] + [entry(d) for d in body] + [entry({}, plan["finish_reason"])]

    @staticmethod
    def _chunk(plan: dict, choices: list[dict], include_usage: bool, usage: dict | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": plan["id"],
            "object": "chat.completion.chunk",
            "created": plan["created"],
            "model": plan["model"],
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
        }
        if include_usage:
            chunk["usage"] = usage
        return b"data: " + _dumps(chunk) + b"\n\n"

    async def _prepare_sse(self, request: web.Request, status: int, extra: dict[str, str] | None) -> web.StreamResponse:
        hdrs = self._base_headers(extra)
        hdrs["Content-Type"] = "text/event-stream"
        hdrs["Cache-Control"] = "no-cache"
        resp = web.StreamResponse(status=status, headers=hdrs)
        await resp.prepare(request)
        return resp

    async def _chat_stream(self, ctx: _Ctx, body: dict, reply: Reply) -> web.StreamResponse:
        plan = self._chat_plan(body, reply)
        include_usage = reply.send_usage and bool((body.get("stream_options") or {}).get("include_usage"))
        delay = reply.chunk_delay_s or self.chunk_delay_s
        per_choice = [self._choice_deltas(plan, i) for i in range(plan["n"])]
        frames = [
            self._chunk(plan, [entry], include_usage)
            for group in itertools.zip_longest(*per_choice)
            for entry in group
            if entry is not None
        ]
        if include_usage:
            frames.append(self._chunk(plan, [], True, plan["usage"]))
        if reply.send_done:
            frames.append(b"data: [DONE]\n\n")

        resp = await self._prepare_sse(ctx.request, reply.status, reply.headers)
        for frame in frames:
            if delay and not await self._sleep(ctx, delay):
                return resp
            if not await self._write(ctx, resp, frame):
                return resp
        try:
            await resp.write_eof()
        except (ConnectionError, OSError):
            self._note_disconnect(ctx)
        return resp

    async def _chat_reset(self, ctx: _Ctx, body: dict, behaviour: StreamThenReset) -> web.StreamResponse:
        reply = Reply(content=behaviour.content)
        if not body.get("stream"):
            data = _dumps(self._completion(body, reply))
            hdrs = self._base_headers()
            hdrs["Content-Type"] = "application/json"
            resp = web.StreamResponse(status=200, headers=hdrs)
            resp.content_length = len(data)
            await resp.prepare(ctx.request)
            await self._write(ctx, resp, data[: len(data) // 2])
            await self._abort(ctx, behaviour.rst)
            return resp
        plan = self._chat_plan(body, reply)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        keep = 1 + max(0, behaviour.chunks_before_reset)
        per_choice = [[e for e in self._choice_deltas(plan, i)[:-1]][:keep] for i in range(plan["n"])]
        frames = [
            self._chunk(plan, [entry], include_usage)
            for group in itertools.zip_longest(*per_choice)
            for entry in group
            if entry is not None
        ]
        delay = behaviour.chunk_delay_s or self.chunk_delay_s
        resp = await self._prepare_sse(ctx.request, 200, None)
        for frame in frames:
            if delay and not await self._sleep(ctx, delay):
                return resp
            if not await self._write(ctx, resp, frame):
                return resp
        await self._abort(ctx, behaviour.rst)
        return resp


# --------------------------------------------------------------------------- standalone


async def serve_forever(
    port: int = 8001,
    host: str = "127.0.0.1",
    *,
    upstream: FakeOpenAIUpstream | None = None,
) -> None:
    """Serve the fake in the *current* event loop until cancelled."""
    up = upstream or FakeOpenAIUpstream(host=host, port=port)
    up.host = host
    up._stopping = False
    runner = await up._start_runner(port)
    print(f"fake OpenAI upstream listening on {up.base_url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        up._stopping = True
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.openai_upstream", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001, help="0 = OS-assigned")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between SSE chunks")
    parser.add_argument("--usage", default="20,5,0", help="prompt,completion[,cached] token counts reported in usage")
    args = parser.parse_args(argv)
    usage = tuple(int(x) for x in args.usage.split(","))
    if len(usage) not in (2, 3):
        parser.error("--usage takes 2 or 3 comma-separated integers")
    upstream = FakeOpenAIUpstream(host=args.host, port=args.port, usage=usage, chunk_delay_s=args.chunk_delay)  # type: ignore[arg-type]
    try:
        asyncio.run(serve_forever(args.port, args.host, upstream=upstream))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
