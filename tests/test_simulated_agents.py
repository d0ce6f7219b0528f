"""The built-in ``simulated`` provider drives agent frameworks: a tool call whose arguments
validate, a text answer that uses the tool result, structured output that is an instance of
the schema, the same answer streamed or not. Through the real proxy on a real socket, with the
official ``openai`` SDK, pydantic-ai and openai-agents as their users run them."""

from __future__ import annotations

import asyncio
import enum
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from router.providers.schema_example import example_for
from tests.harness import RunningRouter, write_policy

REPO = Path(__file__).resolve().parents[1]
POLICY = """
version: 1
tiers: [standard]
providers:
  sim: {type: simulated, latency_ms: 1, tokens_per_second: 20000}
models:
  sim-model: {provider: sim, tier: standard, price: {input: 1, output: 2}, context_window: 128000, capabilities: [tools, json_schema]}
routes:
  standard: {tier: standard}
defaults: {route: standard, baseline_model: sim-model}
"""
ORDER_TOOL = {
    "type": "function",
    "function": {
        "name": "place_order",
        "description": "Order items for delivery",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {
                "customer": {
                    "type": "object",
                    "properties": {
                        "email": {"type": "string", "format": "email"},
                        "tier": {"type": "string", "enum": ["gold", "silver"]},
                    },
                    "required": ["email", "tier"],
                    "additionalProperties": False,
                },
                "items": {
                    "type": "array",
                    "minItems": 2,
                    "items": {
                        "type": "object",
                        "properties": {
                            "sku": {"type": "string", "pattern": "^[A-Z]{3}-\\d{4}$"},
                            "quantity": {"type": "integer", "minimum": 1, "maximum": 5},
                        },
                        "required": ["sku", "quantity"],
                        "additionalProperties": False,
                    },
                },
                "express": {"type": "boolean"},
                "note": {"type": ["string", "null"]},
            },
            "required": ["customer", "items", "express", "note"],
            "additionalProperties": False,
        },
    },
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ASK = [{"role": "user", "content": "Order two things for me"}]


@pytest.fixture()
def router(tmp_path: Path) -> Iterator[RunningRouter]:
    with RunningRouter(write_policy(tmp_path, POLICY)) as running:
        yield running


@pytest.fixture()
def client(router: RunningRouter) -> openai.OpenAI:
    return openai.OpenAI(base_url=router.base_url, api_key="unused", max_retries=0, _strict_response_validation=True)


def arguments_of(completion: Any) -> dict[str, Any]:
    (call,) = completion.choices[0].message.tool_calls
    return json.loads(call.function.arguments)


def test_tool_call_arguments_validate_against_the_tool_schema(client):
    completion = client.chat.completions.create(model="standard", messages=ASK, tools=[ORDER_TOOL])
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.choices[0].message.tool_calls[0].function.name == "place_order"
    jsonschema.validate(arguments_of(completion), ORDER_TOOL["function"]["parameters"])
    assert completion.system_fingerprint == "simulated"


def test_tool_round_trip_ends_in_text_that_quotes_the_tool_result(client):
    first = client.chat.completions.create(model="standard", messages=ASK, tools=[ORDER_TOOL, WEATHER_TOOL])
    call = first.choices[0].message.tool_calls[0]
    history = [
        *ASK,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "order 4711 confirmed, arrives Tuesday"},
    ]
    second = client.chat.completions.create(model="standard", messages=history, tools=[ORDER_TOOL, WEATHER_TOOL])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.tool_calls is None
    assert 'place_order returned "order 4711 confirmed, arrives Tuesday"' in second.choices[0].message.content


@pytest.mark.parametrize(
    ("tool_choice", "after_result", "expected"),
    [
        ("none", False, None),
        ("auto", False, "place_order"),
        ("required", False, "place_order"),
        ({"type": "function", "function": {"name": "get_weather"}}, False, "get_weather"),
        ("auto", True, None),
        ("required", True, "get_weather"),  # forced again: the tool not yet called this turn
        ({"type": "function", "function": {"name": "place_order"}}, True, "place_order"),
        (
            {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [WEATHER_TOOL]}},
            False,
            "get_weather",
        ),
    ],
)
def test_tool_choice_is_respected(client, tool_choice, after_result, expected):
    messages: list[dict[str, Any]] = list(ASK)
    if after_result:
        call = {"id": "call_1", "type": "function", "function": {"name": "place_order", "arguments": "{}"}}
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "done"},
        ]
    completion = client.chat.completions.with_raw_response.create(
        model="standard", messages=messages, tools=[ORDER_TOOL, WEATHER_TOOL], tool_choice=tool_choice
    ).parse()
    calls = completion.choices[0].message.tool_calls
    assert (calls[0].function.name if calls else None) == expected
    if expected is None:
        assert completion.choices[0].message.content


