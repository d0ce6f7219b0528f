"""Run the real proxy on a real socket for tests: uvicorn in a thread, its own loop."""

from __future__ import annotations

import asyncio
import textwrap
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import uvicorn

from router.app import create_app
from router.server import server_config
from router.settings import Settings
from tests.policies import model, policy, provider
from tests.processes import START_WAIT_S, wait_until


class RunningRouter:
    """``create_app(settings)`` served on 127.0.0.1 by uvicorn configured as ``router serve`` does."""

    def __init__(self, policy_path: Path, **settings: object) -> None:
        self.settings = Settings(policy=policy_path, host="127.0.0.1", port=0, **settings)
        self.app = create_app(self.settings)
        self.server = uvicorn.Server(server_config(self.app, self.settings, log_config=None))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.port = 0

    def _started(self) -> bool:
        if not self.thread.is_alive():
            raise RuntimeError("the router's server thread ended before it started serving")
        return bool(self.server.started)

    def _serve(self) -> None:
        asyncio.run(self.server.serve())

    def __enter__(self) -> RunningRouter:
        self.thread.start()
        wait_until(self._started, START_WAIT_S, "the router's start")
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"


def write_policy(directory: Path, text: str, name: str = "policy.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def two_model_policy(
    upstream_url: str, second_url: str | None = None, keys: Iterable[dict[str, Any]] = (), **defaults: Any
) -> str:
    """A small policy: a cheap and a pricier standard model on OpenAI-shaped upstreams."""
    capabilities = ["tools", "vision", "json_schema"]
    return policy(
        providers={
            "primary": provider(upstream_url),
            "backup": provider(second_url or upstream_url, api_key="sk-upstream-secret-2"),
        },
        models={
            "cheap-model": model("primary", "gpt-4o-mini", price=(0.15, 0.6, 0.075), capabilities=capabilities),
            "pricey-model": model("backup", "gpt-4o", "frontier", price=(2.5, 10), capabilities=capabilities),
            "embed-model": model(
                "primary", "text-embedding-3-small", kind="embedding", price=(0.02, 0), context_window=8191
            ),
        },
        tiers=["frontier", "standard", "small"],
        routes={"standard": {"tier": "standard"}, "frontier": {"tier": "frontier"}},
        keys=keys,
        **{"baseline_model": "pricey-model", "ttft_timeout_s": 2, "timeout_s": 5, **defaults},
    )


def one_model_policy(
    upstream_url: str,
    model_timeouts: dict[str, float] | None = None,
    provider_options: dict[str, Any] | None = None,
    keys: Iterable[dict[str, Any]] = (),
    **defaults: Any,
) -> str:
    """One standard model on one OpenAI-shaped upstream: retries and cooldowns have nowhere else to go."""
    timeouts = {"timeouts": model_timeouts} if model_timeouts else {}
    values = {"retries": 2, "max_retry_wait_s": 2, "ttft_timeout_s": 2, "timeout_s": 5, **defaults}
    return policy(
        providers={"only": provider(upstream_url, **(provider_options or {}))},
        models={"solo": model("only", price=(1.0, 2.0), capabilities=["tools"], **timeouts)},
        keys=keys,
        **{"baseline_model": "solo", **values},
    )


def scrape(url: str, key: str | None = None) -> dict[str, float]:
    """``/metrics`` as {'name{label="v",...}': value} (samples only); ``key`` when the
    policy has client keys."""
    import httpx

    headers = {"authorization": f"Bearer {key}"} if key else {}
    samples: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics", headers=headers, timeout=5).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def metric_sum(samples: dict[str, float], name: str, **labels: str) -> float:
    """Sum of every sample of ``name`` whose labels include ``labels``."""
    total = 0.0
    for key, value in samples.items():
        metric, _, rest = key.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total
