"""Reading an application's topics back: ``mig log tail`` and ``mig log verify``.

Every Kafka message becomes a ``Row``: either a decoded record (schema full name + fields)
or an undecodable one (offset + reason). A bad record never stops the walk: it is reported
and the next one is read. ``verify`` additionally checks per logical process that call
sequence numbers have no gaps and epochs never go backwards.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mig.errors import MigError
from mig.kafka.clients import KafkaSettings, wait_reachable
from mig.kafka.reader import END, TOMBSTONE, UNDECODABLE, Item, Reader
from mig.kafka.topics import topic_names

__all__ = ["Row", "read_rows", "render_text", "render_json", "verify", "VerifyReport",
           "latest_manifest"]

EXPECTED = {
    "calls": {"mig.log.CallBatch", "mig.log.Barrier", "mig.log.AppIdentity"},
    "checkpoints": {"mig.log.CheckpointManifest", "mig.log.CheckpointChunk"},
    "control": {"mig.log.Heartbeat", "mig.log.MemberStatus", "mig.log.Migrate",
                "mig.log.CheckpointRequest", "mig.log.Promotion",
                "mig.log.Claim", "mig.log.Handoff", "mig.log.RequestFailed"},
    "input": {"mig.log.InputChunk"},
}


@dataclass
class Row:
    topic: str
    partition: int
    offset: int
    key: str | None
    timestamp_ms: int
    schema: str | None = None
    record: dict[str, Any] | None = None
    error: str | None = None

    @property
    def role(self) -> str:
        return self.topic.rsplit(".", 1)[-1]


def _row(item: Item) -> Row:
    msg = item.msg
    raw_key = msg.key()
    key = raw_key.decode("utf-8", "replace") if raw_key is not None else None
    row = Row(msg.topic(), msg.partition(), msg.offset(), key, msg.timestamp()[1])
    if item.kind == TOMBSTONE:
        row.schema = "tombstone"
        return row
    if item.kind == UNDECODABLE:
        row.error = item.reason
        return row
    row.schema, row.record = item.name, item.record
    if row.schema not in EXPECTED.get(row.role, {row.schema}):
        row.error = f"{row.schema} does not belong in the {row.role} topic"
    return row


def log_reader(settings: KafkaSettings, app: str, committed_only: bool = False,
               client: Any = None) -> Reader:
    """The reader of ``mig log``: every record as it is, no signature check, undecodable
    ones and tombstones shown as such; a consumer error ends the walk ("reading TOPIC:
    why"). ``client``: a consumer to read with instead of a new one."""
    return Reader(settings, app, "mig.log", errors="raise", undecodable="yield",
                  signed=False, tombstones=True, client=client,
                  conf={"group.id": f"mig-inspect-{app}",
                        "isolation.level": "read_committed" if committed_only
                        else "read_uncommitted"})


def latest_manifest(settings: KafkaSettings, app: str,
                    timeout: float = 10.0) -> dict[str, Any] | None:
    """The newest decodable checkpoint manifest of ``app``, or None."""
    newest = None
    for row in read_rows(settings, app, roles=["checkpoints"], timeout=timeout):
        if row.schema == "mig.log.CheckpointManifest" and row.record is not None:
            newest = row.record
    return newest


def read_rows(settings: KafkaSettings, app: str, roles: list[str] | None = None,
              start: str | int = "beginning", follow: bool = False,
              timeout: float = 10.0, stop: Callable[[], bool] | None = None,
              committed_only: bool = False) -> Iterator[Row]:
    """Yield the rows of ``app``'s topics (``roles`` of calls/checkpoints/control).

    Records are read as replicas read them (read_uncommitted): a record of a transaction
    that fencing aborted was acknowledged and replayed, so it is part of the app's history.
    ``committed_only`` shows what a read_committed consumer sees instead.

    ``start`` is "beginning", "checkpoint" (calls from the newest manifest's barrier
    offsets) or an offset applied to every partition. Without ``follow`` the walk ends when
    every partition is read to its end; ``timeout`` bounds the wait for metadata.
    """
    from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

    every = not roles  # then the input topic too, if the app has one ([app] stdin)
    roles = roles or ["calls", "checkpoints", "control", "input"]
    names = topic_names(app)
    starts: dict[tuple[str, int], int] = {}
    if start == "checkpoint":
        manifest = latest_manifest(settings, app, timeout)
        if manifest is None:
            raise MigError(f"no checkpoint manifest in {names['checkpoints']}:"
                           " use --from beginning")
        roles = ["calls"]
        starts = {(names["calls"], po["partition"]): po["offset"]
                  for po in manifest["barrier_offsets"]}
    wait_reachable(settings, timeout)
    reader = log_reader(settings, app, committed_only)
    cons = reader.consumer
    parts = []
    for role in roles:
        try:  # one topic at a time: Kafka says which it refuses to describe to this user
            meta = cons.list_topics(names[role], timeout=timeout)
        except KafkaException as exc:
            reader.close()
            raise MigError(f"cannot read topics at {settings.bootstrap_servers}: {exc}") from exc
        topic = meta.topics.get(names[role])
        if topic is not None and topic.error is not None \
                and topic.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            reader.close()
            raise MigError(f"not authorized to read topic {names[role]} at"
                           f" {settings.bootstrap_servers} (Kafka ACLs: docs/security.md)")
        if (topic is None or topic.error is not None) and every and role == "input":
            continue
        if topic is None or topic.error is not None:
            reader.close()
            raise MigError(f"topic {names[role]} does not exist (is '{app}' the app's name?)")
        for pid in sorted(topic.partitions):
            if isinstance(start, int):
                off = start
            else:
                off = starts.get((names[role], pid), OFFSET_BEGINNING)
            parts.append(TopicPartition(names[role], pid, off))
    reader.assign(parts)
    pending = {(p.topic, p.partition) for p in parts}
    idle_since = time.monotonic()
    try:
        while pending or follow:
            if stop is not None and stop():
                return
            batch = reader.poll(1, 0.2)
            if not batch:
                if not follow and time.monotonic() - idle_since > timeout:
                    raise MigError(f"timed out after {timeout:g} s reading {sorted(pending)}")
                continue
            idle_since = time.monotonic()
            for item in batch:
                if item.kind == END:
                    pending.discard((item.topic, item.partition))
                else:
                    yield _row(item)
    finally:
        reader.close()


# ---------------------------------------------------------------- rendering

def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def render_json(row: Row) -> str:
    """One JSON object per row; bytes fields are base64 strings."""
    out: dict[str, Any] = {"topic": row.topic, "partition": row.partition,
                           "offset": row.offset, "key": row.key,
                           "timestamp_ms": row.timestamp_ms}
    if row.error is not None:
        out["error"] = row.error
    out["schema"] = row.schema
    if row.record is not None:
        out["record"] = _jsonable(row.record)
    return json.dumps(out, separators=(",", ":"))


def _short(value: Any, limit: int = 40) -> str:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, (list, dict)) and len(str(value)) > limit:
        return f"<{len(value)} items>"
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _call_text(call: dict[str, Any]) -> str:
    text = f"#{call['seq']} t{call['tid']} {call['kind']}({','.join(map(str, call['args']))})"
    text += f"={call['result']}"
    if call["err"]:
        text += f" errno={call['err']}"
    if call.get("payload") is not None:
        text += f" in={len(call['payload'])}B"
    if call.get("out_len") is not None:
        text += f" out={call['out_len']}B"
    return text