class Priority(enum.Enum):
    low = "low"
    high = "high"


class Step(BaseModel):
    title: str = Field(min_length=3)
    minutes: int = Field(ge=5, le=120)
    done: bool


class Owner(BaseModel):
    name: str
    email: str | None


class Plan(BaseModel):
    goal: str
    priority: Priority
    kind: Literal["trip", "project"]
    steps: list[Step]
    owner: Owner | None
    tags: list[str]
    budget: float | None = Field(ge=0)


def test_parse_with_a_nested_pydantic_model_validates(client):
    assert "$defs" in Plan.model_json_schema()
    completion = client.chat.completions.parse(
        model="standard", messages=[{"role": "user", "content": "Plan my week"}], response_format=Plan
    )
    plan = completion.choices[0].message.parsed
    assert isinstance(plan, Plan)
    assert isinstance(plan.priority, Priority)
    assert plan.steps


def test_json_object_answer_is_a_json_object(client):
    completion = client.chat.completions.create(
        model="standard", messages=[{"role": "user", "content": "JSON please"}], response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(completion.choices[0].message.content), dict)


def test_legacy_functions_call_then_answer_in_text(client):
    functions = [WEATHER_TOOL["function"]]
    first = client.chat.completions.create(model="standard", messages=ASK, functions=functions)
    assert first.choices[0].finish_reason == "function_call"
    call = first.choices[0].message.function_call
    jsonschema.validate(json.loads(call.arguments), WEATHER_TOOL["function"]["parameters"])
    history = [
        *ASK,
        {"role": "assistant", "content": None, "function_call": {"name": call.name, "arguments": call.arguments}},
        {"role": "function", "name": "get_weather", "content": "sunny, 21 C"},
    ]
    second = client.chat.completions.create(model="standard", messages=history, functions=functions)
    assert second.choices[0].finish_reason == "stop"
    assert 'get_weather returned "sunny, 21 C"' in second.choices[0].message.content


def test_streamed_tool_call_reassembles_into_the_non_streamed_arguments(client):
    plain = client.chat.completions.create(model="standard", messages=ASK, tools=[ORDER_TOOL])
    chunks = list(
        client.chat.completions.create(
            model="standard", messages=ASK, tools=[ORDER_TOOL], stream=True, stream_options={"include_usage": True}
        )
    )
    deltas = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert deltas[0].index == 0 and deltas[0].id and deltas[0].function.name == "place_order"
    assert len(deltas) > 2 and all(d.index == 0 and d.id is None for d in deltas[1:])
    arguments = "".join(d.function.arguments or "" for d in deltas)
    assert json.loads(arguments) == arguments_of(plain)
    jsonschema.validate(json.loads(arguments), ORDER_TOOL["function"]["parameters"])
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert all(c.system_fingerprint == "simulated" for c in chunks)


