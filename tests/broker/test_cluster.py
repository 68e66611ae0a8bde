"""The 3-broker KRaft test cluster: replication factor 3, min.insync.replicas 2, and what
that means when brokers die (the basis of the fault tests in later issues)."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

from mig.kafka.topics import ensure_topics
from mig.kafka.writer import LogWriter
from mig.ops.logtool import read_rows
from tests.cluster import LocalCluster
from tests.samples import sample

pytestmark = pytest.mark.cluster


def _produce(bootstrap: str, topic: str, value: bytes, timeout: float = 10.0) -> str | None:
    """Produce one record with acks=all; return None once acknowledged, else the error."""
    reports: list[str | None] = []
    prod = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                     "message.timeout.ms": int(timeout * 1000), "logger": _quiet()})
    prod.produce(topic, value=value,
                 on_delivery=lambda err, _msg: reports.append(err.name() if err else None))
    prod.flush(timeout + 5)
    return reports[0] if reports else "NO_DELIVERY_REPORT"


def _quiet():
    import logging

    log = logging.getLogger("tests.rdkafka")
    log.addHandler(logging.NullHandler())
    log.propagate = False
    return log


def test_three_brokers_survive_one_loss_and_refuse_at_two(tmp_path, app_name):
    with LocalCluster(tmp_path, size=3) as cluster:
        settings = cluster.settings
        ensure_topics(settings, app_name)
        calls = f"mig.{app_name}.calls"
        cluster.wait_leader(calls)  # every broker's metadata knows the new topic
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        deadline = time.monotonic() + 30
        meta = admin.list_topics(calls, timeout=10)
        while calls not in meta.topics or meta.topics[calls].error is not None:
            assert time.monotonic() < deadline, f"{calls} never appeared in the metadata"
            time.sleep(0.2)
            meta = admin.list_topics(calls, timeout=10)
        assert len(meta.brokers) == 3
        assert len(meta.topics[calls].partitions[0].replicas) == 3

        writer = LogWriter(settings, app_name, transactional_id=f"mig.{app_name}.t")
        writer.send("control", "mig.log.Heartbeat", sample("mig.log.Heartbeat"))
        writer.commit()

        leader = meta.topics[calls].partitions[0].leader
        cluster.kill(leader)  # the broker leading the calls partition
        assert cluster.wait_leader(calls) != leader
        assert _produce(cluster.bootstrap, calls, b"with two brokers", timeout=20) is None

        second = next(n.node_id for n in cluster.nodes if n.node_id != leader)
        cluster.kill(second)
        # one broker left: below min.insync.replicas 2, an acks=all write must fail
        err = _produce(cluster.bootstrap, calls, b"with one broker", timeout=5)
        assert err is not None, (
            f"a write was acknowledged by a single replica (killed {leader}, {second})")

        cluster.restart(second)
        cluster.restart(leader)
        cluster.wait_brokers(3)
        cluster.wait_leader(calls)
        assert _produce(cluster.bootstrap, calls, b"after restart", timeout=30) is None
        rows = list(read_rows(settings, app_name, roles=["control"], timeout=30))
        assert [r.schema for r in rows] == ["mig.log.Heartbeat"]


def test_cluster_stop_leaves_no_process(tmp_path):
    cluster = LocalCluster(tmp_path, size=3)
    cluster.start()
    pids = [n.pid() for n in cluster.nodes]
    assert all(pids)
    cluster.stop()
    assert [n.pid() for n in cluster.nodes] == [None, None, None]
    with pytest.raises(KafkaException):
        AdminClient({"bootstrap.servers": cluster.bootstrap, "logger": _quiet()}).list_topics(
            timeout=2)
