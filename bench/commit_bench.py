"""Output commit and catch-up on Redis, with a hot replica following, side by side in one run.

Redis 7 (Debian) with ``--jemalloc-bg-thread no`` (its replicas follow then:
docs/programs.md) and no snapshots, on one embedded broker:

0. **The broker warmed up first**: Kafka runs on the JVM, whose JIT compiler took about
   half of the broker's CPU for the first 20 s of load here, and the output-mode figure
   tripled while it did (6,400 to 20,000..30,000 req/s, SET alone). A production broker is
   warm, so before the measured runs Redis runs under mig in output mode, a replica
   following, under the measured load, until the broker's JIT compiler threads took less
   than 3% of a core in two rounds in a row (at least ``--warm-up`` seconds of load, at
   most 300 s); the rounds are printed. (Two rounds whose rates agreed, the rule before,
   let the compiler go on compiling Kafka's produce path into the measured runs.)
1. **Throughput**: ``redis-benchmark -n REQUESTS -c 50 -t set,get,incr,lpush -r 100000``
   natively, then under ``mig primary start`` in output and in async mode, each time with
   a replica following on this machine (``mig replica follow --no-promote``, started once
   the app answers, the benchmark started once the replica says it is replaying).
   Requests per second (the mean of the four tests) and the ratio to native.
2. **Added latency**: ``redis-benchmark -c 1 -t set`` p50, natively and in output mode with
   the replica (the same run as 1).
3. **The replica under that load**: its lag (``lag_ms`` of the statuses it wrote during the
   benchmark, every ``heartbeat_ms``): p50, p99 and max; and the peak RSS of its mig
   process (``VmHWM``).
4. **A fresh replica's replay speed**: after the output-mode run (Redis shut down by
   ``SHUTDOWN NOSAVE``, the end in the log), ``mig replica follow --from-start`` replays the
   whole log: calls per second, from its ``mig.replayer.started`` line to its exit.
5. **An idle agent**: the CPU an idle primary's agent takes (its app sleeps), over 10 s.
6. **Where the CPU went** during the ``-c 50`` load of the first run: seconds of CPU of
   each process (the app, mig's agents, the broker, the replica's app, the load generator)
   against the wall time times the cores: what is left for the app on this machine.
7. **What a batch waits for its acknowledgement** during each ``-c 50`` load under mig: the
   primary's ``mig_commit_seconds`` histogram (served with ``--metrics``) before and
   after it, p50, p90 and p99 interpolated within its buckets: the part of a held reply's
   wait that is the broker's round trip.

``--modes output-py,async-py`` run the same with the primary's Python path instead of its
native pump (``MIG_NATIVE_PUMP=0``), side by side with ``output`` and ``async``;
``output-signed`` (and ``output-signed-py``) with every record signed (``[security]``);
``output-fetch2`` (any mode, ``-fetchN``) with the replica's ``[replica]
fetch_coalesce_ms = N``; ``-inflightN`` with ``max.in.flight.requests.per.connection = N``
in ``[kafka]`` (the primary's producer sends one request at a time with 1).
``--threads serialized|parallel`` sets the app's ``[app] threads`` (default: mig's);
``--cluster`` runs it all on three brokers on this machine (RF 3, min.insync 2) instead of
the embedded broker: what a production user gets, less the machines. ``--profile DIR``
samples the primary's and the replica's agents with py-spy (``.venv/bin/pip install
py-spy``) during each mode's first ``-c 50`` load and prints where their CPU went.

RUNS rounds of every configuration, interleaved; the spread is min..max. Nothing asserts
on timing: the last lines print each target of docs/benchmarks.md ("Output commit") with
met, MISSED or not measured.
Run: .venv/bin/python bench/commit_bench.py [--runs 2] [--requests 20000] [--cluster]
    [--profile DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchlib import (  # noqa: E402 - a sibling
    broker_down,
    broker_up,
    cpu_by_process,
    cpu_spent,
    cpu_ticks,
    jit_cpu_s,
    machine,
    toml_value,
    warm_rounds,
)

from mig.broker.node import free_ports  # noqa: E402
from tests.apps.client import wait_port  # noqa: E402
from tests.harness import stop_mig  # noqa: E402

MIG = [sys.executable, "-m", "mig", "--log-format", "json"]
TESTS = "set,get,incr,lpush"
REDIS_ARGS = ["--save", "", "--appendonly", "no", "--jemalloc-bg-thread", "no"]
REPLICA = "bench-replica"
# The warm-up ends once the brokers' JIT compilers are done (benchlib.warm_rounds), or
# after WARM_MAX_S.
WARM_MAX_S = 300


def need(program: str, package: str) -> str:
    path = shutil.which(program)
    if not path:
        sys.exit(f"{program} is not installed: apt-get install -y {package}")
    return path


def benchmark(bench: str, port: int, requests: int, clients: int, tests: str
              ) -> tuple[float, float]:
    """(mean requests/s of the tests, mean p50 in ms)."""
    out = subprocess.run([bench, "-p", str(port), "-n", str(requests), "-c", str(clients),
                          "-t", tests, "-r", "100000", "-q"], capture_output=True, text=True,
                         timeout=900, check=True).stdout.replace("\r", "\n")
    found = re.findall(r"(\w+): ([\d.]+) requests per second, p50=([\d.]+) msec", out)
    assert len(found) == len(tests.split(",")), out
    return (statistics.mean(float(f[1]) for f in found),
            statistics.mean(float(f[2]) for f in found))


def redis_cli(port: int, *args: str) -> str:
    return subprocess.run([need("redis-cli", "redis-tools"), "-p", str(port), *args],
                          capture_output=True, text=True, timeout=30).stdout.strip()


def statuses(bootstrap: str, app: str, member: str) -> list[dict[str, Any]]:
    """Every MemberStatus ``member`` wrote to the app's control topic so far."""
    from confluent_kafka import TopicPartition

    from mig.kafka.clients import KafkaSettings, end_offsets
    from mig.kafka.reader import END, Reader

    out = []
    topic = f"mig.{app}.control"
    with Reader(KafkaSettings(bootstrap), app, "bench") as reader:
        end = end_offsets(reader.consumer, topic).get(0, 0)
        part = TopicPartition(topic, 0, 0)
        reader.assign([part])
        # (to the end as it was: a live app's control topic never stays at its end long
        # enough for an end-of-partition event)
        while reader.consumer.position([part])[0].offset < end:
            for item in reader.poll(1000, 0.5):
                if item.kind == END:
                    return out
                if (item.name == "mig.log.MemberStatus" and item.record is not None
                        and item.record["member"] == member):
                    out.append(item.record)
    return out


