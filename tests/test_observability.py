"""Metrics as users see them: a real Prometheus scrapes `router serve --workers 2` while
traffic with known usage flows; every dashboard panel and alert expression must return
data, and the scraped cost must equal usage × price. Plus promtool on config, rules,
rule unit tests and the exposition format."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml  # type: ignore[import-untyped]

from tests.fakes import ErrorReply, FakeOpenAIUpstream, RawReply, Reply
from tests.processes import RouterProcess, free_port, wait_until

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
RULES = DEPLOY / "prometheus" / "rules" / "router.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "router.json"
HELLO = [{"role": "user", "content": "hi"}]
PRICES = {  # USD per 1M tokens
    "cheap-model": {"input": 0.15, "output": 0.6, "cached_input": 0.075},
    "pricey-model": {"input": 2.5, "output": 10.0, "cached_input": 1.25},
}


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool comes with Debian's prometheus package (scripts/services.sh installs it)"
    return subprocess.run([binary, *args], capture_output=True, text=True, input=stdin, timeout=60)


def test_prometheus_config_and_rules_are_valid(tmp_path):
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    assert config["scrape_configs"][0]["static_configs"][0]["targets"] == ["router-1:8000", "router-2:8000"]
    config["rule_files"] = [str(RULES)]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    checked = promtool("check", "config", str(local))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules = promtool("check", "rules", str(RULES))
    assert rules.returncode == 0 and "SUCCESS: 7 rules found" in rules.stdout


def test_alert_rules_fire_and_stay_quiet_as_their_unit_tests_say():
    result = promtool("test", "rules", str(RULES.with_name("router_test.yml")))
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULES.with_name("router_test.yml").read_text()))
    assert tested == {r["alert"] for r in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]}


def test_the_committed_dashboard_is_what_its_builder_makes():
    sys.path.insert(0, str(DEPLOY / "grafana"))
    try:
        import build_dashboard
    finally:
        sys.path.pop(0)
    assert DASHBOARD.read_text() == build_dashboard.render()


def policy(upstream_url: str) -> str:
    models = "\n".join(
        f"  {name}: {{provider: up, upstream: {name}-upstream, tier: {tier}, price: {{input: {p['input']}, output: {p['output']}, cached_input: {p['cached_input']}}}, context_window: 1000000}}"
        for (name, p), tier in zip(PRICES.items(), ("standard", "frontier"))
    )
    return (
        "version: 1\ntiers: [frontier, standard]\n"
        f'providers:\n  up: {{type: openai, base_url: "{upstream_url}", api_key: sk-x}}\n'
        f"models:\n{models}\n"
        "routes:\n  standard: {tier: standard}\n  frontier: {tier: frontier}\n"
        "defaults: {route: standard, retries: 0, baseline_model: pricey-model, timeout_s: 10, ttft_timeout_s: 5}\n"
    )


def cost(model: str, prompt: int, completion: int, cached: int) -> float:
    p = PRICES[model]
    return ((prompt - cached) * p["input"] + cached * p["cached_input"] + completion * p["output"]) / 1e6


def send_traffic(url: str, upstream: FakeOpenAIUpstream) -> tuple[float, int]:
    """Requests with known usage; returns (expected cost, requests sent)."""
    expected = 0.0
    sent = 0
    with httpx.Client(base_url=f"{url}/v1", timeout=30) as http:
        def chat(model: str, stream: bool = False, include_usage: bool = False) -> httpx.Response:
            nonlocal sent
            sent += 1
            body = {"model": model, "messages": HELLO, "stream": stream}
            if include_usage:
                body["stream_options"] = {"include_usage": True}
            return http.post("/chat/completions", json=body)

        for prompt, completion, cached in ((200_000, 2_000, 0), (150_000, 4_000, 100_000), (90_000, 1_000, 0)):
            upstream.script(Reply(usage=(prompt, completion, cached)))
            assert chat("standard").status_code == 200
            expected += cost("cheap-model", prompt, completion, cached)
        upstream.script(Reply(usage=(120_000, 3_000, 0)))
        assert chat("frontier", stream=True, include_usage=True).text.endswith("data: [DONE]\n\n")
        expected += cost("pricey-model", 120_000, 3_000, 0)
        upstream.script(Reply(usage=(80_000, 2_000, 20_000)))
        assert chat("standard", stream=True).status_code == 200
        expected += cost("cheap-model", 80_000, 2_000, 20_000)
        upstream.script(ErrorReply(500), Reply(usage=(50_000, 500, 0)))  # cheap fails, pricey answers
        assert chat("standard").status_code == 200
        expected += cost("pricey-model", 50_000, 500, 0)
        upstream.script(ErrorReply(400))
        assert chat("standard").status_code == 400
        upstream.script(ErrorReply(503), ErrorReply(503))
        assert chat("standard").status_code == 502
        no_usage = {"id": "c", "object": "chat.completion", "created": 1, "model": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": "an answer without usage"}, "finish_reason": "stop"}]}
        upstream.script(RawReply(200, json.dumps(no_usage).encode()))
        estimated = chat("standard")
        assert estimated.headers["x-router-cost-estimated"] == "true"
        expected += float(estimated.headers["x-router-cost-usd"])
        for _ in range(4):
            upstream.script(Reply(usage=(10_000, 100, 0)))
            assert chat("standard").status_code == 200
            expected += cost("cheap-model", 10_000, 100, 0)
    return expected, sent


class Prometheus:
    def __init__(self, directory: Path, target: str) -> None:
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "tier-router", "static_configs": [{"targets": [target]}]}],
        }
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        binary = shutil.which("prometheus")
        assert binary, "Debian's prometheus package (scripts/services.sh installs it)"
        self.process = subprocess.Popen(
            [binary, f"--config.file={directory / 'prometheus.yml'}", f"--storage.tsdb.path={directory / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200, 30, "prometheus start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, expr: str) -> list[dict]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert response["status"] == "success", (expr, response)
        return response["data"]["result"]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


def grafana_expr(expr: str) -> str:
    return expr.replace("$__rate_interval", "1m").replace("$__range", "1h").replace("$__interval", "15s")


def alert_left_hand_side(expr: str) -> str:
    """The measured quantity of an alert: its expression without the final threshold."""
    flat = " ".join(expr.split())
    match = re.match(r"^(.*\S)\s*(>|<|==|>=|<=|!=)\s*[0-9.e+-]+$", flat)
    assert match, flat
    return match.group(1)


@pytest.mark.slow
def test_every_panel_and_alert_returns_data_and_cost_adds_up_to_the_cent(tmp_path):
    with FakeOpenAIUpstream() as upstream:
        policy_path = tmp_path / "policy.yaml"
        policy_path.write_text(policy(upstream.base_url))
        with RouterProcess(policy_path, workers=2, env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "multiproc")}) as router:
            exposition = httpx.get(f"{router.url}/metrics").text
            format_check = promtool("check", "metrics", stdin=exposition)
            prometheus = Prometheus(tmp_path, f"127.0.0.1:{router.port}")
            try:
                expected_cost, sent = send_traffic(router.url, upstream)
                wait_until(lambda: _value(prometheus.query("sum(router_requests_total)")) == sent, 30, "prometheus to scrape all requests")
                time.sleep(2.5)  # two more scrapes, so rates over the traffic exist
                scraped_cost = _value(prometheus.query("sum(router_cost_usd_total)"))
                panel_results = {expr: prometheus.query(grafana_expr(expr)) for expr in _dashboard_exprs()}
                alert_results = {rule["alert"]: prometheus.query(alert_left_hand_side(rule["expr"])) for rule in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]}
            finally:
                prometheus.stop()
    assert format_check.returncode == 0, format_check.stdout + format_check.stderr
    assert expected_cost > 0.5  # large enough for "to the cent" to mean something
    assert scraped_cost == pytest.approx(expected_cost, abs=0.005)
    assert scraped_cost == pytest.approx(expected_cost, rel=1e-7)  # the estimated request's header has 8 decimals
    empty_panels = [expr for expr, result in panel_results.items() if not result]
    assert not empty_panels, empty_panels
    empty_alerts = [name for name, result in alert_results.items() if not result]
    assert not empty_alerts, empty_alerts


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert len(exprs) >= 25
    without_groupings = [re.sub(r"by \([^)]*\)", "", expr) for expr in exprs]
    metric_names = {name for expr in without_groupings for name in re.findall(r"\b(router_\w+|gen_ai_\w+)", expr)}
    contract = {
        "gen_ai_client_operation_duration_seconds", "gen_ai_client_token_usage", "gen_ai_server_request_duration_seconds",
        "gen_ai_server_time_to_first_token_seconds", "router_requests_total", "router_cost_usd_total", "router_savings_usd_total",
        "router_tokens_total", "router_fallbacks_total", "router_upstream_errors_total", "router_overhead_seconds",
        "router_inflight_requests", "router_circuit_state", "router_budget_rejections_total", "router_rate_limited_total",
        "router_policy_reloads_total", "router_policy_info", "router_state_store_up",
    }
    assert {re.sub(r"_bucket$", "", n) for n in metric_names} <= contract
    return exprs


def _value(result: list[dict]) -> float:
    return float(result[0]["value"][1]) if result else -1.0
