"""Build ``dashboards/router.json`` (Grafana 11, schemaVersion 39) from the panel list below.

    python deploy/grafana/build_dashboard.py

Run it after editing and commit both files. tests/test_observability.py checks that the
committed JSON is this script's output, that every query uses only the metric names of the
product contract, and that every query returns data from a real Prometheus scraping a router
that served traffic (with ``$__rate_interval``/``$__interval`` read as 1m and ``$__range`` as 1h).
"""

from __future__ import annotations

import json
from pathlib import Path

RATE = "$__rate_interval"
RANGE = "$__range"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
DATASOURCE_UID = "prometheus"  # provisioning/datasources/prometheus.yml


def q(expr: str, legend: str = "__auto", *, instant: bool = False) -> dict:
    target = {"expr": expr, "legendFormat": legend}
    if instant:
        target.update(instant=True, range=False)
    return target


def rate(selector: str, by: str) -> str:
    return f"sum by ({by}) (rate({selector}[{RATE}]))"


def ratio_or_zero(failed: str, every: str, by: str) -> str:
    """Failed / all per group; 0 (not nothing) for groups without failures."""
    return f"({rate(failed, by)} or 0 * {rate(every, by)}) / clamp_min({rate(every, by)}, 1e-9)"


def quantiles(
    metric: str, by: str, legend: str, levels: tuple[float, ...] = (0.5, 0.95), matcher: str = ""
) -> list[dict]:
    return [
        q(
            f"histogram_quantile({level}, sum by (le, {by}) (rate({metric}_bucket{matcher}[{RATE}])))",
            f"p{round(level * 100)} {legend}",
        )
        for level in levels
    ]


# Shadow verdicts on the cheaper answer: held = better or same; judged = every verdict but error.
HELD = 'router_shadow_verdicts_total{verdict=~"better|same"}'
JUDGED = 'router_shadow_verdicts_total{verdict=~"better|same|worse"}'

CIRCUIT_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "0": {"text": "closed", "color": "green", "index": 0},
            "1": {"text": "half-open", "color": "yellow", "index": 1},
            "2": {"text": "open", "color": "red", "index": 2},
        },
    }
]

