"""Live policy reload and graceful shutdown, on real files, sockets and signals."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from router.auth import digest_of
from tests.fakes import Reply
from tests.harness import RunningRouter, metric_sum, scrape
from tests.processes import START_WAIT_S, free_port, wait_until

HELLO = [{"role": "user", "content": "hi"}]
ADMIN_KEY = "sk-tr-admin-0123456789"
USER_KEY = "sk-tr-user-0123456789"


def policy_text(upstream_url: str, model: str, keys: bool = False) -> str:
    keys_section = (
        f'keys:\n  - {{hash: "sha256:{digest_of(ADMIN_KEY)}", name: ops, team: ops, admin: true}}\n'
        f'  - {{hash: "sha256:{digest_of(USER_KEY)}", name: user, team: web}}\n'
        if keys
        else ""
    )
    return (
        "version: 1\ntiers: [standard]\n"
        f'providers:\n  up: {{type: openai, base_url: "{upstream_url}", api_key: sk-x}}\n'
        f"models:\n  {model}: {{provider: up, upstream: gpt-4o-mini, tier: standard, price: {{input: 1, output: 1}}, context_window: 128000}}\n"
        "routes:\n  standard: {tier: standard}\n"
        f"{keys_section}"
        "defaults: {route: standard, retries: 0, timeout_s: 30, ttft_timeout_s: 10}\n"
    )


def replace_file(path: Path, text: str) -> None:
    """Write like an editor or a deploy tool: a temporary file renamed over the old one."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def model_names(router: RunningRouter, key: str | None = None) -> set[str]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return {m["id"] for m in httpx.get(f"{router.base_url}/models", headers=headers).json()["data"]}


def wait_for(condition, timeout_s: float) -> float:  # type: ignore[no-untyped-def]
    return wait_until(condition, timeout_s, "the condition")


# The policy watcher says nothing when its inotify watch is in place (no log line, metric or
# endpoint marks it), so the tests that edit the file give it WATCHER_START_S after start-up;
# the reload itself is then polled for.
WATCHER_START_S = 0.3


def test_a_valid_edit_is_picked_up_within_two_seconds(tmp_path, upstream):
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text(upstream.base_url, "model-a"))
    with RunningRouter(path) as router:
        time.sleep(WATCHER_START_S)  # the watcher is up
        replace_file(path, policy_text(upstream.base_url, "model-b"))
        elapsed = wait_for(lambda: "model-b" in model_names(router), timeout_s=5)
        answer = openai.OpenAI(base_url=router.base_url, api_key="x", max_retries=0).chat.completions.create(
            model="standard", messages=HELLO
        )
        samples = scrape(router.url)
    assert elapsed < 2.0
    assert answer.model == "model-b"
    assert metric_sum(samples, "router_policy_reloads_total", result="success") == 1
    new_sha = [k for k, v in samples.items() if k.startswith("router_policy_info") and v == 1]
    assert len(new_sha) == 1


def test_a_broken_edit_is_rejected_and_the_old_policy_keeps_answering(tmp_path, upstream, caplog):
    caplog.set_level(logging.ERROR, logger="router.reload")
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text(upstream.base_url, "model-a"))
    with RunningRouter(path) as router:
        time.sleep(WATCHER_START_S)  # the watcher is up
        replace_file(
            path, policy_text(upstream.base_url, "model-b").replace("tier: standard, price", "tier: gold, price")
        )
        wait_for(
            lambda: metric_sum(scrape(router.url), "router_policy_reloads_total", result="failure") >= 1, timeout_s=5
        )
        answer = openai.OpenAI(base_url=router.base_url, api_key="x", max_retries=0).chat.completions.create(
            model="standard", messages=HELLO
        )
    assert answer.model == "model-a"
    errors = [e for r in caplog.records for e in getattr(r, "errors", [])]
    assert errors == [f"{path}:6 models.model-b.tier: unknown tier 'gold' (tiers: standard)"]


def test_a_configmap_symlink_swap_is_picked_up(tmp_path, upstream):
    mount = tmp_path / "config"
    (mount / "..2026_01").mkdir(parents=True)
    (mount / "..2026_01" / "policy.yaml").write_text(policy_text(upstream.base_url, "model-a"))
    os.symlink("..2026_01", mount / "..data")
    os.symlink("..data/policy.yaml", mount / "policy.yaml")
    with RunningRouter(mount / "policy.yaml") as router:
        time.sleep(WATCHER_START_S)  # the watcher is up
        (mount / "..2026_02").mkdir()
        (mount / "..2026_02" / "policy.yaml").write_text(policy_text(upstream.base_url, "model-b"))
        os.symlink("..2026_02", mount / "..data_tmp")
        os.replace(mount / "..data_tmp", mount / "..data")  # what kubelet does
        elapsed = wait_for(lambda: "model-b" in model_names(router), timeout_s=5)
    assert elapsed < 2.0


