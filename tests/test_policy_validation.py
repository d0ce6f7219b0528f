"""One test per validation rule: each mutates one line of a known-good policy and asserts
the located message ``file:line path: message``."""

from __future__ import annotations

import pytest

from router.policy.loader import PolicyError, load_policy, parse_policy

GOOD = """\
version: 1
tiers: [frontier, standard, small]
providers:
  openai:
    type: openai
    base_url: https://api.openai.com/v1
    api_key: ${OPENAI_API_KEY}
  sim:
    type: simulated
models:
  gpt-4o:
    provider: openai
    tier: frontier
  gpt-4o-mini:
    provider: openai
    tier: standard
  local-model:
    provider: sim
    tier: small
    price: {input: 0.0, output: 0.0}
    context_window: 8192
routes:
  standard:
    tier: standard
  cheap:
    tier: small
    fallback_tier: standard
rules:
  - name: big prompts
    when: {prompt_tokens: {gt: 30000}}
    set: {tier: frontier}
defaults:
  route: standard
  timeout_s: 120
  ttft_timeout_s: 20
  retries: 2
  baseline_model: gpt-4o
"""
ENV = {"OPENAI_API_KEY": "sk-test"}


def load(text: str, env: dict[str, str] | None = None):
    return parse_policy(text.encode(), "p.yaml", ENV if env is None else env)


def errors(old: str, new: str, env: dict[str, str] | None = None) -> list[str]:
    assert GOOD.count(old) == 1, f"mutation target must be unique: {old!r}"
    with pytest.raises(PolicyError) as info:
        load(GOOD.replace(old, new), env)
    return info.value.errors


def test_the_known_good_policy_loads():
    policy = load(GOOD)
    assert set(policy.models) == {"gpt-4o", "gpt-4o-mini", "local-model"}
    assert policy.models["gpt-4o"].price.input == 2.5  # from litellm's model map
    assert policy.models["gpt-4o"].price_source == "litellm:gpt-4o"
    assert policy.models["gpt-4o"].context_window == 128000
    assert policy.models["gpt-4o"].capabilities == {"tools", "vision", "json_schema"}


def test_yaml_syntax_error_is_located():
    (message,) = errors("  gpt-4o-mini:\n", "  gpt-4o-mini: [\n")
    assert message.startswith("p.yaml:") and "YAML syntax error" in message


def test_duplicate_yaml_key():
    (message,) = errors("  gpt-4o-mini:\n    provider: openai\n", "  gpt-4o:\n    provider: openai\n")
    assert message.startswith("p.yaml:14: YAML syntax error") and "duplicate key" in message


def test_unknown_top_level_key():
    assert errors("rules:\n", "rulez:\n") == [
        "p.yaml:28 rulez: unknown key",
    ]


def test_unknown_key_in_a_provider():
    assert errors("    base_url: https://api.openai.com/v1\n", "    base_uri: https://api.openai.com/v1\n") == [
        "p.yaml:6 providers.openai.base_uri: unknown key",
    ]


def test_unknown_provider_type():
    (message,) = errors("    type: simulated\n", "    type: simulation\n")
    assert message.startswith("p.yaml:9 providers.sim.type: Input should be 'openai', 'litellm' or 'simulated'")


def test_model_with_unknown_provider():
    assert errors("    provider: sim\n", "    provider: sims\n") == [
        "p.yaml:18 models.local-model.provider: unknown provider 'sims' (defined: openai, sim)",
    ]


def test_model_with_unknown_tier():
    assert errors("    tier: frontier\n", "    tier: frontiers\n") == [
        "p.yaml:13 models.gpt-4o.tier: unknown tier 'frontiers' (tiers: frontier, standard, small)",
    ]


def test_route_with_unknown_tier():
    assert errors("  standard:\n    tier: standard\n", "  standard:\n    tier: premium\n") == [
        "p.yaml:24 routes.standard.tier: unknown tier 'premium' (tiers: frontier, standard, small)",
    ]


def test_fallback_tier_below_the_route_tier():
    assert errors(
        "    tier: small\n    fallback_tier: standard\n", "    tier: standard\n    fallback_tier: small\n"
    ) == [
        "p.yaml:27 routes.cheap.fallback_tier: 'small' is below the route's tier 'standard'",
    ]


