"""What the proxy reads from an OpenAI-shaped upstream body, checked where it is read.

An upstream that answers 200 with a body of the wrong shape (no ``choices``, usage counts
that are strings, a delta whose ``content`` is a number) has failed: each check raises
``UpstreamError("bad_response")``, so before the first byte to the client the next
candidate is tried, and after it the stream ends with an in-band error and ``[DONE]``.
Only the fields the proxy itself reads are checked (choices, message and delta text, tool
call arguments, usage, embedding data); everything else passes through untouched.
"""

from __future__ import annotations

from typing import Any, NoReturn

from router.providers.base import Completion, UpstreamError, usage_from_openai


def completion(parsed: Any) -> Completion:
    """A ``chat.completion``: at least one choice, each with readable message text."""
    choices = parsed.get("choices") if isinstance(parsed, dict) else None
    if not isinstance(choices, list) or not choices:
        raise UpstreamError("bad_response", "upstream answered 200 without any choices")
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else _bad("a choice that is not an object")
        if message is not None:
            _check_message(message, "message")
    return Completion(parsed, usage_from_openai(parsed.get("usage")))


def embeddings(parsed: Any) -> Completion:
    """An embeddings ``list``: at least one item, each a vector or a base64 string (the
    numbers themselves are passed through unread)."""
    data = parsed.get("data") if isinstance(parsed, dict) else None
    if not isinstance(data, list) or not data:
        raise UpstreamError("bad_response", "upstream answered 200 without any embeddings")
    for item in data:
        vector = item.get("embedding") if isinstance(item, dict) else None
        if not isinstance(vector, (list, str)):  # a str is encoding_format: base64
            _bad("an embedding item without a vector")
    return Completion(parsed, usage_from_openai(parsed.get("usage")))


def chunk(parsed: Any) -> dict[str, Any]:
    """A ``chat.completion.chunk``: choices (possibly none) with readable deltas, usage."""
    if not isinstance(parsed, dict):
        _bad("an event that is not a JSON object")
    if "error" in parsed:
        raise UpstreamError("stream_error", "upstream reported an error inside the stream")
    choices = parsed.get("choices")
    if choices is not None:
        if not isinstance(choices, list):
            _bad("choices that are not a list")
        for choice in choices:
            delta = choice.get("delta") if isinstance(choice, dict) else _bad("a choice that is not an object")
            if delta is not None:
                _check_message(delta, "delta")
    usage = parsed.get("usage")
    if usage is not None:
        usage_from_openai(usage)  # raises on counts of the wrong type
    return parsed


def _check_message(message: Any, where: str) -> None:
    """The text the proxy counts: ``content`` and tool call ``arguments`` are strings or null."""
    if not isinstance(message, dict):
        _bad(f"a {where} that is not an object")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        _bad(f"{where} content that is not a string")
    tool_calls = message.get("tool_calls")
    if tool_calls is None:
        return
    if not isinstance(tool_calls, list):
        _bad(f"{where} tool_calls that are not a list")
    for call in tool_calls:
        function = call.get("function") if isinstance(call, dict) else _bad("a tool call that is not an object")
        if function is None:
            continue
        if not isinstance(function, dict) or not isinstance(function.get("arguments") or "", str):
            _bad("tool call arguments that are not a string")


def _bad(what: str) -> NoReturn:
    raise UpstreamError("bad_response", f"upstream sent {what}")
