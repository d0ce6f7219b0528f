"""Issue 11 item 1, the pure core: Responses API ⇄ Chat Completions, data in, data out.

Literal Responses bodies become literal chat bodies; literal chat completions and literal
chunk streams become ``response`` objects and Responses events, each validated against the
openai SDK's own types (the contract real clients parse) with no field the SDK does not know.
The last tests drive the real ``openai`` client through an httpx transport that answers with
the translator's output, so the SDK's own request building, SSE parsing and strict
validation are exercised end to end without a network.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import httpx
import openai
import pydantic
import pytest
from openai import omit
from openai._models import validate_type
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent

from router.api.requests import check_chat_body
from router.errors import InvalidRequest
from router.responses import (
    BuiltinToolUnsupported,
    ResponsesStreamTranslator,
    UntranslatableRequest,
    sse_event,
    to_chat_request,
    to_responses_object,
)

# Fields real OpenAI responses carry that this SDK version does not model.
ALLOWED_EXTRAS = {"Response": {"store"}, "ResponseErrorEvent": {"error"}}
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def no_unknown_fields(model: pydantic.BaseModel, path: str = "$") -> None:
    extras = set(model.model_extra or {}) - ALLOWED_EXTRAS.get(type(model).__name__, set())
    assert not extras, f"{path} ({type(model).__name__}) has fields the SDK does not know: {extras}"
    for name in type(model).model_fields:
        value = getattr(model, name)
        values = value if isinstance(value, list) else [value]
        for index, child in enumerate(values):
            if isinstance(child, pydantic.BaseModel):
                no_unknown_fields(child, f"{path}.{name}[{index}]")


def valid_response(obj: dict[str, Any]) -> Response:
    json.dumps(obj)  # plain JSON data, nothing else
    parsed = validate_type(type_=Response, value=obj)
    no_unknown_fields(parsed)
    return parsed


def valid_events(events: list[dict[str, Any]]) -> list[Any]:
    parsed = []
    for event in events:
        json.dumps(event)
        model = validate_type(type_=ResponseStreamEvent, value=event)
        assert type(model).__name__ != "dict", event
        no_unknown_fields(model)
        parsed.append(model)
    return parsed


def refused(body: dict[str, Any], **options: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        to_chat_request(body, **options)
    error = caught.value
    assert error.status == 400
    shape = error.body()["error"]
    assert shape["type"] == "invalid_request_error" and shape["param"] == error.param and error.message
    return error


# -- request: Responses → Chat Completions ---------------------------------------------------------


def test_string_input_with_instructions_becomes_system_then_user_message() -> None:
    chat = to_chat_request({"model": "standard", "input": "Hello", "instructions": "Be brief."})
    assert chat == {
        "model": "standard",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
    }
    check_chat_body(chat, max_n=8)


def test_item_list_with_images_tool_calls_and_outputs_becomes_chat_messages() -> None:
    body = {
        "model": "standard",
        "input": [
            {"role": "developer", "content": "Use tools."},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Weather here?"},
                    {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "low"},
                ],
            },
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {
                "type": "message",
                "role": "assistant",
                "id": "msg_1",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
            },
            {"type": "function_call", "call_id": "call_a", "name": "get_weather", "arguments": '{"city":"Oslo"}'},
            {"type": "function_call", "call_id": "call_b", "name": "get_weather", "arguments": '{"city":"Rome"}'},
            {"type": "function_call_output", "call_id": "call_a", "output": "3 C"},
            {"type": "function_call_output", "call_id": "call_b", "output": [{"type": "input_text", "text": "25 C"}]},
            {"role": "user", "content": [{"type": "input_text", "text": "Thanks"}]},
        ],
    }
    chat = to_chat_request(body)
    assert chat["messages"] == [
        {"role": "system", "content": "Use tools."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather here?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "3 C"},
        {"role": "tool", "tool_call_id": "call_b", "content": "25 C"},
        {"role": "user", "content": "Thanks"},
    ]
    check_chat_body(chat, max_n=8)


def test_function_call_without_preceding_text_opens_its_own_assistant_turn() -> None:
    chat = to_chat_request(
        {
            "input": [
                {"role": "user", "content": "go"},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "ok"},
                {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{}"},
            ]
        }
    )
    assert [m["role"] for m in chat["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert chat["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }
    assert chat["messages"][3]["tool_calls"][0]["id"] == "c2"


def test_previous_items_come_after_instructions_and_before_input_without_duplicates() -> None:
    first_request = {"model": "standard", "input": "What is the weather in Oslo?", "tools": [WEATHER_TOOL]}
    first = to_responses_object(
        {
            "model": "m1",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                            }
                        ],
                    },
                }
            ],
        },
        request=first_request,
        response_id="resp_1",
        created_at=1,
    )
    stored = [{"role": "user", "content": "What is the weather in Oslo?"}, *first["output"]]
    chat = to_chat_request(
        {
            "model": "standard",
            "instructions": "Answer in French.",
            "previous_response_id": "resp_1",
            "input": [{"type": "function_call_output", "call_id": "call_1", "output": "3 C"}],
        },
        previous_items=stored,
    )
    assert chat["messages"] == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "What is the weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "3 C"},
    ]
    assert "previous_response_id" not in chat


def test_flat_function_tools_become_nested_chat_tools() -> None:
    chat = to_chat_request({"input": "hi", "tools": [{**WEATHER_TOOL, "strict": True}], "parallel_tool_calls": False})
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": WEATHER_TOOL["parameters"],
                "strict": True,
            },
        }
    ]
    assert chat["parallel_tool_calls"] is False
    check_chat_body(chat, max_n=8)


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ("none", "none"),
        ("auto", "auto"),
        ("required", "required"),
        ({"type": "function", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
    ],
)
def test_tool_choice_forms_translate(tool_choice: Any, expected: Any) -> None:
    chat = to_chat_request({"input": "hi", "tools": [WEATHER_TOOL], "tool_choice": tool_choice})
    assert chat["tool_choice"] == expected


def test_allowed_tools_choice_sends_the_allowed_subset_with_its_mode() -> None:
    other = {**WEATHER_TOOL, "name": "get_time"}
    chat = to_chat_request(
        {
            "input": "hi",
            "tools": [WEATHER_TOOL, other],
            "tool_choice": {
                "type": "allowed_tools",
                "mode": "required",
                "tools": [{"type": "function", "name": "get_time"}],
            },
        }
    )
    assert chat["tool_choice"] == "required"
    assert [tool["function"]["name"] for tool in chat["tools"]] == ["get_time"]


def test_parallel_tool_calls_without_tools_is_not_sent_upstream() -> None:
    assert "parallel_tool_calls" not in to_chat_request({"input": "hi", "parallel_tool_calls": True})


def test_text_format_json_schema_becomes_response_format() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "required": ["a"],
        "additionalProperties": False,
    }
    chat = to_chat_request(
        {
            "input": "hi",
            "text": {
                "format": {"type": "json_schema", "name": "Answer", "schema": schema, "strict": True},
                "verbosity": "low",
            },
        }
    )
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Answer", "schema": schema, "strict": True},
    }
    assert chat["verbosity"] == "low"


def test_text_format_json_object_and_text() -> None:
    assert to_chat_request({"input": "hi", "text": {"format": {"type": "json_object"}}})["response_format"] == {
        "type": "json_object"
    }
    assert "response_format" not in to_chat_request({"input": "hi", "text": {"format": {"type": "text"}}})


def test_sampling_limits_user_and_reasoning_effort_are_forwarded_metadata_is_not() -> None:
    chat = to_chat_request(
        {
            "model": "frontier",
            "input": "hi",
            "temperature": 0.2,
            "top_p": 0.9,
            "user": "u-1",
            "max_output_tokens": 300,
            "reasoning": {"effort": "low", "summary": "auto"},
            "metadata": {"k": "v"},
            "store": False,
            "include": ["reasoning.encrypted_content"],
            "truncation": "disabled",
        }
    )
    assert chat == {
        "model": "frontier",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.2,
        "top_p": 0.9,
        "user": "u-1",
        "max_tokens": 300,
        "reasoning_effort": "low",
    }
    limited = to_chat_request({"input": "hi", "max_output_tokens": 300}, max_tokens_param="max_completion_tokens")
    assert limited["max_completion_tokens"] == 300 and "max_tokens" not in limited


def test_stream_asks_the_upstream_for_usage() -> None:
    chat = to_chat_request({"input": "hi", "stream": True})
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    assert "stream" not in to_chat_request({"input": "hi", "stream": False})


def test_builtin_tool_is_refused_naming_the_providers_that_serve_it() -> None:
    error = refused(
        {"input": "hi", "tools": [WEATHER_TOOL, {"type": "web_search"}]}, native_providers=["openai", "azure"]
    )
    assert isinstance(error, BuiltinToolUnsupported)
    assert error.param == "tools[1].type" and error.code == "unsupported_tool"
    assert "'web_search'" in error.message and "openai, azure" in error.message


def test_builtin_tool_without_native_provider_says_none_serves_it() -> None:
    error = refused({"input": "hi", "tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]})
    assert isinstance(error, BuiltinToolUnsupported)
    assert "none in this policy" in error.message


@pytest.mark.parametrize(
    ("body", "param", "kind"),
    [
        ({"input": "hi", "tool_choice": {"type": "web_search_preview"}}, "tool_choice.type", BuiltinToolUnsupported),
        (
            {"input": "hi", "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]},
            "tools[0].type",
            BuiltinToolUnsupported,
        ),
        ({"input": "hi", "tools": [{"type": "computer_use_preview"}]}, "tools[0].type", BuiltinToolUnsupported),
        ({"input": "hi", "tools": [{"type": "custom", "name": "grammar"}]}, "tools[0].type", UntranslatableRequest),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]},
            "input[0].content[0].file_id",
            UntranslatableRequest,
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]},
            "input[0].content[0].file_id",
            UntranslatableRequest,
        ),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]", UntranslatableRequest),
        (
            {"input": [{"type": "web_search_call", "id": "ws_1", "status": "completed"}]},
            "input[0].type",
            UntranslatableRequest,
        ),
        (
            {
                "input": [
                    {
                        "type": "function_call_output",
                        "call_id": "c",
                        "output": [{"type": "input_image", "image_url": "https://x/y.png"}],
                    }
                ]
            },
            "input[0].output[0]",
            UntranslatableRequest,
        ),
        ({"input": "hi", "background": True}, "background", UntranslatableRequest),
        ({"input": "hi", "conversation": "conv_1"}, "conversation", UntranslatableRequest),
        ({"input": "hi", "max_tool_calls": 2}, "max_tool_calls", UntranslatableRequest),
        ({"input": "hi", "prompt": {"id": "pmpt_1"}}, "prompt", UntranslatableRequest),
    ],
)
def test_untranslatable_field_is_a_400_naming_it(body: dict[str, Any], param: str, kind: type[InvalidRequest]) -> None:
    error = refused(body)
    assert isinstance(error, kind)
    assert error.param == param


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"model": "standard"}, "input", "missing_required_parameter"),
        ({"input": 3}, "input", None),
        ({"input": "hi", "temperatur": 1}, "temperatur", "unknown_parameter"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role", None),
        (
            {"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}]},
            "input[0].arguments",
            None,
        ),
        ({"input": [{"type": "mystery"}]}, "input[0].type", None),
        ({"input": "hi", "tools": [{"type": "function"}]}, "tools[0].name", None),
        ({"input": "hi", "tools": "x"}, "tools", None),
        ({"input": "hi", "text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.name", None),
        ({"input": "hi", "text": {"format": {"type": "yaml"}}}, "text.format.type", None),
        ({"input": "hi", "instructions": ["x"]}, "instructions", None),
        ({"input": "hi", "stream": "yes"}, "stream", None),
        (
            {
                "input": "hi",
                "tools": [WEATHER_TOOL],
                "tool_choice": {
                    "type": "allowed_tools",
                    "mode": "auto",
                    "tools": [{"type": "function", "name": "nope"}],
                },
            },
            "tool_choice.tools",
            None,
        ),
    ],
)
def test_malformed_body_is_a_400_naming_the_field(body: dict[str, Any], param: str, code: str | None) -> None:
    error = refused(body)
    assert not isinstance(error, UntranslatableRequest)
    assert error.param == param and error.code == code


# -- non-streamed: chat completion → response ------------------------------------------------------

REQUEST = {
    "model": "standard",
    "input": "What is the weather in Oslo?",
    "instructions": "Be brief.",
    "tools": [WEATHER_TOOL],
    "tool_choice": "auto",
    "text": {"format": {"type": "text"}},
    "temperature": 0.3,
    "top_p": 0.8,
    "parallel_tool_calls": False,
    "metadata": {"team": "a"},
    "max_output_tokens": 200,
    "previous_response_id": "resp_0",
    "store": False,
    "user": "u-1",
    "reasoning": {"effort": "low"},
}


def completion(
    message: dict[str, Any], finish_reason: str = "stop", usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "llama-3.1-8b",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish_reason}],
        "usage": usage or {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14},
    }


def test_text_completion_becomes_a_completed_response_echoing_the_request() -> None:
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 40,
        "total_tokens": 50,
        "prompt_tokens_details": {"cached_tokens": 6},
        "completion_tokens_details": {"reasoning_tokens": 32},
    }
    obj = to_responses_object(
        completion({"content": "Cold."}, usage=usage), request=REQUEST, response_id="resp_abc", created_at=1700000000
    )
    response = valid_response(obj)
    assert response.id == "resp_abc" and response.status == "completed" and response.model == "llama-3.1-8b"
    assert response.output_text == "Cold."
    assert obj["output"] == [
        {
            "id": "msg_abc_0",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Cold.", "annotations": [], "logprobs": []}],
        }
    ]
    assert obj["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 6, "cache_write_tokens": 0},
        "output_tokens": 40,
        "output_tokens_details": {"reasoning_tokens": 32},
        "total_tokens": 50,
    }
    echoed = {name: obj[name] for name in REQUEST if name != "input"}
    assert echoed == {
        **{name: value for name, value in REQUEST.items() if name != "input"},
        "model": "llama-3.1-8b",
        "tools": [{**WEATHER_TOOL, "strict": None}],
        "reasoning": {"effort": "low", "summary": None},
    }
    assert obj["incomplete_details"] is None and obj["error"] is None


def test_tool_calls_become_function_call_items_after_the_text() -> None:
    obj = to_responses_object(
        completion(
            {
                "content": "Let me check.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                    },
                ],
            },
            finish_reason="tool_calls",
        ),
        request=REQUEST,
        response_id="resp_x",
        created_at=1,
    )
    valid_response(obj)
    assert [(item["type"], item["id"]) for item in obj["output"]] == [
        ("message", "msg_x_0"),
        ("function_call", "fc_x_1"),
        ("function_call", "fc_x_2"),
    ]
    assert obj["output"][2] == {
        "id": "fc_x_2",
        "type": "function_call",
        "status": "completed",
        "call_id": "call_2",
        "name": "get_weather",
        "arguments": '{"city":"Rome"}',
    }


def test_tool_calls_without_text_have_no_message_item_and_missing_ids_are_made_up() -> None:
    obj = to_responses_object(
        completion(
            {"content": None, "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            finish_reason="tool_calls",
        ),
        request={"input": "x", "model": "m"},
        response_id="resp_y",
        created_at=1,
    )
    valid_response(obj)
    assert [item["type"] for item in obj["output"]] == ["function_call"]
    assert obj["output"][0]["call_id"] == "call_y_0"


@pytest.mark.parametrize(
    ("finish_reason", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")]
)
def test_truncated_completion_is_an_incomplete_response(finish_reason: str, reason: str) -> None:
    obj = to_responses_object(
        completion({"content": "Col"}, finish_reason=finish_reason), request=REQUEST, response_id="resp_t", created_at=1
    )
    response = valid_response(obj)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None and response.incomplete_details.reason == reason
    assert obj["output"][0]["status"] == "incomplete"


def test_reasoning_content_becomes_a_reasoning_item_first() -> None:
    obj = to_responses_object(
        completion({"content": "42", "reasoning_content": "6 times 7"}),
        request=REQUEST,
        response_id="resp_r",
        created_at=1,
    )
    valid_response(obj)
    assert obj["output"][0] == {
        "id": "rs_r_0",
        "type": "reasoning",
        "status": "completed",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": "6 times 7"}],
    }
    assert obj["output"][1]["type"] == "message"


def test_refusal_becomes_a_refusal_part() -> None:
    obj = to_responses_object(
        completion({"content": None, "refusal": "I can't help with that."}),
        request=REQUEST,
        response_id="resp_f",
        created_at=1,
    )
    valid_response(obj)
    assert obj["output"][0]["content"] == [{"type": "refusal", "refusal": "I can't help with that."}]


def test_minimal_request_echoes_openai_defaults() -> None:
    obj = to_responses_object(
        completion({"content": "hi"}), request={"input": "hi"}, response_id="resp_d", created_at=1
    )
    valid_response(obj)
    assert {
        name: obj[name]
        for name in (
            "tool_choice",
            "tools",
            "temperature",
            "top_p",
            "parallel_tool_calls",
            "store",
            "metadata",
            "text",
            "truncation",
        )
    } == {
        "tool_choice": "auto",
        "tools": [],
        "temperature": 1.0,
        "top_p": 1.0,
        "parallel_tool_calls": True,
        "store": True,
        "metadata": {},
        "text": {"format": {"type": "text"}},
        "truncation": "disabled",
    }


# -- streamed: chat chunks → events ----------------------------------------------------------------


def chunk(delta: dict[str, Any] | None = None, finish_reason: str | None = None, **extra: Any) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "llama-3.1-8b",
        "choices": choices,
        **extra,
    }


USAGE_CHUNK = chunk(
    None,
    usage={
        "prompt_tokens": 9,
        "completion_tokens": 5,
        "total_tokens": 14,
        "completion_tokens_details": {"reasoning_tokens": 2},
    },
)


def translate(
    chunks: Iterable[dict[str, Any]],
    request: dict[str, Any] | None = None,
    end: Callable[[ResponsesStreamTranslator], list[dict[str, Any]]] | None = None,
) -> tuple[list[dict[str, Any]], ResponsesStreamTranslator]:
    translator = ResponsesStreamTranslator(request=request or REQUEST, response_id="resp_s", created_at=1700000000)
    events: list[dict[str, Any]] = []
    for part in chunks:
        events += translator.feed(part)
    events += (end or (lambda t: t.finish()))(translator)
    return events, translator


def assert_well_formed(events: list[dict[str, Any]]) -> None:
    valid_events(events)
    assert [event["sequence_number"] for event in events] == list(range(len(events)))


def accumulated(events: list[dict[str, Any]], tools: Any = omit) -> Any:
    """What the SDK's own ``responses.stream()`` helper builds from the events."""
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=tools, text_format=omit)
    for event in valid_events(events):
        state.handle_event(event)
    return state._completed_response


