"""Turn an upstream HTTP error response into an ``UpstreamError`` that is safe to show."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import orjson

from router.providers.base import UpstreamError

MAX_MESSAGE_CHARS = 500


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
    if moment is None:
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def error_from_status(status: int, body: bytes, retry_after: str | None) -> UpstreamError:
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
        message = (upstream_error or {}).get("message") or f"upstream rejected the request ({status})"
        client_body = {
            "error": {
                "message": str(message)[:MAX_MESSAGE_CHARS],
                "type": _string((upstream_error or {}).get("type")) or "invalid_request_error",
                "param": _string((upstream_error or {}).get("param")),
                "code": _string((upstream_error or {}).get("code")),
            }
        }
        return UpstreamError(
            "client_error", str(message)[:MAX_MESSAGE_CHARS], status=status, retryable=False, client_body=client_body
        )
    return UpstreamError("server_error", f"upstream failed ({status})", status=status)


def _openai_error(body: bytes) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return error if isinstance(error, dict) else None


def _string(value: Any) -> str | None:
    return str(value)[:100] if value is not None else None
