"""``mig primary start`` and ``mig replica follow``: record an app, replay it elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mig.cli.common import BOOTSTRAP

primary = typer.Typer(no_args_is_help=True, help="Run an app as the primary, recording it.")
replica = typer.Typer(no_args_is_help=True, help="Run a replaying replica of an app.")


def _run_dir(cfg_name: str, given: Optional[Path], role: str) -> Path:
    from mig.paths import run_root

    if given:
        return given
    import os

    return run_root() / f"{cfg_name}-{role}-{os.getpid()}"


def _cleanup(folder: Path, given: Optional[Path]) -> None:
    """Remove the rings of this run (a folder the user named is left alone)."""
    if given is None:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


@primary.command("start")
def primary_start(
    config: Path = typer.Argument(..., metavar="APP.TOML"),
    bootstrap: Optional[str] = BOOTSTRAP,
    run_dir: Optional[Path] = typer.Option(None, help="Folder of the shim's rings (default:"
                                           " a new folder on /dev/shm, removed at exit)."),
) -> None:
    """Start the app under the shim and record it into Kafka until it exits."""
    from mig.config import load_config
    from mig.connect import resolve_kafka
    from mig.recorder import Recorder

    cfg = load_config(config)
    settings = resolve_kafka(bootstrap, config, start_embedded=True)
    folder = _run_dir(cfg.name, run_dir, "primary")
    try:
        stats = Recorder(cfg, settings, folder).run()
    finally:
        _cleanup(folder, run_dir)
    typer.echo(f"recorded {stats.calls} calls in {stats.batches} batches,"
               f" {stats.commits} commits; app exit code {stats.exit_code}")
    raise typer.Exit(stats.exit_code if stats.exit_code and stats.exit_code > 0 else 0)


@replica.command("follow")
def replica_follow(
    config: Path = typer.Argument(..., metavar="APP.TOML"),
    bootstrap: Optional[str] = BOOTSTRAP,
    workdir: Optional[Path] = typer.Option(None, help="Where the replica runs the app"
                                           " (default: app.cwd)."),
    run_dir: Optional[Path] = typer.Option(None, help="Folder of the shim's rings."),
    idle_exit: Optional[float] = typer.Option(None, help="Stop after this many seconds"
                                              " without new records (default: follow forever)."),
) -> None:
    """Replay the app from the log; stop with a report at the first divergence (exit 3)."""
    import signal

    from mig.config import load_config
    from mig.connect import resolve_kafka
    from mig.replayer import Replayer

    cfg = load_config(config)
    settings = resolve_kafka(bootstrap, config)
    stopping: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stopping.append(signum))
    folder = _run_dir(cfg.name, run_dir, "replica")
    try:
        stats = Replayer(cfg, settings, folder, workdir or cfg.cwd,
                         idle_exit_s=idle_exit).run(stop=lambda: bool(stopping))
    finally:
        _cleanup(folder, run_dir)
    typer.echo(f"replayed {stats.calls} calls from {stats.batches} batches")
