"""Feeding a replica's app: the calls topic's records taken in order, checked,
and written into the ring of each logical process; a divergence stopped with its report.
Part of the Replayer (mig/member/replica.py), which holds the state."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import structlog

from mig.deadline import Deadline
from mig.errors import DecodeError, MigError
from mig.kafka.reader import END, ERROR, RECORD, REFUSED, UNDECODABLE, Item, Reader
from mig.member.launch import app_env, launch, private_run_dir
from mig.member.replay_state import (
    MAX_PENDING,
    RECENT_BATCHES,
    Divergence,
    PromotionFailed,
    ReplicaState,
    compare_identity,
)
from mig.ring.calls import describe
from mig.ring.decode import from_calls
from mig.ring.memory import (
    new_rings,
)
from mig.wire.identity import app_identity

log = structlog.get_logger("mig.replayer")


def _where(msg: Any) -> str:
    """A record's place, for an error line."""
    return f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"


class Feeding(ReplicaState):
    """The replay path's input: records in, rings fed, divergences caught."""

    # -- input
    def _on_message(self, item: Item) -> None:
        msg = item.msg
        try:  # a CallBatch of the current schema: natively, straight into ring records
            batch = self.batches.decode(msg.value(), msg.headers())
        except DecodeError as exc:
            item.kind, item.reason = UNDECODABLE, exc.reason
            batch = None
        if batch is None and item.kind != UNDECODABLE:
            assert self._reader is not None
            self._reader.decode(item)  # anything else by the codec (undecodable: "yield")
        if item.kind == UNDECODABLE:  # skipping it would replay the app wrong
            raise MigError(f"{_where(msg)}: cannot replay an undecodable record: {item.reason}")
        self.stats.last_offset = msg.offset()
        self.next_offset[msg.partition()] = msg.offset() + 1
        self.last_calls_at = time.monotonic()
        if batch is None:
            assert item.name is not None and item.record is not None
            if item.name == "mig.log.AppIdentity":
                self._start_app(item.record)
                return
            if item.name != "mig.log.CallBatch":
                return
            try:  # (a batch of an older schema)
                batch = from_calls(item.record)
            except DecodeError as exc:
                raise MigError(f"{_where(msg)}: cannot replay a call of process"
                               f" {item.record['lpid']}: {exc.reason}") from exc
        if self.metrics is not None:
            self.metrics.log_bytes("replayed", len(msg.value()))
        if self.proc is None:
            raise MigError(f"offset {msg.offset()}: calls before the app identity record")
        lpid = batch.lpid
        expected = self.batch_next.get(lpid)
        if expected is not None and batch.batch_seq != expected:
            if batch.batch_seq < expected:
                # a copy of a batch already replayed (written again into the topic):
                # replaying it twice would drift the app silently
                self.stats.refused += 1
                log.error("mig.replayer.duplicate_batch", topic=msg.topic(),
                          partition=msg.partition(), offset=msg.offset(), lpid=lpid,
                          batch_seq=batch.batch_seq, expected=expected)
                return
            raise MigError(f"{_where(msg)}: batch {batch.batch_seq} of process {lpid}, expected"
                           f" {expected}: batches are missing from the log; replaying on would"
                           " diverge (mig log verify shows the gap)")
        self.epoch = max(self.epoch, batch.epoch)
        self.batch_next[lpid] = batch.batch_seq + 1
        if batch.count:
            self.pending.setdefault(lpid, deque()).append(batch)
            self._pending_n += batch.count
            placed = self.placed.setdefault(lpid, deque(maxlen=RECENT_BATCHES))
            placed.append((batch.first_seq, batch.last_seq, msg.partition(), msg.offset()))
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
        if (self.can_promote and ck.enabled and ck.when_alone):
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
            if not queue:
                continue
            fed = 0
            flight = self.in_ring.setdefault(lpid, deque())
            while queue:
                batch = queue[0]
                wall = batch.next_wall_ns()
                put, last = self.batches.fill(ring, batch)
                if put:
                    self.last_seq[lpid] = last
                    flight.append((ring.head, wall, put))  # taken once the tail passes it
                    fed += put
                if batch.left:
                    break  # the ring is full: the rest when the app has taken some
                queue.popleft()
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
        rec, offset = self._recorded_call(lpid, seq)
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

    def _recorded_call(self, lpid: str, seq: int) -> tuple[dict[str, Any] | None, int]:
        """Call ``seq`` of process ``lpid`` as recorded, and the offset of its batch: read
        again from the log, where the replica remembers recent batches to be (it keeps no
        decoded calls). (None, -1) when its batch is not among them; (None, offset) when
        that batch cannot be read again now."""
        from confluent_kafka import TopicPartition

        place = next(((partition, offset) for first, last, partition, offset
                      in reversed(self.placed.get(lpid, ())) if first <= seq <= last), None)
        if place is None:
            return None, -1
        partition, offset = place
        try:
            with Reader(self.settings, self.cfg.name, "mig.replayer", errors="skip",
                        undecodable="skip",
                        conf={"isolation.level": "read_uncommitted"}) as reader:
                reader.assign([TopicPartition(self._calls_topic, partition, offset)])
                deadline = Deadline(5)
                while not deadline.passed():
                    for item in reader.poll(1, deadline.left(cap=0.5)):
                        if item.kind == END or item.offset > offset:
                            return None, offset
                        if item.kind == RECORD and item.name == "mig.log.CallBatch":
                            assert item.record is not None
                            return next((call for call in item.record["calls"]
                                         if call["seq"] == seq), None), offset
        except MigError as exc:
            log.warning("mig.replayer.reread_failed", offset=offset, error=str(exc))
        return None, offset

    def _take(self, item: Item) -> bool | str:
        """One item of the reader (calls or control): True for a calls record, False for
        anything else taken, the error line for a consumer error. End-of-partition events
        note how far each topic was read; a record refused by the signature check (said by
        the reader, mig/wire/auth.py) is counted and skipped, the replay goes on."""
        calls = item.role == "calls"
        if item.kind == END:
            if calls:
                self.eof_at[item.partition] = item.offset
                self._at_end.add(item.partition)
            else:
                self.control_read = True
            return False
        if item.kind == ERROR:
            return item.reason or ""
        if item.kind == REFUSED:
            self.stats.refused += 1
            return False
        if calls:
            self._at_end.discard(item.partition)
            self._on_message(item)
            return True
        assert self._reader is not None
        self._reader.decode(item)  # (undecodable: "yield", which _on_control says)
        self._on_control(item)
        return False

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

