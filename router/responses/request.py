"""A Responses API request, translated to a Chat Completions request (data in, data out).

``to_chat_request(body)`` reads a ``POST /v1/responses`` body and returns the chat body an
OpenAI-compatible upstream understands. Anything a chat upstream cannot honour is refused with
a 400 that names the field (``param``), never silently dropped:

    input (string | items)   → messages   (instructions → first system message; developer → system)
    tools / tool_choice      → tools / tool_choice (flat function tools → nested ``function``;
                               ``allowed_tools`` → the listed subset and its mode)
    text.format              → response_format (json_schema, json_object); text.verbosity → verbosity
    max_output_tokens        → max_tokens or max_completion_tokens (the caller says which)
    reasoning.effort         → reasoning_effort
    stream                   → stream + stream_options.include_usage (the translator needs usage)

``metadata``, ``store``, ``previous_response_id``, ``include``, ``truncation`` are the Responses
object's own business: echoed (see ``output.py``), not sent upstream.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from router.errors import InvalidRequest
from router.responses.errors import UntranslatableRequest
from router.responses.fields import object_field as _object
from router.responses.fields import string_field as _string
from router.responses.tools import add_tools

MaxTokensParam = Literal["max_tokens", "max_completion_tokens"]

_FORWARDED = ("temperature", "top_p", "user", "service_tier", "prompt_cache_key", "safety_identifier")
# Accepted and handled outside the upstream call (echoed, stored, or meaningless without OpenAI's store).
_NOT_FORWARDED = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "text",
        "reasoning",
        "max_output_tokens",
        "stream",
        "parallel_tool_calls",
        "metadata",
        "store",
        "previous_response_id",
        "include",
        "truncation",
        "stream_options",
        "prompt_cache_retention",
        "prompt_cache_options",
        "top_logprobs",
        "background",
    }
)
# OpenAI features with no Chat Completions counterpart: refused when set to anything but null/false.
_REFUSED_WHEN_SET = {
    "background": "background mode needs a provider that runs responses natively",
    "conversation": "conversations live in OpenAI's store; continue with 'previous_response_id' instead",
    "prompt": "stored prompt templates live in OpenAI's store",
    "context_management": "server-side context compaction needs a provider that runs responses natively",
    "max_tool_calls": "a Chat Completions upstream cannot cap the number of tool calls",
    "moderation": "moderated responses need a provider that runs responses natively",
    "access_programs": "access programs need a provider that runs responses natively",
    "image": "image options need a provider that runs responses natively",
    "background_options": "background mode needs a provider that runs responses natively",
}
_KNOWN = _NOT_FORWARDED | _REFUSED_WHEN_SET.keys() | set(_FORWARDED)

_SYSTEM_ROLES = {"system": "system", "developer": "system"}
_MESSAGE_ROLES = frozenset({"user", "assistant", "system", "developer"})
_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})
# Items only a hosted tool produces: they cannot be replayed to a chat upstream.
_HOSTED_TOOL_ITEMS = frozenset(
    {
        "file_search_call",
        "web_search_call",
        "computer_call",
        "computer_call_output",
        "code_interpreter_call",
        "image_generation_call",
        "local_shell_call",
        "local_shell_call_output",
        "shell_call",
        "shell_call_output",
        "apply_patch_call",
        "apply_patch_call_output",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
        "mcp_call",
        "custom_tool_call",
        "custom_tool_call_output",
        "tool_search_call",
        "tool_search_output",
        "compaction",
    }
)


def to_chat_request(
    body: Mapping[str, Any],
    *,
    previous_items: Iterable[Mapping[str, Any]] = (),
    native_providers: Sequence[str] = (),
    max_tokens_param: MaxTokensParam = "max_tokens",
) -> dict[str, Any]:
    """The Chat Completions body for a Responses body.

    ``previous_items``: the stored input and output items of the ``previous_response_id`` chain,
    oldest first; they come after ``instructions`` and before this request's ``input``.
    ``native_providers``: the providers that could serve built-in tools, named in that 400.
    ``max_tokens_param``: the name the chosen upstream takes for the output limit.
    Raises ``InvalidRequest`` (malformed) or ``UntranslatableRequest`` (valid but not translatable).
    """
    for name in body:
        if name not in _KNOWN:
            raise InvalidRequest(f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")
    for name, why in _REFUSED_WHEN_SET.items():
        if body.get(name) not in (None, False):
            raise UntranslatableRequest(f"'{name}' is not supported on this route: {why}.", param=name)
    chat: dict[str, Any] = {}
    if "model" in body:
        chat["model"] = body["model"]
    chat["messages"] = _messages(body, previous_items)
    add_tools(chat, body, native_providers)
    _add_text_format(chat, body.get("text"))
    for name in _FORWARDED:
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("max_output_tokens") is not None:
        chat[max_tokens_param] = body["max_output_tokens"]
    effort = _object(body.get("reasoning"), "reasoning").get("effort")
    if effort is not None:
        chat["reasoning_effort"] = effort
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean.", param="stream")
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def _messages(body: Mapping[str, Any], previous_items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    builder = _MessageBuilder()
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise InvalidRequest("'instructions' must be a string.", param="instructions")
        if instructions:
            builder.messages.append({"role": "system", "content": instructions})
    stored: set[tuple[str, str]] = set()
    for item in previous_items:
        builder.add(item, "previous_response_id")
        stored.update(_identities(item))
    given = body.get("input")
    if isinstance(given, str):
        builder.messages.append({"role": "user", "content": given})
    elif isinstance(given, list):
        for index, item in enumerate(given):
            if stored and isinstance(item, Mapping) and not stored.isdisjoint(_identities(item)):
                continue  # already in the stored chain: clients often resend their calls and outputs
            builder.add(item, f"input[{index}]")
    elif given is None:
        raise InvalidRequest("Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
    else:
        raise InvalidRequest("'input' must be a string or an array of input items.", param="input")
    if not builder.messages:
        raise InvalidRequest("'input' must contain at least one message.", param="input")
    return builder.messages


def _identities(item: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What makes an item the same as a stored one: its id, or the call it makes or answers."""
    found = []
    if isinstance(item.get("id"), str):
        found.append(("id", item["id"]))
    kind = item.get("type")
    if kind in ("function_call", "function_call_output") and isinstance(item.get("call_id"), str):
        found.append((kind, item["call_id"]))
    return found


