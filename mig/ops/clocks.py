"""Do the wall clocks of an app's members agree? Measured from outside, no host trusted.

mig's failure detection and promotion use monotonic clocks only, each member its own
(docs/failover.md): a skewed wall clock cannot make a replica take over early or late.
Wall clocks still show through: the app's own clock steps by the skew when a replica goes
live on another host, a replica's ``lag_ms`` is its clock minus the primary's, ``mig
status`` ages records with the reader's clock, and a primary ignores ``Migrate`` requests
stamped before it started. docs/operations.md ("Clocks") says what to do about a skew.

The measurement: for a short window, read the records that arrive on ``mig.NAME.control``.
Each heartbeat, status or claim carries its writer's wall clock: the Kafka CreateTime its
producer set (the record's ``ts_ms`` when the topic stamps LogAppendTime, which then shows
the broker's clock too). ``writer's time - arrival time`` is the writer's clock minus the
reader's, less the delivery delay; the largest over the window is the offset, low by the
shortest delay (a few milliseconds). The verdict is the spread of every clock seen, the
reader's own among them, so no host is the reference.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mig.deadline import Deadline
from mig.errors import MigError
from mig.kafka.clients import KafkaSettings

__all__ = ["Sample", "Clock", "samples_of", "estimate", "spread", "observe", "WARN_MS",
           "FAIL_MS", "BROKER"]

WARN_MS = 100  # replica lag_ms (p99 target 100 ms) means nothing beyond this
FAIL_MS = 2000  # mig status calls a member stale after 2 s: healthy members would look dead
BROKER = "broker"
_MEMBER_RECORDS = ("mig.log.Heartbeat", "mig.log.MemberStatus", "mig.log.Claim")
_CREATE_TIME, _LOG_APPEND_TIME = 1, 2  # confluent_kafka.TIMESTAMP_*


@dataclass(frozen=True)
class Sample:
    clock: str  # the writer's host (its member id when the record names no host), or BROKER
    member: str | None
    offset_ms: int  # the writer's clock minus the reader's at arrival, less the delay


@dataclass(frozen=True)
class Clock:
    clock: str
    members: tuple[str, ...]
    offset_ms: int  # ahead of the reader's clock (negative: behind)
    samples: int


def samples_of(name: str, rec: dict[str, Any], ts_type: int, ts_ms: int,
               arrived_ms: int) -> list[Sample]:
    """What one control record tells about clocks: its writer's, and the broker's when the
    topic stamps LogAppendTime."""
    if name not in _MEMBER_RECORDS:
        return []
    member = rec["member"]
    clock = rec.get("host") or member
    if ts_type == _LOG_APPEND_TIME:
        return [Sample(clock, member, rec["ts_ms"] - arrived_ms),
                Sample(BROKER, None, ts_ms - arrived_ms)]
    written = ts_ms if ts_type == _CREATE_TIME else rec["ts_ms"]
    return [Sample(clock, member, written - arrived_ms)]


def estimate(samples: Iterable[Sample], own: str | None = None) -> list[Clock]:
    """One offset per clock (the largest of its samples: the least delayed), plus the
    reader's own clock at 0 unless a member on the reader's host was measured; sorted from
    the furthest behind to the furthest ahead."""
    own = own or socket.gethostname()
    best: dict[str, int] = {}
    members: dict[str, set[str]] = {}
    counts: dict[str, int] = {}
    for s in samples:
        best[s.clock] = max(best.get(s.clock, s.offset_ms), s.offset_ms)
        counts[s.clock] = counts.get(s.clock, 0) + 1
        if s.member is not None:
            members.setdefault(s.clock, set()).add(s.member)
    clocks = [Clock(c, tuple(sorted(members.get(c, ()))), off, counts[c])
              for c, off in best.items()]
    if own not in best:
        clocks.append(Clock(own, (), 0, 0))
    return sorted(clocks, key=lambda c: (c.offset_ms, c.clock))


def spread(clocks: list[Clock]) -> int:
    """Milliseconds between the furthest-behind and the furthest-ahead clock."""
    return clocks[-1].offset_ms - clocks[0].offset_ms if clocks else 0


def observe(settings: KafkaSettings, app: str, window_s: float,
            timeout: float = 5.0) -> list[Sample] | None:
    """The clock samples of the records arriving on ``app``'s control topic during
    ``window_s`` seconds; None when the topic does not exist. Only reads."""
    from confluent_kafka import OFFSET_END, KafkaException, TopicPartition

    from mig.kafka.reader import RECORD, Reader
    from mig.kafka.topics import topic_names

    topic = topic_names(app)["control"]
    # a consumer error ends the check ("reading TOPIC: why"); undecodable records pass
    # (mig status and mig log verify report those)
    reader = Reader(settings, app, "mig.clocksync", errors="raise", undecodable="skip",
                    conf={"group.id": "mig-doctor", "isolation.level": "read_uncommitted",
                          "enable.partition.eof": False, "fetch.wait.max.ms": 10})
    try:
        try:
            meta = reader.consumer.list_topics(timeout=timeout)
        except KafkaException as exc:
            raise MigError(f"cannot read topic {topic} at {settings.bootstrap_servers}:"
                           f" {exc}") from exc
        if topic not in meta.topics or meta.topics[topic].error is not None:
            return None
        reader.assign([TopicPartition(topic, 0, OFFSET_END)])
        out: list[Sample] = []
        deadline = Deadline(window_s)
        while not deadline.passed():
            for item in reader.poll(1, deadline.left(cap=0.1)):
                if item.kind == RECORD and item.name is not None and item.record is not None:
                    ts_type, ts_ms = item.msg.timestamp()
                    # (the arrival: when the poll returned, before the checks)
                    out += samples_of(item.name, item.record, ts_type, ts_ms,
                                      reader.fetched_ms)
        return out
    finally:
        reader.close()
