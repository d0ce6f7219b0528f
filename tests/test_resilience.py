"""Failure handling that loses nothing: one test per scenario, against a fault-injecting
fake upstream on a real socket."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.fakes import ErrorReply, Hang, RawReply, Reply, StreamThenReset, StreamWithoutDone, StreamWithoutUsage
from tests.harness import RunningRouter, metric_sum, one_model_policy, scrape, write_policy
from tests.policies import key

HELLO = [{"role": "user", "content": "hi"}]
JUNK_TEST_KEY = "sk-tr-known-0123456789"


def eventually(read, timeout_s: float = 3.0):
    """The first non-zero value ``read()`` returns within ``timeout_s`` (else the last one)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def start(tmp_path, upstream, **options) -> RunningRouter:
    return RunningRouter(write_policy(tmp_path, one_model_policy(upstream.base_url, **options)))


def sdk(router: RunningRouter, **options) -> openai.OpenAI:
    return openai.OpenAI(base_url=router.base_url, **{"api_key": "x", "max_retries": 0, **options})


def test_503_is_retried_answered_once_and_billed_once_with_one_request_id(tmp_path, upstream):
    upstream.script(ErrorReply(503))
    with start(tmp_path, upstream) as router:
        raw = sdk(router).chat.completions.with_raw_response.create(model="standard", messages=HELLO)
        samples = scrape(router.url)
    assert raw.headers["x-router-attempts"] == "2"
    assert len(upstream.chat_requests) == 2
    assert {r.headers["x-client-request-id"] for r in upstream.chat_requests} == {raw.headers["x-request-id"]}
    one_request_cost = (20 * 1.0 + 5 * 2.0) / 1e6
    assert float(raw.headers["x-router-cost-usd"]) == pytest.approx(one_request_cost)
    assert metric_sum(samples, "router_cost_usd_total") == pytest.approx(one_request_cost)
    assert metric_sum(samples, "router_requests_total", outcome="success") == 1
    assert metric_sum(samples, "router_upstream_errors_total", reason="server_error") == 1


def test_429_with_retry_after_on_the_only_model_waits_and_retries(tmp_path, upstream):
    upstream.script(ErrorReply(429, headers={"retry-after": "1"}))
    with start(tmp_path, upstream) as router:
        started = time.monotonic()
        completion = sdk(router).chat.completions.create(model="standard", messages=HELLO)
    assert completion.model == "solo"
    assert time.monotonic() - started >= 1.0
    assert len(upstream.chat_requests) == 2


def test_429_asking_for_longer_than_the_cap_returns_429_with_retry_after_then_cools_down(tmp_path, upstream):
    upstream.script(ErrorReply(429, headers={"retry-after": "30"}))
    with start(tmp_path, upstream) as router:
        with pytest.raises(openai.RateLimitError) as first:
            sdk(router).chat.completions.create(model="standard", messages=HELLO)
        with pytest.raises(openai.RateLimitError) as second:
            sdk(router).chat.completions.create(model="standard", messages=HELLO)
    assert first.value.response.headers["retry-after"] == "30"
    assert 28 <= int(second.value.response.headers["retry-after"]) <= 30  # cooling down: no upstream call
    assert "cooling down" in second.value.message
    assert len(upstream.chat_requests) == 1


def test_retry_after_as_an_http_date(tmp_path, upstream):
    from email.utils import formatdate

    with start(tmp_path, upstream) as router:
        # the window is measured from the moment the date is written (router started already)
        written = time.time()
        upstream.script(ErrorReply(429, headers={"retry-after": formatdate(written + 60, usegmt=True)}))
        with pytest.raises(openai.RateLimitError) as info:
            sdk(router).chat.completions.create(model="standard", messages=HELLO)
        elapsed = time.time() - written
    # the date and the header have one-second resolution: up to 2 s lost, plus the time it took
    assert 58 - elapsed <= int(info.value.response.headers["retry-after"]) <= 60


def test_400_is_not_retried(tmp_path, upstream):
    upstream.script(ErrorReply(400))
    with start(tmp_path, upstream) as router, pytest.raises(openai.BadRequestError):
        sdk(router).chat.completions.create(model="standard", messages=HELLO)
    assert len(upstream.chat_requests) == 1


