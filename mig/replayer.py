"""The replay worker behind ``mig replica follow``: runs the app under the shim in replay
mode and feeds each logical process the calls the primary recorded, in order.

It reads ``mig.NAME.calls`` from the start (read_uncommitted: see docs/interceptor.md),
checks the app identity record against this host (a different binary, argv or libc is
refused, naming the difference), launches the app, and writes each CallBatch's calls into
the ring of its logical process. A ring that reports a divergence stops the replica with the logical
process, sequence number, Kafka offset and both sides of the mismatch.
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from mig.calls import describe, from_avro
from mig.channel import RawCall, Ring, new_rings
from mig.codec import Codec
from mig.config import AppConfig
from mig.errors import DecodeError, MigError
from mig.identity import app_identity
from mig.kafka import KafkaSettings, consumer
from mig.launch import app_env, launch
from mig.logwriter import LogWriter
from mig.topics import topic_names

__all__ = ["Replayer", "Divergence", "ReplayStats", "compare_identity"]

log = structlog.get_logger("mig.replayer")

RECENT_CALLS = 200_000


class Divergence(MigError):
    """The replica's app did something the log does not say: it is no failover target."""

    exit_code = 3


@dataclass
class ReplayStats:
    calls: int = 0
    batches: int = 0
    last_offset: int = -1
    divergence: str | None = None
    per_lpid: dict[str, int] = field(default_factory=dict)


def compare_identity(recorded: dict[str, Any], local: dict[str, Any]) -> list[str]:
    """Differences that make replay impossible, as 'what: recorded X, here Y' lines."""
    out = []
    for key in ("binary_sha256", "argv", "libc", "env_digest"):
        if recorded[key] != local[key]:
            out.append(f"{key}: recorded {recorded[key]!r}, here {local[key]!r}")
    return out


