"""The recorder agent behind ``mig primary start``: runs the app under the shim in record
mode, drains its rings into ``mig.NAME.calls`` and answers barriers.

One loop: find new rings, drain every ring and send the calls as CallBatch records (one
Kafka transaction every ``flush_ms``, for fencing). When a thread or a held output waits
at a barrier, the agent waits for Kafka's acknowledgement (acks=all) of everything sent,
raises the rings' ``committed_seq`` and wakes the waiters. docs/interceptor.md ("When is a
record committed") says why an acknowledged record is enough. Heartbeats go to
``mig.NAME.control`` every ``heartbeat_ms``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from mig.channel import Ring, new_rings
from mig.codec import Codec
from mig.config import AppConfig
from mig.elfcheck import check_program
from mig.errors import MigError
from mig.fastbatch import BatchEncoder
from mig.identity import app_identity
from mig.kafka import KafkaSettings, consumer, end_offsets
from mig.launch import app_env, launch
from mig.logwriter import LogWriter
from mig.topics import ensure_topics, topic_names

__all__ = ["Recorder", "RecordStats"]

log = structlog.get_logger("mig.recorder")


@dataclass
class RecordStats:
    calls: int = 0
    batches: int = 0
    commits: int = 0
    barrier_commits: int = 0
    exit_code: int | None = None
    per_lpid: dict[str, int] = field(default_factory=dict)


class Recorder:
    def __init__(self, cfg: AppConfig, settings: KafkaSettings, run_dir: Path,
                 member: str | None = None, epoch: int = 1, flush_ms: int = 5) -> None:
        self.cfg = cfg
        self.settings = settings
        self.run_dir = run_dir
        self.member = member or f"{socket.gethostname()}-{os.getpid()}"
        self.epoch = epoch
        self.flush_ms = flush_ms
        self.rings: dict[str, Ring] = {}
        self.batch_seq: dict[str, int] = {}
        self.sent_seq: dict[str, int] = {}  # lpid -> next seq after the last one sent
        self.stats = RecordStats()
        self._stop = False
        self.stop_timeout_s = 10.0  # SIGTERM to SIGKILL when the app does not end
        # a batch stays well under the topic's max.message.bytes (Avro adds little)
        self.batch_bytes = cfg.topics["max_message_bytes"] // 2
        self.encoder = BatchEncoder(self.batch_bytes)
        self.headers = Codec.default().headers("mig.log.CallBatch")
        # bounded work per loop turn, so commits (and barrier answers) stay regular
        self.drain_bytes = 256 * 1024

    def run(self) -> RecordStats:
        """Record until the app exits (or SIGTERM/SIGINT stops it). Returns the figures."""
        check_program(self.cfg.command[0], app_env(self.cfg)["PATH"])
        ensure_topics(self.settings, self.cfg.name, self.cfg.topics)
        self._refuse_existing_recording()
        writer = LogWriter(self.settings, self.cfg.name,
                           transactional_id=f"mig.{self.cfg.name}.primary")
        identity = app_identity(self.cfg.name, self.cfg.command, self.cfg.cwd,
                                app_env(self.cfg))
        writer.send("calls", "mig.log.AppIdentity", identity, key="identity")
        writer.commit()
        self.cfg.state_dir.mkdir(parents=True, exist_ok=True)
        proc = launch(self.cfg, "record", self.run_dir, self.cfg.cwd,
                      self.cfg.state_dir / "mig-app.log")
        log.info("mig.recorder.started", app=self.cfg.name, pid=proc.pid,
                 barrier_mode=self.cfg.barrier_mode)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in
                    (signal.SIGTERM, signal.SIGINT)}
        try:
            self._loop(writer, proc)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if proc.poll() is None:  # the loop failed: nobody serves the app's barriers now
                proc.kill()
                proc.wait(10)
            self.stats.exit_code = proc.returncode
            for ring in self.rings.values():
                ring.close()
        log.info("mig.recorder.stopped", calls=self.stats.calls, commits=self.stats.commits,
                 exit_code=self.stats.exit_code)
        return self.stats

    def _refuse_existing_recording(self) -> None:
        """A second primary on a log that holds a recording would interleave two runs under
        one epoch; continuing a log is promotion's job (epochs), not a fresh start's."""
        topic = topic_names(self.cfg.name)["calls"]
        cons = consumer(self.settings, **{"group.id": f"mig-recorder-{self.cfg.name}"})
        try:
            held = sum(end_offsets(cons, topic).values())
        finally:
            cons.close()
        if held:
            raise MigError(f"{topic} already holds a recording ({held} records): a primary"
                           " starts on an empty log; use a new app name, or delete the app's"
                           " topics to start over")

    def _on_signal(self, signum: int, frame: object) -> None:
        self._stop = True

    def _loop(self, writer: LogWriter, proc: subprocess.Popen[bytes]) -> None:
        last_commit = time.monotonic()
        stop_sent: float | None = None
        last_scan = 0.0
        last_beat = 0.0
        idle = 0
        while True:
            now = time.monotonic()
            if now - last_scan > 0.005:
                self._discover()
                last_scan = now
            sent = self._drain(writer)
            waiting = any(r.barrier_seq > r.committed_seq for r in self.rings.values())
            if waiting and (sent or self._unacked()):
                self._acknowledge(writer)
            if writer.open_transaction and (now - last_commit) * 1000 >= self.flush_ms:
                self._commit(writer)
                last_commit = now
            if (now - last_beat) * 1000 >= self.cfg.replica["heartbeat_ms"]:
                self._heartbeat(writer)
                last_beat = now
            if self._stop and stop_sent is None:
                # ask the app to end, and keep answering its barriers while it does: its
                # last outputs (held until acknowledged) are part of ending
                proc.terminate()
                stop_sent = now
            if stop_sent is not None and now - stop_sent > self.stop_timeout_s:
                proc.kill()
                stop_sent = now + 3600  # once
            if proc.poll() is not None:
                self._discover()
                while self._drain(writer):  # everything the app wrote before it ended
                    pass
                self._commit(writer)
                return
            if sent:
                idle = 0
            else:
                idle = min(idle + 1, 10)
                time.sleep(0.0001 * idle)

    def _discover(self) -> None:
        for lpid, ring in new_rings(self.run_dir, self.rings).items():
            self.rings[lpid] = ring
            self.batch_seq.setdefault(lpid, 0)
            log.info("mig.recorder.process", lpid=lpid, pid=ring.pid)

    def _drain(self, writer: LogWriter) -> int:
        """Move what the rings hold into CallBatch records (at most ``drain_bytes`` of ring
        per process per turn). Returns the number of calls sent."""
        sent = 0
        for lpid, ring in self.rings.items():
            start = pos = ring.tail
            head = ring.head
            # the budget bounds how much is taken per turn, never where a record may end
            while pos < head and pos - start < self.drain_bytes:
                batch, pos = self.encoder.encode(
                    ring, pos, head, self.cfg.name, self.epoch, lpid, self.batch_seq[lpid],
                    time.time_ns())
                if batch is None:
                    continue
                writer.send_raw("calls", batch.value, key=lpid, headers=self.headers)
                self.batch_seq[lpid] += 1
                self.sent_seq[lpid] = batch.last_seq + 1
                self.stats.batches += 1
                self.stats.calls += batch.count
                sent += batch.count
            if pos != start:
                ring.release(pos)
        return sent

    def _unacked(self) -> bool:
        return any(self.sent_seq.get(lpid, 0) > ring.committed_seq
                   for lpid, ring in self.rings.items())

    def _acknowledge(self, writer: LogWriter) -> None:
        """Answer barriers: once every record sent is acknowledged by all in-sync replicas
        it is in the log for good (a promoting replica fences, then reads the log to its
        end read_uncommitted: docs/interceptor.md), so waiting outputs may go."""
        writer.flush()
        self.stats.barrier_commits += 1
        self._release_rings()

    def _commit(self, writer: LogWriter) -> None:
        """Commit the open transaction: replicas reading read_committed see the records."""
        writer.commit()
        self.stats.commits += 1
        self._release_rings()

    def _release_rings(self) -> None:
        for lpid, ring in self.rings.items():
            if lpid in self.sent_seq:
                ring.commit(self.sent_seq[lpid])

    def _heartbeat(self, writer: LogWriter) -> None:
        writer.send("control", "mig.log.Heartbeat", {
            "app": self.cfg.name, "member": self.member, "role": "PRIMARY",
            "epoch": self.epoch, "ts_ms": int(time.time() * 1000), "calls_offset": -1},
            key=self.member)
