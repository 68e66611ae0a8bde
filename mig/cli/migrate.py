"""``mig migrate NAME [--to MEMBER]``: a planned switchover of the primary role."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mig.cli.common import BOOTSTRAP, CONFIG


def migrate(
    name: str = typer.Argument(..., help="The app (NAME in mig.NAME.*)."),
    to: Optional[str] = typer.Option(None, "--to", metavar="MEMBER",
                                     help="The replica to hand over to (default: the hot"
                                          " replica with the least lag)."),
    timeout: float = typer.Option(30.0, help="Seconds to wait for the promotion."),
    bootstrap: Optional[str] = BOOTSTRAP,
    config: Optional[Path] = CONFIG,
) -> None:
    """Move the primary role of NAME to a replica with no committed work lost: the primary
    stops taking input at a barrier, commits everything, and the replica replays to that
    point and goes live."""
    from mig.kafka.connect import resolve_kafka
    from mig.ops.migrate import request_migration

    settings = resolve_kafka(bootstrap, config)
    result = request_migration(settings, name, to=to, timeout=timeout)
    typer.echo(f"migrated {name} from {result['from_member']} to {result['to_member']}:"
               f" epoch {result['epoch']}, switchover gap {result['gap_ms']} ms")
