"""Metrics as users see them.

- promtool: the compose Prometheus config (with its real rule glob), the alert rules and their
  unit tests, and the router's ``/metrics`` exposition after traffic.
- The Grafana dashboard: built by ``deploy/grafana/build_dashboard.py``, wired to the
  provisioned data source, and using only the metric names of the product contract.
- Live: a real Prometheus (Debian's package, installed by scripts/services.sh) scrapes
  ``router serve --workers 2`` every second while traffic with known usage flows through fake
  upstreams. Every dashboard query and every alert's measured quantity must return data, every
  rule must evaluate cleanly, the scraped cost must equal usage × price to the cent, and each
  metric must count what the traffic did.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml  # type: ignore[import-untyped]
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes import ErrorReply, FakeOpenAIUpstream, RawReply, Reply, StreamThenReset
from tests.processes import RouterProcess, free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES_DIR = PROMETHEUS_DIR / "rules"
RULE_TESTS = PROMETHEUS_DIR / "tests" / "router_test.yml"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "router.json"
MOUNTED_RULES_DIR = "/etc/prometheus/rules/"  # where docker-compose.yml mounts RULES_DIR

HISTOGRAMS = {
    "gen_ai_client_operation_duration_seconds",
    "gen_ai_client_token_usage",
    "gen_ai_server_request_duration_seconds",
    "gen_ai_server_time_to_first_token_seconds",
    "router_overhead_seconds",
    "router_difficulty",
}
CONTRACT_METRICS = HISTOGRAMS | {
    "router_requests_total",
    "router_cost_usd_total",
    "router_savings_usd_total",
    "router_tokens_total",
    "router_fallbacks_total",
    "router_upstream_errors_total",
    "router_inflight_requests",
    "router_circuit_state",
    "router_budget_rejections_total",
    "router_rate_limited_total",
    "router_policy_reloads_total",
    "router_policy_info",
    "router_escalations_total",
    "router_shadow_verdicts_total",
    "router_shadow_cost_usd_total",
}
OUTCOMES = {
    "success",
    "client_error",
    "upstream_error",
    "no_candidate",
    "rate_limited",
    "stream_error",
    "cancelled",
    "timeout",
}
ERROR_REASONS = {
    "connect_error", "timeout", "ttft_timeout", "idle_timeout", "rate_limited", "server_error",
    "auth_error", "client_error", "bad_response", "stream_error",
}  # fmt: skip
SHADOW_DROP_REASONS = {"queue_full", "budget", "shutdown", "state_store"}  # router_shadow_dropped_total{reason}
VERDICTS = {"better", "same", "worse", "error"}
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed: run scripts/services.sh (make test does) or apt-get install prometheus")
    return subprocess.run([binary, *args], capture_output=True, text=True, input=stdin, timeout=60)


def deployed_config() -> dict[str, Any]:
    return yaml.safe_load(CONFIG.read_text())


def local_rule_files(config: dict[str, Any]) -> list[str]:
    """The config's rule globs, pointed at the repository's rules directory instead of the
    compose mount: every file the glob matches in the container is checked."""
    assert all(path.startswith(MOUNTED_RULES_DIR) for path in config["rule_files"]), config["rule_files"]
    return [f"{RULES_DIR}/{path.removeprefix(MOUNTED_RULES_DIR)}" for path in config["rule_files"]]


def alert_rules() -> list[dict[str, Any]]:
    rules = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(rule for rule in group["rules"] if "alert" in rule)
    return rules


def measured_quantity(expr: str) -> str:
    """An alert's expression without its final threshold comparison."""
    flat = " ".join(expr.split())
    match = re.fullmatch(r"(.*\S)\s*(?:==|!=|>=|<=|>|<)\s*[-+]?[0-9.]+(?:e[-+]?[0-9]+)?", flat)
    assert match, f"alert expression is not '<quantity> <comparison> <number>': {flat}"
    return match.group(1)


# --------------------------------------------------------------------------- static checks


