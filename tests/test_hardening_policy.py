"""Policy load and reload refuse what would break serving (issue 9 item 8, RELIABILITY.md F1,
F4, F5, E6): YAML tags and alias bombs are located errors, numbers are bounded, header/key/URL
values hold no control characters, messages show ``${VAR}`` and never its value, a reload may
not disable a provider that is serving, and loading never runs on the event loop.

Rules are checked by mutating one key of ``SAMPLE`` (a known-good policy stating every numeric
field) and asserting the exact ``file:line path: message``; behaviour through a running proxy
uses the real ``router`` command, real sockets and the fake OpenAI upstream."""

from __future__ import annotations

import ast
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from router.policy.loader import PolicyError, parse_policy
from tests.fakes import FakeOpenAIUpstream
from tests.harness import RunningRouter, metric_sum, scrape

SAMPLE = """\
version: 1
tiers: [frontier, standard, small]
providers:
  openai:
    type: openai
    base_url: https://api.openai.com/v1
    api_key: ${OPENAI_API_KEY}
    headers: {OpenAI-Beta: assistants=v2}
    max_connections: 100
  sim:
    type: simulated
    latency_ms: 100
    tokens_per_second: 150
    failure_rate: 0.01
models:
  gpt-4o:
    provider: openai
    tier: frontier
  local-model:
    provider: sim
    tier: small
    price: {input: 0.1, output: 0.2, cached_input: 0.05}
    context_window: 8192
    max_output_tokens: 4096
    timeouts: {timeout_s: 60, connect_timeout_s: 2, ttft_timeout_s: 5, idle_timeout_s: 10}
  gpu-model:
    provider: sim
    tier: standard
    gpu_hour_usd: 2.5
    gpu_tokens_per_second: 400
    context_window: 32000
routes:
  standard:
    tier: standard
    retries: 1
    cache: {ttl_s: 600}
rules:
  - name: big prompts
    when: {prompt_tokens: {gt: 30000}}
    set: {tier: frontier}
keys:
  - hash: "sha256:abababababababababababababababababababababababababababababababab"
    name: web
    team: web
    budget: {usd: 50, per: day}
    limits: {rpm: 600, tpm: 200000}
defaults:
  route: standard
  timeout_s: 120
  connect_timeout_s: 5
  ttft_timeout_s: 20
  idle_timeout_s: 60
  retries: 2
  max_retry_wait_s: 10
  eject_after_failures: 5
  ejection_s: 30
  expected_output_tokens: 256
  max_n: 16
"""
ENV = {"OPENAI_API_KEY": "sk-test"}
CANARY = "sk-canary-7f3a9c2e51d04b8e"
HELLO = [{"role": "user", "content": "hi"}]
ROUTER = [sys.executable, "-m", "router"]


