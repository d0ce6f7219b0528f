"""Adapter for non-OpenAI APIs (Anthropic, Gemini, Bedrock, Mistral, Cohere) through litellm.

litellm is used only as a translation library: imported lazily (it costs ~9 s and
~200 MB), with its own retries off and every setting (key, base URL, headers, timeout,
retries) passed per call, so this proxy stays the only retry layer. The one global flag
set is ``suppress_debug_info``, which configures no call: it only stops litellm printing a
help banner to stdout on every error. (Its telemetry and remote cost map are turned off by
environment variables, set only if the operator has not set them.)

What reaches litellm from a client body is an explicit allow-list of OpenAI request
parameters: litellm reads many other keyword arguments as connection settings
(``api_base``, ``aws_*``, ``vertex_*``, ``headers``) or as instructions to answer by itself
(``mock_response``), and none of those may ever come from a client.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

from router.policy.model import Provider
from router.providers.base import Completion, UpstreamCall, UpstreamError, usage_from_openai
from router.providers.http_errors import error_from_status

# OpenAI's chat completions parameters litellm translates; ``model``, ``stream`` and
# ``stream_options`` are set by the adapter, ``metadata`` is litellm's own logging metadata.
CHAT_PARAMETERS = frozenset(
    {
        "messages",
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "modalities",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "prompt_cache_retention",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
    }
)
EMBEDDING_PARAMETERS = frozenset({"input", "dimensions", "encoding_format", "user"})
URL = re.compile(r"https?://\S+")
MAX_MESSAGE_CHARS = 300


def _import_litellm() -> ModuleType:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_TELEMETRY", "False")
    import litellm

    litellm.suppress_debug_info = True
    return litellm


class LiteLLMAdapter:
    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.litellm = _import_litellm()

    async def complete(self, call: UpstreamCall) -> Completion:
        response = await self._call(self.litellm.acompletion, CHAT_PARAMETERS, call, stream=False)
        body = response.model_dump(exclude_none=False)
        return Completion(body, usage_from_openai(body.get("usage")))

    async def stream(self, call: UpstreamCall) -> LiteLLMStream:
        response = await self._call(
            self.litellm.acompletion, CHAT_PARAMETERS, call, stream=True, stream_options={"include_usage": True}
        )
        return LiteLLMStream(response, self)

    async def embed(self, call: UpstreamCall) -> Completion:
        response = await self._call(self.litellm.aembedding, EMBEDDING_PARAMETERS, call)
        body = response.model_dump()
        return Completion(body, usage_from_openai(body.get("usage")))

    async def aclose(self) -> None:
        return None

    async def _call(self, method: Any, allowed: frozenset[str], call: UpstreamCall, **extra: Any) -> Any:
        """Only ``allowed`` OpenAI parameters come from the client's body; the rest is ours."""
        forwarded = (allowed - self.provider.unsupported_params).intersection(call.body)
        kwargs = {name: call.body[name] for name in forwarded}
        kwargs.update(extra)
        if self.provider.base_url:
            kwargs["api_base"] = self.provider.base_url
        if self.provider.headers:
            kwargs["extra_headers"] = dict(self.provider.headers)
        try:
            return await method(
                model=call.model.upstream,
                api_key=self.provider.api_key,
                timeout=call.timeouts.total_s,
                num_retries=0,
                max_retries=0,
                **kwargs,
            )
        except Exception as exc:  # litellm's exception tree: map by status code
            raise self.translate_error(exc) from None

    def translate_error(self, exc: Exception) -> UpstreamError:
        if isinstance(exc, UpstreamError):
            return exc
        litellm = self.litellm
        if isinstance(exc, litellm.Timeout):
            return UpstreamError("timeout", "upstream did not answer in time")
        if isinstance(exc, litellm.APIConnectionError):
            return UpstreamError("connect_error", "could not connect to the upstream")
        status = getattr(exc, "status_code", None)
        if not isinstance(status, int):
            return UpstreamError("bad_response", "upstream returned something the translation layer could not read")
        error = error_from_status(status, b"", None)
        if error.reason == "client_error":
            message = _safe_message(str(getattr(exc, "message", exc)))
            error = UpstreamError(
                "client_error",
                message,
                status=status,
                retryable=False,
                client_body={
                    "error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}
                },
            )
        if error.reason == "rate_limited":
            error.retry_after_s = _retry_after(exc)
        return error


class LiteLLMStream:
    def __init__(self, response: Any, adapter: LiteLLMAdapter) -> None:
        self.response = response
        self.adapter = adapter

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[dict[str, Any]]:
        try:
            async for chunk in self.response:
                yield chunk.model_dump(exclude_none=False)
        except UpstreamError:
            raise
        except Exception as exc:
            error = self.adapter.translate_error(exc)
            raise UpstreamError("stream_error", error.message) from None

    def buffered(self) -> bool:
        return False  # chunks come one at a time

    async def aclose(self) -> None:
        close = getattr(self.response, "aclose", None)
        if close is not None:
            try:
                await close()
            except Exception:  # closing a broken stream must not mask the original outcome
                pass


def _safe_message(message: str) -> str:
    message = message.removeprefix("litellm.").split("\n")[0]
    return URL.sub("<upstream>", message)[:MAX_MESSAGE_CHARS]


def _retry_after(exc: Exception) -> float | None:
    from router.providers.http_errors import retry_after_seconds

    headers = getattr(exc, "litellm_response_headers", None) or getattr(getattr(exc, "response", None), "headers", None)
    return retry_after_seconds(headers.get("retry-after")) if headers else None