def test_prometheus_config_is_valid_with_its_real_rule_glob(tmp_path: Path) -> None:
    config = deployed_config()
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    jobs = config["scrape_configs"]
    assert [job["job_name"] for job in jobs] == ["tier-router"]
    assert jobs[0]["static_configs"] == [{"targets": ["router-1:8000", "router-2:8000"]}]
    interval = jobs[0].get("scrape_interval", config["global"]["scrape_interval"])
    assert re.fullmatch(r"\d+s", interval) and 5 <= int(interval[:-1]) <= 15, interval
    config["rule_files"] = local_rule_files(config)
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    checked = promtool("check", "config", str(local))  # also checks each rule file the glob matches
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_alert_rules_are_valid() -> None:
    files = sorted(RULES_DIR.glob("*.yml"))
    assert files, RULES_DIR
    checked = promtool("check", "rules", *map(str, files))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    names = {rule["alert"] for rule in alert_rules()}
    assert {
        "RouterCostBurnRateHigh",
        "RouterFallbackRateHigh",
        "RouterErrorRateHigh",
        "RouterTTFTSlow",
        "RouterPolicyReloadFailed",
        "RouterCircuitOpen",
    } <= names
    for rule in alert_rules():
        assert "for" in rule and rule["labels"].get("severity") in {"warning", "critical"}, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        measured_quantity(rule["expr"])


def test_alert_rules_fire_and_stay_quiet_as_their_unit_tests_say() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert firing == names, f"alerts without a firing case: {names - firing}"
    assert quiet == names, f"alerts without a quiet case: {names - quiet}"


def test_the_committed_dashboard_is_what_its_builder_makes() -> None:
    sys.path.insert(0, str(GRAFANA_DIR))
    try:
        import build_dashboard
    finally:
        sys.path.pop(0)
    assert DASHBOARD.read_text() == build_dashboard.render(), "run: python deploy/grafana/build_dashboard.py"


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard() -> None:
    datasources = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert len(datasources) == 1
    source = datasources[0]
    assert (source["type"], source["uid"], source["url"], source["access"]) == (
        "prometheus",
        "prometheus",
        "http://prometheus:9090",
        "proxy",
    )
    providers = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "dashboards.yml").read_text())[
        "providers"
    ]
    assert [(p["type"], p["options"]["path"]) for p in providers] == [("file", "/var/lib/grafana/dashboards")]

    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and 36 <= dashboard["schemaVersion"] <= 41
    (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus" and variable["current"]["value"] == source["uid"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), panel["title"]
        for ref in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]:
            assert ref["type"] == "prometheus" and ref["uid"] in {"${datasource}", source["uid"]}, panel["title"]


def test_the_dashboard_uses_only_contract_metrics_and_covers_what_users_watch() -> None:
    used: set[str] = set()
    for title, expr in dashboard_targets():
        names = metric_names(expr)
        assert names, (title, expr)
        unknown = {n for n in names if base_metric(n) not in CONTRACT_METRICS}
        assert not unknown, (title, unknown)
        used |= {base_metric(n) for n in names}
    assert used == CONTRACT_METRICS, f"not on the dashboard: {CONTRACT_METRICS - used}"
    titles = " | ".join(title.lower() for title, _ in dashboard_targets())
    for topic in ("by route", "by model", "error rate", "cost per hour by tier", "cost per hour by model", "cost per hour by team",
                  "cumulative", "savings per hour", "tier mix", "latency", "time to first token", "tokens per second",
                  "fallbacks", "circuit", "budget", "rate-limited", "overhead", "at least as good as the reference",
                  "verdicts", "shadow spend"):  # fmt: skip
        assert topic in titles, topic


def dashboard_targets() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel.get("targets", [])]


PROMQL_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords,
    label names (in matchers or grouping clauses), durations or string literals."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.:$])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        if not match.group(2) and match.group(1).lower() not in PROMQL_KEYWORDS:
            names.add(match.group(1))
    return names


