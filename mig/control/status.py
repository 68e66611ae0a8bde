"""``mig status``: who is primary, at which epoch, and how every member of an app is doing.

Everything comes from the app's one-partition ``mig.NAME.control`` topic, read up to its
end offset from the first record of the last ``since_s`` seconds (10 minutes; 0: from its
beginning). Every member writes a heartbeat or status each heartbeat_ms, so the topic grows
by about 10 records a second for a primary and one replica: a read from the beginning took
seconds after a day. Of those repeated records only each member's newest is decoded.
``summarize`` is the pure part: it folds the decoded records,
in topic order, into an ``AppStatus`` (latest record per member, current epoch and primary,
last promotion, last migration). ``read_control`` and ``collect`` do the reading;
``render_text`` and ``to_json`` the showing.

The control topic is read read_uncommitted: heartbeats travel in the primary's
transactions, and a live primary must not look silent until its next commit. A record of an
aborted transaction was still sent by a live member, which is what status reports.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog

from mig.errors import DecodeError, MigError
from mig.kafka.clients import (
    KafkaSettings,
    admin_client,
    reachable_consumer,
    wait_reachable,
    watermarks,
)
from mig.kafka.topics import topic_names
from mig.wire.auth import authentic
from mig.wire.codec import SCHEMA_HEADER, Codec

__all__ = ["MemberView", "AppStatus", "summarize", "list_apps", "read_control",
           "read_controls", "collect", "render_text", "to_json", "DEFAULT_STALE_MS",
           "DEFAULT_SINCE_S", "refuse_if_nobody_runs"]

log = structlog.get_logger("mig.status")

DEFAULT_SINCE_S = 600.0  # mig status reads the last 10 minutes of the control topic
DEFAULT_STALE_MS = 2000  # 10 x the default heartbeat_ms (200), when the interval is unknown
STALE_HEARTBEATS = 10
# healths that explain a member's silence: shown as they are, however old
TERMINAL = frozenset({"stopped", "diverged", "promotion-failed"})
_CONTROL_RE = re.compile(r"^mig\.([^.]+)\.control$")

Record = tuple[str, dict[str, Any]]


@dataclass
class MemberView:
    """One member as its latest record shows it. ``state`` is what an operator reads:
    the member's own health, or ``stale``/``fenced`` as judged here."""

    member: str
    host: str | None
    role: str
    epoch: int
    lag_records: int | None
    lag_ms: int | None
    ts_ms: int
    age_ms: int
    health: str
    state: str
    calls_offset: int | None
    source: str  # short schema name of the record the row comes from
    checkpoint: str | None = None  # the newest kept checkpoint this member took: "ID, age"


@dataclass
class AppStatus:
    app: str
    epoch: int | None
    primary: str | None
    members: list[MemberView]
    last_promotion: dict[str, Any] | None
    last_migration: dict[str, Any] | None
    pending_claim: dict[str, Any] | None
    stale_after_ms: int
    now_ms: int
    records: int = 0
    since_ms: int | None = None  # the records before this were not read (None: all were)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)  # kept, oldest first


# ---------------------------------------------------------------- aggregation

def _age(now_ms: int, ts_ms: int) -> int:
    return max(0, now_ms - ts_ms)  # clocks of other hosts may be ahead of ours


def _member_event(name: str, rec: dict[str, Any]) -> dict[str, Any] | None:
    """What one record says about the member that wrote it, or None."""
    if name == "mig.log.Heartbeat":
        return {"member": rec["member"], "host": rec.get("host"), "role": rec["role"],
                "epoch": rec["epoch"], "ts_ms": rec["ts_ms"], "health": "ok",
                "calls_offset": rec.get("calls_offset"), "lag": None, "source": "Heartbeat"}
    if name == "mig.log.MemberStatus":
        return {"member": rec["member"], "host": rec.get("host"), "role": rec["role"],
                "epoch": rec["epoch"], "ts_ms": rec["ts_ms"], "health": rec["health"],
                "calls_offset": rec.get("calls_offset"),
                "lag": (rec["lag_records"], rec["lag_ms"]), "source": "MemberStatus"}
    if name == "mig.log.Promotion":
        return {"member": rec["member"], "host": None, "role": "PRIMARY",
                "epoch": rec["new_epoch"], "ts_ms": rec["ts_ms"], "health": "promoted",
                "calls_offset": None, "lag": (0, 0), "source": "Promotion"}
    if name == "mig.log.Claim":
        return {"member": rec["member"], "host": None, "role": "CANDIDATE",
                "epoch": rec["epoch"] - 1, "ts_ms": rec["ts_ms"], "health": "claiming",
                "calls_offset": None, "lag": (rec["lag_records"], None), "source": "Claim"}
    return None


