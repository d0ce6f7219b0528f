"""Liveness, readiness, metrics and the admin reload endpoint."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from router.errors import PermissionDenied
from router.runtime import runtime_of


async def live(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> JSONResponse:
    runtime = runtime_of(request)
    if not runtime.ready:
        return JSONResponse({"status": "not ready", "reason": "starting or draining"}, status_code=503)
    if not await runtime.store.ping():
        return JSONResponse({"status": "not ready", "reason": "state store unreachable"}, status_code=503)
    return JSONResponse({"status": "ready", "policy_sha256": runtime.live.snapshot.policy.sha256})


async def metrics(request: Request) -> Response:
    exposition = runtime_of(request).metrics.exposition()
    return Response(exposition, media_type="text/plain; version=0.0.4; charset=utf-8")


async def reload_policy(request: Request) -> JSONResponse:
    """Re-read the policy file now (for setups that cannot watch files). Needs an admin key
    when the policy has keys."""
    key = request.state.client_key
    if key is not None and not key.admin:
        raise PermissionDenied("Reloading the policy needs an admin key (admin: true in the policy).")
    result = await runtime_of(request).reloader.reload()
    status = 200 if result.result != "failure" else 422
    return JSONResponse(result.as_json(), status_code=status)


routes = [
    Route("/healthz", live, methods=["GET"]),
    Route("/livez", live, methods=["GET"]),
    Route("/readyz", ready, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/admin/reload", reload_policy, methods=["POST"]),
]
