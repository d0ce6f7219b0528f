"""Ranking at equal estimated cost (issue 9, item 11): the lowest tier that meets the request
comes first, then observed latency, then the name. Two local models priced at 0 used to be
ordered by latency alone, so a request for the `small` route went to a faster `standard` model."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from router.policy.engine import decide
from router.policy.features import RequestFeatures
from router.policy.loader import parse_policy
from tests.fakes import FakeOpenAIUpstream
from tests.harness import RunningRouter, write_policy

POLICY = b"""
version: 1
tiers: [frontier, standard, small]
providers:
  sim: {type: simulated}
models:
  big-local:    {provider: sim, tier: frontier, price: {input: 0, output: 0}, context_window: 32000}
  mid-local:    {provider: sim, tier: standard, price: {input: 0, output: 0}, context_window: 32000}
  tiny-local-a: {provider: sim, tier: small, price: {input: 0, output: 0}, context_window: 32000}
  tiny-local-b: {provider: sim, tier: small, price: {input: 0, output: 0}, context_window: 32000}
  mid-paid:     {provider: sim, tier: standard, price: {input: 0.1, output: 0.1}, context_window: 32000}
  tiny-paid:    {provider: sim, tier: small, price: {input: 1, output: 1}, context_window: 32000}
routes:
  small: {tier: small}
  standard: {tier: standard}
defaults: {route: standard, expected_output_tokens: 100}
"""

FAST_BIG_AND_MID = {"big-local": 0.01, "mid-local": 0.02, "tiny-local-a": 0.9, "tiny-local-b": 0.8}


@pytest.fixture(scope="module")
def policy():  # type: ignore[no-untyped-def]
    return parse_policy(POLICY, "ranking.yaml", env={})


@pytest.mark.parametrize(
    ("asked", "latency", "expected_ranking"),
    [
        pytest.param(
            "small",
            FAST_BIG_AND_MID,
            ["tiny-local-b", "tiny-local-a", "mid-local", "big-local", "mid-paid", "tiny-paid"],
            id="equal cost: the small tier before faster higher tiers, latency within the tier",
        ),
        pytest.param(
            "small",
            {"mid-local": 0.02},  # only the standard model has been observed
            ["tiny-local-a", "tiny-local-b", "mid-local", "big-local", "mid-paid", "tiny-paid"],
            id="an observed higher-tier model does not beat unobserved small ones",
        ),
        pytest.param(
            "small",
            {},
            ["tiny-local-a", "tiny-local-b", "mid-local", "big-local", "mid-paid", "tiny-paid"],
            id="no latency known: tier, then name",
        ),
        pytest.param(
            "standard",
            FAST_BIG_AND_MID,
            ["mid-local", "big-local", "mid-paid"],
            id="the standard route: the standard tier before a faster frontier model",
        ),
        pytest.param(
            "frontier",
            FAST_BIG_AND_MID,
            ["big-local"],
            id="a tier asked directly",
        ),
        pytest.param(
            "small",
            {"tiny-paid": 0.001},
            ["tiny-local-a", "tiny-local-b", "mid-local", "big-local", "mid-paid", "tiny-paid"],
            id="cost still comes first: a cheaper standard model before a pricier small one",
        ),
    ],
)
def test_equal_cost_prefers_the_lowest_tier_then_latency_then_name(policy, asked, latency, expected_ranking):  # type: ignore[no-untyped-def]
    decision = decide(policy, asked, RequestFeatures(100, None, 1, frozenset(), {}), latency_s=latency)
    assert [c.model.name for c in decision.candidates] == expected_ranking


def test_a_small_request_goes_to_the_free_small_model_though_a_free_standard_one_answered_faster(
    tmp_path: Path, upstream: FakeOpenAIUpstream
) -> None:
    policy = write_policy(
        tmp_path,
        f"""
        version: 1
        tiers: [standard, small]
        providers:
          local: {{type: openai, base_url: "{upstream.base_url}", api_key: sk-local}}
        models:
          local-standard: {{provider: local, upstream: upstream-standard, tier: standard, price: {{input: 0, output: 0}}, context_window: 32000}}
          local-small:    {{provider: local, upstream: upstream-small, tier: small, price: {{input: 0, output: 0}}, context_window: 32000}}
        routes:
          small: {{tier: small}}
        defaults: {{route: small, retries: 0, timeout_s: 5, ttft_timeout_s: 5}}
        """,
    )
    with RunningRouter(policy) as router:
        client = openai.OpenAI(base_url=router.base_url, api_key="sk-client", max_retries=0)
        hello = [{"role": "user", "content": "hi"}]
        client.chat.completions.create(model="local-standard", messages=hello)  # its latency is now known
        asked_small = client.chat.completions.create(model="small", messages=hello)
    assert upstream.requests[-1].json["model"] == "upstream-small"
    assert asked_small.model != "local-standard"
