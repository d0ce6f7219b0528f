"""``router simulate``: replay requests and access-log lines through a policy, offline.

Every test runs the real command (``python -m router simulate``); the fidelity test replays
the access log of a real ``router serve`` process in front of the fake OpenAI upstream.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from router.difficulty import load_predictor
from tests.fakes import FakeOpenAIUpstream
from tests.harness import write_policy
from tests.policies import key, model, policy, provider
from tests.processes import RouterProcess

ROUTER = [sys.executable, "-m", "router"]
WEB_SECRET = "sk-web-client-secret"
OPS_SECRET = "sk-ops-client-secret"
EASY = [{"role": "user", "content": "say hello"}]
HARD = [
    {
        "role": "user",
        "content": "Let a, b, c be positive reals with a + b + c = 3. Prove that "
        "a/(b^2 + 1) + b/(c^2 + 1) + c/(a^2 + 1) >= 3/2, and determine when equality holds. "
        "Then find the number of ordered triples of integers (x, y, z) with x^2 + y^2 + z^2 = 2xyz.",
    }
]
PRICES = {  # USD per 1M tokens: input, output, cached input
    "cheap": (0.15, 0.6, 0.075),
    "wide": (1.0, 4.0, None),
    "pricey": (2.5, 10.0, 1.25),
    "embed": (0.02, 0.0, None),
}


def simulate(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ROUTER, "simulate", *args], capture_output=True, text=True, timeout=120, input=stdin, check=False
    )


def report(*args: str) -> dict[str, Any]:
    done = simulate(*args, "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def cost(name: str, input_tokens: int, output_tokens: int, cached: int = 0) -> float:
    """The independent computation: tokens × the policy's price per million."""
    price_in, price_out, price_cached = PRICES[name]
    cached_in = min(cached, input_tokens) if price_cached is not None else 0
    return ((input_tokens - cached_in) * price_in + cached_in * (price_cached or 0) + output_tokens * price_out) / 1e6


def priced(name: str) -> tuple[float, ...]:
    return tuple(p for p in PRICES[name] if p is not None)


def routing_policy(base_url: str, threshold: float, **changes: Any) -> str:
    """cheap (8k context) and wide (200k) at standard, pricey at frontier, an embedding model;
    ``auto`` escalates to frontier above ``threshold``; the research team's header → frontier."""
    caps = ["tools"]
    models = {
        "cheap": model("up", "gpt-4o-mini", price=priced("cheap"), context_window=8000, capabilities=caps),
        "wide": model("up", "gpt-4o-mini", price=priced("wide"), context_window=200000, capabilities=caps),
        "pricey": model("up", "gpt-4o", "frontier", price=priced("pricey"), capabilities=caps),
        "embed": model("up", "text-embedding-3-small", kind="embedding", price=(0.02, 0), context_window=8191),
        **changes.pop("models", {}),
    }
    text = policy(
        providers={"up": provider(base_url)},
        models=models,
        tiers=["frontier", "standard", "small"],
        routes={
            "standard": {"tier": "standard"},
            "frontier": {"tier": "frontier"},
            "auto": {"tier": "standard", "escalate": [{"above": threshold, "tier": "frontier"}]},
        },
        keys=[
            key(WEB_SECRET, "web-app", "web", routes=["standard", "auto"]),
            key(OPS_SECRET, "ops-tool", "ops", allow_tier_override=True),
        ],
        baseline_model="pricey",
        **changes,
    )
    return text + (
        "rules:\n  - name: research gets frontier\n    when: {header: {x-team: research}}\n    set: {tier: frontier}\n"
    )


