"""``mig primary start`` and ``mig replica follow``: record an app, replay it elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from mig.cli.common import BOOTSTRAP

if TYPE_CHECKING:
    from mig.config import AppConfig
    from mig.member.record_state import RecordStats

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


METRICS = typer.Option(None, "--metrics", metavar="HOST:PORT",
                       help="Serve Prometheus metrics at http://HOST:PORT/metrics (default:"
                            " [metrics] address of the app.toml; none if empty).")


def _metrics(cfg: AppConfig, member: str, given: Optional[str]) -> Any:
    """The member's Metrics, served at --metrics or [metrics] address; None when neither."""
    address = given if given is not None else cfg.metrics.address
    if not address:
        return None
    import structlog

    from mig.member.metrics import Metrics

    served = Metrics(cfg.name, member)
    port = served.serve(address)
    structlog.get_logger().info("mig.metrics.serving", address=address, port=port)
    return served


@primary.command("start")
def primary_start(
    config: Path = typer.Argument(..., metavar="APP.TOML"),
    bootstrap: Optional[str] = BOOTSTRAP,
    run_dir: Optional[Path] = typer.Option(None, help="Folder of the shim's rings (default:"
                                           " a new folder on /dev/shm, removed at exit)."),
    member: Optional[str] = typer.Option(None, help="This member's id in mig status and"
                                         " mig migrate --to (default: HOST-PID)."),
    metrics: Optional[str] = METRICS,
) -> None:
    """Start the app under the shim and record it into Kafka until it exits (or until it
    is handed to a replica: mig migrate, SIGTERM with a hot replica)."""
    from mig.config import load_config
    from mig.kafka.connect import resolve_kafka
    from mig.member.primary import Recorder
    from mig.wire.identity import member_id

    cfg = load_config(config)
    settings = resolve_kafka(bootstrap, config, start_embedded=True)
    member = member or member_id()
    served = _metrics(cfg, member, metrics)
    folder = _run_dir(cfg.name, run_dir, "primary")
    try:
        stats = Recorder(cfg, settings, folder, member=member, metrics=served).run()
    finally:
        _cleanup(folder, run_dir)
        if served is not None:
            served.close()
    _report_recording(stats)




def _report_recording(stats: RecordStats) -> None:
    typer.echo(f"recorded {stats.calls} calls in {stats.batches} batches,"
               f" {stats.commits} commits, {stats.traps} trapped,"
               f" {stats.patched} at patched sites;"
               f" app exit code {stats.exit_code}")
    if stats.shim_fatal:
        typer.echo(f"mig: error: the shim stopped the app: {stats.shim_fatal}", err=True)
    if stats.migrated_to:
        typer.echo(f"handed the app over to {stats.migrated_to}")
        raise typer.Exit(0)
    unclean = stats.unclean()
    if unclean:  # killed by a signal mig did not send to stop it: 128 + signal, as a shell
        typer.echo(f"mig: error: {unclean}", err=True)
        raise typer.Exit(128 - (stats.exit_code or 0))
    raise typer.Exit(stats.exit_code if stats.exit_code and stats.exit_code > 0 else 0)


@replica.command("follow")
def replica_follow(
    config: Path = typer.Argument(..., metavar="APP.TOML"),
    bootstrap: Optional[str] = BOOTSTRAP,
    workdir: Optional[Path] = typer.Option(None, help="Where the replica runs the app"
                                           " (default: MIG_HOME/replicas/NAME/MEMBER, made"
                                           " at each start as a copy of app.cwd without its"
                                           " state_dir)."),
    run_dir: Optional[Path] = typer.Option(None, help="Folder of the shim's rings."),
    idle_exit: Optional[float] = typer.Option(None, help="Stop after this many seconds"
                                              " without new records (default: follow"
                                              " forever); an error if the app has not made"
                                              " every call it was given by then."),
    member: Optional[str] = typer.Option(None, help="This member's id in mig status and"
                                         " mig migrate --to (default: HOST-replica-PID)."),
    from_checkpoint: bool = typer.Option(True, "--from-checkpoint/--from-start",
                                         help="Start from the newest checkpoint this host"
                                              " can restore (default), or replay the whole"
                                              " log."),
    promote: bool = typer.Option(True, help="Take over when the primary is lost or hands"
                                 " the app to this member (--no-promote: only follow)."),
    checkpoint_once: bool = typer.Option(False, "--checkpoint-once",
                                         help="Replay to the end of the log, store one"
                                              " checkpoint, and stop (what mig primary runs"
                                              " when no hot replica takes checkpoints)."),
    metrics: Optional[str] = METRICS,
) -> None:
    """Replay the app from the log and keep it hot; take over as the primary when the
    primary is lost (or hands over); stop with a report at the first divergence (exit 3)."""
    import signal

    from mig.config import load_config
    from mig.errors import MigError
    from mig.kafka.connect import resolve_kafka
    from mig.member.handover import take_over
    from mig.member.replica import Replayer

    cfg = load_config(config)
    settings = resolve_kafka(bootstrap, config)
    stopping: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: stopping.append(signum))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    folder = _run_dir(cfg.name, run_dir, "replica")
    from mig.wire.identity import member_id

    member = member or member_id("replica")
    if workdir is None:
        from mig.member.launch import replica_workdir

        workdir, last_run = replica_workdir(cfg, member)
        typer.echo(f"replica {member} of {cfg.name} runs the app in {workdir}, a fresh copy"
                   f" of {cfg.cwd}" + (f" (the last run's: {last_run})" if last_run else ""),
                   err=True)
    # the checkpointer of a primary serves none: its primary's address is taken
    served = None if checkpoint_once else _metrics(cfg, member, metrics)
    try:
        replayer = Replayer(cfg, settings, folder, workdir, idle_exit_s=idle_exit,
                            member=member, can_promote=promote,
                            use_checkpoints=from_checkpoint, checkpoint_once=checkpoint_once,
                            metrics=served)
        stats = replayer.run(stop=lambda: bool(stopping))
        typer.echo(f"replayed {stats.calls} calls from {stats.batches} batches")
        if checkpoint_once:
            if replayer.stored is None:
                raise MigError("stopped before the checkpoint was stored")
            typer.echo(f"checkpoint {replayer.stored} stored")
            return
        if stats.promoted_epoch is None or replayer.writer is None:
            return
        if stats.promotion_reason == "handoff":  # planned: no failure was detected
            timing = f"handoff, promotion {stats.promotion_ms} ms"
        else:
            detected = "?" if stats.detection_ms is None else stats.detection_ms
            timing = f"failover, detection {detected} ms, promotion {stats.promotion_ms} ms"
        typer.echo(f"promoted to primary of {cfg.name} at epoch {stats.promoted_epoch}"
                   f" ({timing})")
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        rec_stats = take_over(replayer, metrics=served)
    finally:
        _cleanup(folder, run_dir)
        if served is not None:
            served.close()
    _report_recording(rec_stats)
