"""The provider protocol and the values that cross it.

An adapter turns one ``UpstreamCall`` into either a ``Completion`` (JSON body plus usage)
or a ``ChunkStream`` (parsed chat.completion.chunk dicts). Failures are ``UpstreamError``
whose ``reason`` is a fixed vocabulary, safe to use as a metric label and to show a client:
it never carries an upstream URL, body or key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from router.policy.model import Model, Timeouts


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0

    @classmethod
    def from_openai(cls, usage: Any) -> Usage | None:
        if not isinstance(usage, dict):
            return None
        details = usage.get("prompt_tokens_details") or {}
        return cls(
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            cached_tokens=int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0,
        )

    def to_openai(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    model: Model
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)
    timeouts: Timeouts = field(default_factory=lambda: Timeouts(5.0, 20.0, 60.0, 120.0))
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class Completion:
    body: dict[str, Any]
    usage: Usage | None


class ChunkStream(Protocol):
    def __aiter__(self) -> AsyncIterator[dict[str, Any]]: ...

    async def aclose(self) -> None: ...


class UpstreamError(Exception):
    """One failed attempt. ``retryable`` failures move on to the next candidate.

    reasons: connect_error, timeout, ttft_timeout, idle_timeout, rate_limited, server_error,
    auth_error, client_error, bad_response, stream_error
    """

    def __init__(
        self,
        reason: str,
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


class ProviderAdapter(Protocol):
    async def complete(self, call: UpstreamCall) -> Completion: ...

    async def stream(self, call: UpstreamCall) -> ChunkStream: ...

    async def embed(self, call: UpstreamCall) -> Completion: ...

    async def aclose(self) -> None: ...