# Rows of panels: (row title, panel width out of 24, [(title, panel type, unit, targets, extra fieldConfig defaults)]).
ROWS: list[tuple[str, int, list[tuple[str, str, str, list[dict], dict]]]] = [
    (
        "Traffic",
        8,
        [
            (
                "Requests per second by route",
                "timeseries",
                "reqps",
                [q(rate("router_requests_total", "route"), "{{route}}")],
                {},
            ),
            (
                "Requests per second by model",
                "timeseries",
                "reqps",
                [q(rate("router_requests_total", "model"), "{{model}}")],
                {},
            ),
            (
                "Tier mix (answered requests in range)",
                "piechart",
                "short",
                [
                    q(
                        f'sum by (tier) (increase(router_requests_total{{outcome="success"}}[{RANGE}]))',
                        "{{tier}}",
                        instant=True,
                    )
                ],
                {},
            ),
            (
                "Error rate by route (all non-success outcomes)",
                "timeseries",
                "percentunit",
                [
                    q(
                        ratio_or_zero('router_requests_total{outcome!="success"}', "router_requests_total", "route"),
                        "{{route}}",
                    )
                ],
                {},
            ),
            (
                "Failed requests per second by route and outcome",
                "timeseries",
                "reqps",
                [q(rate('router_requests_total{outcome!="success"}', "route, outcome"), "{{route}} {{outcome}}")],
                {},
            ),
            (
                "Upstream error rate by model (share of attempts)",
                "timeseries",
                "percentunit",
                [
                    q(
                        ratio_or_zero(
                            'gen_ai_client_operation_duration_seconds_count{error_type!="none"}',
                            "gen_ai_client_operation_duration_seconds_count",
                            "gen_ai_response_model",
                        ),
                        "{{gen_ai_response_model}}",
                    )
                ],
                {},
            ),
        ],
    ),
    (
        "Cost and savings",
        8,
        [
            (
                "Cost per hour by tier",
                "timeseries",
                "currencyUSD",
                [q(f"{rate('router_cost_usd_total', 'tier')} * 3600", "{{tier}}")],
                {},
            ),
            (
                "Cost per hour by model",
                "timeseries",
                "currencyUSD",
                [q(f"{rate('router_cost_usd_total', 'model')} * 3600", "{{model}}")],
                {},
            ),
            (
                "Cost per hour by team",
                "timeseries",
                "currencyUSD",
                [q(f"{rate('router_cost_usd_total', 'team')} * 3600", "{{team}}")],
                {},
            ),
            (
                "Spend in range",
                "stat",
                "currencyUSD",
                [
                    q(f"sum(increase(router_cost_usd_total[{RANGE}]))", "total", instant=True),
                    q(
                        f'sum(increase(router_cost_usd_total{{estimated="true"}}[{RANGE}]))',
                        "from estimated usage",
                        instant=True,
                    ),
                ],
                {"decimals": 2},
            ),
            (
                "Saved against the baseline model in range",
                "stat",
                "currencyUSD",
                [
                    q(f"sum(increase(router_savings_usd_total[{RANGE}]))", "saved", instant=True),
                ],
                {"decimals": 2},
            ),
            (
                "Savings share (saved / cost on the baseline model)",
                "stat",
                "percentunit",
                [
                    q(
                        f"sum(increase(router_savings_usd_total[{RANGE}])) / clamp_min(sum(increase(router_savings_usd_total[{RANGE}])) + sum(increase(router_cost_usd_total[{RANGE}])), 1e-9)",
                        "saved",
                        instant=True,
                    ),
                ],
                {"decimals": 1},
            ),
            (
                "Savings, cumulative since replica start",
                "timeseries",
                "currencyUSD",
                [q("sum(router_savings_usd_total)", "saved")],
                {},
            ),
            (
                "Savings per hour by route",
                "timeseries",
                "currencyUSD",
                [q(f"{rate('router_savings_usd_total', 'route')} * 3600", "{{route}}")],
                {},
            ),
            (
                "Savings per hour by team",
                "timeseries",
                "currencyUSD",
                [q(f"{rate('router_savings_usd_total', 'team')} * 3600", "{{team}}")],
                {},
            ),
        ],
    ),
    (
        "Latency",
        12,
        [
            (
                "Request latency by model (end to end, answered)",
                "timeseries",
                "s",
                quantiles(
                    "gen_ai_server_request_duration_seconds",
                    "gen_ai_response_model",
                    "{{gen_ai_response_model}}",
                    matcher='{error_type="none"}',
                ),
                {},
            ),
            (
                "Time to first token by model (streams)",
                "timeseries",
                "s",
                quantiles(
                    "gen_ai_server_time_to_first_token_seconds", "gen_ai_response_model", "{{gen_ai_response_model}}"
                ),
                {},
            ),
            (
                "Upstream attempt duration by provider",
                "timeseries",
                "s",
                quantiles(
                    "gen_ai_client_operation_duration_seconds", "gen_ai_provider_name", "{{gen_ai_provider_name}}"
                ),
                {},
            ),
            (
                "Router overhead (excluding upstream time)",
                "timeseries",
                "s",
                quantiles("router_overhead_seconds", "route", "{{route}}", levels=(0.5, 0.99)),
                {},
            ),
        ],
    ),
    (
        "Tokens",
        8,
        [
            (
                "Tokens per second by model and type",
                "timeseries",
                "short",
                [q(rate("router_tokens_total", "model, type"), "{{model}} {{type}}")],
                {},
            ),
            (
                "Tokens per second by provider and type (upstream reported)",
                "timeseries",
                "short",
                [
                    q(
                        rate("gen_ai_client_token_usage_sum", "gen_ai_provider_name, gen_ai_token_type"),
                        "{{gen_ai_provider_name}} {{gen_ai_token_type}}",
                    )
                ],
                {},
            ),
            (
                "Tokens per upstream call (p50)",
                "timeseries",
                "short",
                [
                    q(
                        f"histogram_quantile(0.5, sum by (le, gen_ai_token_type) (rate(gen_ai_client_token_usage_bucket[{RATE}])))",
                        "{{gen_ai_token_type}}",
                    )
                ],
                {},
            ),
        ],
    ),
    (
        "Resilience",
        12,
        [
            (
                "Fallbacks per second",
                "timeseries",
                "reqps",
                [
                    q(
                        rate("router_fallbacks_total", "from_model, to_model, reason"),
                        "{{from_model}} → {{to_model}} ({{reason}})",
                    )
                ],
                {},
            ),
            (
                "Upstream errors per second by model and reason",
                "timeseries",
                "reqps",
                [q(rate("router_upstream_errors_total", "model, reason"), "{{model}} {{reason}}")],
                {},
            ),
            (
                "Circuit state by model",
                "state-timeline",
                "short",
                [q("max by (model, provider) (router_circuit_state)", "{{model}} ({{provider}})")],
                {
                    "mappings": CIRCUIT_MAPPINGS,
                    "color": {"mode": "thresholds"},
                    "thresholds": {
                        "mode": "absolute",
                        "steps": [
                            {"color": "green", "value": None},
                            {"color": "yellow", "value": 1},
                            {"color": "red", "value": 2},
                        ],
                    },
                },
            ),
            (
                "Requests waiting on an upstream, by provider",
                "timeseries",
                "short",
                [q("sum by (provider) (router_inflight_requests)", "{{provider}}")],
                {},
            ),
        ],
    ),
    (
        "Budgets and limits",
        12,
        [
            (
                "Budget rejections per second by team",
                "timeseries",
                "reqps",
                [q(rate("router_budget_rejections_total", "team"), "{{team}}")],
                {},
            ),
            (
                "Rate-limited requests per second by team",
                "timeseries",
                "reqps",
                [q(rate("router_rate_limited_total", "team"), "{{team}}")],
                {},
            ),
        ],
    ),
    (
        "Difficulty routing",
        12,
        [
            (
                "Tier mix of escalating routes (share of requests, by the tier the difficulty step chose)",
                "timeseries",
                "percentunit",
                [
                    q(
                        f"{rate('router_escalations_total', 'route, tier')} / ignoring (tier) group_left "
                        f"clamp_min({rate('router_escalations_total', 'route')}, 1e-9)",
                        "{{route}} → {{tier}}",
                    )
                ],
                {"custom": {"stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 60}, "max": 1},
            ),
            (
                "Predicted difficulty by route",
                "timeseries",
                "percentunit",
                quantiles("router_difficulty", "route", "{{route}}", levels=(0.5, 0.9)),
                {"max": 1, "min": 0},
            ),
        ],
    ),
    (
        "Quality held",
        8,
        [
            (
                "Judged at least as good as the reference, by route and model (shadow evaluation)",
                "timeseries",
                "percentunit",
                [
                    q(
                        f"({rate(HELD, 'route, model')} or 0 * {rate(JUDGED, 'route, model')})"
                        f" / ({rate(JUDGED, 'route, model')} > 0)",
                        "{{route}} {{model}}",
                    )
                ],
                {"max": 1, "min": 0},
            ),
            (
                "Shadow verdicts per second by verdict",
                "timeseries",
                "reqps",
                [q(rate("router_shadow_verdicts_total", "verdict"), "{{verdict}}")],
                {"custom": {"stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 60}},
            ),
            (
                "Shadow spend over the last 24 hours by route (its budget is the policy's shadow rule, not a metric)",
                "timeseries",
                "currencyUSD",
                [q("sum by (route) (increase(router_shadow_cost_usd_total[1d]))", "{{route}}")],
                {},
            ),
        ],
    ),
    (
        "Policy",
        12,
        [
            (
                "Policy reloads in range",
                "stat",
                "short",
                [q(f"sum by (result) (increase(router_policy_reloads_total[{RANGE}]))", "{{result}}", instant=True)],
                {"decimals": 0},
            ),
            (
                "Policy running on each replica",
                "table",
                "short",
                [q("max by (instance, sha256) (router_policy_info) == 1", "{{instance}} {{sha256}}", instant=True)],
                {},
            ),
        ],
    ),
]

PANEL_OPTIONS = {
    "timeseries": {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    },
    "piechart": {
        "legend": {"displayMode": "table", "placement": "right", "showLegend": True, "values": ["percent"]},
        "pieType": "donut",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "tooltip": {"mode": "single"},
    },
    "stat": {
        "colorMode": "none",
        "graphMode": "none",
        "justifyMode": "auto",
        "textMode": "value_and_name",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
    },
    "state-timeline": {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "mergeValues": True,
        "showValue": "auto",
        "rowHeight": 0.9,
    },
    "table": {"showHeader": True},
}
HEIGHT = 8


def build() -> dict:
    panels: list[dict] = []
    next_id, y = 1, 0
    for row_title, width, row_panels in ROWS:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id, y = next_id + 1, y + 1
        for index, (title, kind, unit, targets, defaults) in enumerate(row_panels):
            x = (index % (24 // width)) * width
            if index and x == 0:
                y += HEIGHT
            panel = {
                "id": next_id,
                "type": kind,
                "title": title,
                "datasource": DATASOURCE,
                "gridPos": {"h": HEIGHT, "w": width, "x": x, "y": y},
                "fieldConfig": {"defaults": {"unit": unit, **defaults}, "overrides": []},
                "options": PANEL_OPTIONS[kind],
                "targets": [
                    {"datasource": DATASOURCE, "refId": chr(ord("A") + i), **target} for i, target in enumerate(targets)
                ],
            }
            if kind == "table":
                panel["transformations"] = [{"id": "labelsToFields", "options": {"mode": "columns"}}]
            panels.append(panel)
            next_id += 1
        y += HEIGHT
    return {
        "uid": "tier-router",
        "title": "tier-router",
        "description": "Traffic, cost, savings, latency, tokens, resilience and quality held of the tier-router LLM proxy",
        "tags": ["tier-router", "llm", "gen-ai"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {"selected": False, "text": "Prometheus", "value": DATASOURCE_UID},
                    "hide": 0,
                    "refresh": 1,
                    "regex": "",
                    "options": [],
                }
            ]
        },
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    target = Path(__file__).parent / "dashboards" / "router.json"
    target.write_text(render())
    print(f"wrote {target}")
