"""The composition root: ``create_app(settings)`` builds everything a process serves with."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response

from router.api.completions import routes as completions_routes
from router.api.health import routes as health_routes
from router.api.openai import routes as api_routes
from router.api.quality import routes as quality_routes
from router.api.responses import routes as responses_routes
from router.auth import AuthMiddleware
from router.circuit import CircuitSettings
from router.errors import RouterError, error_body
from router.gateway import Gateway
from router.metrics import Metrics
from router.middleware import GuardMiddleware, PolicyMiddleware, RequestIdMiddleware
from router.policy import tokens
from router.policy.loader import load_policy
from router.policy.model import Policy
from router.providers.registry import build_adapters, close_adapters
from router.reload import PolicyReloader
from router.runtime import Runtime
from router.settings import Settings
from router.shadow.evaluator import ShadowOptions
from router.snapshot import LivePolicy, PolicySnapshot
from router.state.base import StateStore, StateUnavailable
from router.state.memory import MemoryStateStore
from router.state.resilient import ResilientStore

log = logging.getLogger("router")


def create_app(settings: Settings, policy: Policy | None = None) -> Starlette:
    """Build the ASGI app. Raises ``PolicyError`` if the policy file is invalid."""
    loaded = policy or load_policy(settings.policy)
    metrics = Metrics()
    store = build_store(settings, loaded, metrics)
    live = LivePolicy()  # its snapshot is set in the lifespan, once the adapters can be built
    runtime = Runtime(
        settings=settings,
        metrics=metrics,
        store=store,
        gateway=Gateway(
            store,
            metrics,
            responses_ttl_s=settings.responses_ttl_s,
            shadow=ShadowOptions(
                settings.shadow_queue_size, settings.shadow_workers, settings.shadow_drain_s, settings.shadow_log
            ),
        ),
        live=live,
        reloader=PolicyReloader(settings, metrics, live),
    )
    tokens.warm_up()
    log_policy_summary(loaded)
    for warning in loaded.warnings:
        log.warning("policy warning", extra={"warning": warning})
    runtime.metrics.show_policy(loaded.sha256)
    runtime.metrics.prime(loaded, loaded.teams())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await check_store(runtime.store)
        live.snapshot = PolicySnapshot.build(loaded, build_adapters(loaded, settings.upstream_max_connections))
        watcher = asyncio.ensure_future(runtime.reloader.watch()) if settings.watch_policy else None
        install_drain_on_sigterm(runtime)
        runtime.gateway.shadow.start()
        release_start_up_memory()
        runtime.ready = True
        try:
            yield
        finally:
            runtime.ready = False
            if watcher is not None:
                watcher.cancel()
            await runtime.reloader.aclose()
            await runtime.gateway.shadow.stop()  # drains within ROUTER_SHADOW_DRAIN_S, then drops (counted)
            await close_adapters(dict(live.snapshot.adapters))
            await runtime.store.aclose()

    # Plain Starlette (FastAPI's base): the hot path needs no dependency injection or
    # OpenAPI, and FastAPI's extra ASGI layers measured ~20 µs per request here.
    app = Starlette(
        routes=[
            *api_routes,
            *responses_routes,
            *completions_routes,
            *health_routes,
            *quality_routes,
        ],  # hot paths first
        lifespan=lifespan,
        exception_handlers={RouterError: _router_error, HTTPException: _http_error},
        middleware=[
            Middleware(RequestIdMiddleware),
            *cors_middleware(settings),
            Middleware(GuardMiddleware, max_body_bytes=settings.max_body_bytes),
            Middleware(PolicyMiddleware, live=live),
            Middleware(AuthMiddleware),
        ],
    )
    app.state.runtime = runtime
    return app


# Routed answers' own headers, readable by a browser client only when listed.
CORS_EXPOSED_HEADERS = (
    "x-request-id",
    "x-router-model",
    "x-router-provider",
    "x-router-tier",
    "x-router-route",
    "x-router-attempts",
    "x-router-cost-usd",
    "x-router-cost-estimated",
    "x-router-cache",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "retry-after",
)


def cors_middleware(settings: Settings) -> list[Middleware]:
    """Starlette's CORS for ``ROUTER_CORS_ORIGINS`` only (none when unset). It sits before
    the key check: a browser's preflight carries no key and is answered here."""
    origins = settings.cors_origin_list
    if not origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=list(CORS_EXPOSED_HEADERS),
            max_age=600,
        )
    ]


