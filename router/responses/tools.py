"""Responses tools and tool_choice, as Chat Completions tools and tool_choice.

Function tools are flat in Responses (``{"type": "function", "name", "parameters"}``) and
nested in chat (``{"type": "function", "function": {...}}``); ``allowed_tools`` becomes the
allowed subset with its mode; a built-in (hosted) tool is refused naming who serves it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from router.errors import InvalidRequest
from router.responses.errors import BuiltinToolUnsupported, UntranslatableRequest
from router.responses.fields import string_field as _string


def add_tools(chat: dict[str, Any], body: Mapping[str, Any], native_providers: Sequence[str]) -> None:
    given = body.get("tools")
    if given is None:
        given = []
    if not isinstance(given, list):
        raise InvalidRequest("'tools' must be an array.", param="tools")
    tools = [_tool(tool, f"tools[{index}]", native_providers) for index, tool in enumerate(given)]
    choice = body.get("tool_choice")
    if choice is not None:
        tools, chat_choice = _tool_choice(choice, tools, native_providers)
        chat["tool_choice"] = chat_choice
    if tools:
        chat["tools"] = tools
        if body.get("parallel_tool_calls") is not None:  # chat refuses it without tools
            chat["parallel_tool_calls"] = body["parallel_tool_calls"]


def _tool(tool: Any, path: str, native_providers: Sequence[str]) -> dict[str, Any]:
    if not isinstance(tool, Mapping):
        raise InvalidRequest(f"'{path}' must be a tool object.", param=path)
    kind = tool.get("type")
    if kind == "function":
        function: dict[str, Any] = {"name": _string(tool, "name", path)}
        for name in ("description", "parameters", "strict"):
            if tool.get(name) is not None:
                function[name] = tool[name]
        return {"type": "function", "function": function}
    if kind == "custom":
        raise UntranslatableRequest(
            f"'{path}': custom (free-form) tools are not supported on this route; declare a function tool.",
            param=f"{path}.type",
        )
    if not isinstance(kind, str):
        raise InvalidRequest(f"'{path}.type' must be a string.", param=f"{path}.type")
    raise _builtin_refused(kind, f"{path}.type", native_providers)


def _builtin_refused(kind: str, param: str, native_providers: Sequence[str]) -> BuiltinToolUnsupported:
    where = (
        f"it runs only on providers that serve the Responses API natively: {', '.join(native_providers)}; "
        "ask for a route or model served by one of them"
        if native_providers
        else "it runs only on a provider that serves the Responses API natively, and none in this policy does"
    )
    return BuiltinToolUnsupported(
        f"The built-in tool '{kind}' cannot be used on this route (translated to Chat Completions): {where}.",
        param=param,
    )


def _tool_choice(
    choice: Any, tools: list[dict[str, Any]], native_providers: Sequence[str]
) -> tuple[list[dict[str, Any]], str | dict[str, Any]]:
    if choice in ("none", "auto", "required"):
        return tools, choice
    if not isinstance(choice, Mapping):
        raise InvalidRequest("'tool_choice' must be 'none', 'auto', 'required' or an object.", param="tool_choice")
    kind = choice.get("type")
    if kind == "function":
        return tools, {"type": "function", "function": {"name": _string(choice, "name", "tool_choice")}}
    if kind == "allowed_tools":
        return _allowed_tools(choice, tools)
    if kind in ("custom", "mcp", "apply_patch", "shell", "programmatic_tool_calling"):
        raise UntranslatableRequest(
            f"'tool_choice': a '{kind}' tool cannot be chosen on this route; only function tools are available.",
            param="tool_choice.type",
        )
    if not isinstance(kind, str):
        raise InvalidRequest("'tool_choice.type' must be a string.", param="tool_choice.type")
    raise _builtin_refused(kind, "tool_choice.type", native_providers)


def _allowed_tools(
    choice: Mapping[str, Any], tools: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], str | dict[str, Any]]:
    """Chat upstreams rarely know ``allowed_tools``: send the allowed subset with its mode instead."""
    mode = choice.get("mode")
    if mode not in ("auto", "required"):
        raise InvalidRequest("'tool_choice.mode' must be 'auto' or 'required'.", param="tool_choice.mode")
    listed = choice.get("tools")
    if not isinstance(listed, list):
        raise InvalidRequest("'tool_choice.tools' must be an array.", param="tool_choice.tools")
    names = set()
    for index, entry in enumerate(listed):
        path = f"tool_choice.tools[{index}]"
        if not isinstance(entry, Mapping) or entry.get("type") != "function":
            raise UntranslatableRequest(f"'{path}': only function tools can be allowed on this route.", param=path)
        names.add(_string(entry, "name", path))
    declared = {tool["function"]["name"] for tool in tools}
    if missing := names - declared:
        raise InvalidRequest(
            f"'tool_choice.tools' names tools not declared in 'tools': {', '.join(sorted(missing))}.",
            param="tool_choice.tools",
        )
    return [tool for tool in tools if tool["function"]["name"] in names], mode
