"""Issue 11 item 1 over the wire: ``POST /v1/responses`` (and ``GET``/``DELETE``) driven by the
official openai SDK (strict validation) against the running proxy, in front of a fake upstream
that speaks only Chat Completions: the proxy translates both ways, routes like chat, and keeps
stored responses per team."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from pydantic import BaseModel
from redis import Redis

from tests.fakes import FakeOpenAIUpstream, Reply, StreamThenReset
from tests.harness import RunningRouter, metric_sum, scrape, two_model_policy, write_policy
from tests.policies import key
from tests.processes import RedisServer

WEB_KEY = "sk-tr-web-0123456789abcdef"
WEB_TWO_KEY = "sk-tr-web2-0123456789abcdef"
OPS_KEY = "sk-tr-ops-0123456789abcdef"
BROKE_KEY = "sk-tr-broke-0123456789abcdef"
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
# Every event type a streamed text answer has, in OpenAI's order.
TEXT_STREAM_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


@pytest.fixture()
def router(upstream: FakeOpenAIUpstream, tmp_path: Path) -> Iterator[RunningRouter]:
    keys = [
        key(WEB_KEY, "web-app", "web"),
        key(WEB_TWO_KEY, "web-batch", "web"),
        key(OPS_KEY, "ops", "platform", admin=True),
        key(BROKE_KEY, "broke", "thrift", budget={"usd": 0.0000001, "per": "day"}),
    ]
    policy = write_policy(tmp_path, two_model_policy(upstream.base_url, keys=keys), name="responses.yaml")
    with RunningRouter(policy) as running:
        yield running


def sdk(router: RunningRouter, api_key: str = WEB_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=router.base_url, api_key=api_key, max_retries=0, _strict_response_validation=True)


def test_create_with_text_input_answers_a_response_object_routed_like_chat(router, upstream):
    raw = sdk(router).responses.with_raw_response.create(
        model="standard", input="Say hello", instructions="Be brief.", max_output_tokens=50
    )
    response = raw.parse()
    assert response.id.startswith("resp_") and response.status == "completed"
    assert response.model == "cheap-model"
    assert response.output_text == "Hello from gpt-4o-mini."
    assert response.usage.input_tokens == 20 and response.usage.output_tokens == 5
    assert raw.headers["x-router-model"] == "cheap-model" and raw.headers["x-router-tier"] == "standard"
    assert raw.headers["x-router-route"] == "standard" and float(raw.headers["x-router-cost-usd"]) > 0
    sent = upstream.last_request.json
    assert sent["model"] == "gpt-4o-mini" and sent["max_tokens"] == 50
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]


def test_tool_call_then_function_call_output_round_trip(router, upstream):
    client = sdk(router)
    first = client.responses.create(model="standard", input="Weather in Paris?", tools=[WEATHER_TOOL])
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "Paris"}
    assert upstream.last_request.json["tools"][0]["function"]["name"] == "get_weather"
    second = client.responses.create(
        model="standard",
        tools=[WEATHER_TOOL],
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            calls[0].model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "18 C, sunny"},
        ],
        tool_choice="none",
    )
    assert second.output_text == "Hello from gpt-4o-mini."
    messages = upstream.last_request.json["messages"]
    assert messages[1]["tool_calls"][0]["id"] == calls[0].call_id
    assert messages[2] == {"role": "tool", "tool_call_id": calls[0].call_id, "content": "18 C, sunny"}


class City(BaseModel):
    city: str


def test_parse_with_a_pydantic_text_format_sends_json_schema_and_parses_the_answer(router, upstream):
    upstream.script(Reply(content='{"city": "Oslo"}'))
    parsed = sdk(router).responses.parse(model="standard", input="Which city?", text_format=City)
    assert parsed.output_parsed == City(city="Oslo")
    response_format = upstream.last_request.json["response_format"]
    assert response_format["type"] == "json_schema" and response_format["json_schema"]["name"] == "City"


def test_stream_sends_every_text_event_in_order_then_completed_with_usage(router, upstream):
    with sdk(router).responses.stream(model="standard", input="Say hello") as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [event.type for event in events]
    assert [t for i, t in enumerate(types) if t not in types[:i]] == TEXT_STREAM_EVENTS
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Hello from gpt-4o-mini."
    assert final.status == "completed" and final.output_text == "Hello from gpt-4o-mini."
    assert final.model == "cheap-model" and final.usage.input_tokens == 20 and final.usage.output_tokens == 5
    assert upstream.last_request.json["stream_options"] == {"include_usage": True}


def test_stream_of_a_tool_call_sends_the_function_call_argument_events(router, upstream):
    with sdk(router).responses.stream(model="standard", input="Weather?", tools=[WEATHER_TOOL]) as stream:
        types = {event.type for event in stream}
        final = stream.get_final_response()
    assert {"response.function_call_arguments.delta", "response.function_call_arguments.done"} <= types
    assert json.loads(final.output[0].arguments) == {"city": "Paris"}


def test_previous_response_id_sends_the_stored_conversation_before_the_new_input(router, upstream):
    client = sdk(router)
    first = client.responses.create(model="standard", input="My name is Ada.")
    client.responses.create(model="standard", input="What is my name?", previous_response_id=first.id)
    assert upstream.last_request.json["messages"] == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello from gpt-4o-mini."},
        {"role": "user", "content": "What is my name?"},
    ]


def test_a_streamed_response_is_stored_and_can_be_continued(router, upstream):
    client = sdk(router)
    with client.responses.stream(model="standard", input="My name is Ada.") as stream:
        first = stream.get_final_response()
    client.responses.create(model="standard", input="And now?", previous_response_id=first.id)
    assert [m["role"] for m in upstream.last_request.json["messages"]] == ["user", "assistant", "user"]


def test_retrieve_returns_the_stored_response_and_delete_removes_it(router, upstream):
    client = sdk(router)
    created = client.responses.create(model="standard", input="Say hello")
    retrieved = sdk(router, WEB_TWO_KEY).responses.retrieve(created.id)  # same team, another key
    assert retrieved.id == created.id and retrieved.output_text == "Hello from gpt-4o-mini."
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(created.id)


def test_another_teams_key_gets_404_for_retrieve_delete_and_previous_response_id(router, upstream):
    created = sdk(router).responses.create(model="standard", input="Say hello")
    other = sdk(router, OPS_KEY)
    with pytest.raises(openai.NotFoundError) as retrieved:
        other.responses.retrieve(created.id)
    assert retrieved.value.body["message"] == f"Response with id '{created.id}' not found."
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError) as continued:
        other.responses.create(model="standard", input="hi", previous_response_id=created.id)
    assert continued.value.body["param"] == "previous_response_id"
    assert sdk(router).responses.retrieve(created.id).id == created.id  # still there for its team


def test_store_false_keeps_nothing(router, upstream):
    created = sdk(router).responses.create(model="standard", input="Say hello", store=False)
    assert created.status == "completed"
    with pytest.raises(openai.NotFoundError):
        sdk(router).responses.retrieve(created.id)


def test_a_mid_stream_upstream_failure_raises_in_the_sdk_and_is_not_stored(router, upstream):
    upstream.script(StreamThenReset(chunks_before_reset=2))
    seen: list[str] = []
    with (
        pytest.raises(openai.APIError) as failed,
        sdk(router).responses.stream(model="standard", input="Say hello") as stream,
    ):
        for event in stream:
            seen.append(event.type)
    assert "stream_error" in str(failed.value) or "upstream failed" in str(failed.value)
    assert "response.output_text.delta" in seen and "response.completed" not in seen
    created = [e for e in seen if e == "response.created"]
    assert created == ["response.created"]


def test_a_mid_stream_failure_ends_with_error_then_response_failed_on_the_wire(router, upstream):
    upstream.script(StreamThenReset(chunks_before_reset=2))
    with httpx.stream(
        "POST",
        f"{router.base_url}/responses",
        json={"model": "standard", "input": "Say hello", "stream": True},
        headers={"authorization": f"Bearer {WEB_KEY}"},
        timeout=10,
    ) as response:
        lines = [line for line in response.iter_lines() if line.startswith("event: ")]
    assert lines[-2:] == ["event: error", "event: response.failed"]


def test_metrics_count_the_operation_as_responses(router, upstream):
    sdk(router).responses.create(model="standard", input="Say hello")
    with sdk(router).responses.stream(model="standard", input="Say hello") as stream:
        stream.get_final_response()
    samples = scrape(router.url, OPS_KEY)
    attempts = metric_sum(samples, "gen_ai_client_operation_duration_seconds_count", gen_ai_operation_name="responses")
    assert attempts == 2
    assert metric_sum(samples, "router_requests_total", route="standard", outcome="success") == 2


def test_a_built_in_tool_is_a_400_that_says_where_it_runs(router, upstream):
    with pytest.raises(openai.BadRequestError) as refused:
        sdk(router).responses.create(model="standard", input="news?", tools=[{"type": "web_search"}])
    error = refused.value.body
    assert error["code"] == "unsupported_tool" and error["param"] == "tools[0].type"
    assert "web_search" in error["message"] and "natively" in error["message"]
    assert upstream.requests == []


def test_a_spent_budget_refuses_the_response_with_429(router, upstream):
    with pytest.raises(openai.RateLimitError) as refused:
        sdk(router, BROKE_KEY).responses.create(model="standard", input="Say hello")
    assert refused.value.code == "insufficient_quota"
    assert upstream.requests == []


def test_a_key_limited_to_other_routes_is_refused_as_for_chat(tmp_path, upstream):
    keys = [key(WEB_KEY, "web-app", "web", routes=["frontier"])]
    policy = write_policy(tmp_path, two_model_policy(upstream.base_url, keys=keys))
    with RunningRouter(policy) as running, pytest.raises(openai.PermissionDeniedError):
        sdk(running).responses.create(model="standard", input="Say hello")


def test_explain_accepts_a_responses_body(router, upstream):
    answer = httpx.post(
        f"{router.base_url}/router/explain",
        json={"model": "standard", "input": [{"role": "user", "content": "hi"}], "instructions": "Be brief."},
        headers={"authorization": f"Bearer {WEB_KEY}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    decision = answer.json()
    assert decision["route"] == "standard" and decision["candidates"][0]["model"] == "cheap-model"
    assert upstream.requests == []


def test_a_response_stored_in_redis_is_continued_retrieved_and_deleted_on_another_replica(tmp_path, upstream):
    keys = [key(WEB_KEY, "web-app", "web")]
    policy = write_policy(tmp_path, two_model_policy(upstream.base_url, keys=keys))
    with (
        RedisServer() as redis,
        RunningRouter(policy, redis_url=redis.url, responses_ttl_s=60) as one,
        RunningRouter(policy, redis_url=redis.url) as two,
    ):
        created = sdk(one).responses.create(model="standard", input="My name is Ada.")
        assert 0 < Redis(port=redis.port, socket_timeout=2).ttl(f"tr:resp:{created.id}") <= 60
        sdk(two).responses.create(model="standard", input="Name?", previous_response_id=created.id)
        assert [m["role"] for m in upstream.last_request.json["messages"]] == ["user", "assistant", "user"]
        assert sdk(two).responses.retrieve(created.id).output_text == "Hello from gpt-4o-mini."
        sdk(two).responses.delete(created.id)
        with pytest.raises(openai.NotFoundError):
            sdk(one).responses.retrieve(created.id)
