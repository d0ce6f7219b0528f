"""Exact cost per request from upstream usage, savings against the baseline, and the
access log: checked through response headers and the scraped ``/metrics``."""

from __future__ import annotations

import json
import logging
import time

import httpx
import openai
import pytest

from tests.fakes import ErrorReply, RawReply, Reply
from tests.harness import RunningRouter, metric_sum, scrape, write_policy

HELLO = [{"role": "user", "content": "hi"}]
CHEAP = {"input": 0.15, "output": 0.6, "cached_input": 0.075}  # cheap-model, USD per 1M
PRICEY = {"input": 2.5, "output": 10.0}  # pricey-model, the baseline


def cost(price: dict, prompt: int, completion: int, cached: int = 0) -> float:
    cached_price = price.get("cached_input", price["input"])
    return ((prompt - cached) * price["input"] + cached * cached_price + completion * price["output"]) / 1e6


def test_non_stream_cost_and_savings(client, router, upstream):
    upstream.script(Reply(usage=(120_000, 3_000)))
    raw = client.chat.completions.with_raw_response.create(model="standard", messages=HELLO)
    samples = scrape(router.url)
    expected = cost(CHEAP, 120_000, 3_000)
    assert float(raw.headers["x-router-cost-usd"]) == pytest.approx(expected)
    assert metric_sum(
        samples,
        "router_cost_usd_total",
        model="cheap-model",
        tier="standard",
        route="standard",
        team="none",
        estimated="false",
    ) == pytest.approx(expected)
    assert metric_sum(samples, "router_savings_usd_total", route="standard") == pytest.approx(
        cost(PRICEY, 120_000, 3_000) - expected
    )
    assert metric_sum(samples, "router_tokens_total", model="cheap-model", type="input") == 120_000
    assert metric_sum(samples, "router_tokens_total", model="cheap-model", type="output") == 3_000


def test_cached_input_tokens_are_priced_at_the_cached_price(client, router, upstream):
    upstream.script(Reply(usage=(100_000, 1_000, 80_000)))
    raw = client.chat.completions.with_raw_response.create(model="standard", messages=HELLO)
    assert float(raw.headers["x-router-cost-usd"]) == pytest.approx(cost(CHEAP, 100_000, 1_000, 80_000))
    assert metric_sum(scrape(router.url), "router_tokens_total", model="cheap-model", type="cached") == 80_000


def test_stream_cost_comes_from_the_usage_chunk_even_when_the_client_did_not_ask(client, router, upstream):
    upstream.script(Reply(usage=(50_000, 2_000)))
    list(client.chat.completions.create(model="standard", messages=HELLO, stream=True))
    samples = eventually_scrape(router, "router_cost_usd_total")
    assert metric_sum(samples, "router_cost_usd_total", estimated="false") == pytest.approx(cost(CHEAP, 50_000, 2_000))


def test_missing_usage_is_estimated_and_marked(client, router, upstream):
    body = {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "one two three four"},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
    }
    upstream.script(RawReply(200, json.dumps(body).encode()))
    raw = client.chat.completions.with_raw_response.create(model="standard", messages=HELLO)
    assert raw.headers["x-router-cost-estimated"] == "true"
    assert float(raw.headers["x-router-cost-usd"]) > 0
    samples = scrape(router.url)
    assert metric_sum(samples, "router_cost_usd_total", estimated="true") == pytest.approx(
        float(raw.headers["x-router-cost-usd"]), rel=1e-3
    )
    assert metric_sum(samples, "router_cost_usd_total", estimated="false") == 0


def test_after_a_fallback_only_the_model_that_answered_is_billed(client, router, upstream):
    upstream.script(ErrorReply(500), Reply(usage=(10_000, 1_000)))
    client.chat.completions.create(model="standard", messages=HELLO)
    samples = scrape(router.url)
    assert metric_sum(samples, "router_cost_usd_total", model="cheap-model") == 0
    assert metric_sum(samples, "router_cost_usd_total", model="pricey-model") == pytest.approx(
        cost(PRICEY, 10_000, 1_000)
    )
    assert (
        metric_sum(
            samples, "router_fallbacks_total", from_model="cheap-model", to_model="pricey-model", reason="server_error"
        )
        == 1
    )