def test_requests_in_flight_during_reloads_all_succeed(tmp_path, upstream):
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text(upstream.base_url, "model-a"))
    outcomes: list[tuple[int, str]] = []
    stop = threading.Event()

    def load(router: RunningRouter, stream: bool) -> None:
        with httpx.Client(base_url=router.base_url, timeout=10) as http:
            while not stop.is_set():
                body = {"model": "standard", "messages": HELLO, "stream": stream}
                response = http.post("/chat/completions", json=body)
                outcomes.append((response.status_code, response.text))

    with RunningRouter(path) as router:
        threads = [threading.Thread(target=load, args=(router, s)) for s in (False, True, False)]
        for thread in threads:
            thread.start()
        for model in ("model-b", "model-c", "model-d", "model-e"):
            time.sleep(0.3)  # the scenario: requests keep running on each policy for a while
            replace_file(path, policy_text(upstream.base_url, model))
            wait_for(lambda m=model: m in model_names(router), timeout_s=5)
        stop.set()
        for thread in threads:
            thread.join()
    assert len(outcomes) > 20
    assert all(status == 200 for status, _ in outcomes)
    streams = [text for _, text in outcomes if text.startswith("data:")]
    assert streams and all(text.endswith("data: [DONE]\n\n") and '"error"' not in text for text in streams)


def test_a_stream_in_flight_finishes_on_the_policy_it_started_with(tmp_path, upstream):
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text(upstream.base_url, "model-a"))
    upstream.script(Reply(content="one two three four five six", chunk_delay_s=0.3))
    with RunningRouter(path) as router:
        time.sleep(WATCHER_START_S)  # the watcher is up
        with httpx.stream(
            "POST", f"{router.base_url}/chat/completions", json={"messages": HELLO, "stream": True}, timeout=30
        ) as response:
            lines = response.iter_lines()
            next(lines)
            replace_file(path, policy_text(upstream.base_url, "model-b"))
            wait_for(lambda: "model-b" in model_names(router), timeout_s=5)
            rest = list(lines)
    body = "\n".join(rest)
    assert body.rstrip().endswith("data: [DONE]")
    assert '"model":"model-a"' in body and "model-b" not in body
    assert "six" in body


def test_admin_reload_endpoint(tmp_path, upstream):
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text(upstream.base_url, "model-a", keys=True))
    with RunningRouter(path, watch_policy=False) as router:

        def reload(key: str) -> httpx.Response:
            return httpx.post(f"{router.url}/admin/reload", headers={"authorization": f"Bearer {key}"})

        assert reload(USER_KEY).status_code == 403
        assert reload(ADMIN_KEY).json()["result"] == "unchanged"
        replace_file(path, policy_text(upstream.base_url, "model-b", keys=True))
        assert "model-a" in model_names(router, ADMIN_KEY)  # not watching: nothing changes by itself
        assert reload(ADMIN_KEY).json()["result"] == "success"
        assert "model-b" in model_names(router, ADMIN_KEY)
        replace_file(path, "version: 1\ntiers: [\n")
        failed = reload(ADMIN_KEY)
        assert failed.status_code == 422 and failed.json()["result"] == "failure"
        assert failed.json()["errors"][0].startswith(f"{path}:")
        assert "model-b" in model_names(router, ADMIN_KEY)


@pytest.mark.slow
def test_sigterm_drains_readiness_and_lets_a_stream_finish(tmp_path, upstream):
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text(upstream.base_url, "model-a"))
    port = free_port()
    env = {**os.environ, "ROUTER_DRAIN_DELAY_S": "1", "ROUTER_SHUTDOWN_GRACE_S": "20", "ROUTER_LOG_LEVEL": "warning"}
    process = subprocess.Popen(
        [sys.executable, "-m", "router", "serve", "--policy", str(path), "--port", str(port)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ready(base) == 200, START_WAIT_S, "readiness of router serve")
        upstream.script(Reply(content="a b c d e f g h", chunk_delay_s=0.4))
        with httpx.stream(
            "POST", f"{base}/v1/chat/completions", json={"messages": HELLO, "stream": True}, timeout=30
        ) as response:
            lines = response.iter_lines()
            next(lines)
            process.send_signal(signal.SIGTERM)
            # the drain delay (1 s) keeps the socket open with /readyz at 503: poll for it
            wait_until(lambda: _ready(base) == 503, 5, "/readyz at 503 during the drain")
            rest = [line for line in lines if line]
        exit_code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert rest[-1] == "data: [DONE]" and not any('"error"' in line for line in rest)
    assert exit_code == 0


def _ready(base: str) -> int:
    try:
        return httpx.get(f"{base}/readyz", timeout=1).status_code
    except httpx.HTTPError:
        return 0
