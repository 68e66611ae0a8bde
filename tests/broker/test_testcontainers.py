"""The same round trip against testcontainers' Kafka, where a Docker engine answers.

On hosts with only the Docker client (or none), this path skips: the real-broker tests in
this folder run on the embedded broker instead.
"""

from __future__ import annotations

import pytest

from mig.kafka.clients import KafkaSettings
from mig.kafka.topics import ensure_topics
from mig.kafka.writer import LogWriter
from mig.ops.logtool import read_rows
from tests.samples import sample


def _docker_engine_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means: no engine here
        return False


@pytest.mark.skipif(not _docker_engine_answers(), reason="no Docker engine answers here")
def test_round_trip_on_testcontainers_kafka(app_name):
    from testcontainers.kafka import KafkaContainer

    with KafkaContainer("apache/kafka:4.1.1").with_kraft() as kafka:
        settings = KafkaSettings(kafka.get_bootstrap_server())
        ensure_topics(settings, app_name)
        writer = LogWriter(settings, app_name)
        writer.send("control", "mig.log.Heartbeat", sample("mig.log.Heartbeat"))
        writer.commit()
        rows = list(read_rows(settings, app_name, roles=["control"]))
        assert rows[0].record == sample("mig.log.Heartbeat")
