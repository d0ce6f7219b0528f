"""The reshaped request path: services that outlive a reload, requests refused before a
model is chosen still counted, a stream failure that keeps the chunks read before it, and
``router explain`` making the same checks as the HTTP endpoint."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

import httpx
import openai
import pytest

from tests.fakes import RawReply, Reply
from tests.harness import RunningRouter, metric_sum, scrape, write_policy

HELLO = [{"role": "user", "content": "hi"}]
GPU_POLICY = """
version: 1
tiers: [standard]
providers:
  local: {{type: openai, base_url: "{url}"}}
models:
  llama-local: {{provider: local, upstream: llama, tier: standard, gpu_hour_usd: 3.6, gpu_tokens_per_second: 100, context_window: 8192}}
routes: {{standard: {{tier: standard}}}}
defaults: {{route: standard, retries: 0}}
"""


def test_a_reload_keeps_the_measured_throughput_behind_gpu_hour_prices(tmp_path, upstream):
    path = write_policy(tmp_path, GPU_POLICY.format(url=upstream.base_url))
    # first request: 500 tokens in ~0.1 s (thousands of tokens/s); second: 500 tokens in ~1 s (~500/s)
    upstream.script(Reply(usage=(10, 500), delay_s=0.1), Reply(usage=(10, 500), delay_s=1.0))
    with RunningRouter(path) as router:
        httpx.post(f"{router.base_url}/chat/completions", json={"messages": HELLO}, timeout=10)
        path.write_text(path.read_text() + "# edited: a new policy file, same models\n")
        httpx.post(f"{router.url}/admin/reload", timeout=10)  # or the file watcher got there first
        reloads = metric_sum(scrape(router.url), "router_policy_reloads_total", result="success")
        raw = httpx.post(f"{router.base_url}/chat/completions", json={"messages": HELLO}, timeout=10)
    assert reloads == 1
    # kept: 0.8 × (the first request's thousands of tokens/s) + 0.2 × ~500 ≥ ~1,000 tokens/s,
    # so 500 tokens cost at most ~0.0005 USD; reset: ~500 tokens/s alone, ~0.001 USD
    billed = float(raw.headers["x-router-cost-usd"])
    assert billed < 0.0006


def test_an_unknown_model_is_counted_and_logged_with_a_bounded_route(client, router, caplog):
    caplog.set_level(logging.INFO, logger="router.access")
    for name in ("no-such-model", "another-junk-name"):
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model=name, messages=HELLO)
    samples = scrape(router.url)
    counted = metric_sum(
        samples, "router_requests_total", route="other", tier="none", model="none", outcome="client_error"
    )
    assert counted == 2
    assert not any("no-such-model" in series for series in samples)
    time.sleep(0.2)
    lines = [r for r in caplog.records if r.name == "router.access"]
    assert [(r.status, r.outcome, r.route) for r in lines] == [(404, "client_error", "other")] * 2


def test_a_request_no_model_fits_is_counted_under_its_route_and_tier(tmp_path, upstream):
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with RunningRouter(write_policy(tmp_path, GPU_POLICY.format(url=upstream.base_url))) as router:
        refused = httpx.post(f"{router.base_url}/chat/completions", json={"messages": HELLO, "tools": [tool]})
        samples = scrape(router.url)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "no_model_fits_request"
    counted = metric_sum(
        samples, "router_requests_total", route="standard", tier="standard", model="none", outcome="client_error"
    )
    assert counted == 1


def test_a_stream_failure_still_delivers_the_chunks_read_before_it(router, upstream):
    def event(content: str) -> bytes:
        chunk = {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
        }
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    # all in one write: the second chunk is read in the same batch as the broken third
    body = event("Hello") + event(" world") + b"data: {not json\n\n"
    upstream.script(RawReply(200, body, content_type="text/event-stream"))
    with httpx.stream(
        "POST",
        f"{router.base_url}/chat/completions",
        json={"model": "standard", "messages": HELLO, "stream": True},
        timeout=10,
    ) as response:
        text = b"".join(response.iter_bytes()).decode()
    datas = [line[6:] for line in text.split("\n") if line.startswith("data: ")]
    assert datas[-1] == "[DONE]"
    error = json.loads(datas[-2])["error"]
    assert error["code"] == "stream_error"
    contents = [json.loads(d)["choices"][0]["delta"]["content"] for d in datas[:-2]]
    assert "".join(contents) == "Hello world"


def test_cli_explain_refuses_deeply_nested_tools_with_the_http_message(tmp_path, upstream):
    policy = write_policy(tmp_path, GPU_POLICY.format(url=upstream.base_url))
    nested: object = {}
    for _ in range(200):
        nested = {"items": nested}
    request = tmp_path / "request.json"
    tool = {"type": "function", "function": {"name": "f", "parameters": nested}}
    request.write_text(json.dumps({"messages": HELLO, "tools": [tool]}))
    result = subprocess.run(
        [sys.executable, "-m", "router", "explain", "--policy", str(policy), str(request)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "'tools' nests objects and arrays more than 64 levels deep" in result.stderr
