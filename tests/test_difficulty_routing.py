"""Difficulty-aware routing: the ``escalate`` policy field, the pure step choice, and what a
request on an escalating route shows (explain, headers, access log, metrics, calibrate).

The predictor itself (scores, bounds, no network connection while loading or scoring — with
sockets blocked in the process —, lazy imports) is tested in ``test_difficulty_predictor.py``:
``test_loading_and_scoring_open_no_network_connection`` and
``test_importing_router_and_its_app_loads_no_numpy_tokenizers_or_wordllama``.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from router.difficulty import load_predictor
from router.policy.engine import decide, escalation_reason, escalation_step
from router.policy.features import RequestFeatures
from router.policy.loader import PolicyError, parse_policy
from tests.harness import RunningRouter, metric_sum, scrape, write_policy
from tests.policies import model, policy, provider
from tests.processes import wait_until

GOOD = """\
version: 1
tiers: [frontier, standard, small]
providers:
  sim:
    type: simulated
models:
  big:
    provider: sim
    tier: frontier
    price: {input: 5, output: 15}
    context_window: 128000
  mid:
    provider: sim
    tier: standard
    price: {input: 0.5, output: 1.5}
    context_window: 128000
  tiny:
    provider: sim
    tier: small
    price: {input: 0.05, output: 0.1}
    context_window: 128000
  embed:
    provider: sim
    tier: small
    kind: embedding
    price: {input: 0.02, output: 0}
    context_window: 8191
routes:
  auto:
    tier: small
    fallback_tier: standard
    escalate:
      - {above: 0.35, tier: standard}
      - {above: 0.70, tier: frontier}
  vectors:
    tier: small
    models: [embed]
  picked:
    tier: small
    models: [tiny, mid]
defaults:
  route: auto
