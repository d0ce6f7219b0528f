"""Pure ASGI middleware: request ids and the access log, body-size guard, last-resort
errors, and the policy snapshot pinned to each request. Header limits and the client read
timeout are enforced while reading, in ``http_protocol``."""

from __future__ import annotations

import logging
import random
import re
import time
from typing import Any

import orjson
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from router.accounting import access_fields
from router.errors import BodyTooLarge, RouterError, error_body
from router.snapshot import LivePolicy

log = logging.getLogger("router.http")
access_log = logging.getLogger("router.access")
QUIET_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/metrics"})
LOGGED_PATHS = frozenset(
    {"/v1/chat/completions", "/v1/responses", "/v1/completions", "/v1/embeddings", "/v1/models", "/v1/router/explain"}
)
CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def new_request_id() -> str:
    """96 random bits from ``random`` (no syscall; it reseeds itself in forked workers)."""
    return f"req_{random.getrandbits(96):024x}"


class RequestIdMiddleware:
    """Keeps a well-formed client ``x-request-id`` or makes one; echoes it on every response
    as ``x-request-id`` and ``request-id`` and stores it in ``scope["state"]``. Writes one
    access-log line per request when the response is complete (streams included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _client_request_id(scope) or new_request_id()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        encoded = request_id.encode()
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers += [(b"x-request-id", encoded), (b"request-id", encoded)]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if scope["path"] not in QUIET_PATHS and access_log.isEnabledFor(logging.INFO):
                _log_access(scope, state, request_id, status, time.perf_counter() - started)


def _log_access(scope: Scope, state: dict[str, Any], request_id: str, status: int, elapsed: float) -> None:
    fields: dict[str, object] = {
        "request_id": request_id,
        "method": scope["method"],
        "path": scope["path"] if scope["path"] in LOGGED_PATHS else "other",
        "status": status or 499,
        "latency_s": round(elapsed, 6),
    }
    record = state.get("record")
    if record is not None:
        fields.update(access_fields(record))
    access_log.info("request", extra=fields)


def _client_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if CLIENT_REQUEST_ID.match(text) else None
    return None


class GuardMiddleware:
    """Rejects a declared Content-Length over the limit before reading anything, and turns
    any unexpected exception into a 500 in OpenAI's shape (never a stack trace). A client
    gone while its body was read (or timed out by the protocol) is no error: nobody to answer."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await _send_error(send, BodyTooLarge(_too_large_message(self.max_body_bytes)))
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:
            return
        except Exception:
            log.exception("unhandled error", extra={"request_id": scope.get("state", {}).get("request_id")})
            if not started:
                await _send_error(send, RouterError("The router failed to handle this request; it has been logged."))


def _too_large_message(limit: int) -> str:
    return f"Request body is larger than the router's limit of {limit / 1024 / 1024:g} MiB (ROUTER_MAX_BODY_MB)."


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_error(send: Send, error: RouterError) -> None:
    body = orjson.dumps(error_body(error.message, error.error_type, error.param, error.code))
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class PolicyMiddleware:
    """Pins the current policy snapshot to the request (``scope["state"]["snapshot"]``), so
    one request sees one policy from start to end, and counts it in flight on that snapshot
    until its response (a stream's included) is over: a reload closes the old snapshot's
    adapters only when that count is zero."""

    def __init__(self, app: ASGIApp, live: LivePolicy) -> None:
        self.app = app
        self.live = live

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        snapshot = self.live.snapshot
        scope.setdefault("state", {})["snapshot"] = snapshot
        inflight = snapshot.inflight
        inflight.count += 1
        try:
            await self.app(scope, receive, send)
        finally:
            inflight.count -= 1
