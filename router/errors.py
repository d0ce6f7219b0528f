"""The exception tree every layer raises, each turned into OpenAI's error shape.

RouterError                      -> {"error": {"message", "type", "param", "code"}}
├── InvalidRequest            400    bad JSON, a bad field
│   ├── ForbiddenField        400    a top-level connection/credential/mock field
│   ├── NestingTooDeep        400    objects and arrays nested too deep
│   ├── UntranslatableRequest 400    a Responses field chat cannot carry (router/responses/errors.py)
│   │   └── BuiltinToolUnsupported 400  a built-in tool on a translated route
│   ├── ModelNotFound         404    unknown route or model (lists the valid ones)
│   ├── BodyTooLarge          413    body over ROUTER_MAX_BODY_MB
│   ├── UnsupportedMediaType  415    body that is not JSON
│   └── HeadersTooLarge       431    too many or too large headers (the HTTP protocol answers first)
├── AuthenticationFailed      401    missing or wrong client key
├── PermissionDenied          403    the key may not use this route or override the tier
├── QuotaExceeded             429    a budget is spent (insufficient_quota)
├── RateLimited               429    a key's rpm or tpm (rate_limit_exceeded)
├── StateStoreDown            503    shared state unreachable and the feature fails closed
├── NoCandidate               400/503 nothing in the policy can serve the request
├── UpstreamFailure           502/503/504 every candidate failed (last error summarised)
│   └── UpstreamSaturated     503    every candidate's connections were busy (Retry-After)
├── InternalFailure           502    an exception nobody expected (logged; the request is accounted)
└── ClientDisconnected        499    the client left before the answer was ready (nobody reads it)
"""

from __future__ import annotations

from typing import Any

import orjson


class RouterError(Exception):
    status = 500
    error_type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, self.param, self.code)

    def body_bytes(self) -> bytes:
        return orjson.dumps(self.body())


def error_body(message: str, error_type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


class InvalidRequest(RouterError):
    status = 400
    error_type = "invalid_request_error"


class UnsupportedMediaType(InvalidRequest):
    status = 415
    code = "unsupported_media_type"


class ForbiddenField(InvalidRequest):
    """A top-level field that would choose where to connect, with which credentials, or
    would make the translation layer answer by itself: those come only from the policy."""

    code = "forbidden_field"


class NestingTooDeep(InvalidRequest):
    code = "nesting_too_deep"


class AuthenticationFailed(RouterError):
    status = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"


class HeadersTooLarge(InvalidRequest):
    status = 431
    code = "request_headers_too_large"


class PermissionDenied(RouterError):
    status = 403
    error_type = "permission_error"
    code = "permission_denied"


class QuotaExceeded(RouterError):
    status = 429
    error_type = "insufficient_quota"
    code = "insufficient_quota"


class RateLimited(RouterError):
    status = 429
    error_type = "requests"
    code = "rate_limit_exceeded"


class StateStoreDown(RouterError):
    status = 503
    error_type = "service_unavailable"
    code = "state_store_unavailable"


class ModelNotFound(InvalidRequest):
    status = 404
    code = "model_not_found"


class BodyTooLarge(InvalidRequest):
    status = 413
    code = "request_too_large"


class NoCandidate(RouterError):
    """The policy has no model able to serve this request right now."""

    status = 503
    error_type = "service_unavailable"
    code = "no_candidate_model"


class UpstreamFailure(RouterError):
    status = 502
    error_type = "upstream_error"
    code = "upstream_error"


class InternalFailure(RouterError):
    """Anything unexpected on the request path: accounted and answered, never a 500."""

    status = 502
    error_type = "server_error"
    code = "internal_error"


class ClientDisconnected(RouterError):
    status = 499
    error_type = "invalid_request_error"
    code = "client_disconnected"


class UpstreamSaturated(UpstreamFailure):
    """Every candidate was busy (no pooled connection free in time); none of them failed."""

    status = 503
    error_type = "service_unavailable"
    code = "upstream_saturated"
