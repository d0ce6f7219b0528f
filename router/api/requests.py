"""Reading and checking client bodies: only what routing needs, never the whole body's schema."""

from __future__ import annotations

from itertools import compress, repeat
from typing import Any

import orjson
from starlette.requests import Request

from router.errors import BodyTooLarge, ForbiddenField, InvalidRequest, NestingTooDeep, UnsupportedMediaType
from router.policy.features import request_kind
from router.types import Operation

# Top-level fields that would choose where to connect or with which credentials, in
# litellm (``acompletion``'s keywords and the ``kwargs`` it reads) or in the OpenAI SDK.
# They are refused only as top-level request parameters: the same names inside
# ``response_format``, ``tools``, ``metadata`` or a message are data (a JSON schema property
# ``organization``, a tool parameter ``api_key``). The litellm adapter also passes litellm
# only an allow-list of OpenAI parameters, so this list is the clear error, not the guard.
FORBIDDEN_FIELDS = frozenset(
    {
        # where to connect
        "api_base",
        "base_url",
        "api_version",
        "api_type",
        "custom_llm_provider",
        "custom_endpoint",
        "deployment_id",
        "model_list",
        "region",
        "region_name",
        "use_litellm_proxy",
        "use_in_pass_through",
        "use_psc_endpoint_format",
        "proxy_server_request",
        # with which credentials or identity
        "api_key",
        "apikey",
        "organization",
        "project_id",
        "token",
        "client_id",
        "client_secret",
        "tenant_id",
        "chatgpt_auth_file",
        "use_xai_oauth",
        "secret_fields",
        # what goes on the wire besides the body
        "extra_headers",
        "headers",
        "provider_specific_header",
        "provider_affinity_header",
        # whose connection
        "client",
        "http_client",
        "shared_session",
        "ssl_verify",
    }
)
# Families of provider settings (aws_access_key_id, vertex_credentials, azure_ad_token,
# litellm_credential_name, ...) and litellm's answer-fabricating switches (mock_response,
# mock_tool_calls, mock_timeout): a client must never make the proxy invent an answer.
FORBIDDEN_PREFIXES = ("aws_", "azure_", "vertex_", "watsonx_", "s3_", "litellm_", "mock_")
MAX_NESTING_DEPTH = 64  # levels of objects and arrays, the body itself being level 1
MAX_TOOLS = 128  # OpenAI's own limit; legacy ``functions`` count against it too
_CONTAINERS = frozenset({dict, list})  # the only container types orjson.loads makes
_SHORT = 32  # containers up to this size are walked in Python, longer ones in C


async def read_json_object(request: Request, max_bytes: int) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "")
    if content_type and not is_json_media_type(content_type):
        raise UnsupportedMediaType(f"Content-Type must be application/json, got '{content_type[:80]}'.")
    raw = bytearray()  # grown chunk by chunk: no 30 MiB copy in one go at the end
    async for chunk in request.stream():
        if len(raw) + len(chunk) > max_bytes:
            raise BodyTooLarge(
                f"Request body is larger than the router's limit of {max_bytes / 1024 / 1024:g} MiB (ROUTER_MAX_BODY_MB)."
            )
        raw += chunk
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request ({exc.msg}). Send a JSON object."
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    check_body_shape(body)
    return body


def is_json_media_type(content_type: str) -> bool:
    """``application/json`` or ``application/<x>+json``, parameters (charset) ignored."""
    media_type = content_type.partition(";")[0].strip().lower()
    main, _, sub = media_type.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


def check_body_shape(body: dict[str, Any]) -> None:
    """What every endpoint refuses, judged on the parsed body (JSON escapes decoded)."""
    for name in body:
        if name in FORBIDDEN_FIELDS or name.startswith(FORBIDDEN_PREFIXES):
            raise ForbiddenField(_forbidden_message(name), param=name)
    too_deep = _too_deep_under(body)
    if too_deep is not None:
        raise NestingTooDeep(
            f"'{too_deep}' nests objects and arrays more than {MAX_NESTING_DEPTH} levels deep, the router's limit. "
            "Flatten it.",
            param=too_deep,
        )


def _forbidden_message(name: str) -> str:
    if name.startswith("mock_"):
        return f"'{name}' is not accepted: this router never fabricates answers. Remove the field."
    return (
        f"'{name}' is not accepted: upstream URLs, credentials and connection settings come only from the "
        "router's policy. Remove the field."
    )


def _too_deep_under(body: dict[str, Any]) -> str | None:
    """The top-level field under which nesting exceeds ``MAX_NESTING_DEPTH``, if any.

    Iterative (no recursion limit to hit) and over the whole body, whatever its depth."""
    pending = [(value, 2, name) for name, value in body.items() if type(value) in _CONTAINERS]
    while pending:
        value, depth, top = pending.pop()
        if depth > MAX_NESTING_DEPTH:
            return top
        children = value.values() if type(value) is dict else value  # a view: iterable twice
        if len(children) > _SHORT:  # in C: a 10-million-number embeddings input costs no bytecode per number
            nested = compress(children, map(_CONTAINERS.__contains__, map(type, children)))
            pending.extend(zip(nested, repeat(depth + 1), repeat(top)))
            continue
        for child in children:
            if type(child) in _CONTAINERS:
                pending.append((child, depth + 1, top))
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
    _check_tools(body)
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise InvalidRequest("'stream_options' must be an object.", param="stream_options")


def _check_tools(body: dict[str, Any]) -> None:
    declared = 0
    for name in ("tools", "functions"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, list):
            raise InvalidRequest(f"'{name}' must be an array.", param=name)
        declared += len(value)
        if declared > MAX_TOOLS:
            raise InvalidRequest(
                f"'{name}': at most {MAX_TOOLS} tools may be declared ('tools' and legacy 'functions' together).",
                param=name,
            )


def check_explain_body(body: dict[str, Any], max_n: int) -> Operation:
    """The operation a body to explain asks for, after the checks its own endpoint makes."""
    if request_kind(body) == "embedding":
        check_embedding_body(body)
        return "embeddings"
    check_chat_body(body, max_n)
    return "chat"


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