class Replayer:
    def __init__(self, cfg: AppConfig, settings: KafkaSettings, run_dir: Path, workdir: Path,
                 idle_exit_s: float | None = None) -> None:
        self.cfg = cfg
        self.settings = settings
        self.run_dir = run_dir
        self.workdir = workdir
        self.idle_exit_s = idle_exit_s
        self.codec = Codec.default()
        self.rings: dict[str, Ring] = {}
        self.pending: dict[str, deque[tuple[RawCall, int]]] = {}
        # (lpid, seq) -> (recorded call, Kafka offset), for divergence reports
        self.recorded: dict[tuple[str, int], tuple[dict[str, Any], int]] = {}
        self.stats = ReplayStats()
        self.proc: Any = None
        self.epoch = 0
        self.member = f"{socket.gethostname()}-replica-{os.getpid()}"
        self.status: LogWriter

    def run(self, stop: Any = None) -> ReplayStats:
        """Replay until the app exits, ``stop()`` is true, or the log stays idle for
        ``idle_exit_s`` after the app's last call. Raises Divergence on a mismatch."""
        from confluent_kafka import KafkaError, TopicPartition

        topic = topic_names(self.cfg.name)["calls"]
        # read_uncommitted: every record acknowledged by the in-sync replicas, as soon as it
        # is (docs/interceptor.md, "When is a record committed")
        cons = consumer(self.settings, **{"group.id": f"mig-replica-{self.cfg.name}",
                                          "enable.partition.eof": False,
                                          "isolation.level": "read_uncommitted"})
        meta = cons.list_topics(topic, timeout=10)
        if topic not in meta.topics or meta.topics[topic].error is not None:
            raise MigError(f"topic {topic} does not exist: has the primary started?")
        cons.assign([TopicPartition(topic, p, 0) for p in meta.topics[topic].partitions])
        self.status = LogWriter(self.settings, self.cfg.name)
        last_input = time.monotonic()
        last_status = 0.0
        try:
            while True:
                if (time.monotonic() - last_status) * 1000 >= self.cfg.replica["heartbeat_ms"]:
                    self._publish_status()
                    last_status = time.monotonic()
                if stop is not None and stop():
                    return self.stats
                msg = cons.poll(0.001 if self._backlog() else 0.05)
                if msg is not None:
                    err = msg.error()
                    if err is not None and err.code() != KafkaError._PARTITION_EOF:
                        raise MigError(f"reading {topic}: {err.str()}")
                    if err is None:
                        self._on_message(msg)
                        last_input = time.monotonic()
                self._discover()
                self._feed()
                self._check()
                if self.proc is not None and self.proc.poll() is not None and not self._backlog():
                    return self.stats
                if (self.idle_exit_s is not None and not self._backlog()
                        and time.monotonic() - last_input > self.idle_exit_s):
                    return self.stats
        finally:
            cons.close()
            self._publish_status(final=True)
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)

    # -- status
    def lag(self) -> tuple[int, int]:
        """(calls received but not yet replayed, ms since the oldest of them was recorded)."""
        queued = [q for q in self.pending.values() if q]
        calls = sum(len(q) for q in queued)
        if not calls:
            return 0, 0
        oldest = min(q[0][0].wall_ns for q in queued)
        return calls, max(0, (time.time_ns() - oldest) // 1_000_000)

    def _publish_status(self, final: bool = False) -> None:
        calls, lag_ms = self.lag()
        health = "diverged" if self.stats.divergence else ("stopped" if final else "replaying")
        self.status.send("control", "mig.log.MemberStatus", {
            "app": self.cfg.name, "member": self.member, "role": "REPLICA",
            "epoch": self.epoch, "lag_records": calls, "lag_ms": lag_ms, "health": health,
            "ts_ms": int(time.time() * 1000)}, key=self.member)
        try:
            self.status.commit()
        except MigError as exc:  # status is best effort: replay goes on without it
            log.warning("mig.replayer.status_failed", error=str(exc))
        log.debug("mig.replayer.lag", calls=calls, lag_ms=lag_ms, replayed=self.stats.calls)

    # -- input
    def _on_message(self, msg: Any) -> None:
        try:
            name, rec = self.codec.decode_message(msg.value(), msg.headers())
        except DecodeError as exc:
            raise MigError(f"{msg.topic()}[{msg.partition()}]@{msg.offset()}: cannot replay an"
                           f" undecodable record: {exc.reason}") from exc
        self.stats.last_offset = msg.offset()
        if name == "mig.log.AppIdentity":
            self._start_app(rec)
        elif name == "mig.log.CallBatch":
            if self.proc is None:
                raise MigError(f"offset {msg.offset()}: calls before the app identity record")
            lpid = rec["lpid"]
            self.epoch = max(self.epoch, rec["epoch"])
            queue = self.pending.setdefault(lpid, deque())
            for call in rec["calls"]:
                queue.append((from_avro(call), msg.offset()))
                self.recorded[(lpid, call["seq"])] = (call, msg.offset())
            while len(self.recorded) > RECENT_CALLS:  # divergences concern recent calls
                self.recorded.pop(next(iter(self.recorded)))
            self.stats.batches += 1

    def _start_app(self, recorded: dict[str, Any]) -> None:
        if self.proc is not None:
            return  # a later identity (a restarted primary) changes nothing for this run
        local = app_identity(self.cfg.name, self.cfg.command, self.cfg.cwd, app_env(self.cfg))
        problems = compare_identity(recorded, local)
        if problems:
            raise MigError("this host cannot replay the recorded app: " + "; ".join(problems))
        self.proc = launch(self.cfg, "replay", self.run_dir, self.workdir,
                           self.workdir / "mig-app.log")
        log.info("mig.replayer.started", app=self.cfg.name, pid=self.proc.pid)

    # -- feeding the shim
    def _discover(self) -> None:
        if self.proc is not None:  # rings before the launch are a previous run's
            self.rings.update(new_rings(self.run_dir, self.rings))

    def _backlog(self) -> bool:
        return any(self.pending.get(lpid) for lpid in self.rings)

    def _feed(self) -> None:
        for lpid, ring in self.rings.items():
            queue = self.pending.get(lpid)
            fed = 0
            while queue and ring.put(queue[0][0]):
                queue.popleft()
                fed += 1
            if fed:
                self.stats.calls += fed
                self.stats.per_lpid[lpid] = self.stats.per_lpid.get(lpid, 0) + fed
                ring.wake_reader()

    def _check(self) -> None:
        for lpid, ring in self.rings.items():
            div = ring.divergence()
            if div is None:
                continue
            seq, text = div
            rec, offset = self.recorded.get((lpid, seq), (None, -1))
            where = f"lpid {lpid} seq {seq}"
            recorded = describe(rec) if rec else "?"
            self.stats.divergence = (f"divergence at {where} (calls offset {offset}): {text};"
                                     f" the log has {recorded}")
            raise Divergence(self.stats.divergence)
