"""How fast ``router simulate`` replays an access log, and that its memory stays flat.

    .venv/bin/python -m benchmarks.simulate_bench [--lines 100000] [--no-write]

Writes access-log lines shaped as ``router serve`` writes them (every routed field, other log
lines mixed in) for ``policies/demo.yaml``'s routes, then times ``python -m router simulate``
on them (one policy, then ``--compare`` with ``policies/always-frontier.yaml``), as separate
processes, each with its peak RSS; the same on a tenth of the lines shows memory does not grow
with the input. Writes a section of benchmarks/RESULTS.md (replacing its previous version).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "RESULTS.md"
BEGIN, END = "<!-- simulate-bench:begin -->", "<!-- simulate-bench:end -->"
ROUTES = ("standard", "standard", "cheap-chat", "auto", "frontier", "small")
TEAMS = ("web", "support", "research", "data")


def access_line(rng: random.Random, number: int) -> dict[str, Any]:
    route = rng.choice(ROUTES)
    embeddings = rng.random() < 0.08
    prompt = int(rng.lognormvariate(6.5, 1.3))
    team = rng.choice(TEAMS)
    return {
        "time": "2026-12-01 12:00:00,000",
        "level": "INFO",
        "logger": "router.access",
        "message": "request",
        "request_id": f"req_{number:024x}",
        "method": "POST",
        "path": "/v1/embeddings" if embeddings else "/v1/chat/completions",
        "status": 200,
        "latency_s": 0.4,
        "operation": "embeddings" if embeddings else "chat",
        "route": "standard" if embeddings else route,
        "tier": "standard",
        "team": team,
        "key": f"{team}-app",
        "estimated_prompt_tokens": prompt,
        "max_output_tokens": rng.choice((None, 256, 1024)),
        "n": 1,
        "needs": ["tools"] if rng.random() < 0.1 else [],
        "headers": {"x-team": "research"} if team == "research" else {},
        "params": [],
        "model": "gpt-4o-mini",
        "provider": "openai",
        "stream": False,
        "attempts": 1,
        "input_tokens": prompt,
        "output_tokens": 0 if embeddings else rng.randint(10, 800),
        "cached_tokens": prompt // 3 if rng.random() < 0.3 else 0,
        "cost_usd": 0.0001,
        "cost_estimated": False,
        "ttft_s": None,
        "difficulty": round(rng.random(), 6) if route == "auto" and not embeddings else None,
        "outcome": "success",
        "error_type": "none",
    }


def write_log(path: Path, lines: int, seed: int = 11) -> None:
    rng = random.Random(seed)
    with path.open("w") as out:
        for number in range(lines):
            if number % 1000 == 0:
                out.write(json.dumps({"time": "…", "level": "INFO", "logger": "router.reload", "message": "x"}) + "\n")
            out.write(json.dumps(access_line(rng, number), separators=(",", ":")) + "\n")


def run(log: Path, *extra: str) -> tuple[float, float]:
    """Seconds and peak RSS (MiB) of one ``router simulate`` process (its own rusage, by wait4)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "router", "simulate", "--policy", "policies/demo.yaml", *extra, str(log)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        assert process.stderr is not None
        raise SystemExit(f"router simulate failed:\n{process.stderr.read().decode()}")
    return elapsed, usage.ru_maxrss / 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        small, large = Path(directory, "small.jsonl"), Path(directory, "large.jsonl")
        write_log(small, args.lines // 10)
        write_log(large, args.lines)
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        for label, extra in (
            ("one policy", ()),
            ("--compare always-frontier", ("--compare", "policies/always-frontier.yaml")),
        ):
            small_s, small_rss = run(small, *extra)
            large_s, large_rss = run(large, *extra)
            rows.append((label, small_s, small_rss, large_s, large_rss))
        size_mb = large.stat().st_size / 2**20
    lines = [
        BEGIN,
        "## Policy simulator (`router simulate` on an access log)",
        "",
        f"- Command: `.venv/bin/python -m benchmarks.simulate_bench` ({args.lines:,} access-log lines, "
        f"{size_mb:.0f} MiB, shaped as `router serve` writes them, a non-access log line every 1,000; "
        "policy `policies/demo.yaml`, escalating route included)",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; load average {load} "
        "on the shared 2-core machine",
        "- Each figure is one `python -m router simulate` process, start-up (imports, policy load) included; "
        "peak RSS is the process's maximum resident set. The input is streamed a line at a time: "
        "memory does not grow with the number of lines.",
        "",
        f"| run | {args.lines // 10:,} lines: s | peak RSS MiB | {args.lines:,} lines: s | peak RSS MiB | lines/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, small_s, small_rss, large_s, large_rss in rows:
        lines.append(
            f"| {label} | {small_s:.1f} | {small_rss:.0f} | {large_s:.1f} | {large_rss:.0f} | "
            f"{args.lines / large_s:,.0f} |"
        )
    lines.append(END)
    section = "\n".join(lines)
    print(section)
    if not args.no_write:
        text = RESULTS.read_text()
        if BEGIN in text:
            text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :]
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
