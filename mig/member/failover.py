"""A replica's failover: reading the control topic, claiming the primary role
when the primary is lost, and promoting (fence, read the log to its end, every process
live). docs/failover.md tells the protocol. Part of the Replayer (mig/member/replica.py)."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from typing import Any

import structlog

from mig.control.view import fresh_s
from mig.deadline import Deadline
from mig.errors import MigError
from mig.kafka.reader import UNDECODABLE, Item
from mig.kafka.topics import topic_names
from mig.kafka.writer import LogWriter
from mig.member.commit import batch_bytes, record_linger_ms
from mig.member.replay_state import ReplicaState

log = structlog.get_logger("mig.replayer")


class Failover(ReplicaState):
    """Watch the primary, claim, promote."""

    # -- control and failover
    def _on_control(self, item: Item) -> None:
        if item.kind == UNDECODABLE:  # (the reader hands these over: a calls one stops us)
            log.warning("mig.replayer.control_undecodable", offset=item.offset,
                        reason=item.reason)
            return
        name, rec = item.name, item.record
        assert name is not None and rec is not None
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
        if stalled > self.cfg.replica.failover_timeout_ms / 2000:
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
        timeout = self.cfg.replica.failover_timeout_ms / 1000
        handoff = ctl.pending_handoff()
        if handoff is not None:
            if handoff.record["to_member"] == self.member:
                return self._promote("handoff", handoff.at, None, ctl.epoch + 1,
                                     handoff.record)
            # a planned migration to another member: not a failure, unless it never ends
            if now - handoff.at < self.cfg.failover.handoff_timeout_ms / 1000:
                return False
        last_alive = max(ctl.last_primary_seen, self.last_calls_at, self.started_at,
                         self.log_resumed)
        # the primary's silence counts only while the log flows for us too: one of our
        # statuses (sent every heartbeat_ms) came back recently
        flowing = now - self.own_read_at < max(timeout / 2,
                                               3 * self.cfg.replica.heartbeat_ms / 1000)
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
        if calls > self.cfg.replica.max_lag_records:
            return False
        # the least-lagged healthy replica claims first; the others give it a head start
        fresh = fresh_s(self.cfg.replica.heartbeat_ms)
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
        ends = self._high_watermarks(topic, Deadline(30))
        if handoff is not None:
            planned = {po["partition"]: po["offset"] for po in handoff["calls_offsets"]}
            if planned != ends:
                log.warning("mig.replayer.handoff_offsets_differ", planned=planned, ends=ends)
        self._read_to(ends)
        read_at = time.monotonic()
        self._settle(Deadline(30))
        self._wait_live(Deadline(15))
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

    def _high_watermarks(self, topic: str, deadline: Deadline) -> dict[int, int]:
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
                    if deadline.passed():
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
                                           linger_ms=record_linger_ms(self.cfg.barrier_mode),
                                           fence_now=False,
                                           pump_limit=batch_bytes(self.cfg)))

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

    def _read_to(self, ends: dict[int, int]) -> None:
        """Read the calls topic until every partition reached ``ends`` (an end-of-partition
        event at or past it: transaction markers take offsets no record has)."""
        self._flow(resume=True)
        reader = self._reader
        assert reader is not None  # (a promotion runs inside run(), which holds the reader)
        topic = topic_names(self.cfg.name)["calls"]
        deadline = Deadline(60)
        while any(self.eof_at.get(p, -1) < end and self.next_offset.get(p, 0) < end
                  for p, end in ends.items()):
            if deadline.passed():
                raise MigError(f"promotion: could not read {topic} to its end {ends}")
            for item in reader.poll(500, 0.05):
                self._take(item)  # a consumer error here is retried until the deadline
            self._discover()
            self._feed()
            self._check()

    def _settle(self, deadline: Deadline) -> None:
        """Feed every process what is left, then tell each ring the log ends there."""
        while any(self.pending.get(lpid) for lpid in self.rings) and not deadline.passed():
            self._discover()
            self._feed()
            self._check()
            time.sleep(0.0005)
        self.settle_step()

    def _wait_live(self, deadline: Deadline) -> None:
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
            if deadline.passed():
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
        command = self.cfg.failover.on_promote
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