"""


def load(text: str):
    return parse_policy(text.encode(), "p.yaml", {})


def errors(old: str, new: str) -> list[str]:
    assert GOOD.count(old) == 1, f"mutation target must be unique: {old!r}"
    with pytest.raises(PolicyError) as info:
        load(GOOD.replace(old, new))
    return info.value.errors


# validation: one test per rule --------------------------------------------------------------
def test_the_known_good_escalating_policy_loads_its_steps_in_order():
    policy = load(GOOD)
    steps = policy.routes["auto"].escalate
    assert [(s.above, s.tier) for s in steps] == [(0.35, "standard"), (0.70, "frontier")]
    assert policy.escalates
    assert not load(
        GOOD.replace(
            "    escalate:\n      - {above: 0.35, tier: standard}\n      - {above: 0.70, tier: frontier}\n", ""
        )
    ).escalates


def test_escalate_step_with_an_unknown_key_is_refused():
    assert errors("{above: 0.35, tier: standard}", "{above: 0.35, tier: standard, below: 0.5}") == [
        "p.yaml:33 routes.auto.escalate[0].below: unknown key",
    ]


def test_escalate_must_not_be_an_empty_list():
    (message,) = errors(
        "    escalate:\n      - {above: 0.35, tier: standard}\n      - {above: 0.70, tier: frontier}\n",
        "    escalate: []\n",
    )
    assert message.startswith("p.yaml:32 routes.auto.escalate: List should have at least 1 item")


def test_escalate_above_of_zero_is_refused():
    assert errors("{above: 0.35, tier: standard}", "{above: 0, tier: standard}") == [
        "p.yaml:33 routes.auto.escalate[0].above: Input should be greater than 0",
    ]


def test_escalate_above_of_one_is_refused():
    assert errors("{above: 0.70, tier: frontier}", "{above: 1, tier: frontier}") == [
        "p.yaml:34 routes.auto.escalate[1].above: Input should be less than 1",
    ]


def test_escalate_above_that_is_not_a_number_is_refused():
    (message,) = errors("{above: 0.35, tier: standard}", "{above: high, tier: standard}")
    assert message.startswith("p.yaml:33 routes.auto.escalate[0].above: Input should be a valid number")


def test_escalate_steps_must_ascend_by_above():
    assert errors("{above: 0.70, tier: frontier}", "{above: 0.30, tier: frontier}") == [
        "p.yaml:34 routes.auto.escalate[1].above: must be greater than the previous step's above (0.35): steps ascend",
    ]


def test_escalate_steps_with_equal_above_are_refused():
    assert errors("{above: 0.70, tier: frontier}", "{above: 0.35, tier: frontier}") == [
        "p.yaml:34 routes.auto.escalate[1].above: must be greater than the previous step's above (0.35): steps ascend",
    ]


def test_escalate_step_with_an_unknown_tier_is_refused():
    assert errors("{above: 0.70, tier: frontier}", "{above: 0.70, tier: frontiers}") == [
        "p.yaml:34 routes.auto.escalate[1].tier: unknown tier 'frontiers' (tiers: frontier, standard, small)",
    ]


def test_escalate_step_must_be_above_the_routes_own_tier():
    assert errors("{above: 0.35, tier: standard}", "{above: 0.35, tier: small}") == [
        "p.yaml:33 routes.auto.escalate[0].tier: 'small' is not above the route's tier 'small'; a step raises the tier",
    ]


def test_escalate_step_must_be_above_the_previous_steps_tier():
    assert errors("{above: 0.70, tier: frontier}", "{above: 0.70, tier: standard}") == [
        "p.yaml:34 routes.auto.escalate[1].tier: 'standard' is not above the previous step's tier 'standard'; "
        "each step raises the tier further",
    ]


def test_escalate_on_an_embedding_route_is_refused():
    assert errors("    models: [embed]\n", "    models: [embed]\n    escalate: [{above: 0.5, tier: standard}]\n") == [
        "p.yaml:38 routes.vectors.escalate: an embedding route cannot escalate: difficulty is predicted for chat conversations",
    ]


def test_escalate_to_a_tier_none_of_the_routes_models_has_is_refused():
    assert errors(
        "    models: [tiny, mid]\n", "    models: [tiny, mid]\n    escalate: [{above: 0.5, tier: frontier}]\n"
    ) == [
        "p.yaml:41 routes.picked.escalate[0].tier: none of the route's models is a chat model of tier 'frontier'",
    ]


def test_fallback_tier_below_the_highest_step_is_allowed_and_bounds_only_the_floor():
    """``fallback_tier`` keeps its meaning: the highest tier a fallback may reach; a request a
    step escalated may fall back up to the higher of that and the step's tier."""
    policy = load(GOOD)
    low = decide(policy, "auto", RequestFeatures(10, difficulty=0.1))
    high = decide(policy, "auto", RequestFeatures(10, difficulty=0.9))
    assert [c.model.name for c in low.candidates] == ["tiny", "mid"]
    assert [c.model.name for c in high.candidates] == ["big"]


# the step choice, pure ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("difficulty", "tier"),
    [
        (0.0, None),
        (0.2, None),
        (0.35, None),  # the difficulty must exceed `above`
        (0.3501, "standard"),
        (0.5, "standard"),
        (0.70, "standard"),
        (0.7001, "frontier"),
        (1.0, "frontier"),
    ],
)
def test_escalation_step_is_the_highest_step_whose_above_the_difficulty_exceeds(difficulty, tier):
    step = escalation_step(load(GOOD).routes["auto"], difficulty)
    assert (step.tier if step else None) == tier


@pytest.mark.parametrize(
    ("difficulty", "line"),
    [
        (0.74, "difficulty 0.74 > 0.70 → frontier"),
        (0.5, "difficulty 0.50 > 0.35 → standard"),
        (0.1, "difficulty 0.10 ≤ 0.35 → small (the route's tier)"),
        (0.7004, "difficulty 0.7004 > 0.70 → frontier"),  # never "0.70 > 0.70"
    ],
)
def test_escalation_reason_line_names_difficulty_threshold_and_tier(difficulty, line):
    route = load(GOOD).routes["auto"]
    assert escalation_reason(route, difficulty, escalation_step(route, difficulty)) == line


