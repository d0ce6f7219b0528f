"""Process settings, read from ``ROUTER_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the process needs that is not routing policy."""

    model_config = SettingsConfigDict(env_prefix="ROUTER_", extra="ignore", frozen=True)

    policy: Path = Path("policies/default.yaml")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    redis_url: str | None = None
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    max_body_mb: float = Field(default=32.0, gt=0, le=512)
    # A client silent this long in the middle of a request (headers or body) gets 408
    client_read_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    upstream_max_connections: int = Field(default=1024, ge=1)
    redis_timeout_ms: int = Field(default=250, ge=10, le=10_000)
    # What happens while Redis is unreachable (see README, "When Redis is unreachable")
    redis_on_failure_budgets: Literal["closed", "open"] = "closed"
    redis_on_failure_rate_limits: Literal["local", "closed", "open"] = "local"
    replicas: int = Field(default=1, ge=1, le=1000)
    shutdown_grace_s: float = Field(default=30, ge=0, le=3600)
    drain_delay_s: float = Field(default=0, ge=0, le=600)
    watch_policy: bool = True
    # How long a stored Responses API response (``store``, ``previous_response_id``) is kept
    responses_ttl_s: int = Field(default=7 * 24 * 3600, ge=1, le=366 * 24 * 3600)
    # Shadow evaluation (policy ``shadow:``): the per-process queue, its workers, how long
    # shutdown waits for the queue, and the verdict log (JSONL; none when unset)
    shadow_queue_size: int = Field(default=256, ge=1, le=100_000)
    shadow_workers: int = Field(default=2, ge=1, le=64)
    shadow_drain_s: float = Field(default=5, ge=0, le=600)
    shadow_log: Path | None = None
    # Browser origins allowed by CORS, comma separated ("*" for any); empty: no CORS headers at all
    cors_origins: str = ""

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin for part in self.cors_origins.split(",") if (origin := part.strip())]

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)
