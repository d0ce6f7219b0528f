"""Checks the fake Anthropic upstream through litellm (the way the proxy calls it) and on the raw wire."""

from __future__ import annotations

import os

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # no network here: don't fetch the price map

import http.client
import json
import time
from collections.abc import Iterator

import litellm
import pytest
from litellm.exceptions import MidStreamFallbackError

from tests.fakes.anthropic_upstream import (
    DEFAULT_TOOL_INPUT,
    ErrorReply,
    FakeAnthropicUpstream,
    Hang,
    RawReply,
    Reply,
    StreamError,
    StreamThenReset,
    anthropic_error,
)

MODEL = "claude-haiku-4-5"
LITELLM_MODEL = f"anthropic/{MODEL}"
API_KEY = "sk-ant-test"
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
# litellm's own pydantic models warn about ReadOnly TypedDict items when they are first built
pytestmark = pytest.mark.filterwarnings("ignore:Item.*ReadOnly:UserWarning")

ANTHROPIC_HEADERS = {"x-api-key": API_KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"}


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeAnthropicUpstream]:
    with FakeAnthropicUpstream() as server:
        yield server


@pytest.fixture()
def fake(fake_server: FakeAnthropicUpstream) -> FakeAnthropicUpstream:
    fake_server.reset()
    return fake_server


async def acompletion(fake: FakeAnthropicUpstream, **kw):
    kw.setdefault("messages", MESSAGES)
    kw.setdefault("num_retries", 0)
    kw.setdefault("timeout", 10)
    return await litellm.acompletion(model=LITELLM_MODEL, api_key=API_KEY, api_base=fake.base_url, **kw)


async def collect(fake: FakeAnthropicUpstream, **kw) -> list:
    stream = await acompletion(fake, stream=True, **kw)
    return [chunk async for chunk in stream]


def streamed_text(chunks: list) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def streamed_tool_calls(chunks: list) -> dict[int, dict]:
    calls: dict[int, dict] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or []:
                entry = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                entry["id"] = entry["id"] or tc.id
                entry["name"] = entry["name"] or tc.function.name
                entry["arguments"] += tc.function.arguments or ""
    return calls


def finish_reasons(chunks: list) -> list[str]:
    return [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]


def raw_post(fake: FakeAnthropicUpstream, body: dict | bytes, headers: dict | None = None, path: str = "/v1/messages"):
    conn = http.client.HTTPConnection(fake.host, fake.port, timeout=10)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, body=data, headers=ANTHROPIC_HEADERS if headers is None else headers)
    resp = conn.getresponse()
    payload = resp.read()
    conn.close()
    return resp, payload


def parse_sse(payload: bytes) -> list[tuple[str, dict]]:
    """Strict parse: every event is exactly ``event: X\\ndata: {json}\\n\\n`` with matching types."""
    text = payload.decode()
    assert text.endswith("\n\n")
    events = []
    for block in text[:-2].split("\n\n"):
        lines = block.split("\n")
        assert len(lines) == 2, block
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        name, data = lines[0][len("event: ") :], json.loads(lines[1][len("data: ") :])
        assert data["type"] == name
        events.append((name, data))
    return events


# --------------------------------------------------------------------------- non-streaming