def test_upstream_401_is_502_and_the_model_is_taken_out(tmp_path, upstream):
    upstream.script(ErrorReply(401))
    with start(tmp_path, upstream) as router:
        with pytest.raises(openai.InternalServerError) as info:
            sdk(router).chat.completions.create(model="standard", messages=HELLO)
        explained = httpx.post(
            f"{router.base_url}/router/explain", json={"model": "standard", "messages": HELLO}
        ).json()
        samples = scrape(router.url)
    assert info.value.status_code == 502 and info.value.code == "upstream_auth_error"
    assert len(upstream.chat_requests) == 1  # a refused key is not retried
    assert explained["error"]["code"] == "no_candidate_model"
    assert "circuit open" in explained["error"]["message"]
    assert metric_sum(samples, "router_circuit_state", model="solo") == 2


def test_reset_after_the_first_chunk_ends_with_an_in_band_error_and_done(tmp_path, upstream):
    upstream.script(StreamThenReset(chunks_before_reset=2))
    with (
        start(tmp_path, upstream) as router,
        httpx.stream(
            "POST", f"{router.base_url}/chat/completions", json={"model": "standard", "messages": HELLO, "stream": True}
        ) as response,
    ):
        body = response.read().decode()
    events = [e.removeprefix("data: ") for e in body.split("\n\n") if e]
    assert response.status_code == 200
    assert events[-1] == "[DONE]"
    assert '"error"' in events[-2] and "stream_error" in events[-2]
    assert len(upstream.chat_requests) == 1  # nothing retried after content started
    assert body.count("Hello") <= 1  # no duplicated text


def test_the_sdk_sees_a_mid_stream_failure_as_an_error(tmp_path, upstream):
    upstream.script(StreamThenReset(chunks_before_reset=2))
    with start(tmp_path, upstream) as router, pytest.raises(openai.APIError):
        list(sdk(router).chat.completions.create(model="standard", messages=HELLO, stream=True))


def test_idle_timeout_mid_stream(tmp_path, upstream):
    upstream.script(Reply(chunk_delay_s=1.0))
    with (
        start(tmp_path, upstream, model_timeouts={"idle_timeout_s": 0.6, "ttft_timeout_s": 3}) as router,
        httpx.stream(
            "POST",
            f"{router.base_url}/chat/completions",
            json={"model": "standard", "messages": HELLO, "stream": True},
            timeout=10,
        ) as response,
    ):
        body = response.read().decode()
    assert "idle_timeout" in body and body.endswith("data: [DONE]\n\n")


