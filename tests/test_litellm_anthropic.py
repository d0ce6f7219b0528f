"""The litellm provider type: OpenAI SDK in, Anthropic's Messages API on the wire."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from tests.fakes.anthropic_upstream import ErrorReply, FakeAnthropicUpstream, Reply
from tests.harness import RunningRouter, write_policy
from tests.policies import model, policy, provider

REPO = Path(__file__).resolve().parents[1]
HELLO = [{"role": "user", "content": "hi"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def anthropic_server():
    with FakeAnthropicUpstream(api_key="sk-ant-test") as server:
        yield server


@pytest.fixture()
def anthropic(anthropic_server):
    anthropic_server.reset()
    return anthropic_server


@pytest.fixture()
def router(tmp_path, anthropic, upstream):
    policy = f"""
    version: 1
    tiers: [frontier, standard]
    providers:
      anthropic: {{type: litellm, base_url: "{anthropic.base_url}", api_key: sk-ant-test}}
      openai: {{type: openai, base_url: "{upstream.base_url}", api_key: sk-openai-test}}
    models:
      claude-haiku-4-5: {{provider: anthropic, upstream: anthropic/claude-haiku-4-5, tier: standard, price: {{input: 1, output: 5, cached_input: 0.1}}}}
      gpt-4o: {{provider: openai, tier: frontier}}
    routes:
      standard: {{tier: standard}}
    defaults: {{route: standard, retries: 0, baseline_model: gpt-4o}}
    """
    with RunningRouter(write_policy(tmp_path, policy)) as running:
        yield running


@pytest.fixture()
def client(router):
    return openai.OpenAI(base_url=router.base_url, api_key="x", max_retries=0, _strict_response_validation=True)


def test_json_is_translated_both_ways(client, anthropic):
    raw = client.chat.completions.with_raw_response.create(
        model="standard", messages=[{"role": "system", "content": "Be brief."}, *HELLO], max_tokens=50
    )
    completion = raw.parse()
    assert completion.model == "claude-haiku-4-5"
    assert completion.choices[0].message.content == "Hello from claude-haiku-4-5."
    assert completion.usage.prompt_tokens == 20 and completion.usage.completion_tokens == 5
    assert float(raw.headers["x-router-cost-usd"]) == pytest.approx((20 * 1 + 5 * 5) / 1e6)
    sent = anthropic.last_request
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == "sk-ant-test"
    assert sent.json["max_tokens"] == 50
    assert sent.json["system"][0]["text"] == "Be brief."


def test_stream_is_translated_with_usage(client, anthropic):
    chunks = list(
        client.chat.completions.create(
            model="standard", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from claude-haiku-4-5."
    usage = [c for c in chunks if c.usage is not None]
    assert len(usage) == 1 and usage[0].choices == []
    assert usage[0].usage.prompt_tokens == 20 and usage[0].usage.completion_tokens == 5
    assert {c.model for c in chunks} == {"claude-haiku-4-5"}


def test_stream_without_include_usage_has_no_usage_chunk(client, anthropic):
    chunks = list(client.chat.completions.create(model="standard", messages=HELLO, stream=True))
    assert all(c.usage is None for c in chunks) and all(c.choices for c in chunks)


def test_tool_calls_are_translated_in_a_stream(client, anthropic):
    anthropic.script(Reply(tool_input={"city": "Lyon"}))
    with client.chat.completions.stream(model="standard", messages=HELLO, tools=[WEATHER_TOOL]) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Lyon"}
    assert final.choices[0].finish_reason == "tool_calls"
    assert anthropic.last_request.json["tools"][0]["name"] == "get_weather"


def test_tool_calls_are_translated_without_a_stream(client, anthropic):
    anthropic.script(Reply(tool_input={"city": "Nice"}))
    completion = client.chat.completions.create(model="standard", messages=HELLO, tools=[WEATHER_TOOL])
    assert json.loads(completion.choices[0].message.tool_calls[0].function.arguments) == {"city": "Nice"}


def test_anthropic_overload_falls_back_to_the_next_provider_once(client, anthropic, upstream):
    anthropic.script(ErrorReply(529))
    raw = client.chat.completions.with_raw_response.create(model="standard", messages=HELLO)
    assert raw.headers["x-router-model"] == "gpt-4o" and raw.headers["x-router-attempts"] == "2"
    assert len(anthropic.messages_requests) == 1  # litellm made no retries of its own


def test_anthropic_400_is_returned_without_fallback(client, anthropic, upstream):
    anthropic.script(ErrorReply(400))
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="standard", messages=HELLO)
    assert upstream.requests == []
    assert "127.0.0.1" not in info.value.message and "sk-ant" not in info.value.message


def litellm_imported_while_serving(policy_path) -> bool:
    """Whether a router serving this policy (start-up done) has imported litellm, in a fresh
    interpreter so that nothing else imported it first."""
    code = (
        "import sys; from tests.harness import RunningRouter; "
        f"router = RunningRouter(__import__('pathlib').Path({str(policy_path)!r})); router.__enter__(); "
        "print('litellm' in sys.modules, flush=True); router.__exit__(None, None, None)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.stdout.strip() in ("True", "False"), result.stderr
    return result.stdout.strip() == "True"


def test_litellm_is_imported_only_when_a_litellm_provider_is_configured(tmp_path):
    openai_only = {"openai": provider("http://127.0.0.1:9/v1")}
    with_litellm = {**openai_only, "anthropic": provider("http://127.0.0.1:9", type="litellm", api_key="sk-ant-x")}
    models = {"gpt-4o": model("openai", "gpt-4o", "frontier")}
    claude = {"claude": model("anthropic", "anthropic/claude-haiku-4-5", price=(1, 5))}
    without = write_policy(tmp_path, policy(providers=openai_only, models=models, route="frontier"), "without.yaml")
    configured = write_policy(tmp_path, policy(providers=with_litellm, models={**models, **claude}), "with.yaml")
    assert not litellm_imported_while_serving(without)
    assert litellm_imported_while_serving(configured)