async def test_text_reply_and_usage_through_litellm(fake):
    resp = await acompletion(fake)
    assert resp.choices[0].message.content == f"Hello from {MODEL}."
    assert resp.choices[0].finish_reason == "stop"
    assert resp.choices[0].message.tool_calls is None
    assert resp.model == MODEL
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (20, 5, 25)

    req = fake.last_request
    assert req is not None and len(fake.requests) == 1
    assert (req.method, req.path) == ("POST", "/v1/messages")
    assert req.headers["x-api-key"] == API_KEY
    assert req.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in req.headers
    assert req.json["model"] == MODEL
    assert req.json["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert isinstance(req.json["max_tokens"], int) and req.json["max_tokens"] > 0
    assert "stream" not in req.json


async def test_openai_params_are_translated(fake):
    await acompletion(
        fake,
        messages=[{"role": "system", "content": "be brief"}, *MESSAGES],
        max_tokens=50,
        temperature=0.2,
        stop=["x"],
    )
    body = fake.last_request.json
    assert body["max_tokens"] == 50
    assert body["temperature"] == 0.2
    assert body["stop_sequences"] == ["x"]
    assert body["system"] == [{"type": "text", "text": "be brief"}]
    assert [m["role"] for m in body["messages"]] == ["user"]


def test_raw_non_stream_wire_shape(fake):
    resp, payload = raw_post(fake, {"model": MODEL, "max_tokens": 10, "messages": MESSAGES})
    assert resp.status == 200
    assert resp.getheader("Content-Type").startswith("application/json")
    assert resp.getheader("request-id").startswith("req_")
    body = json.loads(payload)
    assert body["id"].startswith("msg_")
    del body["id"]
    assert body == {
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": f"Hello from {MODEL}."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 20,
            "output_tokens": 5,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


async def test_usage_per_reply_and_per_instance_with_cache_reads(fake):
    fake.script(Reply(text="cached", usage=(100, 7, 80)))
    resp = await acompletion(fake)
    assert resp.choices[0].message.content == "cached"
    # litellm folds cache reads (and writes) into prompt_tokens; Anthropic's input_tokens excludes them
    assert resp.usage.prompt_tokens == 180
    assert resp.usage.completion_tokens == 7
    assert resp.usage.prompt_tokens_details.cached_tokens == 80
    assert resp.usage.cache_read_input_tokens == 80

    usage = {"input_tokens": 3, "output_tokens": 4, "cache_creation_input_tokens": 6, "cache_read_input_tokens": 0}
    with FakeAnthropicUpstream(usage=usage) as other:
        resp = await acompletion(other)
        assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (9, 4)
        assert resp.usage.cache_creation_input_tokens == 6
        _, payload = raw_post(other, {"model": MODEL, "max_tokens": 10, "messages": MESSAGES})
        assert json.loads(payload)["usage"] == usage


# --------------------------------------------------------------------------- streaming


async def test_stream_text_and_usage_through_litellm(fake):
    chunks = await collect(fake, stream_options={"include_usage": True})
    assert streamed_text(chunks) == f"Hello from {MODEL}."
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 3
    assert finish_reasons(chunks) == ["stop"]
    usages = [c.usage for c in chunks if getattr(c, "usage", None)]
    assert usages, "no usage chunk"
    assert (usages[-1].prompt_tokens, usages[-1].completion_tokens) == (20, 5)
    body = fake.last_request.json
    assert body["stream"] is True
    assert "stream_options" not in body  # Anthropic always reports usage in the stream


async def test_stream_usage_and_text_are_configurable(fake):
    fake.script(Reply(text="one two three four", usage=(11, 4, 2)))
    chunks = await collect(fake, stream_options={"include_usage": True})
    assert streamed_text(chunks) == "one two three four"
    usage = [c.usage for c in chunks if getattr(c, "usage", None)][-1]
    assert (usage.prompt_tokens, usage.completion_tokens, usage.prompt_tokens_details.cached_tokens) == (13, 4, 2)


def test_raw_stream_wire_shape(fake):
    resp, payload = raw_post(fake, {"model": MODEL, "max_tokens": 10, "messages": MESSAGES, "stream": True})
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "text/event-stream"
    events = parse_sse(payload)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"} and len(names[3:-3]) >= 3

    message = events[0][1]["message"]
    assert message["content"] == [] and message["stop_reason"] is None and message["model"] == MODEL
    assert message["id"].startswith("msg_") and message["type"] == "message" and message["role"] == "assistant"
    assert message["usage"] == {
        "input_tokens": 20,
        "output_tokens": 1,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    assert events[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert all(d["type"] == "text_delta" for d in deltas)
    assert "".join(d["text"] for d in deltas) == f"Hello from {MODEL}."
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 5},
    }
    assert events[-1][1] == {"type": "message_stop"}


def test_chunk_delay(fake):
    fake.script(Reply(text="a b c d", chunk_delay_s=0.05))
    start = time.monotonic()
    resp, payload = raw_post(fake, {"model": MODEL, "max_tokens": 10, "messages": MESSAGES, "stream": True})
    assert resp.status == 200 and len(parse_sse(payload)) == 10
    assert time.monotonic() - start >= 0.45


# --------------------------------------------------------------------------- tools


async def test_tool_use_non_stream(fake):
    resp = await acompletion(fake, tools=WEATHER_TOOLS)
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.id.startswith("toolu_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == DEFAULT_TOOL_INPUT

    tools = fake.last_request.json["tools"]
    assert [t["name"] for t in tools] == ["get_weather", "get_time"]
    assert tools[0]["description"] == "Weather for a city"
    assert tools[0]["input_schema"]["required"] == ["city"]


async def test_tool_choice_names_a_tool_or_none(fake):
    resp = await acompletion(
        fake, tools=WEATHER_TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}}
    )
    assert fake.last_request.json["tool_choice"] == {"type": "tool", "name": "get_time"}
    assert resp.choices[0].message.tool_calls[0].function.name == "get_time"

    resp = await acompletion(fake, tools=WEATHER_TOOLS, tool_choice="none")
    assert fake.last_request.json["tool_choice"] == {"type": "none"}
    assert resp.choices[0].message.tool_calls is None
    assert resp.choices[0].message.content == f"Hello from {MODEL}."
    assert resp.choices[0].finish_reason == "stop"


async def test_tool_use_stream_arguments_reassemble(fake):
    fake.script(Reply(tool_input={"city": "Berlin", "unit": "celsius"}))
    chunks = await collect(fake, tools=WEATHER_TOOLS, stream_options={"include_usage": True})
    calls = streamed_tool_calls(chunks)
    assert list(calls) == [0]
    assert calls[0]["id"].startswith("toolu_")
    assert calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Berlin", "unit": "celsius"}
    assert finish_reasons(chunks) == ["tool_calls"]
    assert any(getattr(c, "usage", None) for c in chunks)


def test_raw_tool_stream_wire_shape(fake):
    tools = [{"name": "get_weather", "description": "d", "input_schema": {"type": "object"}}]
    _resp, payload = raw_post(
        fake, {"model": MODEL, "max_tokens": 10, "messages": MESSAGES, "tools": tools, "stream": True}
    )
    events = parse_sse(payload)
    block = events[1][1]["content_block"]
    assert block["type"] == "tool_use" and block["name"] == "get_weather" and block["input"] == {}
    assert block["id"].startswith("toolu_")
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert len(deltas) >= 3 and all(d["type"] == "input_json_delta" for d in deltas)
    assert json.loads("".join(d["partial_json"] for d in deltas)) == DEFAULT_TOOL_INPUT
    assert events[-2][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}

    _, payload = raw_post(fake, {"model": MODEL, "max_tokens": 10, "messages": MESSAGES, "tools": tools})
    content = json.loads(payload)["content"]
    assert content == [{"type": "tool_use", "id": content[0]["id"], "name": "get_weather", "input": DEFAULT_TOOL_INPUT}]
    assert json.loads(payload)["stop_reason"] == "tool_use"


async def test_tool_input_configurable_per_instance(fake):
    with FakeAnthropicUpstream(tool_input={"q": 1}) as other:
        resp = await acompletion(other, tools=WEATHER_TOOLS)
        assert json.loads(resp.choices[0].message.tool_calls[0].function.arguments) == {"q": 1}
        resp = await acompletion(other, tools=WEATHER_TOOLS)  # default applies to every reply
        assert json.loads(resp.choices[0].message.tool_calls[0].function.arguments) == {"q": 1}


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "error_type", "exc_class", "exc_status"),
    [
        (429, "rate_limit_error", litellm.RateLimitError, 429),
        (401, "authentication_error", litellm.AuthenticationError, 401),
        (400, "invalid_request_error", litellm.BadRequestError, 400),
        (500, "api_error", litellm.InternalServerError, 500),
        # litellm maps Anthropic's 529 to InternalServerError with status_code 500
        (529, "overloaded_error", litellm.InternalServerError, 500),
    ],
)
async def test_error_status_maps_to_litellm_exception(fake, status, error_type, exc_class, exc_status):
    fake.script(ErrorReply(status))
    with pytest.raises(exc_class) as info:
        await acompletion(fake)
    assert info.value.status_code == exc_status
    assert error_type in str(info.value)
    assert len(fake.requests) == 1  # num_retries=0: litellm does not retry on its own

    fake.script(ErrorReply(status))
    resp, payload = raw_post(fake, {"model": MODEL, "max_tokens": 10, "messages": MESSAGES})
    assert resp.status == status
    body = json.loads(payload)
    assert body["type"] == "error" and body["error"]["type"] == error_type and body["error"]["message"]


