"""Closed-loop asyncio load generator for OpenAI-compatible /v1/chat/completions
(or, with ``api="responses"``, the same exchange as /v1/responses).

`concurrency` workers share one pooled aiohttp session (connector limit >=
concurrency) and each sends requests back to back, for a fixed number of
requests or a fixed duration. Every response must be HTTP 200 and complete:
JSON must carry choices[0].message.content; a stream must deliver at least one
`data: {...}` chunk and end with `data: [DONE]`. A Responses answer must be `completed`
with a message in `output`; its stream must end with a `response.completed` event.
Anything else counts as an error.

Standalone:  python -m benchmarks.loadgen --url http://127.0.0.1:9101/v1 \
                 --model gpt-4o-mini --concurrency 32 --duration 5 [--stream] [--api responses]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import orjson

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
    {"role": "user", "content": "Write one friendly sentence greeting a benchmark run."},
]


def make_payload(model: str, stream: bool) -> bytes:
    body = {"model": model, "messages": MESSAGES, "max_tokens": 64, "temperature": 0}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


def make_responses_payload(model: str, stream: bool) -> bytes:
    """The chat exchange above as a Responses request (the proxy translates it to the same
    chat body). ``store: false``: the comparison is of the translation, not of the store."""
    body = {
        "model": model,
        "instructions": MESSAGES[0]["content"],
        "input": MESSAGES[1]["content"],
        "max_output_tokens": 64,
        "temperature": 0,
        "store": False,
    }
    if stream:
        body["stream"] = True
    return orjson.dumps(body)


def _responses_text(obj: dict) -> str:
    if obj["status"] != "completed":
        raise ValueError(f"status {obj['status']}")
    message = next(item for item in obj["output"] if item["type"] == "message")
    return message["content"][0]["text"]


def percentile(sorted_vals: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of an already sorted list."""
    if not sorted_vals:
        return float("nan")
    k = max(0, math.ceil(p / 100.0 * len(sorted_vals)) - 1)
    return sorted_vals[min(k, len(sorted_vals) - 1)]


@dataclass
class LoadResult:
    concurrency: int
    stream: bool
    ok: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests only
    ttfb: list[float] = field(default_factory=list)  # stream: time to first data chunk
    error_samples: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return self.ok + self.errors

    @property
    def rps(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> dict:
        lat = sorted(self.latencies)
        tt = sorted(self.ttfb)
        return {
            "concurrency": self.concurrency,
            "stream": self.stream,
            "requests": self.total,
            "ok": self.ok,
            "errors": self.errors,
            "elapsed_s": round(self.elapsed_s, 3),
            "rps": round(self.rps, 1),
            "p50_ms": round(percentile(lat, 50) * 1000, 3) if lat else None,
            "p90_ms": round(percentile(lat, 90) * 1000, 3) if lat else None,
            "p99_ms": round(percentile(lat, 99) * 1000, 3) if lat else None,
            "max_ms": round(lat[-1] * 1000, 3) if lat else None,
            "ttfb_p50_ms": round(percentile(tt, 50) * 1000, 3) if tt else None,
            "error_samples": dict(self.error_samples.most_common(5)),
        }


def make_session(concurrency: int, timeout_s: float = 30.0) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=max(concurrency, 1), limit_per_host=0, keepalive_timeout=60, force_close=False
        ),
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        auto_decompress=False,
    )


async def _one(
    session: aiohttp.ClientSession,
    url: str,
    payload: bytes,
    headers: dict,
    stream: bool,
    res: LoadResult,
    responses: bool = False,
) -> None:
    t0 = time.perf_counter()
    try:
        async with session.post(url, data=payload, headers=headers) as r:
            if r.status != 200:
                body = await r.read()
                res.errors += 1
                res.error_samples[f"HTTP {r.status}: {body[:120]!r}"] += 1
                return
            if stream:
                chunks = 0
                done = False
                first = None
                async for line in r.content:  # line by line; consumes to EOF so the connection is reused
                    if responses:  # no [DONE]: the stream ends with response.completed
                        if line.startswith(b"event: "):
                            done = line.startswith(b"event: response.completed")
                        elif line.startswith(b"data: "):
                            chunks += 1
                            if first is None:
                                first = time.perf_counter()
                    elif line.startswith(b"data: "):
                        if line.startswith(b"data: [DONE]"):
                            done = True
                        else:
                            chunks += 1
                            if first is None:
                                first = time.perf_counter()
                if not done or chunks == 0:
                    res.errors += 1
                    res.error_samples[f"incomplete stream (chunks={chunks}, done={done})"] += 1
                    return
                res.ttfb.append(first - t0)
            else:
                body = await r.read()
                obj = orjson.loads(body)
                text = _responses_text(obj) if responses else obj["choices"][0]["message"]["content"]
                if not isinstance(text, str):
                    raise ValueError("no content")
        res.latencies.append(time.perf_counter() - t0)
        res.ok += 1
    except Exception as e:
        res.errors += 1
        res.error_samples[f"{type(e).__name__}: {str(e)[:120]}"] += 1


async def run_load(
    session: aiohttp.ClientSession,
    url: str,
    model: str,
    *,
    stream: bool,
    concurrency: int,
    duration: float | None = None,
    requests: int | None = None,
    headers: dict | None = None,
    api: str = "chat",
) -> LoadResult:
    """Run `requests` requests (or for `duration` seconds) with `concurrency` workers;
    ``api``: "chat" (/chat/completions) or "responses" (/responses)."""
    if (duration is None) == (requests is None):
        raise ValueError("give exactly one of duration / requests")
    responses = api == "responses"
    url = url.rstrip("/") + ("/responses" if responses else "/chat/completions")
    payload = make_responses_payload(model, stream) if responses else make_payload(model, stream)
    hdrs = {"Content-Type": "application/json", "Authorization": "Bearer bench-key", **(headers or {})}
    res = LoadResult(concurrency=concurrency, stream=stream)
    remaining = [requests or 0]
    t_start = time.perf_counter()
    deadline = t_start + duration if duration is not None else math.inf

    async def worker():
        while True:
            if requests is not None:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
            elif time.perf_counter() >= deadline:
                return
            await _one(session, url, payload, hdrs, stream, res, responses)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    res.elapsed_s = time.perf_counter() - t_start
    return res


async def _main(a) -> None:
    async with make_session(a.concurrency) as s:
        res = await run_load(
            s,
            a.url,
            a.model,
            stream=a.stream,
            concurrency=a.concurrency,
            duration=a.duration if a.requests is None else None,
            requests=a.requests,
            api=a.api,
        )
    print(orjson.dumps(res.summary(), option=orjson.OPT_INDENT_2).decode())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="base URL ending in /v1")
    ap.add_argument("--model", default="gpt-4o-mini")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--requests", type=int, default=None, help="fixed request count instead of --duration")
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--api", choices=("chat", "responses"), default="chat", help="endpoint (responses: proxy only)")
    a = ap.parse_args(argv)
    try:
        import uvloop

        uvloop.run(_main(a))
    except ImportError:
        asyncio.run(_main(a))


if __name__ == "__main__":
    main()
