"""A primary's output commit: rings drained into CallBatch records, one Kafka
transaction every flush_ms, barriers answered once Kafka acknowledged what they wait for
(docs/interceptor.md, "When is a record committed"), heartbeats. Part of the Recorder
(mig/member/primary.py)."""

from __future__ import annotations

import time

import structlog

from mig.kafka.writer import LogWriter
from mig.member.record_state import RecorderState
from mig.ring.memory import MODE_RECORD, new_rings

log = structlog.get_logger("mig.recorder")


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
