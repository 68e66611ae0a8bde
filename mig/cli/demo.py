"""``mig demo``: the README's demo on the embedded broker."""

from __future__ import annotations

from typing import Optional

import typer


def demo(app: Optional[str] = typer.Option(None, help="Name of the demo app"
                                           " (default: demo-<random>, new each run).")) -> None:
    """Run the demo: a counter server recorded on the embedded broker and replayed."""
    import uuid

    from mig.ops.demo import run_demo

    raise typer.Exit(0 if run_demo(typer.echo, app or f"demo-{uuid.uuid4().hex[:6]}") else 1)
