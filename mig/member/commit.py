"""A primary's output commit: rings drained into CallBatch records, one Kafka
transaction every flush_ms, barriers answered once Kafka acknowledged what they wait for
(docs/interceptor.md, "When is a record committed"), heartbeats. Part of the Recorder
(mig/member/primary.py).

Group commit: a batch sent is in flight until its delivery report says every in-sync
replica has it. Acknowledgements are taken as they come, without waiting for the rest
(``_settle_acks``): the batches acknowledged in the order they were sent, up to the first
still in flight, release their processes' threads and held outputs at once, so one
acknowledgement releases every output that waited on any record before it. (Only that
prefix: an output of one process may depend on a record of another, as with a flush.)

Two paths do that: the native pump (``_pump``, mig/kafka/pump.py), where one C call per
ring sends its batches and librdkafka's broker thread releases them, and the Python one
(``_drain`` and ``_settle_acks`` with an acknowledgement thread), for a process whose
librdkafka cannot be bound and for comparison (``MIG_NATIVE_PUMP=0``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

from mig.config import AppConfig
from mig.kafka.pump import BAD_RECORD, QUEUE_FULL, REFUSED, Pump
from mig.kafka.writer import LogWriter
from mig.member.record_state import RecorderState
from mig.ring.memory import MODE_RECORD, new_rings

log = structlog.get_logger("mig.recorder")


def _marker(entry: list[Any]) -> Callable[[], None]:
    def acked() -> None:
        entry[2] = True
    return acked


# The primary's producer sends a batch as soon as it can (librdkafka's linger.ms): a held
# output waits for its acknowledgement, and records that come while a request is in flight
# go together in the next one anyway (docs/benchmarks.md, "Output commit").
RECORD_LINGER_MS = 0
# In async mode nothing waits for an acknowledgement, so records are let gather instead:
# after a turn that sent some the agent waits ASYNC_PACE_S for a doorbell (a ring past half
# full or full: async mode raises no barrier) before it drains again, and the producer lingers
# ASYNC_LINGER_MS. Fewer, larger batches and Kafka requests: with Redis under load the agent
# took a third of the CPU and the broker half of it (docs/benchmarks.md, "Output commit").
ASYNC_PACE_S = 0.002
ASYNC_LINGER_MS = 5


def record_linger_ms(barrier_mode: str) -> int:
    """The linger.ms of a primary's producer in this barrier mode."""
    return ASYNC_LINGER_MS if barrier_mode == "async" else RECORD_LINGER_MS


def batch_bytes(cfg: AppConfig) -> int:
    """The largest CallBatch value a primary of this app sends: well under the topic's
    max.message.bytes (Avro adds little)."""
    return cfg.topics.max_message_bytes // 2


# The longest a busy agent waits for a doorbell between turns: records that raise no
# barrier gather in the rings meanwhile (one batch for many), and wait at most this long.
TURN_S = 0.005
# An agent that sent nothing for QUIET_S is idle: it sleeps until its nearest timer, and the
# first record appended wakes it (mig/ring/doorbell.py, a deep wait). The control topic is
# read every CONTROL_S while busy and every CONTROL_IDLE_S while idle (requests to migrate
# or checkpoint, replicas' statuses: none of them is in a hurry of milliseconds). Without
# the deep wait an idle primary agent woke 200 times a second and took 4 to 5% of a core
# (docs/benchmarks.md, "An idle agent").
QUIET_S = 0.02
CONTROL_S = 0.01
CONTROL_IDLE_S = 0.1
# How long the broker holds a primary's fetch of the control topic that finds nothing
# (mig/member/following.py, _follow_control).
CONTROL_FETCH_WAIT_MS = 500
# New processes ring the agent's bell (mig/ring/doorbell.py); the run folder is still looked
# at this often, in case a ring came without it (a process that died while making it).
RING_SCAN_S = 1.0


