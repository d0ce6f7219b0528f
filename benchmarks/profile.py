"""Load-independent cost per request of one proxy: CPU time and, with ``--callgrind``, instructions.

Wall-clock throughput moves with whatever else runs on the machine; CPU time per request
of the proxy process moves much less, and the instruction count under callgrind not at
all (to within a fraction of a percent), so before/after comparisons of a change are made
with these. Starts the fake upstream and one target, warms it up, then sends a fixed
number of requests at a fixed concurrency per mode.

    .venv/bin/python -m benchmarks.profile                      # tier-router, JSON and stream, c=8
    .venv/bin/python -m benchmarks.profile --target fastapi     # the same app as a FastAPI application
    .venv/bin/python -m benchmarks.profile --callgrind --requests 500   # + instructions per request
    .venv/bin/python -m benchmarks.profile --py-spy out.txt     # + a py-spy profile (needs py-spy)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.loadgen import make_session, run_load
from benchmarks.run import LOG_DIR, Proc, cpu_seconds, free_port, wait_ready

TARGETS = {
    "router": (["-m", "router", "serve", "--workers", "1"], "standard"),
    "fastapi": (["-m", "benchmarks.fastapi_app"], "standard"),
    "bare": (["-m", "benchmarks.bare_proxy"], "gpt-4o-mini"),
}


def target_command(target: str, port: int, upstream_v1: str) -> tuple[list[str], dict[str, str], str]:
    args, model = TARGETS[target]
    env = {
        "ROUTER_POLICY": "benchmarks/policy.yaml",
        "ROUTER_HOST": "127.0.0.1",
        "ROUTER_PORT": str(port),
        "ROUTER_LOG_LEVEL": "warning",
        "BENCH_UPSTREAM_URL": upstream_v1,
    }
    if target == "bare":
        args = [*args, "--port", str(port), "--upstream", upstream_v1]
    return [sys.executable, *args], env, model


def callgrind_control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True, check=False)


def start_py_spy(pid: int, out: str) -> subprocess.Popen[bytes]:
    py_spy = shutil.which("py-spy") or "py-spy"
    cmd = [py_spy, "record", "-p", str(pid), "-f", "raw", "-o", out, "-r", "500"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def callgrind_total(path: Path) -> int:
    text = path.read_text(errors="replace")
    found = re.findall(r"^(?:summary|totals):\s*(\d+)", text, re.M)
    return int(found[-1]) if found else 0


async def measure(a: argparse.Namespace) -> int:
    up_port, port = free_port(), free_port()
    upstream_v1 = f"http://127.0.0.1:{up_port}/v1"
    up = Proc("profile_upstream", [sys.executable, "-m", "benchmarks.fake_upstream", "--port", str(up_port)])
    await wait_ready(up, f"http://127.0.0.1:{up_port}/healthz", 15)
    cmd, env, model = target_command(a.target, port, upstream_v1)
    out_prefix = LOG_DIR / f"callgrind.{a.target}"
    if a.cprofile:
        cmd = [cmd[0], "-m", "benchmarks.cprofile_serve", a.cprofile + ".out", *cmd[2:]]
    if a.callgrind:
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out_prefix}.%p", *cmd]
    proc = Proc(f"profile_{a.target}", cmd, env)
    await wait_ready(proc, f"http://127.0.0.1:{port}/healthz", 300 if a.callgrind else 30)
    base = f"http://127.0.0.1:{port}/v1"
    print(f"target {a.target}, c={a.concurrency}, {a.requests} requests per mode, load {os.getloadavg()[0]:.2f}")
    for mode in a.modes:
        stream = mode == "stream"
        async with make_session(a.concurrency) as s:
            await run_load(s, base, model, stream=stream, concurrency=a.concurrency, requests=a.warmup)
            if a.callgrind:
                await asyncio.to_thread(callgrind_control, proc.pid, "-z")
                await asyncio.to_thread(callgrind_control, proc.pid, "-i", "on")
            spy = None
            if a.cprofile:
                prof_out = f"{a.cprofile}.{mode}"
                os.kill(proc.pid, signal.SIGUSR1)
            if a.py_spy:
                spy_out = f"{a.py_spy}.{mode}"
                spy = await asyncio.to_thread(start_py_spy, proc.pid, spy_out)
                await asyncio.sleep(1.0)
            c0, t0 = cpu_seconds(proc.tree()), time.perf_counter()
            res = await run_load(s, base, model, stream=stream, concurrency=a.concurrency, requests=a.requests)
            c1, t1 = cpu_seconds(proc.tree()), time.perf_counter()
            if a.cprofile:
                os.kill(proc.pid, signal.SIGUSR2)
                await asyncio.sleep(1.0)
                await asyncio.to_thread(Path(a.cprofile + ".out").replace, prof_out)
            if spy is not None:
                spy.send_signal(2)
                spy.wait(30)
            line = (
                f"{mode:<6} ok={res.ok} err={res.errors} req/s={res.ok / (t1 - t0):.0f} "
                f"CPU ms/req={(c1 - c0) * 1000 / max(res.ok, 1):.4f}"
            )
            if a.callgrind:
                await asyncio.to_thread(callgrind_control, proc.pid, "-i", "off")
                await asyncio.to_thread(callgrind_control, proc.pid, "-d", mode)
                dumps = sorted(LOG_DIR.glob(f"callgrind.{a.target}.{proc.pid}.*"), key=lambda p: p.stat().st_mtime)
                if dumps:
                    total = callgrind_total(dumps[-1])
                    line += f" instructions/req={total / max(res.ok, 1):,.0f} ({dumps[-1].name})"
            print(line, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.profile", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--target", choices=sorted(TARGETS), default="router")
    ap.add_argument("--modes", type=lambda s: s.split(","), default=["json", "stream"])
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--callgrind", action="store_true", help="run the target under valgrind --tool=callgrind")
    ap.add_argument("--cprofile", metavar="PREFIX", help="cProfile the measured requests to PREFIX.<mode>")
    ap.add_argument("--py-spy", metavar="PREFIX", help="record a py-spy profile per mode to PREFIX.<mode>")
    a = ap.parse_args(argv)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        return runner(measure(a))
    finally:
        Proc.stop_all()


if __name__ == "__main__":
    sys.exit(main())
