"""structlog set-up for every mig command: a console renderer on a TTY, JSON lines
otherwise, on stderr (stdout stays for a command's own output)."""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["configure_logging"]

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    """``fmt`` is auto, console or json; ``level`` one of LEVELS."""
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.types.Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    if level == "debug":
        rdkafka = logging.getLogger("mig.rdkafka")
        rdkafka.addHandler(logging.StreamHandler(sys.stderr))
        rdkafka.setLevel(logging.DEBUG)
