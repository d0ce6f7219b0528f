"""Held-out evaluation of the difficulty predictor, plus its scoring latency and memory.

    .venv/bin/python -m benchmarks.difficulty_eval [--data PATH] [--no-write]

Splits the shared outcomes file by MMLU subject (5 folds of whole subjects) and GSM8K by row
(it is a single domain: a row split is the only split there), trains on the other folds with
the training script's own code, and reports on what was held out: APGR and the share of strong
calls needed to keep 95 % of the strong model's accuracy, next to a random router and to
RouteLLM's published figures. Then measures, in a fresh process, the RSS the loaded predictor
adds and the scoring latency of a 2,000-token conversation. Writes a section of
benchmarks/RESULTS.md (replacing its previous version).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import train_difficulty as training  # noqa: E402

RESULTS = REPO / "benchmarks" / "RESULTS.md"
BEGIN = "<!-- difficulty-eval:begin -->"
END = "<!-- difficulty-eval:end -->"
ROUTELLM = {"mmlu_held_out_subjects": "≈ 45 %", "gsm8k_held_out_rows": "≈ 35 %"}
LABELS = {"mmlu_held_out_subjects": "MMLU, held-out subjects", "gsm8k_held_out_rows": "GSM8K, held-out rows"}

MEASURE = r"""
import json, sys, time
def rss_kib():
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1])
import router.app  # the process as it serves
before = rss_kib()
start = time.perf_counter()
from router.difficulty import load_predictor
predictor = load_predictor()
load_s = time.perf_counter() - start
from router.difficulty import embedding
sentence = ("Each of the 14 crates holds 36 boxes of 12 widgets; after selling 3/8 of them at $4.50 each, "
            "the shop restocks 25% more than it sold. ")
turn = sentence * 55
messages = [{"role": "system", "content": "You are a careful assistant."},
            {"role": "user", "content": sentence * 4}, {"role": "assistant", "content": sentence * 4},
            {"role": "user", "content": turn}]
tokens = sum(len(embedding.token_ids(predictor._tokenizer, m["content"])) for m in messages)
for _ in range(200):
    predictor.score(messages)
times = []
for _ in range(3000):
    t = time.perf_counter_ns(); predictor.score(messages); times.append(time.perf_counter_ns() - t)
times.sort()
after = rss_kib()
print(json.dumps({"tokens": tokens, "p50_ms": times[len(times) // 2] / 1e6, "p99_ms": times[int(len(times) * 0.99)] / 1e6,
                  "rss_delta_mib": (after - before) / 1024, "load_s": load_s}))
"""


def measure_runtime() -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", MEASURE], capture_output=True, text=True, check=True, cwd=REPO)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def random_router_simulated(weak: np.ndarray, strong: np.ndarray, runs: int = 200) -> dict[str, float]:
    rng = np.random.RandomState(0)
    figures = [training.routing_metrics(rng.rand(len(weak)), weak, strong) for _ in range(runs)]
    return {key: float(np.mean([f[key] for f in figures])) for key in ("apgr", "strong_share_for_95pct")}


def evaluate(data_path: Path) -> dict[str, dict[str, float]]:
    data = training.featurise(training.read_rows(data_path))
    gain = training.out_of_fold_gain(data, training.fold_of(data))
    report = {}
    for name, rows in (
        ("mmlu_held_out_subjects", data.source == "mmlu"),
        ("gsm8k_held_out_rows", data.source != "mmlu"),
    ):
        ours = training.routing_metrics(gain[rows], data.weak[rows], data.strong[rows])
        rand = random_router_simulated(data.weak[rows], data.strong[rows])
        report[name] = {**ours, "random_apgr": rand["apgr"], "random_share": rand["strong_share_for_95pct"]}
    return report


def markdown(report: dict[str, dict[str, float]], runtime: dict[str, float], took_s: float) -> str:
    pct = "{:.1%}".format
    lines = [
        BEGIN,
        "## Difficulty predictor (held-out evaluation)",
        "",
        "- Command: `.venv/bin/python -m benchmarks.difficulty_eval` (trains and scores "
        f"{training.FOLDS} folds; took {took_s:.0f} s on a shared 2-core machine)",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}",
        "- Data: only `outcomes_train.csv` from shared/ (42 MMLU subjects, half of GSM8K; Mixtral-8x7B "
        "vs gpt-4-1106-preview). RouteLLM's other outcome data was not fetched nor used.",
        f"- Split: MMLU by subject ({training.FOLDS} folds of whole subjects, every score is on subjects the "
        "model never saw); GSM8K is one domain, so its folds are by row (the only split possible).",
        "- Score = expected gain P(weak wrong ∧ strong right) − P(weak right ∧ strong wrong) from two "
        "logistic heads on the WordLlama mean embedding + 36 counts; the shipped difficulty is this, "
        "calibrated to P(weak wrong ∧ strong right) (monotone, same ranking).",
        "- APGR: mean share of the weak→strong accuracy gap recovered as the strong-call share goes 0→100 %. "
        "Share @95 %: fewest strong calls whose accuracy is ≥ 95 % of the strong model's. Random router: "
        "mean of 200 random orderings. RouteLLM: its best routers' published cost figures (arXiv 2406.18665; "
        "MT-Bench ≈ 14 %, i.e. > 85 % lower cost — no MT-Bench data here, so not evaluated).",
        "",
        "| held-out set | prompts | weak acc | strong acc | APGR (ours) | APGR (random) | strong share @95 % (ours) "
        "| random | RouteLLM published |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in report.items():
        lines.append(
            f"| {LABELS[name]} | {int(r['prompts'])} | {pct(r['weak_accuracy'])} | {pct(r['strong_accuracy'])} "
            f"| {r['apgr']:.3f} | {r['random_apgr']:.3f} | {pct(r['strong_share_for_95pct'])} "
            f"| {pct(r['random_share'])} | {ROUTELLM[name]} |"
        )
    lines += [
        "",
        f"Scoring a {int(runtime['tokens'])}-token conversation (system + 3 turns; one process, 3,000 runs "
        f"after 200 warm-up): p50 {runtime['p50_ms']:.3f} ms, p99 {runtime['p99_ms']:.3f} ms. Loading the "
        f"predictor took {runtime['load_s']:.2f} s and added {runtime['rss_delta_mib']:.1f} MiB RSS to a process "
        "that had imported `router.app` (numpy, tokenizers, the 2 × 32,000 token table).",
        END,
    ]
    return "\n".join(lines) + "\n"


def write_section(section: str) -> None:
    text = RESULTS.read_text(encoding="utf-8")
    if BEGIN in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=training.DEFAULT_DATA)
    parser.add_argument("--no-write", action="store_true", help="print the section, leave RESULTS.md alone")
    args = parser.parse_args()
    start = time.monotonic()
    report = evaluate(args.data)
    runtime = measure_runtime()
    section = markdown(report, runtime, time.monotonic() - start)
    print(section)
    if not args.no_write:
        write_section(section)


if __name__ == "__main__":
    main()
