"""The replay worker behind ``mig replica follow``: runs the app under the shim in replay
mode and feeds each logical process the calls the primary recorded, in order.

It reads ``mig.NAME.calls`` from the start (read_uncommitted: see docs/interceptor.md),
checks the app identity record against this host (a different binary, argv or libc is
refused, naming the difference), launches the app, and writes each CallBatch's calls into
the ring of its logical process. A ring that reports a divergence stops the replica with the logical
process, sequence number, Kafka offset and both sides of the mismatch.

It also reads ``mig.NAME.control`` (mig/control/view.py) and takes over when the primary is gone:
no heartbeat and no new call record for ``failover_timeout_ms`` -> claim the next epoch
(the least-lagged healthy replica first) -> the first claim in the topic wins -> the
winner fences the old primary (initialising the app's transactional producer), reads the
calls topic to its end, lets every process go live (shim/src/mig_live.c) and goes on as
the primary (``Recorder.adopt``). A ``Handoff`` naming this member does the same for a
planned migration. docs/failover.md tells the protocol and what is measured.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from mig.config import AppConfig
from mig.control.view import ControlView, fresh_s
from mig.errors import DecodeError, MigError
from mig.kafka.clients import KafkaSettings, consumer, wait_reachable, watermarks
from mig.kafka.topics import topic_names
from mig.kafka.writer import LogWriter
from mig.member.launch import app_env, kill_group, launch, private_run_dir
from mig.member.metrics import Metrics
from mig.progress import Progress
from mig.ring.calls import describe, from_avro
from mig.ring.memory import (
    RawCall,
    Ring,
    new_rings,
    rearm_after_restore,
    set_stdin_pipe,
    stdin_pipe_of,
)
from mig.wire.auth import authentic
from mig.wire.codec import Codec
from mig.wire.identity import app_identity, member_id

__all__ = ["Replayer", "Divergence", "PromotionFailed", "ReplayStats", "compare_identity"]

log = structlog.get_logger("mig.replayer")

RECENT_CALLS = 200_000
# calls read but not yet fed to the app above which the replica stops fetching (and below
# half of which it fetches again): a replica far behind holds a bounded backlog in memory
MAX_PENDING = 100_000
CATCHING_UP_BATCHES = 50  # a replica further behind than this says "catching-up"


class Divergence(MigError):
    """The replica's app did something the log does not say: it is no failover target."""

    exit_code = 3


class PromotionFailed(MigError):
    """The replica fenced the old primary and read the log, but its app cannot go live (a
    listener it cannot make real): it does not announce itself as the primary."""

    exit_code = 5


@dataclass
class ReplayStats:
    calls: int = 0
    batches: int = 0
    last_offset: int = -1
    divergence: str | None = None
    promoted_epoch: int | None = None  # this replica became the primary at this epoch
    detection_ms: int | None = None  # None after a handoff: nothing was detected
    promotion_ms: int | None = None
    promotion_reason: str | None = None  # "failover" or "handoff"
    refused: int = 0  # records without a valid signature (mig/wire/auth.py) or copies, skipped


def compare_identity(recorded: dict[str, Any], local: dict[str, Any]) -> list[str]:
    """Differences that make replay impossible, as 'what: recorded X, here Y' lines."""
    out = []
    for key in ("binary_sha256", "argv", "libc", "env_digest"):
        if recorded[key] != local[key]:
            out.append(f"{key}: recorded {recorded[key]!r}, here {local[key]!r}")
    return out


