"""Checks the fake OpenAI upstream itself against the official ``openai`` SDK (strict validation)."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest
from pydantic import BaseModel

from tests.fakes import (
    DEFAULT_TOOL_ARGUMENTS,
    ErrorReply,
    FakeOpenAIUpstream,
    Hang,
    RawReply,
    Reply,
    StreamThenReset,
    StreamWithoutDone,
    StreamWithoutUsage,
    openai_error,
)

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "hi"}]
WEATHER_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    },
    {
        "type": "function",
        "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
    },
]

EXPECTED_USAGE = {
    "prompt_tokens": 20,
    "completion_tokens": 5,
    "total_tokens": 25,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}


@pytest.fixture
def upstream():
    with FakeOpenAIUpstream() as up:
        yield up


def make_client(upstream: FakeOpenAIUpstream, **kw) -> openai.OpenAI:
    kw.setdefault("timeout", 10.0)
    return openai.OpenAI(base_url=upstream.base_url, api_key="x", max_retries=0, _strict_response_validation=True, **kw)


@pytest.fixture
def client(upstream):
    c = make_client(upstream)
    yield c
    c.close()


def raw_post(upstream: FakeOpenAIUpstream, path: str, body: dict | bytes):
    """POST with the stdlib so the exact bytes on the wire can be inspected."""
    conn = http.client.HTTPConnection("127.0.0.1", upstream.port, timeout=10)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    payload = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload


def sse_chunks(payload: bytes) -> tuple[list[dict], bool]:
    """Parse literal ``data: ...\\n\\n`` framing; returns (json chunks, saw [DONE] as the last frame)."""
    assert payload.endswith(b"\n\n")
    frames = payload.split(b"\n\n")[:-1]
    assert all(f.startswith(b"data: ") for f in frames), frames
    done = frames[-1] == b"data: [DONE]"
    chunks = [json.loads(f[len(b"data: ") :]) for f in frames if f != b"data: [DONE]"]
    return chunks, done


# --------------------------------------------------------------------------- non-streaming


def test_non_stream_default_shape(upstream, client):
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    assert raw.http_response.status_code == 200
    assert raw.headers["content-type"] == "application/json"
    completion = raw.parse()
    assert isinstance(completion, openai.types.chat.ChatCompletion)
    assert completion.id.startswith("chatcmpl-fake")
    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    assert completion.system_fingerprint == "fp_fake"
    assert isinstance(completion.created, int)
    assert completion.choices[0].message.content == f"Hello from {MODEL}."
    assert completion.choices[0].finish_reason == "stop"

    wire = raw.http_response.json()
    assert wire["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello from gpt-4o-mini.", "refusal": None, "annotations": []},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert wire["usage"] == EXPECTED_USAGE

    (req,) = upstream.requests
    assert (req.method, req.path) == ("POST", "/v1/chat/completions")
    assert req.headers["authorization"] == "Bearer x"
    assert req.json["model"] == MODEL and req.json["messages"] == MESSAGES


def test_n_choices(client):
    completion = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, n=3)
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert {c.message.content for c in completion.choices} == {"Hello from gpt-4o."}


def test_usage_configurable_per_instance_and_per_reply():
    with FakeOpenAIUpstream(usage=(100, 7, 40)) as up, make_client(up) as c:
        up.script(Reply(usage=(3, 4, 1)))
        scripted = c.chat.completions.create(model=MODEL, messages=MESSAGES)
        default = c.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert (scripted.usage.prompt_tokens, scripted.usage.completion_tokens, scripted.usage.total_tokens) == (3, 4, 7)
    assert scripted.usage.prompt_tokens_details.cached_tokens == 1
    assert (default.usage.prompt_tokens, default.usage.completion_tokens, default.usage.total_tokens) == (100, 7, 107)
    assert default.usage.prompt_tokens_details.cached_tokens == 40


def test_script_order_delay_and_reset(upstream, client):
    upstream.script(Reply(content="first"), Reply(content="second", delay_s=0.3, headers={"x-extra": "1"}))
    assert client.chat.completions.create(model=MODEL, messages=MESSAGES).choices[0].message.content == "first"
    t0 = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    assert time.monotonic() - t0 >= 0.3
    assert raw.headers["x-extra"] == "1"
    assert raw.parse().choices[0].message.content == "second"
    assert client.chat.completions.create(model=MODEL, messages=MESSAGES).choices[0].message.content == (
        f"Hello from {MODEL}."
    )
    assert len(upstream.requests) == 3

    upstream.script(Reply(content="never used"))
    upstream.reset()
    assert upstream.requests == [] and upstream.pending_scripts == 0
    assert client.chat.completions.create(model=MODEL, messages=MESSAGES).choices[0].message.content == (
        f"Hello from {MODEL}."
    )


# --------------------------------------------------------------------------- streaming


def test_stream_without_include_usage(upstream, client):
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == f"Hello from {MODEL}."
    assert len(chunks) == 1 + 3 + 1  # role, one per word, finish
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None and c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1

    status, headers, payload = raw_post(
        upstream, "/v1/chat/completions", {"model": MODEL, "messages": MESSAGES, "stream": True}
    )
    assert status == 200 and headers["content-type"] == "text/event-stream"
    wire, done = sse_chunks(payload)
    assert done
    assert all("usage" not in c for c in wire)
    assert wire[0]["choices"][0] == {
        "index": 0,
        "delta": {"role": "assistant", "content": "", "refusal": None},
        "logprobs": None,
        "finish_reason": None,
    }
    assert wire[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    for c in wire:
        assert {"id", "object", "created", "model", "system_fingerprint", "choices"} <= c.keys()


def test_stream_with_include_usage(upstream, client):
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage.total_tokens == 25
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "stop"

    _, _, payload = raw_post(
        upstream,
        "/v1/chat/completions",
        {"model": MODEL, "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}},
    )
    wire, done = sse_chunks(payload)
    assert done
    assert all("usage" in c and c["usage"] is None for c in wire[:-1])
    assert wire[-1]["choices"] == [] and wire[-1]["usage"] == EXPECTED_USAGE


def test_stream_helper(client):
    with client.chat.completions.stream(
        model=MODEL, messages=MESSAGES, stream_options={"include_usage": True}
    ) as stream:
        events = list(stream)
        final = stream.get_final_completion()
    assert "content.done" in {e.type for e in events}
    assert final.choices[0].message.content == f"Hello from {MODEL}."
    assert final.choices[0].finish_reason == "stop"
    assert final.usage.total_tokens == 25


def test_stream_n_choices(client):
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, n=2))
    for index in (0, 1):
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices[0].index == index)
        assert text == f"Hello from {MODEL}."


def test_chunk_delay(client, upstream):
    upstream.script(Reply(content="a b c d", chunk_delay_s=0.05))
    t0 = time.monotonic()
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    assert time.monotonic() - t0 >= 0.05 * len(chunks)


# --------------------------------------------------------------------------- tools


def test_tools_non_stream(upstream, client):
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=WEATHER_TOOLS)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"
    assert call.function.arguments == DEFAULT_TOOL_ARGUMENTS

    named = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        tools=WEATHER_TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert named.choices[0].message.tool_calls[0].function.name == "get_time"

    none = client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=WEATHER_TOOLS, tool_choice="none")
    assert none.choices[0].message.tool_calls is None
    assert none.choices[0].message.content == f"Hello from {MODEL}."


def test_tools_streaming_reassembled(upstream, client):
    args = '{"city": "Berlin", "unit": "celsius"}'
    upstream.script(Reply(tool_arguments=args))
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=WEATHER_TOOLS, stream=True))
    first = chunks[0].choices[0].delta
    assert first.role == "assistant"
    assert first.tool_calls[0].index == 0
    assert first.tool_calls[0].id.startswith("call_")
    assert first.tool_calls[0].type == "function"
    assert first.tool_calls[0].function.name == "get_weather"
    assert first.tool_calls[0].function.arguments == ""
    fragments = [c.choices[0].delta.tool_calls[0].function.arguments for c in chunks[1:-1]]
    assert len(fragments) >= 3
    assert all(c.choices[0].delta.tool_calls[0].id is None for c in chunks[1:-1])
    assert "".join(fragments) == args
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    # the SDK's own accumulator agrees
    with client.chat.completions.stream(model=MODEL, messages=MESSAGES, tools=WEATHER_TOOLS) as stream:
        final = stream.get_final_completion()
    (call,) = final.choices[0].message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})
    assert final.choices[0].finish_reason == "tool_calls"


# --------------------------------------------------------------------------- structured output


class Weather(BaseModel):
    city: str
    temp_c: float


def test_parse_with_pydantic_response_format(upstream, client):
    upstream.script(Reply(content='{"city": "Paris", "temp_c": 21.5}'))
    completion = client.chat.completions.parse(model=MODEL, messages=MESSAGES, response_format=Weather)
    assert completion.choices[0].message.parsed == Weather(city="Paris", temp_c=21.5)
    sent = upstream.last_request.json["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "Weather"


# --------------------------------------------------------------------------- errors


def test_error_reply_400(upstream, client):
    upstream.script(ErrorReply(400, openai_error("bad messages", param="messages", code="invalid_value")))
    with pytest.raises(openai.BadRequestError) as exc_info:
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
    err = exc_info.value
    assert err.status_code == 400
    assert err.code == "invalid_value" and err.param == "messages"
    assert err.body["message"] == "bad messages"


@pytest.mark.parametrize(
    ("reply", "exc_type"),
    [
        (ErrorReply(401), openai.AuthenticationError),
        (ErrorReply(429, headers={"retry-after": "1"}), openai.RateLimitError),
        (ErrorReply(500, "upstream exploded", content_type="text/plain"), openai.InternalServerError),
        (
            ErrorReply(502, b"<html><body>502 Bad Gateway</body></html>", content_type="text/html"),
            openai.InternalServerError,
        ),
    ],
)
def test_error_reply_variants(upstream, client, reply, exc_type):
    upstream.script(reply)
    with pytest.raises(exc_type) as exc_info:
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert exc_info.value.status_code == reply.status


def test_raw_reply_bytes(upstream):
    upstream.script(RawReply(200, b'{"id": "chatcmpl-trunc', "application/json"))
    status, headers, payload = raw_post(upstream, "/v1/chat/completions", {"model": MODEL, "messages": MESSAGES})
    assert (status, headers["content-type"], payload) == (200, "application/json", b'{"id": "chatcmpl-trunc')


def test_non_json_body_is_400(upstream):
    status, _, payload = raw_post(upstream, "/v1/chat/completions", b"not json")
    assert status == 400 and json.loads(payload)["error"]["type"] == "invalid_request_error"
    assert upstream.requests[0].json is None and upstream.requests[0].body == b"not json"


# --------------------------------------------------------------------------- broken streams


def test_stream_then_reset(upstream, client):
    upstream.script(StreamThenReset(chunks_before_reset=2, content="one two three four"))
    received = []
    with pytest.raises(openai.APIConnectionError):
        received.extend(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    assert [c.choices[0].delta.content for c in received] == ["", "one", " two"]
    assert upstream.disconnects == 0  # our own abort is not a client disconnect


def test_stream_without_done(upstream, client):
    upstream.script(StreamWithoutDone())
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    assert chunks[-1].choices[0].finish_reason == "stop"
    upstream.script(StreamWithoutDone())
    _, _, payload = raw_post(upstream, "/v1/chat/completions", {"model": MODEL, "messages": MESSAGES, "stream": True})
    wire, done = sse_chunks(payload)
    assert not done and wire[-1]["choices"][0]["finish_reason"] == "stop"


def test_stream_without_usage(upstream, client):
    upstream.script(StreamWithoutUsage())
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert all(c.usage is None for c in chunks) and chunks[-1].choices[0].finish_reason == "stop"
    upstream.script(StreamWithoutUsage())
    _, _, payload = raw_post(
        upstream,
        "/v1/chat/completions",
        {"model": MODEL, "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}},
    )
    wire, done = sse_chunks(payload)
    assert done and all("usage" not in c for c in wire)


# --------------------------------------------------------------------------- disconnects


def test_disconnect_counted_when_client_gives_up_during_hang(upstream):
    upstream.script(Hang(10))
    with make_client(upstream, timeout=0.3) as c:
        t0 = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            c.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert upstream.wait_for_disconnects(1, timeout=5)
    assert upstream.disconnects == 1
    assert upstream.disconnect_times[0] - t0 < 3
    assert len(upstream.requests) == 1


def test_hang_that_expires_drops_connection_without_response(upstream, client):
    upstream.script(Hang(0.2))
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert upstream.disconnects == 0


def test_stream_then_reset_on_non_stream_request_truncates_body(upstream, client):
    upstream.script(StreamThenReset())
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model=MODEL, messages=MESSAGES)


def test_disconnect_counted_when_client_closes_slow_stream(upstream, client):
    upstream.script(Reply(content="a b c d e f g h", chunk_delay_s=0.1))
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    next(iter(stream))
    stream.close()
    assert upstream.wait_for_disconnects(1, timeout=5)
    assert upstream.disconnects == 1


def test_no_disconnect_for_completed_requests(upstream, client):
    client.chat.completions.create(model=MODEL, messages=MESSAGES)
    list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    assert not upstream.wait_for_disconnects(1, timeout=0.3)


# --------------------------------------------------------------------------- embeddings / models


def test_embeddings(upstream, client):
    single = client.embeddings.create(model="text-embedding-3-small", input="hello world", encoding_format="float")
    assert single.object == "list" and single.model == "text-embedding-3-small"
    assert len(single.data) == 1 and single.data[0].object == "embedding" and single.data[0].index == 0
    assert len(single.data[0].embedding) == 8
    assert single.usage.prompt_tokens == single.usage.total_tokens > 0

    batch = client.embeddings.create(
        model="text-embedding-3-small", input=["hello world", "bye"], encoding_format="float"
    )
    assert [d.index for d in batch.data] == [0, 1]
    assert batch.data[0].embedding == single.data[0].embedding  # deterministic
    assert batch.data[1].embedding != batch.data[0].embedding

    # the SDK's default request asks for base64 and decodes it; values must agree
    with openai.OpenAI(base_url=upstream.base_url, api_key="x", max_retries=0) as lax:
        decoded = lax.embeddings.create(model="text-embedding-3-small", input="hello world")
    assert upstream.last_request.json["encoding_format"] == "base64"
    assert decoded.data[0].embedding == single.data[0].embedding


def test_models(client):
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert MODEL in ids
    assert all(m.object == "model" and m.owned_by for m in models.data)


# --------------------------------------------------------------------------- loops / standalone


async def test_works_from_async_test_with_async_client():
    async with FakeOpenAIUpstream() as up:
        async with openai.AsyncOpenAI(
            base_url=up.base_url, api_key="x", max_retries=0, _strict_response_validation=True
        ) as c:
            stream = await c.chat.completions.create(
                model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
            chunks = [chunk async for chunk in stream]
        assert chunks[-1].usage.completion_tokens == 5
        assert await up.await_requests(1)


def test_cli_serves_standalone():
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_upstream", "--port", "0"],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, line
        base_url = line.strip().rsplit(" ", 1)[-1]
        with openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, _strict_response_validation=True) as c:
            assert c.chat.completions.create(model=MODEL, messages=MESSAGES).choices[0].message.content
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
        stderr = proc.stderr.read()
        proc.stderr.close()
    assert "Traceback" not in stderr and "Warning" not in stderr, stderr
