"""The campaign's rounds and its checks.

A round: one fault (tests/campaign/faults.py) under the steady write load, then ``heal``
(wait for a primary that answers, let a primary that lost its role stop by itself, restart
every dead or diverged member as a new replica on its host, wait until all are hot), then
``check``:

(a) lost: every write acknowledged before the check is in the primary's state, with its
    value (a DUMP of the primary, compared with the client's ack logs);
(b) double-acknowledged: no write was acknowledged by a host while another host held the
    primary role (the acking host compared with the primary of the control topic's
    promotions at the moment of the ack);
(c) unequal: every replica that reports itself hot replays that same DUMP, at the same
    point of the log, to a file equal to the primary's.

A round that cannot heal within its deadlines is counted as failed, its app is torn down and
the next round gets a fresh one.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.apps.client import dump, read_dump
from tests.campaign.faults import FAULTS
from tests.campaign.world import App, Member, World, answers, wait_for


@dataclass
class Row:
    fault: str
    round: int
    ok: bool = False
    failovers: int = 0
    acked: int = 0
    lost: int = 0
    double: int = 0
    unequal: int = 0
    divergences: int = 0
    gap_s: float = 0.0
    seconds: float = 0.0
    facts: dict = field(default_factory=dict)
    exits: list[str] = field(default_factory=list)  # members that stopped by themselves
    problems: list[str] = field(default_factory=list)


EXPECTED_DIVERGENCE = {"disk-full-replica"}


def _host_of(member: str) -> int:
    return int(member[1:].split("g", 1)[0])


class Ledger:
    """What the checks of one app have already counted."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.lost: set[str] = set()
        self.seen_acks: dict[Path, int] = {}
        self.diverged: set[str] = set()
        self.checks = 0

    def acks(self) -> dict[Path, list[dict]]:
        out = {}
        for log in self.app.ack_logs():
            text = log.read_text(encoding="utf-8") if log.exists() else ""
            # a line being written is not an ack yet
            out[log] = [json.loads(line) for line in text.split("\n")[:-1] if line]
        return out


def heal(app: App, old_primary: Member, row: Row, ledger: Ledger) -> None:
    """Bring the app back to a serving primary and hot replicas. A failover may happen
    while this runs (one of the round's, seen late): the pass over the members is then
    made again for the new primary, up to three times."""
    for _ in range(3):
        primary = _heal_once(app, old_primary, row, ledger)
        if app.primary() is primary:
            return
        old_primary = primary
    raise AssertionError("the primary kept changing while the app was healed")


def _heal_once(app: App, old_primary: Member, row: Row, ledger: Ledger) -> Member:
    ips = app.world.net.host_ips

    def serving() -> Member | None:
        p = app.primary()
        return p if p.alive() and answers(ips[p.host], app.port) else None

    primary = wait_for(serving, 90, "a primary that answers")
    # every member that was primary at some epoch (the round's may have seen several
    # failovers) and is not now was fenced or handed over: it stops by itself
    was_primary = {p["member"] for p in app.promotions()} | {old_primary.name}
    for host, m in sorted(app.members.items()):
        if m is primary:
            continue
        if m.name in was_primary and m.alive():
            try:
                m.proc.wait(45)
            except subprocess.TimeoutExpired:
                row.problems.append(f"{m.name} still runs 45 s after losing the primary role")
        health = app.statuses().get(m.name, {}).get("health")
        if health == "diverged" and m.name not in ledger.diverged:
            ledger.diverged.add(m.name)
            row.divergences += 1
            # a replica whose disk is full cannot write what the primary wrote: stopping
            # with the report is the right end (it is restarted fresh); anywhere else a
            # divergence is a problem
            if row.fault not in EXPECTED_DIVERGENCE:
                row.problems.append(f"{m.name} reported a divergence")
        if not m.alive():
            _note_exit(m, m.name in was_primary, row)
        if not m.alive() or health == "diverged":
            app.kill_host(host)
            try:
                m.proc.wait(15)
            except subprocess.TimeoutExpired:
                m.proc.kill()
            app.start_replica(host)

    def settled() -> bool:  # hot replicas, or a new primary to heal for
        return app.primary() is not primary or app.all_hot()

    wait_for(settled, 180, "the replicas to be hot", step=0.5)
    return primary