def test_text_stream_emits_openais_event_sequence_and_usage() -> None:
    events, translator = translate(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk({}, "stop"),
            USAGE_CHUNK,
        ]
    )
    assert_well_formed(events)
    assert [event["type"] for event in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    assert events[2]["item"] == {
        "id": "msg_s_0",
        "type": "message",
        "role": "assistant",
        "status": "in_progress",
        "content": [],
    }
    assert [event["delta"] for event in events if event["type"] == "response.output_text.delta"] == ["Hel", "lo"]
    assert events[6]["text"] == "Hello"
    final = events[-1]["response"]
    assert final is translator.response and translator.done
    assert valid_response(final).output_text == "Hello"
    assert final["model"] == "llama-3.1-8b"
    assert final["usage"]["output_tokens_details"] == {"reasoning_tokens": 2} and final["usage"]["total_tokens"] == 14
    assert accumulated(events).output_text == "Hello"


def test_text_then_two_tool_calls_stream_as_separate_items() -> None:
    events, translator = translate(
        [
            chunk({"role": "assistant", "content": "Checking."}),
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": ""},
                        }
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}),
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 1,
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                        }
                    ]
                }
            ),
            chunk({}, "tool_calls"),
            USAGE_CHUNK,
        ],
        request={**REQUEST, "tools": [WEATHER_TOOL]},
    )
    assert_well_formed(events)
    types = [event["type"] for event in events]
    assert types[2:] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    added = [event for event in events if event["type"] == "response.output_item.added"]
    assert [(event["output_index"], event["item"]["id"]) for event in added] == [
        (0, "msg_s_0"),
        (1, "fc_s_1"),
        (2, "fc_s_2"),
    ]
    assert added[1]["item"] == {
        "id": "fc_s_1",
        "type": "function_call",
        "status": "in_progress",
        "call_id": "call_1",
        "name": "get_weather",
        "arguments": "",
    }
    done = [event for event in events if event["type"] == "response.function_call_arguments.done"]
    assert [(event["item_id"], event["arguments"]) for event in done] == [
        ("fc_s_1", '{"city":"Oslo"}'),
        ("fc_s_2", '{"city":"Rome"}'),
    ]
    assert translator.response is not None
    output = translator.response["output"]
    assert [(item["type"], item["status"]) for item in output] == [
        ("message", "completed"),
        ("function_call", "completed"),
        ("function_call", "completed"),
    ]
    sdk = accumulated(events, tools=[WEATHER_TOOL])
    assert [item.type for item in sdk.output] == ["message", "function_call", "function_call"]
    assert sdk.output[1].arguments == '{"city":"Oslo"}' and sdk.output[2].call_id == "call_2"


