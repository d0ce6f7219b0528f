"""Build ``dashboards/router.json`` (Grafana 11, schemaVersion 39) from the panel list below.

Run ``python deploy/grafana/build_dashboard.py`` after editing; tests check that the
committed JSON matches this script's output and that every query returns data from a
Prometheus scraping a router that served traffic.
"""

from __future__ import annotations

import json
from pathlib import Path

RATE = "$__rate_interval"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def q(expr: str, legend: str) -> dict:
    return {"expr": expr, "legendFormat": legend}


def quantiles(metric: str, by: str, legend: str, levels=(0.5, 0.95)) -> list[dict]:
    return [
        q(f"histogram_quantile({level}, sum by (le, {by}) (rate({metric}_bucket[{RATE}])))", f"p{int(level * 100)} {legend}")
        for level in levels
    ]


# (section, title, unit, panel type, targets)
PANELS: list[tuple[str, str, str, str, list[dict]]] = [
    ("Traffic", "Requests per second by route", "reqps", "timeseries", [q(f"sum by (route) (rate(router_requests_total[{RATE}]))", "{{route}}")]),
    ("Traffic", "Requests per second by model", "reqps", "timeseries", [q(f"sum by (model) (rate(router_requests_total[{RATE}]))", "{{model}}")]),
    ("Traffic", "Error rate by route", "percentunit", "timeseries", [q(
        f'sum by (route) (rate(router_requests_total{{outcome!~"success|cancelled"}}[{RATE}])) / clamp_min(sum by (route) (rate(router_requests_total[{RATE}])), 1e-9)', "{{route}}")]),
    ("Traffic", "Error rate by model", "percentunit", "timeseries", [q(
        f'sum by (model) (rate(router_requests_total{{outcome!~"success|cancelled"}}[{RATE}])) / clamp_min(sum by (model) (rate(router_requests_total[{RATE}])), 1e-9)', "{{model}}")]),
    ("Traffic", "Tier mix (answered requests)", "reqps", "piechart", [q(f'sum by (tier) (rate(router_requests_total{{outcome="success"}}[{RATE}]))', "{{tier}}")]),
    ("Traffic", "Requests in flight by provider", "short", "timeseries", [q("sum by (provider) (router_inflight_requests)", "{{provider}}")]),
    ("Cost", "Cost per hour by tier", "currencyUSD", "timeseries", [q(f"sum by (tier) (rate(router_cost_usd_total[{RATE}])) * 3600", "{{tier}}")]),
    ("Cost", "Cost per hour by model", "currencyUSD", "timeseries", [q(f"sum by (model) (rate(router_cost_usd_total[{RATE}])) * 3600", "{{model}}")]),
    ("Cost", "Cost per hour by team", "currencyUSD", "timeseries", [q(f"sum by (team) (rate(router_cost_usd_total[{RATE}])) * 3600", "{{team}}")]),
    ("Cost", "Spend in range (estimated share)", "currencyUSD", "stat", [
        q("sum(increase(router_cost_usd_total[$__range]))", "total"),
        q('sum(increase(router_cost_usd_total{estimated="true"}[$__range]))', "estimated usage"),
    ]),
    ("Cost", "Savings against the baseline model (cumulative)", "currencyUSD", "stat", [q("sum(router_savings_usd_total)", "saved since start")]),
    ("Cost", "Savings per hour by route", "currencyUSD", "timeseries", [q(f"sum by (route) (rate(router_savings_usd_total[{RATE}])) * 3600", "{{route}}")]),
    ("Latency", "Request latency by model", "s", "timeseries", quantiles("gen_ai_server_request_duration_seconds", "gen_ai_response_model", "{{gen_ai_response_model}}")),
    ("Latency", "Time to first token by model", "s", "timeseries", quantiles("gen_ai_server_time_to_first_token_seconds", "gen_ai_response_model", "{{gen_ai_response_model}}")),
    ("Latency", "Upstream attempt duration by provider", "s", "timeseries", quantiles("gen_ai_client_operation_duration_seconds", "gen_ai_provider_name", "{{gen_ai_provider_name}}")),
    ("Latency", "Router overhead (excluding upstream)", "s", "timeseries", quantiles("router_overhead_seconds", "route", "{{route}}", levels=(0.5, 0.99))),
    ("Tokens", "Tokens per second by model and type", "short", "timeseries", [q(f"sum by (model, type) (rate(router_tokens_total[{RATE}]))", "{{model}} {{type}}")]),
    ("Tokens", "Tokens per upstream call (p50)", "short", "timeseries", [q(
        f"histogram_quantile(0.5, sum by (le, gen_ai_token_type) (rate(gen_ai_client_token_usage_bucket[{RATE}])))", "{{gen_ai_token_type}}")]),
    ("Resilience", "Fallbacks per second", "reqps", "timeseries", [q(f"sum by (from_model, to_model, reason) (rate(router_fallbacks_total[{RATE}]))", "{{from_model}} → {{to_model}} ({{reason}})")]),
    ("Resilience", "Upstream errors by model and reason", "reqps", "timeseries", [q(f"sum by (model, reason) (rate(router_upstream_errors_total[{RATE}]))", "{{model}} {{reason}}")]),
    ("Resilience", "Circuit state (0 closed, 1 half-open, 2 open)", "short", "state-timeline", [q("max by (model) (router_circuit_state)", "{{model}}")]),
    ("Resilience", "Shared state store reachable", "short", "stat", [q("min(router_state_store_up)", "up")]),
    ("Limits", "Budget rejections per second by team", "reqps", "timeseries", [q(f"sum by (team) (rate(router_budget_rejections_total[{RATE}]))", "{{team}}")]),
    ("Limits", "Rate-limited requests per second by team", "reqps", "timeseries", [q(f"sum by (team) (rate(router_rate_limited_total[{RATE}]))", "{{team}}")]),
    ("Policy", "Policy reloads", "short", "timeseries", [q(f"sum by (result) (increase(router_policy_reloads_total[{RATE}]))", "{{result}}")]),
    ("Policy", "Policy running on each replica", "short", "table", [q("max by (instance, sha256) (router_policy_info) == 1", "{{instance}} {{sha256}}")]),
]


def build() -> dict:
    panels, panel_id, y = [], 1, 0
    section = None
    column = 0
    for name, title, unit, kind, targets in PANELS:
        if name != section:
            section, column = name, 0
            if panels:
                y += 8
            panels.append({"id": panel_id, "type": "row", "title": section, "collapsed": False, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
            panel_id += 1
            y += 1
        if column == 3:
            column, y = 0, y + 8
        panels.append(
            {
                "id": panel_id,
                "type": kind,
                "title": title,
                "datasource": DATASOURCE,
                "gridPos": {"h": 8, "w": 8, "x": column * 8, "y": y},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
                "targets": [{**target, "refId": chr(ord("A") + i), "datasource": DATASOURCE} for i, target in enumerate(targets)],
            }
        )
        panel_id += 1
        column += 1
    return {
        "uid": "tier-router",
        "title": "tier-router",
        "description": "Traffic, cost, savings, latency and resilience of the tier-router LLM gateway",
        "tags": ["tier-router", "llm", "gen-ai"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source", "current": {"text": "Prometheus", "value": "prometheus"}, "hide": 0}
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    target = Path(__file__).parent / "dashboards" / "router.json"
    target.write_text(render())
    print(f"wrote {target}")