def summarize(records: Iterable[Record], now_ms: int, heartbeat_ms: int | None = None,
              app: str | None = None) -> AppStatus:
    """Fold an app's control records, in topic order, into its status at ``now_ms``.

    A member is stale when its latest record is older than 10 x ``heartbeat_ms`` (2 s when
    None), unless that record says it stopped or diverged. A member whose latest record
    says PRIMARY at an epoch below the current one is shown FENCED, or EX-PRIMARY
    ("handed over to B") when it handed the app to B and B's promotion followed. The
    current epoch is the highest a Promotion started or a primary announced; the primary
    is the member that holds it.
    """
    stale_after = STALE_HEARTBEATS * heartbeat_ms if heartbeat_ms else DEFAULT_STALE_MS
    latest: dict[str, dict[str, Any]] = {}
    hosts: dict[str, str] = {}
    last_lag: dict[str, tuple[int, tuple[int, int | None]]] = {}  # member -> (epoch, lag)
    promotion: dict[str, Any] | None = None
    primary_at: dict[int, str] = {}  # epoch -> member that was primary at it
    claims: dict[int, dict[str, Any]] = {}  # epoch -> first claim for it (topic order wins)
    migration: dict[str, Any] | None = None
    handoffs: dict[tuple[str, int], str] = {}  # (from member, epoch) -> successor named
    handed: dict[tuple[str, int], str] = {}  # the same, once the successor promoted
    count = 0
    for name, rec in records:
        count += 1
        app = app or rec.get("app")
        event = _member_event(name, rec)
        if event is not None:
            member = event["member"]
            latest[member] = event
            if event["host"]:
                hosts[member] = event["host"]
            if event["lag"] is not None:
                last_lag[member] = (event["epoch"], event["lag"])
            if event["role"] == "PRIMARY":
                primary_at[event["epoch"]] = member
        if name == "mig.log.Promotion":
            promotion = rec
            for (was, at), to in handoffs.items():
                if (to == rec["member"] and at == rec["previous_epoch"]
                        and rec.get("reason") == "handoff"):
                    handed[(was, at)] = to
        elif name == "mig.log.Claim":
            claims.setdefault(rec["epoch"], rec)
        elif name == "mig.log.Migrate":
            migration = {"kind": "migrate", "event_id": rec["event_id"],
                         "to_member": rec.get("to_member"), "reason": rec["reason"],
                         "requested_by": rec["requested_by"], "ts_ms": rec["ts_ms"],
                         "pending": True}
        elif name == "mig.log.Handoff":
            handoffs[(rec["from_member"], rec["epoch"])] = rec["to_member"]
            migration = {"kind": "handoff", "event_id": rec["event_id"],
                         "from_member": rec["from_member"], "to_member": rec["to_member"],
                         "epoch": rec["epoch"], "frozen_ts_ms": rec["frozen_ts_ms"],
                         "ts_ms": rec["ts_ms"], "pending": False}

    epoch = max(primary_at) if primary_at else None
    primary = primary_at.get(epoch) if epoch is not None else None
    members = [_view(ev, hosts, last_lag, epoch, now_ms, stale_after, handed)
               for ev in latest.values()]
    members.sort(key=lambda m: (m.member != primary, m.member))
    claim = None
    if epoch is not None and claims:
        newest = max(claims)
        if newest > epoch:
            c = claims[newest]
            claim = {"member": c["member"], "epoch": c["epoch"], "reason": c["reason"],
                     "lag_records": c["lag_records"], "ts_ms": c["ts_ms"],
                     "age_ms": _age(now_ms, c["ts_ms"])}
    if migration is not None:
        migration["age_ms"] = _age(now_ms, migration["ts_ms"])
    return AppStatus(app=app or "", epoch=epoch, primary=primary, members=members,
                     last_promotion=_promotion(promotion, now_ms),
                     last_migration=migration, pending_claim=claim,
                     stale_after_ms=stale_after, now_ms=now_ms, records=count)


