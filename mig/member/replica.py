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

import socket
import time
from collections import deque
from pathlib import Path
from typing import Any

import structlog

from mig.checkpoint.taker import Checkpointing
from mig.config import AppConfig
from mig.control.view import ControlView
from mig.errors import MigError
from mig.kafka.clients import KafkaSettings, wait_reachable
from mig.kafka.reader import Reader
from mig.kafka.topics import topic_names
from mig.kafka.writer import LogWriter
from mig.member.failover import Failover
from mig.member.feed import Feeding
from mig.member.launch import kill_group
from mig.member.metrics import Metrics
from mig.member.replay_state import (
    CATCHING_UP_BATCHES,
    Divergence,
    PromotionFailed,
    ReplayStats,
    compare_identity,
)
from mig.progress import Progress
from mig.ring.decode import BatchDecoder
from mig.ring.kinds import KIND_NAMES
from mig.ring.memory import SCAN_S
from mig.wire.identity import member_id

__all__ = ["Replayer", "Divergence", "PromotionFailed", "ReplayStats", "compare_identity"]

log = structlog.get_logger("mig.replayer")


def replica_fetch(cfg: AppConfig) -> dict[str, Any]:
    """The calls consumer's fetch settings for ``[replica] fetch_coalesce_ms``: none (each
    record fetched as soon as it is there), or a fetch answered once 64 KiB wait or after
    that many ms."""
    ms = cfg.replica.fetch_coalesce_ms
    return {"fetch.min.bytes": 65536, "fetch.wait.max.ms": ms} if ms else {}


