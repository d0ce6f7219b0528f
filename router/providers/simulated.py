"""The built-in ``simulated`` provider: realistic OpenAI responses without a network.

Used by the offline demo, the tests and the benchmarks. Latency, tokens per second and
failure rate come from the policy; usage is counted with the same tokenizer the engine uses.
Every response is labelled: ``system_fingerprint`` is ``simulated``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import struct
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from router.policy import tokens
from router.policy.model import Provider
from router.providers.base import Completion, UpstreamCall, UpstreamError, Usage
from router.providers.schema_example import example_for

WORDS = [
    "the",
    "router",
    "picked",
    "the",
    "cheapest",
    "model",
    "that",
    "meets",
    "your",
    "tier",
    "and",
    "this",
    "answer",
    "is",
    "simulated",
    "so",
    "no",
    "provider",
    "was",
    "called",
    "while",
    "the",
    "cost",
    "and",
    "usage",
    "figures",
    "follow",
    "the",
    "real",
    "price",
    "list",
]
DEFAULT_REPLY_TOKENS = 40
EMBEDDING_DIMENSIONS = 256


class SimulatedAdapter:
    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.random = random.Random()

    async def complete(self, call: UpstreamCall) -> Completion:
        self._maybe_fail()
        reply = _Reply(call)
        await asyncio.sleep(self.provider.latency_ms / 1000 + reply.output_tokens / self.provider.tokens_per_second)
        return Completion(reply.completion_body(), reply.usage)

    async def stream(self, call: UpstreamCall) -> SimulatedStream:
        self._maybe_fail()
        await asyncio.sleep(self.provider.latency_ms / 1000)
        return SimulatedStream(_Reply(call), self.provider.tokens_per_second)

    async def embed(self, call: UpstreamCall) -> Completion:
        self._maybe_fail()
        await asyncio.sleep(self.provider.latency_ms / 1000)
        inputs = call.body.get("input")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        asked_dims = call.body.get("dimensions")
        dims = asked_dims if isinstance(asked_dims, int) else EMBEDDING_DIMENSIONS
        as_base64 = call.body.get("encoding_format") == "base64"
        data = [
            {"object": "embedding", "index": i, "embedding": _encoded(_vector(str(text), dims), as_base64)}
            for i, text in enumerate(inputs)
        ]
        prompt_tokens = tokens.count_input(call.body.get("input"))
        body = {
            "object": "list",
            "data": data,
            "model": call.model.upstream,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }
        return Completion(body, Usage(prompt_tokens, 0, 0))

    async def aclose(self) -> None:
        return None

    def _maybe_fail(self) -> None:
        if self.provider.failure_rate and self.random.random() < self.provider.failure_rate:
            raise UpstreamError("server_error", "simulated upstream failure", status=500)


class _Reply:
    """One simulated answer: text, tool call or structured output, with its usage."""

    def __init__(self, call: UpstreamCall) -> None:
        body = call.body
        self.model = call.model.upstream
        self.id = f"chatcmpl-sim-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        asked_n = body.get("n")
        self.n: int = asked_n if isinstance(asked_n, int) and asked_n > 0 else 1
        self.tool_call = _tool_call(body)
        self.content = None if self.tool_call else _content(body)
        output_text = self.content if self.content is not None else orjson.dumps(self.tool_call).decode()
        prompt = tokens.count_messages(body.get("messages") or []) + tokens.count_tools(body.get("tools"))
        self.output_tokens = tokens.count_text(output_text) * self.n
        self.usage = Usage(prompt, self.output_tokens, 0)
        self.finish_reason = "tool_calls" if self.tool_call else "stop"

    def message(self) -> dict[str, Any]:
        if self.tool_call:
            return {"role": "assistant", "content": None, "refusal": None, "tool_calls": [self.tool_call]}
        return {"role": "assistant", "content": self.content, "refusal": None}

    def completion_body(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "simulated",
            "choices": [
                {"index": i, "message": self.message(), "logprobs": None, "finish_reason": self.finish_reason}
                for i in range(self.n)
            ],
            "usage": self.usage.to_openai(),
        }

    def chunk(self, choices: list[dict[str, Any]], usage: Usage | None = None) -> dict[str, Any]:
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "simulated",
            "choices": choices,
        }
        if usage is not None:
            chunk["usage"] = usage.to_openai()
        return chunk

    def deltas(self) -> list[dict[str, Any]]:
        if self.tool_call:
            function = self.tool_call["function"]
            arguments = function["arguments"]
            first = {
                "index": 0,
                "id": self.tool_call["id"],
                "type": "function",
                "function": {"name": function["name"], "arguments": ""},
            }
            pieces = [arguments[i : i + 8] for i in range(0, len(arguments), 8)]
            return [{"tool_calls": [first]}] + [
                {"tool_calls": [{"index": 0, "function": {"arguments": p}}]} for p in pieces
            ]
        words = (self.content or "").split(" ")
        return [{"content": w if i == 0 else " " + w} for i, w in enumerate(words)]


class SimulatedStream:
    def __init__(self, reply: _Reply, tokens_per_second: float) -> None:
        self.reply = reply
        self.delay_s = 1.0 / tokens_per_second
        self.closed = False

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[dict[str, Any]]:
        reply = self.reply
        for index in range(reply.n):
            yield reply.chunk(
                [
                    {
                        "index": index,
                        "delta": {"role": "assistant", "content": "" if not reply.tool_call else None},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ]
            )
        for delta in reply.deltas():
            await asyncio.sleep(self.delay_s)
            for index in range(reply.n):
                yield reply.chunk([{"index": index, "delta": delta, "logprobs": None, "finish_reason": None}])
        for index in range(reply.n):
            yield reply.chunk([{"index": index, "delta": {}, "logprobs": None, "finish_reason": reply.finish_reason}])
        yield reply.chunk([], reply.usage)

    def buffered(self) -> bool:
        return False  # chunks come one at a time

    async def aclose(self) -> None:
        self.closed = True


def _content(body: Mapping[str, Any]) -> str:
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        if response_format.get("type") == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema") or {}
            return orjson.dumps(example_for(schema)).decode()
        if response_format.get("type") == "json_object":
            return orjson.dumps({"answer": "simulated"}).decode()
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_REPLY_TOKENS
    count = max(1, min(int(limit) if isinstance(limit, int) else DEFAULT_REPLY_TOKENS, DEFAULT_REPLY_TOKENS))
    return " ".join(WORDS[i % len(WORDS)] for i in range(count)).capitalize() + "."


def _tool_call(body: Mapping[str, Any]) -> dict[str, Any] | None:
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return None
    chosen = tools[0]
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        chosen = next((t for t in tools if t["function"].get("name") == choice["function"].get("name")), chosen)
    function = chosen["function"]
    arguments = example_for(function.get("parameters") or {"type": "object", "properties": {}})
    return {
        "id": f"call_sim_{uuid.uuid4().hex[:16]}",
        "type": "function",
        "function": {"name": str(function.get("name", "tool")), "arguments": orjson.dumps(arguments).decode()},
    }


def _encoded(vector: list[float], as_base64: bool) -> list[float] | str:
    """Floats, or OpenAI's ``encoding_format: base64`` (little-endian float32)."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if as_base64 else vector


def _vector(text: str, dims: int) -> list[float]:
    seed = hashlib.sha256(text.encode()).digest()
    values: list[float] = []
    counter = 0
    while len(values) < dims:
        block = hashlib.sha256(seed + counter.to_bytes(4, "little")).digest()
        values.extend(v / 2**31 for v in struct.unpack("<8i", block))
        counter += 1
    return values[:dims]
