"""Adapter for OpenAI-shaped HTTP APIs (OpenAI, Groq, Together, vLLM, Ollama, llama.cpp).

One pooled aiohttp session per provider, built at start-up. The client's body is
forwarded as it came with only ``model`` replaced (and ``stream_options.include_usage``
forced on for streams so cost is exact); redirects are not followed, so upstream URLs
come only from the policy; what is read back is checked where it is read (openai_shapes).

Headers sent upstream, and nothing else: ``Host``, ``Content-Type: application/json``,
``Content-Length``, ``Accept: */*`` and ``Accept-Encoding`` (aiohttp's), ``Authorization:
Bearer`` when the provider has a key, the provider's own headers from the policy, the
client's ``traceparent``/``tracestate``/``openai-beta`` (allow-list), and the request id as
``X-Client-Request-Id`` (OpenAI's header for a caller's id). ``x-request-id`` is never sent:
servers own that name, and llama-cpp-python answers an empty 400 to any value that is not a
UUID. No ``User-Agent`` (some gateways filter on it).

Connections: at most ``max_connections`` requests hold a connection at once. A request
that finds them all busy waits for one at most its connect timeout (and at most half of
what the attempt may take to its first byte), then fails with ``ProviderSaturated``: the
model is busy, not broken, and nothing counts against its health.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from router.policy.model import Provider
from router.providers import openai_shapes
from router.providers.base import Completion, ProviderSaturated, UpstreamCall, UpstreamError, usage_from_responses
from router.providers.http_errors import NO_SECRETS, Redactor, error_from_status

FORWARDED_HEADERS = ("traceparent", "tracestate", "openai-beta")
MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class OpenAICompatibleAdapter:
    def __init__(
        self,
        provider: Provider,
        session: aiohttp.ClientSession,
        max_connections: int,
        redact: Redactor = NO_SECRETS,
    ) -> None:
        if not provider.base_url:
            raise ValueError(f"provider '{provider.name}' of type openai needs a base_url")
        self.provider = provider
        self.base_url = provider.base_url
        self.session = session
        self.connections = asyncio.Semaphore(max_connections)
        self.redact = redact
        self._client_timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self.base_headers = {"content-type": "application/json", **provider.headers}
        if provider.api_key:
            self.base_headers["authorization"] = f"Bearer {provider.api_key}"

    async def complete(self, call: UpstreamCall) -> Completion:
        raw = await self._json_call("/chat/completions", self._body(call), call)
        return openai_shapes.completion(raw)

    async def embed(self, call: UpstreamCall) -> Completion:
        raw = await self._json_call("/embeddings", self._body(call), call)
        return openai_shapes.embeddings(raw)

    async def responses(self, call: UpstreamCall) -> Completion:
        """A Responses request sent as one (``responses_api: native``)."""
        raw = await self._json_call("/responses", self._body(call), call)
        if raw.get("object") != "response" or not isinstance(raw.get("output"), list):
            raise UpstreamError("bad_response", "upstream returned a body that is not a response object")
        return Completion(raw, usage_from_responses(raw.get("usage")))

    async def stream(self, call: UpstreamCall) -> SSEChunkStream:
        body = self._body(call)
        body["stream"] = True
        if "stream_options" not in self.provider.unsupported_params:
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        return await self._open_events("/chat/completions", body, call, SSEChunkStream)

    async def responses_stream(self, call: UpstreamCall) -> SSEChunkStream:
        """A streamed Responses request sent as one: its events, parsed (``ResponsesEventStream``)."""
        body = self._body(call)
        body["stream"] = True
        return await self._open_events("/responses", body, call, ResponsesEventStream)

    async def _open_events(
        self, path: str, body: dict[str, Any], call: UpstreamCall, kind: type[SSEChunkStream]
    ) -> SSEChunkStream:
        response = await self._post(path, body, call, call.timeouts.ttft_s)
        try:
            if response.status != 200:
                raise self._error(response.status, await _read_capped(response), response.headers.get("retry-after"))
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                raise UpstreamError("bad_response", "upstream answered a stream request without an event stream")
        except BaseException:
            response.release()
            raise
        return kind(response)

    async def aclose(self) -> None:
        await self.session.close()

    def _body(self, call: UpstreamCall) -> dict[str, Any]:
        """The client's body with only ``model`` replaced (and unsupported fields dropped)."""
        body = dict(call.body)
        body["model"] = call.model.upstream
        for name in self.provider.unsupported_params & body.keys():
            del body[name]
        return body

    def _client_timeout(self, connect_s: float) -> aiohttp.ClientTimeout:
        """aiohttp's timeout for a connect limit, made once per limit (the policy has few)."""
        found = self._client_timeouts.get(connect_s)
        if found is None:
            found = self._client_timeouts[connect_s] = aiohttp.ClientTimeout(total=None, connect=connect_s)
        return found

    def _error(self, status: int, body: bytes, retry_after: str | None) -> UpstreamError:
        return error_from_status(status, body, retry_after, self.redact)

    async def _json_call(self, path: str, body: dict[str, Any], call: UpstreamCall) -> Any:
        """The upstream's 200 body, parsed (its shape is the caller's to check). An ``error``
        in it is a failure, but for a response object's own ``"error": null``."""
        try:
            response = await self._post(path, body, call, call.timeouts.total_s)
            try:
                raw = await _read_capped(response)
            except BaseException:
                response.close()  # cancelled or broken: drop the connection so the upstream stops
                raise
            response.release()
        except (aiohttp.ClientError, OSError):
            raise UpstreamError("connect_error", "upstream connection failed while reading the response") from None
        if response.status != 200:
            raise self._error(response.status, raw, response.headers.get("retry-after"))
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamError("bad_response", "upstream returned a body that is not valid JSON") from None
        if not isinstance(parsed, dict) or (
            "error" in parsed and (path != "/responses" or parsed["error"] is not None)
        ):
            raise UpstreamError("bad_response", "upstream returned an error or an unexpected body with status 200")
        return parsed

    async def _post(
        self, path: str, body: dict[str, Any], call: UpstreamCall, first_byte_s: float
    ) -> aiohttp.ClientResponse:
        """POST holding one of the provider's connections until the response lets it go."""
        await self._take_connection(min(call.timeouts.connect_s, first_byte_s / 2))
        try:
            response = await self._send(path, body, call)
        except BaseException:
            self.connections.release()
            raise
        connection = response.connection
        if connection is None:  # already read to the end and back in the pool
            self.connections.release()
        else:
            connection.add_callback(self.connections.release)  # on release or close, exactly once
        return response

    async def _take_connection(self, wait_s: float) -> None:
        if not self.connections.locked():
            await self.connections.acquire()  # free: no wait, no timer
            return
        try:
            async with asyncio.timeout(wait_s):
                await self.connections.acquire()
        except TimeoutError:
            raise ProviderSaturated(self.provider.name) from None

    async def _send(self, path: str, body: dict[str, Any], call: UpstreamCall) -> aiohttp.ClientResponse:
        headers = dict(self.base_headers)
        for name in FORWARDED_HEADERS:
            if name in call.headers:
                headers[name] = call.headers[name]
        if call.request_id:
            headers["x-client-request-id"] = call.request_id
        timeout = self._client_timeout(call.timeouts.connect_s)
        data = orjson.dumps(body)
        try:
            try:
                return await self.session.post(
                    self.base_url + path, data=data, headers=headers, timeout=timeout, allow_redirects=False
                )
            except aiohttp.ServerDisconnectedError:
                # A pooled keep-alive connection the server had already dropped (local servers
                # often close after an error): once more on a fresh connection, not a model failure.
                return await self.session.post(
                    self.base_url + path, data=data, headers=headers, timeout=timeout, allow_redirects=False
                )
        except aiohttp.ServerTimeoutError:
            raise UpstreamError("connect_error", "connecting to the upstream timed out") from None
        except (aiohttp.ClientError, OSError):
            raise UpstreamError("connect_error", "could not connect to the upstream") from None


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    raw = await response.content.read(MAX_RESPONSE_BYTES + 1)
    if len(raw) > MAX_RESPONSE_BYTES:
        raise UpstreamError("bad_response", "upstream response is larger than the proxy accepts")
    return raw