def _note_exit(m: Member, was_primary: bool, row: Row) -> None:
    """A member that ended: killed by a fault (SIGKILL), a primary that was fenced (4) or
    handed over (0), or else an exit worth a line; a Python traceback is a problem."""
    code = m.proc.returncode
    if code in (-9, 137) or (was_primary and code in (0, 4)):
        return
    text = m.log.read_text(errors="replace")
    last = [line for line in text.splitlines() if line.strip()][-1:] or [""]
    row.exits.append(f"{m.name} exit {code}: {last[0][:200]}")
    if "Traceback (most recent call last)" in text:
        row.problems.append(f"{m.name} crashed (a traceback in {m.log.name})")


def check(app: App, row: Row, ledger: Ledger) -> None:
    ledger.checks += 1
    snapshot = ledger.acks()
    primary = app.primary()
    ip = app.world.net.host_ips[primary.host]
    name = f"check-{ledger.checks:04d}.txt"
    dump(ip, app.port, name, timeout=30)
    mine = primary.workdir / name
    state = read_dump(mine)
    # (a) lost
    for acks in snapshot.values():
        for a in acks:
            entry = state.entries.get(a["key"])
            if (entry is None or entry[0] != a["value"]) and a["key"] not in ledger.lost:
                ledger.lost.add(a["key"])
                row.lost += 1
                row.problems.append(f"lost {a['key']}={a['value']} acked by {a['addr']}")
    # (b) double-acknowledged: the acking host against the primary of the moment
    promos = {p["new_epoch"]: p for p in app.promotions()}  # copies of one epoch's: once
    promos = [promos[e] for e in sorted(promos)]
    timeline = [(0.0, 0)] + [(p["ts_ms"] / 1000, _host_of(p["member"])) for p in promos]
    ip_host = {h_ip: h for h, h_ip in enumerate(app.world.net.host_ips)}
    for log, acks in snapshot.items():
        start = ledger.seen_acks.get(log, 0)
        for a in acks[start:]:
            owner = [h for t, h in timeline if t <= a["t_ack"]][-1]
            host = ip_host[a["addr"].rsplit(":", 1)[0]]
            if host != owner:
                row.double += 1
                row.problems.append(f"{a['key']} acked by host {host} while host {owner}"
                                    f" was primary (t={a['t_ack']:.3f})")
        ledger.seen_acks[log] = len(acks)
    # (c) every hot replica replays the same DUMP to the same file
    expected = mine.read_bytes()
    statuses = app.statuses()
    for m in app.replicas():
        if not m.alive() or statuses.get(m.name, {}).get("health") != "replaying":
            continue
        theirs = m.workdir / name
        try:
            wait_for(lambda p=theirs: p.exists() and p.read_bytes() == expected, 30,
                     f"{m.name}'s copy of {name}", step=0.1)
        except AssertionError:
            row.unequal += 1
            row.problems.append(f"{m.name}: {name} differs from the primary's (or is missing)")
    # the previous check's files go: they would fill a small state folder (disk-full fault)
    previous = f"check-{ledger.checks - 1:04d}.txt"
    for m in app.members.values():
        (m.workdir / previous).unlink(missing_ok=True)


def _gap(acks: list[dict], start: float, end: float) -> float:
    times = [a["t_ack"] for a in acks]
    before = [t for t in times if t < start][-1:]
    inside = [t for t in times if start <= t <= end]
    points = before + inside
    worst = max((b - a for a, b in zip(points, points[1:], strict=False)), default=0.0)
    if points and not inside:  # nothing acknowledged during the round
        worst = end - points[-1]
    return round(worst, 3)


