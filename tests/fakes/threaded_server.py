"""Shared scaffolding of the fake upstreams: an aiohttp server in a daemon thread with its own
event loop, plus thread-safe request recording and disconnect observation.

:class:`ThreadedAiohttpServer` is the base class of
:class:`tests.fakes.openai_upstream.FakeOpenAIUpstream` and
:class:`tests.fakes.anthropic_upstream.FakeAnthropicUpstream`. A subclass provides
``build_app()`` (its routes), its own scripting queues (cleared by overriding
``_clear_scripts()``) and the wire format; the base provides:

* lifecycle: ``start``/``stop``, ``with``/``async with``, ``running``, ``_start_runner``;
* observation: ``requests``, ``last_request``, ``disconnects``, ``disconnect_times``,
  ``wait_for_requests``/``wait_for_disconnects`` (blocking) and their ``await_*`` twins,
  ``reset``;
* per-request connection helpers for handlers: ``_record``, ``_note_disconnect``,
  ``_peer_gone``, ``_sleep``, ``_write``, ``_abort``, ``_drop``.

Because the server runs on its own loop, it works no matter which loop (if any) the test runs in.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

import orjson
from aiohttp import web

__all__ = ["RecordedRequest", "RequestContext", "ThreadedAiohttpServer"]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received by the fake (recorded before any scripted behaviour runs)."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    json: Any  # parsed JSON body (normally a dict); None if absent or not JSON
    body: bytes = b""
    query: dict[str, str] = field(default_factory=dict)
    received_at: float = 0.0  # time.monotonic()


class RequestContext:
    """Per-request state: the request and whether its disconnect was already counted."""

    __slots__ = ("aborted_by_us", "disconnected", "request")

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.disconnected = False
        self.aborted_by_us = False


class ThreadedAiohttpServer:
    """An aiohttp app served on ``host:port`` (0 = OS-assigned) from a daemon thread.

    Thread-safe observation API: ``requests``, ``last_request``, ``disconnects``,
    ``disconnect_times``, ``wait_for_requests``/``wait_for_disconnects`` (blocking) and their
    ``await_*`` twins.
    """

    #: Name of the server thread.
    thread_name = "threaded-aiohttp-server"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port: int = port
        self._requested_port = port

        self._cond = threading.Condition(threading.Lock())
        self._requests: list[RecordedRequest] = []
        self._disconnect_times: list[float] = []
        self._stopping = False

        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    # ----------------------------------------------------------------- to override

    def build_app(self) -> web.Application:
        raise NotImplementedError

    def _clear_scripts(self) -> None:
        """Drop any scripted behaviours; called by reset() with ``self._cond`` held."""

    # ----------------------------------------------------------------- lifecycle

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Self:
        name = type(self).__name__
        if self._thread is not None:
            raise RuntimeError(f"{name} already started")
        self._stopping = False
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                self._runner = loop.run_until_complete(self._start_runner(self._requested_port))
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                try:
                    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                    for task in pending:
                        task.cancel()
                    if pending:
                        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                    loop.run_until_complete(loop.shutdown_asyncgens())
                finally:
                    loop.close()

        self._thread = threading.Thread(target=run, name=self.thread_name, daemon=True)
        self._thread.start()
        if not ready.wait(15):
            raise RuntimeError(f"{name} did not start within 15s")
        if errors:
            self._thread.join(5)
            self._thread = None
            raise errors[0]
        return self

    def stop(self) -> None:
        thread, loop, runner = self._thread, self._loop, self._runner
        if thread is None or loop is None:
            return
        self._stopping = True  # makes pending Hang / delays return promptly
        if runner is not None and not loop.is_closed():
            fut = asyncio.run_coroutine_threadsafe(runner.cleanup(), loop)
            try:
                fut.result(timeout=10)
            except Exception:
                pass
        if not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._thread = self._loop = self._runner = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    async def _start_runner(self, port: int) -> web.AppRunner:
        runner = web.AppRunner(self.build_app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, port)
        await site.start()
        self.port = runner.addresses[0][1]
        return runner

    # ----------------------------------------------------------------- observation

    def reset(self) -> None:
        """Clear recorded requests, disconnects and any scripted behaviours."""
        with self._cond:
            self._requests.clear()
            self._clear_scripts()
            self._disconnect_times.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot (a copy) of all recorded requests, oldest first."""
        with self._cond:
            return list(self._requests)

    @property
    def last_request(self) -> RecordedRequest | None:
        with self._cond:
            return self._requests[-1] if self._requests else None

    @property
    def disconnects(self) -> int:
        """How many times a peer closed the connection while the fake was still sending/hanging."""
        with self._cond:
            return len(self._disconnect_times)

    @property
    def disconnect_times(self) -> list[float]:
        """time.monotonic() timestamps of observed disconnects."""
        with self._cond:
            return list(self._disconnect_times)

    def wait_for_requests(self, count: int = 1, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self._requests) >= count, timeout)

    def wait_for_disconnects(self, count: int = 1, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self._disconnect_times) >= count, timeout)

    async def await_requests(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Non-blocking twin of wait_for_requests for async tests (doesn't stall the test's loop)."""
        return await self._await(lambda: len(self.requests) >= count, timeout)

    async def await_disconnects(self, count: int = 1, timeout: float = 5.0) -> bool:
        return await self._await(lambda: self.disconnects >= count, timeout)

    @staticmethod
    async def _await(pred: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    # ----------------------------------------------------------------- per-request helpers

    async def _record(self, request: web.Request) -> RecordedRequest:
        body = await request.read()
        parsed: Any = None
        if body:
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                parsed = None
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            json=parsed,
            body=body,
            query=dict(request.query),
            received_at=time.monotonic(),
        )
        with self._cond:
            self._requests.append(rec)
            self._cond.notify_all()
        return rec

    def _note_disconnect(self, ctx: RequestContext) -> None:
        if ctx.disconnected or ctx.aborted_by_us or self._stopping:
            return
        ctx.disconnected = True
        with self._cond:
            self._disconnect_times.append(time.monotonic())
            self._cond.notify_all()

    @staticmethod
    def _peer_gone(ctx: RequestContext) -> bool:
        transport = ctx.request.transport
        return transport is None or transport.is_closing()

    async def _sleep(self, ctx: RequestContext, seconds: float) -> bool:
        """Sleep while watching the connection. False if the peer went away (or we are stopping)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, seconds)
        while True:
            if self._peer_gone(ctx):
                self._note_disconnect(ctx)
                return False
            if self._stopping:
                return False
            remaining = deadline - loop.time()
            if remaining <= 0:
                return True
            await asyncio.sleep(min(0.01, remaining))

    async def _write(self, ctx: RequestContext, resp: web.StreamResponse, data: bytes) -> bool:
        if self._peer_gone(ctx):
            self._note_disconnect(ctx)
            return False
        try:
            await resp.write(data)
        except (ConnectionError, OSError):  # ClientConnectionResetError is a ConnectionResetError
            self._note_disconnect(ctx)
            return False
        return True

    async def _abort(self, ctx: RequestContext, rst: bool) -> None:
        ctx.aborted_by_us = True
        transport = ctx.request.transport
        if transport is None:
            return
        for _ in range(200):  # let already-written bytes reach the kernel first
            if transport.is_closing() or transport.get_write_buffer_size() == 0:
                break
            await asyncio.sleep(0.005)
        if rst:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
        transport.abort()

    async def _drop(self, ctx: RequestContext) -> web.StreamResponse:
        """Close the connection without sending anything (if the peer is still there)."""
        if not self._peer_gone(ctx):
            await self._abort(ctx, rst=False)
        return web.Response(status=499)  # never reaches the peer