def test_two_tool_calls_in_one_chunk_stream_as_two_items() -> None:
    events, translator = translate(
        [
            chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                        {"index": 1, "id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}},
                    ]
                },
                "tool_calls",
            )
        ]
    )
    assert_well_formed(events)
    assert translator.response is not None
    assert [(item["call_id"], item["name"]) for item in translator.response["output"]] == [("a", "f"), ("b", "g")]


def test_empty_deltas_role_only_and_choiceless_chunks_emit_nothing() -> None:
    translator = ResponsesStreamTranslator(request=REQUEST, response_id="resp_e", created_at=1)
    assert [event["type"] for event in translator.start()] == ["response.created", "response.in_progress"]
    assert translator.start() == []
    for quiet in (
        chunk({"role": "assistant"}),
        chunk({"content": ""}),
        chunk({}),
        chunk(None),
        {"choices": None},
        chunk({"content": None, "tool_calls": []}),
    ):
        assert translator.feed(quiet) == []
    events = translator.finish()
    assert [event["type"] for event in events] == ["response.completed"]
    assert events[0]["sequence_number"] == 2
    valid_events(events)
    assert events[0]["response"]["output"] == [] and events[0]["response"]["usage"] is None


def test_usage_only_final_chunk_supplies_the_completed_usage() -> None:
    events, _ = translate([chunk({"content": "ok"}, "stop"), USAGE_CHUNK])
    completed = events[-1]
    assert completed["type"] == "response.completed"
    assert completed["response"]["usage"]["input_tokens"] == 9 and completed["response"]["usage"]["output_tokens"] == 5