class Campaign:
    def __init__(self, root: Path, seed: int, deadline: float, out=sys.stderr) -> None:
        self.root, self.seed, self.deadline, self.out = root, seed, deadline, out
        self.rng = random.Random(seed)
        self.rows: list[Row] = []
        self.apps = 0

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _new_app(self, world: World) -> tuple[App, Ledger]:
        self.apps += 1
        app = App(world, self.root / f"app{self.apps}", str(self.apps))
        app.start()
        app.start_writer("w", interval_s=0.005,
                         deadline_s=max(60.0, self.deadline - time.monotonic()))
        wait_for(lambda: sum(1 for _ in open(app.ack_logs()[0])) >= 50
                 if app.ack_logs()[0].exists() else False, 60, "the first writes")
        return app, Ledger(app)

    def run(self, plan: list[str], world: World) -> list[Row]:
        app: App | None = None
        ledger: Ledger | None = None
        try:
            for i, fault in enumerate(plan, 1):
                if time.monotonic() >= self.deadline:
                    self.say(f"campaign: time is up after {i - 1} of {len(plan)} rounds")
                    break
                if app is None:
                    app, ledger = self._new_app(world)
                assert ledger is not None
                row = Row(fault, i)
                t0, m0 = time.time(), time.monotonic()
                promos = len({p["new_epoch"] for p in app.promotions()})
                try:
                    old = app.primary()
                    row.facts = FAULTS[fault](app, self.rng)
                    row.problems += row.facts.pop("problems", [])  # what the fault saw
                    heal(app, old, row, ledger)
                    try:
                        check(app, row, ledger)
                    except OSError:  # a failover after the heal: the primary asked is gone
                        heal(app, app.primary(), row, ledger)
                        check(app, row, ledger)
                    row.ok = not row.problems
                except Exception as exc:  # noqa: BLE001 - a round that cannot recover
                    row.problems.append(f"round failed: {exc}")
                    self.say(traceback.format_exc(limit=3))
                row.seconds = round(time.monotonic() - m0, 1)
                row.failovers = len({p["new_epoch"] for p in app.promotions()}) - promos
                main_acks = ledger.acks().get(app.ack_logs()[0], [])
                row.gap_s = _gap(main_acks, t0, time.time())
                row.acked = sum(1 for acks in ledger.acks().values() for a in acks
                                if t0 <= a["t_ack"] <= time.time())
                self.rows.append(row)
                self.say(f"round {i}/{len(plan)} {fault}: {'ok' if row.ok else 'PROBLEM'}"
                         f" failovers={row.failovers} acked={row.acked} lost={row.lost}"
                         f" double={row.double} unequal={row.unequal} gap={row.gap_s}s"
                         f" ({row.seconds}s) {json.dumps(row.facts)}"
                         + "".join(f"\n  {p}" for p in row.exits + row.problems[:5]))
                if any(p.startswith("round failed") for p in row.problems):
                    app.stop()
                    app = ledger = None
        finally:
            if app is not None:
                app.stop()
        return self.rows


def summary(rows: list[Row]) -> list[dict]:
    by: dict[str, dict] = {}
    for r in rows:
        s = by.setdefault(r.fault, {"fault": r.fault, "rounds": 0, "failed": 0, "failovers": 0,
                                    "acked": 0, "lost": 0, "double": 0, "unequal": 0,
                                    "divergences": 0, "exits": 0, "worst_gap_s": 0.0})
        s["rounds"] += 1
        s["failed"] += 0 if r.ok else 1
        for k in ("failovers", "acked", "lost", "double", "unequal", "divergences"):
            s[k] += getattr(r, k)
        s["exits"] += len(r.exits)
        s["worst_gap_s"] = max(s["worst_gap_s"], r.gap_s)
    return [by[f] for f in FAULTS if f in by]


def table(rows: list[Row]) -> str:
    cols = ["fault", "rounds", "failed", "failovers", "acked", "lost", "double", "unequal",
            "divergences", "exits", "worst_gap_s"]
    heads = ["fault", "rounds", "rounds with a problem", "failovers", "acked writes", "lost",
             "double-acked", "unequal replicas", "divergences", "members that stopped",
             "worst gap (s)"]
    lines = ["| " + " | ".join(heads) + " |", "|" + " --- |" * len(heads)]
    entries = summary(rows)
    total = {c: sum(e[c] for e in entries) for c in cols[1:-1]}
    total.update(fault="**total**", worst_gap_s=max((e["worst_gap_s"] for e in entries),
                                                   default=0.0))
    for e in [*entries, total]:
        lines.append("| " + " | ".join(str(e[c]) for c in cols) + " |")
    return "\n".join(lines)


def write_results(rows: list[Row], path: Path) -> None:
    path.write_text("".join(json.dumps(asdict(r)) + "\n" for r in rows))


def read_results(path: Path) -> list[Row]:
    """The rounds of an earlier run (``rounds.jsonl``), judged by today's rules: a
    divergence where it is the expected end of a fault is not a problem."""
    rows = []
    for line in path.read_text().splitlines():
        row = Row(**json.loads(line))
        if row.fault in EXPECTED_DIVERGENCE:
            row.problems = [p for p in row.problems if not p.endswith("reported a divergence")]
            row.ok = not row.problems
        rows.append(row)
    return rows
