"""What the proxy takes from and sends to an upstream: malformed 200 bodies are upstream
failures (B15), the request id goes up as X-Client-Request-Id (B16), saturation is a 503
with Retry-After that never counts against model health (C2, C6), upstream messages never
carry a configured secret (E3), redirects are not followed (A2), image URLs are not fetched
(A3). Real sockets throughout: the proxy under uvicorn, fake OpenAI servers, httpx/openai."""

from __future__ import annotations

import concurrent.futures
import logging
import time
import uuid

import httpx
import openai
import orjson
import pytest

from tests.fakes.openai_upstream import EchoHeaderError, ErrorReply, FakeOpenAIUpstream, RawReply, Reply
from tests.harness import RunningRouter, metric_sum, one_model_policy, scrape, two_model_policy, write_policy

HELLO = [{"role": "user", "content": "hi"}]
CHAT = {"model": "standard", "messages": HELLO}
STREAM = {**CHAT, "stream": True}


def two_models(tmp_path, upstream) -> RunningRouter:
    return RunningRouter(write_policy(tmp_path, two_model_policy(upstream.base_url)))


def one_model(tmp_path, upstream, **defaults) -> RunningRouter:
    return RunningRouter(write_policy(tmp_path, one_model_policy(upstream.base_url, retries=0, **defaults)))


def sse(*events: object) -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, bytes) else orjson.dumps(e)) + b"\n\n" for e in events)


def chunk(delta: object, usage: object = None, choices: object = None) -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}] if choices is None else choices,
        "usage": usage,
    }


def stream_events(router: RunningRouter, body: dict) -> tuple[int, list[str]]:
    with httpx.stream("POST", f"{router.base_url}/chat/completions", json=body, timeout=10) as response:
        text = response.read().decode()
    return response.status_code, [e.removeprefix("data: ") for e in text.split("\n\n") if e]


