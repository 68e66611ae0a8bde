"""``mig checkpoint NAME``: ask a replica for a checkpoint now; ``--list`` shows them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import typer

from mig.cli.common import BOOTSTRAP, CONFIG


def checkpoint(
    name: str = typer.Argument(..., help="The app (NAME in mig.NAME.*)."),
    list_only: bool = typer.Option(False, "--list", help="Only list the kept checkpoints."),
    timeout: float = typer.Option(60.0, help="Seconds to wait for the new checkpoint."),
    bootstrap: Optional[str] = BOOTSTRAP,
    config: Optional[Path] = CONFIG,
) -> None:
    """Have the least-lagged hot replica of NAME take a checkpoint (CRIU image of the app
    at a replay barrier, stored in mig.NAME.checkpoints) and wait for it. With no hot
    replica, the primary's host takes it by a local replay. A member that cannot take it
    says why at once (checkpoints off, no CRIU, the local replay diverged), and so does
    this command."""
    from mig.checkpoint.store import list_manifests
    from mig.control.requests import request_checkpoint
    from mig.kafka.connect import resolve_kafka

    settings = resolve_kafka(bootstrap, config)
    if list_only:
        manifests = list_manifests(settings, name)
        if not manifests:
            typer.echo(f"no checkpoints of {name}")
        for m in manifests:
            typer.echo(describe_manifest(m))
        return
    typer.echo(describe_manifest(request_checkpoint(settings, name, timeout)))


def describe_manifest(m: dict[str, Any]) -> str:
    offsets = ",".join(f"{po['partition']}:{po['offset']}" for po in m["barrier_offsets"])
    age = max(0, int(time.time() * 1000) - m["created_ms"]) / 1000
    return (f"checkpoint {m['checkpoint_id']}: calls offsets {offsets}, {m['total_size']}"
            f" bytes in {m['chunk_count']} chunks, epoch {m['epoch']}, by {m['member'] or '?'},"
            f" app held {m['dump_ms']} ms, CRIU {m['criu_version']}, kernel {m['kernel']},"
            f" {age:.0f} s old")