def test_long_generation_completes_when_timeouts_allow(tmp_path, upstream):
    upstream.script(Reply(chunk_delay_s=0.4))
    with start(tmp_path, upstream, model_timeouts={"idle_timeout_s": 2}) as router:
        chunks = list(sdk(router).chat.completions.create(model="standard", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello from gpt-4o-mini."


def test_client_disconnect_mid_stream_cancels_upstream_within_a_second(tmp_path, upstream):
    upstream.script(Reply(chunk_delay_s=0.5))
    with start(tmp_path, upstream) as router:
        with httpx.stream(
            "POST", f"{router.base_url}/chat/completions", json={"model": "standard", "messages": HELLO, "stream": True}
        ) as response:
            next(response.iter_bytes())
        closed_at = time.monotonic()
        assert upstream.wait_for_disconnects(1, timeout=3)
        cancelled = eventually(lambda: metric_sum(scrape(router.url), "router_requests_total", outcome="cancelled"))
    assert upstream.disconnect_times[0] - closed_at < 1.0
    assert cancelled == 1


def test_client_disconnect_during_a_non_stream_call_cancels_upstream(tmp_path, upstream):
    upstream.script(Hang(10))
    with start(tmp_path, upstream, timeout_s=30) as router:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{router.base_url}/chat/completions", json={"model": "standard", "messages": HELLO}, timeout=0.5
            )
        closed_at = time.monotonic()
        assert upstream.wait_for_disconnects(1, timeout=3)
    assert upstream.disconnect_times[0] - closed_at < 1.0


@pytest.mark.parametrize(
    "reply",
    [
        ErrorReply(
            502, b"<html><body><h1>502 Bad Gateway</h1>nginx at http://10.0.0.7</body></html>", content_type="text/html"
        ),
        RawReply(
            200, b'{"id": "chatcmpl-1", "choices": [{"message": {"content": "tru', content_type="application/json"
        ),
        RawReply(200, b'data: {"id": "x"}\n\ndata: [DONE]\n\n', content_type="text/event-stream"),
        ErrorReply(500, b"Internal Server Error", content_type="text/plain"),
        ErrorReply(500, {"detail": "CUDA out of memory"}),
    ],
    ids=["html", "truncated-json", "sse-to-non-stream", "text-plain-500", "detail-500"],
)
def test_unreadable_upstream_answers_become_a_clean_502(tmp_path, upstream, reply):
    upstream.script(*[reply] * 3)
    with start(tmp_path, upstream) as router:
        response = httpx.post(
            f"{router.base_url}/chat/completions", json={"model": "standard", "messages": HELLO}, timeout=10
        )
    assert response.status_code == 502
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    for leak in ("<html", "10.0.0.7", "127.0.0.1", "sk-upstream", "CUDA", "Traceback"):
        assert leak not in response.text


def test_a_model_is_ejected_after_repeated_failures_and_restored_by_a_probe(tmp_path, upstream):
    upstream.script(ErrorReply(500), ErrorReply(500))
    with start(tmp_path, upstream, retries=0, eject_after_failures=2, ejection_s=1) as router:
        for _ in range(2):
            with pytest.raises(openai.InternalServerError):
                sdk(router).chat.completions.create(model="standard", messages=HELLO)
        with pytest.raises(openai.APIStatusError) as ejected:
            sdk(router).chat.completions.create(model="standard", messages=HELLO)
        open_state = metric_sum(scrape(router.url), "router_circuit_state", model="solo")
        time.sleep(1.1)
        probe = sdk(router).chat.completions.create(model="standard", messages=HELLO)
        closed_state = metric_sum(scrape(router.url), "router_circuit_state", model="solo")
    assert ejected.value.status_code == 503 and "circuit open" in ejected.value.message
    assert ejected.value.response.headers["retry-after"] == "1"
    assert len(upstream.chat_requests) == 3  # the ejected model was not called
    assert open_state == 2 and closed_state == 0
    assert probe.model == "solo"


def test_local_server_stream_without_usage_is_estimated_and_the_client_still_gets_usage(tmp_path, upstream):
    upstream.script(StreamWithoutUsage())
    with start(tmp_path, upstream) as router:
        chunks = list(
            sdk(router).chat.completions.create(
                model="standard", messages=HELLO, stream=True, stream_options={"include_usage": True}
            )
        )
        samples = scrape(router.url)
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0].choices == []
    assert usage_chunks[0].usage.completion_tokens > 0
    assert metric_sum(samples, "router_cost_usd_total", estimated="true") > 0
    assert metric_sum(samples, "router_cost_usd_total", estimated="false") == 0


def test_local_server_stream_without_done_still_ends_cleanly(tmp_path, upstream):
    upstream.script(StreamWithoutDone())
    with (
        start(tmp_path, upstream) as router,
        httpx.stream(
            "POST", f"{router.base_url}/chat/completions", json={"model": "standard", "messages": HELLO, "stream": True}
        ) as response,
    ):
        body = response.read().decode()
    assert body.endswith("data: [DONE]\n\n") and '"error"' not in body


def strict_server_policy(upstream_url: str, action: str) -> str:
    return f"""
    version: 1
    tiers: [standard]
    providers:
      vllm: {{type: openai, base_url: "{upstream_url}", unsupported_params: [seed, stream_options], on_unsupported: {action}}}
    models:
      local: {{provider: vllm, upstream: llama, tier: standard, price: {{input: 0, output: 0}}, context_window: 8192}}
    routes: {{standard: {{tier: standard}}}}
    defaults: {{route: standard, retries: 0}}
    """


