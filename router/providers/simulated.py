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
import re
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
QUOTE_CHARS = 400  # of each tool result, in the answer that uses it


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
        requested = call.body.get("dimensions")
        dims = requested if isinstance(requested, int) else EMBEDDING_DIMENSIONS
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
    """One simulated answer, decided by ``_plan`` from the request alone, with its usage."""

    def __init__(self, call: UpstreamCall) -> None:
        body = call.body
        self.model = call.model.upstream
        self.id = f"chatcmpl-sim-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        n = body.get("n")
        self.n = n if isinstance(n, int) and n > 0 else 1
        self.content, self.tool_calls, self.function_call = _plan(body, _seeded(body))
        calls = self.tool_calls or ([self.function_call] if self.function_call else [])
        output_text = self.content if self.content is not None else orjson.dumps(calls).decode()
        prompt = tokens.count_messages(body.get("messages") or []) + tokens.count_tools(body.get("tools"))
        if body.get("functions"):
            prompt += tokens.count_tools(body.get("functions"))
        self.output_tokens = tokens.count_text(output_text) * self.n
        self.usage = Usage(prompt, self.output_tokens, 0)
        self.finish_reason = "tool_calls" if self.tool_calls else "function_call" if self.function_call else "stop"

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content, "refusal": None}
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        if self.function_call:
            message["function_call"] = self.function_call
        return message

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
        """OpenAI's delta sequence: a tool call opens with its index, id and name, then its
        arguments arrive in pieces; text arrives about a token at a time."""
        deltas: list[dict[str, Any]] = []
        for index, tool_call in enumerate(self.tool_calls):
            function = tool_call["function"]
            opening = {"index": index, "id": tool_call["id"], "type": "function"}
            deltas.append({"tool_calls": [{**opening, "function": {"name": function["name"], "arguments": ""}}]})
            deltas.extend(
                {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                for piece in _pieces(function["arguments"])
            )
        if self.function_call:
            deltas.append({"function_call": {"name": self.function_call["name"], "arguments": ""}})
            deltas.extend({"function_call": {"arguments": piece}} for piece in _pieces(self.function_call["arguments"]))
        if self.content is not None:
            deltas.extend({"content": piece} for piece in _pieces(self.content))
        return deltas


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
                        "delta": {"role": "assistant", "content": "" if reply.content is not None else None},
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


def _seeded(body: Mapping[str, Any]) -> random.Random:
    """A generator seeded from the request, stream options aside: the same request gets the
    same answer, streamed or not."""
    relevant = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    try:
        encoded = orjson.dumps(relevant, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits, say
        encoded = repr(sorted(relevant.items(), key=lambda item: item[0])).encode()
    return random.Random(hashlib.sha256(encoded).digest())


def _plan(
    body: Mapping[str, Any], rng: random.Random
) -> tuple[str | None, list[dict[str, Any]], dict[str, Any] | None]:
    """Text, a tool call or a legacy function call, as an agent loop expects of a model:
    with tools and no tool result since the last user message it calls one (``tool_choice``
    respected: ``none`` answers in text, ``required`` or a named function forces a call); after
    the results it answers in text that quotes them. Text follows ``response_format``."""
    messages = [m for m in body.get("messages") or () if isinstance(m, dict)]
    turn = _current_turn(messages)
    results = [m for m in turn if m.get("role") in ("tool", "function")]
    called = {name for m in turn for name in _called_names(m)}
    tools = _declared(body.get("tools"), wrapped=True)
    if tools:
        chosen = _chosen(tools, body.get("tool_choice"), bool(results), called)
        if chosen is not None:
            return (
                None,
                [{"id": f"call_sim_{rng.getrandbits(96):024x}", "type": "function", "function": _call(chosen, rng)}],
                None,
            )
    functions = _declared(body.get("functions"), wrapped=False)
    if functions and not tools:
        chosen = _chosen(functions, body.get("function_call"), bool(results), called)
        if chosen is not None:
            return None, [], _call(chosen, rng)
    return _content(body, results, messages, rng), [], None


def _current_turn(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages after the last user message (all of them when there is none)."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "user":
            return messages[index + 1 :]
    return messages


def _called_names(message: dict[str, Any]) -> list[str]:
    if message.get("role") != "assistant":
        return []
    calls = [c.get("function") for c in message.get("tool_calls") or () if isinstance(c, dict)]
    calls.append(message.get("function_call"))
    return [str(c.get("name")) for c in calls if isinstance(c, dict)]


def _declared(value: Any, wrapped: bool) -> list[dict[str, Any]]:
    """Function definitions (``name``, ``parameters``) of ``tools`` (wrapped) or legacy ``functions``."""
    if not isinstance(value, list):
        return []
    found = [
        t.get("function") if wrapped and t.get("type", "function") == "function" else t
        for t in value
        if isinstance(t, dict)
    ]
    return [f for f in found if isinstance(f, dict) and isinstance(f.get("name"), str)]


def _chosen(functions: list[dict[str, Any]], choice: Any, answered: bool, called: set[str]) -> dict[str, Any] | None:
    """The function to call, or None to answer in text. ``choice`` is a ``tool_choice`` or a
    legacy ``function_call``; without a forced name the first one not yet called this turn."""
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed: dict[str, Any] = choice["allowed_tools"] if isinstance(choice.get("allowed_tools"), dict) else {}
        names = {str((t.get("function") or {}).get("name")) for t in allowed.get("tools") or () if isinstance(t, dict)}
        functions = [f for f in functions if f["name"] in names] or functions
        choice = allowed.get("mode", "auto")
    if isinstance(choice, dict):
        named: dict[str, Any] = choice["function"] if isinstance(choice.get("function"), dict) else choice
        return next((f for f in functions if f["name"] == named.get("name")), functions[0])
    if choice == "none" or (choice != "required" and answered):
        return None
    fresh = [f for f in functions if f["name"] not in called]
    return (fresh or functions)[0]


def _call(function: dict[str, Any], rng: random.Random) -> dict[str, str]:
    """``name`` and ``arguments`` (JSON text) that validate against the function's parameters."""
    parameters = function.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        parameters = {"type": "object", "properties": {}}
    arguments = example_for(parameters, rng)
    return {
        "name": function["name"],
        "arguments": orjson.dumps(arguments if isinstance(arguments, dict) else {}).decode(),
    }


def _content(
    body: Mapping[str, Any], results: list[dict[str, Any]], messages: list[dict[str, Any]], rng: random.Random
) -> str:
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        json_schema = response_format.get("json_schema")
        schema = json_schema.get("schema") if isinstance(json_schema, dict) else None
        return orjson.dumps(example_for(schema if isinstance(schema, dict) else {"type": "object"}, rng)).decode()
    text = _quoted(results, messages) if results else _filler(body, rng)
    if isinstance(response_format, dict) and response_format.get("type") == "json_object":
        return orjson.dumps({"answer": text}).decode()
    return text


def _quoted(results: list[dict[str, Any]], messages: list[dict[str, Any]]) -> str:
    """A text answer that uses the tool results: each one quoted with the tool's name."""
    names = {
        c.get("id"): (c.get("function") or {}).get("name")
        for m in messages
        if m.get("role") == "assistant"
        for c in m.get("tool_calls") or ()
        if isinstance(c, dict)
    }
    quotes = [
        f'{names.get(r.get("tool_call_id")) or r.get("name") or "the tool"} returned "{_excerpt(r.get("content"))}"'
        for r in results
    ]
    return "Simulated answer from the tool results: " + "; ".join(quotes) + "."


def _excerpt(content: Any) -> str:
    if isinstance(content, list):
        content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    text = " ".join(str(content or "").split())
    return text if len(text) <= QUOTE_CHARS else text[: QUOTE_CHARS - 1] + "…"


def _filler(body: Mapping[str, Any], rng: random.Random) -> str:
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_REPLY_TOKENS
    count = max(1, min(int(limit) if isinstance(limit, int) else DEFAULT_REPLY_TOKENS, DEFAULT_REPLY_TOKENS))
    start = rng.randrange(len(WORDS))
    return " ".join(WORDS[(start + i) % len(WORDS)] for i in range(count)).capitalize() + "."


def _pieces(text: str) -> list[str]:
    """Stream pieces about a token long: a word with its leading space, long runs cut in eight."""
    return re.findall(r"\s*\S{1,8}|\s+", text)


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
