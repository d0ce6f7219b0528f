"""What every OpenAI client expects besides chat: ``GET /v1/models/{id}``, CORS, whole usage
objects and legacy ``POST /v1/completions``; the official SDK against the running proxy in
front of the fake OpenAI upstream."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.fakes import Reply, StreamWithoutUsage
from tests.harness import RunningRouter, metric_sum, scrape, two_model_policy, write_policy
from tests.policies import key

WEB_KEY = "sk-tr-web-compat-0123456789abcdef"
OPS_KEY = "sk-tr-ops-compat-0123456789abcdef"


@pytest.fixture()
def keyed(tmp_path, upstream):
    """Two keys: ``web-app`` may use the ``standard`` route and ``cheap-model`` only; ``ops`` anything."""
    keys = [
        key(WEB_KEY, "web-app", team="web", routes=["standard", "cheap-model"]),
        key(OPS_KEY, "ops", team="platform"),
    ]
    with RunningRouter(write_policy(tmp_path, two_model_policy(upstream.base_url, keys=keys))) as router:
        yield router


def sdk(router: RunningRouter, api_key: str = "sk-client", strict: bool = True) -> openai.OpenAI:
    return openai.OpenAI(base_url=router.base_url, api_key=api_key, max_retries=0, _strict_response_validation=strict)


class TestRetrieveModel:
    def test_every_listed_id_is_retrieved_with_the_same_entry(self, client):
        listed = client.models.list().data
        assert {m.id for m in listed} >= {"standard", "frontier", "small", "cheap-model", "pricey-model"}
        for entry in listed:
            assert client.models.retrieve(entry.id) == entry

    def test_an_unknown_id_is_404_model_not_found(self, client):
        with pytest.raises(openai.NotFoundError) as info:
            client.models.retrieve("no-such-model")
        assert info.value.code == "model_not_found"
        error = info.value.body
        assert set(error) == {"message", "type", "param", "code"}
        assert "no-such-model" in error["message"] and "/v1/models" in error["message"]

    def test_a_key_retrieves_only_its_allowed_routes(self, keyed):
        web = sdk(keyed, WEB_KEY)
        assert web.models.retrieve("standard").owned_by == "tier-router"
        assert web.models.retrieve("cheap-model").owned_by == "primary"
        with pytest.raises(openai.NotFoundError) as info:
            web.models.retrieve("pricey-model")
        assert info.value.code == "model_not_found"
        assert sdk(keyed, OPS_KEY).models.retrieve("pricey-model").id == "pricey-model"

    def test_a_retrieve_needs_a_key_when_keys_are_configured(self, keyed):
        with pytest.raises(openai.AuthenticationError):
            sdk(keyed, "sk-tr-wrong").models.retrieve("standard")

    def test_an_id_with_a_slash_is_looked_up_whole(self, router):
        response = httpx.get(f"{router.base_url}/models/org/standard", timeout=5)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "model_not_found"


APP_ORIGIN = "https://app.example.com"
PREFLIGHT = {
    "origin": APP_ORIGIN,
    "access-control-request-method": "POST",
    "access-control-request-headers": "authorization, content-type",
}


@pytest.fixture()
def cors_router(tmp_path, upstream):
    """Keys configured and CORS allowed for one origin (plus a spaced second one)."""
    keys = [key(WEB_KEY, "web-app", team="web")]
    policy = write_policy(tmp_path, two_model_policy(upstream.base_url, keys=keys))
    with RunningRouter(policy, cors_origins=f"{APP_ORIGIN}, http://localhost:3000") as router:
        yield router


class TestCors:
    def test_a_preflight_is_answered_without_a_key(self, cors_router, upstream):
        response = httpx.options(f"{cors_router.base_url}/chat/completions", headers=PREFLIGHT, timeout=5)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == APP_ORIGIN
        assert "POST" in response.headers["access-control-allow-methods"]
        allowed = response.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed and "content-type" in allowed
        assert upstream.requests == []

    def test_an_answer_exposes_the_router_headers_to_the_allowed_origin(self, cors_router):
        response = httpx.post(
            f"{cors_router.base_url}/chat/completions",
            json={"model": "standard", "messages": [{"role": "user", "content": "hi"}]},
            headers={"origin": "http://localhost:3000", "authorization": f"Bearer {WEB_KEY}"},
            timeout=5,
        )
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "http://localhost:3000"
        exposed = {h.strip() for h in response.headers["access-control-expose-headers"].split(",")}
        assert {"x-request-id", "x-router-model", "x-router-cost-usd", "x-ratelimit-remaining-requests"} <= exposed
        assert response.headers["x-router-model"] == "cheap-model"

    def test_a_refused_key_still_carries_cors_headers_so_the_browser_can_read_the_error(self, cors_router):
        response = httpx.get(f"{cors_router.base_url}/models", headers={"origin": APP_ORIGIN}, timeout=5)
        assert response.status_code == 401
        assert response.headers["access-control-allow-origin"] == APP_ORIGIN
        assert response.json()["error"]["code"] == "invalid_api_key"

    def test_a_disallowed_origin_gets_no_cors_headers(self, cors_router):
        headers = {**PREFLIGHT, "origin": "https://evil.example.net"}
        preflight = httpx.options(f"{cors_router.base_url}/chat/completions", headers=headers, timeout=5)
        assert preflight.status_code == 400
        assert "access-control-allow-origin" not in preflight.headers
        simple = httpx.get(
            f"{cors_router.base_url}/models",
            headers={"origin": "https://evil.example.net", "authorization": f"Bearer {WEB_KEY}"},
            timeout=5,
        )
        assert simple.status_code == 200
        # Starlette lists the exposed header names on every answer; without an allowed
        # origin the browser gives the page nothing
        assert "access-control-allow-origin" not in simple.headers

    def test_no_cors_headers_when_unset(self, router):
        preflight = httpx.options(f"{router.base_url}/chat/completions", headers=PREFLIGHT, timeout=5)
        assert preflight.status_code == 405
        assert not any(h.startswith("access-control-") for h in preflight.headers)
        answer = httpx.get(f"{router.base_url}/models", headers={"origin": APP_ORIGIN}, timeout=5)
        assert answer.status_code == 200
        assert not any(h.startswith("access-control-") for h in answer.headers)


HELLO = [{"role": "user", "content": "Think, then say hello"}]
# What a reasoning model reports: every detail OpenAI sends, none of them zero
REASONING_USAGE = {
    "prompt_tokens": 100,
    "completion_tokens": 50,
    "total_tokens": 150,
    "prompt_tokens_details": {"cached_tokens": 40, "audio_tokens": 2},
    "completion_tokens_details": {
        "reasoning_tokens": 30,
        "audio_tokens": 3,
        "accepted_prediction_tokens": 1,
        "rejected_prediction_tokens": 4,
    },
}
# cheap-model: $0.15 input, $0.075 cached input, $0.6 output per 1M; reasoning is in the 50 output tokens
REASONING_COST_USD = (60 * 0.15 + 40 * 0.075 + 50 * 0.6) / 1e6


def reasoning_tokens_counted(router: RunningRouter) -> float:
    return metric_sum(scrape(router.url), "router_tokens_total", model="cheap-model", type="reasoning")


def cost_counted(router: RunningRouter) -> float:
    return metric_sum(scrape(router.url), "router_cost_usd_total", model="cheap-model")


class TestUsageKeptWhole:
    def test_non_stream_usage_reaches_the_sdk_whole_and_is_billed_once(self, client, router, upstream):
        upstream.script(Reply(usage=REASONING_USAGE))
        raw = client.chat.completions.with_raw_response.create(model="standard", messages=HELLO)
        usage = raw.parse().usage
        assert usage.model_dump(exclude_none=True) == REASONING_USAGE
        assert float(raw.headers["x-router-cost-usd"]) == pytest.approx(REASONING_COST_USD)
        assert reasoning_tokens_counted(router) == 30
        assert cost_counted(router) == pytest.approx(REASONING_COST_USD)

    def test_stream_usage_chunk_carries_every_detail_the_upstream_sent(self, client, router, upstream):
        upstream.script(Reply(usage=REASONING_USAGE))
        chunks = list(
            client.chat.completions.create(
                model="standard", messages=HELLO, stream=True, stream_options={"include_usage": True}
            )
        )
        usage_chunks = [c for c in chunks if c.usage is not None]
        assert len(usage_chunks) == 1 and usage_chunks[0].choices == []
        usage = usage_chunks[0].usage
        assert usage.completion_tokens_details.reasoning_tokens == 30
        assert usage.prompt_tokens_details.cached_tokens == 40
        assert usage.model_dump(exclude_none=True) == REASONING_USAGE
        assert reasoning_tokens_counted(router) == 30
        assert cost_counted(router) == pytest.approx(REASONING_COST_USD)

    def test_an_estimated_stream_usage_is_in_openai_shape(self, client, upstream):
        upstream.script(StreamWithoutUsage(content="one two three"))
        chunks = list(
            client.chat.completions.create(
                model="standard", messages=HELLO, stream=True, stream_options={"include_usage": True}
            )
        )
        usage = chunks[-1].usage
        assert usage.completion_tokens == 3 and usage.total_tokens == usage.prompt_tokens + 3
        assert usage.completion_tokens_details.reasoning_tokens == 0