class Replayer:
    def __init__(self, cfg: AppConfig, settings: KafkaSettings, run_dir: Path, workdir: Path,
                 idle_exit_s: float | None = None, member: str | None = None,
                 can_promote: bool = True, use_checkpoints: bool = True,
                 checkpoint_once: bool = False, metrics: Metrics | None = None) -> None:
        self.cfg = cfg
        self.settings = settings
        self.run_dir = run_dir
        self.workdir = workdir
        self.idle_exit_s = idle_exit_s
        self.codec = Codec.default()
        self.rings: dict[str, Ring] = {}
        self.pending: dict[str, deque[tuple[RawCall, int]]] = {}
        # lpid -> (ring position after the record, its wall_ns) of calls fed, not yet taken
        self.in_ring: dict[str, deque[tuple[int, int]]] = {}
        # (lpid, seq) -> (recorded call, Kafka offset), for divergence reports
        # (an OrderedDict: dropping the oldest of a plain dict scans its deleted slots)
        self.recorded: OrderedDict[tuple[str, int], tuple[dict[str, Any], int]] = OrderedDict()
        self._pending_n = 0  # calls in self.pending
        self._paused = False  # fetching calls paused (MAX_PENDING)
        self.stats = ReplayStats()
        self.proc: Any = None
        self.stdin_pipe: Any = None  # [app] stdin = "topic": mig/member/stdin.py
        self.epoch = 0
        self.host = socket.gethostname()
        self.member = member or member_id("replica")
        self.status: LogWriter
        self.can_promote = can_promote
        self.control = ControlView(cfg.name)
        self.next_offset: dict[int, int] = {}  # calls partition -> next offset to read
        self.eof_at: dict[int, int] = {}       # calls partition -> offset of the last EOF
        self._at_end: set[int] = set()  # calls partitions read to their end (no record since)
        self.batch_next: dict[str, int] = {}   # lpid -> batch_seq after the last one read
        self.last_calls_at = time.monotonic()
        self.started_at = time.monotonic()
        self.detected_at: float | None = None
        self.last_alive = 0.0
        self.claimed: set[int] = set()
        self.writer: LogWriter | None = None  # the app's transactional writer, once promoted
        self.health = "replaying"
        self._cons: Any = None
        self.control_read = False  # the control topic was read to its end once
        self._catching_up: Progress | None = None  # while far behind the log's end
        # Our own statuses read back from the control topic tell whether the log flows for
        # us: while it stalls (a broker lost, its partitions moving) the primary's silence
        # proves nothing, so detection waits for a whole timeout of flowing log afterwards.
        self._status_sent: dict[int, float] = {}  # ts_ms of our status -> monotonic sent
        self.log_resumed = 0.0  # when our statuses came back after a stall
        self.own_read_at = 0.0  # when we last read one of our statuses back
        self._calls_topic = topic_names(cfg.name)["calls"]
        self._live_marked: set[str] = set()
        self._standby: list[LogWriter] = []
        # checkpoints (mig/checkpoint/store.py)
        self.use_checkpoints = use_checkpoints and cfg.checkpoints.get("enabled", True)
        self.identity_rec: dict[str, Any] | None = None  # the recorded AppIdentity
        self.last_seq: dict[str, int] = {}  # lpid -> seq of the last call fed
        self.launched = False  # this worker started the app, or restored it (below)
        self.restored_from: str | None = None
        self._restored: dict[str, Any] | None = None  # the manifest restored from
        self._ckpt_calls = 0
        self._ckpt_at = time.monotonic()
        self._ckpt_asked: str | None = None
        self._started_ms = int(time.time() * 1000)
        self._ckpt_retry_at = 0.0
        self._ckpt_thread: threading.Thread | None = None
        self._ckpt_error: str | None = None  # why the last checkpoint failed
        self._ckpt_failed: tuple[str, str] | None = None  # (request, why) to publish
        self.stored: str | None = None  # the id of the last checkpoint stored
        # --checkpoint-once (the primary's own checkpoints, mig/checkpoint/local.py): replay to
        # the end of the log as it is at the start, store one checkpoint, stop
        self.metrics = metrics  # mig/member/metrics.py, when this member serves them
        self.checkpoint_once = checkpoint_once
        if checkpoint_once:
            self.can_promote = False
            self.health = "checkpointing"  # never hot: not a failover or migration target

    def run(self, stop: Any = None) -> ReplayStats:
        """Replay until the app exits, ``stop()`` is true, or the log stays idle for
        ``idle_exit_s`` after the app's last call. Raises Divergence on a mismatch."""
        from confluent_kafka import KafkaException, TopicPartition

        names = topic_names(self.cfg.name)
        topic = names["calls"]
        wait_reachable(self.settings, 15.0)  # a broker refusing our credentials says so
        # read_uncommitted: every record acknowledged by the in-sync replicas, as soon as it
        # is (docs/interceptor.md, "When is a record committed")
        cons = consumer(self.settings, **{"group.id": f"mig-replica-{self.cfg.name}",
                                          "enable.partition.eof": True,
                                          "isolation.level": "read_uncommitted",
                                          # an idle fetch returns after this long: it
                                          # bounds the replica's lag and how soon it sees
                                          # a handoff or the log's end when promoting
                                          "fetch.wait.max.ms": 20})
        self._cons = cons
        try:
            meta = cons.list_topics(topic, timeout=10)
        except KafkaException as exc:
            raise MigError(f"cannot read {topic} at {self.settings.bootstrap_servers}:"
                           f" {exc.args[0].str()}") from exc
        if topic not in meta.topics or meta.topics[topic].error is not None:
            raise MigError(f"topic {topic} does not exist: has the primary started?")
        parts = list(meta.topics[topic].partitions)
        self.status = LogWriter(self.settings, self.cfg.name)
        self.next_offset = self._maybe_restore(cons, topic, parts)
        cons.assign([TopicPartition(topic, p, o) for p, o in self.next_offset.items()]
                    + [TopicPartition(names["control"], 0, 0)])
        last_input = time.monotonic()
        last_status = 0.0
        self.started_at = time.monotonic()  # after a restore: the silence starts now
        try:
            while True:
                if (time.monotonic() - last_status) * 1000 >= self.cfg.replica["heartbeat_ms"]:
                    self._publish_status()
                    last_status = time.monotonic()
                if stop is not None and stop():
                    return self.stats
                for msg in cons.consume(500, 0.001 if self._backlog() else 0.02):
                    taken = self._take(msg)
                    if isinstance(taken, str):
                        raise MigError(taken)
                    if taken:
                        last_input = time.monotonic()
                self._discover()
                self._feed()
                self._check()
                self._flow()
                if self.can_promote and self._failover_step():
                    return self.stats  # promoted: the caller goes on as the primary
                if self.checkpoint_once and self._once_step():
                    return self.stats
                self._checkpoint_step()
                if self.proc is not None and self.proc.poll() is not None and not self._backlog():
                    return self.stats
                if (self.idle_exit_s is not None and not self._backlog()
                        and time.monotonic() - last_input > self.idle_exit_s):
                    return self.stats
        finally:
            cons.close()
            self._cons = None
            if self.stats.promoted_epoch is None:
                try:  # never hide the error that ended the loop
                    self._publish_status(final=True)
                except Exception as exc:  # noqa: BLE001
                    log.warning("mig.replayer.final_status_failed", error=repr(exc))
                if self.proc is not None and self.proc.poll() is None:
                    kill_group(self.proc)

    # -- status
    def lag(self) -> tuple[int, int]:
        """(calls received but not yet replayed, ms since the oldest of them was recorded):
        those still queued here and those in a ring the app has not taken yet."""
        calls, oldest = 0, None
        for lpid, flight in self.in_ring.items():
            ring = self.rings.get(lpid)
            tail = ring.tail if ring is not None else 0
            while flight and flight[0][0] <= tail:
                flight.popleft()
            calls += len(flight)
            if flight:
                oldest = flight[0][1] if oldest is None else min(oldest, flight[0][1])
        for queue in self.pending.values():
            calls += len(queue)
            if queue:
                wall = queue[0][0].wall_ns
                oldest = wall if oldest is None else min(oldest, wall)
        calls += self.unfetched()
        if not calls or oldest is None:
            return calls, 0
        return calls, max(0, (time.time_ns() - oldest) // 1_000_000)

    def unfetched(self) -> int:
        """Batches of the calls topic not yet fetched from Kafka (each holds one call or
        more), from the consumer's cached high watermarks: a replica still reading an old
        log is not hot, however quickly it replays what it has."""
        from confluent_kafka import KafkaException, TopicPartition

        if self._cons is None:
            return 0
        topic = topic_names(self.cfg.name)["calls"]
        behind = 0
        for p, nxt in self.next_offset.items():
            try:
                marks = self._cons.get_watermark_offsets(TopicPartition(topic, p),
                                                         cached=True)
            except (KafkaException, RuntimeError):  # nothing cached yet; consumer closed
                continue
            if marks is None:  # no fetch has told the high watermark yet
                continue
            if marks[1] >= 0:
                behind += max(0, marks[1] - nxt - 1)  # -1: a commit marker may end the log
        return behind

    def _publish_status(self, final: bool = False) -> None:
        calls, lag_ms = self.lag()
        if self.metrics is not None:
            self.metrics.lag(calls, lag_ms / 1000)
            self.metrics.role("replica", self.control.epoch)
        health = ("promotion-failed" if self.health == "promotion-failed"
                  else "diverged" if self.stats.divergence
                  else "stopped" if final else self.health)
        if self.proc is None and health == "replaying":
            health = "starting"
        elif health == "replaying" and (behind := self.unfetched()) > CATCHING_UP_BATCHES:
            health = "catching-up"  # not hot yet: not a migration target
            if self._catching_up is None:
                self._catching_up = Progress("catching up", unit="batches", scale=1)
            self._catching_up.update(behind)
        if health != "catching-up" and self._catching_up is not None:
            self._catching_up.end()
            self._catching_up = None
            log.info("mig.replayer.caught_up", calls=self.stats.calls)
        ts_ms = int(time.time() * 1000)
        now = time.monotonic()
        self._status_sent = {t: at for t, at in self._status_sent.items() if now - at < 300}
        self._status_sent[ts_ms] = now
        self.status.send("control", "mig.log.MemberStatus", {
            "app": self.cfg.name, "member": self.member, "role": "REPLICA",
            "epoch": self.control.epoch, "lag_records": calls, "lag_ms": lag_ms,
            "health": health, "ts_ms": ts_ms, "host": self.host,
            "calls_offset": max(self.next_offset.values(), default=-1)}, key=self.member)
        if final:  # the last word: make sure it is in the topic
            self.status.commit()
            return
        # sent, not waited for: a broker that cannot take statuses for a while must not
        # hold the replay up (whether they arrive is what _own_status_back watches)
        for error in self.status.settle():
            log.warning("mig.replayer.status_failed", error=error)
        log.debug("mig.replayer.lag", calls=calls, lag_ms=lag_ms, replayed=self.stats.calls)

    # -- input
    def _on_message(self, msg: Any) -> None:
        try:
            name, rec = self.codec.decode_message(msg.value(), msg.headers())
        except DecodeError as exc:
            raise MigError(f"{msg.topic()}[{msg.partition()}]@{msg.offset()}: cannot replay an"
                           f" undecodable record: {exc.reason}") from exc
        self.stats.last_offset = msg.offset()
        self.next_offset[msg.partition()] = msg.offset() + 1
        self.last_calls_at = time.monotonic()
        if name == "mig.log.AppIdentity":
            self._start_app(rec)
        elif name == "mig.log.CallBatch":
            if self.metrics is not None:
                self.metrics.log_bytes("replayed", len(msg.value()))
            if self.proc is None:
                raise MigError(f"offset {msg.offset()}: calls before the app identity record")
            lpid = rec["lpid"]
            expected = self.batch_next.get(lpid)
            if expected is not None and rec["batch_seq"] != expected:
                if rec["batch_seq"] < expected:
                    # a copy of a batch already replayed (written again into the topic):
                    # replaying it twice would drift the app silently
                    self.stats.refused += 1
                    log.error("mig.replayer.duplicate_batch", topic=msg.topic(),
                              partition=msg.partition(), offset=msg.offset(), lpid=lpid,
                              batch_seq=rec["batch_seq"], expected=expected)
                    return
                raise MigError(f"{msg.topic()}[{msg.partition()}]@{msg.offset()}: batch"
                               f" {rec['batch_seq']} of process {lpid}, expected {expected}:"
                               " batches are missing from the log; replaying on would diverge"
                               " (mig log verify shows the gap)")
            try:
                raws = [from_avro(call) for call in rec["calls"]]
            except DecodeError as exc:
                raise MigError(f"{msg.topic()}[{msg.partition()}]@{msg.offset()}: cannot"
                               f" replay a call of process {lpid}: {exc.reason}") from exc
            self.epoch = max(self.epoch, rec["epoch"])
            self.batch_next[lpid] = rec["batch_seq"] + 1
            queue = self.pending.setdefault(lpid, deque())
            for call, raw in zip(rec["calls"], raws, strict=True):
                queue.append((raw, msg.offset()))
                self.recorded[(lpid, call["seq"])] = (call, msg.offset())
            self._pending_n += len(rec["calls"])
            while len(self.recorded) > RECENT_CALLS:  # divergences concern recent calls
                self.recorded.popitem(last=False)
            self.stats.batches += 1

    def _start_app(self, recorded: dict[str, Any]) -> None:
        if self.proc is not None:
            return  # a later identity (a restarted primary) changes nothing for this run
        local = app_identity(self.cfg.name, self.cfg.command, self.cfg.cwd, app_env(self.cfg))
        problems = compare_identity(recorded, local)
        if problems:
            raise MigError("this host cannot replay the recorded app: " + "; ".join(problems))
        self.identity_rec = recorded
        ck = self.cfg.checkpoints
        if (self.can_promote and ck.get("enabled", True) and ck.get("when_alone", True)):
            # for the checkpoints this member takes alone once it is the primary
            # (mig/checkpoint/local.py): the app's folder before the app starts from the log's
            # start
            from mig.checkpoint.local import snapshot_start

            private_run_dir(self.run_dir)
            self.workdir.mkdir(parents=True, exist_ok=True)
            snapshot_start(self.workdir, self.run_dir)
        self.stdin_pipe = self._new_stdin_pipe()
        # the app's state folder, where the primary has one, and its output in it
        state = self.cfg.state_dir_at(self.workdir)
        state.mkdir(parents=True, exist_ok=True)
        self.proc = launch(self.cfg, "replay", self.run_dir, self.workdir,
                           state / "mig-app.log", stdin_pipe=self.stdin_pipe)
        if self.stdin_pipe is not None:
            self.stdin_pipe.close_read_end()
        self.launched = True
        if self.can_promote:
            self._standby_writer()
        log.info("mig.replayer.started", app=self.cfg.name, pid=self.proc.pid,
                 app_pid=self.proc.app_pid)

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
            flight = self.in_ring.setdefault(lpid, deque())
            while queue and ring.put(queue[0][0]):
                call = queue.popleft()[0]
                self.last_seq[lpid] = call.seq
                flight.append((ring.head, call.wall_ns))  # taken once the tail passes it
                fed += 1
            if fed:
                self._pending_n -= fed
                self.stats.calls += fed
                if self.metrics is not None:
                    self.metrics.calls("replayed", fed)
                ring.wake_reader()

    def _check(self) -> None:
        for lpid, ring in self.rings.items():
            failed = ring.live_failure()
            if failed is not None:
                self.stats.divergence = f"promotion failed: process {lpid}: {failed}"
                self.health = "promotion-failed"
                raise PromotionFailed(self.stats.divergence)
            div = ring.divergence()
            if div is None:
                continue
            seq, text = div
            self.stats.divergence = self._divergence_line(lpid, seq, text)
            if self.metrics is not None:
                self.metrics.diverged()
            raise Divergence(self.stats.divergence)

    def _divergence_line(self, lpid: str, seq: int, text: str) -> str:
        """One line: where (logical process, thread, call, offset), what differs, what the
        log has, and what to do next (look at the records there, check the host)."""
        rec, offset = self.recorded.get((lpid, seq), (None, -1))
        where = f"lpid {lpid} seq {seq}"
        if rec is not None:
            where += f" (thread {rec['tid']}, {rec['kind']})"
        look = (f"mig log tail {self.cfg.name} -t calls --from {offset}" if offset >= 0
                else f"mig log tail {self.cfg.name} -t calls")
        return (f"divergence at {where}, calls offset {offset}: {text};"
                f" the log has {describe(rec) if rec else '?'}."
                f" Next: `{look}` shows the records there, `mig doctor {self.cfg.path}`"
                " checks this host and the program (docs/operations.md, re-bootstrap a"
                " diverged replica)")

    def _take(self, msg: Any) -> bool | str:
        """One message of the consumer (calls or control): True for a calls record, False
        for anything else taken, the error text for a consumer error. End-of-partition
        events note how far each topic was read."""
        from confluent_kafka import KafkaError

        calls = msg.topic() == self._calls_topic
        err = msg.error()
        if err is not None and err.code() == KafkaError._PARTITION_EOF:
            if calls:
                self.eof_at[msg.partition()] = msg.offset()
                self._at_end.add(msg.partition())
            else:
                self.control_read = True
            return False
        if err is not None:
            return f"reading {msg.topic()}: {err.str()}"
        if self._refused(msg, "calls" if calls else "control"):
            return False
        if calls:
            self._at_end.discard(msg.partition())
            self._on_message(msg)
            return True
        self._on_control(msg)
        return False

    def _refused(self, msg: Any, role: str) -> bool:
        """True (and said in an error line) for a record without a valid signature when the
        app's records are signed: it is skipped, the replay goes on (mig/wire/auth.py)."""
        if authentic(self.settings.auth, role, msg, "mig.replayer"):
            return False
        self.stats.refused += 1
        return True

    # -- control and failover
    def _on_control(self, msg: Any) -> None:
        try:
            name, rec = self.codec.decode_message(msg.value(), msg.headers())
        except DecodeError as exc:
            log.warning("mig.replayer.control_undecodable", offset=msg.offset(),
                        reason=exc.reason)
            return
        self.control.on_record(name, rec)
        if name == "mig.log.MemberStatus" and rec["member"] == self.member:
            self._own_status_back(rec["ts_ms"])
        if (name == "mig.log.CheckpointRequest" and rec["ts_ms"] >= self._started_ms
                and not self.checkpoint_once):
            # one member answers: the least-lagged hot replica, else the primary's host
            if self.control.answers_checkpoint_request(self.member):
                self._ckpt_asked = rec["event_id"]

    def _own_status_back(self, ts_ms: int) -> None:
        sent = self._status_sent.pop(ts_ms, None)
        if sent is None:
            return  # an earlier run's, or sent before we started reading
        now = time.monotonic()
        self.own_read_at = now
        stalled = now - sent
        if stalled > self.cfg.replica["failover_timeout_ms"] / 2000:
            self.log_resumed = now
            log.warning("mig.replayer.control_stalled", stalled_ms=int(stalled * 1000))

    def _failover_step(self) -> bool:
        """Watch the primary; claim, and promote when this member wins. True once promoted."""
        ctl = self.control
        if (self.proc is None or self.stats.divergence or ctl.primary_stopped
                or not self.control_read):
            return False  # nothing running, the recording simply ended, or we do not
            # know the primary's latest yet (the control topic is not read to its end)
        now = time.monotonic()
        timeout = self.cfg.replica["failover_timeout_ms"] / 1000
        handoff = ctl.pending_handoff()
        if handoff is not None:
            if handoff.record["to_member"] == self.member:
                return self._promote("handoff", handoff.at, None, ctl.epoch + 1,
                                     handoff.record)
            # a planned migration to another member: not a failure, unless it never ends
            if now - handoff.at < self.cfg.failover["handoff_timeout_ms"] / 1000:
                return False
        last_alive = max(ctl.last_primary_seen, self.last_calls_at, self.started_at,
                         self.log_resumed)
        # the primary's silence counts only while the log flows for us too: one of our
        # statuses (sent every heartbeat_ms) came back recently
        flowing = now - self.own_read_at < max(timeout / 2,
                                               3 * self.cfg.replica["heartbeat_ms"] / 1000)
        if now - last_alive < timeout or not flowing:
            self.detected_at = None
            return False
        if self.detected_at is None or last_alive > self.last_alive:
            self.detected_at = now
            self.last_alive = last_alive
            log.warning("mig.replayer.primary_lost", primary=ctl.primary, epoch=ctl.epoch,
                        silent_ms=int((now - last_alive) * 1000))
        epoch = ctl.claim_epoch(now, stale_after_s=max(5.0, 5 * timeout))
        winner = ctl.winner(epoch)
        if winner == self.member:
            return self._promote("failover", self.detected_at, last_alive, epoch, None)
        if winner is not None or epoch in self.claimed:
            return False  # someone claimed (or our claim is on its way): wait for it
        calls, _ = self.lag()
        if calls > self.cfg.replica["max_lag_records"]:
            return False
        # the least-lagged healthy replica claims first; the others give it a head start
        fresh = fresh_s(self.cfg.replica["heartbeat_ms"])
        better = [r for r in ctl.hot_replicas(now, fresh) if r["member"] != self.member
                  and (r["lag_records"], r["member"]) < (calls, self.member)]
        if now < self.detected_at + 0.2 * len(better):
            return False
        self.status.send("control", "mig.log.Claim", {
            "app": self.cfg.name, "member": self.member, "epoch": epoch,
            "reason": "failover", "lag_records": calls, "ts_ms": int(time.time() * 1000)},
            key=self.member)
        self.status.commit()
        self.claimed.add(epoch)
        log.info("mig.replayer.claimed", epoch=epoch, lag_records=calls, ahead=len(better))
        return False

    def _promote(self, reason: str, decided_at: float, last_alive: float | None, epoch: int,
                 handoff: dict[str, Any] | None) -> bool:
        """Fence, read the log to its end, let every process go live, announce it."""
        self.health = "promoting"
        self._publish_status()
        topic = topic_names(self.cfg.name)["calls"]
        started = time.monotonic()
        # initialising the app's transactional producer fences the old primary: from here
        # Kafka refuses its records, and its open transaction is aborted
        writer = self._fence()
        fenced_at = time.monotonic()
        ends = self._high_watermarks(topic, deadline=time.monotonic() + 30)
        if handoff is not None:
            planned = {po["partition"]: po["offset"] for po in handoff["calls_offsets"]}
            if planned != ends:
                log.warning("mig.replayer.handoff_offsets_differ", planned=planned, ends=ends)
        self._read_to(ends)
        read_at = time.monotonic()
        self._settle(deadline=time.monotonic() + 30)
        self._wait_live(deadline=time.monotonic() + 15)
        settled_at = time.monotonic()
        new_epoch = max(epoch, self.control.epoch + 1)
        now_ms = int(time.time() * 1000)
        detection_ms = (int((decided_at - last_alive) * 1000) if last_alive is not None
                        else None)
        promotion_ms = int((time.monotonic() - decided_at) * 1000)
        writer.send("control", "mig.log.Promotion", {
            "app": self.cfg.name, "member": self.member, "new_epoch": new_epoch,
            "previous_epoch": self.control.epoch,
            "calls_offsets": [{"partition": p, "offset": o} for p, o in sorted(ends.items())],
            "ts_ms": now_ms, "detection_ms": detection_ms, "promotion_ms": promotion_ms,
            "reason": reason}, key=self.member)
        writer.send("control", "mig.log.Heartbeat", {
            "app": self.cfg.name, "member": self.member, "role": "PRIMARY",
            "epoch": new_epoch, "ts_ms": now_ms, "calls_offset": -1, "host": self.host},
            key=self.member)
        writer.commit()
        self.writer = writer
        self.stats.promoted_epoch = new_epoch
        self.stats.detection_ms = detection_ms
        self.stats.promotion_ms = promotion_ms
        self.stats.promotion_reason = reason
        if self.metrics is not None:
            self.metrics.promoted(None if detection_ms is None else detection_ms / 1000,
                                  promotion_ms / 1000, new_epoch)
        log.info("mig.replayer.promoted", epoch=new_epoch, reason=reason,
                 detection_ms=detection_ms, promotion_ms=promotion_ms,
                 decide_ms=int((started - decided_at) * 1000),
                 fence_ms=int((fenced_at - started) * 1000),
                 read_ms=int((read_at - fenced_at) * 1000),
                 settle_ms=int((settled_at - read_at) * 1000),
                 announce_ms=int((time.monotonic() - settled_at) * 1000), calls_end=ends)
        self._on_promote(new_epoch)
        return True

    def _high_watermarks(self, topic: str, deadline: float) -> dict[int, int]:
        """The calls partitions' ends, asked of the broker; a broker that stalls or is
        still updating its metadata is asked again until ``deadline``."""
        from confluent_kafka import KafkaException, TopicPartition

        ends: dict[int, int] = {}
        for p in self.next_offset:
            while True:
                try:
                    ends[p] = self._cons.get_watermark_offsets(TopicPartition(topic, p),
                                                               timeout=10)[1]
                    break
                except KafkaException as exc:
                    if time.monotonic() > deadline:
                        raise MigError(f"cannot read the end of {topic} [{p}] to promote:"
                                       f" {exc.args[0].str()}") from exc
                    log.warning("mig.replayer.watermark_retry", partition=p,
                                error=exc.args[0].str())
                    time.sleep(0.2)
        return ends

    def _standby_writer(self) -> None:
        """Two of the app's transactional writers, connected but not yet fencing anyone:
        made once the replica runs, so promotion does not wait for a cold producer."""
        while len(self._standby) < 2:
            self._standby.append(LogWriter(self.settings, self.cfg.name,
                                           transactional_id=f"mig.{self.cfg.name}.primary",
                                           fence_now=False))

    def _fence(self) -> LogWriter:
        """Fence the old primary. When it left a transaction open, the first request only
        starts the coordinator's abort and librdkafka would ask again 500 ms later; the
        second writer asks as soon as the first gives up (50 ms), and finds it done."""
        self._standby_writer()
        first, second = self._standby
        self._standby = []
        if first.try_fence(0.05):
            second.discard()
            return first
        first.discard()
        second.fence()
        return second

    def _flow(self, resume: bool = False) -> None:
        """Pause fetching calls while MAX_PENDING of them wait to be fed (the control topic
        goes on: heartbeats and promotions are read whatever the backlog)."""
        n = self._pending_n
        if not self._paused and n > MAX_PENDING and not resume:
            self._cons.pause(self._calls_partitions())
            self._paused = True
        elif self._paused and (resume or n < MAX_PENDING // 2):
            self._cons.resume(self._calls_partitions())
            self._paused = False

    def _calls_partitions(self) -> list[Any]:
        from confluent_kafka import TopicPartition

        return [TopicPartition(self._calls_topic, p) for p in self.next_offset]

    def _read_to(self, ends: dict[int, int]) -> None:
        """Read the calls topic until every partition reached ``ends`` (an end-of-partition
        event at or past it: transaction markers take offsets no record has)."""
        self._flow(resume=True)
        topic = topic_names(self.cfg.name)["calls"]
        deadline = time.monotonic() + 60
        while any(self.eof_at.get(p, -1) < end and self.next_offset.get(p, 0) < end
                  for p, end in ends.items()):
            if time.monotonic() > deadline:
                raise MigError(f"promotion: could not read {topic} to its end {ends}")
            for msg in self._cons.consume(500, 0.05):
                self._take(msg)  # a consumer error here is retried until the deadline
            self._discover()
            self._feed()
            self._check()

    def _settle(self, deadline: float) -> None:
        """Feed every process what is left, then tell each ring the log ends there."""
        while any(self.pending.get(lpid) for lpid in self.rings) and time.monotonic() < deadline:
            self._discover()
            self._feed()
            self._check()
            time.sleep(0.0005)
        self.settle_step()

    def _wait_live(self, deadline: float) -> None:
        """The promotion is announced once the app is live: every process waiting in the
        shim for its next record has taken the log's last one and gone live (its listeners
        real: shim/src/mig_live.c). A process that cannot go live fails the promotion
        (PromotionFailed, from _check); one still waiting at the deadline goes live at its
        next call, and is named."""
        from mig.ring.memory import MODE_RECORD, STATE_EXITED

        # a process none of whose threads waits in the shim for a record (an nginx master
        # in sigsuspend) goes live whenever it next calls: not waited for. A waiting
        # thread leaves its futex every 20 ms, so the rings are looked at for 100 ms
        # before one is taken for not waiting.
        seen: set[str] = set()
        looked_from = time.monotonic()
        while True:
            self.settle_step()
            pending = {lpid for lpid, ring in self.rings.items()
                       if ring.state != STATE_EXITED and ring.mode != MODE_RECORD}
            seen |= {lpid for lpid in pending
                     if self.rings[lpid].waiters > 0 or self.rings[lpid].going_live}
            waiting = sorted(pending & seen)
            if not waiting and time.monotonic() - looked_from > 0.1:
                return
            if time.monotonic() > deadline:
                log.warning("mig.replayer.not_yet_live", lpids=waiting)
                return
            time.sleep(0.001)

    def _new_stdin_pipe(self) -> Any:
        """``[app] stdin = "topic"``: the app's stdin pipe on this host, which this member
        feeds once it is the primary (mig/member/stdin.py); None otherwise."""
        if self.cfg.stdin != "topic":
            return None
        from mig.member.stdin import StdinPipe

        return StdinPipe()

    def stdin_replayed(self) -> bool:
        """After promotion: every process has taken the last record the log had for it
        (or ended), so the rings' stdin counts are final (mig/member/stdin.py)."""
        from mig.ring.memory import MODE_RECORD, STATE_EXITED

        return all(not self.pending.get(lpid)
                   and (ring.state == STATE_EXITED or ring.mode == MODE_RECORD
                        or ring.tail >= ring.head)
                   for lpid, ring in self.rings.items())

    def settle_step(self) -> None:
        """Once per turn after promotion: processes forked while catching up appear late;
        feed them and mark their ends too."""
        self._discover()
        self._feed()
        self._check()
        for lpid, ring in self.rings.items():
            if not self.pending.get(lpid) and lpid not in self._live_marked:
                ring.go_live()
                self._live_marked.add(lpid)

    def _on_promote(self, epoch: int) -> None:
        command = self.cfg.failover.get("on_promote", "")
        if not command:
            return
        env = dict(os.environ, MIG_APP=self.cfg.name, MIG_MEMBER=self.member,
                   MIG_EPOCH=str(epoch))
        try:
            subprocess.Popen(["/bin/sh", "-c", command], cwd=self.cfg.cwd, env=env,
                             stdin=subprocess.DEVNULL, start_new_session=True)
            log.info("mig.replayer.on_promote", command=shlex.quote(command))
        except OSError as exc:
            log.error("mig.replayer.on_promote_failed", command=command, error=str(exc))

    # -- checkpoints
    def _maybe_restore(self, cons: Any, topic: str, parts: list[int]) -> dict[int, int]:
        """Start from the newest checkpoint this host can restore (its calls offsets), or
        from the log's start. A checkpoint is refused, with the reason logged, when its CRIU
        or kernel is not this host's kind, its app identity differs, or it is corrupt."""

        from mig.checkpoint.store import list_manifests

        start = {p: 0 for p in parts}
        tried: set[str] = set()
        # A checkpoint listed here can be superseded (its chunks tombstoned) and the calls
        # before it deleted while this member fetches it: list again, a few times, while
        # new checkpoints keep appearing.
        for _ in range(3):
            low = {p: watermarks(cons, topic, p)[0] for p in parts}
            if not self.use_checkpoints:
                if any(o > 0 for o in low.values()):
                    raise MigError(f"{topic} no longer holds its start (records before"
                                   f" {low} were deleted after a checkpoint): replay from a"
                                   " checkpoint (--from-checkpoint)")
                return start
            manifests = [m for m in list_manifests(self.settings, self.cfg.name)
                         if m["checkpoint_id"] not in tried]
            if not manifests:
                break
            tried.update(m["checkpoint_id"] for m in manifests)
            offsets = self._restore_newest(manifests, low)
            if offsets is None:
                continue
            # a newer checkpoint may have been stored, and the calls this one continues
            # from deleted, while it was fetched and restored: then it cannot be used
            now_low = {p: watermarks(cons, topic, p)[0] for p in parts}
            gone = {p: o for p, o in offsets.items() if o < now_low.get(p, 0)}
            if not gone:
                return {p: offsets.get(p, 0) for p in parts}
            log.warning("mig.replayer.checkpoint_refused", checkpoint_id=self.restored_from,
                        reason=f"the calls it continues from ({gone}) were deleted while it"
                               " was restored: a newer checkpoint superseded it")
            self._undo_restore()
        trimmed = {p: o for p, o in low.items() if o > 0}
        if trimmed:
            raise MigError(f"{topic} no longer holds its start (records before {trimmed} were"
                           " deleted after a checkpoint) and no checkpoint could be restored"
                           " here (see the mig.replayer.checkpoint_refused lines)")
        return start

    def _undo_restore(self) -> None:
        """Stop an app restored from a checkpoint that turned out to be unusable."""
        if self.proc is not None:
            kill_group(self.proc)
        self.proc = None
        self.identity_rec, self.restored_from, self._restored = None, None, None
        self.batch_next, self.last_seq = {}, {}
        self.launched = False

    def _restore_newest(self, manifests: list[dict[str, Any]], low: dict[int, int]
                        ) -> dict[int, int] | None:
        """Restore the newest of ``manifests`` this host can; its calls offsets, or None."""
        from mig.checkpoint.criu import CriuMissing, find_criu
        from mig.checkpoint.store import (
            CheckpointError,
            compatible,
            fetch_checkpoint,
            restore_app,
            unpack,
        )

        try:
            criu = find_criu()
        except CriuMissing as exc:
            log.warning("mig.replayer.no_criu", reason=str(exc))
            return None
        local = app_identity(self.cfg.name, self.cfg.command, self.cfg.cwd, app_env(self.cfg))
        for manifest in reversed(manifests):
            cid = manifest["checkpoint_id"]
            why = compatible(manifest, criu.version, os.uname().release)
            problems = compare_identity(manifest["identity"], local)
            gone = [f"{po['partition']}:{po['offset']} < {low.get(po['partition'], 0)}"
                    for po in manifest["barrier_offsets"]
                    if po["offset"] < low.get(po["partition"], 0)]
            if gone:
                why = (f"the calls it continues from were deleted ({', '.join(gone)}: the"
                       " log now starts later)")
            if why or problems:
                log.warning("mig.replayer.checkpoint_refused", checkpoint_id=cid,
                            reason=why or "; ".join(problems))
                continue
            try:
                data = fetch_checkpoint(self.settings, self.cfg.name, manifest,
                                        progress=Progress(f"checkpoint {cid} fetch").update)
                images = self.run_dir / "criu-images"
                shutil.rmtree(images, ignore_errors=True)
                self.workdir.mkdir(parents=True, exist_ok=True)
                self.run_dir.mkdir(parents=True, exist_ok=True)
                unpack(data, images, self.workdir, self.run_dir)
                self.stdin_pipe = self._new_stdin_pipe()
                dumped_stdin = 0
                for ring in self.run_dir.glob("*.ring"):
                    rearm_after_restore(ring)
                    if self.stdin_pipe is not None:
                        dumped_stdin = dumped_stdin or stdin_pipe_of(ring)[1]
                        set_stdin_pipe(ring, self.stdin_pipe.dev, self.stdin_pipe.ino)
                binds = [(self.workdir.resolve(), Path(manifest["workdir"])),
                         (self.run_dir.resolve(), Path(manifest["run_dir"]))]
                started = time.monotonic()
                self.proc = restore_app(images, manifest["root_pid"],
                                        [(a, b) for a, b in binds if a != b],
                                        self.workdir / "mig-restore.log",
                                        stdin=(self.stdin_pipe, dumped_stdin)
                                        if self.stdin_pipe is not None else None)
                if self.stdin_pipe is not None:
                    self.stdin_pipe.close_read_end()
            except CheckpointError as exc:
                log.warning("mig.replayer.checkpoint_refused", checkpoint_id=cid,
                            reason=str(exc))
                continue
            self.identity_rec = manifest["identity"]
            self.batch_next = dict(manifest["batch_seqs"])
            self.last_seq = dict(manifest["lpid_seqs"])
            self.restored_from = cid
            self._restored = manifest
            self.launched = True
            offsets = {po["partition"]: po["offset"] for po in manifest["barrier_offsets"]}
            log.info("mig.replayer.restored", checkpoint_id=cid, size=manifest["total_size"],
                     offsets=offsets, restore_ms=int((time.monotonic() - started) * 1000))
            if self.can_promote:
                self._standby_writer()
            return offsets
        return None

    def _once_step(self) -> bool:
        """--checkpoint-once: ask for the checkpoint once every calls partition was read to
        the end it had at the start; True when it is stored. Raises MigError if it failed."""
        if self._ckpt_error is not None:
            raise MigError(f"the checkpoint failed: {self._ckpt_error}")
        if self._ckpt_thread is None:
            # (an end offset counts transaction markers: compare events, not offsets)
            at_end = set(self.next_offset) <= self._at_end
            if at_end and self.launched and not self._backlog() and self._ckpt_asked is None:
                self._ckpt_asked = "--checkpoint-once"
            return False
        if self._ckpt_thread.is_alive():
            return False
        if self.stored is None:
            raise MigError("the checkpoint was not stored (see mig.replayer.checkpoint_failed)")
        return True

    def _request_failed(self, event: str, why: str) -> None:
        """Say in the control topic, at once, why this replica could not take the checkpoint
        a CheckpointRequest asked of it (RequestFailed): mig checkpoint waits for it."""
        self.status.send("control", "mig.log.RequestFailed", {
            "app": self.cfg.name, "event_id": event, "request": "checkpoint",
            "member": self.member, "reason": why, "ts_ms": int(time.time() * 1000)},
            key=event)
        for error in self.status.settle():
            log.warning("mig.replayer.status_failed", error=error)

    def _checkpoint_step(self) -> None:
        """Take a checkpoint when a trigger says so (records, seconds, mig checkpoint)."""
        if self._ckpt_failed is not None:  # the store thread failed a request's checkpoint
            self._request_failed(*self._ckpt_failed)
            self._ckpt_failed = None
        if (self._ckpt_asked is not None and not self.checkpoint_once
                and (not self.use_checkpoints or self.stats.divergence)):
            self._request_failed(self._ckpt_asked, self.stats.divergence or
                                 "checkpoints are off on this replica ([checkpoints] enabled"
                                 " = false, or --from-start)")
            self._ckpt_asked = None
        if not self.use_checkpoints or not self.launched or self.stats.divergence:
            return
        if self.checkpoint_once and self._ckpt_asked is None:
            return  # only the one _once_step asks for
        now = time.monotonic()
        ck = self.cfg.checkpoints
        due = (self._ckpt_asked is not None
               or (ck.get("every_records") and self.stats.calls - self._ckpt_calls
                   >= ck["every_records"])
               or (ck.get("every_seconds") and now - self._ckpt_at >= ck["every_seconds"]))
        if not due or now < self._ckpt_retry_at:
            return
        if self._ckpt_thread is not None and self._ckpt_thread.is_alive():
            return  # the previous one is still being stored
        reason = ("request " + self._ckpt_asked) if self._ckpt_asked else "schedule"
        event = None if self.checkpoint_once else self._ckpt_asked
        try:
            self._checkpoint(reason, event)
            self._ckpt_asked = None
        except MigError as exc:
            log.warning("mig.replayer.checkpoint_failed", reason=str(exc))
            self._ckpt_error = str(exc)
            self._ckpt_retry_at = now + 30
            self._ckpt_asked = None
            if event is not None:
                self._request_failed(event, str(exc))
        self._ckpt_calls = self.stats.calls
        self._ckpt_at = time.monotonic()

    def _quiet(self) -> bool:
        """Every record read is in a ring and taken, and every process sleeps in the shim
        waiting for its next one (or has ended)."""
        from mig.ring.memory import STATE_EXITED

        if any(self.pending.values()):
            return False
        return all(r.state == STATE_EXITED or (r.head == r.tail and r.waiters > 0)
                   for r in self.rings.values())

    def _checkpoint(self, reason: str, event: str | None = None) -> None:
        """Dump at a cut (the app held only for the dump and a copy of its files), then
        compress and store in a background thread."""
        from mig.checkpoint.store import (
            Archive,
            CheckpointError,
            dump_app,
            pack,
            stage,
            store_checkpoint,
        )

        started = time.monotonic()
        deadline = started + 10
        while not self._quiet():  # the cut: feed what was read, then let the app take it
            if time.monotonic() > deadline:
                raise CheckpointError("the app did not come to rest in the shim within 10 s"
                                      " (a process waits outside it, e.g. for a child)")
            self._discover()
            self._feed()
            self._check()
            time.sleep(0.001)
        held = time.monotonic()
        folder = self.run_dir / f"criu-dump-{int(time.time() * 1000)}"
        images, staged = folder / "images", folder / "staged"
        # the app is dumped from inside its holder's namespaces (dump_app); a restored one
        # under the pids and paths of the image it came from
        # (the folder at the path the app sees it: the app's own, where it was bound)
        seen = getattr(self.proc, "app_cwd", None) or self.workdir
        where: dict[str, Any] = {"workdir": str(Path(seen).resolve()),
                                 "run_dir": str(self.run_dir.resolve())}
        if self._restored is not None:
            where = {k: self._restored[k] for k in where}
        where["root_pid"] = self.proc.app_pid
        dump_app(self.proc.app_pid, images, self.proc.init_pid)
        stage(self.workdir, self.run_dir, staged)  # the files as they are with the image
        dump_ms = int((time.monotonic() - held) * 1000)  # from here the app runs on
        meta = {"epoch": self.control.epoch,
                "barrier_offsets": [{"partition": p, "offset": o}
                                    for p, o in sorted(self.next_offset.items())],
                "lpid_seqs": dict(self.last_seq), "identity": self.identity_rec,
                "batch_seqs": dict(self.batch_next), **where}

        def finish() -> None:  # compress and upload while the replay goes on
            try:
                data = pack(images, staged / "work", staged / "run")
                manifest = store_checkpoint(self.settings, self.cfg.name, self.member,
                                            Archive(data, dump_ms), meta,
                                            self.cfg.checkpoints["keep"])
                self.stored = manifest["checkpoint_id"]
                if self.metrics is not None:
                    self.metrics.checkpoint(time.monotonic() - started)
                self._ckpt_error = None
                log.info("mig.replayer.checkpoint", checkpoint_id=manifest["checkpoint_id"],
                         reason=reason, size=len(data), held_ms=dump_ms,
                         total_ms=int((time.monotonic() - started) * 1000),
                         offsets=meta["barrier_offsets"])
            except MigError as exc:
                log.warning("mig.replayer.checkpoint_failed", reason=str(exc))
                self._ckpt_error = str(exc)
                if event is not None:  # published by the replay loop (_checkpoint_step)
                    self._ckpt_failed = (event, str(exc))
            finally:
                shutil.rmtree(folder, ignore_errors=True)

        self._ckpt_thread = threading.Thread(target=finish, name="mig-checkpoint", daemon=True)
        self._ckpt_thread.start()