async def test_error_reply_custom_body_and_headers(fake):
    fake.script(ErrorReply(429, body=anthropic_error("slow down", "rate_limit_error"), headers={"retry-after": "7"}))
    with pytest.raises(litellm.RateLimitError) as info:
        await acompletion(fake)
    assert "slow down" in str(info.value)
    assert info.value.litellm_response_headers["retry-after"] == "7"


async def test_stream_error_mid_stream(fake):
    fake.script(StreamError(after_deltas=2))
    received: list[str] = []
    with pytest.raises(litellm.ServiceUnavailableError) as info:  # MidStreamFallbackError subclasses it
        async for chunk in await acompletion(fake, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert isinstance(info.value, MidStreamFallbackError)
    assert "Overloaded" in str(info.value)
    assert received == ["Hello", " from"]
    assert len(fake.requests) == 1

    fake.script(StreamError(after_deltas=1, error_type="api_error", message="Internal server error"))
    resp, payload = raw_post(fake, {"model": MODEL, "max_tokens": 10, "messages": MESSAGES, "stream": True})
    assert resp.status == 200
    events = parse_sse(payload)
    assert [n for n, _ in events] == ["message_start", "content_block_start", "ping", "content_block_delta", "error"]
    assert events[-1][1] == {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}}


async def test_stream_error_on_non_stream_request_is_http_error(fake):
    fake.script(StreamError())
    with pytest.raises(litellm.InternalServerError) as info:
        await acompletion(fake)
    assert "overloaded_error" in str(info.value)