def test_parameters_a_strict_server_rejects_are_dropped(tmp_path, upstream):
    with RunningRouter(write_policy(tmp_path, strict_server_policy(upstream.base_url, "drop"))) as router:
        sdk(router).chat.completions.create(model="standard", messages=HELLO, seed=3, temperature=0.5)
        list(sdk(router).chat.completions.create(model="standard", messages=HELLO, stream=True))
    plain, streamed = upstream.chat_requests
    assert "seed" not in plain.json and plain.json["temperature"] == 0.5
    assert "stream_options" not in streamed.json  # not even the proxy's own include_usage


def test_parameters_a_strict_server_rejects_can_be_refused(tmp_path, upstream):
    with RunningRouter(write_policy(tmp_path, strict_server_policy(upstream.base_url, "refuse"))) as router:
        with pytest.raises(openai.BadRequestError) as info:
            sdk(router).chat.completions.create(model="standard", messages=HELLO, seed=3)
        assert sdk(router).chat.completions.create(model="standard", messages=HELLO).model == "local"
    assert "provider 'vllm' does not support: seed" in info.value.message
    assert len(upstream.chat_requests) == 1


LOCAL_SERVER_STREAM = (
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"llama","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}]}\n\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"llama","choices":[{"index":0,"delta":{"content":" there"},"finish_reason":null}]}\n\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"llama","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":3,"total_tokens":14}}\n\n'
    b"data: [DONE]\n\n"
)


@pytest.mark.parametrize("client_wants_usage", [True, False])
def test_usage_on_the_finish_chunk_of_a_local_server_is_counted_once(tmp_path, upstream, client_wants_usage):
    upstream.script(RawReply(200, LOCAL_SERVER_STREAM, content_type="text/event-stream"))
    options = {"stream_options": {"include_usage": True}} if client_wants_usage else {}
    with start(tmp_path, upstream) as router:
        chunks = list(sdk(router).chat.completions.create(model="standard", messages=HELLO, stream=True, **options))
        cost = eventually(lambda: metric_sum(scrape(router.url), "router_cost_usd_total", estimated="false"))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hi there"
    with_usage = [c for c in chunks if c.usage is not None]
    if client_wants_usage:
        assert len(with_usage) == 1 and with_usage[0].choices == [] and with_usage[0].usage.prompt_tokens == 11
    else:
        assert with_usage == []
    assert cost == pytest.approx((11 * 1.0 + 3 * 2.0) / 1e6)


def test_sse_framing_variants_from_real_servers_are_understood(tmp_path, upstream):
    """CRLF line ends, comment keep-alives, `event:` lines and a data field split over lines."""
    body = (
        b": keep-alive\r\n\r\n"
        b'event: message\r\ndata: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",\r\n'
        b'data: "choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}]}\r\n\r\n'
        b'data:{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}\r\n\r\n'
        b"data: [DONE]\r\n\r\n"
    )
    upstream.script(RawReply(200, body, content_type="text/event-stream"))
    with start(tmp_path, upstream) as router:
        chunks = list(sdk(router).chat.completions.create(model="standard", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello"


class DroppingLocalServer:
    """A local-server-shaped upstream that answers an error with keep-alive, then drops the
    connection when the next request arrives on it (what llama.cpp-style servers do)."""

    def __init__(self) -> None:
        import socket as socket_module
        import threading

        self.listener = socket_module.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _serve(self) -> None:
        import threading

        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn, self.connections), daemon=True).start()

    def _handle(self, conn, number: int) -> None:  # type: ignore[no-untyped-def]
        import json as json_module

        with conn:
            for index in range(2):
                request = b""
                while b"\r\n\r\n" not in request:
                    data = conn.recv(65536)
                    if not data:
                        return
                    request += data
                head, _, body = request.partition(b"\r\n\r\n")
                length = int(
                    next(
                        (
                            line.split(b":")[1]
                            for line in head.split(b"\r\n")
                            if line.lower().startswith(b"content-length")
                        ),
                        b"0",
                    )
                )
                while len(body) < length:
                    body += conn.recv(65536)
                if number == 1 and index == 0:
                    text = b"CUDA error: out of memory"
                    conn.sendall(
                        b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\nContent-Length: "
                        + str(len(text)).encode()
                        + b"\r\n\r\n"
                        + text
                    )
                    continue
                if number == 1:
                    return  # the next request on the kept-alive connection: dropped, no answer
                answer = json_module.dumps(
                    {
                        "id": "c",
                        "object": "chat.completion",
                        "created": 1,
                        "model": "llama",
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": "fresh"}, "finish_reason": "stop"}
                        ],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
                    }
                ).encode()
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                    + str(len(answer)).encode()
                    + b"\r\n\r\n"
                    + answer
                )

    def close(self) -> None:
        self.listener.close()


