"""One KRaft Kafka process (combined broker + controller): config, storage format, start, stop.

Both the embedded single-node broker and the multi-node test cluster are made of these.
The process runs in its own session so it outlives the command that started it; its pid is
kept in ``<dir>/kafka.pid`` and its output in ``<dir>/server.log`` and ``<dir>/stdout.log``.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from mig.broker.jars import classpath, ensure_jars, java_command
from mig.broker.secure import SaslListener
from mig.deadline import Deadline
from mig.errors import BrokerError

__all__ = ["KafkaNode", "free_ports", "new_cluster_id"]

_LOG4J2 = """status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = file
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
"""


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 at the time of the call."""
    socks, ports = [], []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        socks.append(sock)
        ports.append(sock.getsockname()[1])
    for sock in socks:
        sock.close()
    return ports


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding. Never one that
    starts with '-': the storage tool's argument parser would take it for an option (1 in
    64 ids did, and formatting failed)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _state(stat: Path) -> str:
    """The state letter of a /proc stat file (R, S, T, Z...: after the name's ``)``)."""
    return stat.read_text().rsplit(") ", 1)[1][:1]


def _running_threads(pid: int) -> int:
    """Threads of process ``pid`` not stopped (state T, t) nor gone (Z, X, or no longer
    listed)."""
    running = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            state = _state(stat)
        except (OSError, IndexError):
            continue  # the thread ended meanwhile
        running += state not in ("T", "t", "Z", "X")
    return running


@dataclass
class KafkaNode:
    """A combined broker+controller. ``voters`` empty means a standalone dynamic quorum."""

    node_id: int
    directory: Path
    port: int
    controller_port: int
    host: str = "127.0.0.1"
    heap: str = "512m"
    voters: dict[int, int] = field(default_factory=dict)  # node id -> controller port
    extra: dict[str, str] = field(default_factory=dict)
    sasl: SaslListener | None = None  # an extra SASL_SSL listener (mig/broker/secure.py)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def sasl_bootstrap(self) -> str:
        assert self.sasl is not None
        return f"{self.host}:{self.sasl.port}"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def pid_file(self) -> Path:
        return self.directory / "kafka.pid"

    @property
    def server_log(self) -> Path:
        return self.directory / "server.log"

    def properties(self) -> dict[str, str]:
        replicas = str(min(3, max(1, len(self.voters))))
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "listeners": f"PLAINTEXT://{self.host}:{self.port},"
                         f"CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port},"
                                    f"CONTROLLER://{self.host}:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "offsets.topic.replication.factor": replicas,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": str(min(2, int(replicas))),
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": str(min(2, int(replicas))),
            "default.replication.factor": replicas,
            "min.insync.replicas": str(min(2, int(replicas))),
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.segment.bytes": str(64 * 1024 * 1024),
        }
        if self.sasl is not None:
            listener = f",SASL_SSL://{self.host}:{self.sasl.port}"
            props["listeners"] += listener
            props["advertised.listeners"] += listener
            props["listener.security.protocol.map"] += ",SASL_SSL:SASL_SSL"
            props.update(self.sasl.properties())
        if self.voters:
            props["controller.quorum.voters"] = ",".join(
                f"{nid}@{self.host}:{cport}" for nid, cport in sorted(self.voters.items()))
        else:
            props["controller.quorum.bootstrap.servers"] = f"{self.host}:{self.controller_port}"
        props.update(self.extra)
        return props

    def write_config(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.sasl is not None:
            self.sasl.prepare([self.host, "localhost"])
        path = self.directory / "server.properties"
        path.touch(mode=0o600)  # it may hold the keystore and PLAIN users' passwords
        path.write_text("".join(f"{k}={v}\n" for k, v in self.properties().items()))
        (self.directory / "log4j2.properties").write_text(_LOG4J2)
        return path

    def is_formatted(self) -> bool:
        return (self.data_dir / "meta.properties").exists()

    def format(self, cluster_id: str) -> None:
        """Format the node's storage (``StorageTool format``); standalone when no voters."""
        config = self.write_config()
        cmd = [*self._java(), "kafka.tools.StorageTool", "format", "-t", cluster_id,
               "-c", str(config)]
        if not self.voters:
            cmd.append("--standalone")
        if self.sasl is not None:
            cmd += self.sasl.format_args()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise BrokerError(
                f"formatting Kafka storage in {self.data_dir} failed:"
                f" {(proc.stdout + proc.stderr).strip()[-400:]}")

    def start(self) -> int:
        config = self.write_config()
        cmd = [*self._java(), f"-Dkafka.logs.dir={self.directory}",
               f"-Dlog4j2.configurationFile={self.directory / 'log4j2.properties'}",
               "kafka.Kafka", str(config)]
        with open(self.directory / "stdout.log", "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self._proc = proc
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc.pid

    def exited(self) -> bool:
        """True once a process this object started has exited (or none is known to run)."""
        proc = getattr(self, "_proc", None)
        if proc is not None:
            return proc.poll() is not None
        return self.pid() is None

    def pid(self) -> int | None:
        """The pid of this node's live Kafka process, or None."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        if b"kafka.Kafka" not in cmdline or str(self.directory).encode() not in cmdline:
            return None  # pid reused by an unrelated process
        if _state(Path(f"/proc/{pid}/stat")) == "Z":
            return None
        return pid

    def stop(self, timeout: float = 20.0, kill: bool = False) -> bool:
        """Stop the process (SIGTERM, SIGKILL after ``timeout``). False if it was not running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
        deadline = Deadline(timeout)
        while self.pid() is not None:
            _reap(pid)
            if deadline.passed():
                os.kill(pid, signal.SIGKILL)
                deadline.renew(5)
            time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    def pause(self, timeout: float = 5.0) -> None:
        """SIGSTOP this node's Kafka process and return once every thread of it has
        stopped. kill() returns before they have (each stops as it next leaves the
        kernel), and a test that pauses the broker to show that nothing is acknowledged
        meanwhile must not go on while one still answers; nor may a pause of a node that
        is not running pass as done."""
        pid = self.pid()
        if pid is None:
            raise BrokerError(f"cannot pause the Kafka node in {self.directory}: it is not"
                              " running")
        os.kill(pid, signal.SIGSTOP)
        deadline = time.monotonic() + timeout
        while (running := _running_threads(pid)):
            if time.monotonic() > deadline:
                raise BrokerError(f"the Kafka node in {self.directory} (pid {pid}) was sent"
                                  f" SIGSTOP, but {running} of its threads still run after"
                                  f" {timeout:g} s")
            time.sleep(0.0005)

    def resume(self) -> None:
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGCONT)

    def log_tail(self, lines: int = 5) -> str:
        text = ""
        for name in ("stdout.log", "server.log"):
            path = self.directory / name
            if path.exists():
                text += path.read_text(errors="replace")
        interesting = [ln for ln in text.splitlines() if "ERROR" in ln or "Exception" in ln]
        return " | ".join((interesting or text.splitlines())[-lines:])

    def _java(self) -> list[str]:
        java = java_command()  # checked first: without Java the jars are of no use
        libs = ensure_jars()
        return [java, f"-Xmx{self.heap}", f"-Xms{min_heap(self.heap)}",
                "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
                "-cp", classpath(libs)]


def min_heap(heap: str) -> str:
    return "128m" if heap.endswith("m") and int(heap[:-1]) >= 128 else heap


def _reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is our child, so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
