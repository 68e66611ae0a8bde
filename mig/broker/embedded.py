"""The embedded single-node Kafka broker behind ``mig broker up | down | status``.

It lives under ``MIG_HOME/broker`` (data, logs, pid, ``broker.json`` with its ports). When a
command needs Kafka and the app config names none, it uses this broker. ``up`` is
idempotent: a running, answering broker is left alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import structlog

from mig.broker.jars import KAFKA_VERSION
from mig.broker.node import KafkaNode, new_cluster_id
from mig.broker.secure import SaslListener
from mig.deadline import Deadline, retry
from mig.errors import BrokerError, KafkaUnavailable
from mig.kafka.clients import KafkaSettings, wait_reachable
from mig.paths import mig_home

__all__ = ["EmbeddedBroker", "BrokerStatus", "DEFAULT_PORT", "DEFAULT_CONTROLLER_PORT"]

DEFAULT_PORT = 9092
DEFAULT_CONTROLLER_PORT = 9093

log = structlog.get_logger("mig.broker")


@dataclass
class BrokerStatus:
    running: bool
    answering: bool
    pid: int | None
    bootstrap: str
    directory: str
    kafka_version: str
    brokers: int = 0


class EmbeddedBroker:
    def __init__(self, home: Path | None = None, port: int | None = None,
                 controller_port: int | None = None, heap: str = "512m",
                 host: str = "127.0.0.1", sasl: SaslListener | None = None) -> None:
        self.directory = (home or mig_home()) / "broker"
        saved = self._saved()
        self._explicit_ports = port is not None or controller_port is not None
        self.port = port or saved.get("port", DEFAULT_PORT)
        self.controller_port = controller_port or saved.get(
            "controller_port", DEFAULT_CONTROLLER_PORT)
        self.host = host
        self.node = KafkaNode(node_id=1, directory=self.directory, port=self.port,
                              controller_port=self.controller_port, heap=heap, host=host,
                              sasl=sasl)

    @property
    def settings(self) -> KafkaSettings:
        return KafkaSettings(f"{self.host}:{self.port}", source="embedded")

    def sasl_settings(self, user: str, password: str,
                      mechanism: str = "SCRAM-SHA-512") -> KafkaSettings:
        """Settings for the SASL_SSL listener (a broker started with ``sasl``)."""
        sasl = self.node.sasl
        if sasl is None:
            raise BrokerError("this broker has no SASL_SSL listener")
        return KafkaSettings(self.node.sasl_bootstrap, {
            "security.protocol": "SASL_SSL", "ssl.ca.location": str(sasl.ca_pem),
            "sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password},
            source="embedded")

    def up(self, timeout: float = 60.0) -> BrokerStatus:
        """Start the broker (fetching jars and formatting storage on first use) and wait
        until it answers. Returns its status; a broker already up is left as it is."""
        saved = self._saved()
        if saved and (saved["port"], saved["controller_port"]) != (self.port, self.controller_port):
            if self.node.pid() is not None or self.node.is_formatted():
                raise BrokerError(
                    f"the embedded broker in {self.directory} uses ports {saved['port']}/"
                    f"{saved['controller_port']}; stop it and reset it with"
                    " `mig broker down --purge` to change ports")
        if self.node.pid() is None:
            if not self.node.is_formatted():
                self.node.format(new_cluster_id())
            self._save()
            pid = self.node.start()
            log.info("mig.broker.starting", pid=pid, bootstrap=self.settings.bootstrap_servers)
        self._wait_answering(timeout)
        return self.status()

    def down(self, purge: bool = False) -> bool:
        """Stop the broker; with ``purge`` also delete its data. False if it was not running."""
        was_running = self.node.stop()
        if purge and self.directory.exists():
            import shutil

            shutil.rmtree(self.directory)
        return was_running

    def status(self, timeout: float = 3.0) -> BrokerStatus:
        pid = self.node.pid()
        brokers = 0
        if pid is not None:
            try:
                brokers = wait_reachable(self.settings, timeout=timeout)
            except KafkaUnavailable:
                brokers = 0
        return BrokerStatus(running=pid is not None, answering=brokers > 0, pid=pid,
                            bootstrap=self.settings.bootstrap_servers,
                            directory=str(self.directory), kafka_version=KAFKA_VERSION,
                            brokers=brokers)

    def _wait_answering(self, timeout: float) -> None:
        def answering(deadline: Deadline) -> None:
            if self.node.exited():
                raise BrokerError(
                    f"the Kafka broker exited during start-up: {self.node.log_tail()}"
                    f" (logs: {self.directory})")
            wait_reachable(self.settings, timeout=deadline.left(0.2, 2.0))

        try:
            retry(answering, timeout, on=KafkaUnavailable, pause=0)
        except KafkaUnavailable:
            raise BrokerError(
                f"the Kafka broker did not answer at {self.settings.bootstrap_servers}"
                f" within {timeout:g} s (logs: {self.directory})") from None

    def _saved(self) -> dict[str, int]:
        path = self.directory / "broker.json"
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            return {}

    def _save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "broker.json").write_text(json.dumps(
            {"port": self.port, "controller_port": self.controller_port}) + "\n")


def status_dict(status: BrokerStatus) -> dict[str, object]:
    return asdict(status)