def test_length_finish_streams_response_incomplete() -> None:
    events, _ = translate([chunk({"content": "Col"}), chunk({}, "length"), USAGE_CHUNK])
    assert_well_formed(events)
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    item_done = [event for event in events if event["type"] == "response.output_item.done"]
    assert item_done[0]["item"]["status"] == "incomplete"


def test_reasoning_then_text_stream_as_reasoning_and_message_items() -> None:
    events, translator = translate(
        [chunk({"reasoning_content": "6x7"}), chunk({"reasoning_content": "=42"}), chunk({"content": "42"}, "stop")]
    )
    assert_well_formed(events)
    assert [event["type"] for event in events][2:9] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    assert translator.response is not None
    assert translator.response["output"][0]["content"] == [{"type": "reasoning_text", "text": "6x7=42"}]
    assert translator.response["output"][1]["content"][0]["text"] == "42"


def test_refusal_stream_uses_refusal_events() -> None:
    events, translator = translate([chunk({"refusal": "No"}), chunk({"refusal": "."}, "stop")])
    assert_well_formed(events)
    assert "response.refusal.delta" in {event["type"] for event in events}
    assert translator.response is not None
    assert translator.response["output"][0]["content"] == [{"type": "refusal", "refusal": "No."}]


def test_mid_stream_failure_emits_error_then_response_failed() -> None:
    events, translator = translate(
        [
            chunk({"content": "Hel"}),
            chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": '{"a'}}]}),
        ],
        end=lambda t: t.fail("upstream_error", "The upstream connection broke mid-answer."),
    )
    assert_well_formed(events)
    error, failed = events[-2:]
    assert error == {
        "type": "error",
        "sequence_number": error["sequence_number"],
        "code": "upstream_error",
        "message": "The upstream connection broke mid-answer.",
        "param": None,
        "error": {
            "type": "server_error",
            "code": "upstream_error",
            "message": "The upstream connection broke mid-answer.",
            "param": None,
        },
    }
    assert failed["type"] == "response.failed"
    response = failed["response"]
    assert response["status"] == "failed"
    assert response["error"] == {"code": "server_error", "message": "The upstream connection broke mid-answer."}
    assert [(item["type"], item["status"]) for item in response["output"]] == [
        ("message", "completed"),
        ("function_call", "incomplete"),
    ]
    assert response["output"][1]["arguments"] == '{"a'
    assert translator.response is response
    assert (
        translator.feed(chunk({"content": "late"})) == []
        and translator.finish() == []
        and translator.fail("x", "y") == []
    )