def mode_number(mode: str, name: str) -> int:
    """N of a mode's ``-nameN`` suffix (``output-fetch2``: 2 for "fetch"), 0 without one."""
    found = [int(p[len(name):]) for p in mode.split("-")[1:] if p.startswith(name)]
    return found[0] if found else 0


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def commit_buckets(port: int) -> dict[float, float]:
    """The primary's ``mig_commit_seconds`` histogram (its /metrics): upper bound ->
    cumulative count. Empty when it cannot be read."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    return {float(sample.labels["le"]): sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "mig_commit_seconds"
            for sample in family.samples if sample.name == "mig_commit_seconds_bucket"}


def quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The q-quantile, in seconds, of what ``after - before`` of a cumulative histogram
    counted, interpolated within its bucket (as Prometheus's histogram_quantile); NaN
    without counts."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return float("nan")
    want, lower, below = q * counts[-1], 0.0, 0.0
    for bound, cum in zip(bounds, counts, strict=True):
        if cum >= want:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (want - below) / max(cum - below, 1e-9)
        lower, below = bound, cum
    return lower


def py_spy() -> str:
    """py-spy (PyPI), for --profile: on PATH or beside this Python."""
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).is_file():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    return found


def top_frames(raw: Path, n: int = 8) -> list[str]:
    """From py-spy's collapsed stacks (``frame;frame;... count``, ``--gil``: samples of
    the thread running Python, so a wait in a system call or in librdkafka is not one):
    the lines with the most samples on top of the stack (self), and mig's functions with
    the most anywhere in it (total; the command line's frames left out), as lines."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [re.sub(r" \((?:[^()]*/)?(?:mig|site-packages|python3\.\d+)/", " (", f)
                  for f in stack.split(";")]
        samples += int(count)
        own[frames[-1]] = own.get(frames[-1], 0) + int(count)
        for f in {re.sub(r":\d+\)$", ")", f) for f in frames}:
            if re.search(r" \((member|kafka|ring|control|checkpoint)/", f):
                total[f] = total.get(f, 0) + int(count)
    out = [f"{samples} samples"]
    out += [f"self  {c / max(samples, 1):5.1%}  {f}" for f, c in
            sorted(own.items(), key=lambda x: -x[1])[:n]]
    out += [f"total {c / max(samples, 1):5.1%}  {f}" for f, c in
            sorted(total.items(), key=lambda x: -x[1])[:n]]
    return out


