"""Options and helpers shared by the command groups."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Optional

import typer

__all__ = ["LogFormat", "LogLevel", "BOOTSTRAP", "CONFIG"]


class LogFormat(str, enum.Enum):
    auto = "auto"
    console = "console"
    json = "json"


class LogLevel(str, enum.Enum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


BOOTSTRAP: Optional[str] = typer.Option(
    None, "--bootstrap", "-b", metavar="HOST:PORT",
    help="Kafka to use; default: [kafka] of --config, else the embedded broker.")
CONFIG: Optional[Path] = typer.Option(
    None, "--config", "-c", metavar="APP.TOML",
    help="Take the Kafka address, its settings and the record keys ([security]) from this"
         " app.toml.")