# --------------------------------------------------------------------- B15: malformed 200 bodies

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
}
MALFORMED_COMPLETIONS = {
    "usage-counts-are-strings": {**COMPLETION, "usage": {"prompt_tokens": "lots", "completion_tokens": 1}},
    "usage-is-a-string": {**COMPLETION, "usage": "lots"},
    "negative-usage": {**COMPLETION, "usage": {"prompt_tokens": -5, "completion_tokens": 1}},
    "cached-tokens-a-list": {
        **COMPLETION,
        "usage": {"prompt_tokens": 1, "prompt_tokens_details": {"cached_tokens": []}},
    },
    "no-choices": {"id": "x"},
    "empty-choices": {**COMPLETION, "choices": []},
    "choices-not-a-list": {**COMPLETION, "choices": {"0": {}}},
    "choice-not-an-object": {**COMPLETION, "choices": ["hi"]},
    "content-a-number": {**COMPLETION, "choices": [{"index": 0, "message": {"content": 5}}]},
    "tool-arguments-an-object": {
        **COMPLETION,
        "choices": [{"index": 0, "message": {"tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]}}],
    },
    "not-an-object": [COMPLETION],
}


@pytest.mark.parametrize("body", MALFORMED_COMPLETIONS.values(), ids=MALFORMED_COMPLETIONS.keys())
def test_b15_a_malformed_200_completion_falls_back_to_the_next_candidate(tmp_path, upstream, body):
    upstream.script(RawReply(200, orjson.dumps(body)))
    with two_models(tmp_path, upstream) as router:
        response = httpx.post(f"{router.base_url}/chat/completions", json=CHAT, timeout=10)
        samples = scrape(router.url)
    assert response.status_code == 200
    assert response.headers["x-router-model"] == "pricey-model"
    assert response.json()["choices"][0]["message"]["content"] == "Hello from gpt-4o."
    assert metric_sum(samples, "router_upstream_errors_total", model="cheap-model", reason="bad_response") == 1


def test_b15_a_malformed_200_on_the_only_candidate_is_a_502_in_openais_shape(tmp_path, upstream):
    upstream.script(RawReply(200, orjson.dumps(MALFORMED_COMPLETIONS["usage-counts-are-strings"])))
    with one_model(tmp_path, upstream) as router:
        response = httpx.post(f"{router.base_url}/chat/completions", json=CHAT, timeout=10)
        healthz = httpx.get(f"{router.url}/healthz", timeout=5)
    assert response.status_code == 502
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert "bad_response" in response.json()["error"]["message"]
    assert "Traceback" not in response.text and "lots" not in response.text
    assert healthz.status_code == 200


MALFORMED_FIRST_CHUNKS = {
    "usage-counts-are-strings": chunk({"content": "Hel"}, usage={"prompt_tokens": "lots"}),
    "content-a-number": chunk({"content": 5}),
    "delta-a-string": chunk("Hel"),
    "choices-an-object": chunk({}, choices={"index": 0}),
    "choice-a-string": chunk({}, choices=["Hel"]),
    "tool-calls-an-object": chunk({"tool_calls": {"function": {"arguments": "{}"}}}),
}


@pytest.mark.parametrize("bad", MALFORMED_FIRST_CHUNKS.values(), ids=MALFORMED_FIRST_CHUNKS.keys())
def test_b15_a_stream_malformed_before_the_first_byte_falls_back(tmp_path, upstream, bad):
    upstream.script(RawReply(200, sse(chunk({"role": "assistant", "content": ""}), bad), "text/event-stream"))
    with two_models(tmp_path, upstream) as router:
        status, events = stream_events(router, STREAM)
    assert status == 200
    assert events[-1] == "[DONE]"
    texts = [orjson.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1]]
    assert "".join(texts) == "Hello from gpt-4o."
    assert all(orjson.loads(e)["model"] == "pricey-model" for e in events[:-1])


MALFORMED_LATER_CHUNKS = {
    "usage-counts-are-strings": chunk({}, usage={"prompt_tokens": "lots", "completion_tokens": 2}, choices=[]),
    "content-a-number": chunk({"content": 5}),
    "tool-arguments-a-number": chunk({"tool_calls": [{"index": 0, "function": {"arguments": 7}}]}),
    "not-an-object": [1, 2],
}


@pytest.mark.parametrize("bad", MALFORMED_LATER_CHUNKS.values(), ids=MALFORMED_LATER_CHUNKS.keys())
def test_b15_a_stream_malformed_after_the_first_content_ends_with_an_in_band_error_and_done(tmp_path, upstream, bad):
    body = sse(chunk({"role": "assistant", "content": "Hel"}), chunk({"content": "lo"}), bad, b"[DONE]")
    upstream.script(RawReply(200, body, "text/event-stream"))
    with two_models(tmp_path, upstream) as router:
        status, events = stream_events(router, STREAM)
        samples = scrape(router.url)
    assert status == 200
    texts = [orjson.loads(e)["choices"][0]["delta"]["content"] for e in events[:-2]]
    assert texts[0] == "Hel" and "".join(texts) in ("Hel", "Hello")  # what came before the bad chunk
    error = orjson.loads(events[-2])["error"]
    assert error["type"] == "upstream_error" and error["code"] == "bad_response"
    assert events[-1] == "[DONE]"
    assert len(upstream.chat_requests) == 1  # nothing retried once content went out
    assert metric_sum(samples, "router_requests_total", outcome="stream_error") == 1


MALFORMED_EMBEDDINGS = {
    "no-data": {"object": "list", "model": "text-embedding-3-small"},
    "data-not-a-list": {"object": "list", "data": {"embedding": [0.1]}},
    "empty-data": {"object": "list", "data": []},
    "embedding-a-number": {"object": "list", "data": [{"index": 0, "embedding": 0.1}]},
    "usage-a-string": {"object": "list", "data": [{"index": 0, "embedding": [0.1]}], "usage": {"prompt_tokens": "2"}},
}


@pytest.mark.parametrize("body", MALFORMED_EMBEDDINGS.values(), ids=MALFORMED_EMBEDDINGS.keys())
def test_b15_a_malformed_200_embeddings_answer_is_a_502_not_a_200_or_500(tmp_path, upstream, body):
    upstream.script_embeddings(RawReply(200, orjson.dumps(body)))
    with two_models(tmp_path, upstream) as router:
        response = httpx.post(f"{router.base_url}/embeddings", json={"model": "standard", "input": "hello"}, timeout=10)
    assert response.status_code == 502  # embed-model is the only embedding model
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert "bad_response" in response.json()["error"]["message"]


# --------------------------------------------------------------------- B16: headers sent upstream


def test_b16_the_fake_llama_cpp_python_refuses_a_non_uuid_x_request_id_with_an_empty_400():
    with FakeOpenAIUpstream(request_id_must_be_uuid=True) as server:
        refused = httpx.post(f"{server.base_url}/chat/completions", json=CHAT, headers={"x-request-id": "req_abc"})
        accepted = httpx.post(
            f"{server.base_url}/chat/completions", json=CHAT, headers={"x-request-id": str(uuid.uuid4())}
        )
    assert refused.status_code == 400 and refused.content == b""
    assert accepted.status_code == 200


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
@pytest.mark.parametrize("client_id", [None, "trace-123"], ids=["proxy-made-id", "client-given-id"])
def test_b16_a_server_that_validates_x_request_id_like_llama_cpp_python_accepts_what_the_proxy_forwards(
    tmp_path, stream, client_id
):
    with FakeOpenAIUpstream(request_id_must_be_uuid=True) as server, one_model(tmp_path, server) as router:
        client = openai.OpenAI(base_url=router.base_url, api_key="x", max_retries=0)
        headers = {"x-request-id": client_id} if client_id else {}
        raw = client.chat.completions.with_raw_response.create(
            model="standard", messages=HELLO, stream=stream, extra_headers=headers
        )
        answered = raw.parse()
        text = (
            "".join(c.choices[0].delta.content or "" for c in answered)
            if stream
            else answered.choices[0].message.content
        )
        sent = server.chat_requests[-1].headers
    assert text == "Hello from gpt-4o-mini."
    assert "x-request-id" not in sent
    assert sent["x-client-request-id"] == raw.headers["x-request-id"] == (client_id or sent["x-client-request-id"])


def test_b16_only_the_documented_headers_reach_the_upstream(tmp_path, upstream):
    with one_model(tmp_path, upstream) as router:
        httpx.post(
            f"{router.base_url}/chat/completions",
            json=CHAT,
            headers={
                "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "x-forwarded-for": "10.1.2.3",
                "cookie": "session=1",
                "authorization": "Bearer sk-client-key",
                "user-agent": "curl/8",
            },
            timeout=10,
        )
    sent = upstream.chat_requests[-1].headers
    expected = {"host", "content-type", "content-length", "accept", "accept-encoding", "authorization"}
    assert set(sent) == expected | {"traceparent", "x-client-request-id"}
    assert sent["authorization"] == "Bearer sk-upstream-secret-1"


# --------------------------------------------------------------------- C2 / C6: saturation


def saturation_policy(upstream_url: str) -> str:
    return f"""
    version: 1
    tiers: [standard]
    providers:
      only: {{type: openai, base_url: "{upstream_url}", api_key: sk-upstream-secret-1, max_connections: 2}}
    models:
      solo: {{provider: only, upstream: gpt-4o-mini, tier: standard, price: {{input: 1.0, output: 2.0}}, context_window: 128000}}
    routes:
      standard: {{tier: standard}}
    defaults: {{route: standard, baseline_model: solo, retries: 0, connect_timeout_s: 0.5, ttft_timeout_s: 10, timeout_s: 10}}
    """


def test_c2_concurrency_beyond_the_pool_gets_503_with_retry_after_and_never_counts_against_model_health(
    tmp_path, upstream
):
    with RunningRouter(write_policy(tmp_path, saturation_policy(upstream.base_url))) as router:
        assert httpx.post(f"{router.base_url}/chat/completions", json=CHAT, timeout=30).status_code == 200  # warm
        upstream.script(*[Reply(delay_s=4)] * 20)

        def call(_: int) -> tuple[httpx.Response, float, float]:
            started = time.monotonic()
            response = httpx.post(f"{router.base_url}/chat/completions", json=CHAT, timeout=30)
            return response, time.monotonic() - started, time.monotonic()

        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            results = list(pool.map(call, range(20)))
        samples = scrape(router.url)
        upstream.reset()
        after = [httpx.post(f"{router.base_url}/chat/completions", json=CHAT, timeout=10) for _ in range(6)]

    answered = [ended for r, _, ended in results if r.status_code == 200]
    refused = [(r, seconds, ended) for r, seconds, ended in results if r.status_code != 200]
    assert len(answered) == 2  # two connections, the others never reached the upstream
    assert {r.status_code for r, _, _ in refused} == {503}
    for response, seconds, ended in refused:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["code"] == "upstream_saturated"
        assert response.headers["retry-after"] == "1"
        assert seconds >= 0.4  # waited for a connection (connect_timeout_s: 0.5) ...
        assert ended < min(answered)  # ... but not until one came free: a bounded wait, never a hang
    assert metric_sum(samples, "router_upstream_errors_total", reason="connect_error") == 0
    assert metric_sum(samples, "router_circuit_state", model="solo") == 0
    assert [r.status_code for r in after] == [200] * 6  # the pool recovered, the model was never ejected


# --------------------------------------------------------------------- E3: secrets in upstream text


def test_e3_an_upstream_400_that_echoes_the_authorization_header_reaches_the_client_redacted(
    tmp_path, upstream, caplog
):
    upstream.script(EchoHeaderError(400, "authorization"))
    with one_model(tmp_path, upstream) as router, caplog.at_level(logging.DEBUG):
        response = httpx.post(f"{router.base_url}/chat/completions", json=CHAT, timeout=10)
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message == "Invalid value for header 'authorization': Bearer [redacted]"
    assert caplog.records  # the request was logged ...
    assert not [r for r in caplog.records if "sk-upstream-secret-1" in str(vars(r))]  # ... without the key


def test_e3_policy_header_values_are_redacted_from_upstream_messages_too(tmp_path, upstream):
    policy = one_model_policy(
        upstream.base_url, provider_options={"headers": {"x-tenant-token": "tenant-secret-42"}}, retries=0
    )
    upstream.script(EchoHeaderError(404, "x-tenant-token"))
    with RunningRouter(write_policy(tmp_path, policy)) as router:
        response = httpx.post(f"{router.base_url}/chat/completions", json=CHAT, timeout=10)
    assert upstream.chat_requests[0].headers["x-tenant-token"] == "tenant-secret-42"
    assert response.status_code == 404
    assert "tenant-secret-42" not in response.text and "[redacted]" in response.text


# --------------------------------------------------------------------- A2, A3: no URL but the policy's


@pytest.mark.parametrize("body", [CHAT, STREAM], ids=["non-stream", "stream"])
def test_a2_an_upstream_redirect_is_not_followed_and_the_client_gets_502(tmp_path, upstream, body):
    with FakeOpenAIUpstream() as elsewhere:
        upstream.script(ErrorReply(307, b"", headers={"location": f"{elsewhere.base_url}/chat/completions"}))
        with one_model(tmp_path, upstream) as router:
            response = httpx.post(f"{router.base_url}/chat/completions", json=body, timeout=10)
        time.sleep(0.2)
        assert elsewhere.requests == []
    assert response.status_code == 502
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert elsewhere.base_url not in response.text


def test_a3_image_url_parts_are_passed_through_unchanged_and_never_fetched(tmp_path, upstream):
    with FakeOpenAIUpstream() as image_host:
        image = {"type": "image_url", "image_url": {"url": f"{image_host.base_url}/cat.png", "detail": "high"}}
        messages = [{"role": "user", "content": [{"type": "text", "text": "what is this?"}, image]}]
        with two_models(tmp_path, upstream) as router:
            response = httpx.post(
                f"{router.base_url}/chat/completions", json={"model": "standard", "messages": messages}, timeout=10
            )
        time.sleep(0.2)
        assert image_host.requests == []
    assert response.status_code == 200
    assert upstream.chat_requests[0].json["messages"] == messages