def test_route_listing_an_unknown_model():
    assert errors(
        "  standard:\n    tier: standard\n", "  standard:\n    tier: standard\n    models: [gpt-4o, gpt-5o]\n"
    ) == [
        "p.yaml:25 routes.standard.models[1]: unknown model 'gpt-5o'",
    ]


def test_route_named_like_a_model():
    assert errors("  cheap:\n", "  gpt-4o:\n") == [
        "p.yaml:25 routes.gpt-4o: route 'gpt-4o' has the same name as a model"
    ]


def test_duplicate_tier():
    assert errors("tiers: [frontier, standard, small]", "tiers: [frontier, standard, standard, small]") == [
        "p.yaml:2 tiers[2]: duplicate tier 'standard'",
    ]


def test_model_without_a_known_price_must_state_one():
    (message,) = errors(
        "    provider: sim\n    tier: small\n    price: {input: 0.0, output: 0.0}\n",
        "    provider: sim\n    tier: small\n",
    )
    assert message.startswith("p.yaml:17 models.local-model: no price known for 'local-model'")
    assert "state price: {input: USD per 1M tokens, output: USD per 1M tokens}" in message


def test_model_without_a_known_context_window_must_state_one():
    assert errors("    context_window: 8192\n", "") == [
        "p.yaml:17 models.local-model: context window of 'local-model' is unknown; state context_window",
    ]


def test_yaml_overrides_the_model_map():
    policy = load(
        GOOD.replace(
            "    tier: frontier\n", "    tier: frontier\n    price: {input: 1, output: 2}\n    context_window: 1000\n"
        )
    )
    assert policy.models["gpt-4o"].price.input == 1 and policy.models["gpt-4o"].context_window == 1000
    assert policy.models["gpt-4o"].price_source == "policy"


def test_negative_price():
    (message,) = errors("price: {input: 0.0, output: 0.0}", "price: {input: -1, output: 0.0}")
    assert message.startswith("p.yaml:20 models.local-model.price.input: Input should be greater than or equal to 0")


def test_unknown_capability():
    (message,) = errors(
        "    context_window: 8192\n", "    context_window: 8192\n    capabilities: [tools, telepathy]\n"
    )
    assert message.startswith(
        "p.yaml:22 models.local-model.capabilities[1]: Input should be 'tools', 'vision' or 'json_schema'"
    )


def test_unknown_catalog_entry():
    assert errors(
        "    provider: openai\n    tier: standard\n",
        "    provider: openai\n    tier: standard\n    catalog: openai/gpt-99\n",
    ) == [
        "p.yaml:17 models.gpt-4o-mini.catalog: 'openai/gpt-99' is not in litellm's model map",
    ]


def test_unset_provider_variable_disables_the_provider_instead_of_failing():
    policy = load(GOOD, env={})
    assert policy.providers["openai"].enabled is False
    assert policy.providers["openai"].disabled_reason == "OPENAI_API_KEY is not set"
    assert policy.providers["sim"].enabled is True


def test_unset_variable_outside_providers_is_an_error():
    assert errors("  timeout_s: 120\n", "  timeout_s: ${ROUTER_TEST_TIMEOUT}\n") == [
        "p.yaml:34 defaults.timeout_s: environment variable ROUTER_TEST_TIMEOUT is not set and has no default",
    ]


def test_variable_default_is_used_when_unset():
    policy = load(GOOD.replace("  timeout_s: 120\n", "  timeout_s: ${ROUTER_TEST_TIMEOUT:-33}\n"))
    assert policy.defaults.timeout_s == 33
    policy = load(
        GOOD.replace("  timeout_s: 120\n", "  timeout_s: ${ROUTER_TEST_TIMEOUT:-33}\n"),
        env={**ENV, "ROUTER_TEST_TIMEOUT": "44"},
    )
    assert policy.defaults.timeout_s == 44


def test_openai_provider_needs_base_url():
    assert errors("    base_url: https://api.openai.com/v1\n", "") == [
        "p.yaml:4 providers.openai.base_url: an openai provider needs base_url (e.g. https://api.openai.com/v1)",
    ]