@pytest.mark.parametrize(
    ("difficulty", "headers", "tier", "escalation_tier"),
    [
        (0.1, {}, "small", "small"),
        (0.5, {}, "standard", "standard"),
        (0.9, {}, "frontier", "frontier"),
        (0.1, {"x-team": "research"}, "frontier", "small"),  # the rule applies after the step
        (0.5, {"x-team": "thrifty"}, "standard", "standard"),  # a rule never lowers the tier
    ],
)
def test_decision_applies_the_step_before_the_rules(difficulty, headers, tier, escalation_tier):
    rules = "defaults:\n"
    text = GOOD.replace(
        rules,
        "rules:\n"
        "  - name: research\n    when: {header: {x-team: research}}\n    set: {tier: frontier}\n"
        "  - name: thrifty\n    when: {header: {x-team: thrifty}}\n    set: {tier: small}\n" + rules,
    )
    decision = decide(load(text), "auto", RequestFeatures(10, headers=headers, difficulty=difficulty))
    assert (decision.tier, decision.escalation_tier, decision.difficulty) == (tier, escalation_tier, difficulty)
    assert any(r.startswith(f"difficulty {difficulty:.2f}") for r in decision.reasons)


def test_decision_on_a_route_that_does_not_escalate_has_no_difficulty():
    decision = decide(load(GOOD), "picked", RequestFeatures(10, difficulty=0.9))
    assert (decision.tier, decision.difficulty, decision.escalation_tier) == ("small", None, None)


def test_embedding_request_on_an_escalating_route_stays_on_its_tier():
    policy = load(GOOD)
    decision = decide(policy, "auto", RequestFeatures(10, difficulty=0.9), kind="embedding")
    assert (decision.tier, decision.difficulty) == ("small", None)


def test_tier_header_override_replaces_the_escalated_tier():
    decision = decide(load(GOOD), "auto", RequestFeatures(10, difficulty=0.9), tier_override="standard")
    assert decision.tier == "standard"
    assert decision.escalation_tier == "frontier"