@pytest.fixture(scope="module")
def threshold() -> float:
    predictor = load_predictor()
    return round((predictor.score(EASY) + predictor.score(HARD)) / 2, 6)


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def chat(route: str, text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": route, "messages": [{"role": "user", "content": text}], **extra}


# costs and savings against an independent computation -----------------------------------------
def test_costs_and_savings_in_the_json_report_equal_usage_times_the_policys_prices(tmp_path, threshold):
    policy_path = write_policy(tmp_path, routing_policy("http://127.0.0.1:9/v1", threshold))
    long_text = "word " * 12000  # over cheap's 8k context window: only wide fits
    traffic = write_jsonl(
        tmp_path / "traffic.jsonl",
        [
            {
                "body": chat("standard"),
                "usage": {"prompt_tokens": 1000, "completion_tokens": 200, "cached_tokens": 600},
            },
            {"body": chat("standard", long_text), "usage": {"prompt_tokens": 12010, "completion_tokens": 50}},
            {"body": chat("frontier"), "key": "ops-tool", "usage": {"prompt_tokens": 3000, "completion_tokens": 400}},
            {
                "body": chat("standard"),
                "headers": {"X-Team": "research"},
                "usage": {"prompt_tokens": 500, "completion_tokens": 100, "cached_tokens": 500},
            },
            {"body": {"model": "standard", "input": "a sentence"}, "usage": {"prompt_tokens": 7}},
            {"body": chat("frontier"), "key": "web-app", "usage": {"prompt_tokens": 10, "completion_tokens": 10}},
            {"body": chat("standard", max_tokens=64)},  # no usage: the engine's estimate
        ],
    )
    out = tmp_path / "decisions.jsonl"
    document = report("--policy", str(policy_path), str(traffic), "--per-request", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]

    assert [r["model"] for r in rows] == ["cheap", "wide", "pricey", "pricey", "embed", None, "cheap"]
    assert rows[5]["unroutable"] == "model_not_allowed"
    estimated = rows[6]
    assert (estimated["usage_estimated"], estimated["output_tokens"]) == (True, 64)
    expected = [
        cost("cheap", 1000, 200, 600),
        cost("wide", 12010, 50),
        cost("pricey", 3000, 400),
        cost("pricey", 500, 100, 500),
        cost("embed", 7, 0),
        0.0,
        cost("cheap", estimated["input_tokens"], 64),
    ]
    baseline = [
        cost("pricey", 1000, 200, 600),
        cost("pricey", 12010, 50),
        cost("pricey", 3000, 400),
        cost("pricey", 500, 100, 500),
        cost("embed", 7, 0),  # an embedding is not priced against a chat baseline: no savings
        0.0,
        cost("pricey", estimated["input_tokens"], 64),
    ]
    assert [r["cost_usd"] for r in rows] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    [totals] = document["policies"]
    assert set(totals) == {
        "policy",
        "requests",
        "unroutable",
        "estimated_usage",
        "cost_usd",
        "baseline_cost_usd",
        "savings_usd",
        "by_route",
        "by_team",
        "by_tier",
        "by_model",
    }
    assert set(document) == {"policies", "moves"}
    assert totals["policy"] == str(policy_path)
    assert (totals["requests"], totals["estimated_usage"]) == (7, 1)
    assert totals["unroutable"] == {"requests": 1, "reasons": {"model_not_allowed": 1}}
    assert totals["cost_usd"] == pytest.approx(sum(expected), rel=1e-9)
    assert totals["baseline_cost_usd"] == pytest.approx(sum(baseline), rel=1e-9)
    assert totals["savings_usd"] == pytest.approx(sum(baseline) - sum(expected), rel=1e-9)
    assert totals["by_model"]["cheap"] == {
        "requests": 2,
        "input_tokens": 1000 + estimated["input_tokens"],
        "output_tokens": 264,
        "cost_usd": pytest.approx(expected[0] + expected[6], rel=1e-9),
    }
    assert totals["by_team"]["ops"]["cost_usd"] == pytest.approx(expected[2], rel=1e-9)
    assert (totals["by_tier"]["frontier"]["requests"], totals["by_tier"]["none"]["requests"]) == (2, 1)
    assert totals["by_route"]["standard"]["requests"] == 5


# a real `router serve` run, its access log replayed --------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory, threshold) -> Iterator[tuple[Path, Path, list[dict[str, Any]]]]:
    """A real ``router serve`` in front of the fake upstream (usage with cached input), sent a
    mix of requests; yields the policy, the process's log file and its access-log lines."""
    directory = tmp_path_factory.mktemp("served")
    with FakeOpenAIUpstream(usage=(1200, 300, 400)) as upstream:
        policy_path = write_policy(directory, routing_policy(upstream.base_url, threshold))
        with RouterProcess(policy_path, env={"ROUTER_LOG_LEVEL": "info"}) as router:
            web = openai.OpenAI(base_url=f"{router.url}/v1", api_key=WEB_SECRET, max_retries=0)
            ops = openai.OpenAI(base_url=f"{router.url}/v1", api_key=OPS_SECRET, max_retries=0)
            web.chat.completions.create(model="standard", messages=EASY)
            web.chat.completions.create(model="auto", messages=EASY)
            web.chat.completions.create(model="auto", messages=HARD)
            list(web.chat.completions.create(model="auto", messages=HARD, stream=True))
            web.chat.completions.create(
                model="standard", messages=EASY, extra_headers={"x-team": "research", "x-unread-header": "private"}
            )
            ops.chat.completions.create(model="standard", messages=[{"role": "user", "content": "word " * 9000}])
            ops.chat.completions.create(model="standard", messages=EASY, extra_headers={"x-router-tier": "frontier"})
            ops.chat.completions.create(
                model="standard",
                messages=EASY,
                tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            )
            ops.embeddings.create(model="standard", input="embed this")
            with pytest.raises(openai.PermissionDeniedError):
                web.chat.completions.create(model="frontier", messages=EASY)
        log = router.log
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("logger") == "router.access" and line.get("operation")]
    yield policy_path, log, access