class SSEChunkStream:
    """Server-sent events from an upstream response, as parsed chunk dicts."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.saw_done = False
        self.ready = 0  # complete events read but not yet yielded

    def buffered(self) -> bool:
        """Whether the next chunk can be had without waiting for the network."""
        return self.ready > 0

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[dict[str, Any]]:
        """Whatever arrived is split into events at blank lines (one await per read, not
        per line); ``data:`` lines of an event are joined; ``[DONE]`` ends the stream."""
        pending = b""
        try:
            async for received in self.response.content.iter_any():
                pending += received
                if b"\r" in pending:  # CRLF line ends (a CR at the end waits for its LF)
                    pending = pending.replace(b"\r\n", b"\n")
                events = pending.split(b"\n\n")
                pending = events.pop()  # an incomplete event waits for more bytes
                datas = [d for d in map(_event_data, events) if d is not None]  # no comments, ids, keep-alives
                for index, data in enumerate(datas):
                    if data == b"[DONE]":
                        self.saw_done, self.ready = True, 0
                        return
                    self.ready = len(datas) - index - 1
                    yield self.parse(data)
                self.ready = 0
        except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError):
            raise UpstreamError("stream_error", "upstream connection broke during the stream") from None
        last = _event_data(pending)
        if last is not None and last != b"[DONE]":
            yield self.parse(last)  # a last event without its blank line

    @staticmethod
    def parse(data: bytes) -> dict[str, Any]:
        return _parse_chunk(data)

    async def aclose(self) -> None:
        self.response.close()


class ResponsesEventStream(SSEChunkStream):
    """A native Responses stream: each event a dict with a string ``type`` (a ``response``
    snapshot, where there is one, an object), relayed as it came."""

    @staticmethod
    def parse(data: bytes) -> dict[str, Any]:
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamError("stream_error", "upstream sent an event that is not valid JSON") from None
        if (
            not isinstance(event, dict)
            or not isinstance(event.get("type"), str)
            or not isinstance(event.get("response", {}), dict)
        ):
            raise UpstreamError("stream_error", "upstream sent an event that is not a Responses event")
        return event


def _event_data(event: bytes) -> bytes | None:
    if event.startswith(b"data:") and b"\n" not in event:
        return event[5:].lstrip(b" ")  # the usual one-line event
    lines = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


def _parse_chunk(data: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamError("stream_error", "upstream sent an event that is not valid JSON") from None
    return openai_shapes.chunk(parsed)


def session_for(provider: Provider, limit: int) -> aiohttp.ClientSession:
    """The provider's pool; ``limit`` matches the adapter's own count, so aiohttp never queues."""
    connector = aiohttp.TCPConnector(
        limit=limit,
        limit_per_host=0,
        ttl_dns_cache=300,
        keepalive_timeout=30,
    )
    return aiohttp.ClientSession(
        connector=connector,
        json_serialize=lambda v: orjson.dumps(v).decode(),
        auto_decompress=True,
        trust_env=False,
        skip_auto_headers=("User-Agent",),
    )