def app_from_environment() -> Starlette:
    """Factory for ``uvicorn --factory`` and worker processes: settings from ``ROUTER_*``."""
    from router.logs import configure_logging

    settings = Settings()
    configure_logging(settings.log_level)
    return create_app(settings)


async def _router_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RouterError)
    return Response(exc.body_bytes(), status_code=exc.status, media_type="application/json", headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"Unknown endpoint {request.method} {request.url.path}; see /v1/models, /v1/chat/completions, /v1/embeddings."
    else:
        message = str(exc.detail)
    body = error_body(message, "invalid_request_error", None, "not_found" if exc.status_code == 404 else None)
    return Response(orjson.dumps(body), status_code=exc.status_code, media_type="application/json", headers=exc.headers)


def release_start_up_memory() -> None:
    """Drop the model map (re-read on reload) and give freed heap back to the OS."""
    import ctypes
    import gc

    from router.policy import catalog

    catalog.load_model_map.cache_clear()
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass


def install_drain_on_sigterm(runtime: Runtime) -> None:
    """On SIGTERM: /readyz answers 503 at once, requests keep being served for
    ``ROUTER_DRAIN_DELAY_S`` (so load balancers move new traffic away), then uvicorn's own
    graceful shutdown lets in-flight requests and streams finish (``ROUTER_SHUTDOWN_GRACE_S``)."""
    if threading.current_thread() is not threading.main_thread():
        return  # tests serve in a thread; signals belong to the main thread
    uvicorn_handler = signal.getsignal(signal.SIGTERM)
    if not callable(uvicorn_handler):
        return
    loop = asyncio.get_running_loop()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if runtime.ready:
            runtime.ready = False
            log.warning("SIGTERM: draining", extra={"drain_delay_s": runtime.settings.drain_delay_s})

            def stop_later() -> None:
                loop.call_later(runtime.settings.drain_delay_s, uvicorn_handler, signum, frame)

            loop.call_soon_threadsafe(stop_later)
        else:
            uvicorn_handler(signum, frame)  # a second SIGTERM: stop now

    signal.signal(signal.SIGTERM, on_sigterm)


def build_store(settings: Settings, policy: Policy, metrics: Metrics) -> StateStore:
    local = MemoryStateStore(circuit_settings(policy))
    if not settings.redis_url:
        metrics.state_store_up.set(1)
        return local
    from router.state.redis_store import RedisStateStore

    redis = RedisStateStore(
        settings.redis_url, circuit=circuit_settings(policy), timeout_s=settings.redis_timeout_ms / 1000
    )
    return ResilientStore(
        redis,
        local,
        metrics.state_store_up,
        budgets_on_failure=settings.redis_on_failure_budgets,
        rate_limits_on_failure=settings.redis_on_failure_rate_limits,
        replicas=settings.replicas,
    )


async def check_store(store: StateStore) -> None:
    """Run the Redis scripts once at start-up: refused scripts stop the process; an
    unreachable Redis is logged and served around per the failure table."""
    from router.state.redis_store import RedisStateStore

    if not isinstance(store, ResilientStore) or not isinstance(store.primary, RedisStateStore):
        return
    try:
        await store.primary.self_test()
    except StateUnavailable:
        log.error("Redis is unreachable at start-up; serving with the documented fallbacks until it answers")
        store.mark_down()


def circuit_settings(policy: Policy) -> CircuitSettings:
    return CircuitSettings(
        failure_threshold=policy.defaults.eject_after_failures, base_ejection_s=policy.defaults.ejection_s
    )


def log_policy_summary(policy: Policy) -> None:
    for provider in policy.providers.values():
        if not provider.enabled:
            log.info("provider disabled", extra={"provider": provider.name, "reason": provider.disabled_reason})
        elif provider.type == "simulated":
            log.warning(
                "SIMULATED provider serving: responses are generated by the router, no model is called",
                extra={"provider": provider.name},
            )
    if not policy.keys:
        log.warning("no keys section in the policy: the proxy is OPEN to any client that can reach it")
    enabled = [m.name for m in policy.models.values() if policy.providers[m.provider].enabled]
    log.info("policy loaded", extra={"policy": policy.source, "sha256": policy.sha256, "models_enabled": enabled})
