"""The official OpenAI SDK against the running proxy, in front of a fake OpenAI server."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.fakes import ErrorReply, Reply

HELLO = [{"role": "user", "content": "Say hello"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_non_stream_answer_names_the_model_that_answered(client, upstream):
    raw = client.chat.completions.with_raw_response.create(model="standard", messages=HELLO)
    completion = raw.parse()
    assert completion.model == "cheap-model"
    assert completion.choices[0].message.content == "Hello from gpt-4o-mini."
    assert completion.usage.prompt_tokens == 20 and completion.usage.completion_tokens == 5
    assert raw.headers["x-router-model"] == "cheap-model"
    assert raw.headers["x-router-provider"] == "primary"
    assert raw.headers["x-router-tier"] == "standard"
    assert raw.headers["x-router-attempts"] == "1"
    assert float(raw.headers["x-router-cost-usd"]) == pytest.approx((20 * 0.15 + 5 * 0.6) / 1e6)
    assert raw.headers["x-request-id"] == raw.headers["request-id"]


def test_body_is_forwarded_with_only_the_model_replaced(client, upstream):
    client.chat.completions.create(
        model="standard",
        messages=HELLO,
        temperature=0.3,
        seed=7,
        stop=["\n"],
        user="u1",
        metadata={"team": "web"},
        extra_body={"some_vendor_field": {"x": 1}},
    )
    sent = upstream.last_request
    assert sent.json["model"] == "gpt-4o-mini"
    assert sent.json["temperature"] == 0.3 and sent.json["seed"] == 7 and sent.json["stop"] == ["\n"]
    assert sent.json["some_vendor_field"] == {"x": 1}
    assert sent.headers["authorization"] == "Bearer sk-upstream-secret-1"
    assert "sk-client" not in json.dumps(sent.headers)


def test_stream_without_include_usage_hides_the_usage_chunk_but_proxy_asked_for_it(client, upstream):
    chunks = list(client.chat.completions.create(model="standard", messages=HELLO, stream=True))
    assert upstream.last_request.json["stream_options"] == {"include_usage": True}
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)
    assert {c.model for c in chunks} == {"cheap-model"}
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "Hello from gpt-4o-mini."
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_stream_with_include_usage_ends_with_exactly_one_usage_chunk(client, upstream):
    chunks = list(
        client.chat.completions.create(
            model="standard", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.prompt_tokens == 20 and chunks[-1].usage.completion_tokens == 5


def test_stream_wire_format_is_sse_with_done(router, upstream):
    with httpx.stream(
        "POST", f"{router.base_url}/chat/completions", json={"model": "standard", "messages": HELLO, "stream": True}
    ) as response:
        body = b"".join(response.iter_bytes())
        headers = response.headers
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["cache-control"] == "no-cache" and headers["x-accel-buffering"] == "no"
    assert headers["x-router-model"] == "cheap-model"
    events = [e for e in body.split(b"\n\n") if e]
    assert all(e.startswith(b"data: ") for e in events)
    assert events[-1] == b"data: [DONE]"


def test_stream_helper_accumulates_the_final_message(client, upstream):
    with client.chat.completions.stream(model="standard", messages=HELLO) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "Hello from gpt-4o-mini."
    assert final.model == "cheap-model"


def test_tool_call_deltas_stream_through_and_reassemble(client, upstream):
    upstream.script(Reply(tool_arguments='{"city": "Lyon"}'))
    with client.chat.completions.stream(model="standard", messages=HELLO, tools=[WEATHER_TOOL]) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Lyon"}
    assert final.choices[0].finish_reason == "tool_calls"


class CityAnswer(BaseModel):
    city: str
    population: int


def test_parse_with_a_json_schema(client, upstream):
    upstream.script(Reply(content='{"city": "Paris", "population": 2100000}'))
    completion = client.chat.completions.parse(model="standard", messages=HELLO, response_format=CityAnswer)
    assert completion.choices[0].message.parsed == CityAnswer(city="Paris", population=2100000)
    assert upstream.last_request.json["response_format"]["type"] == "json_schema"


def test_models_lists_routes_tiers_and_concrete_models(client):
    ids = [m.id for m in client.models.list()]
    assert ids[:2] == ["standard", "frontier"]
    assert "small" in ids  # a tier without a route is still a valid name
    assert {"cheap-model", "pricey-model", "embed-model"} <= set(ids)


def test_embeddings_go_to_the_cheapest_embedding_model(client, upstream):
    raw = client.embeddings.with_raw_response.create(model="standard", input=["a", "b"], encoding_format="float")
    result = raw.parse()
    assert len(result.data) == 2
    assert result.model == "embed-model"
    assert raw.headers["x-router-model"] == "embed-model"
    assert upstream.last_request.path == "/v1/embeddings"
    assert upstream.last_request.json["model"] == "text-embedding-3-small"


class TestErrorsMapToSdkClasses:
    def test_unknown_model_is_not_found_and_lists_valid_routes(self, client):
        with pytest.raises(openai.NotFoundError) as info:
            client.chat.completions.create(model="gpt-9", messages=HELLO)
        assert info.value.code == "model_not_found"
        assert "standard" in info.value.message and "frontier" in info.value.message

    def test_missing_messages_is_bad_request(self, client):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="standard", messages=[])
        assert info.value.param == "messages"

    def test_client_supplied_api_base_is_refused_without_calling_upstream(self, client, upstream):
        for field in (
            {"api_base": "http://evil"},
            {"extra_headers": {"x-api-key": "x"}},
            {"base_url": "http://evil"},
        ):
            with pytest.raises(openai.BadRequestError) as info:
                client.chat.completions.create(model="standard", messages=HELLO, extra_body=field)
            assert info.value.code == "forbidden_field"
        assert upstream.requests == []

    def test_field_names_inside_message_text_are_not_refused(self, client, upstream):
        completion = client.chat.completions.create(
            model="standard", messages=[{"role": "user", "content": '"api_key"'}]
        )
        assert completion.model == "cheap-model"

    def test_body_over_the_limit_is_413(self, client, upstream):
        big = "x" * (1024 * 1024 + 10)
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="standard", messages=[{"role": "user", "content": big}])
        assert info.value.status_code == 413
        assert "ROUTER_MAX_BODY_MB" in info.value.message
        assert upstream.requests == []

    def test_upstream_400_comes_back_as_400_without_fallback(self, client, upstream):
        upstream.script(
            ErrorReply(
                400,
                {
                    "error": {
                        "message": "context_length_exceeded",
                        "type": "invalid_request_error",
                        "param": "messages",
                        "code": "context_length_exceeded",
                    }
                },
            )
        )
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="standard", messages=HELLO)
        assert info.value.code == "context_length_exceeded"
        assert len(upstream.chat_requests) == 1

    def test_upstream_401_is_a_502_never_our_401(self, client, upstream):
        upstream.script(ErrorReply(401), ErrorReply(403))
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model="standard", messages=HELLO)
        assert info.value.status_code == 502
        assert info.value.code == "upstream_auth_error"
        assert "sk-upstream" not in info.value.message and "127.0.0.1" not in info.value.message

    def test_every_candidate_rate_limited_is_429_with_retry_after(self, client, upstream):
        upstream.script(ErrorReply(429, headers={"retry-after": "7"}), ErrorReply(429, headers={"retry-after": "3"}))
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="standard", messages=HELLO)
        assert info.value.response.headers["retry-after"] == "3"

    def test_every_candidate_failing_is_502_with_no_upstream_details(self, client, upstream):
        upstream.script(ErrorReply(500), ErrorReply(503))
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model="standard", messages=HELLO)
        assert info.value.status_code == 502
        assert info.value.response.headers["x-should-retry"] == "false"
        assert info.value.response.headers["x-router-attempts"] == "2"
        assert "127.0.0.1" not in info.value.message and "sk-upstream" not in info.value.message
