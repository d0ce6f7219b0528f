"""Run the real proxy on a real socket for tests: uvicorn in a thread, its own loop."""

from __future__ import annotations

import asyncio
import textwrap
import threading
import time
from pathlib import Path

import uvicorn

from router.app import create_app
from router.server import server_config
from router.settings import Settings


class RunningRouter:
    """``create_app(settings)`` served on 127.0.0.1 by uvicorn configured as ``router serve`` does."""

    def __init__(self, policy_path: Path, **settings: object) -> None:
        self.settings = Settings(policy=policy_path, host="127.0.0.1", port=0, **settings)
        self.app = create_app(self.settings)
        self.server = uvicorn.Server(server_config(self.app, self.settings, log_config=None))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.port = 0

    def _serve(self) -> None:
        asyncio.run(self.server.serve())

    def __enter__(self) -> RunningRouter:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("router did not start")
            time.sleep(0.01)
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


def two_model_policy(upstream_url: str, second_url: str | None = None, **defaults: object) -> str:
    """A small policy: a cheap and a pricier standard model on OpenAI-shaped upstreams."""
    defaults = {"retries": 0, **defaults}
    extra = "".join(f", {k}: {v}" for k, v in defaults.items())
    return f"""
    version: 1
    tiers: [frontier, standard, small]
    providers:
      primary:  {{type: openai, base_url: "{upstream_url}", api_key: sk-upstream-secret-1}}
      backup:   {{type: openai, base_url: "{second_url or upstream_url}", api_key: sk-upstream-secret-2}}
    models:
      cheap-model:  {{provider: primary, upstream: gpt-4o-mini, tier: standard, price: {{input: 0.15, output: 0.6, cached_input: 0.075}}, context_window: 128000, capabilities: [tools, vision, json_schema]}}
      pricey-model: {{provider: backup, upstream: gpt-4o, tier: frontier, price: {{input: 2.5, output: 10}}, context_window: 128000, capabilities: [tools, vision, json_schema]}}
      embed-model:  {{provider: primary, upstream: text-embedding-3-small, tier: standard, kind: embedding, price: {{input: 0.02, output: 0}}, context_window: 8191}}
    routes:
      standard: {{tier: standard}}
      frontier: {{tier: frontier}}
    defaults: {{route: standard, baseline_model: pricey-model, ttft_timeout_s: 2, timeout_s: 5{extra}}}
    """


def one_model_policy(upstream_url: str, model_timeouts: str = "", **defaults: object) -> str:
    """One standard model on one OpenAI-shaped upstream: retries and cooldowns have nowhere else to go."""
    values = {"retries": 2, "max_retry_wait_s": 2, "ttft_timeout_s": 2, "timeout_s": 5, **defaults}
    extra = ", ".join(f"{k}: {v}" for k, v in values.items())
    timeouts = f", timeouts: {{{model_timeouts}}}" if model_timeouts else ""
    return f"""
    version: 1
    tiers: [standard]
    providers:
      only: {{type: openai, base_url: "{upstream_url}", api_key: sk-upstream-secret-1}}
    models:
      solo: {{provider: only, upstream: gpt-4o-mini, tier: standard, price: {{input: 1.0, output: 2.0}}, context_window: 128000, capabilities: [tools]{timeouts}}}
    routes:
      standard: {{tier: standard}}
    defaults: {{route: standard, baseline_model: solo, {extra}}}
    """


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
