"""Issue 11 item 1, native Responses: a provider with ``responses_api: native`` takes
``/v1/responses`` requests as Responses requests (its own wire format, ``model`` replaced by the
upstream name), whole or streamed event by event, under the router's response id and model
name; usage from the ``response`` object is billed and counted; built-in tools pass on a route
whose candidates are all native. Driven by the official openai SDK against a fake upstream that
speaks Responses natively."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from router.policy.loader import PolicyError, parse_policy
from tests.fakes.responses_upstream import ANSWER, FakeResponsesUpstream
from tests.harness import RunningRouter, metric_sum, one_model_policy, scrape, write_policy
from tests.policies import model, policy, provider


@pytest.fixture()
def native_upstream() -> Iterator[FakeResponsesUpstream]:
    with FakeResponsesUpstream() as upstream:
        yield upstream


@pytest.fixture()
def router(native_upstream: FakeResponsesUpstream, tmp_path: Path) -> Iterator[RunningRouter]:
    text = one_model_policy(native_upstream.base_url, provider_options={"responses_api": "native"})
    with RunningRouter(write_policy(tmp_path, text, name="native.yaml")) as running:
        yield running


def sdk(router: RunningRouter) -> openai.OpenAI:
    return openai.OpenAI(base_url=router.base_url, api_key="none", max_retries=0, _strict_response_validation=True)


def test_create_goes_upstream_as_a_responses_request_and_bills_its_usage(router, native_upstream):
    raw = sdk(router).responses.with_raw_response.create(model="solo", input="Say hello", instructions="Be brief.")
    response = raw.parse()
    assert response.output_text == ANSWER and response.model == "solo"
    assert response.id.startswith("resp_") and response.id != "resp_upstream1"
    assert response.usage.output_tokens_details.reasoning_tokens == 4
    sent = native_upstream.last_request
    assert sent.path == "/v1/responses" and sent.json["model"] == "gpt-4o-mini"
    assert sent.json["instructions"] == "Be brief." and "messages" not in sent.json
    assert float(raw.headers["x-router-cost-usd"]) > 0 and "x-router-cost-estimated" not in raw.headers
    samples = scrape(router.url)
    assert metric_sum(samples, "router_tokens_total", type="input") == 30
    assert metric_sum(samples, "router_tokens_total", type="reasoning") == 4
    stored = sdk(router).responses.retrieve(response.id)  # kept under the router's id
    assert stored.output_text == ANSWER


def test_stream_relays_the_upstream_events_with_the_routers_id_and_model(router, native_upstream):
    with sdk(router).responses.stream(model="solo", input="Say hello") as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [event.type for event in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == ANSWER
    assert final.model == "solo" and final.id != "resp_upstream1" and final.usage.input_tokens == 30
    assert native_upstream.last_request.json["stream"] is True
    samples = scrape(router.url)
    assert metric_sum(samples, "router_tokens_total", type="output") == 12
    assert sdk(router).responses.retrieve(final.id).output_text == ANSWER


def test_a_native_stream_cut_mid_way_ends_with_error_then_response_failed_numbered_on(router, native_upstream):
    native_upstream.cut_after = 6  # after the first text delta
    with httpx.stream(
        "POST", router.base_url + "/responses", json={"model": "solo", "input": "hi", "stream": True}, timeout=10
    ) as response:
        data = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    assert [event["type"] for event in data[-2:]] == ["error", "response.failed"]
    assert [event["sequence_number"] for event in data] == list(range(len(data)))
    assert data[-1]["response"]["model"] == "solo" and data[-1]["response"]["status"] == "failed"
    with pytest.raises(openai.APIError), sdk(router).responses.stream(model="solo", input="hi") as stream:
        list(stream)  # and the SDK raises


def test_web_search_tool_is_allowed_on_a_native_route(router, native_upstream):
    response = sdk(router).responses.create(model="solo", input="News today?", tools=[{"type": "web_search"}])
    assert response.output_text == ANSWER
    assert native_upstream.last_request.json["tools"] == [{"type": "web_search"}]


def test_previous_response_id_is_inlined_for_the_native_upstream(router, native_upstream):
    first = sdk(router).responses.create(model="solo", input="Say hello")
    sdk(router).responses.create(model="solo", input="Again", previous_response_id=first.id)
    sent = native_upstream.last_request.json
    assert "previous_response_id" not in sent and sent["store"] is False
    assert [item.get("role") for item in sent["input"]] == ["user", "assistant", "user"]


def test_a_malformed_native_body_is_an_upstream_failure(router, native_upstream):
    native_upstream.malformed = True
    reply = httpx.post(router.base_url + "/responses", json={"model": "solo", "input": "hi"})
    assert reply.status_code == 502 and reply.json()["error"]["code"]


def test_web_search_without_any_native_provider_is_still_a_400_and_calls_nothing(tmp_path):
    with FakeResponsesUpstream() as translated:
        text = one_model_policy(translated.base_url)
        with RunningRouter(write_policy(tmp_path, text, name="translated.yaml")) as running:
            reply = httpx.post(
                running.base_url + "/responses",
                json={"model": "solo", "input": "hi", "tools": [{"type": "web_search"}]},
            )
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "unsupported_tool"
    assert translated.requests == []


def test_web_search_on_a_route_with_a_translated_candidate_is_refused_naming_the_native_provider(tmp_path):
    with FakeResponsesUpstream() as upstream:
        text = policy(
            providers={
                "openai-native": provider(upstream.base_url, responses_api="native"),
                "groq": provider(upstream.base_url),
            },
            models={"native-model": model("openai-native"), "chat-model": model("groq", price=(0.5, 1.0))},
            tiers=["standard"],
            routes={"standard": {"tier": "standard"}},
            baseline_model="native-model",
        )
        with RunningRouter(write_policy(tmp_path, text, name="mixed.yaml")) as running:
            reply = httpx.post(
                running.base_url + "/responses",
                json={"model": "standard", "input": "hi", "tools": [{"type": "web_search"}]},
            )
            assert upstream.requests == []
    error = reply.json()["error"]
    assert reply.status_code == 400 and error["code"] == "unsupported_tool"
    assert "openai-native" in error["message"] and "groq" not in error["message"]


def test_responses_api_native_is_refused_on_a_provider_that_is_not_openai_shaped():
    text = policy(
        providers={"sim": provider(type="simulated", api_key=None, responses_api="native")},
        models={"solo": model("sim", upstream=None)},
        baseline_model="solo",
    )
    with pytest.raises(PolicyError) as refused:
        parse_policy(text.encode(), "p.yaml", {})
    assert any("providers.sim.responses_api" in e and "only an openai provider" in e for e in refused.value.errors)