def test_failure_before_any_chunk_still_opens_the_response() -> None:
    translator = ResponsesStreamTranslator(request=REQUEST, response_id="resp_z", created_at=1)
    events = translator.fail("rate_limit_exceeded", "Rate limited upstream.", error_type="rate_limit_error")
    assert_well_formed(events)
    assert [event["type"] for event in events] == [
        "response.created",
        "response.in_progress",
        "error",
        "response.failed",
    ]
    assert events[-1]["response"]["error"]["code"] == "rate_limit_exceeded"


def test_sse_frame_names_the_event() -> None:
    frame = sse_event({"type": "response.output_text.delta", "sequence_number": 3, "delta": "é"})
    assert (
        frame
        == 'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":3,"delta":"é"}\n\n'.encode()
    )


# -- the real openai client over an in-memory transport that answers with the translator -----------


def sdk_client(
    chunks: list[dict[str, Any]], *, fail: tuple[str, str] | None = None, seen: list[dict[str, Any]] | None = None
) -> openai.OpenAI:
    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        chat = to_chat_request(body)
        if seen is not None:
            seen.append(chat)
        if not body.get("stream"):
            message = chunks[0]
            obj = to_responses_object(message, request=body, response_id="resp_sdk", created_at=1700000000)
            return httpx.Response(200, json=obj)
        translator = ResponsesStreamTranslator(request=body, response_id="resp_sdk", created_at=1700000000)
        events = [event for part in chunks for event in translator.feed(part)]
        events += translator.fail(*fail) if fail else translator.finish()
        stream = b"".join(map(sse_event, events))
        return httpx.Response(200, content=stream, headers={"content-type": "text/event-stream"})

    return openai.OpenAI(
        api_key="sk-test",
        base_url="http://router.test/v1",
        http_client=httpx.Client(transport=httpx.MockTransport(answer)),
        _strict_response_validation=True,
        max_retries=0,
    )


