"""One test per ``shadow:`` validation rule: each loads the known-good policy of
``test_policy_validation`` with one shadow rule and asserts the located message."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.policy.loader import PolicyError, parse_policy
from tests.test_policy_validation import ENV, GOOD

RULE = """\
shadow:
  - route: cheap
    sample: 0.05
    reference: frontier
    judge: gpt-4o-mini
    budget: {usd: 10, per: day}
"""


def load(rule: str, source: str = "p.yaml"):
    return parse_policy((GOOD + rule).encode(), source, ENV)


def errors(old: str, new: str) -> list[str]:
    assert RULE.count(old) == 1, f"mutation target must be unique: {old!r}"
    with pytest.raises(PolicyError) as info:
        load(RULE.replace(old, new))
    return info.value.errors


def test_good_shadow_rule_loads_keyed_by_route_with_the_reference_tier_rank() -> None:
    rule = load(RULE).shadow["cheap"]
    assert (rule.sample, rule.reference, rule.reference_model, rule.reference_rank) == (0.05, "frontier", None, 0)
    assert (rule.judge, rule.budget.usd, rule.budget.per, rule.keep_prompts) == ("gpt-4o-mini", 10, "day", False)
    assert "standard" not in load(RULE).shadow


def test_no_shadow_section_means_no_rules() -> None:
    assert dict(parse_policy(GOOD.encode(), "p.yaml", ENV).shadow) == {}


def test_star_covers_the_routes_no_other_rule_names() -> None:
    text = RULE + RULE.split("\n", 1)[1].replace("route: cheap", "route: '*'").replace("0.05", "0.5")
    shadow = load(text).shadow
    assert shadow["cheap"].sample == 0.05 and shadow["standard"].sample == 0.5


def test_reference_may_name_a_model() -> None:
    rule = load(RULE.replace("reference: frontier", "reference: gpt-4o-mini")).shadow["cheap"]
    assert (rule.reference_model, rule.reference_rank) == ("gpt-4o-mini", 1)


def test_unknown_route() -> None:
    assert errors("route: cheap", "route: nope") == [
        "p.yaml:39 shadow[0].route: unknown route 'nope' (routes: cheap, standard, or '*')"
    ]


def test_sample_zero_is_refused() -> None:
    assert errors("sample: 0.05", "sample: 0") == ["p.yaml:40 shadow[0].sample: Input should be greater than 0"]


def test_sample_above_one_is_refused() -> None:
    assert errors("sample: 0.05", "sample: 1.5") == [
        "p.yaml:40 shadow[0].sample: Input should be less than or equal to 1"
    ]


def test_unknown_reference() -> None:
    assert errors("reference: frontier", "reference: best") == [
        "p.yaml:41 shadow[0].reference: unknown tier or model 'best' (tiers: frontier, standard, small)"
    ]


def test_unknown_judge() -> None:
    assert errors("judge: gpt-4o-mini", "judge: oracle") == ["p.yaml:42 shadow[0].judge: unknown model 'oracle'"]


def test_judge_must_be_a_chat_model() -> None:
    text = GOOD.replace(
        "routes:\n",
        "  embedder:\n    provider: openai\n    tier: small\n    kind: embedding\n"
        "    price: {input: 0.02, output: 0}\n    context_window: 8191\nroutes:\n",
    )
    with pytest.raises(PolicyError) as info:
        parse_policy((text + RULE.replace("judge: gpt-4o-mini", "judge: embedder")).encode(), "p.yaml", ENV)
    assert info.value.errors == ["p.yaml:48 shadow[0].judge: 'embedder' is not a chat model; the judge must be one"]


def test_budget_must_be_above_zero() -> None:
    assert errors("usd: 10", "usd: 0") == ["p.yaml:43 shadow[0].budget.usd: Input should be greater than 0"]


def test_budget_period_is_day_or_month() -> None:
    assert errors("per: day", "per: week") == ["p.yaml:43 shadow[0].budget.per: Input should be 'day' or 'month'"]


def test_unknown_key_in_a_rule() -> None:
    assert errors("    budget:", "    samples: 3\n    budget:") == ["p.yaml:43 shadow[0].samples: unknown key"]


def test_two_rules_for_one_route() -> None:
    with pytest.raises(PolicyError) as info:
        load(RULE + RULE.split("\n", 1)[1])
    assert info.value.errors == ["p.yaml:44 shadow[1].route: a second rule for route 'cheap'; one rule per route"]


def test_judge_prompt_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load(RULE + "    judge_prompt: missing.txt\n", str(tmp_path / "p.yaml"))
    assert info.value.errors == [
        f"{tmp_path / 'p.yaml'}:44 shadow[0].judge_prompt: cannot read the judge prompt file 'missing.txt': "
        "No such file or directory"
    ]


def test_judge_prompt_file_is_read_relative_to_the_policy(tmp_path: Path) -> None:
    (tmp_path / "judge.txt").write_text("Judge strictly.")
    rule = load(RULE + "    judge_prompt: judge.txt\n", str(tmp_path / "p.yaml")).shadow["cheap"]
    assert rule.judge_prompt == "Judge strictly."
