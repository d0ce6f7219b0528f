"""The routing engine as tables: a pure function of the policy and the request's features."""

from __future__ import annotations

import pytest

from router.errors import InvalidRequest, ModelNotFound
from router.policy.engine import decide
from router.policy.features import RequestFeatures, chat_features
from router.policy.loader import parse_policy

POLICY = b"""
version: 1
tiers: [frontier, standard, small]
providers:
  sim: {type: simulated}
  off: {type: openai, base_url: "http://127.0.0.1:9/v1", api_key: "${ENGINE_TEST_UNSET_KEY}"}
models:
  big:        {provider: sim, tier: frontier, price: {input: 5, output: 15}, context_window: 200000, capabilities: [tools, vision, json_schema]}
  mid-a:      {provider: sim, tier: standard, price: {input: 0.5, output: 1.5}, context_window: 32000, capabilities: [tools, json_schema]}
  mid-b:      {provider: sim, tier: standard, price: {input: 0.5, output: 1.5}, context_window: 32000, capabilities: [tools]}
  mid-vision: {provider: sim, tier: standard, price: {input: 1, output: 3}, context_window: 128000, max_output_tokens: 4096, capabilities: [tools, vision]}
  tiny:       {provider: sim, tier: small, price: {input: 0.05, output: 0.1}, context_window: 8000, capabilities: []}
  offline:    {provider: off, tier: small, price: {input: 0.01, output: 0.01}, context_window: 8000}
routes:
  standard: {tier: standard}
  cheap: {tier: small, fallback_tier: standard}
  only-mid: {tier: standard, models: [mid-a, mid-b]}
rules:
  - name: long prompts
    when: {prompt_tokens: {gt: 20000}}
    set: {tier: frontier}
  - name: research
    when: {header: {x-team: research}}
    set: {tier: frontier}
  - name: lower is ignored
    when: {header: {x-team: thrifty}}
    set: {tier: small}
  - name: tools stay on mid-a
    when: {tools: true, route: [only-mid]}
    set: {models: [mid-a]}
defaults: {route: standard, expected_output_tokens: 100}
"""


@pytest.fixture(scope="module")
def policy():
    return parse_policy(POLICY, "engine.yaml", env={})


def features(prompt_tokens=100, output=None, needs=(), headers=None, n=1):
    return RequestFeatures(prompt_tokens, output, n, frozenset(needs), headers or {})


def ranked(decision):
    return [c.model.name for c in decision.candidates]


def reason(decision, model):
    return next(e.reason for e in decision.excluded if e.model == model)


@pytest.mark.parametrize(
    ("asked", "request_features", "expected_ranking"),
    [
        # standard meets standard and frontier; equal prices tie-break by name
        ("standard", features(), ["mid-a", "mid-b", "mid-vision", "big"]),
        # the default route is used when no model is asked
        (None, features(), ["mid-a", "mid-b", "mid-vision", "big"]),
        # a tier name works as a route; small is met by every tier
        ("small", features(), ["tiny", "mid-a", "mid-b", "mid-vision", "big"]),
        # fallback_tier caps how high a route may go
        ("cheap", features(), ["tiny", "mid-a", "mid-b", "mid-vision"]),
        # context window: 30,000 prompt tokens only fit the 128k and 200k models; rule raises to frontier
        ("standard", features(prompt_tokens=30000), ["big"]),
        # 10,000 prompt tokens exceed tiny's 8k window
        ("small", features(prompt_tokens=10000), ["mid-a", "mid-b", "mid-vision", "big"]),
        # capabilities: images need vision; json_schema needs json_schema
        ("standard", features(needs={"vision"}), ["mid-vision", "big"]),
        ("standard", features(needs={"json_schema", "tools"}), ["mid-a", "big"]),
        # requested output beyond a model's output limit excludes it
        ("standard", features(output=8000), ["mid-a", "mid-b", "big"]),
        # a rule on a header raises the tier
        ("standard", features(headers={"x-team": "research"}), ["big"]),
        # a rule never lowers the tier
        ("standard", features(headers={"x-team": "thrifty"}), ["mid-a", "mid-b", "mid-vision", "big"]),
        # a route's model list and a rule's model restriction
        ("only-mid", features(), ["mid-a", "mid-b"]),
        ("only-mid", features(needs={"tools"}), ["mid-a"]),
        # a concrete model goes first, then the cheapest of its tier
        ("mid-vision", features(), ["mid-vision", "mid-a", "mid-b"]),
        ("big", features(), ["big"]),
    ],
)
def test_ranking(policy, asked, request_features, expected_ranking):
    assert ranked(decide(policy, asked, request_features)) == expected_ranking


