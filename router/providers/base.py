"""The provider protocol and the values that cross it.

An adapter turns one ``UpstreamCall`` into either a ``Completion`` (JSON body plus usage)
or a ``ChunkStream`` (parsed chat.completion.chunk dicts). Failures are ``UpstreamError``
whose ``reason`` is a fixed vocabulary, safe to use as a metric label and to show a client:
it never carries an upstream URL, body or key.

UpstreamError                 one failed attempt; counts against the model's health
└── ProviderSaturated         no pooled connection free within the wait: the model is busy, not
                              broken (``blames_model`` is False: no health penalty)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from router.policy.model import Model, Timeouts
from router.types import ErrorReason, Usage

__all__ = [
    "ChunkStream",
    "Completion",
    "ProviderAdapter",
    "ProviderSaturated",
    "UpstreamCall",
    "UpstreamError",
    "Usage",
    "usage_from_openai",
    "usage_from_responses",
]


def usage_from_openai(usage: Any) -> Usage | None:
    """OpenAI's ``usage`` object; None when absent. Counts of the wrong type (a string,
    a negative or absurd number) are a malformed upstream body: ``bad_response``."""
    return _usage(usage, "prompt_tokens", "completion_tokens", "prompt_tokens_details", "completion_tokens_details")


def usage_from_responses(usage: Any) -> Usage | None:
    """The Responses API's ``usage`` (``input_tokens``, ``output_tokens`` and their details)."""
    return _usage(usage, "input_tokens", "output_tokens", "input_tokens_details", "output_tokens_details")


def _usage(
    usage: Any, input_name: str, output_name: str, input_details_name: str, output_details_name: str
) -> Usage | None:
    """One reader for both APIs' usage objects: they differ only in their field names."""
    if usage is None:
        return None
    if not isinstance(usage, dict):
        raise UpstreamError("bad_response", "upstream sent a usage that is not an object")
    input_details = _details(usage, input_details_name)
    output_details = _details(usage, output_details_name)
    return Usage(
        input_tokens=_token_count(usage.get(input_name)),
        output_tokens=_token_count(usage.get(output_name)),
        cached_tokens=_token_count(input_details.get("cached_tokens")) if input_details else 0,
        reasoning_tokens=_token_count(output_details.get("reasoning_tokens")) if output_details else 0,
    )


def _details(usage: dict[str, Any], name: str) -> dict[str, Any] | None:
    details = usage.get(name)
    if details is not None and not isinstance(details, dict):
        raise UpstreamError("bad_response", f"upstream sent {name} that is not an object")
    return details


MAX_TOKEN_COUNT = 2**31  # more tokens than any context window: a broken counter, not usage


def _token_count(value: Any) -> int:
    if value is None:
        return 0
    if type(value) is int and 0 <= value < MAX_TOKEN_COUNT:
        return value
    if type(value) is float and value.is_integer() and 0 <= value < MAX_TOKEN_COUNT:
        return int(value)
    raise UpstreamError("bad_response", "upstream sent a token count that is not a whole number")


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    model: Model
    body: Mapping[str, Any]
    headers: Mapping[str, str]
    timeouts: Timeouts  # from the policy snapshot: the one place timeout values come from
    request_id: str


@dataclass(frozen=True, slots=True)
class Completion:
    body: dict[str, Any]
    usage: Usage | None


class ChunkStream(Protocol):
    """An open upstream stream of parsed ``chat.completion.chunk`` dicts.

    ``buffered`` says whether the next chunk is already read and waiting (so a relay can
    send chunks that arrived together in one write); an adapter that cannot tell returns
    False. ``aclose`` releases the upstream connection and is safe to call twice."""

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]: ...

    def buffered(self) -> bool: ...

    async def aclose(self) -> None: ...


class UpstreamError(Exception):
    """One failed attempt. ``retryable`` failures move on to the next candidate.

    ``reason`` is one of ``router.types.ErrorReason``.
    """

    blames_model = True  # whether the failure counts against the model's health

    def __init__(
        self,
        reason: ErrorReason,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = True,
        retry_after_s: float | None = None,
        client_body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.client_body = client_body


SATURATED_RETRY_AFTER_S = 1.0  # how long a client is asked to wait: connections free up quickly


class ProviderSaturated(UpstreamError):
    """Every pooled connection to the provider stayed busy for the whole bounded wait.

    The upstream was never contacted: the next candidate may be tried, nothing counts
    against the model's health, and if nothing else answers the client gets 503 with
    ``Retry-After``."""

    blames_model = False

    def __init__(self, provider: str) -> None:
        super().__init__(
            "saturated", f"every connection to provider '{provider}' is busy", retry_after_s=SATURATED_RETRY_AFTER_S
        )


class ProviderAdapter(Protocol):
    async def complete(self, call: UpstreamCall) -> Completion: ...

    async def stream(self, call: UpstreamCall) -> ChunkStream: ...

    async def embed(self, call: UpstreamCall) -> Completion: ...

    async def aclose(self) -> None: ...