class Committing(RecorderState):
    """Drain the rings, commit, acknowledge, beat."""

    def _discover(self) -> None:
        for lpid, ring in new_rings(self.run_dir, self.rings).items():
            self.rings[lpid] = ring
            self.batch_seq.setdefault(lpid, 0)
            log.info("mig.recorder.process", lpid=lpid, pid=ring.pid)

    def _drain(self, writer: LogWriter) -> int:
        """Move what the rings hold into CallBatch records (at most ``drain_bytes`` of ring
        per process per turn). Returns the number of calls sent."""
        if writer.pump is not None:
            return self._pump(writer, writer.pump)
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
                # [lpid, seq after it, acknowledged, when sent]
                sent_to: list[Any] = [lpid, batch.last_seq + 1, False, time.monotonic()]
                self._in_flight.append(sent_to)
                writer.send_raw("calls", batch.value, key=lpid, headers=self.headers,
                                on_acked=_marker(sent_to))
                self.batch_seq[lpid] += 1
                self._sent(lpid, 1, batch.count, len(batch.value), batch.last_seq)
                sent += batch.count
            if pos != start:
                ring.release(pos)
        return sent

    def _sent(self, lpid: str, batches: int, calls: int, nbytes: int, last_seq: int) -> None:
        """Count batches of process ``lpid`` sent, its last call ``last_seq``."""
        self.sent_seq[lpid] = last_seq + 1
        self.stats.batches += batches
        self.stats.calls += calls
        if self.metrics is not None:
            self.metrics.calls("recorded", calls)
            self.metrics.log_bytes("recorded", nbytes)

    def _pump(self, writer: LogWriter, pump: Pump) -> int:
        """``_drain`` in native code (mig/kafka/pump.py): one call per ring; the batches'
        acknowledgements release their barriers without the agent. When the producer's
        queue is full (a broker that stalls) the rest waits for the next turn, after 10 ms
        for delivery reports, and at least 1 is returned: the loops that drain the rings
        to their end go on."""
        sent, full = 0, False
        for lpid, ring in self.rings.items():
            if ring.mode != MODE_RECORD:
                continue  # adopt(): this process is still replaying
            start, head = ring.tail, ring.head
            if start >= head:
                continue
            writer.begin()
            out = pump.drain(ring, start, head, self.drain_bytes, self.epoch, lpid,
                             self.batch_seq[lpid], time.time_ns())
            if out.next != start:
                ring.release(out.next)
            self.batch_seq[lpid] = out.batch_seq
            if out.batches:
                self._sent(lpid, out.batches, out.calls, out.bytes, out.last_seq)
                sent += out.calls
            if out.result == BAD_RECORD:
                raise self.encoder.problem(ring, out.next, head)
            if out.result == REFUSED:
                writer.raise_pump_refusal()
            full |= out.result == QUEUE_FULL
        if full:
            writer.serve(0.01)
            return max(sent, 1)
        return sent

    def _loop(self, writer: LogWriter, proc: Any, control: Any) -> None:
        """The agent's turns (mig/member/primary.py), with its acknowledgement thread. With
        the native pump the acknowledgements of batches release their barriers in
        librdkafka's thread, and the delivery reports of the agent's other records (its
        heartbeats) are taken at each turn: a thread woken by every report, and waking the
        loop, cost as much CPU as the pump saved."""
        if writer.pump is not None:
            self._turns(writer, proc, control)
            return
        done = threading.Event()
        acks = threading.Thread(target=self._take_acks, args=(writer, done),
                                name="mig-acks", daemon=True)
        acks.start()
        try:
            self._turns(writer, proc, control)
        finally:
            done.set()
            acks.join(5)

    def _take_acks(self, writer: LogWriter, done: threading.Event) -> None:
        """The acknowledgement thread: takes Kafka's delivery reports as they come (each
        marks its batch acknowledged) and rings the agent's doorbell, so outputs waiting
        on them go at once, whatever the agent was waiting for."""
        while not done.is_set():
            if writer.poll_reports(0.05):
                self.bells.ring()

    def _settle_acks(self, writer: LogWriter, timeout: float = 0.0) -> None:
        """Answer barriers with the acknowledgements that have come (waiting at most
        ``timeout`` for one): once every record sent before a batch is acknowledged by all
        in-sync replicas, it is in the log for good (a promoting replica fences, then reads
        the log to its end read_uncommitted: docs/interceptor.md), so the outputs that
        waited on it may go."""
        writer.serve(timeout)
        if writer.pump is not None:  # (its acknowledgements released their barriers)
            if writer.pump.failed:
                writer.raise_pump_refusal()
            if self.metrics is not None:
                for waited in writer.pump.latencies():
                    self.metrics.commit(waited)
        flight = self._in_flight
        released: dict[str, int] = {}
        now = time.monotonic()
        while flight and flight[0][2]:
            lpid, upto, _, sent_at = flight.popleft()
            released[lpid] = upto
            if self.metrics is not None:  # what the outputs waiting on it waited for
                self.metrics.commit(now - sent_at)
        if not released:
            return
        self.stats.barrier_commits += 1
        for lpid, upto in released.items():
            ring = self.rings.get(lpid)
            if ring is not None:
                ring.commit(upto)

    def _commit(self, writer: LogWriter) -> None:
        """Commit the open transaction: replicas reading read_committed see the records."""
        started = time.monotonic()
        committed = writer.commit()
        if self.metrics is not None:
            self.metrics.commit(time.monotonic() - started)
        calls = [(partition, offset) for topic, partition, offset in committed
                 if topic.endswith(".calls")]
        if writer.pump is not None:  # (the batches it sent: their reports skip Python)
            calls += writer.pump.acked_offsets().items()
        for partition, offset in calls:
            self.last_calls_offset[partition] = max(
                offset, self.last_calls_offset.get(partition, -1))
        self.stats.commits += 1
        self._release_rings()

    def _release_rings(self) -> None:
        """Everything sent is acknowledged (after a flush or a commit)."""
        self._in_flight.clear()
        for lpid, ring in self.rings.items():
            if lpid in self.sent_seq:
                ring.commit(self.sent_seq[lpid])

    def _heartbeat(self, writer: LogWriter) -> None:
        writer.send("control", "mig.log.Heartbeat", {
            "app": self.cfg.name, "member": self.member, "role": "PRIMARY",
            "epoch": self.epoch, "ts_ms": int(time.time() * 1000),
            "calls_offset": max(self.last_calls_offset.values(), default=-1),
            "host": self.host}, key=self.member)
