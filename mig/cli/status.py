"""``mig status [NAME]``: the members of an app (or of every app), their roles and lag."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer

from mig.cli.common import BOOTSTRAP, CONFIG

CLEAR = "\x1b[H\x1b[2J"


def status(
    name: Optional[str] = typer.Argument(None, metavar="NAME",
                                         help="The app's name; omitted: every app."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document, for scripts."),
    watch: Optional[float] = typer.Option(None, "--watch", "-w", metavar="SECONDS", min=0.1,
                                          help="Redraw every SECONDS until Ctrl-C."),
    since: float = typer.Option(600.0, "--since", metavar="SECONDS", min=0,
                                help="Read the control records of the last SECONDS (0: all"
                                     " of them; a member silent for longer is not shown)."),
    bootstrap: Optional[str] = BOOTSTRAP,
    config: Optional[Path] = CONFIG,
) -> None:
    """Show every member of an app: role, epoch, lag, last sign of life, health; and the
    current primary and last promotion. Reads the last 10 minutes of mig.NAME.control
    (--since); with --config, a member is stale after 10 of its [replica] heartbeat_ms
    (else after 2 s)."""
    from mig.control.status import collect, render_text, to_json
    from mig.errors import MigError
    from mig.kafka.connect import resolve_kafka

    heartbeat_ms = None
    if config is not None:
        from mig.config import load_config

        heartbeat_ms = load_config(config).replica["heartbeat_ms"]
    settings = resolve_kafka(bootstrap, config)

    def show() -> None:
        statuses = collect(settings, name, heartbeat_ms, since_s=since)
        text = to_json(statuses) if as_json else render_text(statuses)
        if watch is not None and not as_json and sys.stdout.isatty():
            text = CLEAR + text
        typer.echo(text)

    show()  # a first failure (unknown app, no broker) ends the command
    if watch is None:
        return
    try:
        while True:
            time.sleep(watch)
            if not as_json and not sys.stdout.isatty():
                typer.echo("")  # a blank line between printouts
            try:
                show()
            except MigError as exc:  # keep watching through a broker's hiccup
                typer.echo(f"mig: error: {exc}", err=True)
    except KeyboardInterrupt:
        return