class Bench:
    def __init__(self, tmp: Path, requests: int, load: bool = True, threads: str = "",
                 profile: Path | None = None) -> None:
        self.load = load
        self.threads = threads
        self.profile = profile
        self.cpu: dict[str, list[tuple[float, dict[str, float]]]] = {}
        # mode -> (batches, p50, p90, p99 s) of the acknowledgements in each -c 50 load
        self.acks: dict[str, list[tuple[float, float, float, float]]] = {}
        self.metrics_port = 0  # the primary's /metrics in the pair running now
        self.tmp, self.requests = tmp, requests
        self.server = need("redis-server", "redis-server")
        self.bench = need("redis-benchmark", "redis-tools")
        self.env = {**os.environ, "MIG_HOME": str(tmp / "home")}
        self.bootstrap = ""
        self.n = 0

    def native(self) -> dict[str, float]:
        port = free_ports(1)[0]
        proc = subprocess.Popen([self.server, "--port", str(port), *REDIS_ARGS], cwd=self.tmp,
                                stdout=subprocess.DEVNULL)
        try:
            wait_port("127.0.0.1", port, 30)
            rps = self.loaded("native", {"app": proc.pid}, port)
            _, p50 = benchmark(self.bench, port, self.requests // 4, 1, "set")
            return {"rps": rps, "p50_ms": p50}
        finally:
            proc.kill()
            proc.wait()

    @contextlib.contextmanager
    def pair(self, mode: str, tag: str) -> Iterator[tuple[int, str, Path, Path,
                                                           subprocess.Popen[bytes],
                                                           subprocess.Popen[bytes]]]:
        """Redis under ``mig primary start`` in ``mode`` with a replica following, the
        replica replaying: (port, app, app.toml, folder, primary, replica); both stopped
        after."""
        port = free_ports(1)[0]
        folder = self.tmp / tag
        folder.mkdir()
        app = f"cb{os.getpid()}{tag.replace('-', '')}"
        toml = folder / "app.toml"
        command = json.dumps([self.server, "--port", str(port), *REDIS_ARGS])
        self.write_toml(toml, app, command, mode.split("-")[0], self.threads,
                        signed="-signed" in mode, fetch_ms=mode_number(mode, "fetch"),
                        in_flight=mode_number(mode, "inflight"),
                        env={var: "0" for suffix, var in (("-other", "MIG_SCHED_BATCH"),
                                                          ("-spread", "MIG_PIN"))
                             if suffix in mode} or None)
        env = {**self.env, "MIG_NATIVE_PUMP": "0"} if mode.endswith("-py") else self.env
        self.metrics_port = free_ports(1)[0]
        primary = subprocess.Popen([*MIG, "primary", "start", "--run-dir",
                                    str(folder / "run-p"), "--metrics",
                                    f"127.0.0.1:{self.metrics_port}", str(toml)], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   stdin=subprocess.DEVNULL)
        replica = None
        try:
            wait_port("127.0.0.1", port, 30)
            replica = subprocess.Popen([*MIG, "replica", "follow", str(toml), "--no-promote",
                                        "--member", REPLICA, "--workdir", str(folder / "rep"),
                                        "--run-dir", str(folder / "run-r")], env=self.env,
                                       stdout=subprocess.DEVNULL,
                                       stderr=open(folder / "replica.log", "w"),  # noqa: SIM115
                                       stdin=subprocess.DEVNULL, cwd=folder)
            deadline = time.monotonic() + 60
            while not any(s["health"] == "replaying"
                          for s in statuses(self.bootstrap, app, REPLICA)):
                if time.monotonic() > deadline or replica.poll() is not None:
                    raise RuntimeError(f"{mode}: the replica did not start replaying")
                time.sleep(0.5)
            yield port, app, toml, folder, primary, replica
        finally:
            for proc in (replica, primary):
                if proc is not None:
                    stop_mig(proc, 30)

    def under_mig(self, mode: str) -> dict[str, float]:
        self.n += 1
        with self.pair(mode, f"{mode}-{self.n}") as (port, app, toml, folder, primary,
                                                     replica):
            began = int(time.time() * 1000)
            rps = self.loaded(mode, {"primary": primary.pid, "replica": replica.pid}, port)
            _, p50 = benchmark(self.bench, port, self.requests // 4, 1, "set")
            ended = int(time.time() * 1000)
            time.sleep(1.0)  # its next statuses
            stopped = ""
            if replica.poll() is not None:  # said, and counted: its figures are left out
                said = (folder / "replica.log").read_text().strip().splitlines()[-1:]
                stopped = said[0][:300] if said else f"exit {replica.returncode}"
                print(f"  {mode}: the replica stopped during the run: {stopped}")
            rss = float("nan") if stopped else peak_rss_mb(replica.pid)
            lags = sorted(s["lag_ms"] for s in statuses(self.bootstrap, app, REPLICA)
                          if began <= s["ts_ms"] <= ended + 500)
            redis_cli(port, "SHUTDOWN", "NOSAVE")
            primary.wait(60)
        if stopped:
            lags = []
        out = {"rps": rps, "p50_ms": p50, "rss_mb": rss, "stopped": float(bool(stopped)),
               "lag_p50": lags[len(lags) // 2] if lags else float("nan"),
               "lag_p99": lags[min(len(lags) - 1, int(len(lags) * 0.99))] if lags else
               float("nan"), "lag_max": lags[-1] if lags else float("nan")}
        if mode == "output":
            out.update(self.replay_speed(toml, folder))
        return out

    def write_toml(self, toml: Path, app: str, command: str, mode: str, threads: str = "",
                   signed: bool = False, fetch_ms: int = 0,
                   env: dict[str, str] | None = None, in_flight: int = 0) -> None:
        """The app.toml of Redis under mig (``command``: its JSON list); ``signed``: with
        a keys file, every record signed ([security]); ``fetch_ms``: the replica's
        ``[replica] fetch_coalesce_ms``; ``env``: ``[app] env``; ``in_flight``: the
        clients' ``max.in.flight.requests.per.connection`` ([kafka])."""
        app_keys = f'threads = "{threads}"\n' if threads else ""
        if env:
            app_keys += f"env = {toml_value(env)}\n"
        security = ""
        if signed:
            keys = toml.with_name("keys.txt")
            keys.write_text(f"k1 {os.urandom(32).hex()}\n")
            keys.chmod(0o600)
            security = '[security]\nhmac_keys_file = "keys.txt"\n'
        toml.write_text(
            f'[app]\nname = "{app}"\ncommand = {command}\n{app_keys}'
            f'barrier_mode = "{mode}"\n[checkpoints]\nenabled = false\n'
            f'[failover]\nmigrate_on_stop = false\n'
            f'[replica]\nfetch_coalesce_ms = {fetch_ms}\n'
            f'[kafka]\nbootstrap_servers = "{self.bootstrap}"\n'
            + (f'"max.in.flight.requests.per.connection" = {in_flight}\n' if in_flight else "")
            + security)

    def loaded(self, what: str, roots: dict[str, int], port: int) -> float:
        """The -c 50 load: requests/s, and (the first time for ``what``) where the CPU went."""
        if not self.load:
            return 1.0
        brokers = self.brokers()
        for n, pid in enumerate(brokers, 1):  # "broker", or "broker1".."broker3"
            roots = {**roots, "broker" + (str(n) if len(brokers) > 1 else ""): pid}
        spies = []
        if self.profile is not None and "primary" in roots and what not in self.cpu:
            for role in ("primary", "replica"):
                out = self.profile / f"{what}-{role}-agent.txt"
                spies.append((role, out, subprocess.Popen(
                    [py_spy(), "record", "--pid", str(roots[role]), "--rate", "250", "--gil",
                     "--format", "raw", "--output", str(out), "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
            time.sleep(1.0)  # attached
        before, load_before = cpu_by_process(roots), resource.getrusage(resource.RUSAGE_CHILDREN)
        jit_before = sum(jit_cpu_s(pid) for pid in brokers)
        acks_before = commit_buckets(self.metrics_port) if "primary" in roots else {}
        started = time.monotonic()
        rps = benchmark(self.bench, port, self.requests, 50, TESTS)[0]
        elapsed = time.monotonic() - started
        if acks_before:  # what each batch waited for its acknowledgement (and commits)
            after = commit_buckets(self.metrics_port)
            n = after.get(float("inf"), 0.0) - acks_before.get(float("inf"), 0.0)
            self.acks.setdefault(what, []).append(
                (n, *(quantile(acks_before, after, q) for q in (0.5, 0.9, 0.99))))
        for role, out, spy in spies:  # SIGINT: py-spy writes what it sampled, and ends
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
            print(f"  {what}: {role} agent's CPU under load (py-spy, {out}):", flush=True)
            for line in top_frames(out) if out.exists() else ["no samples written"]:
                print(f"    {line}", flush=True)
        spent = cpu_spent(before, cpu_by_process(roots))
        load = resource.getrusage(resource.RUSAGE_CHILDREN)
        spent["load redis-benchmark"] = (load.ru_utime + load.ru_stime
                                         - load_before.ru_utime - load_before.ru_stime)
        if brokers:  # (of the broker's: still compiling, it was not warm)
            spent["(of it the broker's JIT)"] = sum(jit_cpu_s(pid) for pid in brokers) - jit_before
        self.cpu.setdefault(what, []).append((elapsed, spent))
        return rps

    def brokers(self) -> list[int]:
        """The broker processes' pids (the embedded one, or the cluster's three)."""
        return [int(p.read_text()) for p in sorted([*self.tmp.glob("home/broker/**/kafka.pid"),
                                                   *self.tmp.glob("cluster/node*/kafka.pid")])]

    def warm_up(self, seconds: float) -> list[tuple[float, float]]:
        """Load the broker through a primary in output mode, a replica following, until
        the brokers' JIT compilers are done (benchlib.warm_rounds: at least ``seconds`` of
        load, at most WARM_MAX_S). (req/s, the compilers' CPU over the round's time) of
        each round."""
        with self.pair("output", "warm") as (port, _app, _toml, _folder, primary, _replica):
            rounds = warm_rounds(
                lambda: benchmark(self.bench, port, self.requests, 50, TESTS)[0],
                self.brokers, seconds, WARM_MAX_S)
            redis_cli(port, "SHUTDOWN", "NOSAVE")
            primary.wait(60)
        return rounds

    def idle_cpu(self) -> float:
        """Percent of a core an idle primary's agent takes (its app: sleep 60), over 10 s."""
        folder = self.tmp / "idle"
        folder.mkdir()
        (folder / "app.toml").write_text(
            f'[app]\nname = "cbidle{os.getpid()}"\ncommand = ["sleep", "60"]\n'
            f'[checkpoints]\nenabled = false\n[kafka]\nbootstrap_servers = "{self.bootstrap}"\n')
        proc = subprocess.Popen([*MIG, "primary", "start", str(folder / "app.toml")],
                                env=self.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        try:
            time.sleep(8)  # started, and the control topic read

            def cpu_s() -> float:
                return (cpu_ticks(Path(f"/proc/{proc.pid}/stat").read_text())
                        / os.sysconf("SC_CLK_TCK"))

            before = cpu_s()
            time.sleep(10)
            return (cpu_s() - before) / 10 * 100
        finally:
            stop_mig(proc, 30)

    def replay_speed(self, toml: Path, folder: Path) -> dict[str, float]:
        """A fresh replica replaying the whole (ended) log: calls/s."""
        work = folder / "fresh"
        work.mkdir()
        run = subprocess.run([*MIG, "replica", "follow", str(toml), "--no-promote",
                              "--from-start", "--member", "bench-fresh", "--workdir",
                              str(work / "app"), "--run-dir", str(work / "run")],
                             env=self.env, capture_output=True, text=True, timeout=900,
                             cwd=work)
        ended = time.time()
        started = None
        for line in run.stderr.splitlines():
            if '"mig.replayer.started"' in line:
                stamp = json.loads(line)["timestamp"].replace("Z", "+00:00")
                started = dt.datetime.fromisoformat(stamp).timestamp()
        calls = re.search(r"replayed (\d+) calls", run.stdout)
        if run.returncode != 0 or started is None or calls is None:
            print(f"  fresh replica FAILED: {run.stderr.strip().splitlines()[-1:]}")
            return {}
        return {"replay_calls": float(calls[1]), "replay_s": ended - started}


def spread(values: list[float], fmt: str = "{:,.0f}") -> str:
    values = [v for v in values if v == v]
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return fmt.format(lo) if lo == hi else f"{fmt.format(lo)}..{fmt.format(hi)}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--modes", default="output,async",
                    help="of output,async (both); output-py, async-py: the same with the"
                         " primary's Python path instead of its native pump; a -signed"
                         " before either suffix (output-signed, output-signed-py): every"
                         " record signed ([security] keys); -fetchN: the replica's"
                         " [replica] fetch_coalesce_ms = N (output-fetch2); -inflightN:"
                         " [kafka] max.in.flight.requests.per.connection = N; -other: a"
                         " serialized Redis left under SCHED_OTHER (MIG_SCHED_BATCH=0);"
                         " -spread: not pinned to one CPU (MIG_PIN=0)")
    ap.add_argument("--no-load", action="store_true", help="only the -c 1 latency")
    ap.add_argument("--cluster", action="store_true",
                    help="three brokers on this machine (RF 3, min.insync 2), not the embedded one")
    ap.add_argument("--warm-up", type=float, default=30.0,
                    help="seconds of load at least before the measured runs (0: none)")
    ap.add_argument("--threads", default="", choices=["", "serialized", "parallel"],
                    help="the app's [app] threads (default: mig's default)")
    ap.add_argument("--profile", type=Path, default=None, metavar="DIR",
                    help="sample both agents with py-spy during each mode's first -c 50"
                         " load; their stacks in DIR, the top functions printed")
    args = ap.parse_args()
    modes = args.modes.split(",")
    print(machine())
    if args.profile is not None:
        py_spy()
        args.profile.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="commit-bench-"))
    bench = Bench(tmp, args.requests, load=not args.no_load, threads=args.threads,
                  profile=args.profile)
    rows: dict[str, list[dict[str, float]]] = {"native": [], **{mode: [] for mode in modes}}
    cluster = None
    if args.cluster:  # what a production user gets: three brokers, RF 3, min.insync 2
        from tests.cluster import LocalCluster

        cluster = LocalCluster(tmp / "cluster")
        cluster.start()
        bench.bootstrap = cluster.bootstrap
        print(f"3-broker cluster up at {bench.bootstrap}", flush=True)
    else:
        bench.bootstrap = f"127.0.0.1:{broker_up(MIG, bench.env)}"
    try:
        idle = bench.idle_cpu()
        if args.warm_up > 0:
            warm = bench.warm_up(args.warm_up)
            print(f"broker warm-up, output mode with a replica, {TESTS}: req/s (the JIT"
                  " compilers' share of a core) per round: "
                  + " ".join(f"{r:,.0f} ({j:.0%})" for r, j in warm), flush=True)
        for _ in range(args.runs):
            rows["native"].append(bench.native())
            for mode in modes:
                rows[mode].append(bench.under_mig(mode))
    finally:
        if cluster is not None:
            cluster.stop()
        else:
            broker_down(MIG, bench.env)
        shutil.rmtree(tmp, ignore_errors=True)
    native = rows["native"]
    print(f"\nRedis under redis-benchmark -n {args.requests} -c 50 -t {TESTS}, a replica"
          f" following; -c 1 -t set for p50; {args.runs} runs (min..max);"
          f" threads {args.threads or 'by default'}")
    print(f"  {'':8} {'req/s':>16} {'x native':>12} {'p50 ms (-c 1)':>14} {'added':>12}"
          f" {'lag p50/p99/max ms':>22} {'replica RSS MB':>15}")
    ratios: dict[str, list[float]] = {}
    for mode, runs in rows.items():
        ratios[mode] = [r["rps"] / n["rps"] for r, n in zip(runs, native, strict=True)]
        added = [r["p50_ms"] - n["p50_ms"] for r, n in zip(runs, native, strict=True)]
        lag = (f"{spread([r.get('lag_p50', float('nan')) for r in runs])}/"
               f"{spread([r.get('lag_p99', float('nan')) for r in runs])}/"
               f"{spread([r.get('lag_max', float('nan')) for r in runs])}")
        mine = mode != "native"
        rss = spread([r.get("rss_mb", float("nan")) for r in runs]) if mine else ""
        print(f"  {mode:8} {spread([r['rps'] for r in runs]):>16}"
              f" {spread(ratios[mode], '{:.2f}'):>12}"
              f" {spread([r['p50_ms'] for r in runs], '{:.3f}'):>14}"
              f" {spread(added, '{:+.3f}') if mine else '':>12}"
              f" {lag if mine else '':>22} {rss:>15}")
    speeds = [r["replay_calls"] / r["replay_s"] for r in rows.get("output", []) if "replay_s" in r]
    calls = [r["replay_calls"] for r in rows.get("output", []) if "replay_calls" in r]
    for mode in modes:
        lost = sum(int(r["stopped"]) for r in rows[mode])
        if lost:
            print(f"  {mode}: the replica stopped (a divergence) in {lost} of {len(rows[mode])}"
                  " runs; its lag and RSS are from the others")
    cores = len(os.sched_getaffinity(0))
    for what, taken in bench.cpu.items():
        elapsed, spent = taken[0]
        parts = ", ".join(f"{k} {v:.2f}" for k, v in
                          sorted(spent.items(), key=lambda kv: -kv[1]) if v >= 0.05)
        print(f"  CPU s in the {what} load ({elapsed:.2f} s x {cores} cores ="
              f" {elapsed * cores:.2f}): {parts}; total"
              f" {sum(v for k, v in spent.items() if not k.startswith('(')):.2f}")
    for what, acks in bench.acks.items():
        print(f"  acknowledgements in the {what} load (the primary's mig_commit_seconds, a"
              f" batch's from its produce, and the transactions' commits): "
              + "; ".join(f"{n:,.0f}, p50 {p50 * 1000:.2f} p90 {p90 * 1000:.2f} p99"
                          f" {p99 * 1000:.2f} ms" for n, p50, p90, p99 in acks))
    print(f"\nan idle primary's agent (its app: sleep 60): {idle:.1f}% of a core")
    print(f"\nfresh replica replaying the output-mode log ({spread(calls)} calls):"
          f" {spread(speeds)} calls/s")
    added = [r["p50_ms"] - n["p50_ms"]
             for r, n in zip(rows.get("output", []), native, strict=False)]
    lag99 = [r["lag_p99"] for mode in modes for r in rows[mode] if not r["stopped"]]
    rss = [r["rss_mb"] for mode in modes for r in rows[mode] if not r["stopped"]]
    targets = [  # (what, measured in this run, met)
        ("output mode with a hot replica >= 0.5x native", bench.load and bool(added),
         bench.load and bool(added) and min(ratios["output"]) >= 0.5),
        ("async mode with a hot replica >= 0.9x native", bench.load and "async" in ratios,
         bench.load and "async" in ratios and min(ratios["async"]) >= 0.9),
        ("added p50 at -c 1, output mode <= +0.5 ms", bool(added),
         bool(added) and max(added) <= 0.5),
        ("fresh replica >= 500,000 calls/s", bool(speeds),
         bool(speeds) and min(speeds) >= 500_000),
        ("replica lag p99 <= 20 ms", bool(lag99), bool(lag99) and max(lag99) <= 20),
        ("replica RSS <= 64 MB", bool(rss), bool(rss) and max(rss) <= 64),
    ]
    print()
    for what, measured, ok in targets:
        print(f"target: {what}: {'met' if ok else 'MISSED' if measured else 'not measured'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
