"""CPython's threaded http.server (or Node.js) under mig, measured side by side in one run.

Debian's ``python3 -m http.server -p HTTP/1.1`` (ThreadingHTTPServer: a thread per
connection, the threads handing the GIL to each other), or with ``--server node``
Node.js on tests/apps/node_http.js (its event loop, and libuv's thread pool reading the
page on every request), serving a small file to bench/progs/httpload.c (CONNS keep-alive
connections, one request in flight on each; it acknowledges at once, as http.server
writes headers and body apart): requests per second, p50, and the server's voluntary
context switches per request (its threads blocking: what handing work between threads
costs), natively on both CPUs, natively on one CPU (``taskset -c 0``: rr's ceiling, one
thread at a time), under the shim alone with threads serialized and in parallel (no agent
and no broker: what serializing costs apart from the CPU recording takes), and under
``mig primary start`` with threads serialized (the default:
the run token passes at calls, a replica follows) and in parallel (lock order only:
CPython's GIL requests are not ordered, a replica diverges: docs/threads.md), in async
and output mode, with no replica.

First the broker is warmed (the server under mig in output mode, loaded until the broker's
JIT compilers are done). Then RUNS rounds, every configuration once per round, the spread
min..max; the ratios are to
native and to one CPU in the same round. Nothing asserts on timing. Run:
.venv/bin/python bench/httpserver_bench.py [--runs N] [--seconds S] [--conns N]
    [--server python|node] [--unpatched] [--unbatched] [--slice-us N[,N...]]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from benchlib import (  # noqa: E402
    broker_down,
    broker_up,
    machine,
    shim_alone,
    sleeps_by_process,
    warm_rounds,
)
from capture_bench import MIG, need, spread, start_server, stop_server  # noqa: E402

from mig.broker.node import free_ports  # noqa: E402
from tests.apps.client import wait_port  # noqa: E402

PAGE = "index.html"
# The broker's warm-up before the rounds (benchlib.warm_rounds): at least WARM_MIN_S and at
# most WARM_MAX_S of load. On a cold broker CPython's output-mode rate was half of a warm
# one's (1,112 against 2,106 to 2,337 req/s, the same server under load all along).
WARM_MIN_S, WARM_MAX_S = 10.0, 180.0
DEBIAN_PYTHON = "/usr/bin/python3"


def load(exe: Path, port: int, conns: int, seconds: float) -> tuple[float, float, int]:
    """Requests per second, p50 (us) and requests of GET /index.html; no error allowed."""
    out = subprocess.run([str(exe), "127.0.0.1", str(port), f"/{PAGE}", str(conns),
                          str(seconds), "0.5"], capture_output=True, text=True,
                         timeout=seconds + 60, check=True).stdout
    figures = dict(re.findall(r"(\w+)=([\d.-]+)", out))
    assert float(figures["errors"]) == 0, out
    return float(figures["rps"]), float(figures["p50_us"]), int(figures["requests"])


def command_line(server: str, port: int, www: Path) -> list[str]:
    """The server's argv: CPython's http.server, or Node.js on tests/apps/node_http.js
    (its event loop, V8's platform workers and libuv's thread pool, which reads the page
    on every request)."""
    if server == "node":
        return [need("node", "nodejs"), str(ROOT / "tests" / "apps" / "node_http.js"),
                str(port), "127.0.0.1", str(www)]
    # Debian's, as the tests run it (tests/member/test_programs.py), not another build
    # earlier on PATH
    if not Path(DEBIAN_PYTHON).exists():
        sys.exit(f"{DEBIAN_PYTHON} is not installed: apt-get install -y python3")
    return [DEBIAN_PYTHON, "-m", "http.server", str(port), "--bind",
            "127.0.0.1", "--directory", str(www), "-p", "HTTP/1.1"]


Mig = tuple[str, dict[str, str], str, str, dict[str, str]]


def serve(tmp: Path, tag: str, exe: Path, conns: int, seconds: float, cpus: str | None,
          mig: Mig | None,
          server: str = "python", alone: str | None = None) -> tuple[float, float, float]:
    """One configuration: natively (mig None, pinned to ``cpus`` if given; under the shim
    alone, with threads ``alone``, if given) or under mig primary start (bootstrap, env,
    threads, barrier, the app's env): requests per second, p50 (us), and how often the
    server's threads blocked per request (voluntary context switches: the cost of handing
    work between threads, which serialized threads add to)."""
    port = free_ports(1)[0]
    folder = tmp / f"http-{tag}"
    www = folder / "www"
    www.mkdir(parents=True)
    (www / PAGE).write_text("<html><body>" + "mig " * 256 + "</body></html>\n")
    command = command_line(server, port, www)
    keys = None
    if mig is not None:
        app: dict[str, str | dict[str, str]] = {"barrier_mode": mig[3], "threads": mig[2]}
        if mig[4]:
            app["env"] = mig[4]
        keys = (mig[0], mig[1], app)
    with shim_alone(alone) if alone else contextlib.nullcontext() as env:
        proc = start_server(command, folder, f"http{os.getpid()}{tag}", keys, cpus, env)
        try:
            wait_port("127.0.0.1", port, 60)
            comm = Path(command[0]).name
            roots = {"server": proc.pid}
            before = sleeps_by_process(roots)
            rate, p50, requests = load(exe, port, conns, seconds)
            after = sleeps_by_process(roots)
            slept = sum(v - before.get(k, 0.0) for k, v in after.items() if k.endswith(comm))
            return rate, p50, slept / max(requests, 1)
        finally:
            stop_server(proc, mig is None)


def warm_up(tmp: Path, exe: Path, conns: int, bootstrap: str, env: dict[str, str],
            server: str) -> list[tuple[float, float]]:
    """Load the broker through the server under ``mig primary start`` (threads serialized,
    output mode) until its JIT compilers are done; (req/s, the compilers' share of a
    core) of each 2 s round."""
    broker = int(next(Path(env["MIG_HOME"]).glob("broker/**/kafka.pid")).read_text())
    port = free_ports(1)[0]
    folder = tmp / "http-warm"
    www = folder / "www"
    www.mkdir(parents=True)
    (www / PAGE).write_text("<html><body>" + "mig " * 256 + "</body></html>\n")
    proc = start_server(command_line(server, port, www), folder, f"http{os.getpid()}warm",
                        (bootstrap, env, {"barrier_mode": "output", "threads": "serialized"}))
    try:
        wait_port("127.0.0.1", port, 60)
        return warm_rounds(lambda: load(exe, port, conns, 2.0)[0], lambda: [broker],
                           WARM_MIN_S, WARM_MAX_S)
    finally:
        stop_server(proc, False)


def set_up(prefix: str) -> tuple[Path, Path, dict[str, str]]:
    """The machine's line printed; a new temporary folder, httpload built in it, and the
    environment with a MIG_HOME there."""
    print(machine())
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    exe = tmp / "httpload"
    subprocess.run(["gcc", "-O2", "-o", exe, ROOT / "bench" / "progs" / "httpload.c"],
                   check=True)
    return tmp, exe, {**os.environ, "MIG_HOME": str(tmp / "home")}


def microseconds(text: str) -> list[int]:
    """--slice-us: comma-separated whole microseconds."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not whole microseconds: {text!r}") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"a slice below 0: {text!r}")
    return values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=4.0, help="load per configuration")
    ap.add_argument("--conns", type=int, default=8, help="keep-alive connections")
    ap.add_argument("--server", choices=("python", "node"), default="python",
                    help="python3 -m http.server, or Node.js on tests/apps/node_http.js")
    ap.add_argument("--unpatched", action="store_true",
                    help="also serialized async with MIG_PATCH=0: no site of libc patched,"
                         " every system call libc makes inside itself a trap")
    ap.add_argument("--unbatched", action="store_true",
                    help="also serialized async and output with MIG_SCHED_BATCH=0: the"
                         " app's threads under SCHED_OTHER, a woken thread preempting the"
                         " one that woke it")
    ap.add_argument("--slice-us", default=[], type=microseconds,
                    help="also serialized async with these slices of the run token (comma"
                         " separated, microseconds; MIG_SLICE_US in [app] env)")
    args = ap.parse_args()
    slices: list[int] = args.slice_us
    tmp, exe, env = set_up("httpserver-bench-")
    port = broker_up(MIG, env)
    bootstrap = f"127.0.0.1:{port}"
    rates: dict[str, list[float]] = {}
    p50s: dict[str, list[float]] = {}
    sleeps: dict[str, list[float]] = {}
    try:
        warm = warm_up(tmp, exe, args.conns, bootstrap, env, args.server)
        print("broker warm-up, serialized output mode: req/s (the JIT compilers' share of a"
              " core) per round: " + " ".join(f"{r:,.0f} ({j:.0%})" for r, j in warm),
              flush=True)
        for r in range(args.runs):
            runs: list[tuple[str, str | None, Mig | None]]
            runs = [("native", None, None), ("native, one CPU", "0", None)]
            # no agent and no broker: what serializing costs apart from recording's CPU
            runs += [(f"shim alone, {threads}", None, None)
                     for threads in ("serialized", "parallel")]
            runs += [(f"mig {threads} {barrier}", None,
                      (bootstrap, env, threads, barrier, {}))
                     for threads in ("serialized", "parallel")
                     for barrier in ("async", "output")]
            extra: list[tuple[str, str | None, Mig | None]] = []
            if args.unpatched:  # every trapped call of libc's a signal (mig_patch.c)
                extra.append(("mig serialized unpatched async", None,
                              (bootstrap, env, "serialized", "async", {"MIG_PATCH": "0"})))
            if args.unbatched:  # wake-up preemption back (mig_sched.c, SCHED_BATCH)
                extra += [(f"mig serialized unbatched {barrier}", None,
                           (bootstrap, env, "serialized", barrier, {"MIG_SCHED_BATCH": "0"}))
                          for barrier in ("async", "output")]
            extra += [(f"mig serialized async {us} us", None,
                       (bootstrap, env, "serialized", "async", {"MIG_SLICE_US": str(us)}))
                      for us in slices]
            runs[5:5] = extra
            for i, (key, cpus, mig) in enumerate(runs):
                print(f"round {r + 1}: {key}", file=sys.stderr, flush=True)
                alone = key.split(", ")[1] if key.startswith("shim alone") else None
                rate, p50, slept = serve(tmp, f"{r}{i}", exe, args.conns, args.seconds, cpus,
                                         mig, args.server, alone)
                rates.setdefault(key, []).append(rate)
                p50s.setdefault(key, []).append(p50)
                sleeps.setdefault(key, []).append(slept)
    finally:
        broker_down(MIG, env)
    what = ("node tests/apps/node_http.js (event loop, libuv thread pool)"
            if args.server == "node" else
            "python3 -m http.server -p HTTP/1.1 (a thread per connection)")
    print(f"\n{what}, httpload"
          f" {args.conns} keep-alive connections, {args.seconds:g} s, {args.runs} runs"
          " (min..max)")
    print(f"  {'configuration':<30} {'req/s':>14} {'p50 us':>12} {'x native':>12}"
          f" {'x one CPU':>12} {'sleeps/req':>12}")
    for key, rows in rates.items():
        ratio = [x / b for x, b in zip(rows, rates["native"], strict=True)]
        ratio1 = [x / b for x, b in zip(rows, rates["native, one CPU"], strict=True)]
        slept = f"{min(sleeps[key]):.1f}..{max(sleeps[key]):.1f}"
        print(f"  {key:<30} {spread(rows):>14} {spread(p50s[key]):>12}"
              f" {min(ratio):.2f}..{max(ratio):.2f}".ljust(72)
              + f" {min(ratio1):.2f}..{max(ratio1):.2f}".rjust(13) + f" {slept:>12}")


if __name__ == "__main__":
    main()
