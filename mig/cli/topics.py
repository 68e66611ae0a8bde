"""``mig topics ensure``: create or check an application's topics."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mig.cli.common import BOOTSTRAP

app = typer.Typer(no_args_is_help=True, help="Create and check an app's Kafka topics.")


@app.command()
def ensure(config: Path = typer.Argument(..., metavar="APP.TOML"),
           bootstrap: Optional[str] = BOOTSTRAP) -> None:
    """Create the app's calls, checkpoints and control topics; refuse wrong existing ones."""
    from mig.config import load_config
    from mig.kafka.connect import resolve_kafka
    from mig.kafka.topics import ensure_topics

    cfg = load_config(config)
    settings = resolve_kafka(bootstrap, config, start_embedded=True)
    for topic, what in ensure_topics(settings, cfg.name, cfg.topics,
                                     with_input=cfg.stdin == "topic").items():
        typer.echo(f"{topic}: {what}")
