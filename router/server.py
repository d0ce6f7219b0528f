"""Run uvicorn with uvloop and httptools, one process or several workers."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import uvicorn

from router.logs import configure_logging, uvicorn_log_config
from router.policy.loader import load_policy
from router.settings import Settings


def run() -> None:
    # uvicorn re-raises the SIGTERM it caught once shutdown is complete; with this handler
    # in place (restored by uvicorn at the end) a drained, graceful stop exits 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
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
        timeout_graceful_shutdown=settings.shutdown_grace_s or None,
        server_header=False,
    )
    if settings.workers > 1:
        prepare_multiprocess_metrics()
        uvicorn.run("router.app:app_from_environment", factory=True, workers=settings.workers, **common)
    else:
        from router.app import create_app

        uvicorn.run(create_app(settings), **common)


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