def test_stream_without_include_usage_carries_no_usage_and_the_same_text(client):
    messages = [{"role": "user", "content": "Tell me something"}]
    plain = client.chat.completions.create(model="standard", messages=messages)
    chunks = list(client.chat.completions.create(model="standard", messages=messages, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == plain.choices[0].message.content
    assert all(c.usage is None for c in chunks)


def test_same_request_gets_the_same_answer_and_another_request_another(client):
    def answer(content: str) -> tuple[Any, ...]:
        completion = client.chat.completions.create(
            model="standard", messages=[{"role": "user", "content": content}], tools=[ORDER_TOOL]
        )
        (call,) = completion.choices[0].message.tool_calls
        return call.id, call.function.arguments

    assert answer("one") == answer("one")
    assert answer("one") != answer("two")


SCHEMAS: dict[str, dict[str, Any]] = {
    "ref with siblings and recursion": {
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                },
                "required": ["name", "children"],
            }
        },
        "$ref": "#/$defs/Node",
    },
    "allOf merged": {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
            {"properties": {"b": {"const": "x"}}, "required": ["b"]},
        ],
        "unevaluatedProperties": False,
    },
    "oneOf with a discriminator": {
        "oneOf": [
            {
                "type": "object",
                "properties": {"kind": {"const": "a"}, "n": {"type": "number"}},
                "required": ["kind", "n"],
            },
            {"type": "object", "properties": {"kind": {"const": "b"}}, "required": ["kind"]},
        ]
    },
    "oneOf integer or number": {"oneOf": [{"type": "number"}, {"type": "integer"}]},
    "numeric bounds": {
        "type": "object",
        "properties": {
            "a": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 2},
            "b": {"type": "number", "minimum": 0.1, "maximum": 0.2},
            "c": {"type": "integer", "multipleOf": 7, "minimum": 10},
            "d": {"type": "number", "exclusiveMaximum": -3},
        },
        "required": ["a", "b", "c", "d"],
    },
    "strings": {
        "type": "object",
        "properties": {
            "short": {"type": "string", "maxLength": 3},
            "long": {"type": "string", "minLength": 30},
            "code": {"type": "string", "pattern": "^(?:[a-f0-9]{2}:){2}[a-f0-9]{2}$"},
            "id": {"type": "string", "format": "uuid"},
            "when": {"type": "string", "format": "date-time"},
        },
        "required": ["short", "long", "code", "id", "when"],
    },
    "arrays": {
        "type": "object",
        "properties": {
            "unique": {"type": "array", "items": {"enum": [1, 2, 3]}, "minItems": 3, "uniqueItems": True},
            "tuple": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "items": False},
            "empty": {"type": "array", "maxItems": 0},
            "names": {"type": "array", "items": {"type": "string"}, "minItems": 3, "uniqueItems": True},
        },
        "required": ["unique", "tuple", "empty"],
    },
    "map": {"type": "object", "additionalProperties": {"type": "integer"}, "minProperties": 2},
    "nullable list type": {"type": ["null", "array"], "items": {"type": "boolean"}},
}


@pytest.mark.parametrize("name", SCHEMAS)
def test_schema_example_is_an_instance_of_the_schema(name):
    schema = SCHEMAS[name]
    for seed in range(25):
        jsonschema.validate(
            example_for(schema, random.Random(seed)),
            schema,
            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
        )


# --- agent frameworks over chat completions ------------------------------------------------


class Forecast(BaseModel):
    city: str
    summary: str
    days: list[int]
    confidence: Literal["low", "medium", "high"]


def test_pydantic_ai_agent_with_a_tool_and_output_type_completes(router):
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider
    from pydantic_ai.usage import UsageLimits

    calls: list[str] = []
    model = OpenAIChatModel("standard", provider=OpenAIProvider(base_url=router.base_url, api_key="unused"))
    agent = Agent(model, output_type=Forecast)

    @agent.tool_plain
    def weather(city: str, days: int) -> str:
        """The weather forecast for a city."""
        calls.append(city)
        return f"{city}: sunny for {days} days"

    result = agent.run_sync("What will the weather be in Nice?", usage_limits=UsageLimits(request_limit=4))
    assert isinstance(result.output, Forecast)
    assert len(calls) == 1
    assert result.usage.requests == 2


def test_openai_agents_chat_completions_agent_with_a_tool_and_output_type_completes(tmp_path: Path):
    """On the demo policy as `make run` serves it offline."""
    from agents import Agent, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)
    calls: list[str] = []

    @function_tool
    def weather(city: str, unit: Literal["celsius", "fahrenheit"]) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"{city}: 21 degrees {unit}, sunny"

    with RunningRouter(REPO / "policies" / "demo.yaml") as running:
        client = openai.AsyncOpenAI(base_url=running.base_url, api_key="unused", max_retries=2)
        agent = Agent(
            name="forecaster",
            instructions="Answer with a forecast.",
            model=OpenAIChatCompletionsModel(model="standard", openai_client=client),
            tools=[weather],
            output_type=Forecast,
        )
        result = asyncio.run(Runner.run(agent, "Weather in Nice?", max_turns=4))
    assert isinstance(result.final_output, Forecast)
    assert len(calls) == 1