def test_access_log_lines_of_a_real_serve_run_replay_to_the_models_and_costs_the_server_logged(served, tmp_path):
    policy_path, log, access = served
    assert len(access) == 10
    out = tmp_path / "decisions.jsonl"
    document = report("--policy", str(policy_path), str(log), "--per-request", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["model"] for r in rows] == [a["model"] for a in access]
    assert [r["tier"] for r in rows] == [a["tier"] for a in access]
    assert [r["cost_usd"] for r in rows] == pytest.approx([a["cost_usd"] for a in access], rel=1e-9, abs=1e-12)
    assert [a["model"] for a in access] == [
        "cheap",
        "cheap",
        "pricey",
        "pricey",
        "pricey",
        "wide",
        "pricey",
        "cheap",
        "embed",
        None,
    ]
    assert sum(a["cached_tokens"] for a in access) > 0  # cached input priced at the cached rate
    [totals] = document["policies"]
    assert totals["cost_usd"] == pytest.approx(sum(a["cost_usd"] for a in access), rel=1e-9)
    assert totals["unroutable"]["reasons"] == {"model_not_allowed": 1}


def test_the_access_log_carries_only_the_headers_the_policy_reads_and_never_the_prompt(served):
    _, log, access = served
    research = access[4]
    assert research["headers"] == {"x-team": "research"}
    assert access[6]["headers"] == {"x-router-tier": "frontier"}
    assert all("x-unread-header" not in a["headers"] and a["key"] in ("web-app", "ops-tool") for a in access)
    assert "Prove that" not in log.read_text() and "private" not in log.read_text()
    assert access[7]["needs"] == ["tools"] and access[5]["estimated_prompt_tokens"] > 8000


def test_header_rules_and_escalation_reproduce_from_the_log_and_follow_a_changed_policy(served, tmp_path, threshold):
    policy_path, log, access = served
    out = tmp_path / "same.jsonl"
    report("--policy", str(policy_path), str(log), "--per-request", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["difficulty"] for r in rows[1:4]] == [a["difficulty"] for a in access[1:4]]
    assert [r["tier"] for r in rows[1:5]] == ["standard", "frontier", "frontier", "frontier"]
    # The same log under a policy that never escalates and has no header rule: the logged
    # difficulty and header values are what the new policy decides on.
    calm = write_policy(
        tmp_path,
        routing_policy("http://127.0.0.1:9/v1", 0.999999).replace(
            "rules:\n  - name: research gets frontier\n    when: {header: {x-team: research}}\n    set: {tier: frontier}\n",
            "",
        ),
        name="calm.yaml",
    )
    out_calm = tmp_path / "calm.jsonl"
    document = report("--policy", str(policy_path), "--compare", str(calm), str(log), "--per-request", str(out_calm))
    moved = [json.loads(line)["compare"]["model"] for line in out_calm.read_text().splitlines()]
    assert moved[1:5] == ["cheap", "cheap", "cheap", "cheap"]
    assert {(m["from"], m["to"]): m["requests"] for m in document["moves"]} == {("pricey", "cheap"): 3}


# --compare and the CI gate -----------------------------------------------------------------
@pytest.fixture()
def two_policies(tmp_path, threshold) -> tuple[Path, Path, Path]:
    base = write_policy(tmp_path, routing_policy("http://127.0.0.1:9/v1", threshold), name="base.yaml")
    dearer = routing_policy("http://127.0.0.1:9/v1", threshold).replace(
        "routes:\n  standard:\n    tier: standard\n", "routes:\n  standard:\n    tier: frontier\n"
    )
    assert dearer != routing_policy("http://127.0.0.1:9/v1", threshold)
    changed = write_policy(tmp_path, dearer, name="dearer.yaml")
    usage = {"prompt_tokens": 1000, "completion_tokens": 100}
    traffic = write_jsonl(
        tmp_path / "t.jsonl",
        [{"body": chat("standard"), "usage": usage}] * 3 + [{"body": chat("frontier"), "usage": usage}],
    )
    return base, changed, traffic


