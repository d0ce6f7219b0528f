"""Zero-latency fake OpenAI upstream (raw asyncio + httptools).

Serves, in OpenAI's wire format:
  POST /v1/chat/completions   (non-stream JSON, or SSE when "stream": true)
  GET  /v1/models
  GET  /healthz

Run:  python -m benchmarks.fake_upstream --port 9101
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import time

import httptools
import orjson

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

# ~10 content tokens, streamed one per chunk.
TOKENS = ["Hello", "!", " This", " is", " a", " fake", " benchmark", " completion", " from", " upstream", "."]
CONTENT = "".join(TOKENS)
COMPLETION_TOKENS = len(TOKENS)
FINGERPRINT = "fp_bench0001"
_ids = itertools.count(1)
_pid = os.getpid()

MODELS_BODY = orjson.dumps(
    {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": 1721172741, "owned_by": "system"}
            for m in ("gpt-4o-mini", "gpt-4o", "bench-model")
        ],
    }
)
HEALTH_BODY = b'{"status":"ok"}'


def _status_line(code: int) -> bytes:
    reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed"}.get(code, b"Error")
    return b"HTTP/1.1 %d %s\r\n" % (code, reason)


def _json_response(code: int, body: bytes, keep_alive: bool) -> bytes:
    return b"".join(
        (
            _status_line(code),
            b"Content-Type: application/json\r\n",
            b"Content-Length: %d\r\n" % len(body),
            b"Connection: keep-alive\r\n" if keep_alive else b"Connection: close\r\n",
            b"\r\n",
            body,
        )
    )


def _error(code: int, message: str, etype: str, keep_alive: bool) -> bytes:
    body = orjson.dumps({"error": {"message": message, "type": etype, "param": None, "code": None}})
    return _json_response(code, body, keep_alive)


def _prompt_tokens(req: dict) -> int:
    n = 0
    for m in req.get("messages") or ():
        c = m.get("content") if isinstance(m, dict) else None
        if isinstance(c, str):
            n += len(c) // 4 + 4
        elif isinstance(c, list):
            n += 4 + sum(len(p.get("text", "")) // 4 for p in c if isinstance(p, dict))
    return max(n, 1)


def _usage(prompt_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": prompt_tokens + COMPLETION_TOKENS,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_completion(req: dict) -> bytes:
    return orjson.dumps(
        {
            "id": f"chatcmpl-bench{_pid:x}{next(_ids):08d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.get("model") or "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": CONTENT, "refusal": None, "annotations": []},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(_prompt_tokens(req)),
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
        }
    )


def chat_completion_events(req: dict) -> list[bytes]:
    """The SSE events (each a complete `data: ...\\n\\n` block)."""
    include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
    cid = f"chatcmpl-bench{_pid:x}{next(_ids):08d}"
    created = int(time.time())
    model = req.get("model") or "gpt-4o-mini"

    def chunk(delta: dict, finish_reason=None) -> dict:
        c = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if include_usage:
            c["usage"] = None
        return c

    chunks = [chunk({"role": "assistant", "content": "", "refusal": None})]
    chunks += [chunk({"content": t}) for t in TOKENS]
    chunks.append(chunk({}, "stop"))
    if include_usage:
        chunks.append(
            {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "service_tier": "default",
                "system_fingerprint": FINGERPRINT,
                "choices": [],
                "usage": _usage(_prompt_tokens(req)),
            }
        )
    events = [b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks]
    events.append(b"data: [DONE]\n\n")
    return events


SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream; charset=utf-8\r\n"
    b"Cache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n"
)


def _http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class UpstreamProtocol(asyncio.Protocol):
    __slots__ = ("body", "chunk_delay", "parser", "transport", "url")

    def __init__(self, chunk_delay: float = 0.0) -> None:
        self.transport = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.chunk_delay = chunk_delay

    # asyncio.Protocol
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(_error(400, "bad request", "invalid_request_error", False))
                self.transport.close()

    def connection_lost(self, exc):
        self.transport = None

    # httptools callbacks
    def on_message_begin(self):
        self.url = b""
        self.body = []

    def on_url(self, url: bytes):
        self.url += url

    def on_body(self, body: bytes):
        self.body.append(body)

    def on_message_complete(self):
        t = self.transport
        if t is None or t.is_closing():
            return
        ka = self.parser.should_keep_alive()
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0]
        if path in (b"/v1/chat/completions", b"/chat/completions"):
            if method != b"POST":
                t.write(_error(405, "method not allowed", "invalid_request_error", ka))
            else:
                try:
                    req = orjson.loads(b"".join(self.body))
                    if not isinstance(req, dict) or not isinstance(req.get("messages"), list):
                        raise ValueError("messages must be a list")
                except (orjson.JSONDecodeError, ValueError) as e:
                    t.write(_error(400, f"invalid request: {e}", "invalid_request_error", ka))
                else:
                    if req.get("stream"):
                        events = chat_completion_events(req)
                        head = SSE_HEAD + (b"Connection: keep-alive\r\n\r\n" if ka else b"Connection: close\r\n\r\n")
                        if self.chunk_delay > 0:
                            asyncio.get_running_loop().create_task(self._slow_stream(t, head, events, ka))
                            return
                        # one HTTP chunk per SSE event
                        t.writelines([head, *map(_http_chunk, events), b"0\r\n\r\n"])
                    else:
                        t.write(_json_response(200, chat_completion(req), ka))
        elif path in (b"/v1/models", b"/models"):
            t.write(_json_response(200, MODELS_BODY, ka))
        elif path in (b"/healthz", b"/health"):
            t.write(_json_response(200, HEALTH_BODY, ka))
        else:
            t.write(_error(404, "not found", "invalid_request_error", ka))
        if not ka:
            t.close()

    async def _slow_stream(self, t, head, events, ka):
        t.write(head)
        for ev in events:
            await asyncio.sleep(self.chunk_delay)
            if t.is_closing():
                return
            t.write(_http_chunk(ev))
        t.write(b"0\r\n\r\n")
        if not ka:
            t.close()


async def serve(host: str, port: int, chunk_delay: float = 0.0) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: UpstreamProtocol(chunk_delay), host, port, backlog=4096, reuse_address=True
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9101)
    ap.add_argument("--chunk-delay-ms", type=float, default=0.0, help="delay between SSE chunks (default 0)")
    a = ap.parse_args(argv)
    coro = serve(a.host, a.port, a.chunk_delay_ms / 1000.0)
    if uvloop is not None:
        uvloop.run(coro)
    else:
        asyncio.run(coro)


if __name__ == "__main__":
    main()
