"""``mig config check | reference``: validate an app.toml; print the key reference."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(no_args_is_help=True, help="Validate app.toml and print its reference.")


@app.command()
def check(config: Path = typer.Argument(..., metavar="APP.TOML")) -> None:
    """Validate an app.toml; print the app name and command if it is good."""
    from mig.config import load_config

    cfg = load_config(config)
    typer.echo(f"{config}: ok (app {cfg.name}: {shlex.join(cfg.command)})")


@app.command()
def reference(write: Optional[Path] = typer.Option(None, help="Write to this file.")) -> None:
    """Print (or write) the app.toml reference generated from the code."""
    from mig.config import reference_markdown

    text = reference_markdown()
    if write:
        write.write_text(text)
    else:
        typer.echo(text, nl=False)
