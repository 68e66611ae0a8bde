"""Threads under mig, measured side by side in one run against one embedded broker.

1. **Lock cost.** bench/progs/locks.c: ns per mutex lock/unlock pair, natively, under the
   shim alone (no agent, a ring big enough for every record: the hot path's share) and
   under ``mig primary start`` (recording), in three loops: a process with one thread (mig
   records no synchronisation then), uncontended in a process that has a second thread,
   and contended by two threads; the records the run made (MUTEX_LOCK and all). Then the
   recorded run replayed by ``mig replica follow`` (from its start until its app wrote
   the same output as the primary's).
2. **Thread-pool server throughput.** tests/apps' poolserver with 4 worker threads, loaded
   by bench/progs/loadgen.c (4 connections, synchronous SET loops, one per worker), once
   the broker is warm (poolserver in output mode under load until the broker's JIT
   compilers took under 3% of a core two rounds in a row; the rounds are printed):
   natively on both CPUs, natively pinned to one CPU (``taskset -c 0``: what a recorder
   that runs one thread at a time, as rr does, could at best reach), under the shim
   alone with threads serialized and in parallel (no agent and no broker, a ring big
   enough for every record: what serializing costs apart from the CPU that recording
   takes on the other core), and under ``mig primary start`` in output mode (the
   default: a reply leaves once the records before it are committed) and in async mode.
   Target: mig >= 0.6x native.
3. **Redis 7 (Debian)** under ``redis-benchmark -c 8 -t set,get,incr -r 100000``, with
   its defaults (one thread serves; its bio threads wait; ``-n REQUESTS``) and with
   ``--io-threads 2 --io-threads-do-reads yes`` (I/O threads that take work through
   atomics, spinning: natively on one CPU a few hundred requests a second, so ``-n
   REQUESTS/20``): natively, natively on one CPU, under the shim alone as in part 2, and
   under ``mig primary start`` with threads serialized and in parallel, async and output,
   after the same warm-up (part 2's, or its own with ``--only redis``). Parallel mode
   records Redis's I/O threads, but a replica of them diverges (docs/threads.md): the
   row is for the cost, not an option.
4. **Repeated replays.** RUNS times: a fresh poolserver under ``mig primary start``, a
   replica (``mig replica follow``, another folder, same machine), 2,000 random
   SET/GET/DEL on 4 connections, a DUMP; the replica's dump must equal the primary's
   (its header counts the requests each worker served, so it depends on the recorded
   interleaving). Counts identical runs and divergences.

Nothing asserts on timing: the table says which target each figure met or missed.
Run: .venv/bin/python bench/threads_bench.py [--quick]
    [--only locks|throughput|redis|repeated] [--unbatched] [--requests N]
(about 3 minutes; --quick: smaller loops and 5 runs)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchlib import (  # noqa: E402 - a sibling
    broker_down,
    broker_up,
    machine,
    print_table,
    shim_alone,
    toml_value,
    warm_rounds,
)
from capture_bench import IO_THREADS, need, run_mig, run_native  # noqa: E402

from mig.broker.node import free_ports  # noqa: E402
from tests.apps.client import dump, run_ops, wait_port  # noqa: E402
from tests.harness import logged_calls, stop_mig  # noqa: E402

PROGS = ROOT / "bench" / "progs"
APPS = ROOT / "tests" / "apps"
CFLAGS = ["-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11", "-pthread"]
TARGET_RATIO = 0.6
# The broker's warm-up before the throughput runs (benchlib.warm_rounds): at least
# WARM_MIN_S and at most WARM_MAX_S of load.
WARM_MIN_S, WARM_MAX_S = 10.0, 180.0
MODES = [(mode, threads) for mode in ("output", "async") for threads in ("serialized", "parallel")]


class Bench:
    def __init__(self, tmp: Path, quick: bool, unbatched: bool = False) -> None:
        self.tmp = tmp
        self.quick = quick
        self.unbatched = unbatched
        self.bin = tmp / "bin"
        self.home = tmp / "home"
        self.env = dict(os.environ, MIG_HOME=str(self.home))
        exe = Path(sys.executable).parent / "mig"
        self.mig = [str(exe)] if exe.is_file() else [sys.executable, "-m", "mig"]
        self.port = 0
        self.rows: list[tuple[str, str, str, str]] = []
        self.apps = 0

    def build(self) -> None:
        self.bin.mkdir()
        for name in ("locks", "loadgen"):
            subprocess.run(["gcc", *CFLAGS, "-o", str(self.bin / name), str(PROGS / f"{name}.c")],
                           check=True, timeout=120)
        subprocess.run(["gcc", *CFLAGS, "-o", str(self.bin / "poolserver"),
                        str(APPS / "poolserver.c"), str(APPS / "kvstore.c")],
                       check=True, timeout=120)

    def broker_up(self) -> None:
        self.port = broker_up(self.mig, self.env)

    def broker_down(self) -> None:
        broker_down(self.mig, self.env)

    def app(self, name: str, command: list[str], mode: str = "output",
            threads: str = "serialized", env: dict[str, str] | None = None) -> Path:
        self.apps += 1
        name = f"{name}{self.apps}x{os.getpid()}"
        folder = self.tmp / "apps" / name
        folder.mkdir(parents=True)
        path = folder / "app.toml"
        path.write_text("\n".join([
            "[app]", f'name = "{name}"', f"command = {json.dumps(command)}",
            f'barrier_mode = "{mode}"', f'threads = "{threads}"',
            *([f"env = {toml_value(env)}"] if env else []),
            "[kafka]",
            f'bootstrap_servers = "127.0.0.1:{self.port}"']) + "\n")
        return path

    def start(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        out = open(log, "ab")  # noqa: SIM115 - lives with the process
        return subprocess.Popen([*self.mig, "--log-format", "json", *args], env=self.env,
                                stdout=out, stderr=out)

    # -- 1. lock cost
    def locks(self) -> None:
        iters = 200_000 if self.quick else 1_000_000
        print(f"\n== 1. mutex lock/unlock pairs, {iters:,} per loop ==", flush=True)
        native_out = self.tmp / "locks-native.txt"
        subprocess.run([str(self.bin / "locks"), str(native_out), str(iters)], check=True,
                       timeout=300)
        native = _figures(native_out.read_text())
        # the shim with no agent (a ring big enough for every record): the hot path's share
        alone_out = self.tmp / "locks-shim.txt"
        with shim_alone() as env:
            subprocess.run([str(self.bin / "locks"), str(alone_out), str(iters)], check=True,
                           timeout=300, env=env)
        alone = _figures(alone_out.read_text())
        for threads in ("serialized", "parallel"):
            self.locks_under_mig(iters, threads, native, alone)

    def locks_under_mig(self, iters: int, threads: str, native: dict[str, float],
                        alone: dict[str, float]) -> None:
        app = self.app("locks", [str(self.bin / "locks"), "out.txt", str(iters)],
                       threads=threads)
        t0 = time.monotonic()
        rec = self.start(["primary", "start", str(app)], app.parent / "primary.log")
        rec.wait(900)
        rec_s = time.monotonic() - t0
        mig = _figures((app.parent / "out.txt").read_text())
        locks, switches, records = self.count_locks(app)
        # the replay's time: from the replica's start until its app has written out.txt
        backup_out = app.parent / "backup" / "out.txt"
        t0 = time.monotonic()
        rep = self.start(["replica", "follow", str(app), "--workdir", str(app.parent / "backup"),
                          "--idle-exit", "2"], app.parent / "replica.log")
        while not backup_out.exists() and rep.poll() is None and time.monotonic() - t0 < 900:
            time.sleep(0.01)
        rep_s = time.monotonic() - t0
        rep.wait(900)
        # the timings differ (they are read with a raw syscall); the counter may not
        same = backup_out.exists() and (_figures(backup_out.read_text())["counter"]
                                        == mig["counter"])
        print(f"threads {threads}: native: {native}\nunder mig primary: {mig} (mig primary"
              f" start ran {rec_s:.1f} s, {records:,} records, {locks:,} of them MUTEX_LOCK,"
              f" {switches:,} SWITCH)\nreplay: exit {rep.returncode}, out.txt after"
              f" {rep_s:.1f} s, same counter: {same}", flush=True)
        print(f"shim alone (no agent, threads parallel): {alone}", flush=True)
        for key, label in (("single", "one thread (not recorded)"),
                           ("uncontended", "uncontended, the process has threads"),
                           ("contended", "contended by 2 threads")):
            n, a, m = native[f"{key}_ns"], alone[f"{key}_ns"], mig[f"{key}_ns"]
            self.rows.append((f"lock/unlock pair, {label}: native / shim alone (parallel) /"
                              f" under mig, threads {threads}",
                              f"{n:,.1f} / {a:,.1f} / {m:,.1f} ns ({a / n:,.1f}x /"
                              f" {m / n:,.1f}x)", "", ""))
        self.rows.append((f"records of the locks run, threads {threads} ({3 * iters:,}"
                          f" acquisitions, {2 * iters:,} of them with threads): MUTEX_LOCK /"
                          " SWITCH / all", f"{locks:,} / {switches:,} / {records:,}", "", ""))
        self.rows.append((f"replay of the locks run, threads {threads}: replica start to the"
                          " app's last output",
                          f"{rep_s:.1f} s, exit {rep.returncode}, same counter: {same}", "", ""))

    def count_locks(self, app: Path) -> tuple[int, int, int]:
        """MUTEX_LOCK records, SWITCH records and all records in the app's calls topic."""
        out = subprocess.run([*self.mig, "log", "tail", "-t", "calls", "-c", str(app), "--json",
                              app.parent.name], env=self.env, capture_output=True, text=True,
                             timeout=600, check=True).stdout
        kinds = [c["kind"] for c in logged_calls(out)]
        return kinds.count("MUTEX_LOCK"), kinds.count("SWITCH"), len(kinds)

    # -- 2. thread-pool throughput
    def warm_up(self) -> list[tuple[float, float]]:
        """Load the broker through poolserver under ``mig primary start`` in output mode
        until its JIT compilers are done (benchlib.warm_rounds); (req/s, the compilers'
        share of a core) of each 2 s round. On a cold broker the output-mode figures were a
        fifth of what the same load reached once it was warm (3,072 against 19,389 req/s)."""
        broker = int(next(self.home.glob("broker/**/kafka.pid")).read_text())
        port = free_ports(1)[0]
        app = self.app("warm", [str(self.bin / "poolserver"), str(port), "4"])
        proc = self.start(["primary", "start", str(app)], app.parent / "primary.log")
        try:
            wait_port("127.0.0.1", port, 60)
            return warm_rounds(lambda: self.loadgen(port, 2.0)["rps"], lambda: [broker],
                               WARM_MIN_S, WARM_MAX_S)
        finally:
            stop_mig(proc, grace=60)

    def throughput(self) -> None:
        seconds = 2.0 if self.quick else 5.0
        warm = self.warm_up()
        print("broker warm-up, poolserver in output mode: req/s (the JIT compilers' share of"
              " a core) per round: " + " ".join(f"{r:,.0f} ({j:.0%})" for r, j in warm),
              flush=True)
        print(f"\n== 2. poolserver, 4 workers, 4 connections, {seconds:g} s each ==",
              flush=True)
        res: dict[str, dict[str, float]] = {}
        res["native"] = self.plain(None, seconds)
        res["native, one CPU"] = self.plain(["taskset", "-c", "0"], seconds)
        # the shim with no agent and no broker (a ring big enough for every record): what
        # serializing costs apart from the CPU that recording takes on the other core
        for threads in ("serialized", "parallel"):
            res[f"shim alone (no agent), threads {threads}"] = self.alone(threads, seconds)
        # --unbatched: serialized with MIG_SCHED_BATCH=0 too (a woken thread preempts)
        unbatched = [(mode, "serialized unbatched") for mode in ("output", "async")
                     if self.unbatched]
        for mode, threads in MODES + unbatched:
            port = free_ports(1)[0]
            app = self.app("pool", [str(self.bin / "poolserver"), str(port), "4"], mode,
                           threads.split()[0],
                           {"MIG_SCHED_BATCH": "0"} if "unbatched" in threads else None)
            proc = self.start(["primary", "start", str(app)], app.parent / "primary.log")
            try:
                wait_port("127.0.0.1", port, 60)
                res[f"under mig primary ({mode} mode, threads {threads})"] = self.loadgen(
                    port, seconds)
            finally:
                stop_mig(proc, grace=60)
        base = res["native"]["rps"]
        for name, r in res.items():
            print(f"{name}: {r['rps']:,.0f} req/s, p50 {r['p50_us']:,.0f} us, p99"
                  f" {r['p99_us']:,.0f} us, errors {r['errors']:.0f}", flush=True)
        for name, r in res.items():
            if name == "native":
                continue
            ratio = r["rps"] / base
            target = f">= {TARGET_RATIO}x native" if "mig" in name else ""
            verdict = ("met" if ratio >= TARGET_RATIO else "MISSED") if target else ""
            self.rows.append((f"poolserver req/s, {name} vs native (p50 latency)",
                              f"{r['rps']:,.0f} vs {base:,.0f} ({ratio:.2f}x;"
                              f" {r['p50_us']:,.0f} vs {res['native']['p50_us']:,.0f} us)",
                              target, verdict))
        one = res["native, one CPU"]["rps"]
        for mode, threads in MODES + unbatched:
            under = res[f"under mig primary ({mode} mode, threads {threads})"]["rps"]
            self.rows.append((f"poolserver under mig ({mode}, threads {threads}) vs native"
                              " on one CPU (rr's ceiling)", f"{under / one:.2f}x", "", ""))
        for threads in ("serialized", "parallel"):
            alone = res[f"shim alone (no agent), threads {threads}"]["rps"]
            self.rows.append((f"poolserver under the shim alone (threads {threads}) vs native"
                              " on one CPU", f"{alone / one:.2f}x", "", ""))

    # -- 3. Redis, with and without I/O threads
    def redis(self, requests: int, warm: bool) -> None:
        server = need("redis-server", "redis-server")
        bench = need("redis-benchmark", "redis-tools")
        if warm:
            rounds = self.warm_up()
            print("broker warm-up: " + " ".join(f"{r:,.0f} ({j:.0%})" for r, j in rounds),
                  flush=True)
        bootstrap = f"127.0.0.1:{self.port}"
        for label, extra, n in (("defaults", (), requests),
                                ("--io-threads 2", IO_THREADS, max(100, requests // 20))):
            print(f"\n== 3. Redis, {label}, redis-benchmark -n {n} -c 8 -t set,get,incr ==",
                  flush=True)
            res = {"native": run_native(server, bench, n, self.tmp, extra, 8),
                   "native, one CPU": run_native(server, bench, n, self.tmp, extra, 8, "0")}
            for threads in ("serialized", "parallel"):
                res[f"shim alone (no agent), threads {threads}"] = self.redis_alone(
                    server, bench, n, extra, threads)
            for mode, threads in MODES:
                self.apps += 1
                res[f"mig {threads} {mode}"], _, _ = run_mig(
                    server, bench, n, self.tmp, bootstrap, self.env, "trap", threads, mode,
                    self.apps, extra, 8)
            for name, rps in res.items():
                print(f"{name}: {rps:,.0f} req/s, {rps / res['native']:.2f}x native,"
                      f" {rps / res['native, one CPU']:.2f}x one CPU", flush=True)
            for name, rps in res.items():
                if not name.startswith("native"):
                    self.rows.append((f"Redis ({label}) req/s, {name}: x native, x one CPU",
                                      f"{rps:,.0f}: {rps / res['native']:.2f}x,"
                                      f" {rps / res['native, one CPU']:.2f}x", "", ""))

    def redis_alone(self, server: str, bench: str, n: int, extra: tuple[str, ...],
                    threads: str) -> float:
        """Redis under the shim alone (no agent, no broker), threads serialized or parallel."""
        with shim_alone(threads) as env:
            return run_native(server, bench, n, self.tmp, extra, 8, env=env)

    def loadgen(self, port: int, seconds: float) -> dict[str, float]:
        out = subprocess.run([str(self.bin / "loadgen"), "127.0.0.1", str(port), "4",
                              str(seconds), "0.5"], capture_output=True, text=True,
                             timeout=seconds + 60, check=True)
        return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.-]+)", out.stdout)}

    def plain(self, prefix: list[str] | None, seconds: float,
              env: dict[str, str] | None = None) -> dict[str, float]:
        port = free_ports(1)[0]
        server = subprocess.Popen([*(prefix or []), str(self.bin / "poolserver"), str(port),
                                   "4"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env=env)
        try:
            wait_port("127.0.0.1", port, 10)
            return self.loadgen(port, seconds)
        finally:
            server.kill()
            server.wait(10)

    def alone(self, threads: str, seconds: float) -> dict[str, float]:
        """poolserver under the shim alone, threads serialized or parallel."""
        with shim_alone(threads) as env:
            return self.plain(None, seconds, env)

    # -- 3. repeated replays
    def repeated(self, runs: int) -> None:
        print(f"\n== 3. {runs} record + replay runs of poolserver ==", flush=True)
        same = diverged = other = 0
        took: list[float] = []
        for run in range(runs):
            port = free_ports(1)[0]
            app = self.app("rep", [str(self.bin / "poolserver"), str(port), "4"])
            folder = app.parent
            primary = self.start(["primary", "start", str(app)], folder / "primary.log")
            replica = None
            t0 = time.monotonic()
            try:
                wait_port("127.0.0.1", port, 60)
                replica = self.start(["replica", "follow", str(app), "--workdir",
                                      str(folder / "backup")], folder / "replica.log")
                run_ops("127.0.0.1", port, 2000, seed=run, conns=4)
                dump("127.0.0.1", port, "dump.txt")
                mine, theirs = folder / "backup" / "dump.txt", folder / "dump.txt"
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    if mine.exists() and mine.read_bytes() == theirs.read_bytes():
                        break
                    if replica.poll() is not None:
                        break
                    time.sleep(0.05)
                if mine.exists() and mine.read_bytes() == theirs.read_bytes():
                    same += 1
                elif replica.poll() == 3:
                    diverged += 1
                    print(f"run {run}: DIVERGED:"
                          f" {(folder / 'replica.log').read_text()[-600:]}", flush=True)
                else:
                    other += 1
                    print(f"run {run}: no matching dump (replica exit {replica.poll()})",
                          flush=True)
                took.append(time.monotonic() - t0)
            finally:
                if replica is not None:
                    stop_mig(replica, grace=60)
                stop_mig(primary, grace=60)
        print(f"{runs} runs: {same} identical dumps, {diverged} divergences, {other} other;"
              f" {sum(took) / max(1, len(took)):.1f} s per run", flush=True)
        self.rows.append((f"poolserver record + replay, {runs} runs of 2,000 operations:"
                          " identical dumps / divergences / other",
                          f"{same} / {diverged} / {other}", f"{runs} / 0 / 0",
                          "met" if same == runs else "MISSED"))


def _figures(text: str) -> dict[str, float]:
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", text)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="smaller loops, 5 runs")
    parser.add_argument("--runs", type=int, default=None, help="repeated runs (default 20)")
    parser.add_argument("--requests", type=int, default=20000,
                        help="Redis: requests per test with its defaults (a twentieth with"
                             " I/O threads)")
    parser.add_argument("--only", choices=("locks", "throughput", "redis", "repeated"),
                        help="run one of the three parts")
    parser.add_argument("--unbatched", action="store_true",
                        help="throughput: also serialized with MIG_SCHED_BATCH=0 (the app's"
                             " threads under SCHED_OTHER)")
    args = parser.parse_args()
    runs = args.runs or (5 if args.quick else 20)
    print(f"mig threads benchmark{' (--quick)' if args.quick else ''},"
          f" {dt.datetime.now().isoformat(timespec='seconds')}")
    print(f"machine: {machine()}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="mig-thrbench-"))
    bench = Bench(tmp, args.quick, args.unbatched)
    failures: list[str] = []
    started = time.monotonic()
    try:
        bench.build()
        bench.broker_up()
        steps = {"locks": bench.locks, "throughput": bench.throughput,
                 "redis": lambda: bench.redis(args.requests, args.only == "redis"),
                 "repeated": lambda: bench.repeated(runs)}
        for name, step in steps.items():
            if args.only and name != args.only:
                continue
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - reported, the run goes on
                failures.append(f"{type(exc).__name__}: {exc}")
                print(f"STEP FAILED: {failures[-1]}", flush=True)
    finally:
        bench.broker_down()
    print(f"\n== summary ({time.monotonic() - started:.0f} s) ==")
    print_table(bench.rows)
    for f in failures:
        print(f"FAILED: {f}")
    if failures:
        print(f"logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