def _view(ev: dict[str, Any], hosts: dict[str, str],
          last_lag: dict[str, tuple[int, tuple[int, int | None]]], epoch: int | None,
          now_ms: int, stale_after: int,
          handed: dict[tuple[str, int], str] | None = None) -> MemberView:
    member = ev["member"]
    role = ev["role"]
    age = _age(now_ms, ev["ts_ms"])
    fenced = role in ("PRIMARY", "FENCED") and epoch is not None and ev["epoch"] < epoch
    successor = (handed or {}).get((member, ev["epoch"])) if fenced else None
    if successor is not None:
        role = "EX-PRIMARY"  # it handed the app over, its successor promoted: done, not lost
    elif fenced:
        role = "FENCED"
    lag_records: int | None = None
    lag_ms: int | None = None
    if role == "PRIMARY":
        lag_records, lag_ms = 0, 0  # the primary is the log: nothing to catch up
    elif member in last_lag and last_lag[member][0] == ev["epoch"]:
        lag_records, lag_ms = last_lag[member][1]
    health = ev["health"]
    if successor is not None:
        state = f"handed over to {successor}"
    elif health in TERMINAL:
        state = health
    elif age > stale_after:
        state = "stale"
    elif fenced:
        state = "fenced"
    else:
        state = health
    offset = ev["calls_offset"]
    return MemberView(member=member, host=hosts.get(member), role=role, epoch=ev["epoch"],
                      lag_records=lag_records, lag_ms=lag_ms, ts_ms=ev["ts_ms"], age_ms=age,
                      health=health, state=state,
                      calls_offset=offset if offset is not None and offset >= 0 else None,
                      source=ev["source"])


def _promotion(rec: dict[str, Any] | None, now_ms: int) -> dict[str, Any] | None:
    if rec is None:
        return None
    return {"member": rec["member"], "reason": rec.get("reason", "failover"),
            "new_epoch": rec["new_epoch"], "previous_epoch": rec["previous_epoch"],
            "detection_ms": rec.get("detection_ms"), "promotion_ms": rec.get("promotion_ms"),
            "ts_ms": rec["ts_ms"], "age_ms": _age(now_ms, rec["ts_ms"])}


# ---------------------------------------------------------------- reading

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
    return {app: read.records for app, read in _read(settings, apps, timeout).items()}


@dataclass
class _Read:
    records: list[Record] = field(default_factory=list)
    count: int = 0  # records read (more than ``records`` when superseded ones were skipped)
    whole: bool = True  # read from the topic's first record


# written again and again by every member: only the newest of each per member counts
_REPEATED = frozenset({"mig.log.Heartbeat", "mig.log.MemberStatus"})


def _read(settings: KafkaSettings, apps: Sequence[str], timeout: float,
          since_ms: int | None = None, latest_only: bool = False) -> dict[str, _Read]:
    """``read_controls``, from the first record written at ``since_ms`` or later (None: the
    topic's start). ``latest_only``: of the heartbeats and statuses of a member (most of
    the topic: every member writes one each heartbeat_ms), only its newest of each kind
    is decoded and returned; ``summarize`` gives the same answer from what is left."""
    from confluent_kafka import KafkaError, TopicPartition

    names = {topic_names(app)["control"]: app for app in apps}
    # one client, whose first answer is also the wait for the broker; the end of a topic
    # comes in a fetch answer, which the broker holds fetch.wait.max.ms when there is none
    cons, meta = reachable_consumer(settings, timeout, **{
        "group.id": "mig-status", "isolation.level": "read_uncommitted",
        "fetch.wait.max.ms": 20})
    try:
        for topic, app in names.items():
            if topic not in meta.topics or meta.topics[topic].error is not None:
                raise MigError(f"no app '{app}': topic {topic} does not exist"
                               " (`mig status` without a name lists the apps)")
        out = {app: _Read() for app in apps}
        starts: dict[str, int] = {}
        ends: dict[str, int] = {}
        for topic, app in names.items():
            low, ends[topic] = watermarks(cons, topic, 0, timeout)
            starts[topic] = low
            if since_ms is not None:
                found = cons.offsets_for_times([TopicPartition(topic, 0, since_ms)],
                                               timeout=timeout)[0].offset
                starts[topic] = ends[topic] if found < 0 else max(low, found)
                out[app].whole = starts[topic] <= low
        raw: dict[str, list[Any]] = {topic: [] for topic in names}
        pending = {topic for topic in names if ends[topic] > starts[topic]}
        cons.assign([TopicPartition(t, 0, starts[t]) for t in sorted(pending)])
        idle_since = time.monotonic()
        while pending:
            msgs = cons.consume(1000, 0.02)  # (a batch is returned full, or at the timeout)
            if not msgs and time.monotonic() - idle_since > timeout:
                raise MigError(f"no record for {timeout:g} s while reading"
                               f" {', '.join(sorted(pending))}")
            if msgs:
                idle_since = time.monotonic()
            for msg in msgs:
                topic = msg.topic()
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(topic)
                        continue
                    raise MigError(f"reading {topic}: {err.str()}")
                if topic not in pending or msg.offset() >= ends[topic]:
                    continue  # written after the read began
                if msg.offset() >= ends[topic] - 1:
                    pending.discard(topic)
                # with signed records, a forged one (a Promotion of "evil") is not a fact
                if authentic(settings.auth, "control", msg, "mig.status"):
                    raw[topic].append(msg)
        for topic, msgs in raw.items():
            read = out[names[topic]]
            read.count = len(msgs)
            read.records = _decode(topic, _newest(msgs) if latest_only else msgs)
        return out
    finally:
        cons.close()


