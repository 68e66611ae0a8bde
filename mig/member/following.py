"""A primary's reading of ``mig.NAME.control``: its recent history first, then each record
as it comes (part of the ``Recorder``, mig/member/primary.py). A newer epoch's promotion
fences this primary; checkpoint and migrate requests made after its start are taken up."""

from __future__ import annotations

import time
from typing import Any

import structlog

from mig.deadline import Deadline
from mig.errors import Fenced
from mig.kafka.clients import end_offsets, offset_since
from mig.kafka.reader import END, Item, Reader
from mig.kafka.topics import topic_names
from mig.member.commit import CONTROL_FETCH_WAIT_MS
from mig.member.record_state import RecorderState

__all__ = ["Following", "CONTROL_HISTORY_S"]

log = structlog.get_logger("mig.recorder")

CONTROL_HISTORY_S = 60.0  # how far back a new primary reads the control topic


class Following(RecorderState):
    """The control topic, read."""

    def _control_reader(self, fetch_wait_ms: int) -> Reader:
        # consumer errors pass (the client goes on by itself); forged records are refused
        return Reader(self.settings, self.cfg.name, "mig.recorder", errors="skip",
                      undecodable_event="mig.recorder.control_undecodable",
                      conf={"group.id": f"mig-primary-{self.cfg.name}",
                            "isolation.level": "read_uncommitted",
                            "enable.partition.eof": True,
                            "fetch.wait.max.ms": fetch_wait_ms})

    def _follow_control(self, history: Reader) -> Reader:
        """Read the control topic from its start (bounded) with ``history``, then return
        the reader that keeps up with it from there.

        Two readers, as the broker holds a fetch that finds nothing for the consumer's
        fetch.wait.max.ms: the end of the history is known from an end-of-partition event,
        which comes only after such an empty fetch, so the history is read with 20 ms waits
        (a promoted replica serves its app only after this read). The reader that follows
        from there waits CONTROL_FETCH_WAIT_MS: a record is answered as soon as it comes
        either way, and an idle primary's consumer and broker no longer fetch 50 times a
        second (docs/benchmarks.md, "An idle agent")."""
        from confluent_kafka import TopicPartition

        topic = topic_names(self.cfg.name)["control"]
        start = self._history_start(history.consumer, topic)
        history.assign([TopicPartition(topic, 0, start)])
        deadline = Deadline(10)
        # what the topic held before: history, not signs of life (a replica whose last
        # status said "replaying" may have died since; a handoff to it would wait out its
        # timeout while the app is frozen)
        self._backlog = True
        end: int | None = None
        try:
            while end is None and not deadline.passed():
                # to the end: transaction markers have offsets no record has, so wait for
                # the end-of-partition event
                for item in history.poll(500, 0.01):
                    if item.kind == END:
                        end = item.msg.offset()
                    else:
                        self._on_control(item)
                        start = item.msg.offset() + 1
        finally:
            self._backlog = False
            # the replicas' next statuses (every heartbeat_ms) say who is hot
            self._view_fresh_at = time.monotonic() + self._fresh_s()
        control = self._control_reader(CONTROL_FETCH_WAIT_MS)
        try:
            control.assign([TopicPartition(topic, 0, start if end is None else end)])
        except BaseException:
            control.close()
            raise
        history.close()
        return control

    def _history_start(self, control: Any, topic: str) -> int:
        """Where the control read starts: CONTROL_HISTORY_S before now (never less than 10
        of the statuses' freshness windows). Older records say nothing a primary acts on
        (its epoch is its own, requests before its start are not for it, statuses are
        history), and a week of them took a promoted replica seconds to read before its
        first heartbeat: the other replicas took it for dead and promoted again."""
        back_ms = int(max(CONTROL_HISTORY_S, 10 * self._fresh_s()) * 1000)
        try:
            found = offset_since(control, topic, 0, int(time.time() * 1000) - back_ms)
        except Exception as exc:  # noqa: BLE001 - a broker that cannot say: read it all
            log.warning("mig.recorder.history_unknown", error=str(exc))
            return 0
        if found is None:  # nothing that recent: from the end
            return end_offsets(control, topic).get(0, 0)
        return found

    def _on_control(self, item: Item) -> None:
        """A control record, checked and decoded (forged or undecodable ones: not here)."""
        name, rec = item.name, item.record
        assert name is not None and rec is not None
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
