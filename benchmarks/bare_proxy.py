"""Bare pass-through proxy: the floor for a Python (Starlette + aiohttp) LLM proxy.

Forwards POST /v1/chat/completions to BENCH_UPSTREAM_URL byte-for-byte; SSE is
passed through chunk by chunk. No parsing, auth, routing, logging or metrics.

Run:  python -m benchmarks.bare_proxy --port 9102 --upstream http://127.0.0.1:9101/v1
"""

from __future__ import annotations

import argparse
import contextlib
import os

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

UPSTREAM = os.environ.get("BENCH_UPSTREAM_URL", "http://127.0.0.1:9101/v1").rstrip("/")
session: aiohttp.ClientSession | None = None


@contextlib.asynccontextmanager
async def lifespan(app):
    global session
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1024, keepalive_timeout=60),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60),
        auto_decompress=False,
    )
    yield
    await session.close()


async def chat_completions(request: Request) -> Response:
    body = await request.body()
    headers = {
        "Content-Type": "application/json",
        "Authorization": request.headers.get("authorization", "Bearer bench-key"),
    }
    resp = await session.post(UPSTREAM + "/chat/completions", data=body, headers=headers)
    ctype = resp.headers.get("Content-Type", "application/json")
    if ctype.startswith("text/event-stream"):

        async def passthrough():
            try:
                async for chunk in resp.content.iter_any():
                    yield chunk
            finally:
                resp.release()

        return StreamingResponse(
            passthrough(), status_code=resp.status, headers={"Content-Type": ctype, "Cache-Control": "no-cache"}
        )
    data = await resp.read()
    resp.release()
    return Response(data, status_code=resp.status, headers={"Content-Type": ctype})


async def models(request: Request) -> Response:
    async with session.get(UPSTREAM + "/models") as resp:
        return Response(await resp.read(), status_code=resp.status, media_type="application/json")


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


app = Starlette(
    routes=[
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ],
    lifespan=lifespan,
)


def main(argv=None) -> None:
    global UPSTREAM
    import uvicorn

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9102)
    ap.add_argument("--upstream", default=UPSTREAM)
    a = ap.parse_args(argv)
    UPSTREAM = a.upstream.rstrip("/")
    uvicorn.run(
        app,
        host=a.host,
        port=a.port,
        loop="uvloop",
        http="httptools",
        workers=1,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