def load(text: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return parse_policy(text.encode(), "p.yaml", ENV if env is None else env)


def errors_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load(text, env)
    return info.value.errors


def mutated(old: str, new: str) -> str:
    assert SAMPLE.count(old) == 1, f"mutation target must be unique: {old!r}"
    return SAMPLE.replace(old, new)


def line(snippet: str, text: str = SAMPLE) -> int:
    """The 1-based line of ``snippet`` (unique) in ``text``."""
    assert text.count(snippet) == 1, snippet
    return text[: text.index(snippet)].count("\n") + 1


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ROUTER, *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


def test_the_sample_policy_loads():
    policy = load(SAMPLE)
    assert set(policy.models) == {"gpt-4o", "local-model", "gpu-model"}
    assert policy.warnings == ()


# --- Numbers: one rule per field, each a bound with its reason in router/policy/schema.py ---

GE = "Input should be greater than or equal to"
LE = "Input should be less than or equal to"
GT = "Input should be greater than"
BOUNDS = [
    ("max_connections: 100", "max_connections: 0", "providers.openai.max_connections", f"{GE} 1"),
    ("latency_ms: 100", "latency_ms: -1", "providers.sim.latency_ms", f"{GE} 0"),
    ("latency_ms: 100", "latency_ms: 1e9", "providers.sim.latency_ms", f"{LE} 600000"),
    ("tokens_per_second: 150", "tokens_per_second: 0.001", "providers.sim.tokens_per_second", f"{GE} 1"),
    ("failure_rate: 0.01", "failure_rate: 1.5", "providers.sim.failure_rate", f"{LE} 1"),
    ("{input: 0.1,", "{input: 1e6,", "models.local-model.price.input", f"{LE} 100000"),
    ("output: 0.2,", "output: -1,", "models.local-model.price.output", f"{GE} 0"),
    ("cached_input: 0.05}", "cached_input: -0.05}", "models.local-model.price.cached_input", f"{GE} 0"),
    ("context_window: 8192", "context_window: 1e12", "models.local-model.context_window", f"{LE} 100000000"),
    ("context_window: 8192", "context_window: 8", "models.local-model.context_window", f"{GE} 16"),
    ("max_output_tokens: 4096", "max_output_tokens: 0", "models.local-model.max_output_tokens", f"{GE} 1"),
    ("{timeout_s: 60,", "{timeout_s: 0.5,", "models.local-model.timeouts.timeout_s", f"{GE} 1"),
    (
        "connect_timeout_s: 2,",
        "connect_timeout_s: 601,",
        "models.local-model.timeouts.connect_timeout_s",
        f"{LE} 600",
    ),
    ("ttft_timeout_s: 5,", "ttft_timeout_s: 1e-9,", "models.local-model.timeouts.ttft_timeout_s", f"{GE} 0.1"),
    ("idle_timeout_s: 10}", "idle_timeout_s: 3601}", "models.local-model.timeouts.idle_timeout_s", f"{LE} 3600"),
    ("gpu_hour_usd: 2.5", "gpu_hour_usd: 0", "models.gpu-model.gpu_hour_usd", f"{GT} 0"),
    ("gpu_tokens_per_second: 400", "gpu_tokens_per_second: 0.5", "models.gpu-model.gpu_tokens_per_second", f"{GE} 1"),
    ("retries: 1", "retries: 6", "routes.standard.retries", f"{LE} 5"),
    ("ttl_s: 600", "ttl_s: 0", "routes.standard.cache.ttl_s", f"{GE} 1"),
    ("gt: 30000", "gt: -1", "rules[0].when.prompt_tokens.gt", f"{GE} 0"),
    ("usd: 50,", "usd: 0,", "keys[0].budget.usd", f"{GT} 0"),
    ("rpm: 600,", "rpm: 0,", "keys[0].limits.rpm", f"{GT} 0"),
    ("tpm: 200000}", "tpm: 1e11}", "keys[0].limits.tpm", f"{LE} 10000000000"),
    ("  timeout_s: 120\n", "  timeout_s: 1e6\n", "defaults.timeout_s", f"{LE} 86400"),
    ("  timeout_s: 120\n", "  timeout_s: .nan\n", "defaults.timeout_s", f"{LE} 86400"),
    ("connect_timeout_s: 5\n", "connect_timeout_s: 0\n", "defaults.connect_timeout_s", f"{GE} 0.1"),
    ("ttft_timeout_s: 20\n", "ttft_timeout_s: 1e-9\n", "defaults.ttft_timeout_s", f"{GE} 0.1"),
    ("idle_timeout_s: 60\n", "idle_timeout_s: 0.01\n", "defaults.idle_timeout_s", f"{GE} 0.1"),
    ("retries: 2\n", "retries: -1\n", "defaults.retries", f"{GE} 0"),
    ("max_retry_wait_s: 10", "max_retry_wait_s: 301", "defaults.max_retry_wait_s", f"{LE} 300"),
    ("eject_after_failures: 5", "eject_after_failures: 0", "defaults.eject_after_failures", f"{GE} 1"),
    ("ejection_s: 30", "ejection_s: 0.001", "defaults.ejection_s", f"{GE} 1"),
    ("expected_output_tokens: 256", "expected_output_tokens: 0", "defaults.expected_output_tokens", f"{GE} 1"),
    ("max_n: 16", "max_n: 129", "defaults.max_n", f"{LE} 128"),
]


@pytest.mark.parametrize(
    ("old", "new", "path", "message"), BOUNDS, ids=[f"{b[2]}={b[1].split(': ')[1]}" for b in BOUNDS]
)
def test_every_number_in_the_policy_is_bounded(old, new, path, message):
    text = mutated(old, new)
    (error,) = errors_of(text)
    assert error.startswith(f"p.yaml:{line(new.strip(), text)} {path}: {message}")


def test_a_context_window_of_1e30_is_refused():
    (error,) = errors_of(mutated("context_window: 8192", "context_window: 1e30"))
    assert error.startswith(f"p.yaml:{line('context_window: 8192')} models.local-model.context_window: ")


def test_max_output_tokens_cannot_exceed_the_context_window():
    text = mutated("max_output_tokens: 4096", "max_output_tokens: 10000")
    assert errors_of(text) == [
        f"p.yaml:{line('max_output_tokens', text)} models.local-model.max_output_tokens: must not exceed context_window"
    ]


# --- YAML: tags, aliases, nesting, size (E6: nothing in the file runs code) ---


def test_a_python_object_tag_is_a_located_error_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    text = mutated(
        "    base_url: https://api.openai.com/v1\n",
        f"    base_url: !!python/object/apply:os.system ['touch {marker}']\n",
    )
    assert errors_of(text) == [
        "p.yaml:6 providers.openai.base_url: YAML tag !!python/object/apply:os.system is not allowed: "
        "a policy holds plain values only (strings, numbers, booleans, lists, mappings)"
    ]
    assert not marker.exists()


@pytest.mark.parametrize(
    "tagged",
    [
        "!!python/name:os.system",
        "!!python/object/new:subprocess.Popen [['true']]",
        "!!python/module:os",
        "!!binary c2stdGVzdA==",
        "!!set {a, b}",
        "!!omap [{a: 1}]",
        "!custom value",
    ],
)
def test_every_tag_other_than_plain_data_is_a_located_error(tagged):
    text = mutated("    failure_rate: 0.01\n", f"    failure_rate: {tagged}\n")
    (error,) = errors_of(text)
    assert error.startswith(f"p.yaml:14 providers.sim.failure_rate: YAML tag {tagged.split()[0]} is not allowed")


def test_a_tag_on_a_key_is_a_located_error():
    text = mutated("    failure_rate: 0.01\n", "    !!python/name:os.system : 1\n")
    (error,) = errors_of(text)
    assert error.startswith("p.yaml:14 providers.sim: YAML tag !!python/name:os.system is not allowed")


BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
"""


def test_a_billion_laughs_alias_bomb_is_a_located_error_found_without_expanding_it():
    started = time.monotonic()
    errors = errors_of(BILLION_LAUGHS + SAMPLE)
    elapsed = time.monotonic() - started
    assert errors == [
        "p.yaml:6 f: expands to more than 100000 values once aliases are expanded; a policy is never this big"
    ]
    assert elapsed < 1.0


def test_an_alias_inside_its_own_anchor_is_a_located_error():
    text = mutated("    failure_rate: 0.01\n", "    unsupported_params: &loop [a, *loop]\n")
    assert errors_of(text) == [
        "p.yaml:14 providers.sim.unsupported_params[1]: an alias refers to the value that contains it (a recursive structure)"
    ]


def test_nesting_beyond_the_bound_is_a_located_error():
    text = mutated("    failure_rate: 0.01\n", "    unsupported_params: " + "[" * 40 + "]" * 40 + "\n")
    (error,) = errors_of(text)
    assert error == "p.yaml:14: YAML syntax error: nested deeper than 32 levels"


def test_anchors_and_merge_keys_within_the_bounds_still_work():
    text = mutated(
        "    price: {input: 0.1, output: 0.2, cached_input: 0.05}\n",
        "    price: &cheap {input: 0.1, output: 0.2, cached_input: 0.05}\n",
    ).replace("    gpu_hour_usd: 2.5\n    gpu_tokens_per_second: 400\n", "    price: {<<: *cheap, output: 0.3}\n")
    policy = load(text)
    assert (policy.models["gpu-model"].price.input, policy.models["gpu-model"].price.output) == (0.1, 0.3)


def test_a_file_over_the_size_limit_is_refused_before_parsing():
    assert errors_of(SAMPLE + "#" * (1024 * 1024) + "\n") == ["p.yaml:1: the file is larger than 1 MiB"]


def test_router_check_prints_the_located_error_for_a_tag_and_no_traceback(tmp_path):
    marker = tmp_path / "pwned"
    policy = tmp_path / "p.yaml"
    policy.write_text(
        mutated(
            "    api_key: ${OPENAI_API_KEY}\n", f"    api_key: !!python/object/apply:os.system ['touch {marker}']\n"
        )
    )
    result = run_cli("check", str(policy))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{policy}:7 providers.openai.api_key: YAML tag !!python/object/apply:os.system is not allowed: "
        "a policy holds plain values only (strings, numbers, booleans, lists, mappings)"
    ]
    assert "Traceback" not in result.stdout + result.stderr
    assert not marker.exists()


def test_router_check_on_an_alias_bomb_exits_1_with_the_located_error(tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text(BILLION_LAUGHS + SAMPLE)
    result = run_cli("check", str(policy), env=ENV)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{policy}:6 f: expands to more than 100000 values once aliases are expanded; a policy is never this big"
    ]


ROUTER_SOURCE = Path(__file__).resolve().parents[1] / "router"
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "breakpoint"}
FORBIDDEN_MODULES = {"subprocess", "pickle", "marshal", "shelve", "dill", "cloudpickle", "jinja2", "mako", "code"}
FORBIDDEN_OS = {"system", "popen", "execv", "execve", "execvp", "spawnv", "spawnl", "posix_spawn", "fork"}


def test_the_router_package_never_evaluates_code_or_starts_processes():
    """E6: no eval/exec, no templates, no subprocesses, no unpickling anywhere in router/."""
    found = []
    for source in sorted(ROUTER_SOURCE.rglob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            where = f"{source.relative_to(ROUTER_SOURCE.parent)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS:
                found.append(f"{where} {node.func.id}()")
            if isinstance(node, ast.Import):
                found += [f"{where} import {a.name}" for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES]
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
                found.append(f"{where} from {node.module}")
            if isinstance(node, ast.ImportFrom) and node.module == "os":
                found += [f"{where} from os import {a.name}" for a in node.names if a.name in FORBIDDEN_OS]
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "os"
                and (node.attr in FORBIDDEN_OS or node.attr.startswith(("exec", "spawn")))
            ):
                found.append(f"{where} os.{node.attr}")
            if isinstance(node, ast.keyword) and node.arg == "typ" and getattr(node.value, "value", "") == "unsafe":
                found.append(f"{where} YAML(typ='unsafe')")
    assert found == []


# --- Header, key and URL values (CR/LF/NUL), literal or from the environment ---


@pytest.mark.parametrize(
    ("old", "new", "env", "expected"),
    [
        (
            "    api_key: ${OPENAI_API_KEY}\n",
            '    api_key: "sk-test\\r\\nX-Injected: 1"\n',
            ENV,
            "p.yaml:7 providers.openai.api_key: contains a control character (CR, LF, NUL...); a key is one line of text",
        ),
        (
            "    api_key: ${OPENAI_API_KEY}\n",
            "    api_key: ${OPENAI_API_KEY}\n",
            {"OPENAI_API_KEY": "sk-test\nX-Injected: 1"},
            "p.yaml:7 providers.openai.api_key: contains a control character (CR, LF, NUL...); a key is one line of text",
        ),
        (
            "    api_key: ${OPENAI_API_KEY}\n",
            "    api_key: ${OPENAI_API_KEY}\n",
            {"OPENAI_API_KEY": "sk-test\x00"},
            "p.yaml:7 providers.openai.api_key: contains a control character (CR, LF, NUL...); a key is one line of text",
        ),
        (
            "{OpenAI-Beta: assistants=v2}",
            '{OpenAI-Beta: "assistants=v2\\r\\nHost: evil"}',
            ENV,
            "p.yaml:8 providers.openai.headers.OpenAI-Beta: the value contains a control character (CR, LF, NUL...)",
        ),
        (
            "{OpenAI-Beta: assistants=v2}",
            "{OpenAI-Beta: ${BETA}}",
            {**ENV, "BETA": "v2\r\nHost: evil"},
            "p.yaml:8 providers.openai.headers.OpenAI-Beta: the value contains a control character (CR, LF, NUL...)",
        ),
        (
            "{OpenAI-Beta: assistants=v2}",
            '{"OpenAI Beta:": assistants=v2}',
            ENV,
            "p.yaml:8 providers.openai.headers.OpenAI Beta:: not a valid header name "
            "(letters, digits and !#$%&'*+-.^_`|~ only)",
        ),
        (
            "    base_url: https://api.openai.com/v1\n",
            '    base_url: "https://api.openai.com/v1\\r\\nHost: evil"\n',
            ENV,
            "p.yaml:6 providers.openai.base_url: contains a space or a control character (CR, LF, NUL...)",
        ),
        (
            "    base_url: https://api.openai.com/v1\n",
            '    base_url: "${OPENAI_BASE_URL}"\n',
            {**ENV, "OPENAI_BASE_URL": "https://api.openai.com/v1\x00"},
            "p.yaml:6 providers.openai.base_url: contains a space or a control character (CR, LF, NUL...)",
        ),
        (
            "    base_url: https://api.openai.com/v1\n",
            "    base_url: https:///v1\n",
            ENV,
            "p.yaml:6 providers.openai.base_url: has no host name",
        ),
    ],
    ids=[
        "api_key-literal-crlf",
        "api_key-env-lf",
        "api_key-env-nul",
        "header-literal-crlf",
        "header-env-crlf",
        "header-name",
        "base_url-literal-crlf",
        "base_url-env-nul",
        "base_url-no-host",
    ],
)
def test_control_characters_in_header_key_and_url_values_are_located_errors(old, new, env, expected):
    assert errors_of(mutated(old, new), env) == [expected]


# --- Secrets (F4): messages show ${VAR}, never its value; literal keys are warned about ---


def test_a_located_error_shows_the_variable_never_its_value():
    text = mutated("    base_url: https://api.openai.com/v1\n", '    base_url: "${PRIMARY_KEY}"\n')
    assert errors_of(text, {**ENV, "PRIMARY_KEY": CANARY}) == [
        "p.yaml:6 providers.openai.base_url: must start with http:// or https://, got '${PRIMARY_KEY}'"
    ]


def test_a_reference_error_shows_the_variable_never_its_value():
    text = mutated("    tier: frontier\n", "    tier: ${MODEL_TIER}\n")
    assert errors_of(text, {**ENV, "MODEL_TIER": CANARY}) == [
        "p.yaml:18 models.gpt-4o.tier: unknown tier '${MODEL_TIER}' (tiers: frontier, standard, small)"
    ]


def test_router_check_prints_the_variable_never_its_value(tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text(mutated("    base_url: https://api.openai.com/v1\n", '    base_url: "${PRIMARY_KEY}"\n'))
    result = run_cli("check", str(policy), env={**ENV, "PRIMARY_KEY": CANARY})
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{policy}:6 providers.openai.base_url: must start with http:// or https://, got '${{PRIMARY_KEY}}'"
    ]
    assert CANARY not in result.stdout + result.stderr


def test_router_check_and_explain_never_print_a_provider_key(tmp_path):
    env = {"OPENAI_API_KEY": CANARY, "ANTHROPIC_API_KEY": CANARY + "-a", "GROQ_API_KEY": CANARY + "-g"}
    checked = run_cli("check", "policies/default.yaml", env=env)
    request = tmp_path / "request.json"
    request.write_text('{"model": "standard", "messages": [{"role": "user", "content": "hi"}]}')
    explained = run_cli("explain", "--policy", "policies/default.yaml", str(request), env=env)
    assert checked.returncode == 0 and explained.returncode == 0, checked.stderr + explained.stderr
    assert "gpt-4.1" in checked.stdout and '"candidates"' in explained.stdout
    for output in (checked.stdout, checked.stderr, explained.stdout, explained.stderr):
        assert CANARY not in output


def test_a_literal_api_key_loads_with_a_located_warning_that_router_check_prints(tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text(mutated("    api_key: ${OPENAI_API_KEY}\n", f"    api_key: {CANARY}\n"))
    result = run_cli("check", str(policy))
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"{policy}:7 providers.openai.api_key: warning: a literal key in the policy file; "
        "reference an environment variable instead (api_key: ${OPENAI_API_KEY})"
    ]
    assert CANARY not in result.stdout + result.stderr


def test_a_key_from_the_environment_draws_no_warning():
    assert load(SAMPLE).warnings == ()


# --- Reload through a running proxy (F1, F5) ---


def serving_policy(upstream_url: str, model: str, key_ref: str = "${H_POLICY_UP_KEY}", extra: str = "") -> str:
    return (
        "version: 1\ntiers: [standard]\n"
        f'providers:\n  up: {{type: openai, base_url: "{upstream_url}", api_key: "{key_ref}"}}\n{extra}'
        f"models:\n  {model}: {{provider: up, upstream: gpt-4o-mini, tier: standard, price: {{input: 1, output: 1}}, context_window: 128000}}\n"
        "routes:\n  standard: {tier: standard}\n"
        "defaults: {route: standard, retries: 0, timeout_s: 30, ttft_timeout_s: 10}\n"
    )


def replace_file(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def reload_now(router: RunningRouter) -> httpx.Response:
    return httpx.post(f"{router.url}/admin/reload", timeout=60)


def answering_model(router: RunningRouter) -> str:
    client = openai.OpenAI(base_url=router.base_url, api_key="x", max_retries=0)
    return client.chat.completions.create(model="standard", messages=HELLO).model  # type: ignore[arg-type]


def reload_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [e for r in caplog.records if r.name == "router.reload" for e in getattr(r, "errors", [])]


def wait_for(condition, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_a_reload_that_would_disable_a_serving_provider_is_refused(
    tmp_path, upstream: FakeOpenAIUpstream, monkeypatch, caplog
):
    caplog.set_level(logging.ERROR, logger="router.reload")
    monkeypatch.setenv("H_POLICY_UP_KEY", "sk-up")
    monkeypatch.delenv("H_POLICY_UP_KEY_TYPO", raising=False)
    path = tmp_path / "policy.yaml"
    path.write_text(serving_policy(upstream.base_url, "model-a"))
    with RunningRouter(path, watch_policy=False) as router:
        replace_file(path, serving_policy(upstream.base_url, "model-b", key_ref="${H_POLICY_UP_KEY_TYPO}"))
        refused = reload_now(router)
        model = answering_model(router)
        failures = metric_sum(scrape(router.url), "router_policy_reloads_total", result="failure")
    expected = (
        f"{path}:4 providers.up.api_key: environment variable H_POLICY_UP_KEY_TYPO is not set, which would disable "
        "provider 'up' while it is serving; the reload is refused and the last good policy keeps serving"
    )
    assert refused.status_code == 422 and refused.json()["errors"] == [expected]
    assert model == "model-a"
    assert failures == 1
    assert reload_errors(caplog) == [expected]


def test_a_reload_adding_a_provider_whose_variable_is_unset_is_accepted(
    tmp_path, upstream: FakeOpenAIUpstream, monkeypatch
):
    monkeypatch.setenv("H_POLICY_UP_KEY", "sk-up")
    monkeypatch.delenv("H_POLICY_SPARE_KEY", raising=False)
    path = tmp_path / "policy.yaml"
    path.write_text(serving_policy(upstream.base_url, "model-a"))
    spare = '  spare: {type: openai, base_url: "http://127.0.0.1:9/v1", api_key: "${H_POLICY_SPARE_KEY}"}\n'
    with RunningRouter(path, watch_policy=False) as router:
        replace_file(path, serving_policy(upstream.base_url, "model-b", extra=spare))
        accepted = reload_now(router)
        model = answering_model(router)
    assert accepted.json()["result"] == "success"
    assert model == "model-b"


def test_at_start_up_an_unset_provider_variable_disables_the_provider(tmp_path, upstream, monkeypatch):
    monkeypatch.delenv("H_POLICY_UP_KEY", raising=False)
    path = tmp_path / "policy.yaml"
    path.write_text(serving_policy(upstream.base_url, "model-a"))
    with RunningRouter(path, watch_policy=False) as router:
        response = httpx.post(f"{router.base_url}/chat/completions", json={"model": "standard", "messages": HELLO})
    assert response.status_code == 503


def test_a_tag_in_an_edited_file_is_a_counted_located_reload_failure(tmp_path, upstream, monkeypatch, caplog):
    caplog.set_level(logging.ERROR, logger="router")
    monkeypatch.setenv("H_POLICY_UP_KEY", "sk-up")
    marker = tmp_path / "pwned"
    path = tmp_path / "policy.yaml"
    path.write_text(serving_policy(upstream.base_url, "model-a"))
    with RunningRouter(path) as router:
        time.sleep(0.3)  # the watcher is up
        replace_file(
            path,
            serving_policy(upstream.base_url, "model-b").replace(
                "tier: standard, price", f"tier: !!python/object/apply:os.system ['touch {marker}'], price"
            ),
        )
        wait_for(lambda: metric_sum(scrape(router.url), "router_policy_reloads_total", result="failure") == 1, 10)
        model = answering_model(router)
    assert model == "model-a"
    assert not marker.exists()
    assert reload_errors(caplog) == [
        f"{path}:6 models.model-b.tier: YAML tag !!python/object/apply:os.system is not allowed: "
        "a policy holds plain values only (strings, numbers, booleans, lists, mappings)"
    ]
    assert not [r for r in caplog.records if "unexpectedly" in r.getMessage()]


def test_an_alias_bomb_reload_is_a_counted_failure(tmp_path, upstream, monkeypatch, caplog):
    caplog.set_level(logging.ERROR, logger="router.reload")
    monkeypatch.setenv("H_POLICY_UP_KEY", "sk-up")
    path = tmp_path / "policy.yaml"
    path.write_text(serving_policy(upstream.base_url, "model-a"))
    with RunningRouter(path, watch_policy=False) as router:
        replace_file(path, BILLION_LAUGHS + serving_policy(upstream.base_url, "model-b"))
        refused = reload_now(router)
        failures = metric_sum(scrape(router.url), "router_policy_reloads_total", result="failure")
    assert refused.status_code == 422
    assert failures == 1
    assert reload_errors(caplog) == [
        f"{path}:6 f: expands to more than 100000 values once aliases are expanded; a policy is never this big"
    ]


def test_the_reload_log_shows_the_variable_never_its_value(tmp_path, upstream, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG, logger="router")
    monkeypatch.setenv("H_POLICY_UP_KEY", "sk-up")
    monkeypatch.setenv("H_POLICY_PRIMARY_KEY", CANARY)
    path = tmp_path / "policy.yaml"
    path.write_text(serving_policy(upstream.base_url, "model-a"))
    with RunningRouter(path, watch_policy=False) as router:
        replace_file(path, serving_policy("${H_POLICY_PRIMARY_KEY}", "model-b"))
        refused = reload_now(router)
    expected = f"{path}:4 providers.up.base_url: must start with http:// or https://, got '${{H_POLICY_PRIMARY_KEY}}'"
    assert refused.json()["errors"] == [expected]
    assert reload_errors(caplog) == [expected]
    assert CANARY not in refused.text
    assert CANARY not in caplog.text and not any(CANARY in str(r.__dict__) for r in caplog.records)


def large_policy(upstream_url: str, items: int) -> str:
    """Valid, and slow to parse: one provider lists ``items`` unsupported parameters."""
    params = ",\n".join(f"      param_{i}" for i in range(items))
    return serving_policy(upstream_url, "model-b").replace(
        '"${H_POLICY_UP_KEY}"}\n', f'"${{H_POLICY_UP_KEY}}",\n    unsupported_params: [\n{params}\n    ]}}\n'
    )


def test_healthz_answers_within_100ms_while_a_large_policy_is_reloaded(tmp_path, upstream, monkeypatch):
    monkeypatch.setenv("H_POLICY_UP_KEY", "sk-up")
    path = tmp_path / "policy.yaml"
    path.write_text(serving_policy(upstream.base_url, "model-a"))
    with RunningRouter(path, watch_policy=False) as router, httpx.Client(timeout=30) as client:
        replace_file(path, large_policy(upstream.base_url, 15_000))
        outcome: list[httpx.Response] = []
        reloading = threading.Thread(target=lambda: outcome.append(reload_now(router)))
        reloading.start()
        latencies = []
        while reloading.is_alive():
            started = time.monotonic()
            assert client.get(f"{router.url}/healthz").status_code == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.02)
        reloading.join()
        model = answering_model(router)
    assert outcome[0].json()["result"] == "success"
    assert model == "model-b"
    assert len(latencies) >= 5, "the reload was too quick to overlap the probes"
    assert max(latencies) < 0.1, sorted(latencies)[-5:]