def _printable(text: str) -> str:
    """``text`` with control characters escaped: a record's strings and key come from
    whoever wrote to the topic, and must not start a line of their own."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)


def render_text(row: Row) -> str:
    """One readable line per row (control characters in keys and fields escaped)."""
    return _printable(_render_text(row))


def _render_text(row: Row) -> str:
    where = f"{row.role}[{row.partition}]@{row.offset}"
    if row.error is not None:
        return f"{where} UNDECODABLE key={row.key} reason: {row.error}"
    if row.record is None:
        return f"{where} {row.schema} key={row.key}"
    short = (row.schema or "").rsplit(".", 1)[-1]
    rec = row.record
    if short == "CallBatch":
        calls = rec["calls"]
        shown = "; ".join(_call_text(c) for c in calls[:4])
        more = f"; +{len(calls) - 4} more" if len(calls) > 4 else ""
        return (f"{where} CallBatch lpid={rec['lpid']} epoch={rec['epoch']}"
                f" batch={rec['batch_seq']} calls={len(calls)}: {shown}{more}")
    fields = " ".join(f"{k}={_short(v)}" for k, v in rec.items() if k != "app")
    return f"{where} {short} {fields}"


# ---------------------------------------------------------------- verify

@dataclass
class VerifyReport:
    records: int = 0
    by_schema: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(settings: KafkaSettings, app: str, timeout: float = 10.0) -> VerifyReport:
    """Walk every topic of ``app``; report undecodable records and sequence gaps."""
    report = VerifyReport()
    next_seq: dict[str, int] = {}
    next_batch: dict[str, int] = {}
    epoch: dict[str, int] = {}
    for row in read_rows(settings, app, timeout=timeout):
        report.records += 1
        report.by_schema[row.schema or "undecodable"] = (
            report.by_schema.get(row.schema or "undecodable", 0) + 1)
        where = f"{row.topic}[{row.partition}]@{row.offset}"
        if row.error is not None:
            report.problems.append(f"{where}: undecodable: {row.error}")
            continue
        if row.schema != "mig.log.CallBatch" or row.record is None:
            continue
        rec = row.record
        lpid = rec["lpid"]
        if rec["epoch"] < epoch.get(lpid, rec["epoch"]):
            report.problems.append(f"{where}: lpid {lpid} epoch went back from"
                                   f" {epoch[lpid]} to {rec['epoch']}")
        epoch[lpid] = max(epoch.get(lpid, rec["epoch"]), rec["epoch"])
        if lpid in next_batch and rec["batch_seq"] != next_batch[lpid]:
            report.problems.append(f"{where}: lpid {lpid} batch_seq {rec['batch_seq']},"
                                   f" expected {next_batch[lpid]}")
        next_batch[lpid] = rec["batch_seq"] + 1
        for call in rec["calls"]:
            want = next_seq.get(lpid)
            if want is not None and call["seq"] != want:
                kind = "gap" if call["seq"] > want else "repeat"
                report.problems.append(f"{where}: lpid {lpid} seq {kind}: expected {want},"
                                       f" got {call['seq']}")
            next_seq[lpid] = call["seq"] + 1
    return report