def test_base_url_must_be_http():
    assert errors("base_url: https://api.openai.com/v1", "base_url: ftp://api.openai.com/v1") == [
        "p.yaml:6 providers.openai.base_url: must start with http:// or https://, got 'ftp://api.openai.com/v1'",
    ]


def test_simulated_provider_takes_no_url():
    assert errors("    type: simulated\n", "    type: simulated\n    base_url: http://x\n") == [
        "p.yaml:10 providers.sim.base_url: not used by a simulated provider",
    ]


def test_provider_cannot_set_the_authorization_header():
    assert errors(
        "    type: simulated\n",
        "    type: simulated\n  other:\n    type: openai\n    base_url: http://x\n    headers: {Authorization: x}\n",
    ) == [
        "p.yaml:13 providers.other.headers.Authorization: this header is set by the proxy and cannot be configured",
    ]


def test_default_route_must_exist():
    assert errors("  route: standard\n", "  route: premium\n") == [
        "p.yaml:33 defaults.route: unknown route 'premium' (routes: cheap, standard)"
    ]


def test_baseline_model_must_exist():
    assert errors("  baseline_model: gpt-4o\n", "  baseline_model: gpt-5o\n") == [
        "p.yaml:37 defaults.baseline_model: unknown model 'gpt-5o'"
    ]


def test_ttft_timeout_cannot_exceed_total_timeout():
    assert errors("  ttft_timeout_s: 20\n", "  ttft_timeout_s: 500\n") == [
        "p.yaml:35 defaults.ttft_timeout_s: must not exceed timeout_s"
    ]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "  timeout_s: 120\n",
            "  timeout_s: 0\n",
            "p.yaml:34 defaults.timeout_s: Input should be greater than or equal to 1",
        ),
        ("  retries: 2\n", "  retries: 50\n", "p.yaml:36 defaults.retries: Input should be less than or equal to 5"),
        ("  retries: 2\n", "  retries: two\n", "p.yaml:36 defaults.retries: Input should be a valid integer"),
    ],
)
def test_impossible_values(old, new, expected):
    (message,) = errors(old, new)
    assert message.startswith(expected)


def test_rule_needs_a_condition():
    (message,) = errors("    when: {prompt_tokens: {gt: 30000}}\n", "    when: {}\n")
    assert message.startswith("p.yaml:30 rules[0].when: needs at least one condition")


def test_rule_comparison_needs_a_bound():
    (message,) = errors("{prompt_tokens: {gt: 30000}}", "{prompt_tokens: {}}")
    assert message.startswith("p.yaml:30 rules[0].when.prompt_tokens: needs at least one of gt, gte, lt, lte, eq")


def test_rule_with_unknown_tier():
    assert errors("    set: {tier: frontier}\n", "    set: {tier: gold}\n") == [
        "p.yaml:31 rules[0].set.tier: unknown tier 'gold' (tiers: frontier, standard, small)",
    ]


def test_rule_on_unknown_route():
    assert errors("{prompt_tokens: {gt: 30000}}", "{route: [standard, nope]}") == [
        "p.yaml:30 rules[0].when.route[1]: unknown route 'nope'"
    ]


def test_wrong_version():
    (message,) = errors("version: 1\n", "version: 2\n")
    assert message.startswith("p.yaml:1 version: Input should be 1")


def test_missing_required_section():
    assert errors("tiers: [frontier, standard, small]\n", "") == ["p.yaml:1 tiers: required key is missing"]


DIGEST = "sha256:" + "ab" * 32
OTHER_DIGEST = "sha256:" + "cd" * 32


def test_keys_load_as_digests_with_their_permissions():
    text = GOOD.replace(
        "defaults:\n",
        f"keys:\n  - {{hash: '{DIGEST}', name: web-app, team: web, routes: [standard], budget: {{usd: 50, per: day}}, limits: {{rpm: 600, tpm: 200000}}}}\nteams:\n  web: {{budget: {{usd: 500, per: month}}}}\ndefaults:\n",
    )
    policy = load(text)
    key = policy.keys["ab" * 32]
    assert (key.name, key.team, key.rpm, key.tpm, key.budget.usd, key.budget.per) == (
        "web-app",
        "web",
        600,
        200000,
        50,
        "day",
    )
    assert key.routes == {"standard"} and key.allow_tier_override is False
    assert policy.team_budgets["web"].per == "month"
    assert "ab" * 32 not in repr(key)


