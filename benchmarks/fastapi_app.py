"""tier-router served with FastAPI as the application object (issue 10, item 7).

The same routes, middleware, exception handlers and lifespan as ``router.app.create_app``,
mounted as plain Starlette routes in a ``FastAPI`` application, which adds its OpenAPI
schema, ``/docs`` and its own ASGI layers. Used by ``benchmarks.run --fastapi`` and
``benchmarks.profile --target fastapi`` to measure what those layers cost per request.
Settings come from ``ROUTER_*`` like ``router serve`` (one worker).

    ROUTER_POLICY=benchmarks/policy.yaml ROUTER_PORT=9103 python -m benchmarks.fastapi_app
"""

from __future__ import annotations

import sys
from contextlib import suppress

import uvicorn
from fastapi import FastAPI
from starlette.applications import Starlette

from router.app import create_app
from router.logs import configure_logging, uvicorn_log_config
from router.server import server_config
from router.settings import Settings


def as_fastapi(app: Starlette) -> FastAPI:
    """``app``'s routes, middleware, handlers, lifespan and state in a FastAPI application."""
    wrapped = FastAPI(
        routes=list(app.routes),
        middleware=list(app.user_middleware),
        exception_handlers=dict(app.exception_handlers),
        lifespan=app.router.lifespan_context,
        title="tier-router",
    )
    wrapped.state.runtime = app.state.runtime
    return wrapped


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level)
    app = as_fastapi(create_app(settings))
    server = uvicorn.Server(server_config(app, settings, log_config=uvicorn_log_config(settings.log_level)))
    with suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(3)


if __name__ == "__main__":
    main()
