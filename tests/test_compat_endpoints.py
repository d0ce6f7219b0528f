"""What every OpenAI client expects besides chat: ``GET /v1/models/{id}``, CORS, whole usage
objects and legacy ``POST /v1/completions``; the official SDK against the running proxy in
front of the fake OpenAI upstream."""

from __future__ import annotations

import httpx
import openai
import pytest

from router import completions
from router.errors import InvalidRequest
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


class TestCompletionsTranslation:
    """``router.completions`` on literal payloads: no server."""

    def test_a_prompt_becomes_one_user_turn_with_every_other_field_kept(self):
        body = {
            "model": "standard",
            "prompt": ["Once upon a time"],
            "max_tokens": 7,
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": ["\n"],
            "n": 2,
            "stream": True,
            "stream_options": {"include_usage": True},
            "user": "u1",
            "seed": 3,
            "echo": False,
            "best_of": 1,
            "suffix": "",
            "logprobs": None,
        }
        assert completions.chat_body(body) == {
            "model": "standard",
            "messages": [{"role": "user", "content": "Once upon a time"}],
            "max_tokens": 7,
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": ["\n"],
            "n": 2,
            "stream": True,
            "stream_options": {"include_usage": True},
            "user": "u1",
            "seed": 3,
        }

    @pytest.mark.parametrize(
        ("field", "value"), [("echo", True), ("logprobs", 0), ("logprobs", 5), ("suffix", "}"), ("best_of", 3)]
    )
    def test_a_parameter_a_chat_model_cannot_honour_is_refused_by_name(self, field, value):
        with pytest.raises(InvalidRequest) as info:
            completions.chat_body({"prompt": "x", field: value})
        assert info.value.param == field and f"'{field}'" in info.value.message

    @pytest.mark.parametrize(
        ("prompt", "says"),
        [
            (["a", "b"], "2 prompts"),
            ([1, 2, 3], "token-id"),
            ([[1, 2]], "token-id"),
            ({"x": 1}, "string"),
            (None, "Missing"),
        ],
    )
    def test_a_prompt_that_is_not_one_text_is_refused(self, prompt, says):
        with pytest.raises(InvalidRequest) as info:
            completions.chat_body({"prompt": prompt})
        assert info.value.param == "prompt" and says in info.value.message

    def test_a_chat_completion_becomes_a_text_completion(self):
        chat = {
            "id": "chatcmpl-abc",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "cheap-model",
            "system_fingerprint": "fp_x",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "Hi there"}, "finish_reason": "stop"},
                {"index": 1, "message": {"role": "assistant", "content": None}, "finish_reason": "length"},
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        }
        assert completions.completion_body(chat) == {
            "id": "cmpl-abc",
            "object": "text_completion",
            "created": 1700000000,
            "model": "cheap-model",
            "system_fingerprint": "fp_x",
            "choices": [
                {"text": "Hi there", "index": 0, "logprobs": None, "finish_reason": "stop"},
                {"text": "", "index": 1, "logprobs": None, "finish_reason": "length"},
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        }

    def test_chunks_become_text_completion_chunks(self):
        base = {"id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 1, "model": "m"}
        content = {**base, "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}], "usage": None}
        finish = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}
        usage = {**base, "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        head = {"id": "cmpl-abc", "object": "text_completion", "created": 1, "model": "m", "system_fingerprint": None}
        assert completions.completion_chunk(content) == {
            **head,
            "choices": [{"text": "Hi", "index": 0, "logprobs": None, "finish_reason": None}],
            "usage": None,
        }
        assert completions.completion_chunk(finish) == {
            **head,
            "choices": [{"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"}],
        }
        assert completions.completion_chunk(usage) == {**head, "choices": [], "usage": usage["usage"]}


def operations_counted(router: RunningRouter, operation: str) -> float:
    samples = scrape(router.url)
    return metric_sum(samples, "gen_ai_client_operation_duration_seconds_count", gen_ai_operation_name=operation)


class TestLegacyCompletions:
    def test_non_stream_answers_a_text_completion_routed_like_chat(self, client, router, upstream):
        raw = client.completions.with_raw_response.create(
            model="standard", prompt="Say hello", max_tokens=20, temperature=0.1, stop=["\n"], seed=1, user="u"
        )
        completion = raw.parse()
        assert completion.object == "text_completion"
        assert completion.model == "cheap-model"
        assert completion.choices[0].text == "Hello from gpt-4o-mini."
        assert completion.choices[0].finish_reason == "stop"
        assert completion.usage.prompt_tokens == 20 and completion.usage.completion_tokens == 5
        assert raw.headers["x-router-model"] == "cheap-model"
        assert float(raw.headers["x-router-cost-usd"]) == pytest.approx((20 * 0.15 + 5 * 0.6) / 1e6)
        sent = upstream.last_request.json
        assert sent["messages"] == [{"role": "user", "content": "Say hello"}]
        assert "prompt" not in sent
        assert (sent["max_tokens"], sent["temperature"], sent["stop"], sent["seed"], sent["user"]) == (
            20,
            0.1,
            ["\n"],
            1,
            "u",
        )
        assert operations_counted(router, "text_completion") == 1
        assert operations_counted(router, "chat") == 0

    def test_stream_delivers_text_completion_chunks_and_usage(self, router, upstream):
        # not strict: the SDK types finish_reason as required, yet OpenAI streams it as null
        client = sdk(router, strict=False)
        upstream.script(Reply(content="one two three", usage=REASONING_USAGE))
        chunks = list(
            client.completions.create(
                model="standard", prompt="Count", stream=True, stream_options={"include_usage": True}
            )
        )
        assert {c.object for c in chunks} == {"text_completion"}
        assert {c.model for c in chunks} == {"cheap-model"}
        text_chunks = [c for c in chunks if c.choices]
        assert "".join(c.choices[0].text for c in text_chunks) == "one two three"
        assert text_chunks[-1].choices[0].finish_reason == "stop"
        assert chunks[-1].choices == [] and chunks[-1].usage.model_dump(exclude_none=True) == REASONING_USAGE
        assert operations_counted(router, "text_completion") == 1

    def test_stream_without_include_usage_sends_no_usage(self, router, upstream):
        chunks = list(sdk(router, strict=False).completions.create(model="standard", prompt="Hi", stream=True))
        assert chunks and all(c.usage is None and c.choices for c in chunks)

    @pytest.mark.parametrize(("field", "value"), [("echo", True), ("logprobs", 2), ("suffix", "end"), ("best_of", 2)])
    def test_an_unhonourable_parameter_is_a_400_naming_it(self, client, upstream, field, value):
        with pytest.raises(openai.BadRequestError) as info:
            client.completions.create(model="standard", prompt="Hi", **{field: value})
        assert info.value.param == field and field in info.value.message
        assert upstream.chat_requests == []

    def test_several_prompts_are_a_400(self, client, upstream):
        with pytest.raises(openai.BadRequestError) as info:
            client.completions.create(model="standard", prompt=["a", "b"])
        assert info.value.param == "prompt"
        assert upstream.chat_requests == []

    def test_a_key_may_complete_only_on_its_routes(self, keyed, upstream):
        with pytest.raises(openai.PermissionDeniedError) as info:
            sdk(keyed, WEB_KEY).completions.create(model="frontier", prompt="Hi")
        assert info.value.code == "model_not_allowed"
        assert sdk(keyed, WEB_KEY).completions.create(model="standard", prompt="Hi").choices[0].text
