"""The model table ``router check`` prints."""

from __future__ import annotations

from router.policy.model import Policy

COLUMNS = ("model", "tier", "provider", "kind", "in $/1M", "out $/1M", "context", "capabilities", "status")


def models_table(policy: Policy) -> str:
    rows = [COLUMNS]
    for model in sorted(policy.models.values(), key=lambda m: (m.tier_rank, m.price.input + m.price.output, m.name)):
        provider = policy.providers[model.provider]
        rows.append(
            (
                model.name,
                model.tier,
                f"{provider.name} ({provider.type})",
                model.kind,
                f"{model.price.input:g}",
                f"{model.price.output:g}",
                str(model.context_window),
                ",".join(sorted(model.capabilities)) or "-",
                "enabled" if provider.enabled else f"disabled: {provider.disabled_reason}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