class Replayer(Feeding, Failover, Checkpointing):
    """A replica: its loop, its lag and status. Feeding the rings (mig/member/feed.py),
    failover and promotion (mig/member/failover.py) and checkpoints
    (mig/checkpoint/taker.py) are its parts; this class holds the state they share."""

    def __init__(self, cfg: AppConfig, settings: KafkaSettings, run_dir: Path, workdir: Path,
                 idle_exit_s: float | None = None, member: str | None = None,
                 can_promote: bool = True, use_checkpoints: bool = True,
                 checkpoint_once: bool = False, metrics: Metrics | None = None) -> None:
        self.cfg = cfg
        self.settings = settings
        self.run_dir = run_dir
        self.workdir = workdir
        self.idle_exit_s = idle_exit_s
        self.rings = {}
        self.pending = {}
        # lpid -> (ring position after a run of records fed, wall_ns of its first, how many)
        # of the runs the app has not taken yet
        self.in_ring = {}
        # lpid -> (first seq, last seq, partition, offset) of the recent batches, for
        # divergence reports (mig/member/feed.py reads the batch again from the log)
        self.placed = {}
        self.batches = BatchDecoder()
        self._pending_n = 0  # calls in self.pending
        self._paused = False  # fetching calls paused (MAX_PENDING)
        self.stats = ReplayStats()
        self.proc = None
        self.stdin_pipe = None  # [app] stdin = "topic": mig/member/stdin.py
        self.epoch = 0
        self.host = socket.gethostname()
        self.member = member or member_id("replica")
        self.can_promote = can_promote
        self.control = ControlView(cfg.name)
        self.next_offset = {}  # calls partition -> next offset to read
        self.eof_at = {}       # calls partition -> offset of the last EOF
        self._at_end = set()  # calls partitions read to their end (no record since)
        self.batch_next = {}   # lpid -> batch_seq after the last one read
        self.last_calls_at = time.monotonic()
        self.started_at = time.monotonic()
        self.detected_at = None
        self.last_alive = 0.0
        self.claimed = set()
        self.writer = None  # the app's transactional writer, once promoted
        self.health = "replaying"
        self._cons = None  # the reader's consumer (pause, watermarks)
        self._reader = None
        self.control_read = False  # the control topic was read to its end once
        self._catching_up = None  # while far behind the log's end
        # Our own statuses read back from the control topic tell whether the log flows for
        # us: while it stalls (a broker lost, its partitions moving) the primary's silence
        # proves nothing, so detection waits for a whole timeout of flowing log afterwards.
        self._status_sent = {}  # ts_ms of our status -> monotonic sent
        self.log_resumed = 0.0  # when our statuses came back after a stall
        self.own_read_at = 0.0  # when we last read one of our statuses back
        self._calls_topic = topic_names(cfg.name)["calls"]
        self._live_marked = set()
        self._standby = []
        # checkpoints (mig/checkpoint/store.py)
        self.use_checkpoints = use_checkpoints and cfg.checkpoints.enabled
        self.identity_rec = None  # the recorded AppIdentity
        self.last_seq = {}  # lpid -> seq of the last call fed
        self.launched = False  # this worker started the app, or restored it (below)
        self.restored_from = None
        self._restored = None  # the manifest restored from
        self._ckpt_calls = 0
        self._ckpt_at = time.monotonic()
        self._ckpt_asked = None
        self._started_ms = int(time.time() * 1000)
        self._ckpt_retry_at = 0.0
        self._ckpt_thread = None
        self._ckpt_error = None  # why the last checkpoint failed
        self._ckpt_failed = None  # (request, why) to publish
        self.stored = None  # the id of the last checkpoint stored
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
        # every item comes to _take (mig/member/feed.py): a consumer error ends the loop
        # here and is retried while promoting, a refused record is counted, an undecodable
        # call stops the replay and an undecodable control record is skipped; _take decodes
        # (a CallBatch straight into ring records: mig/ring/decode.py)
        reader = Reader(self.settings, self.cfg.name, "mig.replayer", errors="yield",
                        refused="yield", undecodable="yield", decode=False,
                        conf={"group.id": f"mig-replica-{self.cfg.name}",
                              "enable.partition.eof": True,
                              "isolation.level": "read_uncommitted",
                              # an idle fetch returns after this long: it bounds the replica's
                              # lag and how soon it sees a handoff or the log's end when
                              # promoting
                              "fetch.wait.max.ms": 20, **replica_fetch(self.cfg)})
        cons = reader.consumer
        self._reader, self._cons = reader, cons
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
        reader.assign([TopicPartition(topic, p, o) for p, o in self.next_offset.items()]
                      + [TopicPartition(names["control"], 0, 0)])
        last_input = time.monotonic()
        last_status = last_scan = 0.0
        self.started_at = time.monotonic()  # after a restore: the silence starts now
        try:
            while True:
                if (time.monotonic() - last_status) * 1000 >= self.cfg.replica.heartbeat_ms:
                    self._publish_status()
                    last_status = time.monotonic()
                if stop is not None and stop():
                    return self.stats
                for item in reader.poll(500, 0.001 if self._backlog() else 0.02):
                    taken = self._take(item)
                    if isinstance(taken, str):
                        raise MigError(taken)
                    if taken:
                        last_input = time.monotonic()
                if time.monotonic() - last_scan > SCAN_S:  # (a turn comes with every batch)
                    self._discover()
                    last_scan = time.monotonic()
                self._feed()
                self._check()
                self._flow()
                if self.can_promote and self._failover_step():
                    return self.stats  # promoted: the caller goes on as the primary
                if self.checkpoint_once and self._once_step():
                    return self.stats
                self._checkpoint_step()
                if self.proc is not None and self.proc.poll() is not None and not self._backlog():
                    self._left_at_exit()
                    return self.stats
                if (self.idle_exit_s is not None and not self._backlog()
                        and time.monotonic() - last_input > self.idle_exit_s):
                    self._all_taken()
                    return self.stats
        finally:
            reader.close()
            self._cons = self._reader = None
            if self.stats.promoted_epoch is None:
                try:  # never hide the error that ended the loop
                    self._publish_status(final=True)
                except Exception as exc:  # noqa: BLE001
                    log.warning("mig.replayer.final_status_failed", error=repr(exc))
                if self.proc is not None and self.proc.poll() is None:
                    kill_group(self.proc)

    def _left_at_exit(self) -> None:
        """The app has exited: a process that had not taken every call fed to it ended
        before the primary's did (killed with its namespace when the app's first process
        exited, or gone another way where the replay compares no call). The final status
        counts those calls as not replayed; this says whose they are and where each
        process stopped, so that a lag left at the end is explained in the log."""
        for lpid in sorted(set(self.rings) | set(self.pending)):
            ring = self.rings.get(lpid)
            nxt = ring.next_record() if ring is not None else None
            queued = sum(batch.left for batch in self.pending.get(lpid, ()))
            if nxt is None and not queued:
                continue
            fed = sum(run[2] for run in self._untaken_runs(lpid))  # (as lag() counts them)
            log.warning("mig.replayer.calls_left_at_exit", lpid=lpid, calls=fed + queued,
                        queued=queued,
                        next_seq=nxt[0] if nxt else None, thread=nxt[1] if nxt else None,
                        kind=KIND_NAMES.get(nxt[2], nxt[2]) if nxt else None,
                        ring="found" if ring is not None else "never made here")

    def _all_taken(self) -> None:
        """--idle-exit: the log has been idle that long. A process whose app has not taken
        every call fed to it is stuck (gone another way than the primary's, at no call the
        replay compares) or slower than that: stopping as if the replay were done would
        hide it, so this says which call it has not reached."""
        for lpid, ring in self.rings.items():
            nxt = ring.next_record()
            if nxt is None or ring.divergence() is not None:
                continue
            seq, tid, kind = nxt
            raise MigError(
                f"the log had nothing new for {self.idle_exit_s:g} s (--idle-exit), but"
                f" process {lpid} of the app has not made its next recorded call: seq {seq},"
                f" thread {tid}, {KIND_NAMES.get(kind, kind)}; it is stuck or went another"
                " way than the primary's where the replay compares no call, or it is"
                " slower than --idle-exit allows (a longer one tells which)")

    # -- status
    def lag(self) -> tuple[int, int]:
        """(calls received but not yet replayed, ms since the oldest of them was recorded):
        those still queued here and those in a ring the app has not taken yet."""
        calls, oldest = 0, None
        for lpid in self.in_ring:
            flight = self._untaken_runs(lpid)
            calls += sum(run[2] for run in flight)
            if flight:
                oldest = flight[0][1] if oldest is None else min(oldest, flight[0][1])
        for queue in self.pending.values():
            calls += sum(batch.left for batch in queue)
            if queue:
                wall = queue[0].next_wall_ns()
                oldest = wall if oldest is None else min(oldest, wall)
        calls += self.unfetched()
        if not calls or oldest is None:
            return calls, 0
        return calls, max(0, (time.time_ns() - oldest) // 1_000_000)

    def _untaken_runs(self, lpid: str) -> deque[tuple[int, int, int]]:
        """The runs of calls fed to process ``lpid``'s ring that its app has not taken all
        of (those it has are dropped): a run counts whole until the ring's tail passes it."""
        flight = self.in_ring.get(lpid, deque())
        ring = self.rings.get(lpid)
        tail = ring.tail if ring is not None else 0
        while flight and flight[0][0] <= tail:
            flight.popleft()
        return flight

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

