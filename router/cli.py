"""The ``router`` command: serve, check, explain, calibrate, simulate, keys."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import orjson
import typer

from router.policy.loader import PolicyError, load_policy

if TYPE_CHECKING:
    from router.simulate import Malformed, Traffic

cli = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="tier-router: route each request to the cheapest model that meets its tier.",
)
SimulateFormat = Literal["table", "json", "markdown"]
PolicyOption = Annotated[
    Path | None, typer.Option("--policy", help="policy file (default: ROUTER_POLICY or policies/default.yaml)")
]


def _fail(errors: list[str]) -> None:
    for line in errors:
        typer.echo(line, err=True)
    raise typer.Exit(code=1)


@cli.command()
def serve(
    policy: PolicyOption = None,
    host: Annotated[str | None, typer.Option(help="bind address (ROUTER_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (ROUTER_PORT)")] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes (ROUTER_WORKERS)")] = None,
) -> None:
    """Run the proxy."""
    from router.server import run

    overrides = {"ROUTER_POLICY": policy, "ROUTER_HOST": host, "ROUTER_PORT": port, "ROUTER_WORKERS": workers}
    for name, value in overrides.items():
        if value is not None:
            os.environ[name] = str(value)
    try:
        run()
    except PolicyError as exc:
        _fail(exc.errors)


@cli.command()
def check(file: Annotated[Path, typer.Argument(help="policy file to validate")]) -> None:
    """Validate a policy file and print its models; exit 1 on any error."""
    from router.report import models_table

    try:
        loaded = load_policy(file)
    except PolicyError as exc:
        _fail(exc.errors)
        return
    for warning in loaded.warnings:
        typer.echo(warning, err=True)
    typer.echo(models_table(loaded))
    typer.echo(f"\n{file}: OK ({len(loaded.models)} models, {len(loaded.routes)} routes, sha256 {loaded.sha256[:12]})")


@cli.command()
def explain(
    request_file: Annotated[Path, typer.Argument(metavar="REQUEST.json", help="a chat request body; - for stdin")],
    policy: PolicyOption = None,
    header: Annotated[list[str] | None, typer.Option("--header", "-H", help="request header 'name: value'")] = None,
) -> None:
    """Print the routing decision for a request without calling any upstream."""
    from router.api.requests import check_body_shape, check_explain_body
    from router.errors import RouterError
    from router.explain import decision_json
    from router.policy.engine import decide
    from router.policy.features import features_for, with_difficulty
    from router.types import MODEL_KIND

    policy_path = policy or Path(os.environ.get("ROUTER_POLICY", "policies/default.yaml"))
    try:
        loaded = load_policy(policy_path)
    except PolicyError as exc:
        _fail(exc.errors)
        return
    raw = sys.stdin.buffer.read() if str(request_file) == "-" else request_file.read_bytes()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        _fail([f"{request_file}: not valid JSON ({exc.msg})"])
        return
    if not isinstance(body, dict):
        _fail([f"{request_file}: the request body must be a JSON object"])
        return
    headers = dict(_header(h) for h in header or [])
    try:
        check_body_shape(body)  # the same checks as POST /v1/router/explain
        operation = check_explain_body(body, loaded.defaults.max_n)
        kind = MODEL_KIND[operation]
        features = features_for(kind, body, headers)
        if kind == "chat":
            features = with_difficulty(loaded, body.get("model"), body, features)
        decision = decide(loaded, body.get("model"), features, kind=kind, tier_override=headers.get("x-router-tier"))
    except RouterError as exc:
        _fail([exc.message])
        return
    typer.echo(orjson.dumps(decision_json(decision), option=orjson.OPT_INDENT_2).decode())


@cli.command()
def calibrate(
    route: Annotated[str, typer.Option("--route", help="the escalating route to calibrate")],
    requests: Annotated[Path, typer.Option("--requests", help="your traffic: JSONL, one chat request body a line")],
    share: Annotated[
        str, typer.Option("--share", help="share of the sample for each tier, e.g. frontier=0.25,standard=0.5")
    ],
    policy: PolicyOption = None,
) -> None:
    """Print the escalate thresholds that send the given shares of a sample to each tier."""
    from router import calibrate as calibration
    from router.difficulty import load_predictor

    policy_path = policy or Path(os.environ.get("ROUTER_POLICY", "policies/default.yaml"))
    try:
        loaded = load_policy(policy_path)
    except PolicyError as exc:
        _fail(exc.errors)
        return
    try:
        chosen = calibration.route_to_calibrate(loaded, route)
        shares = calibration.parse_shares(share, loaded, chosen)
        sample = calibration.read_sample(requests.read_bytes(), str(requests))
    except (calibration.CalibrationError, OSError) as exc:
        _fail([str(exc) if isinstance(exc, calibration.CalibrationError) else f"{requests}: {exc.strerror}"])
        return
    predictor = load_predictor()
    found = calibration.thresholds([predictor.score(messages) for messages in sample], shares)
    typer.echo(calibration.report(chosen, found, len(sample), str(requests)))


MALFORMED_SHOWN = 20  # malformed lines listed on stderr; the rest are only counted


@cli.command()
def simulate(
    inputs: Annotated[
        list[Path], typer.Argument(metavar="INPUT...", help="JSONL: requests or access-log lines; - for stdin")
    ],
    policy: Annotated[Path, typer.Option("--policy", help="the policy to replay the traffic through")],
    compare: Annotated[Path | None, typer.Option("--compare", help="a second policy to compare with")] = None,
    output_format: Annotated[
        SimulateFormat, typer.Option("--format", help="table, json or markdown (a pull-request comment)")
    ] = "table",
    fail_on_cost_increase: Annotated[
        float | None,
        typer.Option("--fail-on-cost-increase", metavar="PCT", help="exit 3 when --compare costs more than PCT % more"),
    ] = None,
    per_request: Annotated[
        Path | None, typer.Option("--per-request", metavar="OUT.jsonl", help="write each request's decision here")
    ] = None,
) -> None:
    """Replay traffic through a policy (no upstream call): cost, savings and where requests go."""
    from router import simulate as sim
    from router.simulate_report import render

    paths = [policy, *([compare] if compare else [])]
    replayers = []
    for path in paths:
        try:
            replayers.append(sim.Replayer(load_policy(path)))
        except PolicyError as exc:
            _fail(exc.errors)
    if fail_on_cost_increase is not None and compare is None:
        _fail(["--fail-on-cost-increase needs --compare: the policy whose cost may not increase"])
    shown = 0

    def on_malformed(item: sim.Malformed) -> None:
        nonlocal shown
        shown += 1
        if shown <= MALFORMED_SHOWN:
            typer.echo(f"{item.line}: skipped: {item.problem}", err=True)

    with contextlib.ExitStack() as stack:
        out = stack.enter_context(per_request.open("wb")) if per_request else None

        def on_request(item: sim.Traffic, outcomes: list[sim.Replayed]) -> None:
            assert out is not None
            row = {"line": item.line, **sim.per_request_json(outcomes[0])}
            if len(outcomes) > 1:
                row["compare"] = sim.per_request_json(outcomes[1])
            out.write(orjson.dumps(row) + b"\n")

        try:
            traffic = _traffic(inputs, stack)
            result = sim.simulate(
                replayers, [str(p) for p in paths], traffic, on_malformed, on_request if out else None
            )
        except OSError as exc:
            _fail([f"{exc.filename or 'input'}: {exc.strerror}"])
            return
    if result.malformed > MALFORMED_SHOWN:
        typer.echo(f"… and {result.malformed - MALFORMED_SHOWN} more malformed line(s)", err=True)
    if output_format == "json":
        typer.echo(orjson.dumps(result.to_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        typer.echo(render(result, markdown=output_format == "markdown"), nl=False)
    increase = result.cost_increase_percent()
    if fail_on_cost_increase is not None and increase is not None and increase > fail_on_cost_increase:
        typer.echo(
            f"{compare} costs {increase:.1f} % more than {policy} (allowed: {fail_on_cost_increase:g} %)", err=True
        )
        raise typer.Exit(code=3)


def _traffic(inputs: list[Path], stack: contextlib.ExitStack) -> Iterator[Traffic | Malformed]:
    """Every input's lines in turn, each file opened only when its turn comes."""
    from router.simulate import read_traffic

    for path in inputs:
        if str(path) == "-":
            yield from read_traffic("-", sys.stdin.buffer)
            continue
        stream = stack.enter_context(path.open("rb"))
        yield from read_traffic(str(path), stream)


def _header(text: str) -> tuple[str, str]:
    name, _, value = text.partition(":")
    return name.strip().lower(), value.strip()


keys_cli = typer.Typer(help="Client keys.", no_args_is_help=True)
cli.add_typer(keys_cli, name="keys")


@keys_cli.command("new")
def keys_new(
    name: Annotated[str, typer.Option(help="key name (shown in logs and metrics)")],
    team: Annotated[str, typer.Option(help="team the key's spend counts against")],
) -> None:
    """Make a client key: prints the key once, and the policy line holding only its hash."""
    from router.auth import new_key

    key, digest = new_key()
    typer.echo(f"key (shown once, give it to the client): {key}")
    typer.echo("add to the policy's keys section:")
    typer.echo(f'  - {{hash: "{digest}", name: {name}, team: {team}}}')


def main() -> None:
    cli()
