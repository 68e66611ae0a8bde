"""A local multi-node KRaft cluster on 127.0.0.1 for fault tests.

Every node is a combined broker+controller with a static voter set, so any single node can
be killed, paused or restarted while the other two keep quorum. Topics default to
replication factor 3 and min.insync.replicas 2 (for three nodes).
"""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType

from mig.broker.node import KafkaNode, free_ports, new_cluster_id
from mig.errors import BrokerError, KafkaUnavailable
from mig.kafka.clients import KafkaSettings, wait_reachable

__all__ = ["LocalCluster", "free_ports"]


class LocalCluster:
    """``size`` Kafka nodes under ``root``; use as a context manager (stops on exit)."""

    def __init__(self, root: Path, size: int = 3, heap: str = "384m",
                 host: str = "127.0.0.1") -> None:
        ports = free_ports(2 * size)
        voters = {i + 1: ports[size + i] for i in range(size)}
        # fault tests want a dead broker fenced (and its partitions' leadership moved) in
        # about 2 s rather than the default 9 s
        fast = {"broker.session.timeout.ms": "2000", "broker.heartbeat.interval.ms": "250"}
        self.nodes = [
            KafkaNode(node_id=i + 1, directory=root / f"node{i + 1}", port=ports[i],
                      controller_port=ports[size + i], host=host, heap=heap, voters=voters,
                      extra=fast)
            for i in range(size)
        ]

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def settings(self) -> KafkaSettings:
        return KafkaSettings(self.bootstrap, source="cluster")

    def node(self, node_id: int) -> KafkaNode:
        return self.nodes[node_id - 1]

    def start(self, timeout: float = 90.0) -> None:
        cluster_id = new_cluster_id()
        for node in self.nodes:
            if not node.is_formatted():
                node.format(cluster_id)
        for node in self.nodes:
            node.start()
        self.wait_brokers(len(self.nodes), timeout)

    def wait_brokers(self, count: int, timeout: float = 60.0) -> None:
        """Wait until ``count`` brokers are registered in the cluster's metadata."""
        deadline = time.monotonic() + timeout
        while True:
            dead = [n.node_id for n in self.nodes if n.exited() and n.pid() is None]
            try:
                seen = wait_reachable(self.settings, timeout=2.0)
            except KafkaUnavailable:
                seen = 0
            if seen >= count:
                return
            if time.monotonic() >= deadline:
                tails = "; ".join(f"node{n.node_id}: {n.log_tail(2)}" for n in self.nodes)
                raise BrokerError(f"cluster has {seen}/{count} brokers after {timeout:g} s"
                                  f" (exited: {dead}); {tails}")
            time.sleep(0.3)

    def wait_leader(self, topic: str, partition: int = 0, timeout: float = 30.0) -> int:
        """Wait until ``topic``'s partition is led by a live node; return the leader's id."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(self.settings.as_librdkafka_dict())
        deadline = time.monotonic() + timeout
        while True:
            alive = {n.node_id for n in self.nodes if n.pid() is not None}
            try:
                meta = admin.list_topics(topic, timeout=2.0)
                leader = meta.topics[topic].partitions[partition].leader
                if leader in alive:
                    return int(leader)
            except Exception:  # noqa: BLE001 - metadata not available yet: keep waiting
                pass
            if time.monotonic() >= deadline:
                raise BrokerError(f"{topic}[{partition}] has no live leader after {timeout:g} s")
            time.sleep(0.2)

    def kill(self, node_id: int) -> None:
        self.node(node_id).stop(kill=True)

    def restart(self, node_id: int) -> None:
        self.node(node_id).start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every node at once (a lone last node cannot shut down gracefully without
        quorum, so the grace period is short and SIGKILL follows)."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda node: node.stop(timeout=timeout), self.nodes))

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
