"""The ``router`` command: serve, check, explain, keys."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer

from router.policy.loader import PolicyError, load_policy

cli = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="tier-router: route each request to the cheapest model that meets its tier.",
)
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
    from router.policy.features import features_for
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
        decision = decide(loaded, body.get("model"), features, kind=kind, tier_override=headers.get("x-router-tier"))
    except RouterError as exc:
        _fail([exc.message])
        return
    typer.echo(orjson.dumps(decision_json(decision), option=orjson.OPT_INDENT_2).decode())


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