def _schema_of(msg: Any) -> str | None:
    for key, value in msg.headers() or ():
        if key == SCHEMA_HEADER:
            return value.decode(errors="replace") if isinstance(value, bytes) else None
    return None


def _newest(msgs: list[Any]) -> list[Any]:
    """``msgs`` without the heartbeats and statuses a newer one of the same member (the
    key) and kind supersedes, in topic order."""
    last: dict[tuple[str, bytes | None], int] = {}
    for i, msg in enumerate(msgs):
        name = _schema_of(msg)
        if name in _REPEATED:
            last[(name, msg.key())] = i
    keep = set(last.values())
    return [msg for i, msg in enumerate(msgs) if i in keep or _schema_of(msg) not in _REPEATED]


def _decode(topic: str, msgs: list[Any]) -> list[Record]:
    codec = Codec.default()
    out: list[Record] = []
    for msg in msgs:
        try:
            out.append(codec.decode_message(msg.value(), msg.headers()))
        except DecodeError as exc:
            log.warning("mig.status.undecodable", topic=topic, offset=msg.offset(),
                        reason=exc.reason)
    return out


def collect(settings: KafkaSettings, app: str | None = None, heartbeat_ms: int | None = None,
            timeout: float = 10.0, since_s: float | None = DEFAULT_SINCE_S) -> list[AppStatus]:
    """The status of ``app``, or of every app on the cluster when None, from the control
    records of the last ``since_s`` seconds (None or 0: all of them). A topic where that
    shows no member at all is read whole."""
    from concurrent.futures import ThreadPoolExecutor

    apps = [app] if app else list_apps(settings, timeout)
    since_ms = int(time.time() * 1000 - since_s * 1000) if since_s else None
    # the kept checkpoints are read (their own consumer: committed records only) while the
    # control topics are: a status is two short reads at once, not one after the other
    with ThreadPoolExecutor(max_workers=2) as pool:
        manifests = {a: pool.submit(_manifests, settings, a) for a in apps}
        reads = _read(settings, apps, timeout, since_ms, latest_only=True) if apps else {}
        now_ms = int(time.time() * 1000)
        out = []
        for a in apps:
            st = summarize(reads[a].records, now_ms, heartbeat_ms, app=a)
            if not st.members and not reads[a].whole:  # silent for long: look further back
                reads[a] = _read(settings, [a], timeout, None, latest_only=True)[a]
                st = summarize(reads[a].records, now_ms, heartbeat_ms, app=a)
            st.records = reads[a].count
            st.since_ms = None if reads[a].whole else since_ms
            out.append(st)
        for st in out:
            add_checkpoints(st, manifests[st.app].result())
    return out


def refuse_if_nobody_runs(settings: KafkaSettings, app: str, primary: bool,
                          timeout: float = 10.0) -> None:
    """Raise MigError at once when what the members last published says a request to
    ``app`` could only time out: with ``primary``, the primary's last status says its app
    stopped; without, every member's says it stopped, diverged or failed its promotion.
    (Silence is not judged here: ages compare other hosts' clocks with ours.)"""
    now_ms = int(time.time() * 1000)
    read = _read(settings, [app], timeout, now_ms - int(DEFAULT_SINCE_S * 1000),
                 latest_only=True)[app]
    st = summarize(read.records, now_ms, app=app)
    if primary:
        p = next((m for m in st.members if m.member == st.primary), None)
        if p is not None and p.health == "stopped":
            raise MigError(f"the primary of {app}, {p.member}, stopped its app"
                           f" {_ago(p.age_ms)} ago: there is nothing to move (see mig"
                           f" status {app})")
    elif st.members and all(m.health in TERMINAL for m in st.members):
        said = ", ".join(f"{m.member} {m.health} {_ago(m.age_ms)} ago" for m in st.members)
        raise MigError(f"no member of {app} can take a checkpoint: {said} (see mig status"
                       f" {app})")


