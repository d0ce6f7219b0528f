"""Prompt token counting with tiktoken, offline.

tiktoken downloads its BPE files on first use; litellm's wheel ships copies, so
``TIKTOKEN_CACHE_DIR`` is pointed there unless the operator set it.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import orjson

# cl100k_base counts within a few percent of o200k_base on ordinary text and needs about
# half the memory (29 MB against 51 MB resident); counts only rank candidates and check
# context windows: billing uses the usage the upstream reports.
ENCODING = "cl100k_base"
TOKENS_PER_MESSAGE = 3
TOKENS_PER_REPLY = 3
TOKENS_PER_IMAGE = 765  # a high-detail 1024x1024 image, OpenAI's own accounting


@lru_cache(maxsize=1)
def _encoding():  # type: ignore[no-untyped-def]
    if not os.environ.get("TIKTOKEN_CACHE_DIR"):
        from router.policy.catalog import litellm_package_dir

        os.environ["TIKTOKEN_CACHE_DIR"] = str(litellm_package_dir() / "litellm_core_utils" / "tokenizers")
    import tiktoken

    encoding = tiktoken.get_encoding(ENCODING)
    # The Python copy of the ranks (~30 MB) is only used to build the Rust core, which
    # keeps its own; encode_ordinary needs nothing else.
    encoding._mergeable_ranks = {}
    return encoding


def warm_up() -> None:
    """Load the tokenizer now (start-up) rather than on the first request."""
    _encoding()


CACHED_TEXT_CHARS = 20_000


def count_text(text: str) -> int:
    if not text:
        return 0
    if len(text) <= CACHED_TEXT_CHARS:
        return _count_cached(text)  # system prompts and tool schemas repeat across requests
    return len(_encoding().encode_ordinary(text))


@lru_cache(maxsize=2048)
def _count_cached(text: str) -> int:
    return len(_encoding().encode_ordinary(text))


def count_messages(messages: list[Any]) -> int:
    total = TOKENS_PER_REPLY
    for message in messages:
        if not isinstance(message, dict):
            continue
        total += TOKENS_PER_MESSAGE + _count_content(message.get("content"))
        if message.get("name"):
            total += 1 + count_text(str(message["name"]))
        if message.get("tool_calls"):
            total += count_text(orjson.dumps(message["tool_calls"]).decode())
    return total


def _count_content(content: Any) -> int:
    if isinstance(content, str):
        return count_text(content)
    if not isinstance(content, list):
        return 0
    total = 0
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            total += count_text(str(part.get("text", "")))
        elif part.get("type") in ("image_url", "input_image"):
            total += TOKENS_PER_IMAGE
    return total


def count_tools(tools: Any) -> int:
    return count_text(orjson.dumps(tools).decode()) if tools else 0


def count_input(value: Any) -> int:
    """Tokens in an embeddings ``input``: a string, a list of strings or token arrays."""
    if isinstance(value, str):
        return count_text(value)
    if isinstance(value, list):
        return sum(len(v) if isinstance(v, list) else count_input(v) for v in value)
    return 0