def test_a_client_that_disconnects_mid_stream_is_billed_for_what_was_produced(router, upstream):
    upstream.script(Reply(content=" ".join(["word"] * 40), chunk_delay_s=0.05))
    with httpx.stream(
        "POST", f"{router.base_url}/chat/completions", json={"model": "standard", "messages": HELLO, "stream": True}
    ) as response:
        iterator = response.iter_lines()
        for _ in range(6):
            next(iterator)
    samples = eventually_scrape(router, "router_cost_usd_total")
    billed = metric_sum(samples, "router_cost_usd_total", estimated="true")
    assert billed > 0
    assert billed < cost(CHEAP, 20, 40)  # less than the whole answer would have cost
    assert metric_sum(samples, "router_requests_total", outcome="cancelled") == 1


def test_gpu_hour_priced_model_is_billed_from_measured_throughput(tmp_path, upstream):
    policy = f"""
    version: 1
    tiers: [standard]
    providers:
      local: {{type: openai, base_url: "{upstream.base_url}"}}
    models:
      llama-local: {{provider: local, upstream: llama, tier: standard, gpu_hour_usd: 3.6, gpu_tokens_per_second: 100, context_window: 8192}}
    routes: {{standard: {{tier: standard}}}}
    defaults: {{route: standard, retries: 0}}
    """
    upstream.script(Reply(usage=(10, 500), delay_s=0.5))
    with RunningRouter(write_policy(tmp_path, policy)) as router:
        explained = httpx.post(f"{router.base_url}/router/explain", json={"messages": HELLO, "max_tokens": 100}).json()
        raw = httpx.post(f"{router.base_url}/chat/completions", json={"messages": HELLO})
    # before any measurement: 3.6 USD/h at 100 tokens/s = 0.00001 USD per output token
    assert explained["candidates"][0]["output_usd_per_1m"] == pytest.approx(10.0)
    # measured: 500 tokens in ~0.5 s ≈ 1000 tokens/s, so 0.001 USD/s × 0.5 s ≈ 0.0005 USD
    billed = float(raw.headers["x-router-cost-usd"])
    assert 0.0003 < billed < 0.0006


def test_access_log_has_one_line_per_request_and_no_key_or_prompt(client, router, upstream, caplog):
    caplog.set_level(logging.INFO, logger="router.access")
    secret_prompt = "my card number is 4111-1111"
    canary = "sk-canary-0123456789"
    canary_client = openai.OpenAI(base_url=router.base_url, api_key=canary, max_retries=0)
    canary_client.chat.completions.create(model="standard", messages=[{"role": "user", "content": secret_prompt}])
    list(
        canary_client.chat.completions.create(
            model="standard", messages=[{"role": "user", "content": secret_prompt}], stream=True
        )
    )
    with pytest.raises(openai.NotFoundError):
        canary_client.chat.completions.create(model="nope", messages=HELLO)
    time.sleep(0.2)
    lines = [r for r in caplog.records if r.name == "router.access"]
    assert [r.status for r in lines] == [200, 200, 404]  # one line per request, errors included
    assert lines[2].path == "/v1/chat/completions" and lines[2].model is None  # refused before a model was chosen
    assert (lines[2].outcome, lines[2].route) == ("client_error", "other")
    for record in lines[:2]:
        for field in (
            "request_id",
            "route",
            "tier",
            "model",
            "provider",
            "attempts",
            "input_tokens",
            "output_tokens",
            "cost_usd",
            "cost_estimated",
            "latency_s",
            "ttft_s",
            "outcome",
            "team",
        ):
            assert hasattr(record, field), field
    everything = "\n".join(str(r.__dict__) for r in caplog.records)
    assert canary not in everything and secret_prompt not in everything and "sk-upstream" not in everything
    assert lines[1].ttft_s is not None and lines[1].stream is True


def eventually_scrape(router: RunningRouter, name: str, timeout_s: float = 3.0) -> dict[str, float]:
    deadline = time.monotonic() + timeout_s
    while True:
        samples = scrape(router.url)
        if metric_sum(samples, name) > 0 or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)
