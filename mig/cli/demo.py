"""``mig demo``: the README's demo on the embedded broker."""

from __future__ import annotations

import typer


def demo(app: str = typer.Option("demo", help="Name of the demo app.")) -> None:
    """Run the demo: embedded broker, an app's topics, records written and read back."""
    from mig.demo import run_demo

    raise typer.Exit(0 if run_demo(typer.echo, app) else 1)
