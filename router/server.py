"""Run uvicorn with uvloop and the bounded httptools protocol, one process or several workers."""

from __future__ import annotations

import math
import os
import signal
import sys
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from router.http_protocol import BoundedConfig, BoundedHttpToolsProtocol, HttpLimits
from router.logs import configure_logging, uvicorn_log_config
from router.policy.loader import load_policy
from router.settings import Settings

WORKER_APP = "router.app:app_from_environment"


def run() -> None:
    # uvicorn re-raises the SIGTERM it caught once shutdown is complete; with this handler
    # in place (restored by uvicorn at the end) a drained, graceful stop exits 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    settings = Settings()
    configure_logging(settings.log_level)
    load_policy(settings.policy)  # fail fast, before any worker starts
    log_config = uvicorn_log_config(settings.log_level)
    if settings.workers > 1:
        prepare_multiprocess_metrics()
        config = server_config(WORKER_APP, settings, log_config=log_config)
        with suppress(KeyboardInterrupt):
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    from router.app import create_app

    server = uvicorn.Server(server_config(create_app(settings), settings, log_config=log_config))
    with suppress(KeyboardInterrupt):  # uvicorn re-raises a caught SIGINT once it has stopped
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)  # e.g. the port is taken; uvicorn has logged why


def server_config(app: ASGIApp | str, settings: Settings, *, log_config: dict[str, Any] | None) -> BoundedConfig:
    """The one uvicorn configuration (``router serve`` and the tests' in-process server):
    uvloop, httptools bounded by ``HttpLimits``; ``app`` a string names a factory (workers)."""
    config = BoundedConfig(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=BoundedHttpToolsProtocol,
        lifespan="on",
        access_log=False,
        log_config=log_config,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s) or None,  # uvicorn takes whole seconds
        server_header=False,
        workers=settings.workers,
        factory=isinstance(app, str),
    )
    config.http_limits = HttpLimits(read_timeout_s=settings.client_read_timeout_s)
    return config


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def prepare_multiprocess_metrics() -> None:
    """Workers share metrics through files in ``PROMETHEUS_MULTIPROC_DIR`` (made if unset;
    emptied at start so counters from an earlier run do not leak in)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        directory = tempfile.mkdtemp(prefix="tier-router-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
