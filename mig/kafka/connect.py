"""Deciding which Kafka a command talks to: an explicit address, the app's config, or the
embedded broker (started on demand only for commands that write)."""

from __future__ import annotations

from pathlib import Path

from mig.errors import MigError
from mig.kafka.clients import KafkaSettings

__all__ = ["resolve_kafka"]


def resolve_kafka(bootstrap: str | None = None, config: Path | None = None,
                  start_embedded: bool = False) -> KafkaSettings:
    """Explicit ``bootstrap`` wins, then ``[kafka]`` of ``config``, then the embedded broker.

    Read-only commands pass ``start_embedded=False``: if the embedded broker is down they
    fail with an instruction instead of starting an empty broker to read nothing from.
    """
    from dataclasses import replace

    cfg = None
    if config is not None:
        from mig.config import load_config

        cfg = load_config(config)
    # the app.toml's record keys and librdkafka properties go with any bootstrap
    auth = cfg.auth() if cfg is not None else None
    if bootstrap:
        props = dict(cfg.kafka_properties) if cfg is not None else {}
        secrets = cfg.kafka_secrets if cfg is not None else frozenset()
        return KafkaSettings(bootstrap, props, source="option", auth=auth, secrets=secrets)
    if cfg is not None:
        settings = cfg.kafka_settings()
        if settings is not None:
            return replace(settings, auth=auth)
    from mig.broker.embedded import EmbeddedBroker

    broker = EmbeddedBroker()
    if start_embedded:
        broker.up()
    elif broker.node.pid() is None:
        raise MigError("no Kafka configured and the embedded broker is not running:"
                       " start it with `mig broker up`, or pass --bootstrap HOST:PORT")
    return replace(broker.settings, auth=auth)