def base_metric(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name.removesuffix(suffix) in HISTOGRAMS:
            return name.removesuffix(suffix)
    return name


def grafana_expr(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unsubstituted Grafana variable in {expr}"
    return expr


# --------------------------------------------------------------------------- live scenario

PRICES = {  # USD per 1M tokens: (input, output, cached input)
    "cheap-model": (0.5, 1.5, 0.25),
    "pricey-model": (5.0, 15.0, 2.5),
    "embed-model": (0.1, 0.0, 0.1),
}
BASELINE = "pricey-model"
PROVIDER = {"cheap-model": "alpha", "pricey-model": "beta", "embed-model": "alpha"}
TIER = {"standard": "standard", "frontier": "frontier", "embed": "small", "auto": "standard"}
HELLO = [{"role": "user", "content": "Say hello."}]
# Every answer on the auto route is shadow-evaluated; reference and judge are pricey-model (the
# beta upstream), whose replies for them are scripted before the request and consumed before
# the next one (the traffic waits for each verdict).
SHADOW_REFERENCE = SHADOW_JUDGE = "pricey-model"
SHADOW_USAGE = {"reference": (1_000, 100, 0), "judge": (2_000, 20, 0)}


def policy_text(alpha_url: str, beta_url: str) -> str:
    def price(model: str) -> str:
        p = PRICES[model]
        return f"{{input: {p[0]}, output: {p[1]}, cached_input: {p[2]}}}"

    return f"""version: 1
tiers: [frontier, standard, small]
providers:
  alpha: {{type: openai, base_url: "{alpha_url}", api_key: sk-alpha}}
  beta: {{type: openai, base_url: "{beta_url}", api_key: sk-beta}}
models:
  cheap-model: {{provider: alpha, upstream: alpha-chat-small, tier: standard, price: {price("cheap-model")}, context_window: 1000000}}
  pricey-model: {{provider: beta, upstream: beta-chat-large, tier: frontier, price: {price("pricey-model")}, context_window: 1000000}}
  embed-model: {{provider: alpha, upstream: text-embedding-3-small, tier: small, kind: embedding, price: {price("embed-model")}, context_window: 8191}}
routes:
  standard: {{tier: standard}}
  frontier: {{tier: frontier}}
  embed: {{tier: small}}
  auto: {{tier: standard, escalate: [{{above: 0.99, tier: frontier}}]}}
defaults: {{route: standard, retries: 0, baseline_model: {BASELINE}, timeout_s: 10, ttft_timeout_s: 5}}
shadow:
  - {{route: auto, sample: 1.0, reference: {SHADOW_REFERENCE}, judge: {SHADOW_JUDGE}, budget: {{usd: 10, per: day}}}}
"""


def usd(model: str, prompt: int, completion: int, cached: int = 0) -> float:
    price_in, price_out, price_cached = PRICES[model]
    return ((prompt - cached) * price_in + cached * price_cached + completion * price_out) / 1e6


@dataclass(repr=False)
class Ledger:
    """What the traffic did, as the metrics should count it."""

    cost: Counter[tuple[str, str]] = field(default_factory=Counter)  # (route, model) -> USD, reported usage
    savings: Counter[str] = field(default_factory=Counter)  # chat route -> USD, reported usage
    tokens: Counter[tuple[str, str]] = field(default_factory=Counter)  # (model, type), reported usage
    reported: Counter[tuple[str, str]] = field(
        default_factory=Counter
    )  # (model, input|output) of upstream-reported usage
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (route, outcome)
    answered: Counter[tuple[str, str]] = field(default_factory=Counter)  # (route, model) of successes
    attempts: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (operation, model, error_type)
    fallbacks: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    upstream_errors: Counter[tuple[str, str]] = field(default_factory=Counter)  # (model, reason)
    streams: Counter[tuple[str, str]] = field(default_factory=Counter)  # (route, model) with a first chunk
    escalations: Counter[tuple[str, str]] = field(default_factory=Counter)  # (route, tier the step chose)
    verdicts: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)  # (route, model, reference, verdict)
    shadow_usd: Counter[str] = field(default_factory=Counter)  # route -> reference and judge calls
    estimated_header_usd: float = 0.0  # x-router-cost-usd of answers without usage
    estimated_requests: int = 0  # all on cheap-model
    slow_stream_s: float = 0.0
    stream_usage_seen: list[Any] = field(default_factory=list)  # (include_usage, usage chunks the client saw)

    def answer(
        self, route: str, model: str, usage: tuple[int, int, int], *, operation: str = "chat", stream: bool = False
    ) -> None:
        prompt, completion, cached = usage
        cost = usd(model, prompt, completion, cached)
        self.cost[route, model] += cost
        if operation == "chat":
            self.savings[route] += usd(BASELINE, prompt, completion, cached) - cost
        self.tokens[model, "input"] += prompt
        self.tokens[model, "output"] += completion
        if cached:
            self.tokens[model, "cached"] += cached
        self.reported[model, "input"] += prompt
        self.reported[model, "output"] += completion
        self.outcomes[route, "success"] += 1
        self.answered[route, model] += 1
        self.attempts[operation, model, "none"] += 1
        if stream:
            self.streams[route, model] += 1

    def fail(self, model: str, reason: str) -> None:
        self.attempts["chat", model, reason] += 1
        self.upstream_errors[model, reason] += 1


def shadow_verdicts(router_url: str) -> float:
    exposition = httpx.get(f"{router_url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "router_shadow_verdicts_total"
    )


def send_traffic(
    client: openai.OpenAI,
    alpha: FakeOpenAIUpstream,
    beta: FakeOpenAIUpstream,
    ledger: Ledger,
    router_url: str,
    *,
    slow_stream: bool,
) -> None:
    def chat(route: str, **extra: Any) -> Any:
        return client.chat.completions.with_raw_response.create(model=route, messages=HELLO, **extra)

    # non-stream, then non-stream with cached prompt tokens (cheap-model on the standard route)
    for usage in ((200_000, 2_000, 0), (150_000, 4_000, 100_000)):
        alpha.script(Reply(usage=usage))
        raw = chat("standard")
        assert raw.headers["x-router-model"] == "cheap-model"
        assert float(raw.headers["x-router-cost-usd"]) == pytest.approx(usd("cheap-model", *usage), abs=1e-8)
        ledger.answer("standard", "cheap-model", usage)

    # a stream without include_usage: the proxy still asks the upstream for usage
    alpha.script(Reply(usage=(80_000, 2_000, 20_000)))
    chunks = list(client.chat.completions.create(model="standard", messages=HELLO, stream=True))
    ledger.stream_usage_seen.append((False, [c.usage for c in chunks if c.usage]))
    ledger.answer("standard", "cheap-model", (80_000, 2_000, 20_000), stream=True)

    # a stream with include_usage on the frontier route
    beta.script(Reply(usage=(120_000, 3_000, 0)))
    chunks = list(
        client.chat.completions.create(
            model="frontier", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    ledger.stream_usage_seen.append(
        (True, [(c.usage.prompt_tokens, c.usage.completion_tokens) for c in chunks if c.usage])
    )
    ledger.answer("frontier", "pricey-model", (120_000, 3_000, 0), stream=True)

    # frontier non-stream with cached tokens
    beta.script(Reply(usage=(200_000, 1_000, 50_000)))
    assert chat("frontier").headers["x-router-model"] == "pricey-model"
    ledger.answer("frontier", "pricey-model", (200_000, 1_000, 50_000))

    # a fallback: cheap-model answers 500, pricey-model answers
    alpha.script(ErrorReply(500))
    beta.script(Reply(usage=(50_000, 500, 0)))
    raw = chat("standard")
    assert (raw.headers["x-router-model"], raw.headers["x-router-attempts"]) == ("pricey-model", "2")
    ledger.fail("cheap-model", "server_error")
    ledger.fallbacks["cheap-model", "pricey-model", "server_error"] += 1
    ledger.answer("standard", "pricey-model", (50_000, 500, 0))

    # an upstream 400 is the request's fault: passed on, not retried
    alpha.script(ErrorReply(400))
    with pytest.raises(openai.BadRequestError):
        chat("standard")
    ledger.fail("cheap-model", "client_error")
    ledger.outcomes["standard", "client_error"] += 1

    # every candidate fails: 502
    alpha.script(ErrorReply(503))
    beta.script(ErrorReply(503))
    with pytest.raises(openai.APIStatusError) as failed:
        chat("standard")
    assert failed.value.status_code == 502
    ledger.fail("cheap-model", "server_error")
    ledger.fallbacks["cheap-model", "pricey-model", "server_error"] += 1
    ledger.fail("pricey-model", "server_error")
    ledger.outcomes["standard", "upstream_error"] += 1

    # an answer without usage: estimated, and labelled so
    no_usage = {"id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "alpha-chat-small",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "An answer without usage."}, "finish_reason": "stop"}]}  # fmt: skip
    alpha.script(RawReply(200, json.dumps(no_usage).encode()))
    raw = chat("standard")
    assert raw.headers["x-router-cost-estimated"] == "true"
    ledger.estimated_header_usd += float(raw.headers["x-router-cost-usd"])
    ledger.estimated_requests += 1
    ledger.outcomes["standard", "success"] += 1
    ledger.answered["standard", "cheap-model"] += 1
    ledger.attempts["chat", "cheap-model", "none"] += 1

    # embeddings on their own route
    alpha.script_embeddings(Reply(usage=(30_000, 0)))
    assert client.embeddings.create(model="embed", input="hello").model == "embed-model"
    ledger.answer("embed", "embed-model", (30_000, 0, 0), operation="embeddings")

    # an easy prompt on the escalating route stays on its tier and shows its difficulty; its
    # answer is shadow-evaluated against pricey-model: cheap-model's answer wins in both orders,
    # "better" (the same series in both rounds, so its rate is positive at the end)
    verdict, winners = "better", ("A", "B")
    beta.script(
        Reply(usage=SHADOW_USAGE["reference"]),
        *(Reply(content=json.dumps({"winner": w, "reason": "one line"}), usage=SHADOW_USAGE["judge"]) for w in winners),
    )
    alpha.script(Reply(usage=(1_000, 100, 0)))
    raw = chat("auto")
    assert raw.headers["x-router-model"] == "cheap-model"
    assert 0 <= float(raw.headers["x-router-difficulty"]) <= 0.99
    ledger.answer("auto", "cheap-model", (1_000, 100, 0))
    ledger.escalations["auto", "standard"] += 1
    ledger.verdicts["auto", "cheap-model", SHADOW_REFERENCE, verdict] += 1
    ledger.shadow_usd["auto"] += usd(SHADOW_REFERENCE, *SHADOW_USAGE["reference"]) + 2 * usd(
        SHADOW_JUDGE, *SHADOW_USAGE["judge"]
    )
    expected = sum(ledger.verdicts.values())
    wait_until(lambda: shadow_verdicts(router_url) >= expected, 15, f"{expected} shadow verdicts on /metrics")
    assert beta.pending_scripts == 0

    # the upstream drops the connection mid-stream: in-band error, usage estimated
    alpha.script(StreamThenReset(chunks_before_reset=2))
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model="standard", messages=HELLO, stream=True))
    ledger.outcomes["standard", "stream_error"] += 1
    ledger.streams["standard", "cheap-model"] += 1
    ledger.estimated_requests += 1
    ledger.fail("cheap-model", "stream_error")

    if slow_stream:  # a stream that takes about a second after its first chunk
        alpha.script(
            Reply(content="one two three four five six seven eight nine ten", usage=(10_000, 10, 0), chunk_delay_s=0.08)
        )
        started = time.perf_counter()
        chunks = list(client.chat.completions.create(model="standard", messages=HELLO, stream=True))
        ledger.slow_stream_s = time.perf_counter() - started
        assert len(chunks) >= 10
        ledger.answer("standard", "cheap-model", (10_000, 10, 0), stream=True)


class Prometheus:
    """Debian's prometheus binary on a free loopback port, configured like the compose one
    (same job, same rules) but scraping the test's router every second."""

    def __init__(self, directory: Path, target: str) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail(
                "prometheus is not installed: run scripts/services.sh (make test does) or apt-get install prometheus"
            )
        config = deployed_config()
        config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = local_rule_files(config)
        (job,) = config["scrape_configs"]
        job["static_configs"] = [{"targets": [target]}]
        self.job = job["job_name"]
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.log = directory / "prometheus.log"
        self.process = subprocess.Popen(
            [binary, f"--config.file={directory / 'prometheus.yml'}", f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=self.log.open("wb"),
        )  # fmt: skip
        wait_until(lambda: httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200, 30, "prometheus start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]

    def value(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    def last_scrape(self) -> float:
        """When the last successful scrape started (unix time), 0 before the first one. (On a
        plain selector, timestamp() gives the sample's time; on an expression, the query's.)"""
        result = self.query(f'up{{job="{self.job}"}}')
        if not result or result[0]["value"][1] != "1":
            return 0.0
        return float(self.query(f'timestamp(up{{job="{self.job}"}})')[0]["value"][1])

    def wait_for_scrapes(self, after: float, count: int) -> None:
        """Until ``count`` scrapes that started after ``after`` (unix time) are stored."""
        seen: set[float] = set()

        def enough() -> bool:
            stamp = self.last_scrape()
            if stamp > after:
                seen.add(stamp)
            return len(seen) >= count

        wait_until(enough, 30, f"{count} prometheus scrapes")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@dataclass(repr=False)
class Scenario:
    prometheus: Prometheus
    ledger: Ledger
    exposition: str
    policy_sha256: str
    router_log: str

    def samples(self, name: str) -> list[tuple[dict[str, str], float]]:
        return [
            (s.labels, s.value)
            for family in text_string_to_metric_families(self.exposition)
            for s in family.samples
            if s.name == name
        ]

    def by(self, name: str, *keys: str, **match: str) -> Counter[tuple[str, ...]]:
        """Sum of a metric's samples grouped by ``keys``, over samples whose labels include ``match``."""
        totals: Counter[tuple[str, ...]] = Counter()
        for labels, value in self.samples(name):
            if all(labels.get(k) == v for k, v in match.items()):
                totals[tuple(labels[k] for k in keys)] += value
        return totals


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Any:
    directory = tmp_path_factory.mktemp("observability")
    with ExitStack() as stack:
        alpha = stack.enter_context(FakeOpenAIUpstream())
        beta = stack.enter_context(FakeOpenAIUpstream())
        policy = directory / "policy.yaml"
        policy.write_text(policy_text(alpha.base_url, beta.base_url))
        multiproc = directory / "multiproc"
        multiproc.mkdir()
        router = RouterProcess(
            policy, workers=2, env={"PROMETHEUS_MULTIPROC_DIR": str(multiproc), "ROUTER_LOG_LEVEL": "warning"}
        )
        stack.enter_context(router)
        prometheus = Prometheus(directory / "prometheus", f"127.0.0.1:{router.port}")
        stack.callback(prometheus.stop)
        prometheus.wait_for_scrapes(0, 1)  # primed series exist before any traffic

        client = openai.OpenAI(base_url=f"{router.url}/v1", api_key="x", max_retries=0, timeout=30)
        ledger = Ledger()
        # Two rounds with a scrape in between, so every series exists before its last
        # increase and rates over the traffic are positive (quantiles are numbers, not NaN).
        send_traffic(client, alpha, beta, ledger, router.url, slow_stream=False)
        prometheus.wait_for_scrapes(time.time(), 1)
        send_traffic(client, alpha, beta, ledger, router.url, slow_stream=True)
        exposition = httpx.get(f"{router.url}/metrics", timeout=10).text
        prometheus.wait_for_scrapes(time.time(), 2)
        yield Scenario(prometheus, ledger, exposition, hashlib.sha256(policy.read_bytes()).hexdigest(), router.logs())


def finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(series["value"][1])) for series in result)


def test_every_dashboard_query_returns_data(scenario: Scenario) -> None:
    empty = []
    for title, expr in dashboard_targets():
        result = scenario.prometheus.query(grafana_expr(expr))
        if not finite(result):
            empty.append((title, expr, result))
    assert not empty, empty


def test_every_alert_measures_something_and_every_rule_evaluates(scenario: Scenario) -> None:
    empty = []
    for rule in alert_rules():
        result = scenario.prometheus.query(measured_quantity(rule["expr"]))
        if not finite(result):
            empty.append((rule["alert"], result))
    assert not empty, empty
    loaded = httpx.get(f"{scenario.prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = [rule for group in loaded for rule in group["rules"]]
    assert {rule["name"] for rule in rules} == {rule["alert"] for rule in alert_rules()}
    assert all(rule["health"] == "ok" for rule in rules), [
        (r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"
    ]


def test_scraped_cost_is_usage_times_price_to_the_cent(scenario: Scenario) -> None:
    ledger, prometheus = scenario.ledger, scenario.prometheus
    reported = sum(ledger.cost.values())
    assert reported > 1.0  # dollars: "to the cent" means something
    scraped_reported = prometheus.value('sum(router_cost_usd_total{estimated="false"})')
    assert scraped_reported == pytest.approx(reported, abs=0.005)
    assert scraped_reported == pytest.approx(reported, rel=1e-9)
    for (route, model), expected in ledger.cost.items():
        labels = f'route="{route}",tier="{TIER[route]}",model="{model}",provider="{PROVIDER[model]}",team="none",estimated="false"'
        assert prometheus.value(f"sum(router_cost_usd_total{{{labels}}})") == pytest.approx(expected, rel=1e-9), (
            route,
            model,
        )

    # Answers without usage are billed on the tokenizer's estimate, all on cheap-model: their
    # tokens are what router_tokens_total holds beyond the reported usage.
    estimated_in = (
        prometheus.value('sum(router_tokens_total{model="cheap-model",type="input"})')
        - ledger.tokens["cheap-model", "input"]
    )
    estimated_out = (
        prometheus.value('sum(router_tokens_total{model="cheap-model",type="output"})')
        - ledger.tokens["cheap-model", "output"]
    )
    assert 0 < estimated_in <= 100 * ledger.estimated_requests and 0 < estimated_out <= 100 * ledger.estimated_requests
    estimated = usd("cheap-model", int(estimated_in), int(estimated_out))
    scraped_estimated = prometheus.value('sum(router_cost_usd_total{estimated="true"})')
    assert scraped_estimated == pytest.approx(estimated, rel=1e-9)
    assert scraped_estimated >= ledger.estimated_header_usd - 1e-8  # the non-stream ones said so in a header

    scraped = prometheus.value("sum(router_cost_usd_total)")
    assert scraped == pytest.approx(reported + estimated, abs=0.005)
    assert scraped == pytest.approx(reported + estimated, rel=1e-9)

    savings = Counter(ledger.savings)
    savings["standard"] += usd(BASELINE, int(estimated_in), int(estimated_out)) - estimated
    for route in ("standard", "frontier"):
        scraped_savings = prometheus.value(f'sum(router_savings_usd_total{{route="{route}",team="none"}})')
        assert scraped_savings == pytest.approx(savings[route], rel=1e-9, abs=1e-12), route


def test_router_exposition_passes_promtool_check_metrics(scenario: Scenario) -> None:
    checked = promtool("check", "metrics", stdin=scenario.exposition)
    assert checked.returncode == 0 and not (checked.stdout + checked.stderr).strip(), checked.stdout + checked.stderr


def test_exposition_has_the_contract_metrics_with_bounded_labels(scenario: Scenario) -> None:
    families = {family.name: family for family in text_string_to_metric_families(scenario.exposition)}
    exposed = {name + ("_total" if family.type == "counter" else "") for name, family in families.items()}
    assert exposed >= CONTRACT_METRICS, CONTRACT_METRICS - exposed
    models, providers = set(PROVIDER), set(PROVIDER.values())
    allowed = {
        "route": set(TIER), "tier": set(TIER.values()), "model": models | {"none", "other"}, "provider": providers | {"none", "other"},
        "gen_ai_response_model": models | {"none", "other"}, "gen_ai_provider_name": providers | {"other"},
        "gen_ai_request_model": {"alpha-chat-small", "beta-chat-large", "text-embedding-3-small", "other"},
        "gen_ai_operation_name": {"chat", "embeddings"}, "gen_ai_token_type": {"input", "output"}, "outcome": OUTCOMES,
        "team": {"none"}, "estimated": {"true", "false"}, "type": {"input", "output", "cached"}, "from_model": models, "to_model": models,
        "reason": ERROR_REASONS, "result": {"success", "failure"}, "reference_model": {SHADOW_REFERENCE}, "verdict": VERDICTS,
    }  # fmt: skip
    for family in families.values():
        for sample in family.samples:
            for label, value in sample.labels.items():
                if family.name == "router_shadow_dropped" and label == "reason":
                    assert value in SHADOW_DROP_REASONS, (sample.name, value)
                elif label in allowed and not (
                    family.name == "gen_ai_server_request_duration_seconds" and label == "error_type"
                ):
                    assert value in allowed[label], (sample.name, label, value)
                if label == "error_type" and family.name.startswith("gen_ai_client_"):
                    assert value in ERROR_REASONS | {"none"}, (sample.name, value)


def test_metrics_count_what_the_traffic_did(scenario: Scenario) -> None:
    ledger, s = scenario.ledger, scenario
    assert s.by("router_requests_total", "route", "outcome") == +ledger.outcomes
    assert s.by("router_requests_total", "route", "model", outcome="success") == +ledger.answered
    assert s.by("router_tokens_total", "model", "type", model="pricey-model") == +Counter(
        {k: v for k, v in ledger.tokens.items() if k[0] == "pricey-model"}
    )
    assert s.by("router_tokens_total", "model", "type", model="embed-model") == +Counter(
        {("embed-model", "input"): 60_000}
    )
    assert s.by("router_tokens_total", "type", model="cheap-model")["cached",] == ledger.tokens["cheap-model", "cached"]
    assert s.by("router_fallbacks_total", "from_model", "to_model", "reason") == +ledger.fallbacks
    errors = s.by("router_upstream_errors_total", "model", "reason")
    assert {k: v for k, v in errors.items() if k[1] != "stream_error"} == {
        k: v for k, v in ledger.upstream_errors.items() if k[1] != "stream_error"
    }

    attempts = s.by(
        "gen_ai_client_operation_duration_seconds_count", "gen_ai_operation_name", "gen_ai_response_model", "error_type"
    )
    expected = +ledger.attempts
    mid_stream = {
        ("chat", "cheap-model", "none"),
        ("chat", "cheap-model", "stream_error"),
    }  # see test_a_failure_mid_stream_*
    assert {k: v for k, v in attempts.items() if k not in mid_stream} == {
        k: v for k, v in expected.items() if k not in mid_stream
    }
    requests_per_route: Counter[tuple[str, ...]] = Counter()
    for (route, _), n in ledger.outcomes.items():
        requests_per_route[route,] += n
    assert s.by("gen_ai_server_request_duration_seconds_count", "route") == requests_per_route
    assert (
        s.by("gen_ai_server_request_duration_seconds_count", "route", "gen_ai_response_model", error_type="none")
        == +ledger.answered
    )
    assert s.by("router_overhead_seconds_count", "route") == requests_per_route
    assert s.by("gen_ai_server_time_to_first_token_seconds_count", "route", "gen_ai_response_model") == +ledger.streams
    assert s.by("gen_ai_server_time_to_first_token_seconds_count", "gen_ai_provider_name") == Counter(
        {("alpha",): ledger.streams["standard", "cheap-model"], ("beta",): ledger.streams["frontier", "pricey-model"]}
    )

    # every decision on the escalating route, by the tier its step chose (frontier primed at 0)
    assert dict(s.by("router_escalations_total", "route", "tier")) == {
        ("auto", "frontier"): 0.0,
        **{k: float(v) for k, v in ledger.escalations.items()},
    }
    assert s.by("router_difficulty_count", "route") == Counter({("auto",): sum(ledger.escalations.values())})

    # every answer on the auto route judged against pricey-model, and what the judging cost
    assert s.by("router_shadow_verdicts_total", "route", "model", "reference_model", "verdict") == +ledger.verdicts
    shadow_usd = s.by("router_shadow_cost_usd_total", "route")
    assert shadow_usd.keys() == {("auto",)}
    assert shadow_usd["auto",] == pytest.approx(ledger.shadow_usd["auto"], rel=1e-9)

    # zero-valued series that exist from the start, and the policy this replica runs
    assert s.by("router_circuit_state", "model", "provider") == Counter({(m, p): 0 for m, p in PROVIDER.items()})
    assert set(s.by("router_circuit_state", "model", "provider")) == {(m, p) for m, p in PROVIDER.items()}
    inflight = s.by("router_inflight_requests", "provider")
    assert set(inflight) <= {("alpha",), ("beta",)} and all(v == 0 for v in inflight.values()), inflight
    for name in ("router_budget_rejections_total", "router_rate_limited_total"):
        assert dict(s.by(name, "team")) == {("none",): 0.0}, name
    assert dict(s.by("router_policy_reloads_total", "result")) == {("success",): 0.0, ("failure",): 0.0}
    assert dict(s.by("router_policy_info", "sha256")) == {(scenario.policy_sha256,): 1.0}


def test_streams_deliver_usage_only_when_asked(scenario: Scenario) -> None:
    for include_usage, seen in scenario.ledger.stream_usage_seen:
        assert seen == ([(120_000, 3_000)] if include_usage else []), (include_usage, seen)


# --------------------------------------------------------------------------- streams and attempts
# These three describe what the contract asks of streamed attempts; the proxy did not do it
# yet when they were written (usage and the attempt's duration and error are recorded when the
# first chunk arrives, not when the stream ends).


def test_streamed_usage_is_in_gen_ai_client_token_usage(scenario: Scenario) -> None:
    """gen_ai_client_token_usage has one observation per answered upstream call with the
    usage the upstream reported, streams included (not only non-stream completions)."""
    observed = scenario.by(
        "gen_ai_client_token_usage_sum", "gen_ai_response_model", "gen_ai_token_type", error_type="none"
    )
    missing = {
        key: (observed[key], reported) for key, reported in scenario.ledger.reported.items() if observed[key] < reported
    }
    assert not missing, f"(model, type): (observed token sum, reported by upstreams) {missing}"


def test_a_failure_mid_stream_counts_as_an_upstream_error(scenario: Scenario) -> None:
    """An upstream that drops a stream after its first chunk is a failed attempt:
    router_upstream_errors_total{reason="stream_error"} and the attempt's
    gen_ai_client_operation_duration_seconds{error_type="stream_error"}."""
    ledger = scenario.ledger
    errors = scenario.by("router_upstream_errors_total", "model", "reason")
    attempts = scenario.by(
        "gen_ai_client_operation_duration_seconds_count", "gen_ai_operation_name", "gen_ai_response_model", "error_type"
    )
    assert (
        errors["cheap-model", "stream_error"],
        attempts["chat", "cheap-model", "stream_error"],
        attempts["chat", "cheap-model", "none"],
    ) == (
        ledger.upstream_errors["cheap-model", "stream_error"],
        ledger.attempts["chat", "cheap-model", "stream_error"],
        ledger.attempts["chat", "cheap-model", "none"],
    ), "(upstream_errors stream_error, attempts with error_type stream_error, successful attempts) of cheap-model"


def test_a_streamed_attempt_lasts_until_the_stream_ends(scenario: Scenario) -> None:
    """gen_ai_client_operation_duration_seconds is the upstream attempt's duration: for a
    stream, until its last chunk, not until its first."""
    recorded = scenario.by("gen_ai_client_operation_duration_seconds_sum", "gen_ai_response_model", error_type="none")[
        "cheap-model",
    ]
    slow = scenario.ledger.slow_stream_s
    assert slow > 0.7
    assert recorded >= 0.8 * slow, (
        f"cheap-model's successful attempts add up to {recorded:.3f}s, but one of its streams alone took {slow:.3f}s"
    )