def test_openai_sdk_parses_a_translated_tool_call_response_strictly() -> None:
    seen: list[dict[str, Any]] = []
    client = sdk_client(
        [
            completion(
                {
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                        }
                    ],
                },
                "tool_calls",
            )
        ],
        seen=seen,
    )
    response = client.responses.create(
        model="standard", input="Weather in Oslo?", tools=[WEATHER_TOOL], instructions="Be brief."
    )
    assert response.status == "completed"
    call = response.output[0]
    assert call.type == "function_call" and call.call_id == "call_1" and call.arguments == '{"city":"Oslo"}'
    assert seen[0]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert seen[0]["tools"][0]["function"]["name"] == "get_weather"


def test_openai_sdk_responses_parse_reads_structured_output() -> None:
    class Answer(pydantic.BaseModel):
        city: str
        celsius: int

    seen: list[dict[str, Any]] = []
    client = sdk_client([completion({"content": '{"city":"Oslo","celsius":3}'})], seen=seen)
    parsed = client.responses.parse(model="standard", input="Weather in Oslo?", text_format=Answer)
    assert parsed.output_parsed == Answer(city="Oslo", celsius=3)
    assert seen[0]["response_format"]["type"] == "json_schema"
    assert seen[0]["response_format"]["json_schema"]["name"] == "Answer"


def test_openai_sdk_streams_a_translated_answer_to_completion() -> None:
    client = sdk_client(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}, "stop"),
            USAGE_CHUNK,
        ]
    )
    with client.responses.stream(model="standard", input="hi") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert deltas == ["Hel", "lo"]
    assert final.output_text == "Hello" and final.usage is not None and final.usage.total_tokens == 14


def test_openai_sdk_raises_on_a_mid_stream_failure() -> None:
    client = sdk_client(
        [chunk({"content": "Hel"})], fail=("upstream_error", "The upstream connection broke mid-answer.")
    )
    received: list[str] = []
    with pytest.raises(openai.APIError, match="broke mid-answer"):
        for event in client.responses.create(model="standard", input="hi", stream=True):
            received.append(event.type)
    assert received[-1] == "response.output_text.delta"


def test_items_resent_with_previous_response_id_are_not_duplicated() -> None:
    stored = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
    ]
    chat = to_chat_request(
        {
            "previous_response_id": "resp_1",
            "input": [
                {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
                {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "3 C"},
            ],
        },
        previous_items=stored,
    )
    assert chat["messages"] == [
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "3 C"},
    ]
