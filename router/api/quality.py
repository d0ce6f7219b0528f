"""``GET /v1/router/quality``: what shadow evaluation found, per route and model (admin)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from router.errors import PermissionDenied
from router.runtime import runtime_of


async def quality(request: Request) -> JSONResponse:
    """Per route and model: verdict counts, the share judged at least as good as the reference
    with its 95 % Wilson interval, and the shadow spend. Needs an admin key when the policy
    has keys. The figures are this process's own (see README, "Shadow evaluation")."""
    key = request.state.client_key
    if key is not None and not key.admin:
        raise PermissionDenied("The quality report needs an admin key (admin: true in the policy).")
    runtime = runtime_of(request)
    return JSONResponse(runtime.gateway.shadow.report(request.state.snapshot))


routes = [Route("/v1/router/quality", quality, methods=["GET"])]