# router calibrate ----------------------------------------------------------------------------
def sample_bodies(count: int) -> list[dict]:
    """Distinct chat bodies from everyday requests to competition problems."""
    easy = [
        "Say hello to {}.",
        "What is the capital of {}?",
        "Write a short thank-you note to {}.",
        "Translate 'good morning, {}' to French.",
    ]
    hard = [
        "Let f be a polynomial of degree {} with integer coefficients such that f(k) = k^2 + 1 for k = 1..5. Find the remainder of f(10) modulo 7, and prove it is unique.",
        "A bag holds {} red and 7 blue marbles. Three are drawn without replacement; given at least two are red, what is the probability all three are red? Express as a reduced fraction.",
        "Prove that for every integer n > {}, the sum of the reciprocals of the primes up to n exceeds log log n - 1.",
        "In triangle ABC, AB = {}, BC = 14 and CA = 15. The incircle touches BC at D. Compute the length of AD exactly.",
    ]
    names = ["Alice", "Bob", "Paris", "Kenya", "Maria", "Chen", "Lagos", "Oslo", "Priya", "Tom"]
    bodies = []
    for i in range(count):
        templates = hard if i % 3 == 0 else easy
        filler = names[i % len(names)] if templates is easy else str(i + 3)
        text = templates[(i // 3) % len(templates)].format(filler) + f" (case {i})"
        bodies.append({"model": "auto", "messages": [{"role": "user", "content": text}]})
    return bodies


def calibrate(policy_path, sample_path, share: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router", "calibrate", "--policy", str(policy_path), "--route", "auto",
         "--requests", str(sample_path), "--share", share],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_calibrate_thresholds_reproduce_the_asked_shares_on_the_sample(tmp_path):
    policy_path = tmp_path / "p.yaml"
    policy_path.write_text(GOOD)
    bodies = sample_bodies(300)
    sample = tmp_path / "sample.jsonl"
    sample.write_text("\n".join(json.dumps(b) for b in bodies) + "\n")
    done = calibrate(policy_path, sample, "frontier=0.25,standard=0.5")
    assert done.returncode == 0, done.stderr
    block = done.stdout[done.stdout.index("escalate:") :]
    steps = yaml.safe_load(block)["escalate"]
    assert [s["tier"] for s in steps] == ["standard", "frontier"]
    # the printed block is a valid policy field as is
    escalating = load(GOOD.replace("      - {above: 0.35, tier: standard}\n      - {above: 0.70, tier: frontier}\n",
                                   "".join(f"      - {{above: {s['above']}, tier: {s['tier']}}}\n" for s in steps)))  # fmt: skip
    route = escalating.routes["auto"]
    predictor = load_predictor()
    chosen = Counter()
    for body in bodies:
        step = escalation_step(route, predictor.score(body["messages"]))
        chosen[step.tier if step else "small"] += 1
    assert chosen["frontier"] / len(bodies) == pytest.approx(0.25, abs=0.02)
    assert chosen["standard"] / len(bodies) == pytest.approx(0.50, abs=0.02)
    assert chosen["small"] / len(bodies) == pytest.approx(0.25, abs=0.02)


@pytest.mark.parametrize(
    ("share", "message"),
    [
        ("frontier=0.7,standard=0.5", "--share: the shares add up to 1.2, more than the whole sample"),
        ("small=0.2", "--share: 'small' is not above the route's tier 'small'"),
        ("frontiers=0.2", "--share: unknown tier 'frontiers' (tiers: frontier, standard, small)"),
        ("frontier=0", "--share: 'frontier=0': the share must be above 0 and at most 1"),
        ("frontier", "--share: 'frontier' is not tier=share (e.g. frontier=0.25)"),
    ],
)
def test_calibrate_refuses_shares_it_cannot_honour(tmp_path, share, message):
    policy_path = tmp_path / "p.yaml"
    policy_path.write_text(GOOD)
    sample = tmp_path / "sample.jsonl"
    sample.write_text(json.dumps(sample_bodies(1)[0]) + "\n")
    done = calibrate(policy_path, sample, share)
    assert (done.returncode, done.stderr.strip()) == (1, message)


def test_calibrate_names_the_sample_line_that_is_not_a_chat_body(tmp_path):
    policy_path = tmp_path / "p.yaml"
    policy_path.write_text(GOOD)
    sample = tmp_path / "sample.jsonl"
    sample.write_text(json.dumps(sample_bodies(1)[0]) + '\n{"input": "x"}\n')
    done = calibrate(policy_path, sample, "frontier=0.2")
    assert (done.returncode, done.stderr.strip()) == (
        1,
        f"{sample}:2: a chat request body with a non-empty 'messages' list is expected",
    )


# end to end: a real router on a real socket, the fake OpenAI upstream behind it ---------------
EASY = [{"role": "user", "content": "say hello"}]
HARD = [
    {
        "role": "user",
        "content": "Let a, b, c be positive reals with a + b + c = 3. Prove that "
        "a/(b^2 + 1) + b/(c^2 + 1) + c/(a^2 + 1) >= 3/2, and determine when equality holds. "
        "Then find the number of ordered triples of integers (x, y, z) with x^2 + y^2 + z^2 = 2xyz.",
    }
]


@pytest.fixture(scope="module")
def scores() -> tuple[float, float]:
    predictor = load_predictor()
    return predictor.score(EASY), predictor.score(HARD)


@pytest.fixture()
def escalating_router(upstream, tmp_path, scores):
    """``auto``: small, escalating to frontier between the easy and the hard prompt's scores
    (computed now, so the test holds whatever the shipped model scores)."""
    easy, hard = scores
    text = policy(
        providers={"up": provider(upstream.base_url)},
        models={
            "tiny": model("up", "tiny-up", "small", price=(0.1, 0.2)),
            "mid": model("up", "mid-up", "standard", price=(1, 2)),
            "big": model("up", "big-up", "frontier", price=(5, 15)),
        },
        routes={"auto": {"tier": "small", "escalate": [{"above": round((easy + hard) / 2, 6), "tier": "frontier"}]}},
        route="auto",
    )
    with RunningRouter(write_policy(tmp_path, text)) as running:
        yield running


def test_a_competition_math_problem_scores_above_say_hello(scores):
    easy, hard = scores
    assert hard > easy


def test_explain_returns_the_difficulty_and_the_step_reason(escalating_router, scores):
    easy, hard = scores
    for messages, score, tier in ((EASY, easy, "small"), (HARD, hard, "frontier")):
        answer = httpx.post(
            f"{escalating_router.base_url}/router/explain", json={"model": "auto", "messages": messages}, timeout=10
        ).json()
        assert answer["difficulty"] == pytest.approx(score, abs=1e-4)
        assert answer["tier"] == tier
        assert any(r.startswith("difficulty ") and r.endswith(tier if tier == "frontier" else "(the route's tier)") for r in answer["reasons"]), answer["reasons"]  # fmt: skip


def test_routed_answers_carry_x_router_difficulty_and_go_to_the_tier_the_step_names(
    escalating_router, upstream, scores, caplog
):
    caplog.set_level(logging.INFO, logger="router.access")
    client = openai.OpenAI(base_url=escalating_router.base_url, api_key="sk-client", max_retries=0)
    for messages, score, tier, chosen in ((EASY, scores[0], "small", "tiny"), (HARD, scores[1], "frontier", "big")):
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=messages)
        assert raw.headers["x-router-difficulty"] == f"{score:.3f}"
        assert (raw.headers["x-router-tier"], raw.headers["x-router-model"]) == (tier, chosen)
    stream = client.chat.completions.with_raw_response.create(model="auto", messages=HARD, stream=True)
    assert (stream.headers["x-router-difficulty"], stream.headers["x-router-tier"]) == (f"{scores[1]:.3f}", "frontier")
    list(stream.parse())

    def logged() -> list[float]:
        return [r.difficulty for r in caplog.records if r.name == "router.access" and r.path == "/v1/chat/completions"]

    # a stream's access-log line is written once the server has finished the response, which
    # may be just after the client read [DONE]
    wait_until(lambda: len(logged()) == 3, 10, "the stream's access-log line")
    assert logged() == [round(scores[0], 6), round(scores[1], 6), round(scores[1], 6)]
    samples = scrape(escalating_router.url)
    assert metric_sum(samples, "router_escalations_total", route="auto", tier="small") == 1
    assert metric_sum(samples, "router_escalations_total", route="auto", tier="frontier") == 2
    assert metric_sum(samples, "router_difficulty_count", route="auto") == 3


def test_a_tier_asked_directly_gets_no_difficulty(escalating_router):
    raw = httpx.post(
        f"{escalating_router.base_url}/chat/completions", json={"model": "small", "messages": HARD}, timeout=10
    )
    assert raw.status_code == 200 and "x-router-difficulty" not in raw.headers


def test_router_explain_command_prints_the_difficulty(tmp_path):
    policy_path = tmp_path / "p.yaml"
    policy_path.write_text(GOOD)
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"model": "auto", "messages": HARD}))
    done = subprocess.run(
        [sys.executable, "-m", "router", "explain", str(request), "--policy", str(policy_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["difficulty"] == pytest.approx(load_predictor().score(HARD), abs=1e-4)
    assert any(r.startswith("difficulty ") for r in answer["reasons"])


SERVE_AND_REPORT = """
import sys, httpx
from pathlib import Path
from tests.harness import RunningRouter
with RunningRouter(Path(sys.argv[1])) as router:
    body = {"model": "auto", "messages": [{"role": "user", "content": "say hello"}]}
    assert httpx.post(router.base_url + "/chat/completions", json=body, timeout=10).status_code == 200
    print(sorted(m for m in ("router.difficulty.predictor", "numpy") if m in sys.modules))
"""


@pytest.mark.parametrize(("escalate", "loaded"), [(False, "[]"), (True, "['router.difficulty.predictor']")])
def test_the_predictor_is_loaded_only_by_a_policy_with_an_escalating_route(tmp_path, escalate, loaded):
    """A router serving a policy without ``escalate`` never imports the predictor (nor numpy);
    one with it loads the predictor (and still no numpy)."""
    route: dict = {"tier": "small"}
    if escalate:
        route["escalate"] = [{"above": 0.5, "tier": "standard"}]
    text = policy(
        providers={"sim": provider(type="simulated", api_key=None, latency_ms=0)},
        models={"tiny": model("sim", None, "small"), "mid": model("sim", None, "standard")},
        routes={"auto": route},
        route="auto",
    )
    done = subprocess.run(
        [sys.executable, "-c", SERVE_AND_REPORT, str(write_policy(tmp_path, text))],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == loaded
