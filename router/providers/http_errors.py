"""Turn an upstream HTTP error response into an ``UpstreamError`` that is safe to show.

An upstream 400/404 message is passed on to the client, so it goes through ``Redactor``
first: an upstream that echoes a request header (``Incorrect header: Bearer sk-…``) must not
hand the provider's key to the client or to the logs.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Iterable
from typing import Any

import orjson

from router.policy.model import Policy, Provider
from router.providers.base import UpstreamError

MAX_MESSAGE_CHARS = 500
MIN_SECRET_CHARS = 8  # shorter header values ("1", "true") are settings, not secrets
REDACTED = "[redacted]"


class Redactor:
    """Replaces every configured secret (provider API keys, provider header values) in text."""

    __slots__ = ("longest", "pattern")

    def __init__(self, secrets: Iterable[str]) -> None:
        kept = sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)
        self.pattern = re.compile("|".join(map(re.escape, kept))) if kept else None
        self.longest = len(kept[0]) if kept else 0

    @classmethod
    def for_policy(cls, policy: Policy) -> Redactor:
        return cls(secret for provider in policy.providers.values() for secret in provider_secrets(provider))

    def __call__(self, text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
        """``text`` cut to ``limit`` characters with every secret replaced (a secret that
        straddles the cut is replaced whole before cutting, never left half-visible)."""
        text = text[: limit + self.longest]
        if self.pattern is not None:
            text = self.pattern.sub(REDACTED, text)
        return text[:limit]


def provider_secrets(provider: Provider) -> list[str]:
    return [provider.api_key or "", *provider.headers.values()]


NO_SECRETS = Redactor(())


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds, from either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def error_from_status(
    status: int, body: bytes, retry_after: str | None, redact: Redactor = NO_SECRETS
) -> UpstreamError:
    upstream_error = _openai_error(body)
    if status == 429:
        return UpstreamError(
            "rate_limited",
            "upstream rate limited the request (429)",
            status=status,
            retry_after_s=retry_after_seconds(retry_after),
        )
    if status in (401, 403):
        return UpstreamError("auth_error", f"upstream refused the provider credentials ({status})", status=status)
    if status == 408:
        return UpstreamError("timeout", "upstream timed out (408)", status=status)
    if 400 <= status < 500:
        fields = upstream_error or {}
        message = redact(str(fields.get("message") or f"upstream rejected the request ({status})"))
        client_body = {
            "error": {
                "message": message,
                "type": _string(fields.get("type"), redact) or "invalid_request_error",
                "param": _string(fields.get("param"), redact),
                "code": _string(fields.get("code"), redact),
            }
        }
        return UpstreamError("client_error", message, status=status, retryable=False, client_body=client_body)
    return UpstreamError("server_error", f"upstream failed ({status})", status=status)


def _openai_error(body: bytes) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return error if isinstance(error, dict) else None


def _string(value: Any, redact: Redactor) -> str | None:
    return redact(str(value), 100) if value is not None else None
