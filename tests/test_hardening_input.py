"""Issue 9, input side: what a client body may carry, judged on the parsed body.

Forbidden connection fields (also when spelt with JSON escapes) are refused only at the top
level, litellm gets only OpenAI parameters, nesting is bounded everywhere, legacy
``functions`` count against the tools limit, Content-Type is parsed, and counting a huge
prompt never stalls other requests.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import openai
import pydantic
import pytest

from tests.fakes import FakeOpenAIUpstream
from tests.fakes.anthropic_upstream import FakeAnthropicUpstream
from tests.fakes.openai_upstream import Reply
from tests.harness import RunningRouter, two_model_policy, write_policy
from tests.processes import RouterProcess

HELLO = [{"role": "user", "content": "hi"}]
CHAT = b'{"model": "standard", "messages": [{"role": "user", "content": "hi"}]'


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.fixture()
def http(router: RunningRouter, upstream: FakeOpenAIUpstream):
    with httpx.Client(base_url=router.url, timeout=10) as client:
        yield client


def post_raw(http: httpx.Client, body: bytes, content_type: str = "application/json") -> httpx.Response:
    return http.post("/v1/chat/completions", content=body, headers={"content-type": content_type})


# --- forbidden fields: decided on the parsed body, top level only ---------------------------


@pytest.mark.parametrize(
    ("spelling", "field"),
    [
        (rb'"api\u005fbase"', "api_base"),
        (rb'"b\u0061se_url"', "base_url"),
        (rb'"\u0061pi_key"', "api_key"),
        (rb'"organi\u007aation"', "organization"),
    ],
)
@pytest.mark.parametrize("stream", [b"false", b"true"])
def test_forbidden_field_spelt_with_json_escapes_is_refused_without_calling_upstream(
    http, upstream, spelling, field, stream
):
    body = CHAT + b', "stream": ' + stream + b", " + spelling + b': "http://127.0.0.1:9/attacker"}'
    response = post_raw(http, body)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "forbidden_field" and error["param"] == field
    assert "policy" in error["message"]
    assert upstream.requests == []


@pytest.mark.parametrize(
    "field",
    [
        "api_version",
        "api_type",
        "extra_headers",
        "headers",
        "custom_llm_provider",
        "deployment_id",
        "aws_secret_access_key",
        "aws_bedrock_runtime_endpoint",
        "vertex_credentials",
        "azure_ad_token",
        "litellm_credential_name",
        "client_secret",
        "ssl_verify",
        "mock_response",
        "mock_tool_calls",
    ],
)
def test_connection_credential_and_mock_fields_at_top_level_are_refused(client, upstream, field):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="standard", messages=HELLO, extra_body={field: "x"})
    assert info.value.code == "forbidden_field" and info.value.param == field
    assert upstream.requests == []


class Contact(pydantic.BaseModel):
    name: str
    organization: str


def test_structured_output_schema_with_an_organization_property_passes(client, upstream):
    upstream.script(Reply(content='{"name": "Ada", "organization": "Analytical Engines"}'))
    completion = client.chat.completions.parse(model="standard", messages=HELLO, response_format=Contact)
    assert completion.choices[0].message.parsed == Contact(name="Ada", organization="Analytical Engines")
    schema = upstream.last_request.json["response_format"]["json_schema"]["schema"]
    assert "organization" in schema["properties"]


def test_connection_field_names_inside_tools_metadata_and_messages_are_data(client, upstream):
    tool = {
        "type": "function",
        "function": {
            "name": "create_key",
            "parameters": {
                "type": "object",
                "properties": {"api_key": {"type": "string"}, "base_url": {"type": "string"}},
            },
        },
    }
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "store {'api_base': 'x'}"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "go"},
    ]
    completion = client.chat.completions.create(
        model="standard",
        messages=messages,
        tools=[tool],
        metadata={"organization": "acme", "api_key": "not-a-key"},
        store=True,
    )
    assert completion.model == "cheap-model"
    sent = upstream.last_request.json
    assert sent["metadata"] == {"organization": "acme", "api_key": "not-a-key"}
    assert "api_key" in sent["tools"][0]["function"]["parameters"]["properties"]


# --- litellm: an allow-list of OpenAI parameters, nothing else -------------------------------


@pytest.fixture(scope="module")
def anthropic_server():
    from router.providers.litellm_adapter import _import_litellm

    _import_litellm()  # ~9 s once, so that the proxy starts within the harness's 10 s
    with FakeAnthropicUpstream(api_key="sk-ant-test") as server:
        yield server


@pytest.fixture(scope="module")
def attacker_server():
    with FakeAnthropicUpstream(require_auth=False) as server:
        yield server


@pytest.fixture()
def litellm_router(tmp_path, anthropic_server, attacker_server, upstream):
    anthropic_server.reset()
    attacker_server.reset()
    policy = f"""
    version: 1
    tiers: [frontier, standard]
    providers:
      anthropic: {{type: litellm, base_url: "{anthropic_server.base_url}", api_key: sk-ant-test}}
      anthropic-default-url: {{type: litellm, api_key: sk-ant-secret-key}}
      openai: {{type: openai, base_url: "{upstream.base_url}", api_key: sk-openai-test}}
    models:
      claude-haiku-4-5: {{provider: anthropic, upstream: anthropic/claude-haiku-4-5, tier: standard, price: {{input: 1, output: 5}}}}
      claude-direct: {{provider: anthropic-default-url, upstream: anthropic/claude-haiku-4-5, tier: frontier, price: {{input: 1, output: 5}}}}
      gpt-4o: {{provider: openai, tier: frontier, price: {{input: 9, output: 9}}}}
    routes:
      standard: {{tier: standard}}
      direct: {{tier: frontier}}
    defaults: {{route: standard, retries: 0, baseline_model: gpt-4o}}
    """
    with RunningRouter(write_policy(tmp_path, policy)) as running:
        yield running


@pytest.mark.parametrize("spelling", [rb'"b\u0061se_url"', rb'"api\u005fbase"'])
@pytest.mark.parametrize("stream", [b"false", b"true"])
def test_escaped_base_url_never_sends_the_provider_key_elsewhere(
    litellm_router, anthropic_server, attacker_server, spelling, stream
):
    attacker = f'"{attacker_server.base_url}"'.encode()
    body = (
        b'{"model": "direct", "messages": [{"role": "user", "content": "hi"}], "stream": '
        + stream
        + b", "
        + spelling
        + b": "
        + attacker
        + b"}"
    )
    response = httpx.post(
        f"{litellm_router.url}/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400 and error_of(response)["code"] == "forbidden_field"
    assert attacker_server.requests == [] and anthropic_server.requests == []


def litellm_client(router: RunningRouter) -> openai.OpenAI:
    return openai.OpenAI(base_url=router.base_url, api_key="x", max_retries=0, _strict_response_validation=True)


def test_mock_response_is_refused_and_never_fabricates_an_answer_or_ejects_the_model(litellm_router, anthropic_server):
    client = litellm_client(litellm_router)
    for stream in (False, True, False):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(
                model="standard",
                messages=HELLO,
                stream=stream,
                extra_body={"mock_response": "litellm.InternalServerError"},
            )
        assert info.value.code == "forbidden_field" and "fabricates" in info.value.message
    assert anthropic_server.requests == []
    raw = client.chat.completions.with_raw_response.create(model="standard", messages=HELLO)
    assert raw.headers["x-router-model"] == "claude-haiku-4-5"  # still healthy, still first
    assert raw.parse().choices[0].message.content == "Hello from claude-haiku-4-5."


def test_litellm_only_receives_openai_parameters_from_the_body(litellm_router, anthropic_server):
    client = litellm_client(litellm_router)
    completion = client.chat.completions.create(
        model="standard",
        messages=[{"role": "system", "content": "Be brief."}, *HELLO],
        max_tokens=50,
        extra_body={
            "supports_system_message": False,  # litellm would turn the system prompt into a user turn
            "additional_drop_params": ["max_tokens"],  # litellm would drop max_tokens
            "num_retries": 3,  # litellm would retry on its own
        },
    )
    assert completion.choices[0].message.content == "Hello from claude-haiku-4-5."
    sent = anthropic_server.last_request.json
    assert sent["system"][0]["text"] == "Be brief." and sent["max_tokens"] == 50
    assert len(anthropic_server.messages_requests) == 1


# --- nesting depth: bounded everywhere, 400 naming the limit, never 500 ---------------------


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize(
    ("field", "template"),
    [
        ("metadata", b'"metadata": %s'),
        ("tools", b'"tools": [{"type": "function", "function": {"name": "f", "parameters": %s}}]'),
        ("response_format", b'"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": %s}}'),
        ("messages", None),
    ],
)
def test_nesting_beyond_the_limit_anywhere_is_400_naming_the_limit(http, upstream, field, template):
    if template is None:  # deep inside a message's tool call
        body = b'{"model": "standard", "messages": [{"role": "user", "content": "hi", "extra": ' + nested(300) + b"}]}"
    else:
        body = CHAT + b", " + template % nested(300) + b"}"
    response = post_raw(http, body)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "nesting_too_deep" and error["param"] == field
    assert "64 levels" in error["message"]
    assert upstream.requests == []


def test_nesting_just_within_the_limit_is_forwarded(http, upstream):
    response = post_raw(http, CHAT + b', "metadata": ' + nested(62) + b"}")
    assert response.status_code == 200


def test_nesting_beyond_the_limit_in_an_embeddings_input_is_400(http, upstream):
    body = b'{"model": "embed-model", "input": ' + b"[" * 200 + b"1" + b"]" * 200 + b"}"
    response = http.post("/v1/embeddings", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400 and error_of(response)["code"] == "nesting_too_deep"


# --- legacy functions count against the tools limit ------------------------------------------


def test_two_thousand_legacy_functions_are_400_stating_the_limit(client, upstream):
    functions = [{"name": f"f{i}", "parameters": {"type": "object", "properties": {}}} for i in range(2000)]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="standard", messages=HELLO, functions=functions)
    assert info.value.param == "functions" and "128" in info.value.message
    assert upstream.requests == []


def test_tools_and_functions_together_count_against_one_limit(http, upstream):
    tools = [{"type": "function", "function": {"name": f"t{i}", "parameters": {}}} for i in range(100)]
    functions = [{"name": f"f{i}", "parameters": {}} for i in range(100)]
    response = http.post(
        "/v1/chat/completions",
        json={"model": "standard", "messages": HELLO, "tools": tools, "functions": functions},
    )
    assert response.status_code == 400 and "128" in error_of(response)["message"]


# --- Content-Type is a parsed media type ----------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/html; charset=json", "text/json-ish", "application/jsonp"])
def test_content_type_that_only_mentions_json_is_415(http, upstream, content_type):
    response = post_raw(http, CHAT + b"}", content_type)
    assert response.status_code == 415 and error_of(response)["code"] == "unsupported_media_type"
    assert upstream.requests == []


@pytest.mark.parametrize(
    "content_type", ["application/json", "Application/JSON; charset=utf-8", "application/vnd.api+json"]
)
def test_json_media_types_with_parameters_are_accepted(http, upstream, content_type):
    assert post_raw(http, CHAT + b"}", content_type).status_code == 200


# --- counting a huge prompt never stalls other requests -------------------------------------


def test_healthz_answers_within_100ms_while_a_30_mib_prompt_is_handled(tmp_path: Path, upstream):
    policy = write_policy(tmp_path, two_model_policy(upstream.base_url))
    text = b"The quick brown fox jumps over the lazy dog; routing costs nothing. " * (30 * 1024 * 1024 // 68)
    body = b'{"model": "standard", "messages": [{"role": "user", "content": "' + text + b'"}]}'
    outcome: dict[str, object] = {}

    with RouterProcess(policy) as proxy:

        def send_big_prompt() -> None:
            started = time.monotonic()
            response = httpx.post(
                f"{proxy.url}/v1/chat/completions",
                content=body,
                headers={"content-type": "application/json"},
                timeout=120,
            )
            outcome.update(status=response.status_code, error=response.json()["error"], took=time.monotonic() - started)

        sender = threading.Thread(target=send_big_prompt)
        latencies = []
        with httpx.Client(base_url=proxy.url, timeout=30) as poller:
            poller.get("/healthz")  # connection open before the clock starts
            sender.start()
            while sender.is_alive():
                started = time.monotonic()
                assert poller.get("/healthz").status_code == 200
                latencies.append(time.monotonic() - started)
                time.sleep(0.01)
        sender.join()

    # the prompt is ~7 million tokens: no model's context window holds it
    assert outcome["status"] == 400, outcome
    assert len(latencies) >= 3, f"the big request took only {outcome['took']:.3f}s; nothing was measured"
    assert max(latencies) < 0.1, f"slowest /healthz {max(latencies) * 1000:.0f} ms over {len(latencies)} polls"