class _MessageBuilder:
    """Turns Responses items into chat messages; consecutive ``function_call`` items join the
    assistant message before them (one chat turn carries all its tool calls)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self._assistant: dict[str, Any] | None = None  # the turn a function_call may still join

    def add(self, item: Any, path: str) -> None:
        if not isinstance(item, Mapping):
            raise InvalidRequest(f"'{path}' must be an object.", param=path)
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            self._message(item, path)
        elif kind == "function_call":
            self._function_call(item, path)
        elif kind == "function_call_output":
            self._assistant = None
            self.messages.append(
                {
                    "role": "tool",
                    "tool_call_id": _string(item, "call_id", path),
                    "content": _tool_output(item.get("output"), f"{path}.output"),
                }
            )
        elif kind == "reasoning":
            return  # a chat upstream takes no reasoning back; the turn around it stays whole
        elif kind == "item_reference":
            raise UntranslatableRequest(
                f"'{path}': item references are not supported on this route; send the item itself.",
                param=path,
            )
        elif kind in _HOSTED_TOOL_ITEMS:
            raise UntranslatableRequest(
                f"'{path}': a '{kind}' item comes from a built-in tool and cannot be sent to a Chat Completions upstream.",
                param=f"{path}.type",
            )
        else:
            raise InvalidRequest(f"'{path}.type': unknown input item type {kind!r}.", param=f"{path}.type")

    def _message(self, item: Mapping[str, Any], path: str) -> None:
        role = item.get("role")
        if role not in _MESSAGE_ROLES:
            raise InvalidRequest(
                f"'{path}.role' must be one of 'user', 'assistant', 'system', 'developer'.", param=f"{path}.role"
            )
        content = _content(item.get("content"), f"{path}.content", role)
        if role == "assistant":
            self._assistant = {"role": "assistant", "content": content}
            self.messages.append(self._assistant)
            return
        self._assistant = None
        self.messages.append({"role": _SYSTEM_ROLES.get(role, role), "content": content})

    def _function_call(self, item: Mapping[str, Any], path: str) -> None:
        call = {
            "id": _string(item, "call_id", path),
            "type": "function",
            "function": {"name": _string(item, "name", path), "arguments": _string(item, "arguments", path)},
        }
        if self._assistant is None:
            self._assistant = {"role": "assistant", "content": None}
            self.messages.append(self._assistant)
        self._assistant.setdefault("tool_calls", []).append(call)


def _content(content: Any, path: str, role: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(f"'{path}' must be a string or an array of content parts.", param=path)
    parts = [_part(part, f"{path}[{index}]") for index, part in enumerate(content)]
    if all(part["type"] == "text" for part in parts):
        if role == "assistant" or len(parts) == 1:  # the widest-supported shape: one string
            return "".join(part["text"] for part in parts)
    elif role != "user":
        raise UntranslatableRequest(f"'{path}': only a user message may carry images or files.", param=path)
    return parts


def _part(part: Any, path: str) -> dict[str, Any]:
    if not isinstance(part, Mapping):
        raise InvalidRequest(f"'{path}' must be a content part object.", param=path)
    kind = part.get("type")
    if kind in _TEXT_PARTS:
        return {"type": "text", "text": _string(part, "text", path)}
    if kind == "refusal":
        return {"type": "text", "text": _string(part, "refusal", path)}
    if kind == "input_image":
        return _image(part, path)
    if kind == "input_file":
        return _file(part, path)
    if kind == "input_audio":
        audio = _object(part.get("input_audio"), f"{path}.input_audio")
        return {"type": "input_audio", "input_audio": dict(audio)}
    raise InvalidRequest(f"'{path}.type': unknown content part type {kind!r}.", param=f"{path}.type")


def _image(part: Mapping[str, Any], path: str) -> dict[str, Any]:
    url = part.get("image_url")
    if url is None and part.get("file_id") is not None:
        raise UntranslatableRequest(
            f"'{path}.file_id': uploaded files are not available on this route; send the image as 'image_url' (an https or data: URL).",
            param=f"{path}.file_id",
        )
    if not isinstance(url, str) or not url:
        raise InvalidRequest(f"'{path}.image_url' must be a URL or a data: URL.", param=f"{path}.image_url")
    image: dict[str, Any] = {"url": url}
    if part.get("detail") is not None:
        image["detail"] = part["detail"]
    return {"type": "image_url", "image_url": image}


def _file(part: Mapping[str, Any], path: str) -> dict[str, Any]:
    for name in ("file_id", "file_url"):
        if part.get(name) is not None:
            raise UntranslatableRequest(
                f"'{path}.{name}': files by reference are not available on this route; send the content as 'file_data'.",
                param=f"{path}.{name}",
            )
    file = {"file_data": _string(part, "file_data", path)}
    if part.get("filename") is not None:
        file["filename"] = part["filename"]
    return {"type": "file", "file": file}


def _tool_output(output: Any, path: str) -> str:
    if isinstance(output, str):
        return output
    if not isinstance(output, list):
        raise InvalidRequest(f"'{path}' must be a string or an array of content parts.", param=path)
    texts = []
    for index, part in enumerate(output):
        if not isinstance(part, Mapping) or part.get("type") not in _TEXT_PARTS:
            raise UntranslatableRequest(
                f"'{path}[{index}]': a Chat Completions upstream takes only text as a tool result.",
                param=f"{path}[{index}]",
            )
        texts.append(_string(part, "text", f"{path}[{index}]"))
    return "".join(texts)


def _add_text_format(chat: dict[str, Any], text: Any) -> None:
    config = _object(text, "text")
    if config.get("verbosity") is not None:
        chat["verbosity"] = config["verbosity"]
    fmt = _object(config.get("format"), "text.format")
    kind = fmt.get("type", "text")
    if kind == "text":
        return
    if kind == "json_object":
        chat["response_format"] = {"type": "json_object"}
        return
    if kind != "json_schema":
        raise InvalidRequest(
            "'text.format.type' must be 'text', 'json_object' or 'json_schema'.", param="text.format.type"
        )
    schema: dict[str, Any] = {
        "name": _string(fmt, "name", "text.format"),
        "schema": _object(fmt.get("schema"), "text.format.schema"),
    }
    for name in ("description", "strict"):
        if fmt.get(name) is not None:
            schema[name] = fmt[name]
    chat["response_format"] = {"type": "json_schema", "json_schema": schema}
