"""``mig input APP.TOML``: append what arrives on stdin to the app's input topic."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from mig.cli.common import BOOTSTRAP


def input_(
    config: Path = typer.Argument(..., metavar="APP.TOML"),
    end: bool = typer.Option(False, "--end", help="After the input, mark its end: the"
                             " program reads end-of-file there (a shell then exits)."),
    bootstrap: Optional[str] = BOOTSTRAP,
) -> None:
    """Send this command's stdin to the program's stdin, for an app with [app] stdin =
    "topic": each piece is in Kafka (mig.NAME.input) before the next is read, and whichever
    member is primary feeds it to the program, the same bytes once, across failover and
    migration. `producer | mig input app.toml`."""
    from mig.config import load_config
    from mig.errors import MigError
    from mig.kafka.connect import resolve_kafka
    from mig.kafka.topics import ensure_topics, topic_names
    from mig.member.stdin import publish

    cfg = load_config(config)
    if cfg.stdin != "topic":
        raise MigError(f"{config}: app.stdin is '{cfg.stdin}': mig input feeds apps with"
                       " stdin = \"topic\" (their stdin is then mig.NAME.input)")
    settings = resolve_kafka(bootstrap, config, start_embedded=True)
    ensure_topics(settings, cfg.name, cfg.topics, with_input=True)
    sent, records = publish(settings, cfg.name, sys.stdin.buffer, end)
    typer.echo(f"sent {sent} bytes in {records} records to {topic_names(cfg.name)['input']}"
               + (" (end of input marked)" if end else ""), err=True)
