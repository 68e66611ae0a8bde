"""Reading the control topics fast: of one app, of several, or finding every app.

Every member writes a heartbeat or status each heartbeat_ms, so a control topic grows by
about 10 records a second for a primary and one replica. A read starts at the first record
of the last ``since_s`` seconds (offsets for a time, from the broker), reads up to the end
offset it found, and decodes only each member's newest record of each kind: the others
are the same news, older. Records without a valid signature, when the app's are signed,
are left out (mig/wire/auth.py).

The control topic is read read_uncommitted: heartbeats travel in the primary's
transactions, and a live primary must not look silent until its next commit. A record of an
aborted transaction was still sent by a live member, which is what status reports.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mig.errors import MigError
from mig.kafka.clients import (
    KafkaSettings,
    admin_client,
    offset_since,
    wait_reachable,
    watermarks,
)
from mig.kafka.reader import END, RECORD, Item, Reader
from mig.kafka.topics import topic_names
from mig.wire.codec import SCHEMA_HEADER

__all__ = ["AppRead", "Record", "list_apps", "read_apps", "read_control", "read_controls"]

_CONTROL_RE = re.compile(r"^mig\.([^.]+)\.control$")



Record = tuple[str, dict[str, Any]]



def list_apps(settings: KafkaSettings, timeout: float = 10.0) -> list[str]:
    """Names of the apps that have a control topic, sorted."""
    from confluent_kafka import KafkaException

    wait_reachable(settings, timeout)
    try:
        meta = admin_client(settings).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise MigError(f"cannot list topics at {settings.bootstrap_servers}: {exc}") from exc
    return sorted(m.group(1) for t in meta.topics if (m := _CONTROL_RE.match(t)))



def read_control(settings: KafkaSettings, app: str, timeout: float = 10.0) -> list[Record]:
    """The decoded records of ``app``'s control topic, from its beginning to its end."""
    return read_controls(settings, [app], timeout)[app]



def read_controls(settings: KafkaSettings, apps: Sequence[str],
                  timeout: float = 10.0) -> dict[str, list[Record]]:
    """Read the control topics of ``apps`` with one consumer, each up to the end offset it
    had when the read began: the walk ends. Undecodable records are skipped (and logged).
    Raises MigError when a topic does not exist or nothing arrives for ``timeout`` seconds
    (a long topic may take longer than that as a whole)."""
    return {app: read.records for app, read in read_apps(settings, apps, timeout).items()}



@dataclass
class AppRead:
    records: list[Record] = field(default_factory=list)
    count: int = 0  # records read (more than ``records`` when superseded ones were skipped)
    whole: bool = True  # read from the topic's first record



def read_apps(settings: KafkaSettings, apps: Sequence[str], timeout: float,
          since_ms: int | None = None, latest_only: bool = False) -> dict[str, AppRead]:
    """``read_controls``, from the first record written at ``since_ms`` or later (None: the
    topic's start). ``latest_only``: of the heartbeats and statuses of a member (most of
    the topic: every member writes one each heartbeat_ms), only its newest of each kind
    is decoded and returned; ``summarize`` gives the same answer from what is left."""
    from confluent_kafka import TopicPartition

    names = {topic_names(app)["control"]: app for app in apps}
    starts: dict[str, int] = {}
    ends: dict[str, int] = {}
    pending: set[str] = set()

    def wanted(msg: Any) -> bool:  # (one written after the read began is not even checked)
        return msg.topic() in pending and msg.offset() < ends[msg.topic()]

    # one client, whose first answer is also the wait for the broker; the end of a topic
    # comes in a fetch answer, which the broker holds fetch.wait.max.ms when there is none.
    # Records are decoded once the newest of each member is known (below).
    reader, meta = Reader.reachable(settings, apps, "mig.status", timeout, conf={
        "group.id": "mig-status", "isolation.level": "read_uncommitted",
        "fetch.wait.max.ms": 20}, refused="yield", decode=False, want=wanted)
    try:
        cons = reader.consumer
        for topic, app in names.items():
            if topic not in meta.topics or meta.topics[topic].error is not None:
                raise MigError(f"no app '{app}': topic {topic} does not exist"
                               " (`mig status` without a name lists the apps)")
        out = {app: AppRead() for app in apps}
        for topic, app in names.items():
            low, ends[topic] = watermarks(cons, topic, 0, timeout)
            starts[topic] = low
            if since_ms is not None:
                found = offset_since(cons, topic, 0, since_ms, timeout)
                starts[topic] = ends[topic] if found is None else max(low, found)
                out[app].whole = starts[topic] <= low
        raw: dict[str, list[Item]] = {topic: [] for topic in names}
        pending.update(topic for topic in names if ends[topic] > starts[topic])
        reader.assign([TopicPartition(t, 0, starts[t]) for t in sorted(pending)])
        idle_since = time.monotonic()
        while pending:
            batch = reader.poll(1000, 0.02)  # (what has come once the first has, or nothing)
            if not batch and time.monotonic() - idle_since > timeout:
                raise MigError(f"no record for {timeout:g} s while reading"
                               f" {', '.join(sorted(pending))}")
            if batch:
                idle_since = time.monotonic()
            for item in batch:  # (a consumer error raises MigError: "reading TOPIC: why")
                if item.kind == END:
                    pending.discard(item.topic)
                    continue
                if item.offset >= ends[item.topic] - 1:
                    pending.discard(item.topic)
                # with signed records, a forged one (a Promotion of "evil") is not a fact
                if item.kind == RECORD:
                    raw[item.topic].append(item)
        for topic, items in raw.items():
            read = out[names[topic]]
            read.count = len(items)
            read.records = _decoded(reader, _newest(items) if latest_only else items)
        return out
    finally:
        reader.close()



def _decoded(reader: Reader, items: list[Item]) -> list[Record]:
    """The records of ``items``, decoded now; an undecodable one is logged and left out."""
    out: list[Record] = []
    for item in items:
        if reader.decode(item) and item.name is not None and item.record is not None:
            out.append((item.name, item.record))
    return out



def _schema_of(item: Item) -> str | None:
    for key, value in item.msg.headers() or ():
        if key == SCHEMA_HEADER:
            return value.decode(errors="replace") if isinstance(value, bytes) else None
    return None



def _newest(items: list[Item]) -> list[Item]:
    """``items`` without the heartbeats and statuses a newer one of the same member (the
    key) and kind supersedes, in topic order."""
    last: dict[tuple[str, bytes | None], int] = {}
    for i, item in enumerate(items):
        name = _schema_of(item)
        if name in _REPEATED:
            last[(name, item.msg.key())] = i
    keep = set(last.values())
    return [item for i, item in enumerate(items)
            if i in keep or _schema_of(item) not in _REPEATED]


# written again and again by every member: only the newest of each per member counts
_REPEATED = frozenset({"mig.log.Heartbeat", "mig.log.MemberStatus"})

