"""A Chat Completion, translated to a Responses API ``response`` object (data in, data out).

    choices[0].message.reasoning_content | reasoning → a ``reasoning`` item (reasoning_text content)
    choices[0].message.content | refusal           → a ``message`` item (output_text / refusal part)
    choices[0].message.tool_calls[i]               → ``function_call`` items (call_id, arguments)
    finish_reason length / content_filter          → status ``incomplete`` with its reason
    usage prompt/completion(+details)              → input/output tokens (+cached, reasoning)

The request's fields are echoed as OpenAI does (``response_envelope``), so a stored response
reads back the same. Item ids derive from the response id: no clock, no randomness here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

ItemStatus = Literal["in_progress", "completed", "incomplete"]

# The codes OpenAI's Response.error.code may take; anything else is reported as server_error.
RESPONSE_ERROR_CODES = frozenset(
    {
        "server_error",
        "rate_limit_exceeded",
        "invalid_prompt",
        "vector_store_timeout",
        "invalid_image",
        "invalid_image_format",
        "invalid_base64_image",
        "invalid_image_url",
        "image_too_large",
        "image_too_small",
        "image_parse_error",
        "image_content_policy_violation",
        "invalid_image_mode",
        "image_file_too_large",
        "unsupported_image_media_type",
        "empty_image_file",
        "failed_to_download_image",
        "image_file_not_found",
    }
)
_INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}


def to_responses_object(
    chat_completion: Mapping[str, Any],
    *,
    request: Mapping[str, Any],
    response_id: str,
    created_at: float,
    completed_at: float | None = None,
) -> dict[str, Any]:
    """The ``response`` object for a non-streamed chat completion answering ``request``
    (the Responses body as the client sent it)."""
    choices = chat_completion.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    incomplete = _INCOMPLETE_REASONS.get(choice.get("finish_reason") or "")
    item_status: ItemStatus = "incomplete" if incomplete else "completed"
    ids = ItemIds(response_id)
    output: list[dict[str, Any]] = []
    reasoning = reasoning_of(message)
    if reasoning:
        output.append(reasoning_item(ids.next("rs"), reasoning, item_status))
    content = message.get("content")
    refusal = message.get("refusal")
    if content or refusal or not message.get("tool_calls"):
        parts = [text_part(content or "")] if content or not refusal else []
        if refusal:
            parts.append(refusal_part(refusal))
        output.append(message_item(ids.next("msg"), parts, item_status))
    for index, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") or {}
        output.append(
            function_call_item(
                ids.next("fc"),
                call.get("id") or ids.call_id(index),
                function.get("name") or "",
                function.get("arguments") or "",
                item_status,
            )
        )
    return response_envelope(
        request,
        response_id=response_id,
        created_at=created_at,
        model=chat_completion.get("model") or request.get("model"),
        status="incomplete" if incomplete else "completed",
        output=output,
        usage=usage_of(chat_completion.get("usage")),
        incomplete_reason=incomplete,
        completed_at=completed_at,
    )


def response_envelope(
    request: Mapping[str, Any],
    *,
    response_id: str,
    created_at: float,
    model: Any,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None = None,
    incomplete_reason: str | None = None,
    error: dict[str, Any] | None = None,
    completed_at: float | None = None,
) -> dict[str, Any]:
    """A ``response`` object, the request's settings echoed with OpenAI's defaults."""
    reasoning = request.get("reasoning") or {}
    text = dict(request.get("text") or {})
    text.setdefault("format", {"type": "text"})
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": bool(request.get("background")),
        "completed_at": completed_at,
        "error": error,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": _given(request, "parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "prompt_cache_key": request.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": request.get("safety_identifier"),
        "service_tier": request.get("service_tier"),
        "store": _given(request, "store", True),
        "temperature": _given(request, "temperature", 1.0),
        "text": text,
        "tool_choice": _given(request, "tool_choice", "auto"),
        "tools": [_echoed_tool(tool) for tool in request.get("tools") or ()],
        "top_logprobs": _given(request, "top_logprobs", 0),
        "top_p": _given(request, "top_p", 1.0),
        "truncation": _given(request, "truncation", "disabled"),
        "usage": usage,
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }


def _given(request: Mapping[str, Any], name: str, default: Any) -> Any:
    value = request.get(name)
    return default if value is None else value


def _echoed_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    return {"description": None, "parameters": None, "strict": None, **tool}


def usage_of(usage: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Chat usage as Responses usage; the details the upstream did not send are 0."""
    if not usage:
        return None
    prompt = usage.get("prompt_tokens") or 0
    completion = usage.get("completion_tokens") or 0
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": prompt_details.get("cached_tokens") or 0,
            "cache_write_tokens": prompt_details.get("cache_write_tokens") or 0,
        },
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": completion_details.get("reasoning_tokens") or 0},
        "total_tokens": usage.get("total_tokens") or prompt + completion,
    }


def reasoning_of(message: Mapping[str, Any]) -> str:
    """The reasoning text a chat upstream sent (DeepSeek, vLLM: ``reasoning_content``;
    OpenRouter, newer vLLM, Groq: ``reasoning``)."""
    value = message.get("reasoning_content") or message.get("reasoning")
    return value if isinstance(value, str) else ""


class ItemIds:
    """Item ids unique within a response, derived from its id (``resp_x`` → ``msg_x_0``)."""

    def __init__(self, response_id: str) -> None:
        self._stem = response_id.removeprefix("resp_")
        self._count = 0

    def next(self, prefix: str) -> str:
        item_id = f"{prefix}_{self._stem}_{self._count}"
        self._count += 1
        return item_id

    def call_id(self, index: int) -> str:
        """For an upstream that sent a tool call without an id."""
        return f"call_{self._stem}_{index}"


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def refusal_part(refusal: str) -> dict[str, Any]:
    return {"type": "refusal", "refusal": refusal}


def message_item(item_id: str, content: list[dict[str, Any]], status: ItemStatus) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": content}


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: ItemStatus) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def reasoning_item(item_id: str, text: str, status: ItemStatus) -> dict[str, Any]:
    content = [{"type": "reasoning_text", "text": text}] if text else []
    return {"id": item_id, "type": "reasoning", "status": status, "summary": [], "content": content}


def response_error(code: str, message: str) -> dict[str, Any]:
    """``response.error`` for a failed response (its code limited to OpenAI's list)."""
    return {"code": code if code in RESPONSE_ERROR_CODES else "server_error", "message": message}