def _manifests(settings: KafkaSettings, app: str) -> list[dict[str, Any]]:
    from mig.checkpoint.store import list_manifests

    try:
        return list_manifests(settings, app)
    except MigError as exc:
        log.warning("mig.status.checkpoints_unread", app=app, error=str(exc))
        return []


def add_checkpoints(st: AppStatus, manifests: list[dict[str, Any]]) -> None:
    """The kept checkpoints (id, calls offsets, size, age, who took it), and per member the
    newest one it took."""
    st.checkpoints = [{
        "checkpoint_id": m["checkpoint_id"], "member": m["member"], "epoch": m["epoch"],
        "offsets": {str(po["partition"]): po["offset"] for po in m["barrier_offsets"]},
        "size": m["total_size"], "chunks": m["chunk_count"], "held_ms": m["dump_ms"],
        "age_ms": _age(st.now_ms, m["created_ms"])} for m in manifests]
    for view in st.members:
        mine = [c for c in st.checkpoints if c["member"] == view.member]
        if mine:
            view.checkpoint = f"{mine[-1]['checkpoint_id']}, {_ago(mine[-1]['age_ms'])} ago"


# ---------------------------------------------------------------- showing

def to_json(statuses: Sequence[AppStatus]) -> str:
    """One JSON document: ``{"apps": [...]}``."""
    return json.dumps({"apps": [asdict(st) for st in statuses]}, separators=(",", ":"))


def _ago(ms: int) -> str:
    if ms < 1000:
        return f"{ms}ms"
    s = ms / 1000
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    if s < 86400:
        return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
    return f"{int(s // 86400)}d{int(s % 86400 // 3600):02d}h"


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


def _header(st: AppStatus) -> list[str]:
    line = (f"app {st.app}  epoch {_dash(st.epoch)}  primary {_dash(st.primary)}")
    p = st.last_promotion
    if p is None:
        line += "  last promotion: none"
    else:
        timing = ", ".join(f"{k} {p[k + '_ms']} ms" for k in ("detection", "promotion")
                           if p[k + "_ms"] is not None)
        line += (f"  last promotion: {p['member']} epoch {p['previous_epoch']}->"
                 f"{p['new_epoch']} ({p['reason']}{', ' + timing if timing else ''})"
                 f" {_ago(p['age_ms'])} ago")
    lines = [line]
    m = st.last_migration
    if m is not None and m["kind"] == "handoff":
        lines.append(f"  last handoff: {m['from_member']} -> {m['to_member']} at epoch"
                     f" {m['epoch']}, {_ago(m['age_ms'])} ago")
    elif m is not None:
        lines.append(f"  migration requested: to {m['to_member'] or 'any replica'}"
                     f" by {m['requested_by']} ({m['reason']}), {_ago(m['age_ms'])} ago,"
                     " no handoff yet")
    if st.checkpoints:
        k = st.checkpoints[-1]
        offsets = ",".join(f"{p}:{o}" for p, o in sorted(k["offsets"].items()))
        lines.append(f"  last checkpoint: {k['checkpoint_id']} by {k['member']}, calls offsets"
                     f" {offsets}, {k['size']} bytes, {_ago(k['age_ms'])} ago"
                     f" ({len(st.checkpoints)} kept)")
    if st.since_ms is not None:
        lines.append(f"  read the control records of the last"
                     f" {_ago(max(0, st.now_ms - st.since_ms))} ({st.records}): a member"
                     " silent for longer is not shown (--since 0 reads them all)")
    c = st.pending_claim
    if c is not None:
        lines.append(f"  claim in progress: {c['member']} for epoch {c['epoch']}"
                     f" ({c['reason']}), {_ago(c['age_ms'])} ago")
    return lines


COLUMNS = ("MEMBER", "HOST", "ROLE", "EPOCH", "LAG", "LAG_MS", "SEEN", "CHECKPOINT", "STATE")


def _row(m: MemberView) -> tuple[str, ...]:
    return (m.member, _dash(m.host), m.role, str(m.epoch), _dash(m.lag_records),
            _dash(m.lag_ms), f"{_ago(m.age_ms)} ago", _dash(m.checkpoint), m.state)


def render_text(statuses: Sequence[AppStatus]) -> str:
    """A header per app and an aligned table of its members."""
    if not statuses:
        return "no apps (no mig.*.control topics)"
    blocks = []
    for st in statuses:
        lines = _header(st)
        if not st.members:
            lines.append("  no members have reported (no heartbeat or status records)")
        else:
            rows = [COLUMNS, *(_row(m) for m in st.members)]
            widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
            lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))
                      .rstrip() for r in rows]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