def test_a_connection_dropped_after_an_error_is_retried_fresh_without_blaming_the_model(tmp_path):
    server = DroppingLocalServer()
    try:
        with RunningRouter(write_policy(tmp_path, one_model_policy(server.base_url, retries=0))) as router:
            with pytest.raises(openai.InternalServerError):
                sdk(router).chat.completions.create(model="standard", messages=HELLO)
            raw = sdk(router).chat.completions.with_raw_response.create(model="standard", messages=HELLO)
            samples = scrape(router.url)
    finally:
        server.close()
    assert raw.parse().choices[0].message.content == "fresh"
    assert raw.headers["x-router-attempts"] == "1"
    assert server.connections == 2  # the dropped pooled connection, then a fresh one
    assert metric_sum(samples, "router_upstream_errors_total", reason="server_error") == 1
    assert metric_sum(samples, "router_upstream_errors_total", reason="connect_error") == 0


def test_a_storm_of_failures_logs_a_line_per_second_not_per_request_and_health_stays_fast(tmp_path, upstream, caplog):
    import logging

    caplog.set_level(logging.WARNING, logger="router.dispatch")
    upstream.script(*[ErrorReply(500)] * 60)
    with (
        start(tmp_path, upstream, retries=0, eject_after_failures=1000) as router,
        httpx.Client(base_url=router.base_url, timeout=10) as http,
    ):
        statuses = [
            http.post("/chat/completions", json={"model": "standard", "messages": HELLO}).status_code for _ in range(60)
        ]
        started = time.monotonic()
        health = httpx.get(f"{router.url}/healthz", timeout=2)
        health_s = time.monotonic() - started
    failure_lines = [r for r in caplog.records if r.getMessage() == "upstream attempt failed"]
    assert statuses == [502] * 60
    assert 1 <= len(failure_lines) <= 5
    assert health.status_code == 200 and health_s < 0.5


def test_junk_model_names_and_keys_add_no_metric_series(tmp_path, upstream):
    """Series are labelled by configured names only: neither an unknown model name (from a
    valid key) nor an unknown key (with a valid model name) adds one."""
    policy = one_model_policy(upstream.base_url, keys=[key(JUNK_TEST_KEY, "known", team="web", admin=True)])
    with RunningRouter(write_policy(tmp_path, policy)) as router:
        client = sdk(router, api_key=JUNK_TEST_KEY)

        def series() -> set[str]:
            return set(scrape(router.url, key=JUNK_TEST_KEY))

        client.chat.completions.create(model="standard", messages=HELLO)
        with pytest.raises(openai.NotFoundError):  # an unknown model is counted once, as route "other"
            client.chat.completions.create(model="junk-model", messages=HELLO)
        before = series()
        for i in range(200):
            with pytest.raises(openai.NotFoundError):
                client.chat.completions.create(model=f"junk-model-{i}", messages=HELLO)
            with pytest.raises(openai.AuthenticationError):
                sdk(router, api_key=f"sk-junk-{i}").chat.completions.create(model="standard", messages=HELLO)
            with pytest.raises(openai.AuthenticationError):
                sdk(router, api_key=f"sk-junk-{i}").chat.completions.create(model=f"junk-model-{i}", messages=HELLO)
        after = series()
    assert after == before
