"""Failover and planned migration, measured in one run against one embedded broker.

Two test hosts (network namespaces, tests/testnet.py) and a broker on the root side both
reach. One app -- tests/apps' kvserver, listening on every address of its host, with
``failover_timeout_ms = 1000`` and ``heartbeat_ms = 200`` -- runs through the real
``mig primary start`` / ``mig replica follow`` / ``mig migrate`` commands, and the rounds
are chained on it, the roles swapping at each round:

1. the primary on host A, a hot replica on host B; a client in the root namespace writes
   unique keys, one at a time, 2 ms apart (tests/apps/ackclient.py: it reconnects round
   robin across both hosts' addresses and logs every acknowledged write);
2. once part of the round's writes are acknowledged, the fault: a crash (SIGKILL of every
   process of host A) or a planned ``mig migrate NAME --to REPLICA``;
3. the replica's ``Promotion`` to the next epoch is awaited in the control topic; the
   client goes on until 200 more writes are acknowledged (by the new primary), then stops;
   a DUMP of the new primary's state must hold every write acknowledged since the run
   began (every round's, not only this one's), and the old primary must have acknowledged
   nothing after the promotion's time;
4. a new replica starts on host A with a fresh work folder and a fresh member id (a member
   that was primary re-bootstraps: it replays the whole log from its start) and the next
   round waits until it says ``replaying`` with nothing left to replay.

Crash and migration rounds alternate. Before the first round the client writes for a
while with nothing injected, to sample replica lag under a steady load.

Figures: the client-visible gap of every round (the longest interruption the client saw
around the fault: last ack before it to first ack after it), the ``detection_ms`` and
``promotion_ms`` of crash promotions (``mig.log.Promotion`` records), the "switchover gap"
``mig migrate`` prints, the replicas' ``lag_ms`` (``mig.log.MemberStatus`` records
published while the client wrote: the age of the oldest record received but not yet
replayed), how far behind the primary the replica replays (a DUMP sent to the primary
during the steady load, timed from its reply until the replica's replay of it writes the
same file) and the acknowledged writes lost. Percentiles are nearest-rank: with 20 samples
p99 is the largest. Nothing asserts on timing: the table at the end says which target
each figure met or missed. A round that goes wrong (no promotion, a replica that does not
get hot, an acknowledged write missing) ends the run with what the logs said.

Needs root (network namespaces). Run: .venv/bin/python bench/failover_bench.py
[--rounds N] [--quick] [--keep]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/ (the test hosts, the test apps' clients)

import benchlib  # noqa: E402 - a sibling of this script
from benchlib import count_lines, machine, percentile, print_table  # noqa: E402

from mig.broker.embedded import EmbeddedBroker  # noqa: E402
from mig.broker.node import free_ports  # noqa: E402
from mig.errors import DecodeError  # noqa: E402
from mig.kafka.clients import KafkaSettings, consumer  # noqa: E402
from mig.kafka.topics import topic_names  # noqa: E402
from mig.paths import run_root  # noqa: E402
from mig.wire.codec import Codec  # noqa: E402
from tests.apps.ackclient import WriteReport, check_acked, run_writes  # noqa: E402
from tests.apps.client import dump, read_dump, request  # noqa: E402
from tests.testnet import HostNet  # noqa: E402

APPS = ROOT / "tests" / "apps"
HEARTBEAT_MS = 200
FAILOVER_TIMEOUT_MS = 1000
FAULT_AFTER = 200  # acknowledged writes of a round before its fault
AFTER_PROMOTION = 200  # and after the promotion, before the round's client stops
MAX_WRITES = 100_000  # a round's client stops on its stop file well before this
INTERVAL_S = 0.002  # between the starts of successive writes
PROMOTION_WAIT_S = 30.0
HOT_WAIT_S = 180.0
TARGETS = {"crash_p50": 2.0, "crash_p99": 3.0, "migrate_p50": 0.3, "lag_p99": 100}


class RoundFailed(Exception):
    """A round could not be completed: what was expected and what was seen."""






# ------------------------------------------------------------------------ control topic


class ControlWatch:
    """Every record of ``mig.NAME.control`` as it arrives (read_uncommitted, as
    ``mig status`` reads it), read by one consumer in a background thread: reading the
    growing topic from its start at every look would get slower round after round."""

    def __init__(self, settings: KafkaSettings, app: str) -> None:
        self.topic = topic_names(app)["control"]
        self.records: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.error = ""
        self.cons = consumer(settings, **{"group.id": f"mig-bench-{uuid.uuid4().hex[:8]}",
                                          "isolation.level": "read_uncommitted",
                                          "fetch.wait.max.ms": 20})
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        self.cons.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        self.thread.start()

    def _run(self) -> None:
        codec = Codec.default()
        try:
            while not self.stopping.is_set():
                for msg in self.cons.consume(200, 0.1):
                    if msg.error() is not None:
                        continue  # end of partition and the like
                    try:
                        name, rec = codec.decode_message(msg.value(), msg.headers())
                    except DecodeError:
                        continue
                    with self.lock:
                        self.records.append((name, rec))
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.cons.close()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10)

    def of(self, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return [rec for n, rec in self.records if n == name]

    def promotion(self, epoch: int) -> dict[str, Any] | None:
        found = [p for p in self.of("mig.log.Promotion") if p["new_epoch"] == epoch]
        return found[0] if found else None

    def promotions(self, epoch: int) -> list[dict[str, Any]]:
        return [p for p in self.of("mig.log.Promotion") if p["new_epoch"] == epoch]

    def latest_status(self, member: str) -> dict[str, Any] | None:
        mine = [r for r in self.of("mig.log.MemberStatus") if r["member"] == member]
        return mine[-1] if mine else None

    def lags(self, member: str, start_ms: int, end_ms: int) -> list[tuple[int, int]]:
        """(lag_ms, lag_records) of ``member``'s replaying statuses published in
        [start_ms, end_ms]."""
        return [(r["lag_ms"], r["lag_records"]) for r in self.of("mig.log.MemberStatus")
                if r["member"] == member and r["health"] == "replaying"
                and start_ms <= r["ts_ms"] <= end_ms]


# ------------------------------------------------------------------------ the bench


@dataclass
class Member:
    host: int
    member: str
    workdir: Path
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class Round:
    index: int
    kind: str  # "crash" or "migrate"
    from_member: str = ""
    to_member: str = ""
    gap_s: float | None = None
    gaps: int = 0
    detection_ms: int | None = None
    promotion_ms: int | None = None
    switchover_ms: int | None = None
    acked: int = 0
    lost: int = 0
    late_acks: int = 0
    old_exit: int | None = None
    hot_s: float | None = None  # the new replica: start to replaying with nothing left
    attempts: int = 0  # failed attempts of the client within the gap
    # the gap split in three (ms): last ack -> fault (kill, or freeze for a migration),
    # fault -> Promotion record, Promotion -> first ack on the new primary
    split: tuple[int, int, int] | None = None
    lags: list[tuple[int, int]] = field(default_factory=list)


def wait_for(cond, timeout: float, what: str, step: float = 0.05) -> None:  # noqa: ANN001
    benchlib.wait_for(cond, timeout, what, step, error=RoundFailed)


def answers(host: str, port: int) -> bool:
    try:
        return request(host, port, "GET probe", timeout=1.0).startswith(("NONE", "VALUE"))
    except OSError:
        return False


class Bench:
    def __init__(self, tmp: Path, rounds: int, lag_writes: int) -> None:
        self.tmp = tmp
        self.rounds = rounds
        self.lag_writes = lag_writes
        self.net: HostNet | None = None
        self.broker: EmbeddedBroker | None = None
        self.watch: ControlWatch | None = None
        self.name = "fb" + uuid.uuid4().hex[:8]
        self.port = 0
        self.app_toml = tmp / "app" / "app.toml"
        self.rings = Path(tempfile.mkdtemp(prefix="mig-fbench-", dir=self._ring_parent()))
        self.members: list[Member] = []
        self.primary: Member | None = None
        self.replica: Member | None = None
        self.epoch = 1
        self.all_acks = tmp / "acks-all.jsonl"
        self.results: list[Round] = []
        self.base_lags: list[tuple[int, int]] = []
        self.probe_ms: list[float] = []
        self.failure = ""

    @staticmethod
    def _ring_parent() -> Path:
        parent = run_root()
        parent.mkdir(parents=True, exist_ok=True)
        return parent

    # -- set-up
    def setup(self) -> None:
        subprocess.run(["make", "-s", "-C", str(APPS)], check=True, timeout=300)
        self.net = HostNet(hosts=2)
        port, cport = free_ports(2)
        self.broker = EmbeddedBroker(home=self.tmp / "broker", port=port,
                                     controller_port=cport, host=self.net.root_ips[0])
        self.broker.up(timeout=120)
        (self.port,) = free_ports(1)
        self.app_toml.parent.mkdir(parents=True)
        self.app_toml.write_text(
            "[app]\n"
            f'name = "{self.name}"\n'
            f'command = ["{APPS / "build" / "kvserver"}", "{self.port}", "0.0.0.0"]\n'
            "[kafka]\n"
            f'bootstrap_servers = "{self.broker.settings.bootstrap_servers}"\n'
            f"[replica]\nheartbeat_ms = {HEARTBEAT_MS}\n"
            f"failover_timeout_ms = {FAILOVER_TIMEOUT_MS}\n")

    def _mig(self, host: int, member: str, args: list[str]) -> tuple[subprocess.Popen[bytes], Path]:
        assert self.net is not None
        log = self.tmp / "logs" / f"{member}.log"
        log.parent.mkdir(exist_ok=True)
        cmd = [sys.executable, "-m", "mig", "--log-format", "json", *args, "--member", member,
               "--run-dir", str(self.rings / member)]
        env = dict(os.environ, MIG_HOME=str(self.tmp / f"home{host}"))
        with open(log, "ab") as out:
            proc = subprocess.Popen(self.net.wrap(host, cmd), env=env, stdout=out,
                                    stderr=subprocess.STDOUT)
        return proc, log

    def start_primary(self) -> None:
        assert self.net is not None and self.broker is not None
        member = "h0-p0"
        proc, log = self._mig(0, member, ["primary", "start", str(self.app_toml)])
        self.primary = Member(0, member, self.app_toml.parent, proc, log)
        self.members.append(self.primary)
        wait_for(lambda: answers(self.net.host_ips[0], self.port) or proc.poll() is not None,
                 60, "the primary app to answer")
        if proc.poll() is not None:
            raise RoundFailed(f"the primary exited with {proc.returncode}")
        self.watch = ControlWatch(self.broker.settings, self.name)
        self.watch.start()

    def start_replica(self, host: int, member: str) -> float:
        """Start a replica on ``host``; wait until it is hot. Seconds it took."""
        assert self.watch is not None
        workdir = self.tmp / f"wd-{member}"
        workdir.mkdir()
        started = time.monotonic()
        proc, log = self._mig(host, member, ["replica", "follow", str(self.app_toml),
                                             "--workdir", str(workdir)])
        self.replica = Member(host, member, workdir, proc, log)
        self.members.append(self.replica)

        def hot() -> bool:
            if proc.poll() is not None:
                raise RoundFailed(f"replica {member} exited with {proc.returncode}")
            status = self.watch.latest_status(member)
            return (status is not None and status["health"] == "replaying"
                    and status["lag_records"] == 0 and status["epoch"] == self.epoch)

        wait_for(hot, HOT_WAIT_S, f"replica {member} to be hot (replaying, nothing left)",
                 step=0.1)
        return time.monotonic() - started

    # -- load
    def addresses(self) -> list[tuple[str, int]]:
        """The primary's address first, then the replica's (where the client goes next)."""
        assert self.net is not None and self.primary is not None and self.replica is not None
        return [(self.net.host_ips[self.primary.host], self.port),
                (self.net.host_ips[self.replica.host], self.port)]

    def writer(self, prefix: str, count: int, ack_log: Path,
               stop_file: Path | None = None) -> tuple[threading.Thread, dict]:
        out: dict[str, WriteReport] = {}
        addrs = self.addresses()

        def run() -> None:
            out["report"] = run_writes(addrs, count, ack_log, prefix=prefix, deadline_s=90,
                                       per_op_timeout_s=1.0, interval_s=INTERVAL_S,
                                       stop_file=stop_file)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread, out

    def steady_load(self) -> None:
        """Writes with nothing injected: lag samples of the hot replica under load."""
        assert self.watch is not None and self.replica is not None
        ack_log = self.tmp / "acks-steady.jsonl"
        start_ms = int(time.time() * 1000)
        thread, out = self.writer("steady", self.lag_writes, ack_log)
        self.probe_replication(thread)
        thread.join(120)
        end_ms = int(time.time() * 1000)
        if thread.is_alive() or out["report"].acked != self.lag_writes:
            raise RoundFailed(f"steady load: {out.get('report')}")
        self._append_acks(ack_log)
        time.sleep(2 * HEARTBEAT_MS / 1000)  # the last statuses of the window arrive
        self.base_lags = self.watch.lags(self.replica.member, start_ms, end_ms)
        lag_ms = [lag for lag, _ in self.base_lags]
        print(f"steady load: {self.lag_writes} writes in {out['report'].elapsed_s:.1f} s,"
              f" {len(lag_ms)} lag samples, lag_ms p50 {percentile(lag_ms, 50)}"
              f" p99 {percentile(lag_ms, 99)}; DUMP probe: replica behind by"
              f" {percentile(self.probe_ms, 50):.1f} ms p50,"
              f" {percentile(self.probe_ms, 99):.1f} ms p99 ({len(self.probe_ms)} probes)",
              flush=True)

    def probe_replication(self, writer: threading.Thread) -> None:
        """While the writer runs: DUMP to a fresh file on the primary; once its reply is
        read, time until the replica's replay of that DUMP creates the same file in the
        replica's folder. The replica's delay behind the primary, end to end, as a client
        of the primary would see it (lag_ms counts only records not yet handed to the
        replaying app)."""
        assert self.net is not None and self.primary is not None and self.replica is not None
        host = self.net.host_ips[self.primary.host]
        for i in range(200):
            if not writer.is_alive():
                break
            name = f"probe-{i:03d}.txt"
            dump(host, self.port, name, timeout=10)
            acked = time.monotonic()
            target = self.replica.workdir / name
            while not target.exists() and time.monotonic() - acked < 10:
                time.sleep(0.0005)
            if not target.exists():
                raise RoundFailed(f"the replica never replayed DUMP {name}")
            self.probe_ms.append((time.monotonic() - acked) * 1000)
            time.sleep(0.2)

    def _append_acks(self, ack_log: Path) -> None:
        with open(self.all_acks, "ab") as out:
            out.write(ack_log.read_bytes())

    # -- one round
    def round(self, index: int, kind: str) -> Round:
        assert self.net is not None and self.broker is not None and self.watch is not None
        old, new = self.primary, self.replica
        assert old is not None and new is not None
        res = Round(index, kind, old.member, new.member)
        ack_log = self.tmp / f"acks-r{index:03d}.jsonl"
        stop_file = self.tmp / f"stop-r{index:03d}"
        start_ms = int(time.time() * 1000)
        thread, out = self.writer(f"r{index:03d}", MAX_WRITES, ack_log, stop_file)
        wait_for(lambda: count_lines(ack_log) >= FAULT_AFTER or not thread.is_alive(), 30,
                 f"the first {FAULT_AFTER} writes of round {index}", step=0.005)
        fault_at = time.time()
        migrate_out = ""
        if kind == "crash":
            self.net.signal(old.host, signal.SIGKILL)
        else:
            run = subprocess.run(
                [sys.executable, "-m", "mig", "migrate", self.name, "--to", new.member,
                 "--bootstrap", self.broker.settings.bootstrap_servers],
                capture_output=True, text=True, timeout=90)
            migrate_out = (run.stdout + run.stderr).strip()
            if run.returncode != 0:
                raise RoundFailed(f"mig migrate exited with {run.returncode}: {migrate_out}")
            match = re.search(r"switchover gap (-?\d+) ms", run.stdout)
            res.switchover_ms = int(match.group(1)) if match else None
        target = self.epoch + 1
        wait_for(lambda: self.watch.promotion(target) is not None, PROMOTION_WAIT_S,
                 f"a promotion to epoch {target}")
        promo = self.watch.promotion(target)
        assert promo is not None
        if promo["member"] != new.member:
            raise RoundFailed(f"epoch {target} went to {promo['member']}, not {new.member}")
        want = "failover" if kind == "crash" else "handoff"
        if promo["reason"] != want:
            raise RoundFailed(f"promotion reason {promo['reason']!r}, expected {want!r}")
        res.detection_ms, res.promotion_ms = promo["detection_ms"], promo["promotion_ms"]
        # the client goes on on the new primary for a while, then stops
        at_promotion = count_lines(ack_log)
        wait_for(lambda: count_lines(ack_log) >= at_promotion + AFTER_PROMOTION
                 or not thread.is_alive(), 60,
                 f"{AFTER_PROMOTION} writes acknowledged after the promotion", step=0.01)
        stop_file.touch()
        thread.join(60)
        if thread.is_alive():
            raise RoundFailed(f"round {index}: the client did not finish")
        report: WriteReport = out["report"]
        res.acked = report.acked
        around = [g for g in report.gaps if g.t_after is None or g.t_after >= fault_at]
        res.gaps = len(report.gaps)
        res.gap_s = max((g.seconds for g in around), default=None)
        if around:
            gap = max(around, key=lambda g: g.seconds)
            res.attempts = gap.failed_attempts
            if kind == "crash":
                fault_ms = fault_at * 1000
            else:
                handoffs = [h for h in self.watch.of("mig.log.Handoff")
                            if h["epoch"] == self.epoch and h["to_member"] == new.member]
                fault_ms = handoffs[-1]["frozen_ts_ms"] if handoffs else fault_at * 1000
            if gap.t_after is not None:
                res.split = (round(fault_ms - gap.t_before * 1000),
                             round(promo["ts_ms"] - fault_ms),
                             round(gap.t_after * 1000 - promo["ts_ms"]))
        if report.stopped != "stop_file" or any(g.t_after is None for g in report.gaps):
            raise RoundFailed(f"round {index}: the client stopped on {report.stopped!r} after"
                              f" {report.acked} acks; gaps {report.gaps}")
        self._append_acks(ack_log)
        # every write acknowledged since the start is in the new primary's state
        name = f"dump-r{index:03d}.txt"
        dump(self.net.host_ips[new.host], self.port, name)
        problems = check_acked(self.all_acks, read_dump(new.workdir / name))
        res.lost = len(problems)
        # nothing acknowledged by the old primary once the new one was promoted
        old_addr = f"{self.net.host_ips[old.host]}:{self.port}"
        acks = [json.loads(line) for line in ack_log.read_text().splitlines() if line]
        res.late_acks = sum(1 for a in acks if a["addr"] == old_addr
                            and a["t_ack"] * 1000 > promo["ts_ms"])
        # lag of the replica while the client wrote, before the fault
        res.lags = self.watch.lags(new.member, start_ms, int(fault_at * 1000))
        try:
            old.proc.wait(30)
        except subprocess.TimeoutExpired:
            raise RoundFailed(f"the old primary {old.member} still runs 30 s after the"
                              f" {kind}") from None
        res.old_exit = old.proc.returncode
        # nothing of the old primary lingers on its host (its app stops with it)
        try:
            wait_for(lambda: not self.net.pids(old.host), 10, "host to be empty", step=0.1)
        except RoundFailed:
            left = [Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:200]
                    for pid in self.net.pids(old.host)]
            raise RoundFailed(f"processes left on host {old.host} after {old.member} ended:"
                              f" {left}") from None
        if problems:
            raise RoundFailed(f"round {index}: {len(problems)} acknowledged writes missing or"
                              f" wrong in the new primary's dump, e.g. {problems[:3]}")
        if kind == "migrate" and res.old_exit != 0:
            raise RoundFailed(f"the old primary {old.member} exited with {res.old_exit} after"
                              f" handing over")
        self.epoch = target
        self.primary = new
        res.hot_s = self.start_replica(old.host, f"h{old.host}-r{index + 1}")
        gap = f"{res.gap_s * 1000:.0f} ms" if res.gap_s is not None else "-"
        extra = (f"detection {res.detection_ms} ms, promotion {res.promotion_ms} ms"
                 if kind == "crash" else f"switchover gap {res.switchover_ms} ms")
        split = "" if res.split is None else " = {} + {} + {}".format(*res.split)
        print(f"round {index:2d} {kind:7s} {old.member} -> {new.member}: client gap {gap}{split}"
              f" ({res.attempts} failed tries), {extra}; lost {res.lost},"
              f" late acks {res.late_acks}, old exit {res.old_exit};"
              f" new replica hot in {res.hot_s:.1f} s", flush=True)
        return res

    def run(self) -> None:
        self.setup()
        self.start_primary()
        self.start_replica(1, "h1-r0")
        self.steady_load()
        kinds = ["crash", "migrate"]
        for i in range(2 * self.rounds):
            self.results.append(self.round(i, kinds[i % 2]))

    def diagnose(self) -> None:
        """What the members said last, for a failed run."""
        for m in self.members[-3:]:
            state = "running" if m.proc.poll() is None else f"exit {m.proc.returncode}"
            print(f"\n--- {m.member} on host {m.host} ({state}), last lines of {m.log}:")
            try:
                lines = m.log.read_text(errors="replace").splitlines()
            except OSError:
                lines = []
            for line in lines[-25:]:
                print("   ", line[:400])
        if self.watch is not None:
            promos = [(p["new_epoch"], p["member"], p["reason"])
                      for p in self.watch.of("mig.log.Promotion")]
            print(f"\ncontrol: epoch {self.epoch}, last promotions {promos[-4:]}")
            if self.watch.error:
                print(f"control reader: {self.watch.error}")

    def close(self) -> None:
        if self.watch is not None:
            self.watch.stop()
            with open(self.tmp / "control.jsonl", "w", encoding="utf-8") as out:
                for name, rec in self.watch.records:
                    out.write(json.dumps({"schema": name, **rec}, default=str) + "\n")
        for m in self.members:
            if m.proc.poll() is None:
                m.proc.kill()
                try:
                    m.proc.wait(10)
                except subprocess.TimeoutExpired:
                    pass
        if self.net is not None:
            self.net.close()
        if self.broker is not None:
            self.broker.down()
        shutil.rmtree(self.rings, ignore_errors=True)

    def write_json(self, path: Path, started: str) -> None:
        """Every round's figures, the replicas' lag over the run (their ``MemberStatus``
        records) and the promotions, for bench/plots.py."""
        records = list(self.watch.records) if self.watch is not None else []
        doc = {
            "bench": "failover", "started": started, "machine": machine(),
            "failure": self.failure, "rounds": [asdict(r) for r in self.results],
            "steady_lags": [list(x) for x in self.base_lags], "probe_ms": self.probe_ms,
            "statuses": [{k: rec[k] for k in ("ts_ms", "member", "health", "lag_ms",
                                              "lag_records")}
                         for name, rec in records if name == "mig.log.MemberStatus"],
            "promotions": [{k: rec[k] for k in ("ts_ms", "member", "reason", "new_epoch",
                                                "detection_ms", "promotion_ms")}
                           for name, rec in records if name == "mig.log.Promotion"],
        }
        path.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"figures written to {path}")

    # -- the table
    def table(self) -> list[tuple[str, str, str, str]]:
        crash = [r for r in self.results if r.kind == "crash"]
        migr = [r for r in self.results if r.kind == "migrate"]

        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:,.0f} ms"

        def verdict(v: float | None, limit: float) -> str:
            return "-" if v is None else ("met" if v <= limit else "MISSED")

        cg = [r.gap_s for r in crash if r.gap_s is not None]
        mg = [r.gap_s for r in migr if r.gap_s is not None]
        det = [r.detection_ms for r in crash if r.detection_ms is not None]
        pro = [r.promotion_ms for r in crash if r.promotion_ms is not None]
        sw = [r.switchover_ms for r in migr if r.switchover_ms is not None]
        samples = self.base_lags + [x for r in self.results for x in r.lags]
        lags = [lag for lag, _ in samples]
        pending = sum(1 for _, records in samples if records > 0)
        lost = sum(r.lost for r in self.results)
        late = sum(r.late_acks for r in self.results)
        acked = count_lines(self.all_acks)
        c50, c99 = percentile(cg, 50), percentile(cg, 99)
        m50, m99 = percentile(mg, 50), percentile(mg, 99)
        l50, l99 = percentile(lags, 50), percentile(lags, 99)
        n_c, n_m = len(crash), len(migr)
        rows = [
            (f"crash (SIGKILL of the host), client-visible gap p50, {n_c} failovers",
             ms(None if c50 is None else c50 * 1000), "<= 2,000 ms",
             verdict(c50, TARGETS["crash_p50"])),
            ("crash, client-visible gap p99", ms(None if c99 is None else c99 * 1000),
             "<= 3,000 ms", verdict(c99, TARGETS["crash_p99"])),
            ("crash, detection_ms p50 / p99",
             f"{ms(percentile(det, 50))} / {ms(percentile(det, 99))}", "", ""),
            ("crash, promotion_ms p50 / p99",
             f"{ms(percentile(pro, 50))} / {ms(percentile(pro, 99))}", "", ""),
            (f"mig migrate, client-visible gap p50, {n_m} switchovers",
             ms(None if m50 is None else m50 * 1000), "<= 300 ms",
             verdict(m50, TARGETS["migrate_p50"])),
            ("mig migrate, client-visible gap p99", ms(None if m99 is None else m99 * 1000),
             "", ""),
            ("mig migrate, printed switchover gap p50 / p99",
             f"{ms(percentile(sw, 50))} / {ms(percentile(sw, 99))}", "", ""),
            (f"replica lag_ms under load p50, {len(lags)} samples ({pending} with records"
             " left to replay)", ms(l50), "", ""),
            ("replica lag_ms under load p99", ms(l99), "<= 100 ms",
             verdict(l99, TARGETS["lag_p99"])),
            (f"replica behind the primary under load (DUMP probe, {len(self.probe_ms)}"
             " probes) p50 / p99",
             f"{ms(percentile(self.probe_ms, 50))} / {ms(percentile(self.probe_ms, 99))}",
             "", ""),
            (f"acknowledged writes lost ({acked:,} acknowledged, checked after every round)",
             str(lost), "0", "met" if lost == 0 and self.results else "MISSED"),
            ("writes acknowledged by a replaced primary after the promotion", str(late), "0",
             "met" if late == 0 and self.results else "MISSED"),
        ]
        return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=20, metavar="N",
                        help="crash failovers, and as many mig migrate switchovers (default 20)")
    parser.add_argument("--quick", action="store_true", help="3 rounds of each")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (logs, ack logs, dumps)")
    parser.add_argument("--json", type=Path, metavar="FILE",
                        help="also write every round's figures and the replicas' lag over"
                             " time to FILE, for bench/plots.py")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    if os.geteuid() != 0:
        parser.error("needs root: the test hosts are network namespaces")
    started_at = dt.datetime.now().isoformat(timespec="seconds")
    print(f"mig failover benchmark, {rounds} crash + {rounds} migrate rounds, {started_at}")
    print(f"machine: {machine()}", flush=True)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="mig-fbench-"))
    bench = Bench(tmp, rounds, lag_writes=1000 if args.quick else 3000)
    ok = False
    try:
        bench.run()
        ok = True
    except (RoundFailed, subprocess.SubprocessError, OSError) as exc:
        bench.failure = str(exc)
        print(f"\nRUN STOPPED: {exc}", flush=True)
        bench.diagnose()
    finally:
        bench.close()
    rows = bench.table()
    if args.json is not None:
        bench.write_json(args.json, started_at)
    print(f"\n== summary ({len(bench.results)} rounds in {time.monotonic() - started:.0f} s) ==")
    print_table(rows)
    for kind, fault in (("crash", "kill"), ("migrate", "freeze")):
        splits = [r.split for r in bench.results if r.kind == kind and r.split is not None]
        if splits:
            parts = [percentile([sp[i] for sp in splits], 50) for i in range(3)]
            print(f"{kind} gap, p50 of each part: last ack -> {fault} {parts[0]} ms,"
                  f" {fault} -> Promotion record {parts[1]} ms, Promotion -> first ack"
                  f" {parts[2]} ms")
    hot = [r.hot_s for r in bench.results if r.hot_s is not None]
    if hot:
        print(f"re-bootstrapping replica hot after {percentile(hot, 50):.1f} s (p50),"
              f" {max(hot):.1f} s (max); log replayed from its start each time")
    exits = sorted({(r.kind, r.old_exit) for r in bench.results})
    print(f"old primaries' exit codes by round kind: {exits}")
    if bench.failure:
        print(f"the run stopped early: {bench.failure}")
    if args.keep or not ok:
        print(f"logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
