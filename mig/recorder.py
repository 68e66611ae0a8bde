"""The recorder agent behind ``mig primary start``: runs the app under the shim in record
mode, drains its rings into ``mig.NAME.calls`` and answers barriers.

One loop: find new rings, drain every ring and send the calls as CallBatch records (one
Kafka transaction every ``flush_ms``, for fencing). When a thread or a held output waits
at a barrier, the agent waits for Kafka's acknowledgement (acks=all) of everything sent,
raises the rings' ``committed_seq`` and wakes the waiters. docs/interceptor.md ("When is a
record committed") says why an acknowledged record is enough. Heartbeats go to
``mig.NAME.control`` every ``heartbeat_ms``.

The same loop runs on a replica that was promoted (``adopt``): the app is already running
and its rings turn from replay to record as each process goes live. It also reads the
control topic: a newer epoch's promotion, or Kafka refusing our transactional producer,
means another member is primary, and the app is killed at once without releasing another
output (``Fenced``). A ``Migrate`` request, SIGTERM with a hot replica, the maintenance file
or the load trigger start a planned handoff (docs/failover.md).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from mig.auth import authentic
from mig.channel import MODE_RECORD, Ring, new_rings
from mig.checkpointer import PrimaryCheckpointer, snapshot_start
from mig.codec import Codec
from mig.config import AppConfig
from mig.control import ControlView, fresh_s
from mig.elfcheck import check_program
from mig.errors import DecodeError, Fenced, MigError
from mig.fastbatch import BatchEncoder
from mig.identity import app_identity, member_id
from mig.kafka import KafkaSettings, consumer, end_offsets
from mig.launch import app_env, kill_group, launch, private_run_dir
from mig.logwriter import LogWriter
from mig.metrics import Metrics
from mig.topics import ensure_topics, topic_names

__all__ = ["Recorder", "RecordStats"]

log = structlog.get_logger("mig.recorder")


SHIM_FATAL = 86  # the shim's exit code when it stops the app (shim/src/mig_util.c, mig_die)


def shim_fatal_line(app_log: Path) -> str | None:
    """The shim's last "mig-shim: fatal: ..." line in the app's log, without the prefix."""
    try:
        with open(app_log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    lines = [ln for ln in tail.splitlines() if ln.startswith("mig-shim: fatal: ")]
    return lines[-1].removeprefix("mig-shim: fatal: ") if lines else None


@dataclass
class RecordStats:
    calls: int = 0
    batches: int = 0
    commits: int = 0
    barrier_commits: int = 0
    exit_code: int | None = None
    migrated_to: str | None = None  # a planned handoff ended this primary's run
    traps: int = 0  # system calls the shim trapped, all processes (docs/interceptor.md)
    shim_fatal: str | None = None  # the shim's reason, when it stopped the app (exit 86)
    stop_signal: int | None = None  # the signal mig sent the app to stop it (SIGTERM)
    stop_timed_out: bool = False  # it did not end within the stop timeout: SIGKILL

    def unclean(self) -> str | None:
        """Why the app did not stop cleanly: it was killed by a signal other than the one mig
        sent it to stop it (a crash, the OOM killer, an operator's kill -9, or mig's SIGKILL
        when it did not end in time). None when it exited by itself, ended by mig's stop
        signal, or was handed over to another member."""
        code = self.exit_code
        if self.migrated_to or code is None or code >= 0 or -code == self.stop_signal:
            return None
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        if self.stop_timed_out:
            return f"the app did not end after {self._stop_name()} and was killed ({name})"
        return f"the app was killed by {name}"

    def _stop_name(self) -> str:
        return signal.Signals(self.stop_signal).name if self.stop_signal else "the stop"


class Recorder:
    def __init__(self, cfg: AppConfig, settings: KafkaSettings, run_dir: Path,
                 member: str | None = None, epoch: int = 1, flush_ms: int = 5,
                 metrics: Metrics | None = None) -> None:
        self.cfg = cfg
        self.settings = settings
        self.run_dir = run_dir
        self.member = member or member_id()
        self.host = socket.gethostname()
        self.epoch = epoch
        self.flush_ms = flush_ms
        self.rings: dict[str, Ring] = {}
        self.batch_seq: dict[str, int] = {}
        self.sent_seq: dict[str, int] = {}  # lpid -> next seq after the last one sent
        self.stats = RecordStats()
        self._stop = False
        self._stop_handoff_tried = False
        self._migrate_to: str | None = None
        self._migrate_reason = ""
        self._started_ms = int(time.time() * 1000)
        self.stop_timeout_s = 10.0  # SIGTERM to SIGKILL when the app does not end
        # a batch stays well under the topic's max.message.bytes (Avro adds little)
        self.batch_bytes = cfg.topics["max_message_bytes"] // 2
        self.encoder = BatchEncoder(self.batch_bytes)
        self.headers = Codec.default().headers("mig.log.CallBatch")
        # bounded work per loop turn, so commits (and barrier answers) stay regular
        self.drain_bytes = 256 * 1024
        self.control = ControlView(cfg.name, epoch=epoch)
        self.on_turn: Any = None  # adopt(): feeds processes still replaying
        self.last_calls_offset: dict[int, int] = {}
        self._migrate_asked: str | None = None  # why a handoff was asked for, not yet tried
        self._backlog = False  # reading the control topic's records from before our start
        self._view_fresh_at = 0.0  # from then on, hot_replicas() rests on live statuses
        self._next_trigger_check = 0.0
        self._load_high_since: float | None = None
        self.metrics = metrics  # mig/metrics.py, when this member serves them
        # checkpoints when no hot replica takes them (mig/checkpointer.py)
        self.checkpointer = PrimaryCheckpointer(cfg, settings, run_dir, self.member)
        # [app] stdin = "topic" (mig/appinput.py): the pipe, and its feeder once it may run
        self.stdin_pipe: Any = None
        self.feeder: Any = None
        self._feed_when: Any = None  # adopt(): true once every byte the log read is counted

    def run(self) -> RecordStats:
        """Record until the app exits (or SIGTERM/SIGINT stops it). Returns the figures."""
        check_program(self.cfg.command[0], app_env(self.cfg)["PATH"], self.cfg.cwd)
        ensure_topics(self.settings, self.cfg.name, self.cfg.topics,
                      with_input=self.cfg.stdin == "topic")
        self._refuse_existing_recording()
        writer = LogWriter(self.settings, self.cfg.name,
                           transactional_id=f"mig.{self.cfg.name}.primary")
        identity = app_identity(self.cfg.name, self.cfg.command, self.cfg.cwd,
                                app_env(self.cfg))
        writer.send("calls", "mig.log.AppIdentity", identity, key="identity")
        writer.commit()
        self.cfg.state_dir.mkdir(parents=True, exist_ok=True)
        if self.checkpointer.enabled:
            private_run_dir(self.run_dir)
            snapshot_start(self.cfg.cwd, self.run_dir)
        if self.cfg.stdin == "topic":
            from mig.appinput import StdinPipe

            self.stdin_pipe = StdinPipe()
        proc = launch(self.cfg, "record", self.run_dir, self.cfg.cwd,
                      self.cfg.state_dir / "mig-app.log", stdin_pipe=self.stdin_pipe)
        if self.stdin_pipe is not None:
            self.stdin_pipe.close_read_end()
            self._feed_when = lambda: True
        log.info("mig.recorder.started", app=self.cfg.name, pid=proc.pid,
                 barrier_mode=self.cfg.barrier_mode)
        return self._serve(writer, proc)

    def adopt(self, writer: LogWriter, proc: subprocess.Popen[bytes], rings: dict[str, Ring],
              batch_seq: dict[str, int], on_turn: Any = None, stdin_pipe: Any = None,
              replayed: Any = None) -> RecordStats:
        """Go on as the primary of an app a promoted replica was replaying: its processes
        turn their rings around one by one; ``on_turn`` feeds those still replaying. With a
        stdin pipe, its feeder starts once ``replayed()`` says every process has taken the
        last record the log had for it (so the rings count every byte of stdin the log
        read)."""
        self.rings = rings
        self.batch_seq = dict(batch_seq)
        self.on_turn = on_turn
        self.stdin_pipe = stdin_pipe
        if stdin_pipe is not None:
            self._feed_when = replayed or (lambda: True)
        return self._serve(writer, proc)

    def _start_feeder(self) -> None:
        from mig.appinput import Feeder, consumed

        self._feed_when = None
        self.feeder = Feeder(self.settings, self.cfg.name, self.stdin_pipe,
                             consumed(self.run_dir)).start()

    def _serve(self, writer: LogWriter, proc: subprocess.Popen[bytes]) -> RecordStats:
        if self.metrics is not None:
            self.metrics.role("primary", self.epoch)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in
                    (signal.SIGTERM, signal.SIGINT)}
        control = consumer(self.settings, **{"group.id": f"mig-primary-{self.cfg.name}",
                                             "isolation.level": "read_uncommitted",
                                             "enable.partition.eof": True,
                                             "fetch.wait.max.ms": 20})
        try:
            self._follow_control(control)
            self._loop(writer, proc, control)
        except Fenced as exc:
            # another member is primary: not one more output from this app
            kill_group(proc)
            log.error("mig.recorder.fenced", app=self.cfg.name, epoch=self.epoch,
                      reason=str(exc))
            raise
        finally:
            if self.feeder is not None:
                self.feeder.stop()  # a fenced or handed-over primary feeds no more
            control.close()
            self.checkpointer.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if proc.poll() is None:  # the loop failed: nobody serves the app's barriers now
                kill_group(proc)
            self.stats.exit_code = proc.returncode
            for ring in self.rings.values():
                self.stats.traps += ring.traps
                ring.close()
            if proc.returncode == SHIM_FATAL:
                self.stats.shim_fatal = shim_fatal_line(self.cfg.state_dir / "mig-app.log")
        log.info("mig.recorder.stopped", calls=self.stats.calls, commits=self.stats.commits,
                 exit_code=self.stats.exit_code, migrated_to=self.stats.migrated_to)
        return self.stats

    def _follow_control(self, control: Any) -> None:
        """Read the control topic from its start (bounded), then keep up with it."""
        from confluent_kafka import KafkaError, TopicPartition

        topic = topic_names(self.cfg.name)["control"]
        control.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 10
        # what the topic held before: history, not signs of life (a replica whose last
        # status said "replaying" may have died since; a handoff to it would wait out its
        # timeout while the app is frozen)
        self._backlog = True
        try:
            while time.monotonic() < deadline:  # to the end: transaction markers have offsets
                msgs = control.consume(500, 0.01)  # no record has, so wait for the EOF event
                # (short polls: a promoted replica serves its app only after this read)
                for msg in msgs:
                    if msg.error() is None:
                        self._on_control(msg)
                if any(m.error() is not None and m.error().code() == KafkaError._PARTITION_EOF
                       for m in msgs):
                    return
        finally:
            self._backlog = False
            # the replicas' next statuses (every heartbeat_ms) say who is hot
            self._view_fresh_at = time.monotonic() + self._fresh_s()

    def _on_control(self, msg: Any) -> None:
        # a record not signed with the app's keys is not acted on
        if not authentic(self.settings.auth, "control", msg, "mig.recorder"):
            return
        try:
            name, rec = Codec.default().decode_message(msg.value(), msg.headers())
        except DecodeError as exc:
            log.warning("mig.recorder.control_undecodable", offset=msg.offset(),
                        reason=exc.reason)
            return
        self.control.on_record(name, rec, now=0.0 if self._backlog else None)
        if name == "mig.log.Promotion" and rec["new_epoch"] > self.epoch:
            raise Fenced(f"{rec['member']} became primary of {self.cfg.name} at epoch"
                         f" {rec['new_epoch']} (this primary had epoch {self.epoch})")
        if name == "mig.log.CheckpointRequest" and rec["ts_ms"] >= self._started_ms:
            if not self.control.hot_in_topic():  # else that replica answers it
                self.checkpointer.ask(rec["event_id"])
        if name == "mig.log.Migrate" and rec["ts_ms"] >= self._started_ms:
            self._migrate_asked = rec["event_id"]
            self._migrate_to = rec["to_member"]
            self._migrate_reason = rec["reason"]

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

    def _loop(self, writer: LogWriter, proc: subprocess.Popen[bytes], control: Any) -> None:
        last_commit = time.monotonic()
        stop_sent: float | None = None
        last_scan = 0.0
        last_beat = 0.0
        last_control = 0.0
        idle = 0
        while True:
            now = time.monotonic()
            if now - last_scan > 0.005:
                self._discover()
                if self.on_turn is not None:
                    self.on_turn()
                if self._feed_when is not None and self._feed_when():
                    self._start_feeder()
                last_scan = now
            if now - last_control > 0.01:
                for msg in control.consume(100, 0):
                    if msg.error() is None:
                        self._on_control(msg)
                last_control = now
                self._check_triggers(now)
                self.checkpointer.step(now, self.stats.calls, bool(self._hot(now)))
                while self.checkpointer.failed_requests:
                    event, why = self.checkpointer.failed_requests.pop(0)
                    self._request_failed(writer, "checkpoint", event, why)
                if self._migrate_asked is not None and stop_sent is None:
                    if self._handoff(writer, proc, control):
                        return
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
                if (not self._stop_handoff_tried and self._migrate_asked is None
                        and self.cfg.failover.get("migrate_on_stop", True) and self._hot(now)):
                    # hand the app to a hot replica instead (the handoff runs at the next
                    # control turn; if it fails, the app is stopped after all)
                    self._stop_handoff_tried = True
                    self._ask_migrate("SIGTERM to mig primary")
                elif (not self._stop_handoff_tried and now < self._view_fresh_at
                      and self.cfg.failover.get("migrate_on_stop", True)):
                    pass  # just started: which replicas are hot is known within a second
                elif self._migrate_asked is None:
                    # ask the app to end, and keep answering its barriers while it does:
                    # its last outputs (held until acknowledged) are part of ending
                    proc.terminate()  # the holder passes it on to the app (mig/holder.py)
                    self.stats.stop_signal = signal.SIGTERM
                    # (not `now`: a handoff that failed this turn took its whole timeout,
                    # and the app's 10 s to end would have been over before they began)
                    stop_sent = time.monotonic()
            if stop_sent is not None and now - stop_sent > self.stop_timeout_s:
                proc.kill()
                self.stats.stop_timed_out = True
                stop_sent = now + 3600  # once
            if proc.poll() is not None:
                self._discover()
                while self._drain(writer):  # everything the app wrote before it ended
                    pass
                # the app ended here: replicas must not take it over as if we had died
                writer.send("control", "mig.log.MemberStatus", {
                    "app": self.cfg.name, "member": self.member, "role": "PRIMARY",
                    "epoch": self.epoch, "lag_records": 0, "lag_ms": 0, "health": "stopped",
                    "ts_ms": int(time.time() * 1000), "host": self.host,
                    "calls_offset": -1}, key=self.member)
                self._commit(writer)
                return
            if sent:
                idle = 0
            else:
                idle = min(idle + 1, 10)
                time.sleep(0.0001 * idle)

    # -- planned handoff
    def _fresh_s(self) -> float:
        return fresh_s(self.cfg.replica["heartbeat_ms"])

    def _hot(self, now: float) -> list[dict[str, Any]]:
        return self.control.hot_replicas(now, self._fresh_s())

    def _ask_migrate(self, reason: str, to: str | None = None) -> None:
        self._migrate_asked = f"{self.member}-{int(time.time() * 1000)}"
        self._migrate_to = to
        self._migrate_reason = reason

    def _check_triggers(self, now: float) -> None:
        """The maintenance file and the load threshold (app.toml [failover])."""
        if now < self._next_trigger_check or self._migrate_asked is not None:
            return
        self._next_trigger_check = now + 0.5
        fo = self.cfg.failover
        if fo.get("maintenance_file"):
            path = self.cfg.cwd / fo["maintenance_file"]
            if path.exists() and self._hot(now):
                self._ask_migrate(f"maintenance file {path}")
                self._next_trigger_check = now + 10  # if it fails, not again at once
                return
        if fo.get("load_threshold"):
            try:
                load = float(Path("/proc/loadavg").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                return
            if load <= fo["load_threshold"]:
                self._load_high_since = None
            elif self._load_high_since is None:
                self._load_high_since = now
            elif now - self._load_high_since >= 10 and self._hot(now):
                self._ask_migrate(f"load average {load:.1f} above {fo['load_threshold']}")
                self._load_high_since = None
                self._next_trigger_check = now + 30

    def _handoff(self, writer: LogWriter, proc: subprocess.Popen[bytes], control: Any) -> bool:
        """Planned migration: stop taking input at a barrier, commit everything, name the
        successor in a Handoff record with the log's end, and wait for its promotion.
        True when the app was handed over (this primary is done)."""
        event, self._migrate_asked = self._migrate_asked, None
        assert event is not None
        now = time.monotonic()
        hot = self._hot(now)
        to = self._migrate_to or (hot[0]["member"] if hot else None)
        if to is None or to not in {r["member"] for r in hot}:
            why = "no hot replica" if not hot else f"{to} is not a hot replica"
            log.warning("mig.recorder.migrate_refused", event_id=event, to=to, reason=why,
                        hot=[r["member"] for r in hot])
            if hot:
                why += f" (hot: {', '.join(r['member'] for r in hot)})"
            else:  # what the replicas said of themselves last
                seen = sorted(f"{s.record['member']} {s.record['health']}"
                              for s in self.control.statuses.values()
                              if s.record["role"] == "REPLICA")
                why += f" (replicas: {', '.join(seen)})" if seen else " (no replica reported)"
            self._request_failed(writer, "migrate", event, why)
            return False
        frozen_ms = int(time.time() * 1000)
        log.info("mig.recorder.handoff_start", event_id=event, to=to,
                 reason=self._migrate_reason)
        for ring in self.rings.values():
            if not ring.freeze():
                log.warning("mig.recorder.freeze_slow", lpid=ring.lpid)
        while self._drain(writer):
            pass
        self._commit(writer)
        ends = {p: o for p, o in end_offsets(control, topic_names(self.cfg.name)["calls"]).items()}
        writer.send("control", "mig.log.Handoff", {
            "app": self.cfg.name, "event_id": event, "from_member": self.member,
            "to_member": to, "epoch": self.epoch,
            "calls_offsets": [{"partition": p, "offset": o} for p, o in sorted(ends.items())],
            "frozen_ts_ms": frozen_ms, "ts_ms": int(time.time() * 1000)}, key=self.member)
        writer.commit()
        log.info("mig.recorder.handoff_written", to=to,
                 freeze_to_handoff_ms=int(time.time() * 1000) - frozen_ms, calls_end=ends)
        deadline = now + self.cfg.failover["handoff_timeout_ms"] / 1000
        while time.monotonic() < deadline:
            try:
                for msg in control.consume(100, 0.05):
                    if msg.error() is None:
                        self._on_control(msg)
            except Fenced as exc:
                # the successor is primary: our held outputs were all released (everything
                # was acknowledged before the handoff); the app must not run on
                kill_group(proc)
                self.stats.migrated_to = to
                log.info("mig.recorder.handed_over", to=to, reason=str(exc))
                return True
        log.warning("mig.recorder.handoff_timeout", event_id=event, to=to)
        for ring in self.rings.values():
            ring.thaw()
        self._request_failed(writer, "migrate", event, f"{to} did not become primary within"
                             f" {self.cfg.failover.get('handoff_timeout_ms', 10000)} ms of"
                             " the handoff; the app runs on here")
        return False

    def _request_failed(self, writer: LogWriter, request: str, event: str, why: str) -> None:
        """Say in the control topic, at once, why a request failed here (RequestFailed,
        committed with the next transaction): mig migrate and mig checkpoint wait for it."""
        writer.send("control", "mig.log.RequestFailed", {
            "app": self.cfg.name, "event_id": event, "request": request,
            "member": self.member, "reason": why, "ts_ms": int(time.time() * 1000)},
            key=event)
        log.info("mig.recorder.request_failed", request=request, event_id=event, reason=why)

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
            if ring.mode != MODE_RECORD:
                continue  # adopt(): this process is still replaying
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
                if self.metrics is not None:
                    self.metrics.calls("recorded", batch.count)
                    self.metrics.log_bytes("recorded", len(batch.value))
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
        started = time.monotonic()
        writer.flush()
        if self.metrics is not None:
            self.metrics.commit(time.monotonic() - started)
        self.stats.barrier_commits += 1
        self._release_rings()

    def _commit(self, writer: LogWriter) -> None:
        """Commit the open transaction: replicas reading read_committed see the records."""
        started = time.monotonic()
        committed = writer.commit()
        if self.metrics is not None:
            self.metrics.commit(time.monotonic() - started)
        for topic, partition, offset in committed:
            if topic.endswith(".calls"):
                self.last_calls_offset[partition] = max(
                    offset, self.last_calls_offset.get(partition, -1))
        self.stats.commits += 1
        self._release_rings()

    def _release_rings(self) -> None:
        for lpid, ring in self.rings.items():
            if lpid in self.sent_seq:
                ring.commit(self.sent_seq[lpid])

    def _heartbeat(self, writer: LogWriter) -> None:
        writer.send("control", "mig.log.Heartbeat", {
            "app": self.cfg.name, "member": self.member, "role": "PRIMARY",
            "epoch": self.epoch, "ts_ms": int(time.time() * 1000),
            "calls_offset": max(self.last_calls_offset.values(), default=-1),
            "host": self.host}, key=self.member)
