"""A fake upstream that speaks OpenAI's Responses API natively (``POST /v1/responses``), for
providers set to ``responses_api: native``: a fixed answer, whole or streamed as OpenAI's
event sequence, with usage in the ``response`` object (reasoning and cached details), or a
malformed 200 body when ``malformed`` is set, or a stream cut after ``cut_after`` events."""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.threaded_server import RequestContext, ThreadedAiohttpServer

ANSWER = "Hello natively."
USAGE = {
    "input_tokens": 30,
    "input_tokens_details": {"cached_tokens": 10, "cache_write_tokens": 0},
    "output_tokens": 12,
    "output_tokens_details": {"reasoning_tokens": 4},
    "total_tokens": 42,
}


class FakeResponsesUpstream(ThreadedAiohttpServer):
    def __init__(self) -> None:
        super().__init__()
        self.malformed = False
        self.cut_after: int | None = None  # stream: reset the connection after this many events

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/responses", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._record(request)
        body: dict[str, Any] = recorded.json
        if self.malformed:
            return web.Response(body=b'{"object": "chat.completion"}', content_type="application/json")
        if not body.get("stream"):
            return web.Response(body=orjson.dumps(_response(body, "completed")), content_type="application/json")
        ctx = RequestContext(request)
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for number, event in enumerate(_events(body)):
            if number == self.cut_after:
                await self._abort(ctx, rst=True)
                return resp
            data = b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
            if not await self._write(ctx, resp, data):
                return resp
        await resp.write_eof()
        return resp


def _message(status: str, text: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if text else []
    return {"type": "message", "id": "msg_up1", "status": status, "role": "assistant", "content": content}


def _response(body: dict[str, Any], status: str) -> dict[str, Any]:
    done = status == "completed"
    return {
        "id": "resp_upstream1",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": body["model"],
        "output": [_message("completed", ANSWER)] if done else [],
        "parallel_tool_calls": True,
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools", []),
        "usage": USAGE if done else None,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "metadata": {},
        "temperature": None,
        "top_p": None,
    }


def _events(body: dict[str, Any]) -> list[dict[str, Any]]:
    where = {"item_id": "msg_up1", "output_index": 0}
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": _response(body, "in_progress")},
        {"type": "response.in_progress", "response": _response(body, "in_progress")},
        {"type": "response.output_item.added", "output_index": 0, "item": _message("in_progress", "")},
        {"type": "response.content_part.added", **where, "content_index": 0, "part": part},
        *(
            {"type": "response.output_text.delta", **where, "content_index": 0, "delta": piece, "logprobs": []}
            for piece in ("Hello ", "natively.")
        ),
        {"type": "response.output_text.done", **where, "content_index": 0, "text": ANSWER, "logprobs": []},
        {"type": "response.content_part.done", **where, "content_index": 0, "part": {**part, "text": ANSWER}},
        {"type": "response.output_item.done", "output_index": 0, "item": _message("completed", ANSWER)},
        {"type": "response.completed", "response": _response(body, "completed")},
    ]
    return [{**event, "sequence_number": number} for number, event in enumerate(events)]
