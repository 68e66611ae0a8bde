"""An application's topics: their names, their configs, and creating or checking them.

``mig.NAME.calls`` (delete policy, kept forever until checkpoints trim it with
delete_records), ``mig.NAME.checkpoints`` (compacted, short segments so superseded chunks
go soon) and ``mig.NAME.control`` (delete policy, bounded retention); with ``[app] stdin =
"topic"`` also ``mig.NAME.input`` (delete policy, kept forever: the program's standard
input, mig/member/stdin.py). An existing topic whose cleanup policy differs is refused: mig
would silently lose or keep the wrong data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog

from mig.config.keys import Topics
from mig.errors import MigError, TopicConfigError
from mig.kafka.clients import KafkaSettings, admin_client, wait_reachable

__all__ = ["TopicSpec", "topic_names", "topic_specs", "ensure_topics"]

log = structlog.get_logger("mig.topics")

STRICT_KEYS = ("cleanup.policy",)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    role: str  # "calls", "checkpoints", "control" or "input"
    partitions: int
    config: dict[str, str]


def topic_names(app: str) -> dict[str, str]:
    return {role: f"mig.{app}.{role}" for role in ("calls", "checkpoints", "control", "input")}


def topic_specs(app: str, topics: Topics | None = None,
                brokers: int = 1, with_input: bool = False) -> list[TopicSpec]:
    t = topics or Topics()
    rf = t.replication_factor or min(3, brokers)
    common = {"min.insync.replicas": str(min(2, rf)),
              "max.message.bytes": str(t.max_message_bytes)}
    names = topic_names(app)
    return [
        TopicSpec(names["calls"], "calls", t.partitions, {
            **common, "cleanup.policy": "delete", "retention.ms": "-1",
            "retention.bytes": "-1"}),
        # two partitions: manifests and chunks (mig/checkpoint/store.py, MANIFESTS and CHUNKS)
        TopicSpec(names["checkpoints"], "checkpoints", 2, {
            **common, "cleanup.policy": "compact",
            "segment.ms": str(t.checkpoint_segment_ms),
            "min.cleanable.dirty.ratio": "0.1", "delete.retention.ms": "60000"}),
        TopicSpec(names["control"], "control", 1, {
            **common, "cleanup.policy": "delete",
            "retention.ms": str(t.control_retention_ms)}),
    ] + ([TopicSpec(names["input"], "input", 1, {
            **common, "cleanup.policy": "delete", "retention.ms": "-1",
            "retention.bytes": "-1"})] if with_input else [])


def ensure_topics(settings: KafkaSettings, app: str, topics: Topics | None = None,
                  timeout: float = 15.0, with_input: bool = False) -> dict[str, str]:
    """Create the app's missing topics; check existing ones. Returns topic -> created|exists.

    Raises TopicConfigError for an existing topic with a wrong cleanup policy.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import ConfigResource, NewTopic

    wait_reachable(settings, timeout)  # a broker refusing our credentials says so here
    admin = admin_client(settings)
    try:
        meta = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise MigError(f"cannot list topics at {settings.bootstrap_servers}: {exc}") from exc
    rf = (topics or Topics()).replication_factor or min(3, len(meta.brokers))
    specs = topic_specs(app, topics, brokers=len(meta.brokers), with_input=with_input)
    result: dict[str, str] = {}
    missing = [s for s in specs if s.name not in meta.topics]
    if missing:
        futures = admin.create_topics(
            [NewTopic(s.name, num_partitions=s.partitions, replication_factor=rf,
                      config=s.config) for s in missing], operation_timeout=timeout)
        for name, fut in futures.items():
            try:
                fut.result(timeout=timeout)
                result[name] = "created"
                log.info("mig.topics.created", topic=name)
            except KafkaException as exc:
                err = exc.args[0]
                if getattr(err, "name", lambda: "")() == "TOPIC_ALREADY_EXISTS":
                    continue  # another member created it meanwhile: check it below
                raise MigError(f"cannot create topic {name}: {err}") from exc
    existing = [s for s in specs if s.name not in result]
    if existing:
        futures = admin.describe_configs(
            [ConfigResource(ConfigResource.Type.TOPIC, s.name) for s in existing])
        actual = {res.name: fut for res, fut in futures.items()}
        for spec in existing:
            try:
                entries = actual[spec.name].result(timeout=timeout)
            except KafkaException as exc:
                raise MigError(f"cannot read the config of topic {spec.name}: {exc}") from exc
            _check_existing(spec, {k: e.value for k, e in entries.items()})
            result[spec.name] = "exists"
    return result


def _check_existing(spec: TopicSpec, actual: dict[str, Any]) -> None:
    for key in STRICT_KEYS:
        if actual.get(key) != spec.config[key]:
            raise TopicConfigError(spec.name, key, spec.config[key], str(actual.get(key)))
    for key, want in spec.config.items():
        if key not in STRICT_KEYS and str(actual.get(key)) != want:
            log.warning("mig.topics.config_differs", topic=spec.name, key=key,
                        expected=want, actual=actual.get(key))
