"""Threads that wait for each other by spinning, measured side by side in one run.

Serialized threads preempt a holder that spins where its state recurs
(docs/threads.md, "Preempting a spin"); each preemption is a breakpoint, three stops and
two hashes of the process's private memory. This prints what that costs:

1. **tests/apps/spinhandoff** (two threads passing work back and forth through an atomic
   flag, each spinning while it waits), ROUNDS hand-overs: seconds natively on both CPUs,
   natively on one CPU (``taskset -c 0``: rr's ceiling, one thread at a time with the
   kernel's time slices), and under ``mig primary start`` with threads serialized, in
   async and output mode (no replica); preemptions per second from the log.
2. **Redis 7 (Debian) with ``--io-threads 2 --io-threads-do-reads yes``** under
   ``redis-benchmark -c 8 -t set,get,incr``: requests per second natively, natively on
   one CPU, and under mig with threads serialized and in parallel, async and output.
   (Parallel mode records such a run, but a replica of it diverges: docs/threads.md.)

RUNS rounds, every configuration once per round, the spread min..max. Nothing asserts on
timing. Run: .venv/bin/python bench/spin_bench.py [--runs N] [--requests N] [--rounds N]
[--unbatched]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from benchlib import broker_down, broker_up, machine  # noqa: E402 - a sibling
from capture_bench import IO_THREADS, MIG, need, run_mig, run_native, spread  # noqa: E402

SPIN = ROOT / "tests" / "apps" / "build" / "spinhandoff"


def spin_native(rounds: int, cpus: str | None) -> float:
    pin = ["taskset", "-c", cpus] if cpus else []
    t0 = time.monotonic()
    subprocess.run([*pin, str(SPIN), str(rounds)], check=True, capture_output=True,
                   timeout=600)
    return time.monotonic() - t0


def spin_mig(rounds: int, tmp: Path, bootstrap: str, env: dict[str, str], barrier: str,
             n: int) -> tuple[float, int]:
    """Seconds under mig primary start, and the preemptions its log holds."""
    folder = tmp / f"spin-{barrier}-{n}"
    folder.mkdir()
    name = f"spin{os.getpid()}{barrier[0]}{n}"
    app = folder / "app.toml"
    app.write_text(f'[app]\nname = "{name}"\ncommand = ["{SPIN}", "{rounds}"]\n'
                   f'barrier_mode = "{barrier}"\n[kafka]\nbootstrap_servers = "{bootstrap}"\n')
    t0 = time.monotonic()
    subprocess.run([*MIG, "primary", "start", str(app)], env=env, check=True,
                   capture_output=True, timeout=600)
    seconds = time.monotonic() - t0
    tail = subprocess.run([*MIG, "log", "tail", "-t", "calls", "-c", str(app), "--json", name],
                          env=env, capture_output=True, text=True, timeout=120).stdout
    preempted = sum(1 for line in tail.splitlines()
                    for call in (json.loads(line).get("record") or {}).get("calls", [])
                    if call["kind"] == "SWITCH" and call["args"][2] == 3)
    return seconds, preempted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--requests", type=int, default=2000, help="per redis-benchmark test")
    ap.add_argument("--rounds", type=int, default=500, help="spinhandoff hand-overs")
    ap.add_argument("--unbatched", action="store_true",
                    help="Redis: also serialized with MIG_SCHED_BATCH=0 (its threads under"
                         " SCHED_OTHER)")
    args = ap.parse_args()
    server, bench = need("redis-server", "redis-server"), need("redis-benchmark", "redis-tools")
    subprocess.run(["make", "-s", "-C", str(ROOT / "tests" / "apps")], check=True)
    print(machine())
    tmp = Path(tempfile.mkdtemp(prefix="spin-bench-"))
    env = {**os.environ, "MIG_HOME": str(tmp / "home")}
    port = broker_up(MIG, env)
    bootstrap = f"127.0.0.1:{port}"
    spin: dict[str, list[float]] = {}
    preempts: dict[str, list[int]] = {}
    redis: dict[str, list[float]] = {}
    try:
        for r in range(args.runs):
            spin.setdefault("native", []).append(spin_native(args.rounds, None))
            spin.setdefault("native, one CPU", []).append(spin_native(args.rounds, "0"))
            for barrier in ("async", "output"):
                seconds, count = spin_mig(args.rounds, tmp, bootstrap, env, barrier, r)
                spin.setdefault(f"mig serialized {barrier}", []).append(seconds)
                preempts.setdefault(f"mig serialized {barrier}", []).append(count)
            redis.setdefault("native", []).append(
                run_native(server, bench, args.requests, tmp, IO_THREADS, 8))
            redis.setdefault("native, one CPU", []).append(
                run_native(server, bench, args.requests, tmp, IO_THREADS, 8, "0"))
            for threads in ("serialized", "parallel"):
                for barrier in ("async", "output"):
                    rate, _, _ = run_mig(server, bench, args.requests, tmp, bootstrap, env,
                                         "trap", threads, barrier, r, IO_THREADS, 8)
                    redis.setdefault(f"mig {threads} {barrier}", []).append(rate)
            for barrier in ("async", "output") if args.unbatched else ():
                rate, _, _ = run_mig(server, bench, args.requests, tmp, bootstrap, env, "trap",
                                     "serialized", barrier, r, IO_THREADS, 8,
                                     {"MIG_SCHED_BATCH": "0"})
                redis.setdefault(f"mig serialized unbatched {barrier}", []).append(rate)
    finally:
        broker_down(MIG, env)
    print(f"\nspinhandoff, {args.rounds} hand-overs, {args.runs} runs (min..max)")
    print(f"  {'configuration':<26} {'seconds':>14} {'x native':>12} {'x one CPU':>12}"
          f" {'preemptions/s':>16}")
    for key, rows in spin.items():
        slow = [x / b for x, b in zip(rows, spin["native"], strict=True)]
        slow1 = [x / b for x, b in zip(rows, spin["native, one CPU"], strict=True)]
        per_s = [c / x for c, x in zip(preempts.get(key, []), rows, strict=False)]
        secs = f"{min(rows):.2f}..{max(rows):.2f}"
        print(f"  {key:<26} {secs:>14} {min(slow):.1f}..{max(slow):.1f}".ljust(55)
              + f" {min(slow1):.2f}..{max(slow1):.2f}".rjust(13)
              + (f" {spread(per_s):>16}" if per_s else ""))
    print(f"\nRedis with --io-threads 2 --io-threads-do-reads yes, redis-benchmark"
          f" -n {args.requests} -c 8 -t set,get,incr, {args.runs} runs (min..max)")
    print(f"  {'configuration':<26} {'req/s':>16} {'x native':>12} {'x one CPU':>12}")
    for key, rows in redis.items():
        ratio = [x / b for x, b in zip(rows, redis["native"], strict=True)]
        ratio1 = [x / b for x, b in zip(rows, redis["native, one CPU"], strict=True)]
        print(f"  {key:<26} {spread(rows):>16} {min(ratio):.3f}..{max(ratio):.3f}".ljust(57)
              + f" {min(ratio1):.3f}..{max(ratio1):.3f}".rjust(13))


if __name__ == "__main__":
    main()
