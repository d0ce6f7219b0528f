"""The ``router`` command line: check, explain, serve's fail-fast, ``python -m router``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.processes import START_WAIT_S, free_port, wait_until

ROUTER = [sys.executable, "-m", "router"]


def run(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ROUTER, *args], capture_output=True, text=True, timeout=60, env=env, input=stdin)


def test_check_prints_the_model_table(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    result = run("check", "policies/default.yaml")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["model", "tier", "provider", "kind"]
    gpt41 = next(line for line in lines if line.startswith("gpt-4.1 "))
    assert gpt41.split()[:7] == ["gpt-4.1", "frontier", "openai", "(openai)", "chat", "2", "8"]
    assert "disabled: OPENAI_API_KEY is not set" in gpt41
    assert "policies/default.yaml: OK" in result.stdout


def test_check_shows_the_located_error_and_exits_non_zero(tmp_path: Path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        Path("policies/demo.yaml")
        .read_text()
        .replace(
            "gpt-4.1:           {provider: openai, tier: frontier}",
            "gpt-4.1:           {provider: openai, tier: frontiers}",
        )
    )
    result = run("check", str(broken))
    assert result.returncode == 1
    assert f"{broken}:" in result.stderr
    assert "models.gpt-4.1.tier: unknown tier 'frontiers'" in result.stderr


def test_explain_prints_the_decision_without_calling_upstream(tmp_path: Path):
    request = tmp_path / "request.json"
    request.write_text(
        json.dumps({"model": "standard", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 100})
    )
    result = run("explain", "--policy", "policies/demo.yaml", str(request))
    assert result.returncode == 0, result.stderr
    decision = json.loads(result.stdout)
    costs = [c["estimated_cost_usd"] for c in decision["candidates"]]
    assert costs == sorted(costs)
    assert decision["candidates"][0]["model"] in {"gpt-4o-mini", "gpt-oss-120b"}
    assert {
        "model": "gpt-4.1-nano",
        "kind": "policy",
        "reason": "tier 'small' is below the required tier 'standard'",
    } in decision["excluded"]


def test_explain_reads_headers_and_stdin():
    body = json.dumps({"messages": [{"role": "user", "content": "hello"}]})
    result = run("explain", "--policy", "policies/demo.yaml", "-H", "x-team: research", "-", stdin=body)
    decision = json.loads(result.stdout)
    assert decision["tier"] == "frontier"
    assert "rule 'research team gets frontier' raised the tier to 'frontier'" in decision["reasons"]


def test_serve_refuses_an_invalid_policy_with_the_located_error(tmp_path: Path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 1\ntiers: [a]\nproviders: {}\n")
    result = run("serve", "--policy", str(broken), "--port", "0")
    assert result.returncode == 1
    assert f"{broken}:3 providers: " in result.stderr


def test_python_dash_m_router_is_the_same_program():
    result = run("--help")
    assert result.returncode == 0
    for command in ("serve", "check", "explain"):
        assert command in result.stdout


def test_serve_logs_json_lines_including_uvicorns_own(tmp_path: Path):
    import os
    import signal

    import httpx

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    process = subprocess.Popen(
        [*ROUTER, "serve", "--policy", "policies/default.yaml", "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        wait_until(
            lambda: httpx.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "hi"}]},
                timeout=5,
            ),
            START_WAIT_S,
            "an answer from router serve",
        )
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    loggers = {line["logger"] for line in lines}
    assert {"router", "router.access", "uvicorn.error"} <= loggers
    assert any("SIMULATED" in line["message"] for line in lines)
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
