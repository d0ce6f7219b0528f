"""A simulation as text: a terminal table or Markdown for a pull-request comment."""

from __future__ import annotations

from collections.abc import Sequence

from router.simulate import Bucket, Simulation, Totals

BREAKDOWNS = (("route", "by_route"), ("team", "by_team"), ("tier", "by_tier"), ("model", "by_model"))
BUCKET_COLUMNS = ("requests", "input tokens", "output tokens", "cost USD")


def render(simulation: Simulation, markdown: bool) -> str:
    parts = [_policy_section(totals, markdown) for totals in simulation.totals]
    if len(simulation.totals) > 1:
        parts.append(_comparison(simulation, markdown))
    if simulation.malformed:
        parts.append(f"{simulation.malformed} malformed line(s) skipped (listed on stderr)")
    return "\n\n".join(parts) + "\n"


def _policy_section(totals: Totals, markdown: bool) -> str:
    unroutable = sum(totals.unroutable.values())
    reasons = ", ".join(f"{code} {count}" for code, count in totals.unroutable.most_common())
    summary = [
        ("requests", f"{totals.requests:,}"),
        ("unroutable", f"{unroutable:,}" + (f" ({reasons})" if reasons else "")),
        ("estimated usage", f"{totals.estimated_usage:,}"),
        ("cost", _usd(totals.cost_usd)),
        ("baseline cost", _usd(totals.baseline_cost_usd)),
        ("savings", f"{_usd(totals.savings_usd)} ({totals.savings_percent:.1f} %)"),
    ]
    title = f"### Policy `{totals.policy}`" if markdown else f"policy {totals.policy}"
    lines = [title, "", _table(("", ""), summary, markdown, header=False)]
    for label, attribute in BREAKDOWNS:
        buckets: dict[str, Bucket] = getattr(totals, attribute)
        rows = [
            (name, f"{b.requests:,}", f"{b.input_tokens:,}", f"{b.output_tokens:,}", _usd(b.cost_usd))
            for name, b in sorted(buckets.items(), key=lambda item: (-item[1].cost_usd, -item[1].requests, item[0]))
        ]
        lines += ["", _table((f"by {label}", *BUCKET_COLUMNS), rows, markdown)]
    return "\n".join(lines)


def _comparison(simulation: Simulation, markdown: bool) -> str:
    before, after = simulation.totals[0], simulation.totals[1]
    increase = simulation.cost_increase_percent()
    change = "n/a" if increase is None or increase == float("inf") else f"{increase:+.1f} %"
    deltas = [
        ("cost", _usd(before.cost_usd), _usd(after.cost_usd), _signed_usd(after.cost_usd - before.cost_usd), change),
        (
            "savings",
            _usd(before.savings_usd),
            _usd(after.savings_usd),
            _signed_usd(after.savings_usd - before.savings_usd),
            "",
        ),
        (
            "unroutable",
            str(sum(before.unroutable.values())),
            str(sum(after.unroutable.values())),
            f"{sum(after.unroutable.values()) - sum(before.unroutable.values()):+d}",
            "",
        ),
    ]
    title = (
        f"### `{after.policy}` compared with `{before.policy}`" if markdown else f"{after.policy} vs {before.policy}"
    )
    moves = [
        (
            row["from"],
            row["to"],
            f"{row['requests']:,}",
            _usd(row["cost_usd_before"]),
            _usd(row["cost_usd_after"]),
            _signed_usd(row["cost_delta_usd"]),
        )
        for row in simulation.moves.to_json()
    ]
    lines = [title, "", _table(("", before.policy, after.policy, "delta", "change"), deltas, markdown)]
    lines += ["", _table(("moved from", "to", "requests", "cost before", "cost after", "delta"), moves, markdown)]
    if not moves:
        lines.append("no request changes model")
    return "\n".join(lines)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool, header: bool = True) -> str:
    if markdown:
        head = headers if header else ("", "")
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    shown = [tuple(headers), *rows] if header else list(rows)
    widths = [max(len(row[i]) for row in shown) for i in range(len(shown[0]))] if shown else []
    out = []
    for row in shown:
        cells = [row[0].ljust(widths[0]), *(cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True))]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def _usd(value: float) -> str:
    return f"${value:,.4f}"


def _signed_usd(value: float) -> str:
    return f"{'+' if value >= 0 else '-'}${abs(value):,.4f}"