async def test_stream_then_reset(fake):
    fake.script(StreamThenReset(after_deltas=2))
    received: list[str] = []
    with pytest.raises(litellm.ServiceUnavailableError) as info:
        async for chunk in await acompletion(fake, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert received == ["Hello", " from"]
    assert "not completed" in str(info.value)

    fake.script(StreamThenReset())
    with pytest.raises(litellm.InternalServerError):  # half a JSON body, then the connection is gone
        await acompletion(fake)
    assert fake.disconnects == 0  # aborts by the fake are not client disconnects


async def test_hang_times_out_and_disconnect_is_seen(fake):
    fake.script(Hang(10))
    start = time.monotonic()
    with pytest.raises(litellm.Timeout):
        await acompletion(fake, timeout=0.5)
    assert time.monotonic() - start < 5
    assert await fake.await_disconnects(1, timeout=5)
    assert fake.wait_for_disconnects(1, timeout=0)
    assert fake.disconnects == 1 and len(fake.disconnect_times) == 1


async def test_delay_then_reply(fake):
    fake.script(Reply(text="late", delay_s=0.3))
    start = time.monotonic()
    resp = await acompletion(fake)
    assert resp.choices[0].message.content == "late"
    assert time.monotonic() - start >= 0.3


def test_raw_reply(fake):
    fake.script(RawReply(status=200, body=b'{"type": "mess', content_type="application/json"))
    resp, payload = raw_post(fake, {"model": MODEL, "max_tokens": 10, "messages": MESSAGES})
    assert (resp.status, payload) == (200, b'{"type": "mess')


# --------------------------------------------------------------------------- validation / scripting


def test_real_api_request_checks(fake):
    body = {"model": MODEL, "max_tokens": 10, "messages": MESSAGES}
    resp, payload = raw_post(fake, body, headers={"anthropic-version": "2023-06-01"})
    assert resp.status == 401
    assert json.loads(payload) == anthropic_error("x-api-key header is required", "authentication_error")

    resp, payload = raw_post(fake, body, headers={"x-api-key": API_KEY})
    assert resp.status == 400 and json.loads(payload)["error"]["type"] == "invalid_request_error"

    resp, payload = raw_post(fake, {"model": MODEL, "messages": MESSAGES})
    assert resp.status == 400 and "max_tokens" in json.loads(payload)["error"]["message"]

    resp, payload = raw_post(fake, b"{nope")
    assert resp.status == 400

    resp, payload = raw_post(fake, body, path="/v1/chat/completions")
    assert resp.status == 404 and json.loads(payload)["error"]["type"] == "not_found_error"

    assert len(fake.requests) == 5
    assert fake.requests[0].headers.get("x-api-key") is None


async def test_api_key_check():
    with FakeAnthropicUpstream(api_key="sk-ant-right") as other:
        with pytest.raises(litellm.AuthenticationError):
            await acompletion(other)
        assert other.last_request.headers["x-api-key"] == API_KEY


async def test_script_order_reset_and_default(fake):
    fake.script(Reply(text="first"), ErrorReply(429), Reply(text="third"))
    assert fake.pending_scripts == 3
    assert (await acompletion(fake)).choices[0].message.content == "first"
    with pytest.raises(litellm.RateLimitError):
        await acompletion(fake)
    assert (await acompletion(fake)).choices[0].message.content == "third"
    assert (await acompletion(fake)).choices[0].message.content == f"Hello from {MODEL}."
    assert len(fake.requests) == 4 and fake.wait_for_requests(4, timeout=0)

    fake.script(Reply(text="never"))
    fake.reset()
    assert fake.requests == [] and fake.last_request is None and fake.pending_scripts == 0
    assert (await acompletion(fake)).choices[0].message.content == f"Hello from {MODEL}."
    assert await fake.await_requests(1, timeout=1)


def test_base_url_has_no_v1(fake):
    assert fake.base_url == f"http://127.0.0.1:{fake.port}"
    assert fake.messages_url == fake.base_url + "/v1/messages"
