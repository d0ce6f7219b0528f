"""`make run` from a fresh clone answers an OpenAI SDK request through the simulated provider."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.processes import free_port

REPO = Path(__file__).resolve().parents[1]
PROVIDER_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GROQ_API_KEY", "TOGETHER_API_KEY", "LOCAL_LLM_URL")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_make_run_from_a_fresh_clone_answers_the_sdk(tmp_path: Path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=120)
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in PROVIDER_KEYS and not k.startswith(("ROUTER_", "VIRTUAL_ENV"))
    }
    env["ROUTER_PORT"] = str(port)
    log = (tmp_path / "run.log").open("w+")
    process = subprocess.Popen(
        ["make", "run"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        _wait_healthy(port, process, deadline_s=600)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="standard", messages=[{"role": "user", "content": "Hello?"}]
        )
        completion = raw.parse()
        assert raw.headers["x-router-provider"] == "sim"
        assert completion.choices[0].message.content
        assert completion.usage.total_tokens > 0
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    log.seek(0)
    output = log.read()
    assert "SIMULATED provider serving" in output
    assert f"127.0.0.1:{port}" in output


def _wait_healthy(port: int, process: subprocess.Popen, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"make run exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("make run did not become healthy in time")
