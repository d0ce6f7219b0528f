"""Prompt token counting with tiktoken, offline, in bounded time.

tiktoken downloads its BPE files on first use; litellm's wheel ships copies, so
``TIKTOKEN_CACHE_DIR`` is pointed there unless the operator set it.

Counting runs on the event loop, so its work per request is bounded: tiktoken costs up to
~1 µs a character (more on long runs without spaces, where its merge step is superlinear),
and a 30 MiB prompt counted in full would stall every other request for tens of seconds.
A ``PromptCounter`` counts exactly the first ``EXACT_CHARS`` characters of a request (in
pieces of at most ``PIECE_CHARS``, cut before a space so that the count stays exact on
ordinary text); a text that does not fit in what is left is estimated from evenly spaced
windows of itself counted exactly, and once the budget is spent, from the tokens per
character seen so far in the request. So every prompt up to ~16k tokens is counted exactly
and a longer one is estimated within a few percent on homogeneous text (the spread between
tokenizers of different vendors is larger), deterministically, in at most a few tens of
milliseconds.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    import tiktoken

# cl100k_base counts within a few percent of o200k_base on ordinary text and needs about
# half the memory (29 MB against 51 MB resident); counts only rank candidates and check
# context windows: billing uses the usage the upstream reports.
ENCODING = "cl100k_base"
TOKENS_PER_MESSAGE = 3
TOKENS_PER_REPLY = 3
TOKENS_PER_IMAGE = 765  # a high-detail 1024x1024 image, OpenAI's own accounting

EXACT_CHARS = 64_000  # characters counted exactly per request (~16k tokens of English)
PIECE_CHARS = 16_000  # longest text handed to tiktoken at once (bounds its superlinear case)
SAMPLE_WINDOWS = 8
SAMPLE_WINDOW_CHARS = 2_000
DEFAULT_TOKENS_PER_CHAR = 0.25  # only if a request's first text is estimated with no budget
CACHED_TEXT_CHARS = 16_000


@lru_cache(maxsize=1)
def _encoding() -> tiktoken.Encoding:
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


@lru_cache(maxsize=2048)
def _count_cached(text: str) -> int:
    return len(_encoding().encode_ordinary(text))  # system prompts and tool schemas repeat


def _count_exact(text: str) -> int:
    if len(text) <= CACHED_TEXT_CHARS:
        return _count_cached(text)
    encode, total, start = _encoding().encode_ordinary, 0, 0
    while start < len(text):
        end = start + PIECE_CHARS
        if end < len(text):
            space = text.rfind(" ", start + 1, end)  # the space starts the next piece, as it
            end = space if space > start else end  # starts the next word's token
        total += len(encode(text[start:end]))
        start = end
    return total


class PromptCounter:
    """Counts one request's texts within one budget of exact work."""

    __slots__ = ("budget", "exact_chars", "exact_tokens")

    def __init__(self, budget: int = EXACT_CHARS) -> None:
        self.budget = budget
        self.exact_chars = 0
        self.exact_tokens = 0

    def text(self, text: str) -> int:
        if not text:
            return 0
        if len(text) <= self.budget:
            return self._exact(text)
        return self._estimate(text)

    def _exact(self, text: str) -> int:
        count = _count_exact(text)
        self.budget -= len(text)
        self.exact_chars += len(text)
        self.exact_tokens += count
        return count

    def _estimate(self, text: str) -> int:
        windows = min(SAMPLE_WINDOWS, self.budget // SAMPLE_WINDOW_CHARS)
        if windows:
            stride = (len(text) - SAMPLE_WINDOW_CHARS) // max(windows - 1, 1)
            sampled = [self._exact(text[i * stride : i * stride + SAMPLE_WINDOW_CHARS]) for i in range(windows)]
            rate = sum(sampled) / (windows * SAMPLE_WINDOW_CHARS)
        elif self.exact_chars:
            rate = self.exact_tokens / self.exact_chars
        else:
            rate = DEFAULT_TOKENS_PER_CHAR
        return math.ceil(rate * len(text))

    def messages(self, messages: list[Any]) -> int:
        total = TOKENS_PER_REPLY
        for message in messages:
            if not isinstance(message, dict):
                continue
            total += TOKENS_PER_MESSAGE + self._content(message.get("content"))
            if message.get("name"):
                total += 1 + self.text(str(message["name"]))
            if message.get("tool_calls"):
                total += self.text(orjson.dumps(message["tool_calls"]).decode())
        return total

    def _content(self, content: Any) -> int:
        if isinstance(content, str):
            return self.text(content)
        if not isinstance(content, list):
            return 0
        total = 0
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text":
                total += self.text(str(part.get("text", "")))
            elif part.get("type") in ("image_url", "input_image"):
                total += TOKENS_PER_IMAGE
        return total

    def tools(self, tools: Any) -> int:
        return self.text(orjson.dumps(tools).decode()) if tools else 0

    def input(self, value: Any) -> int:
        """Tokens in an embeddings ``input``: a string, a list of strings or token arrays."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return sum(len(v) if isinstance(v, list) else self.input(v) for v in value)
        return 0


def count_text(text: str) -> int:
    return PromptCounter().text(text)


def count_messages(messages: list[Any]) -> int:
    return PromptCounter().messages(messages)


def count_tools(tools: Any) -> int:
    return PromptCounter().tools(tools)


def count_input(value: Any) -> int:
    return PromptCounter().input(value)
