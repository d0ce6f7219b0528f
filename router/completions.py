"""Legacy completions (``POST /v1/completions``) ⇄ chat completions: data in, data out.

Every upstream the router calls speaks Chat Completions, so a legacy request becomes one
user turn holding the prompt, and the chat answer (whole or chunk by chunk) becomes a
``text_completion``. Sampling and limit parameters (``max_tokens``, ``temperature``,
``top_p``, ``n``, ``stop``, ``presence_penalty``, ``frequency_penalty``, ``logit_bias``,
``seed``, ``user``, ``stream``, ``stream_options``) mean the same in both and pass as they
are, like any other field. What a chat model cannot do is refused by name: ``echo``,
``logprobs`` (the legacy per-token format), ``suffix`` (insertion) and ``best_of`` > 1; a
``prompt`` of several strings (one answer per prompt) or of token ids is refused too.

Unlike OpenAI's legacy endpoint, an absent ``max_tokens`` is not read as 16: the answer is
as long as the model (and the key's budget) allows.
"""

from __future__ import annotations

from typing import Any

from router.errors import InvalidRequest

# legacy fields a chat upstream cannot honour (allowed only at their no-op values)
_UNHONOURED = ("echo", "logprobs", "suffix", "best_of")
_FINISH_REASONS = frozenset({"stop", "length", "content_filter"})
_CHAT_ID_PREFIX = "chatcmpl-"


def chat_body(body: dict[str, Any]) -> dict[str, Any]:
    """The chat request for a legacy completions request (raises ``InvalidRequest``)."""
    for name in _UNHONOURED:
        if not _harmless(name, body.get(name)):
            raise InvalidRequest(
                f"'{name}' is not supported: the router answers legacy completions with chat models, which "
                f"cannot honour it. Remove '{name}' or use /v1/chat/completions.",
                param=name,
                code="unsupported_parameter",
            )
    if "messages" in body:
        raise InvalidRequest(
            "'messages' belongs to /v1/chat/completions; a legacy completion takes a 'prompt'.", param="messages"
        )
    chat = {name: value for name, value in body.items() if name != "prompt" and name not in _UNHONOURED}
    chat["messages"] = [{"role": "user", "content": _prompt_text(body)}]
    return chat


def _harmless(name: str, value: Any) -> bool:
    if value is None or value is False:
        return True
    if name == "suffix":
        return isinstance(value, str) and not value
    if name == "best_of":
        return type(value) is int and value == 1
    return False


def _prompt_text(body: dict[str, Any]) -> str:
    if "prompt" not in body or body["prompt"] is None:
        raise InvalidRequest("Missing required parameter: 'prompt'.", param="prompt", code="missing_required_parameter")
    prompt = body["prompt"]
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and len(prompt) > 1 and all(isinstance(p, str) for p in prompt):
        raise InvalidRequest(
            f"'prompt' holds {len(prompt)} prompts; the router answers one prompt per request. "
            "Send one request per prompt.",
            param="prompt",
        )
    raise InvalidRequest(
        "'prompt' must be a string (or an array of one string); token-id prompts are not supported.", param="prompt"
    )


def completion_body(chat: dict[str, Any]) -> dict[str, Any]:
    """A ``chat.completion`` as a ``text_completion``: each choice's message text, usage as it came."""
    choices = [
        {
            "text": (choice.get("message") or {}).get("content") or "",
            "index": choice.get("index", index),
            "logprobs": None,
            "finish_reason": _finish_reason(choice.get("finish_reason")) or "stop",
        }
        for index, choice in enumerate(chat.get("choices") or ())
    ]
    return _completion(chat, choices) | {"usage": chat.get("usage")}


def completion_chunk(chunk: dict[str, Any]) -> dict[str, Any]:
    """A ``chat.completion.chunk`` as a streamed ``text_completion`` (the usage chunk too)."""
    choices = [
        {
            "text": (choice.get("delta") or {}).get("content") or "",
            "index": choice.get("index", 0),
            "logprobs": None,
            "finish_reason": _finish_reason(choice.get("finish_reason")),
        }
        for choice in chunk.get("choices") or ()
    ]
    completion = _completion(chunk, choices)
    if "usage" in chunk:
        completion["usage"] = chunk["usage"]
    return completion


def _completion(chat: dict[str, Any], choices: list[dict[str, Any]]) -> dict[str, Any]:
    chat_id = str(chat.get("id") or "")
    return {
        "id": "cmpl-" + (chat_id[len(_CHAT_ID_PREFIX) :] if chat_id.startswith(_CHAT_ID_PREFIX) else chat_id),
        "object": "text_completion",
        "created": chat.get("created", 0),
        "model": chat.get("model", ""),
        "system_fingerprint": chat.get("system_fingerprint"),
        "choices": choices,
    }


def _finish_reason(reason: Any) -> str | None:
    """The legacy vocabulary: a chat-only reason (``tool_calls``) reads as ``stop``."""
    if reason is None:
        return None
    return reason if reason in _FINISH_REASONS else "stop"
