"""Adapter for non-OpenAI APIs (Anthropic, Gemini, Bedrock, Mistral, Cohere) through litellm.

litellm is used only as a translation library: imported lazily (it costs ~9 s and
~200 MB), with its own retries off and every setting passed per call, never through its
global flags, so this proxy stays the only retry layer.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from typing import Any

from router.policy.model import Provider
from router.providers.base import Completion, UpstreamCall, UpstreamError, Usage
from router.providers.http_errors import error_from_status

NOT_FORWARDED = ("model", "stream", "stream_options")
URL = re.compile(r"https?://\S+")
MAX_MESSAGE_CHARS = 300


def _import_litellm():  # type: ignore[no-untyped-def]
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_TELEMETRY", "False")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    litellm.num_retries = 0
    return litellm


class LiteLLMAdapter:
    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.litellm = _import_litellm()

    async def complete(self, call: UpstreamCall) -> Completion:
        response = await self._call(self.litellm.acompletion, call, stream=False)
        body = response.model_dump(exclude_none=False)
        return Completion(body, Usage.from_openai(body.get("usage")))

    async def stream(self, call: UpstreamCall) -> LiteLLMStream:
        response = await self._call(self.litellm.acompletion, call, stream=True, stream_options={"include_usage": True})
        return LiteLLMStream(response, self)

    async def embed(self, call: UpstreamCall) -> Completion:
        response = await self._call(self.litellm.aembedding, call)
        body = response.model_dump()
        return Completion(body, Usage.from_openai(body.get("usage")))

    async def aclose(self) -> None:
        return None

    async def _call(self, method: Any, call: UpstreamCall, **extra: Any) -> Any:
        kwargs = {k: v for k, v in call.body.items() if k not in NOT_FORWARDED}
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
