"""Reading and checking client bodies: only what routing needs, never the whole body's schema."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from router.errors import BodyTooLarge, InvalidRequest, UnsupportedMediaType

FORBIDDEN_FIELDS = (
    "api_base",
    "base_url",
    "api_key",
    "organization",
    "extra_headers",
    "api_version",
    "custom_llm_provider",
)
_FORBIDDEN_MARKERS = tuple(f'"{name}"'.encode() for name in FORBIDDEN_FIELDS)
MAX_FORBIDDEN_DEPTH = 64
MAX_TOOLS = 128  # OpenAI's own limit


async def read_json_object(request: Request, max_bytes: int) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "").lower()
    if content_type and "json" not in content_type:
        raise UnsupportedMediaType(f"Content-Type must be application/json, got '{content_type[:80]}'.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge(
                f"Request body is larger than the router's limit of {max_bytes / 1024 / 1024:g} MiB (ROUTER_MAX_BODY_MB)."
            )
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request ({exc.msg}). Send a JSON object."
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    _refuse_forbidden_fields(raw, body)
    return body


def _refuse_forbidden_fields(raw: bytes, body: dict[str, Any]) -> None:
    """Connection settings come only from the policy: refuse them anywhere in the body.

    The raw bytes are searched first (fast, in C); only a body that mentions one of the
    names as a JSON string is walked to see whether it is really used as a key."""
    if not any(marker in raw for marker in _FORBIDDEN_MARKERS):
        return
    path = _find_forbidden(body, "", 0)
    if path:
        raise InvalidRequest(
            f"'{path}' is not accepted: upstream URLs and credentials come only from the router's policy. Remove the field.",
            param=path,
            code="forbidden_field",
        )


def _find_forbidden(value: Any, path: str, depth: int) -> str | None:
    if depth > MAX_FORBIDDEN_DEPTH:
        return None
    if isinstance(value, dict):
        for key, child in value.items():
            child_path = f"{path}.{key}" if path else key
            if key in FORBIDDEN_FIELDS:
                return child_path
            found = _find_forbidden(child, child_path, depth + 1)
            if found:
                return found
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found = _find_forbidden(child, f"{path}[{index}]", depth + 1)
            if found:
                return found
    return None


def check_chat_body(body: dict[str, Any], max_n: int) -> None:
    _check_model(body)
    messages = body.get("messages")
    if messages is None:
        raise InvalidRequest(
            "Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter"
        )
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array of message objects.", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(
                f"messages[{index}] must be an object with a string 'role'.", param=f"messages[{index}]"
            )
    if "stream" in body and not isinstance(body["stream"], bool) and body["stream"] is not None:
        raise InvalidRequest("'stream' must be a boolean.", param="stream")
    n = body.get("n")
    if n is not None and (not _is_int(n) or not 1 <= n <= max_n):
        raise InvalidRequest(f"'n' must be an integer from 1 to {max_n}.", param="n")
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and (not _is_int(value) or value < 1):
            raise InvalidRequest(f"'{name}' must be a positive integer.", param=name)
    tools = body.get("tools")
    if tools is not None and (not isinstance(tools, list) or len(tools) > MAX_TOOLS):
        raise InvalidRequest(f"'tools' must be an array of at most {MAX_TOOLS} tools.", param="tools")
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise InvalidRequest("'stream_options' must be an object.", param="stream_options")


def check_embedding_body(body: dict[str, Any]) -> None:
    _check_model(body)
    value = body.get("input")
    if value is None:
        raise InvalidRequest("Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
    if not isinstance(value, (str, list)) or value == [] or value == "":
        raise InvalidRequest("'input' must be a non-empty string or array.", param="input")


def _check_model(body: dict[str, Any]) -> None:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequest("'model' must be a string: a route, a tier or a model name.", param="model")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True
