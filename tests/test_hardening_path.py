"""The request path owns every request to its end: whatever way a request leaves (an
upstream answer nobody expected, the client going away, a timeout, a store outage, a cache
hit), it is accounted once, with an outcome that agrees with its status, and its budget
reservation is settled or released. Budgets bound what can be spent even without
``max_tokens``. All through HTTP against fake upstreams on real sockets."""

from __future__ import annotations

import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from router.auth import digest_of
from tests.fakes import FakeOpenAIUpstream, Hang, RawReply, Reply
from tests.harness import RunningRouter, metric_sum, one_model_policy, scrape, write_policy
from tests.processes import free_port

HELLO = [{"role": "user", "content": "hi"}]
KEY = "sk-tr-path-0123456789abcdef"
ADMIN = "sk-tr-path-admin-0123456789"


def keyed_policy(
    upstream_url: str,
    *,
    budget_usd: float = 0.05,
    price: str = "input: 1000, output: 1000",
    second_model: bool = False,
    route: str = "",
    limits: str = "",
    defaults: str = "max_output_tokens: 10",
) -> str:
    """One budgeted key (and an unbudgeted admin key) over one model, or two of the same tier."""
    second = (
        f"      second: {{provider: up, upstream: gpt-4o, tier: standard, price: {{{price}}}, context_window: 128000}}\n"
        if second_model
        else ""
    )
    return f"""
    version: 1
    tiers: [standard]
    providers:
      up: {{type: openai, base_url: "{upstream_url}", api_key: sk-upstream-secret-1}}
    models:
      solo: {{provider: up, upstream: gpt-4o-mini, tier: standard, price: {{{price}}}, context_window: 128000}}
{second}    routes:
      standard: {{tier: standard{route}}}
    keys:
      - {{hash: "sha256:{digest_of(KEY)}", name: budgeted, team: web, budget: {{usd: {budget_usd}, per: day}}{limits}}}
      - {{hash: "sha256:{digest_of(ADMIN)}", name: ops, team: ops, admin: true}}
    defaults: {{route: standard, retries: 0, ttft_timeout_s: 2, timeout_s: 5, {defaults}}}
    """


def chat(router: RunningRouter, key: str = KEY, **extra: Any) -> httpx.Response:
    return httpx.post(
        f"{router.base_url}/chat/completions",
        json={"model": "standard", "messages": HELLO, **extra},
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )


def spendable_requests(router: RunningRouter) -> int:
    """How many ordinary requests the budgeted key still gets before its 429."""
    for served in range(10):
        response = chat(router)
        if response.status_code == 429:
            assert response.json()["error"]["code"] == "insufficient_quota"
            return served
        assert response.status_code == 200, response.text
    raise AssertionError("the budget never ran out")


# With $1000 / 1M tokens and the fake's usage (20 in, 5 out) a request costs $0.025; the
# reservation is the prompt (~7 tokens) + the 10-token output cap: about $0.017. A $0.05
# budget serves exactly two requests, but only if nothing is left reserved.
BUDGET_SERVES = 2


def test_the_budget_serves_two_ordinary_requests(tmp_path, upstream):
    with RunningRouter(write_policy(tmp_path, keyed_policy(upstream.base_url))) as router:
        assert spendable_requests(router) == BUDGET_SERVES


NOT_JSON_USAGE = b'{"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": "lots", "completion_tokens": 1}}'
UNREADABLE_CHUNK = b'data: {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [1]}\n\ndata: [DONE]\n\n'


@pytest.mark.parametrize(
    ("reply", "stream"),
    [
        (RawReply(200, NOT_JSON_USAGE), False),
        (RawReply(200, UNREADABLE_CHUNK, content_type="text/event-stream"), True),
    ],
    ids=["usage-of-the-wrong-type", "stream-choice-that-is-not-an-object"],
)
def test_an_upstream_answer_nobody_expected_is_an_openai_shaped_error_that_leaves_nothing_reserved(
    tmp_path, upstream, reply, stream
):
    upstream.script(reply)
    with RunningRouter(write_policy(tmp_path, keyed_policy(upstream.base_url))) as router:
        failed = chat(router, stream=stream)
        assert failed.status_code == 502, failed.text
        assert set(failed.json()["error"]) == {"message", "type", "param", "code"}
        assert "Traceback" not in failed.text and upstream.base_url not in failed.text
        assert spendable_requests(router) == BUDGET_SERVES


def test_a_chunk_the_relay_cannot_read_mid_stream_ends_the_stream_with_an_error_and_done(tmp_path, upstream):
    first = b'data: {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": null}]}\n\n'
    broken = b'data: {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [], "usage": {"prompt_tokens": "lots"}}\n\n'
    upstream.script(RawReply(200, first + broken + b"data: [DONE]\n\n", content_type="text/event-stream"))
    with RunningRouter(write_policy(tmp_path, keyed_policy(upstream.base_url))) as router:
        streamed = chat(router, stream=True)
        assert streamed.status_code == 200
        assert '"error"' in streamed.text and streamed.text.endswith("data: [DONE]\n\n")
        assert spendable_requests(router) == BUDGET_SERVES  # settled at a few tokens: nothing left reserved


class WritesAllItMay(FakeOpenAIUpstream):
    """An upstream that writes as much as the request allows: a million tokens if it sets no limit."""

    def _chat_plan(self, body: dict, reply: Any) -> dict:
        plan = super()._chat_plan(body, reply)
        written = body.get("max_completion_tokens") or body.get("max_tokens") or 1_000_000
        plan["usage"] = {"prompt_tokens": 7, "completion_tokens": written, "total_tokens": 7 + written}
        return plan


