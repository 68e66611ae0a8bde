"""``mig status``: who is primary, at which epoch, and how every member of an app is doing.

``summarize`` is the pure part: it folds the decoded control records, in topic order,
into an ``AppStatus`` (latest record per member, current epoch and primary, last
promotion, last migration). ``collect`` reads them (mig/control/read.py) with the app's
kept checkpoints; mig/cli/status.py shows the result (``render_text``, ``to_json``).
``refuse_if_nobody_runs`` tells a request that could only time out before it is made.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog

from mig.control.read import Record, list_apps, read_apps
from mig.errors import MigError
from mig.kafka.clients import (
    KafkaSettings,
)

__all__ = ["MemberView", "AppStatus", "summarize", "collect", "DEFAULT_STALE_MS",
           "DEFAULT_SINCE_S", "refuse_if_nobody_runs", "ago"]

log = structlog.get_logger("mig.status")

DEFAULT_SINCE_S = 600.0  # mig status reads the last 10 minutes of the control topic
DEFAULT_STALE_MS = 2000  # 10 x the default heartbeat_ms (200), when the interval is unknown
STALE_HEARTBEATS = 10
# healths that explain a member's silence: shown as they are, however old
TERMINAL = frozenset({"stopped", "diverged", "promotion-failed"})


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
        reads = read_apps(settings, apps, timeout, since_ms, latest_only=True) if apps else {}
        now_ms = int(time.time() * 1000)
        out = []
        for a in apps:
            st = summarize(reads[a].records, now_ms, heartbeat_ms, app=a)
            if not st.members and not reads[a].whole:  # silent for long: look further back
                reads[a] = read_apps(settings, [a], timeout, None, latest_only=True)[a]
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
    read = read_apps(settings, [app], timeout, now_ms - int(DEFAULT_SINCE_S * 1000),
                 latest_only=True)[app]
    st = summarize(read.records, now_ms, app=app)
    if primary:
        p = next((m for m in st.members if m.member == st.primary), None)
        if p is not None and p.health == "stopped":
            raise MigError(f"the primary of {app}, {p.member}, stopped its app"
                           f" {ago(p.age_ms)} ago: there is nothing to move (see mig"
                           f" status {app})")
    elif st.members and all(m.health in TERMINAL for m in st.members):
        said = ", ".join(f"{m.member} {m.health} {ago(m.age_ms)} ago" for m in st.members)
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
            view.checkpoint = f"{mine[-1]['checkpoint_id']}, {ago(mine[-1]['age_ms'])} ago"




def ago(ms: int) -> str:
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

