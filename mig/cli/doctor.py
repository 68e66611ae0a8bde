"""``mig doctor [APP.TOML]``: check the host (and an app) before using mig."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def doctor(
    app_toml: Optional[Path] = typer.Argument(None, metavar="APP.TOML",
                                              help="Also check this app: its program, its"
                                                   " Kafka, its topics and its members'"
                                                   " clocks."),
    as_json: bool = typer.Option(False, "--json", help="A JSON list of {check, status,"
                                                       " detail, advice}, for scripts."),
) -> None:
    """Check the host before use: kernel, glibc, CRIU, ptrace, namespaces, the shim; with
    APP.TOML also the app's program (and what its imports mean for replay: threads, child
    processes, a JIT runtime, stdin), Kafka, topics and whether its running members' clocks
    agree. One line per check: ok, warn or fail, what was found and what to do. Changes
    nothing. Exit 1 if any check fails."""
    from mig.ops.check import exit_code, render_text, to_json
    from mig.ops.doctor import run_checks

    checks = run_checks(app_toml)
    typer.echo(to_json(checks) if as_json else render_text(checks))
    raise typer.Exit(exit_code(checks))
