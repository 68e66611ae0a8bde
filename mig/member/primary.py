"""The recorder agent behind ``mig primary start``: runs the app under the shim in record
mode, drains its rings into ``mig.NAME.calls`` and answers barriers.

One loop: find new rings, drain every ring and send the calls as CallBatch records (one
Kafka transaction every ``flush_ms``, 100 ms, for fencing). A thread or a held output that
waits at a barrier rings its ring's doorbell; the agent sleeps on the doorbells between
turns (mig/ring/doorbell.py), not blindly. Kafka's acknowledgements (acks=all) are taken as
they come (by librdkafka's broker thread through the native pump, or by an acknowledgement
thread on the Python path), and each releases, in send order, every waiter it covers: the
rings' ``committed_seq`` rises and the waiters wake (group commit, mig/member/commit.py).
docs/interceptor.md ("When is a record committed") says why an acknowledged record is
enough. Heartbeats go to ``mig.NAME.control`` every ``heartbeat_ms``.

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
from collections import deque
from pathlib import Path
from typing import Any

import structlog

from mig.checkpoint.local import PrimaryCheckpointer, snapshot_start
from mig.config import AppConfig
from mig.control.view import ControlView
from mig.errors import Fenced, MigError
from mig.kafka.clients import KafkaSettings, consumer, end_offsets
from mig.kafka.reader import END, Reader
from mig.kafka.topics import ensure_topics, topic_names
from mig.kafka.writer import LogWriter
from mig.member.commit import (
    ASYNC_PACE_S,
    CONTROL_IDLE_S,
    CONTROL_S,
    QUIET_S,
    RING_SCAN_S,
    TURN_S,
    Committing,
    batch_bytes,
    record_linger_ms,
)
from mig.member.following import Following
from mig.member.handoff import Handing
from mig.member.launch import app_env, kill_group, launch, private_run_dir
from mig.member.metrics import Metrics
from mig.member.record_state import RecordStats
from mig.ops.elfcheck import check_program
from mig.ring.batch import BatchEncoder
from mig.ring.doorbell import Doorbells
from mig.ring.memory import MODE_RECORD, SCAN_S, STATE_EXITED, Ring
from mig.wire.codec import Codec
from mig.wire.identity import app_identity, member_id

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


class Recorder(Handing, Committing, Following):
    """A primary: its loop and the control topic it follows. The planned handoff
    (mig/member/handoff.py) and the output commit (mig/member/commit.py) are its parts;
    this class holds the state they share."""

    def __init__(self, cfg: AppConfig, settings: KafkaSettings, run_dir: Path,
                 member: str | None = None, epoch: int = 1, flush_ms: int = 100,
                 metrics: Metrics | None = None) -> None:
        self.cfg = cfg
        self.settings = settings
        self.run_dir = run_dir
        self.member = member or member_id()
        self.host = socket.gethostname()
        self.epoch = epoch
        self.flush_ms = flush_ms
        self.rings = {}
        self.batch_seq = {}
        self.sent_seq = {}  # lpid -> next seq after the last one sent
        self._in_flight = deque()  # batches sent, not yet released (mig/member/commit.py)
        self.bells = Doorbells()
        self.stats = RecordStats()
        self._stop = False
        self._stop_handoff_tried = False
        self._migrate_to = None
        self._migrate_reason = ""
        self._started_ms = int(time.time() * 1000)
        self.stop_timeout_s = 10.0  # SIGTERM to SIGKILL when the app does not end
        self.batch_bytes = batch_bytes(cfg)
        self.encoder = BatchEncoder(self.batch_bytes)
        self.headers = Codec.default().headers("mig.log.CallBatch")
        # bounded work per loop turn, so commits (and barrier answers) stay regular
        self.drain_bytes = 256 * 1024
        self.control = ControlView(cfg.name, epoch=epoch)
        self.on_turn = None  # adopt(): feeds processes still replaying
        self.last_calls_offset = {}
        self._migrate_asked = None  # why a handoff was asked for, not yet tried
        self._backlog = False  # reading the control topic's records from before our start
        self._view_fresh_at = 0.0  # from then on, hot_replicas() rests on live statuses
        self._next_trigger_check = 0.0
        self._load_high_since = None
        self.metrics = metrics  # mig/member/metrics.py, when this member serves them
        # checkpoints when no hot replica takes them (mig/checkpoint/local.py)
        self.checkpointer = PrimaryCheckpointer(cfg, settings, run_dir, self.member)
        # [app] stdin = "topic" (mig/member/stdin.py): the pipe, and its feeder once it may run
        self.stdin_pipe = None
        self.feeder = None
        self._feed_when = None  # adopt(): true once every byte the log read is counted

    def run(self) -> RecordStats:
        """Record until the app exits (or SIGTERM/SIGINT stops it). Returns the figures."""
        check_program(self.cfg.command[0], app_env(self.cfg)["PATH"], self.cfg.cwd)
        ensure_topics(self.settings, self.cfg.name, self.cfg.topics,
                      with_input=self.cfg.stdin == "topic")
        refuse_existing_recording(self.settings, self.cfg.name)
        writer = LogWriter(self.settings, self.cfg.name,
                           transactional_id=f"mig.{self.cfg.name}.primary",
                           linger_ms=record_linger_ms(self.cfg.barrier_mode),
                           pump_limit=self.batch_bytes)
        identity = app_identity(self.cfg.name, self.cfg.command, self.cfg.cwd,
                                app_env(self.cfg))
        writer.send("calls", "mig.log.AppIdentity", identity, key="identity")
        writer.commit()
        self.cfg.state_dir.mkdir(parents=True, exist_ok=True)
        if self.checkpointer.enabled:
            private_run_dir(self.run_dir)
            snapshot_start(self.cfg.cwd, self.run_dir)
        if self.cfg.stdin == "topic":
            from mig.member.stdin import StdinPipe

            self.stdin_pipe = StdinPipe()
        private_run_dir(self.run_dir)
        self.bells.attach(self.run_dir)  # (before the app: its first process rings it)
        proc = launch(self.cfg, "record", self.run_dir, self.cfg.cwd,
                      self.cfg.state_dir / "mig-app.log", stdin_pipe=self.stdin_pipe)
        if self.stdin_pipe is not None:
            self.stdin_pipe.close_read_end()
            self._feed_when = lambda: True
        log.info("mig.recorder.started", app=self.cfg.name, pid=proc.pid,
                 barrier_mode=self.cfg.barrier_mode, native_pump=writer.pump is not None)
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
        self.bells.attach(self.run_dir)  # (the processes the app forks from now on ring it)
        self.batch_seq = dict(batch_seq)
        self.on_turn = on_turn
        self.stdin_pipe = stdin_pipe
        if stdin_pipe is not None:
            self._feed_when = replayed or (lambda: True)
        return self._serve(writer, proc)

    def _start_feeder(self) -> None:
        from mig.member.stdin import Feeder, consumed

        self._feed_when = None
        self.feeder = Feeder(self.settings, self.cfg.name, self.stdin_pipe,
                             consumed(self.run_dir)).start()

    def _serve(self, writer: LogWriter, proc: subprocess.Popen[bytes]) -> RecordStats:
        if self.metrics is not None:
            self.metrics.role("primary", self.epoch)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in
                    (signal.SIGTERM, signal.SIGINT)}
        control = self._control_reader(20)
        try:
            # heard at once: reading the control topic takes a while, and a promoted
            # replica's peers wait failover_timeout_ms for its first heartbeat
            self._heartbeat(writer)
            self._commit(writer)
            control = self._follow_control(control)
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
            if writer.pump is not None:  # (an acknowledgement after this touches no ring)
                writer.pump.forget()
            for ring in self.rings.values():
                self.stats.traps += ring.traps
                self.stats.patched += ring.patched
                ring.close()
            if proc.returncode == SHIM_FATAL:
                self.stats.shim_fatal = shim_fatal_line(self.cfg.state_dir / "mig-app.log")
        log.info("mig.recorder.stopped", calls=self.stats.calls, commits=self.stats.commits,
                 turns=self.stats.turns, exit_code=self.stats.exit_code,
                 migrated_to=self.stats.migrated_to)
        return self.stats

    def _settling(self) -> bool:
        """After a promotion, while a process of the app still replays (its ring not turned
        around, nor ended). Once none does, the agent waits as any primary's does: it
        waited 1 ms at every turn for as long as the promoted primary ran (about 1,000
        turns a second for an idle app)."""
        return self.on_turn is not None and any(
            ring.mode != MODE_RECORD and ring.state != STATE_EXITED
            for ring in self.rings.values())

    def _on_signal(self, signum: int, frame: object) -> None:
        self._stop = True

    def _turns(self, writer: LogWriter, proc: subprocess.Popen[bytes], control: Reader) -> None:
        last_commit = time.monotonic()
        stop_sent: float | None = None
        last_scan = last_step = 0.0
        last_beat = 0.0
        last_control = 0.0
        last_sent = time.monotonic()  # the agent is idle once nothing was sent for QUIET_S
        while True:
            now = time.monotonic()
            self.stats.turns += 1
            idle = now - last_sent > QUIET_S
            # the doorbells as they are before this turn looks at the rings: a bump during
            # the turn ends the wait at its end at once (mig/ring/doorbell.py)
            rings = list(self.rings.values())
            seen = self.bells.snapshot(rings)
            if self.bells.new_process(seen) or now - last_scan > RING_SCAN_S:
                self._discover()
                last_scan = now
            if now - last_step > SCAN_S and (
                    self.on_turn is not None or self._feed_when is not None):
                if self.on_turn is not None:
                    self.on_turn()
                if self._feed_when is not None and self._feed_when():
                    self._start_feeder()
                last_step = now
            if now - last_control > (CONTROL_IDLE_S if idle else CONTROL_S):
                for item in control.poll(100, 0):
                    if item.kind != END:
                        self._on_control(item)
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
            if sent:
                last_sent = now
            self._settle_acks(writer)
            if writer.open_transaction and (now - last_commit) * 1000 >= self.flush_ms:
                self._commit(writer)
                last_commit = now
            if (now - last_beat) * 1000 >= self.cfg.replica.heartbeat_ms:
                self._heartbeat(writer)
                last_beat = now
            if self._stop and stop_sent is None:
                if (not self._stop_handoff_tried and self._migrate_asked is None
                        and self.cfg.failover.migrate_on_stop and self._hot(now)):
                    # hand the app to a hot replica instead (the handoff runs at the next
                    # control turn; if it fails, the app is stopped after all)
                    self._stop_handoff_tried = True
                    self._ask_migrate("SIGTERM to mig primary")
                elif (not self._stop_handoff_tried and now < self._view_fresh_at
                      and self.cfg.failover.migrate_on_stop):
                    pass  # just started: which replicas are hot is known within a second
                elif self._migrate_asked is None:
                    # ask the app to end, and keep answering its barriers while it does:
                    # its last outputs (held until acknowledged) are part of ending
                    proc.terminate()  # the holder passes it on to the app (mig/member/holder.py)
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
            if self._settling():  # processes still replay after a promotion:
                if not sent:  # on_turn feeds them at the old 1 ms pace, not a 5 ms turn
                    self.bells.wait(seen, rings, 0.001)
            elif not sent and idle and not self._stop:  # until a record or the next timer
                due = min(last_control + CONTROL_IDLE_S,
                          last_beat + self.cfg.replica.heartbeat_ms / 1000,
                          last_scan + RING_SCAN_S)
                if writer.open_transaction:
                    due = min(due, last_commit + self.flush_ms / 1000)
                if stop_sent is not None:
                    due = min(due, stop_sent + self.stop_timeout_s)
                self.bells.wait(seen, rings, max(0.0, due - time.monotonic()), deep=True)
            elif not sent:  # until a barrier, a full ring, an acknowledgement or the next timer
                self.bells.wait(seen, rings, TURN_S)
            elif self.cfg.barrier_mode == "async":  # let records gather (commit.py)
                self.bells.wait(seen, rings, ASYNC_PACE_S)


def refuse_existing_recording(settings: KafkaSettings, app: str) -> None:
    """A second primary on a log that holds a recording would interleave two runs under one
    epoch; continuing a log is promotion's job (epochs), not a fresh start's."""
    topic = topic_names(app)["calls"]
    cons = consumer(settings, **{"group.id": f"mig-recorder-{app}"})
    try:
        held = sum(end_offsets(cons, topic).values())
    finally:
        cons.close()
    if held:
        raise MigError(f"{topic} already holds a recording ({held} records): a primary"
                       " starts on an empty log; use a new app name, or delete the app's"
                       " topics to start over")
