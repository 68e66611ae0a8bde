"""``mig log tail | verify``: read an application's topics back."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mig.cli.common import BOOTSTRAP, CONFIG

app = typer.Typer(no_args_is_help=True, help="Inspect an app's topics.")


def _start(value: str) -> str | int:
    if value in ("beginning", "checkpoint"):
        return value
    try:
        offset = int(value)
    except ValueError:
        raise typer.BadParameter("expected beginning, checkpoint or an offset") from None
    if offset < 0:
        raise typer.BadParameter("an offset is 0 or more")
    return offset


@app.command()
def tail(
    name: str = typer.Argument(..., help="The app's name (app.name in app.toml)."),
    start: str = typer.Option("beginning", "--from", help="beginning, checkpoint or OFFSET."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
    committed_only: bool = typer.Option(False, "--committed-only",
                                        help="Only records of committed transactions (what a"
                                             " read_committed consumer sees); by default"
                                             " every acknowledged record, as replicas read"
                                             " them."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep waiting for new records."),
    topic: list[str] = typer.Option([], "--topic", "-t",
                                    help="calls, checkpoints, control or input"
                                         " (repeatable)."),
    bootstrap: Optional[str] = BOOTSTRAP,
    config: Optional[Path] = CONFIG,
) -> None:
    """Decode every record of the app's topics into readable lines or JSON lines."""
    from mig.kafka.connect import resolve_kafka
    from mig.ops.logtool import read_rows, render_json, render_text

    for role in topic:
        if role not in ("calls", "checkpoints", "control", "input"):
            raise typer.BadParameter(f"unknown topic '{role}'", param_hint="--topic")
    settings = resolve_kafka(bootstrap, config)
    render = render_json if as_json else render_text
    for row in read_rows(settings, name, roles=list(topic) or None, start=_start(start),
                         follow=follow, committed_only=committed_only):
        typer.echo(render(row))


@app.command()
def verify(
    name: str = typer.Argument(..., help="The app's name."),
    bootstrap: Optional[str] = BOOTSTRAP,
    config: Optional[Path] = CONFIG,
) -> None:
    """Walk all of the app's topics; report undecodable records and sequence gaps (exit 1)."""
    from mig.kafka.connect import resolve_kafka
    from mig.ops.logtool import verify as run_verify

    report = run_verify(resolve_kafka(bootstrap, config), name)
    for problem in report.problems:
        typer.echo(problem)
    kinds = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in sorted(report.by_schema.items()))
    typer.echo(f"{report.records} records ({kinds or 'none'}): "
               + ("ok" if report.ok else f"{len(report.problems)} problems"))
    raise typer.Exit(0 if report.ok else 1)