def test_fifty_concurrent_requests_without_max_tokens_end_within_a_one_dollar_budget(tmp_path):
    # output at $100 / 1M tokens: the default 4,096-token cap is worth $0.41, a million tokens $100
    with WritesAllItMay() as greedy:
        policy = keyed_policy(
            greedy.base_url, budget_usd=1, price="input: 0, output: 100", defaults="expected_output_tokens: 256"
        )
        with RunningRouter(write_policy(tmp_path, policy)) as router:
            with ThreadPoolExecutor(max_workers=50) as pool:
                responses = list(pool.map(lambda _: chat(router), range(50)))
            samples = scrape(router.url, key=ADMIN)
        sent_limits = {r.json.get("max_tokens") for r in greedy.chat_requests}
    served = [r for r in responses if r.status_code == 200]
    assert served and all(r.status_code == 429 for r in responses if r.status_code != 200)
    assert sent_limits == {4096}
    spent = sum(float(r.headers["x-router-cost-usd"]) for r in served)
    assert spent <= 1.0
    assert metric_sum(samples, "router_cost_usd_total", team="web") <= 1.0


def test_a_stream_whose_client_leaves_before_the_first_token_is_cancelled_at_once(tmp_path, upstream):
    upstream.script(Hang(10), Hang(10))  # both candidates would hang past the 2 s TTFT timeout
    policy = keyed_policy(upstream.base_url, second_model=True)
    with RunningRouter(write_policy(tmp_path, policy)) as router:
        body = b'{"model": "standard", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", router.port)) as client:
            client.sendall(head + body)
            assert upstream.wait_for_requests(1, timeout=5)
        closed_at = time.monotonic()
        assert upstream.wait_for_disconnects(1, timeout=1.0), "the upstream call outlived its client by 1 s"
        time.sleep(2.5)  # past the TTFT timeout: a held call would have moved on to the next candidate
        samples = scrape(router.url, key=ADMIN)
        assert len(upstream.chat_requests) == 1 and upstream.pending_scripts == 1
        disconnected_at = upstream.disconnect_times[0]
        upstream.reset()
        assert spendable_requests(router) == BUDGET_SERVES  # the reservation was released
    assert disconnected_at - closed_at < 1.0
    assert metric_sum(samples, "router_requests_total", outcome="cancelled") == 1
    assert metric_sum(samples, "router_upstream_errors_total") == 0
    assert metric_sum(samples, "router_fallbacks_total") == 0


def test_a_streams_total_timeout_counts_from_the_start_of_the_request(tmp_path, upstream):
    # first content after ~1.2 s, then ~1 s more of chunks: within 1.5 s of the first chunk,
    # but past 1.5 s from the start of the request
    upstream.script(Reply(content="a b c d e f g h", delay_s=1.0, chunk_delay_s=0.1))
    policy = one_model_policy(upstream.base_url, ttft_timeout_s=1.4, timeout_s=1.5, retries=0)
    with RunningRouter(write_policy(tmp_path, policy)) as router:
        started = time.monotonic()
        with httpx.stream(
            "POST",
            f"{router.base_url}/chat/completions",
            json={"model": "standard", "messages": HELLO, "stream": True},
            timeout=10,
        ) as response:
            body = response.read().decode()
        elapsed = time.monotonic() - started
    assert '"code":"timeout"' in body and body.endswith("data: [DONE]\n\n")
    assert elapsed < 1.9


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.__dict__ for r in caplog.records if r.name == "router.access" and r.__dict__.get("route")]


def test_the_access_log_says_unavailable_for_a_503_from_a_state_store_outage(tmp_path, upstream, caplog):
    caplog.set_level(logging.INFO, logger="router.access")
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens: budgets fail closed
    with RunningRouter(write_policy(tmp_path, keyed_policy(upstream.base_url)), redis_url=dead_redis) as router:
        response = chat(router)
    assert response.status_code == 503
    (line,) = access_lines(caplog)
    assert (line["status"], line["outcome"]) == (503, "unavailable")
    assert upstream.chat_requests == []


def test_the_access_log_says_rate_limited_for_a_429_from_a_spent_budget(tmp_path, upstream, caplog):
    caplog.set_level(logging.INFO, logger="router.access")
    with RunningRouter(write_policy(tmp_path, keyed_policy(upstream.base_url))) as router:
        assert spendable_requests(router) == BUDGET_SERVES
    statuses = [(line["status"], line["outcome"]) for line in access_lines(caplog)]
    assert statuses == [(200, "success")] * BUDGET_SERVES + [(429, "rate_limited")]


def test_a_cache_hit_passes_the_rate_limit_costs_nothing_and_is_counted_as_a_success(tmp_path, upstream):
    policy = keyed_policy(upstream.base_url, route=", cache: {ttl_s: 60}", limits=", limits: {rpm: 2}")
    with RunningRouter(write_policy(tmp_path, policy)) as router:
        miss, hit, limited = chat(router, seed=1), chat(router, seed=1), chat(router, seed=1)
        samples = scrape(router.url, key=ADMIN)
    assert (miss.headers["x-router-cache"], hit.headers["x-router-cache"]) == ("miss", "hit")
    assert hit.headers["x-router-cost-usd"] == "0.00000000"
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert len(upstream.chat_requests) == 1
    assert metric_sum(samples, "router_requests_total", outcome="success") == 2
    assert metric_sum(samples, "router_requests_total", outcome="rate_limited") == 1
    assert metric_sum(samples, "gen_ai_server_request_duration_seconds_count", route="standard") == 3
