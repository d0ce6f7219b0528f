"""Run uvicorn with uvloop and httptools, one process or several workers."""

from __future__ import annotations

import uvicorn

from router.logs import configure_logging, uvicorn_log_config
from router.policy.loader import load_policy
from router.settings import Settings


def run() -> None:
    settings = Settings()
    configure_logging(settings.log_level)
    load_policy(settings.policy)  # fail fast, before any worker starts
    common = dict(
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=uvicorn_log_config(settings.log_level),
        timeout_graceful_shutdown=30,
        server_header=False,
    )
    if settings.workers > 1:
        uvicorn.run("router.app:app_from_environment", factory=True, workers=settings.workers, **common)
    else:
        from router.app import create_app

        uvicorn.run(create_app(settings), **common)
