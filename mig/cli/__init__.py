"""The ``mig`` command: a thin typer layer over the library.

Each command parses its options, calls one library function and prints the result. Every
``MigError`` becomes one line on stderr (``mig: error: ...``) and its exit code; no
traceback reaches the user. Heavy imports (the Kafka client) happen inside commands.
"""

from __future__ import annotations

import sys

import typer

from mig.cli import app as app_cmds
from mig.cli import broker, checkpoint, config, demo, doctor, log, migrate, status, topics
from mig.cli.common import LogFormat, LogLevel
from mig.cli.input import input_
from mig.errors import MigError

__all__ = ["app", "main"]

# rich_markup_mode=None: plain help text. Rich markup took the app.toml tables the help
# names ("[kafka] of --config") for styles and printed nothing in their place.
app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  add_completion=False,
                  help="mig: keep a hot standby of an unmodified Linux program, fed through"
                       " Kafka.")
app.add_typer(app_cmds.primary, name="primary")
app.add_typer(app_cmds.replica, name="replica")
app.add_typer(broker.app, name="broker")
app.add_typer(log.app, name="log")
app.add_typer(topics.app, name="topics")
app.add_typer(config.app, name="config")
app.command("demo")(demo.demo)
app.command("status")(status.status)
app.command("doctor")(doctor.doctor)
app.command("migrate")(migrate.migrate)
app.command("checkpoint")(checkpoint.checkpoint)
app.command("input")(input_)


def _print_version(value: bool) -> None:
    if value:
        from mig import __version__

        typer.echo(f"mig {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    log_format: LogFormat = typer.Option(LogFormat.auto, "--log-format",
                                         help="Log lines as console text or JSON lines;"
                                              " auto picks console on a TTY."),
    log_level: LogLevel = typer.Option(LogLevel.info, "--log-level", help="Lowest level logged."),
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print mig's version and exit."),
) -> None:
    from mig.logs import configure_logging

    configure_logging(log_format.value, log_level.value)


def main() -> None:
    try:
        app()
    except MigError as exc:
        print(f"mig: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("mig: interrupted", file=sys.stderr)
        sys.exit(130)