def test_compare_reports_the_moves_and_the_cost_delta(two_policies):
    base, dearer, traffic = two_policies
    document = report("--policy", str(base), "--compare", str(dearer), str(traffic))
    before, after = document["policies"]
    assert before["cost_usd"] == pytest.approx(3 * cost("cheap", 1000, 100) + cost("pricey", 1000, 100))
    assert after["cost_usd"] == pytest.approx(4 * cost("pricey", 1000, 100))
    assert document["moves"] == [
        {
            "from": "cheap",
            "to": "pricey",
            "requests": 3,
            "cost_usd_before": pytest.approx(3 * cost("cheap", 1000, 100)),
            "cost_usd_after": pytest.approx(3 * cost("pricey", 1000, 100)),
            "cost_delta_usd": pytest.approx(3 * (cost("pricey", 1000, 100) - cost("cheap", 1000, 100))),
        }
    ]
    table = simulate("--policy", str(base), "--compare", str(dearer), str(traffic))
    assert "moved from" in table.stdout and "+" in table.stdout
    markdown = simulate("--policy", str(base), "--compare", str(dearer), str(traffic), "--format", "markdown")
    assert "| moved from | to | requests | cost before | cost after | delta |" in markdown.stdout
    assert "| cheap | pricey | 3 |" in markdown.stdout


def test_fail_on_cost_increase_exits_3_above_the_allowed_percentage_and_0_otherwise(two_policies):
    base, dearer, traffic = two_policies
    increase = simulate("--policy", str(base), "--compare", str(dearer), str(traffic), "--fail-on-cost-increase", "5")
    assert increase.returncode == 3, increase.stderr
    assert "% more than" in increase.stderr
    generous = simulate(
        "--policy", str(base), "--compare", str(dearer), str(traffic), "--fail-on-cost-increase", "100000"
    )
    assert generous.returncode == 0, generous.stderr
    cheaper = simulate("--policy", str(dearer), "--compare", str(base), str(traffic), "--fail-on-cost-increase", "5")
    assert cheaper.returncode == 0, cheaper.stderr
    alone = simulate("--policy", str(base), str(traffic), "--fail-on-cost-increase", "5")
    assert alone.returncode == 1 and "needs --compare" in alone.stderr


# malformed input -----------------------------------------------------------------------------
def test_malformed_lines_are_reported_with_their_line_number_skipped_and_counted(tmp_path, threshold):
    policy_path = write_policy(tmp_path, routing_policy("http://127.0.0.1:9/v1", threshold))
    good = {"body": chat("standard"), "usage": {"prompt_tokens": 10, "completion_tokens": 1}}
    traffic = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            good,
            "{not json",
            "[1, 2]",
            {"body": "a string"},
            {"body": chat("standard"), "usage": {"prompt_tokens": -4}},
            {"something": "else"},
            "",
            {"logger": "router.reload", "message": "policy reloaded"},  # another log line: ignored
            {"body": {"model": "standard", "messages": "not a list"}},  # a 400 on the proxy: unroutable
            good,
        ],
    )
    done = simulate("--policy", str(policy_path), str(traffic))
    assert done.returncode == 0, done.stderr
    problems = done.stderr.splitlines()
    assert [line.split(": ")[0] for line in problems] == [f"{traffic}:{n}" for n in (2, 3, 4, 5, 6)]
    assert "not valid JSON" in problems[0] and "must be a JSON object" in problems[1]
    assert "5 malformed line(s) skipped" in done.stdout
    document = report("--policy", str(policy_path), str(traffic))
    [totals] = document["policies"]
    assert totals["requests"] == 3
    assert totals["unroutable"]["requests"] == 1


def test_requests_read_from_stdin(tmp_path, threshold):
    policy_path = write_policy(tmp_path, routing_policy("http://127.0.0.1:9/v1", threshold))
    line = json.dumps({"body": chat("standard"), "usage": {"prompt_tokens": 100, "completion_tokens": 10}})
    done = simulate("--policy", str(policy_path), "-", "--format", "json", stdin=line + "\n")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["policies"][0]["by_model"]["cheap"]["requests"] == 1
