"""Proxy benchmark: direct fake upstream vs bare proxy vs tier-router vs LiteLLM proxy.

    .venv/bin/python -m benchmarks.run [--quick] [--skip-litellm] [--duration SECONDS] [--responses]

Starts every server as its own subprocess (own process group, 127.0.0.1 only),
then for each concurrency and mode (JSON / stream) measures each target in turn,
and writes benchmarks/RESULTS.md (+ benchmarks/results.json). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import aiohttp

from benchmarks.loadgen import make_session, run_load

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"
LOG_DIR = BENCH / ".logs"
VENV_BIN = Path(sys.executable).parent
LITELLM_VERSION = "1.108.7"
LITELLM_VENV = BENCH / ".litellm-venv"
PYCACHE = BENCH / ".pycache"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# ----------------------------------------------------------------------------- /proc helpers


def _ppid_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                st = f.read()
        except OSError:
            continue
        ppid = int(st.rsplit(b")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def proc_tree(pid: int) -> list[int]:
    """pid plus all its live descendants."""
    kids = _ppid_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/statm", "rb") as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


def system_busy_seconds() -> float:
    """Machine-wide non-idle CPU seconds since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (v[0] + v[1] + v[2]) / CLK_TCK  # user+nice+system (irq/softirq are not attributed to processes)


def our_cpu_seconds() -> float:
    """CPU of this process (load generator) plus every server we started."""
    t = os.times()
    pids = [p for proc in Proc.live for p in proc.tree()]
    return t.user + t.system + cpu_seconds(pids)


