"""Live policy reload: a valid edit is swapped in atomically, an invalid one is rejected.

The policy's directory is watched (editors' rename-over, ``os.replace`` and Kubernetes
ConfigMap symlink swaps all show up as directory events); each event re-reads the file and
compares its SHA-256. A valid new policy becomes a new ``PolicySnapshot`` (policy, adapters,
timeouts) in one reference swap: requests already running (streams included) finish on the
snapshot they were pinned to, whose upstream pools are closed once its in-flight count is
zero. Per-process services (state store, accountant, retry budget, log throttles) are not
touched: a reload keeps measured throughput and every counter. An invalid file is logged with its located
errors, counted as ``router_policy_reloads_total{result="failure"}``, and the last good
policy keeps serving. So is an edit that would disable a provider serving now (an unset
variable disables a provider only at start-up). The file is read and parsed in a worker
thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path

from router.metrics import Metrics
from router.policy.loader import PolicyError, parse_policy, read_policy_file
from router.policy.model import Policy
from router.providers.registry import build_adapters, close_adapters
from router.settings import Settings
from router.snapshot import LivePolicy, PolicySnapshot
from router.types import ReloadResultKind

log = logging.getLogger("router.reload")
RETIRE_POLL_S = 0.1
WATCH_DEBOUNCE_MS = 50


class ReloadResult:
    def __init__(self, result: ReloadResultKind, sha256: str, errors: list[str] | None = None) -> None:
        self.result = result
        self.sha256 = sha256
        self.errors = errors or []

    def as_json(self) -> dict[str, object]:
        return {"result": self.result, "sha256": self.sha256, "errors": self.errors}


class PolicyReloader:
    def __init__(self, settings: Settings, metrics: Metrics, live: LivePolicy) -> None:
        self.settings = settings
        self.metrics = metrics
        self.live = live
        self.path = Path(settings.policy)
        self.lock = asyncio.Lock()
        self.retiring: set[asyncio.Task[None]] = set()

    async def reload(self) -> ReloadResult:
        async with self.lock:
            current = self.live.snapshot
            serving = frozenset(name for name, p in current.policy.providers.items() if p.enabled)
            try:
                # Reading and parsing run in a thread: a large or hostile file never stalls the loop.
                policy = await asyncio.to_thread(self._load_if_changed, current.policy.sha256, serving)
            except PolicyError as exc:
                return self._failed(current.policy.sha256, exc.errors)
            except Exception as exc:  # a loader bug is still a counted, logged failure
                log.error("policy reload: unexpected error while loading", exc_info=True)
                return self._failed(
                    current.policy.sha256, [f"{self.path}: the policy could not be loaded ({type(exc).__name__})"]
                )
            if policy is None:
                return ReloadResult("unchanged", current.policy.sha256)
            for warning in policy.warnings:
                log.warning("policy warning", extra={"warning": warning})
            try:
                adapters = build_adapters(policy, self.settings.upstream_max_connections)
            except Exception as exc:  # e.g. a provider library that fails to import
                log.error("policy reload: cannot build the providers", exc_info=True)
                return self._failed(
                    current.policy.sha256, [f"{self.path}: cannot build the providers ({type(exc).__name__})"]
                )
            self.live.snapshot = PolicySnapshot.build(policy, adapters)
            metrics = self.metrics
            metrics.policy_reloads.labels(result="success").inc()
            metrics.show_policy(policy.sha256, previous=current.policy.sha256)
            metrics.prime(policy, policy.teams())
            log.warning(
                "policy reloaded",
                extra={"policy": str(self.path), "sha256": policy.sha256, "previous_sha256": current.policy.sha256},
            )
            task = asyncio.ensure_future(self._retire(current))
            self.retiring.add(task)
            task.add_done_callback(self.retiring.discard)
            return ReloadResult("success", policy.sha256)

    def _load_if_changed(self, current_sha256: str, serving: frozenset[str]) -> Policy | None:
        """The new policy, or None if the file is unchanged (runs in a worker thread)."""
        data = read_policy_file(self.path)
        if hashlib.sha256(data).hexdigest() == current_sha256:
            return None
        policy = parse_policy(data, str(self.path), os.environ, serving)
        if any(p.enabled and p.type == "litellm" for p in policy.providers.values()):
            import router.providers.litellm_adapter  # noqa: F401 - importing litellm takes seconds: not on the loop
        return policy

    def _failed(self, sha256: str, errors: list[str]) -> ReloadResult:
        self.metrics.policy_reloads.labels(result="failure").inc()
        log.error(
            "policy reload rejected; the last good policy keeps serving", extra={"errors": errors, "sha256": sha256}
        )
        return ReloadResult("failure", sha256, errors)

    async def _retire(self, snapshot: PolicySnapshot) -> None:
        """Close the old snapshot's upstream pools once its in-flight requests are done."""
        deadline = asyncio.get_running_loop().time() + snapshot.policy.defaults.timeout_s * 2
        # the in-flight count is a plain int kept by PolicyMiddleware, not an event to wait on
        while snapshot.inflight.count and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(RETIRE_POLL_S)
        await close_adapters(dict(snapshot.adapters))

    async def watch(self) -> None:
        from watchfiles import awatch

        directory = self.path.absolute().parent  # not resolved: ConfigMap swaps happen here
        log.info("watching the policy for changes", extra={"directory": str(directory)})
        async for _ in awatch(directory, debounce=WATCH_DEBOUNCE_MS, step=WATCH_DEBOUNCE_MS, recursive=False):
            try:
                await self.reload()
            except Exception:  # a reload must never kill the watcher
                log.exception("policy reload failed unexpectedly")

    async def aclose(self) -> None:
        for task in list(self.retiring):
            await task
