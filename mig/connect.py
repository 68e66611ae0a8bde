"""Deciding which Kafka a command talks to: an explicit address, the app's config, or the
embedded broker (started on demand only for commands that write)."""

from __future__ import annotations

from pathlib import Path

from mig.errors import MigError
from mig.kafka import KafkaSettings

__all__ = ["resolve_kafka"]


def resolve_kafka(bootstrap: str | None = None, config: Path | None = None,
                  start_embedded: bool = False) -> KafkaSettings:
    """Explicit ``bootstrap`` wins, then ``[kafka]`` of ``config``, then the embedded broker.

    Read-only commands pass ``start_embedded=False``: if the embedded broker is down they
    fail with an instruction instead of starting an empty broker to read nothing from.
    """
    if bootstrap:
        return KafkaSettings(bootstrap, source="option")
    if config is not None:
        from mig.config import load_config

        settings = load_config(config).kafka_settings()
        if settings is not None:
            return settings
    from mig.broker.embedded import EmbeddedBroker

    broker = EmbeddedBroker()
    if start_embedded:
        broker.up()
    elif broker.node.pid() is None:
        raise MigError("no Kafka configured and the embedded broker is not running:"
                       " start it with `mig broker up`, or pass --bootstrap HOST:PORT")
    return broker.settings