# ----------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A server subprocess in its own process group, output to benchmarks/.logs/NAME.log."""

    live: ClassVar[list[Proc]] = []

    def __init__(self, name: str, cmd: list[str], env: dict | None = None):
        self.name = name
        self.cmd = cmd
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.t_spawn = time.perf_counter()
        self.popen = subprocess.Popen(
            cmd,
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        Proc.live.append(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tree(self) -> list[int]:
        return proc_tree(self.pid)

    def log_tail(self, n: int = 15) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self, timeout: float = 8.0) -> None:
        if self in Proc.live:
            Proc.live.remove(self)
        try:
            if self.popen.poll() is None:
                os.killpg(self.pid, signal.SIGTERM)
                try:
                    self.popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass
            os.killpg(self.pid, signal.SIGKILL)  # stragglers in the group
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.wait(2)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()

    @classmethod
    def stop_all(cls) -> None:
        for p in list(reversed(cls.live)):
            p.stop()


async def wait_ready(proc: Proc, url: str, timeout: float) -> float:
    """Poll url until HTTP 200; returns seconds since spawn. Raises RuntimeError with the reason."""
    deadline = time.perf_counter() + timeout
    last = "no response"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s:
        while time.perf_counter() < deadline:
            rc = proc.popen.poll()
            if rc is not None:
                raise RuntimeError(f"exited with code {rc} during startup:\n{proc.log_tail()}")
            try:
                async with s.get(url) as r:
                    await r.read()
                    if r.status == 200:
                        return time.perf_counter() - proc.t_spawn
                    last = f"HTTP {r.status}"
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                last = type(e).__name__
            await asyncio.sleep(0.05)
    raise RuntimeError(f"not ready after {timeout:.0f}s (last: {last}):\n{proc.log_tail()}")


# ----------------------------------------------------------------------------- targets


@dataclass
class Target:
    key: str
    label: str
    base_url: str = ""
    model: str = ""
    proc: Proc | None = None
    available: bool = False
    reason: str = ""
    start_s: float | None = None
    idle_rss: int | None = None
    peak_rss: int = 0
    version: str = ""
    headers: dict = field(default_factory=dict)  # extra request headers (e.g. auth)
    cells: dict = field(default_factory=dict)
    api: str = "chat"  # loadgen endpoint: "chat" or "responses" (tier-router translates to chat)


def _pkg_version(python: Path, dist: str) -> str:
    try:
        out = subprocess.run(
            [str(python), "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""


def ensure_litellm() -> Path:
    """Install litellm[proxy]==LITELLM_VERSION into benchmarks/.litellm-venv if missing; return its CLI."""
    py, cli = LITELLM_VENV / "bin" / "python", LITELLM_VENV / "bin" / "litellm"
    if cli.exists() and _pkg_version(py, "litellm") == LITELLM_VERSION:
        return cli
    print(f"[setup] installing litellm[proxy]=={LITELLM_VERSION} into {LITELLM_VENV.relative_to(REPO)} ...", flush=True)
    uv = VENV_BIN / "uv"
    uv = str(uv) if uv.exists() else shutil.which("uv")
    spec = f"litellm[proxy]=={LITELLM_VERSION}"
    if uv:
        if not py.exists():
            subprocess.run([uv, "venv", "--python", sys.executable, str(LITELLM_VENV)], check=True, timeout=300)
        subprocess.run([uv, "pip", "install", "--python", str(py), spec], check=True, timeout=1200)
    else:
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True, timeout=300)
        subprocess.run([str(py), "-m", "pip", "install", "-q", spec], check=True, timeout=1200)
    if not cli.exists():
        raise RuntimeError("litellm CLI missing after install")
    return cli


def site_packages(python: Path) -> list[str]:
    out = subprocess.run(
        [str(python), "-c", "import site; print('\\n'.join(site.getsitepackages()))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return [p for p in out.stdout.split() if Path(p).is_dir()]


def precompile(python: Path, dirs: list[str]) -> None:
    """Byte-compile into benchmarks/.pycache (PYTHONPYCACHEPREFIX), leaving the venvs untouched.

    pip compiles .pyc at install time and container images ship them; uv does not, and with
    PYTHONDONTWRITEBYTECODE=1 nothing is ever cached, so every start (and every *failing*
    lazy import at request time) would compile source. Up-to-date files are skipped.
    """
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(PYCACHE)}
    subprocess.run(
        [str(python), "-m", "compileall", "-q", "-j", "0", *dirs],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=900,
    )


def litellm_config(upstream_v1: str, master_key: str) -> Path:
    cfg = LOG_DIR / "litellm_config.yaml"
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    cfg.write_text(
        textwrap.dedent(f"""\
        # generated by benchmarks/run.py
        model_list:
          - model_name: bench-model
            litellm_params:
              model: openai/gpt-4o-mini
              api_base: {upstream_v1}
              api_key: sk-bench-dummy
        litellm_settings:
          telemetry: false
          set_verbose: false
          drop_params: true
        general_settings:
          master_key: {master_key}
        """)
    )
    return cfg


async def smoke(t: Target) -> None:
    """One JSON and one streaming request must succeed."""
    async with make_session(1) as s:
        for stream in (False, True):
            r = await run_load(
                s, t.base_url, t.model, stream=stream, concurrency=1, requests=1, headers=t.headers, api=t.api
            )
            if r.ok != 1:
                raise RuntimeError(f"smoke {'stream' if stream else 'JSON'} request failed: {dict(r.error_samples)}")


async def start_target(t: Target, cmd_or_err, env: dict, health_url: str, timeout: float) -> None:
    if isinstance(cmd_or_err, str):
        t.reason = cmd_or_err
        print(f"[start] {t.label}: UNAVAILABLE - {t.reason}", flush=True)
        return
    t.proc = Proc(t.key, cmd_or_err, env)
    try:
        t.start_s = await wait_ready(t.proc, health_url, timeout)
        await asyncio.sleep(1.0)
        t.idle_rss = rss_bytes(t.proc.tree())
        await smoke(t)
        t.available = True
        t.peak_rss = t.idle_rss
        print(
            f"[start] {t.label}: ready in {t.start_s:.2f}s, idle RSS {t.idle_rss / 2**20:.1f} MB (pid {t.proc.pid})",
            flush=True,
        )
    except Exception as e:
        t.reason = str(e).strip() or type(e).__name__
        print(f"[start] {t.label}: UNAVAILABLE - {t.reason}", flush=True)
        t.proc.stop()


# ----------------------------------------------------------------------------- measurement


async def measure_cell(t: Target, cpu_proc: Proc, conc: int, stream: bool, a) -> dict:
    async with make_session(conc) as s:
        if a.warmup > 0:
            await run_load(
                s, t.base_url, t.model, stream=stream, concurrency=conc, duration=a.warmup, headers=t.headers, api=t.api
            )
        pids = cpu_proc.tree()
        peak = [rss_bytes(pids)]
        stop = asyncio.Event()

        async def sampler():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_bytes(pids))
                try:
                    await asyncio.wait_for(stop.wait(), 0.25)
                except TimeoutError:
                    pass

        samp = asyncio.create_task(sampler())
        c0 = cpu_seconds(pids)
        sys0, ours0 = system_busy_seconds(), our_cpu_seconds()
        if a.requests:
            res = await run_load(
                s,
                t.base_url,
                t.model,
                stream=stream,
                concurrency=conc,
                requests=a.requests,
                headers=t.headers,
                api=t.api,
            )
        else:
            res = await run_load(
                s,
                t.base_url,
                t.model,
                stream=stream,
                concurrency=conc,
                duration=a.duration,
                headers=t.headers,
                api=t.api,
            )
        c1 = cpu_seconds(pids)
        sys1, ours1 = system_busy_seconds(), our_cpu_seconds()
        stop.set()
        await samp
        peak[0] = max(peak[0], rss_bytes(pids))
    d = res.summary()
    d["cpu_s"] = round(c1 - c0, 3)
    d["cpu_ms_per_req"] = round((c1 - c0) * 1000 / res.ok, 4) if res.ok else None
    d["rss_mb"] = round(peak[0] / 2**20, 1)
    d["loadgen_and_servers_cpu_s"] = round(ours1 - ours0, 3)
    d["foreign_cpu_s"] = round(max(0.0, (sys1 - sys0) - (ours1 - ours0)), 3)  # other processes on the machine
    d["foreign_cpu_pct"] = round(100 * d["foreign_cpu_s"] / res.elapsed_s, 1) if res.elapsed_s else 0.0
    t.peak_rss = max(t.peak_rss, peak[0])
    return d


def _f(v, nd=2, sign=False):
    if v is None:
        return "—"
    return f"{v:+.{nd}f}" if sign else f"{v:.{nd}f}"


def table_rows(targets: list[Target], concs: list[int]) -> list[str]:
    hdr = "| conc | mode | target | req/s | p50 ms | p99 ms | +p50 ms | +p99 ms | errors | CPU s | CPU ms/req | RSS MB | other CPU % |"
    rows = [hdr, "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    direct = targets[0]
    for conc in concs:
        for mode in ("json", "stream"):
            base = direct.cells.get((conc, mode))
            for t in targets:
                c = t.cells.get((conc, mode))
                if c is None:
                    if not t.available:
                        rows.append(f"| {conc} | {mode} | {t.label} | unavailable | | | | | | | | | |")
                    continue
                add50 = add99 = None
                if t is not direct and base and base["p50_ms"] is not None and c["p50_ms"] is not None:
                    add50 = c["p50_ms"] - base["p50_ms"]
                    add99 = c["p99_ms"] - base["p99_ms"]
                rows.append(
                    f"| {conc} | {mode} | {t.label} | {c['rps']:.0f} | {_f(c['p50_ms'])} | {_f(c['p99_ms'])} | "
                    f"{_f(add50, sign=True)} | {_f(add99, sign=True)} | {c['errors']} | {c['cpu_s']:.2f} | "
                    f"{_f(c['cpu_ms_per_req'], 3)} | {c['rss_mb']:.0f} | {c['foreign_cpu_pct']:.0f} |"
                )
    return rows


async def responses_target(router: Target) -> Target:
    """The same tier-router process, driven over /v1/responses (translated to chat upstream)."""
    t = Target("router-responses", "tier-router /v1/responses", router.base_url, router.model, api="responses")
    t.version, t.proc, t.reason = router.version, router.proc, router.reason
    if router.available:
        try:
            await smoke(t)
            t.available, t.start_s, t.idle_rss, t.peak_rss = True, router.start_s, router.idle_rss, router.idle_rss or 0
        except Exception as e:
            t.reason = str(e).strip() or type(e).__name__
            print(f"[start] {t.label}: UNAVAILABLE - {t.reason}", flush=True)
    return t


def responses_rows(targets: list[Target], concs: list[int]) -> list[str]:
    """/v1/responses vs /v1/chat/completions on tier-router: the proxy overhead (target minus
    direct, p50) and CPU per request, and their ratios (issue 11: at most 1.3x)."""
    by_key = {t.key: t for t in targets}
    direct, chat, resp = by_key.get("direct"), by_key.get("router"), by_key.get("router-responses")
    if not (direct and chat and resp and chat.available and resp.available):
        return []
    rows = [
        "| conc | mode | chat +p50 ms | responses +p50 ms | ratio | chat CPU ms/req | responses CPU ms/req | ratio |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for conc in concs:
        for mode in ("json", "stream"):
            base, c, r = (t.cells.get((conc, mode)) for t in (direct, chat, resp))
            if not (base and c and r) or None in (base["p50_ms"], c["p50_ms"], r["p50_ms"]):
                continue
            over_c, over_r = c["p50_ms"] - base["p50_ms"], r["p50_ms"] - base["p50_ms"]
            cpu_c, cpu_r = c["cpu_ms_per_req"], r["cpu_ms_per_req"]
            rows.append(
                f"| {conc} | {mode} | {_f(over_c)} | {_f(over_r)} | {_f(over_r / over_c if over_c > 0 else None)} | "
                f"{_f(cpu_c, 3)} | {_f(cpu_r, 3)} | {_f(cpu_r / cpu_c if cpu_c and cpu_r else None)} |"
            )
    return rows


def startup_rows(targets: list[Target]) -> list[str]:
    rows = [
        "| target | status | version | start s (spawn → health 200) | idle RSS MB | peak RSS MB |",
        "|---|---|---|---:|---:|---:|",
    ]
    for t in targets:
        if t.available:
            rows.append(
                f"| {t.label} | ok | {t.version or '—'} | {_f(t.start_s)} | {t.idle_rss / 2**20:.1f} | {t.peak_rss / 2**20:.1f} |"
            )
        else:
            reason = " ".join(t.reason.split())[:300].replace("|", "\\|")
            rows.append(f"| {t.label} | unavailable: {reason} | {t.version or '—'} | — | — | — |")
    return rows


KEEP_MARKER = "<!-- Everything below this line is kept when benchmarks.run rewrites this file. -->"


def _kept_sections(path: Path) -> str:
    """The hand-written sections at the end of an existing results file (after KEEP_MARKER)."""
    try:
        text = path.read_text()
    except OSError:
        return ""
    _, marker, kept = text.partition(KEEP_MARKER)
    return "\n" + marker + kept if marker else ""


def write_results(path: Path, targets, concs, a, started: dt.datetime, wall_s: float) -> None:
    cmd = " ".join([".venv/bin/python -m benchmarks.run", *sys.argv[1:]])
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    mode_desc = f"{a.requests} requests" if a.requests else f"{a.duration:g} s"
    lines = [
        "# Proxy benchmark results",
        "",
        f"- Command: `{cmd}`",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M:%S %Z')} (run took {wall_s:.0f} s)",
        f"- Machine: {cpu}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}",
        f"- Per cell: {a.warmup:g} s warm-up, then {mode_desc} closed-loop at the given concurrency; "
        "targets measured in turn (direct, bare, tier-router, LiteLLM) within each cell.",
        "- Upstream: `benchmarks/fake_upstream.py`, zero latency; stream = role chunk + 11 content chunks + finish + usage + `[DONE]`.",
        "- `+p50`/`+p99` = target percentile minus the direct-to-upstream percentile in the same cell.",
        "- CPU s / RSS = user+sys CPU time during the measured window / peak RSS of the proxy process tree "
        "(for *direct*: of the fake upstream). Load generator, upstream and proxy share the same cores.",
        "- `other CPU %` = CPU used by processes outside this benchmark during the window (100 % = one core): "
        "a noise indicator; cells with a high value are unreliable.",
        "",
        "## Throughput and latency",
        "",
        *table_rows(targets, concs),
        "",
        "## Startup and memory",
        "",
        *startup_rows(targets),
        "",
    ]
    if compared := responses_rows(targets, concs):
        lines += [
            "## /v1/responses vs /v1/chat/completions (tier-router, same exchange, `store: false`)",
            "",
            *compared,
            "",
        ]
    path.write_text("\n".join(lines) + _kept_sections(path))
    raw = {
        "command": cmd,
        "date": started.isoformat(),
        "args": vars(a),
        "targets": {
            t.key: {
                "label": t.label,
                "available": t.available,
                "reason": t.reason,
                "version": t.version,
                "start_s": t.start_s,
                "idle_rss_mb": round(t.idle_rss / 2**20, 1) if t.idle_rss else None,
                "peak_rss_mb": round(t.peak_rss / 2**20, 1) if t.peak_rss else None,
                "cells": {f"c{k[0]}-{k[1]}": v for k, v in t.cells.items()},
            }
            for t in targets
        },
    }
    path.with_name("results.json").write_text(json.dumps(raw, indent=1))


# ----------------------------------------------------------------------------- main


async def amain(a) -> int:
    started = dt.datetime.now().astimezone()
    t_run = time.perf_counter()
    concs = a.concurrency
    up_port, bare_port, router_port, fastapi_port, litellm_port = (free_port() for _ in range(5))
    upstream_v1 = f"http://127.0.0.1:{up_port}/v1"
    env_common = {"PYTHONUNBUFFERED": "1", "BENCH_UPSTREAM_URL": upstream_v1}
    if not a.no_bytecode_cache:
        env_common |= {"PYTHONPYCACHEPREFIX": str(PYCACHE), "PYTHONDONTWRITEBYTECODE": ""}
        t0 = time.perf_counter()
        dirs = (
            site_packages(Path(sys.executable))
            + [str(BENCH)]
            + ([str(REPO / "router")] if (REPO / "router").is_dir() else [])
        )
        await asyncio.to_thread(precompile, Path(sys.executable), dirs)
        print(
            f"[setup] bytecode cache ready in {time.perf_counter() - t0:.1f}s ({PYCACHE.relative_to(REPO)})", flush=True
        )

    # -- fake upstream (the "direct" target; a hard requirement)
    direct = Target("direct", "direct (fake upstream)", upstream_v1, "gpt-4o-mini", version="—")
    up = Proc("fake_upstream", [sys.executable, "-m", "benchmarks.fake_upstream", "--port", str(up_port)], env_common)
    direct.proc = up
    direct.start_s = await wait_ready(up, f"http://127.0.0.1:{up_port}/healthz", 15)
    direct.idle_rss = direct.peak_rss = rss_bytes(up.tree())
    await smoke(direct)
    direct.available = True
    print(f"[start] fake upstream: ready in {direct.start_s:.2f}s on {upstream_v1}", flush=True)

    targets = [direct]

    # -- bare proxy
    bare = Target("bare", "bare proxy (Starlette+aiohttp)", f"http://127.0.0.1:{bare_port}/v1", "gpt-4o-mini")
    bare.version = "starlette " + _pkg_version(Path(sys.executable), "starlette")
    await start_target(
        bare,
        [sys.executable, "-m", "benchmarks.bare_proxy", "--port", str(bare_port), "--upstream", upstream_v1],
        env_common,
        f"http://127.0.0.1:{bare_port}/healthz",
        30,
    )
    targets.append(bare)

    # -- tier-router
    if not a.skip_router:
        router = Target("router", "tier-router", f"http://127.0.0.1:{router_port}/v1", "standard")
        exe = VENV_BIN / "router"
        if exe.exists():
            router.version = _pkg_version(Path(sys.executable), "tier-router")
            cmd = [
                str(exe),
                "serve",
                "--policy",
                "benchmarks/policy.yaml",
                "--host",
                "127.0.0.1",
                "--port",
                str(router_port),
                "--workers",
                "1",
            ]
        else:
            cmd = f"{exe.relative_to(REPO) if exe.is_relative_to(REPO) else exe} not found (tier-router not installed yet)"
        await start_target(
            router,
            cmd,
            {**env_common, "ROUTER_LOG_LEVEL": "warning"},
            f"http://127.0.0.1:{router_port}/healthz",
            a.router_timeout,
        )
        targets.append(router)
        if a.responses:
            targets.append(await responses_target(router))

    # -- tier-router as a FastAPI application (issue 10, item 7): same routes and middleware
    if a.fastapi and not a.skip_router:
        fast = Target("fastapi", "tier-router (FastAPI app)", f"http://127.0.0.1:{fastapi_port}/v1", "standard")
        fast.version = _pkg_version(Path(sys.executable), "fastapi")
        cmd = (
            [sys.executable, "-m", "benchmarks.fastapi_app"]
            if fast.version
            else "fastapi is not installed in this venv (make install-dev)"
        )
        fenv = {
            **env_common,
            "ROUTER_LOG_LEVEL": "warning",
            "ROUTER_POLICY": "benchmarks/policy.yaml",
            "ROUTER_HOST": "127.0.0.1",
            "ROUTER_PORT": str(fastapi_port),
        }
        await start_target(fast, cmd, fenv, f"http://127.0.0.1:{fastapi_port}/healthz", a.router_timeout)
        targets.append(fast)

    # -- LiteLLM proxy
    if not a.skip_litellm:
        lite = Target("litellm", "LiteLLM proxy", f"http://127.0.0.1:{litellm_port}/v1", "bench-model")
        try:
            cli = await asyncio.to_thread(ensure_litellm)
            if not a.no_bytecode_cache:
                lpy = LITELLM_VENV / "bin" / "python"
                await asyncio.to_thread(precompile, lpy, site_packages(lpy))
            lite.version = _pkg_version(LITELLM_VENV / "bin" / "python", "litellm")
            master_key = "sk-" + secrets.token_hex(24)  # LiteLLM refuses to start without a strong master key
            lite.headers = {"Authorization": f"Bearer {master_key}"}
            cfg = litellm_config(upstream_v1, master_key)
            cmd = [
                str(cli),
                "--config",
                str(cfg),
                "--host",
                "127.0.0.1",
                "--port",
                str(litellm_port),
                "--num_workers",
                "1",
            ]
        except Exception as e:
            cmd = f"install failed: {e}"
        lenv = {
            **env_common,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_TELEMETRY": "False",
            "LITELLM_LOG": "ERROR",
            "LITELLM_MODE": "PRODUCTION",
            "VIRTUAL_ENV": str(LITELLM_VENV),
            "PATH": f"{LITELLM_VENV / 'bin'}:{os.environ.get('PATH', '')}",
        }
        await start_target(lite, cmd, lenv, f"http://127.0.0.1:{litellm_port}/health/liveliness", a.litellm_timeout)
        targets.append(lite)

    # -- interleaved measurement
    live = [t for t in targets if t.available]
    n_cells = len(concs) * 2 * len(live)
    per = a.warmup + (a.duration if not a.requests else 0) + 0.3
    print(f"[run] {n_cells} cells, ~{n_cells * per:.0f}s" if not a.requests else f"[run] {n_cells} cells", flush=True)
    print(
        f"{'conc':>5} {'mode':<6} {'target':<32} {'req/s':>8} {'p50ms':>8} {'p99ms':>8} {'+p50':>7} {'+p99':>7} {'err':>5} {'cpu_s':>6} {'rssMB':>6} {'other%':>6}",
        flush=True,
    )
    for conc in concs:
        for mode in ("json", "stream"):
            for t in live:
                if not t.available:
                    continue
                if t.proc.popen.poll() is not None:
                    t.available = False
                    t.reason = f"died (exit {t.proc.popen.returncode}) during the run:\n{t.proc.log_tail()}"
                    print(f"[run] {t.label}: {t.reason}", flush=True)
                    continue
                # Other work on the machine skews a cell: re-measure it (bounded), keep the quietest try.
                c = None
                for attempt in range(a.max_retries + 1):
                    if attempt:
                        print(
                            f"      (other processes used {c['foreign_cpu_pct']:.0f}% CPU; re-measuring, try {attempt + 1})",
                            flush=True,
                        )
                        await asyncio.sleep(1.0)
                    ci = await measure_cell(t, t.proc, conc, mode == "stream", a)
                    ci["attempts"] = attempt + 1
                    if c is None or ci["foreign_cpu_pct"] < c["foreign_cpu_pct"]:
                        c = ci
                    if c["foreign_cpu_pct"] <= a.noise_threshold:
                        break
                t.cells[(conc, mode)] = c
                base = direct.cells.get((conc, mode))
                add50 = add99 = None
                if t is not direct and base and c["p50_ms"] is not None and base["p50_ms"] is not None:
                    add50, add99 = c["p50_ms"] - base["p50_ms"], c["p99_ms"] - base["p99_ms"]
                print(
                    f"{conc:>5} {mode:<6} {t.label:<32} {c['rps']:>8.0f} {_f(c['p50_ms']):>8} {_f(c['p99_ms']):>8} "
                    f"{_f(add50, sign=True):>7} {_f(add99, sign=True):>7} {c['errors']:>5} {c['cpu_s']:>6.2f} {c['rss_mb']:>6.0f} {c['foreign_cpu_pct']:>6.0f}",
                    flush=True,
                )
                if c["errors"]:
                    print(f"      errors: {c['error_samples']}", flush=True)
                await asyncio.sleep(0.3)

    wall = time.perf_counter() - t_run
    out = Path(a.output)
    write_results(out, targets, concs, a, started, wall)
    print()
    print("\n".join(table_rows(targets, concs)))
    print()
    print("\n".join(startup_rows(targets)))
    if compared := responses_rows(targets, concs):
        print()
        print("\n".join(compared))
    print(f"\n[done] wrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out} in {wall:.0f}s", flush=True)
    return 0


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="concurrency 1 and 32 only, 2 s cells, 0.5 s warm-up")
    ap.add_argument("--skip-litellm", action="store_true", help="do not install/start the LiteLLM proxy")
    ap.add_argument("--skip-router", action="store_true", help="do not start tier-router")
    ap.add_argument(
        "--fastapi",
        action="store_true",
        help="also measure tier-router with FastAPI as the application object (needs fastapi installed)",
    )
    ap.add_argument("--duration", type=float, default=None, help="seconds measured per cell (default 5; --quick 2)")
    ap.add_argument("--requests", type=int, default=None, help="fixed request count per cell instead of --duration")
    ap.add_argument("--warmup", type=float, default=None, help="warm-up seconds per cell (default 1; --quick 0.5)")
    ap.add_argument(
        "--concurrency",
        type=lambda s: [int(x) for x in s.split(",")],
        default=None,
        help="comma list (default 1,8,32,128; --quick 1,32)",
    )
    ap.add_argument("--router-timeout", type=float, default=30.0, help="tier-router startup timeout (s)")
    ap.add_argument("--litellm-timeout", type=float, default=90.0, help="LiteLLM startup timeout (s)")
    ap.add_argument(
        "--noise-threshold",
        type=float,
        default=25.0,
        help="re-measure a cell when processes outside the benchmark used more than this %% of a core (default 25)",
    )
    ap.add_argument("--max-retries", type=int, default=2, help="re-measurements per noisy cell (default 2)")
    ap.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="do not precompile into benchmarks/.pycache; run servers with the environment as is",
    )
    ap.add_argument(
        "--responses",
        action="store_true",
        help="also drive tier-router over /v1/responses (translated to the chat upstream) and compare with chat",
    )
    ap.add_argument("--output", default=str(BENCH / "RESULTS.md"))
    a = ap.parse_args(argv)
    if a.duration is None:
        a.duration = 2.0 if a.quick else 5.0
    a.duration = min(max(a.duration, 0.2), 60.0)  # keep every cell bounded
    if a.warmup is None:
        a.warmup = 0.5 if a.quick else 1.0
    if a.concurrency is None:
        a.concurrency = [1, 32] if a.quick else [1, 8, 32, 128]
    return a


def main(argv=None) -> int:
    a = parse_args(argv)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C even if started with SIGINT ignored
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        return runner(amain(a))
    except KeyboardInterrupt:
        print("\n[abort] interrupted, stopping servers", file=sys.stderr, flush=True)
        return 130
    finally:
        Proc.stop_all()


if __name__ == "__main__":
    sys.exit(main())
