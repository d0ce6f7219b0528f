"""Client keys: ``Authorization: Bearer <key>`` checked against SHA-256 digests in the policy.

Only digests are stored; the comparison is constant-time. Every route except health needs
a valid key once the policy has a ``keys`` section; without one the proxy is open (and
says so at start-up). A malformed header gets the same 401 as a wrong key, never a 500.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from router.errors import AuthenticationFailed, error_body
from router.policy.model import ClientKey, Policy

PUBLIC_PATHS = frozenset({"/healthz", "/livez", "/readyz"})
KEY_PREFIX = "sk-tr-"
MAX_KEY_LENGTH = 256
VISIBLE_ASCII = re.compile(rb"[\x21-\x7e]+")  # a key is one or more printable, non-space ASCII bytes
INVALID_KEY = "Invalid or missing API key. Send 'Authorization: Bearer <key>' with a key issued by `router keys new`."


def new_key() -> tuple[str, str]:
    """A fresh client key and the ``sha256:<hex>`` line to paste into the policy."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, f"sha256:{digest_of(key)}"


def digest_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def authenticate(policy: Policy, authorization: bytes | None) -> ClientKey:
    token = _bearer_token(authorization)
    if token is None:
        raise AuthenticationFailed(INVALID_KEY)
    digest = digest_of(token)
    key = policy.keys.get(digest)
    if key is None or not hmac.compare_digest(key.digest, digest):
        raise AuthenticationFailed(INVALID_KEY)
    return key


def _bearer_token(header: bytes | None) -> str | None:
    if not header or len(header) > MAX_KEY_LENGTH + 7:
        return None
    scheme, _, token = header.partition(b" ")
    if scheme.lower() != b"bearer" or not VISIBLE_ASCII.fullmatch(token):
        return None
    return token.decode("ascii")


class AuthMiddleware:
    """Checks the client key before any handler runs (on the ASGI path, not a rebuilt URL),
    against the keys of the policy ``PolicyMiddleware`` pinned to the request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        state = scope["state"]
        policy: Policy = state["snapshot"].policy
        state["client_key"] = None  # an open proxy: no key
        if policy.keys:
            header = next((v for k, v in scope.get("headers", ()) if k == b"authorization"), None)
            try:
                state["client_key"] = authenticate(policy, header)
            except AuthenticationFailed as error:
                await _reject(send, error)
                return
        await self.app(scope, receive, send)


async def _reject(send: Send, error: AuthenticationFailed) -> None:
    body = orjson.dumps(error_body(error.message, error.error_type, None, error.code))
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", b"Bearer"),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
