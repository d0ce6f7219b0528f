"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from router.errors import PermissionDenied
from router.runtime import runtime_of

health = APIRouter()


@health.get("/healthz")
@health.get("/livez")
async def live() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@health.get("/readyz")
async def ready(request: Request) -> JSONResponse:
    runtime = runtime_of(request)
    if not runtime.ready:
        return JSONResponse({"status": "not ready", "reason": "starting or draining"}, status_code=503)
    if not await runtime.store.ping():
        return JSONResponse({"status": "not ready", "reason": "state store unreachable"}, status_code=503)
    return JSONResponse({"status": "ready", "policy_sha256": runtime.gateway.policy.sha256})


@health.get("/metrics")
async def metrics(request: Request) -> Response:
    exposition = runtime_of(request).metrics.exposition()
    return Response(exposition, media_type="text/plain; version=0.0.4; charset=utf-8")


admin = APIRouter()


@admin.post("/admin/reload")
async def reload_policy(request: Request) -> JSONResponse:
    """Re-read the policy file now (for setups that cannot watch files). Needs an admin key
    when the policy has keys."""
    key = getattr(request.state, "client_key", None)
    if key is not None and not key.admin:
        raise PermissionDenied("Reloading the policy needs an admin key (admin: true in the policy).")
    result = await runtime_of(request).reloader.reload()
    status = 200 if result.result != "failure" else 422
    return JSONResponse(result.as_json(), status_code=status)