def test_every_excluded_model_has_a_reason(policy):
    decision = decide(policy, "standard", features(prompt_tokens=10000, needs={"vision"}))
    assert reason(decision, "tiny") == "tier 'small' is below the required tier 'standard'"
    assert reason(decision, "mid-a") == "lacks capability: vision"
    assert reason(decision, "offline") == "tier 'small' is below the required tier 'standard'"
    assert {c.model.name for c in decision.candidates} | {e.model for e in decision.excluded} == set(policy.models)


def test_context_window_reason_counts_prompt_and_requested_output(policy):
    decision = decide(policy, "small", features(prompt_tokens=7000, output=2000))
    assert reason(decision, "tiny") == "needs 9000 tokens (prompt + requested output), context window is 8000"


def test_disabled_provider_is_excluded_with_the_missing_variable(policy):
    decision = decide(policy, "small", features())
    assert reason(decision, "offline") == "provider 'off' is disabled: ENGINE_TEST_UNSET_KEY is not set"


def test_unhealthy_models_drop_out(policy):
    decision = decide(
        policy, "standard", features(), unavailable={"mid-a": "circuit open for 30s after 5 consecutive failures"}
    )
    assert "mid-a" not in ranked(decision)
    assert reason(decision, "mid-a") == "circuit open for 30s after 5 consecutive failures"


def test_ties_break_by_observed_latency_then_name(policy):
    decision = decide(policy, "standard", features(), latency_s={"mid-b": 0.2, "mid-a": 0.9})
    assert ranked(decision)[:2] == ["mid-b", "mid-a"]


def test_estimated_cost_is_prompt_and_expected_output_times_n(policy):
    decision = decide(policy, "standard", features(prompt_tokens=1000, n=3))
    mid_a = decision.candidates[0]
    assert mid_a.estimated_cost_usd == pytest.approx((1000 * 0.5 + 100 * 3 * 1.5) / 1e6)
    assert decision.expected_output_tokens == 100


def test_rule_reasons_are_reported(policy):
    decision = decide(policy, "standard", features(prompt_tokens=25000))
    assert decision.tier == "frontier"
    assert "rule 'long prompts' raised the tier to 'frontier'" in decision.reasons


def test_tier_override_header(policy):
    decision = decide(policy, "standard", features(), tier_override="frontier")
    assert ranked(decision) == ["big"]
    with pytest.raises(InvalidRequest, match="not a tier of this policy"):
        decide(policy, "standard", features(), tier_override="ultra")


def test_unknown_name_lists_every_valid_name(policy):
    with pytest.raises(ModelNotFound) as info:
        decide(policy, "gpt-7", features())
    for name in ("standard", "cheap", "only-mid", "frontier", "small", "big", "tiny"):
        assert name in info.value.message


def test_features_from_a_chat_body_count_tokens_offline():
    body = {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this image?"},
                    {"type": "image_url", "image_url": {"url": "data:x"}},
                ],
            },
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
        "max_completion_tokens": 50,
        "n": 2,
    }
    found = chat_features(body, {})
    assert found.needs == {"tools", "vision", "json_schema"}
    assert found.requested_output_tokens == 50 and found.n == 2
    assert 765 + 10 < found.prompt_tokens < 765 + 60