def test_a_key_hash_must_be_a_sha256_digest():
    (message,) = errors("defaults:\n", "keys: [{hash: 'sk-tr-plaintext', name: a, team: b}]\ndefaults:\n")
    assert message.startswith("p.yaml:32 keys[0].hash: must be 'sha256:' and 64 lowercase hex digits")


def test_duplicate_key_names():
    (message,) = errors(
        "defaults:\n",
        f"keys: [{{hash: '{DIGEST}', name: a, team: b}}, {{hash: '{OTHER_DIGEST}', name: a, team: b}}]\ndefaults:\n",
    )
    assert message == "p.yaml:32 keys[1].name: duplicate key name 'a'"


def test_key_with_unknown_route():
    (message,) = errors(
        "defaults:\n", f"keys: [{{hash: '{DIGEST}', name: a, team: b, routes: [standard, gold]}}]\ndefaults:\n"
    )
    assert message == "p.yaml:32 keys[0].routes[1]: unknown route 'gold'"


def test_budget_period_is_day_or_month():
    (message,) = errors(
        "defaults:\n", f"keys: [{{hash: '{DIGEST}', name: a, team: b, budget: {{usd: 5, per: week}}}}]\ndefaults:\n"
    )
    assert message.startswith("p.yaml:32 keys[0].budget.per: Input should be 'day' or 'month'")


def test_every_error_is_reported_at_once():
    text = GOOD.replace("    tier: frontier\n", "    tier: frontiers\n").replace(
        "    provider: sim\n", "    provider: sims\n"
    )
    with pytest.raises(PolicyError) as info:
        load(text)
    assert len(info.value.errors) == 2


def test_a_file_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert info.value.errors == [f"{path}:1: the policy must be a mapping with version, tiers, providers, models"]


def test_a_missing_file(tmp_path):
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path / "absent.yaml")
    assert "cannot read policy file" in info.value.errors[0]


def test_unquoted_variables_in_flow_mappings_work_as_in_the_contract():
    text = GOOD.replace(
        "  openai:\n    type: openai\n    base_url: https://api.openai.com/v1\n    api_key: ${OPENAI_API_KEY}\n",
        "  openai: {type: openai, base_url: https://api.openai.com/v1, api_key: ${OPENAI_API_KEY}}\n",
    )
    assert load(text).providers["openai"].api_key == "sk-test"


@pytest.mark.parametrize("name", ["default.yaml", "demo.yaml"])
def test_shipped_policies_load(name):
    policy = load_policy(f"policies/{name}", env={})
    assert policy.tiers == ("frontier", "standard", "small")
    assert {"frontier", "standard", "small"} <= set(policy.routes)
    for tier in policy.tiers:
        assert any(m.tier == tier and policy.providers[m.provider].enabled for m in policy.models.values()), tier


def test_gpu_hour_price_and_a_token_price_are_exclusive():
    (message,) = errors(
        "    price: {input: 0.0, output: 0.0}\n", "    price: {input: 0.0, output: 0.0}\n    gpu_hour_usd: 2.5\n"
    )
    assert message == "p.yaml:21 models.local-model.gpu_hour_usd: state either price or gpu_hour_usd, not both"


def test_gpu_tokens_per_second_needs_gpu_hour_usd():
    (message,) = errors("    context_window: 8192\n", "    context_window: 8192\n    gpu_tokens_per_second: 100\n")
    assert message == "p.yaml:22 models.local-model.gpu_tokens_per_second: only used with gpu_hour_usd"


def test_unsupported_parameter_action_is_checked():
    (message,) = errors("    type: simulated\n", "    type: simulated\n    on_unsupported: ignore\n")
    assert message.startswith("p.yaml:10 providers.sim.on_unsupported: Input should be 'drop' or 'refuse'")
