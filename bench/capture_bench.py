"""Complete capture, measured side by side in one run against one embedded broker.

1. **Trap cost.** bench/progs/trapcost.c: ns per call of libc's getuid() (a system call
   the shim does not wrap: under complete capture each one is trapped and run by the
   shim's SIGSYS handler) and of getpid() (wrapped: the fast path, one record, no trap),
   natively and under the shim alone (record mode, no agent, a ring big enough for every
   record). The difference of the getuid figures is what one trap costs; with threads
   serialized the shim patches getuid's site of libc at its first trap (shim/src/mig_patch.c),
   and the third figure is what a call at a patched site costs.
2. **Redis 7 (Debian, its own defaults) under redis-benchmark -c 50** (-t set,get,incr,
   -r 100000 random keys): native, then under ``mig primary start`` with ``capture =
   "trap"`` and threads serialized (the defaults), ``capture = "trap"`` with threads in
   parallel, and ``capture = "symbols"`` (the symbol wrappers alone, threads in parallel,
   as before complete capture), each in async and output mode, no replica. Requests per
   second, the ratio to native, and the system calls trapped during the run (the shim
   counts them: ``mig primary start`` prints the total), per second and per request: the
   hot calls must go through the wrappers, not the trap.
3. **nginx 1.22 (Debian), a master and 2 workers** (the configuration of
   tests/member/test_programs.py, ``sendfile on``) under bench/progs/httpload.c: 16 keep-alive
   connections of ``GET /ok`` (a ``return 200`` location) and, separately, of
   ``GET /index.html`` (a static file, sent with sendfile), natively and under ``mig
   primary start`` with ``capture = "trap"`` and ``"symbols"``, in async and output mode.

RUNS rounds, every configuration once per round (interleaved), the spread is min..max.
Nothing asserts on timing. Run: .venv/bin/python bench/capture_bench.py [--runs N]
[--requests N] (about 2 minutes with the defaults)
"""

from __future__ import annotations

import argparse
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
from benchlib import broker_down, broker_up, machine, toml_value  # noqa: E402 - a sibling

from mig.broker.node import free_ports  # noqa: E402
from tests.apps.client import wait_port  # noqa: E402
from tests.harness import stop_mig  # noqa: E402

MIG = [sys.executable, "-m", "mig", "--log-format", "json"]
# Redis with I/O threads that take their work through atomics (spin_bench, threads_bench)
IO_THREADS = ("--io-threads", "2", "--io-threads-do-reads", "yes")


def need(program: str, package: str) -> str:
    path = shutil.which(program)
    if not path:
        sys.exit(f"{program} is not installed: apt-get install -y {package}")
    return path


def trap_cost(tmp: Path) -> dict[str, dict[str, float]]:
    exe = tmp / "trapcost"
    subprocess.run(["gcc", "-O2", "-o", exe, ROOT / "bench" / "progs" / "trapcost.c"],
                   check=True)
    native = json.loads(subprocess.run([exe, "200000"], capture_output=True, text=True,
                                       check=True).stdout)
    run = tmp / "run-trapcost"
    run.mkdir()
    env = {**os.environ, "LD_PRELOAD": str(ROOT / "shim" / "build" / "libmigshim.so"),
           "MIG_MODE": "record", "MIG_RUN_DIR": str(run), "MIG_BARRIER": "async",
           "MIG_RING_BYTES": str(64 << 20)}
    shim = json.loads(subprocess.run([exe, "200000"], capture_output=True, text=True,
                                     env={**env, "MIG_PATCH": "0"}, check=True).stdout)
    # a process of one thread with threads serialized patches getuid's site of libc at its
    # first trap (shim/src/mig_patch.c): the calls after it go through the stub
    (run / "patched").mkdir()
    patched = json.loads(subprocess.run(
        [exe, "200000"], capture_output=True, text=True, check=True,
        env={**env, "MIG_RUN_DIR": str(run / "patched"), "MIG_THREADS": "serialized"}).stdout)
    return {"native": native, "shim": shim, "patched": patched}


def redis_bench(bench: str, port: int, requests: int, clients: int = 50) -> float:
    out = subprocess.run([bench, "-p", str(port), "-n", str(requests), "-c", str(clients), "-t",
                          "set,get,incr", "-r", "100000", "-q"], capture_output=True,
                         text=True, timeout=600, check=True).stdout
    rates = [float(m) for m in re.findall(r"([0-9.]+) requests per second", out)]
    assert len(rates) == 3, out
    return sum(rates) / len(rates)


def run_native(server: str, bench: str, requests: int, tmp: Path, extra: tuple[str, ...] = (),
               clients: int = 50, cpus: str | None = None,
               env: dict[str, str] | None = None) -> float:
    """Redis natively (on the CPUs ``cpus`` names, with taskset, if given; with ``env`` if
    given: benchlib.shim_alone's)."""
    port = free_ports(1)[0]
    pin = ["taskset", "-c", cpus] if cpus else []
    proc = subprocess.Popen([*pin, server, "--port", str(port), *extra], cwd=tmp,
                            stdout=subprocess.DEVNULL, env=env)
    try:
        wait_port("127.0.0.1", port, 30)
        return redis_bench(bench, port, requests, clients)
    finally:
        proc.kill()
        proc.wait()


def run_mig(server: str, bench: str, requests: int, tmp: Path, bootstrap: str,
            env: dict[str, str], capture: str, threads: str, barrier: str,
            n: int, extra: tuple[str, ...] = (), clients: int = 50,
            app_env: dict[str, str] | None = None) -> tuple[float, int, float]:
    port = free_ports(1)[0]
    tag = ("x" if extra else "") + ("e" if app_env else "")
    env_line = f"env = {toml_value(app_env)}\n" if app_env else ""
    folder = tmp / f"{capture}-{threads}-{barrier}-{n}{tag}"
    folder.mkdir()
    name = f"cap{os.getpid()}{capture[0]}{threads[0]}{barrier[0]}{n}{tag}"
    command = ", ".join(f'"{part}"' for part in (server, "--port", str(port), *extra))
    (folder / "app.toml").write_text(
        f'[app]\nname = "{name}"\ncommand = [{command}]\n'
        f'barrier_mode = "{barrier}"\ncapture = "{capture}"\nthreads = "{threads}"\n'
        f'{env_line}[kafka]\nbootstrap_servers = "{bootstrap}"\n')
    proc = subprocess.Popen([*MIG, "primary", "start", str(folder / "app.toml")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        wait_port("127.0.0.1", port, 30)
        started = time.monotonic()
        rate = redis_bench(bench, port, requests, clients)
        seconds = time.monotonic() - started
    finally:
        stop_mig(proc, 60)
    out = proc.stdout.read() if proc.stdout else ""
    found = re.search(r"(\d+) trapped", out)
    return rate, int(found[1]) if found else -1, seconds


def nginx_folder(tmp: Path, tag: str, port: int) -> Path:
    from tests.deploy import NGINX_CONF, NGINX_INDEX

    folder = tmp / f"nginx-{tag}"
    root = folder / "www"
    root.mkdir(parents=True)
    (root / "index.html").write_text(NGINX_INDEX)
    (folder / "nginx.conf").write_text(NGINX_CONF.format(port=port, root=root))
    return folder


def http_load(exe: Path, port: int, path: str, seconds: float) -> float:
    out = subprocess.run([str(exe), "127.0.0.1", str(port), path, "16", str(seconds), "0.5"],
                         capture_output=True, text=True, timeout=seconds + 60,
                         check=True).stdout
    figures = dict(re.findall(r"(\w+)=([\d.-]+)", out))
    assert float(figures["errors"]) == 0, out
    return float(figures["rps"])


def start_server(command: list[str], folder: Path, name: str,
                 mig: tuple[str, dict[str, str], dict[str, str | dict[str, str]]] | None,
                 cpus: str | None = None,
                 env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A server natively in ``folder`` (mig None; on the CPUs ``cpus`` names, with
    taskset, if given; with ``env`` if given) or under mig primary start (mig: bootstrap,
    env, and the [app] keys to set beside name and command, in folder/app.toml)."""
    if mig is None:
        pin = ["taskset", "-c", cpus] if cpus else []
        return subprocess.Popen([*pin, *command], cwd=folder, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env)
    bootstrap, env, keys = mig
    extra = "".join(f'{key} = {toml_value(value)}\n' for key, value in keys.items())
    (folder / "app.toml").write_text(
        f'[app]\nname = "{name}"\ncommand = {json.dumps(command)}\n{extra}'
        f'[kafka]\nbootstrap_servers = "{bootstrap}"\n')
    return subprocess.Popen([*MIG, "primary", "start", str(folder / "app.toml")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)


def stop_server(proc: subprocess.Popen[bytes], native: bool) -> None:
    if native:
        proc.terminate()
        proc.wait(10)
    else:
        stop_mig(proc, 60)


def run_nginx(nginx: str, exe: Path, tmp: Path, tag: str, seconds: float,
              mig: tuple[str, dict[str, str], str, str] | None) -> dict[str, float]:
    """GET /ok and GET /index.html rates, natively (mig None) or under mig primary start
    (bootstrap, env, capture, barrier)."""
    port = free_ports(1)[0]
    folder = nginx_folder(tmp, tag, port)
    command = [nginx, "-p", "./", "-c", str(folder / "nginx.conf")]
    keys = None if mig is None else (
        mig[0], mig[1], {"barrier_mode": mig[3], "capture": mig[2]})
    proc = start_server(command, folder, f"ngx{os.getpid()}{tag}", keys)
    try:
        wait_port("127.0.0.1", port, 30)
        return {path: http_load(exe, port, path, seconds) for path in ("/ok", "/index.html")}
    finally:
        stop_server(proc, mig is None)


def spread(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:,.0f}" if lo == hi else f"{lo:,.0f}..{hi:,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--seconds", type=float, default=3.0, help="nginx: seconds per path")
    args = ap.parse_args()
    server, bench = need("redis-server", "redis-server"), need("redis-benchmark", "redis-tools")
    print(machine())
    tmp = Path(tempfile.mkdtemp(prefix="capture-bench-"))
    cost = trap_cost(tmp)
    n, s = cost["native"], cost["shim"]
    print(f"\ntrap cost ({n['n']:,} calls each, ns per call)")
    print(f"  getuid (trapped under the shim): native {n['getuid_ns']:.0f}, shim"
          f" {s['getuid_ns']:.0f}: one trap costs {s['getuid_ns'] - n['getuid_ns']:.0f} ns")
    print(f"  getuid at a patched site:        native {n['getuid_ns']:.0f}, shim"
          f" {cost['patched']['getuid_ns']:.0f}: a patched call costs"
          f" {cost['patched']['getuid_ns'] - n['getuid_ns']:.0f} ns")
    print(f"  getpid (wrapped, recorded):      native {n['getpid_ns']:.0f}, shim"
          f" {s['getpid_ns']:.0f}")
    env = {**os.environ, "MIG_HOME": str(tmp / "home")}
    port = broker_up(MIG, env)
    bootstrap = f"127.0.0.1:{port}"
    configs = [(capture, threads, barrier)
               for capture, threads in (("trap", "serialized"), ("trap", "parallel"),
                                        ("symbols", "parallel"))
               for barrier in ("async", "output")]
    results: dict[str, list[tuple[float, int, float]]] = {"native": []}
    try:
        for r in range(args.runs):
            results["native"].append((run_native(server, bench, args.requests, tmp), 0, 0))
            for capture, threads, barrier in configs:
                key = f"{capture} {threads} {barrier}"
                results.setdefault(key, []).append(
                    run_mig(server, bench, args.requests, tmp, bootstrap, env, capture,
                            threads, barrier, r))
        nginx = shutil.which("nginx")
        httpload = tmp / "httpload"
        subprocess.run(["gcc", "-O2", "-o", httpload, ROOT / "bench" / "progs" / "httpload.c"],
                       check=True)
        nginx_results: dict[str, list[dict[str, float]]] = {}
        for r in range(args.runs if nginx else 0):
            nginx_results.setdefault("native", []).append(
                run_nginx(nginx, httpload, tmp, f"n{r}", args.seconds, None))
            for capture in ("trap", "symbols"):
                for barrier in ("async", "output"):
                    nginx_results.setdefault(f"{capture} {barrier}", []).append(
                        run_nginx(nginx, httpload, tmp, f"{capture[0]}{barrier[0]}{r}",
                                  args.seconds, (bootstrap, env, capture, barrier)))
    finally:
        broker_down(MIG, env)
    native = [x[0] for x in results["native"]]
    version = subprocess.run([server, "--version"], capture_output=True,
                             text=True).stdout.split()[2]
    print(f"\nRedis {version}"
          f" under redis-benchmark -n {args.requests} -c 50 -t set,get,incr -r 100000,"
          f" {args.runs} runs (min..max)")
    print(f"  {'configuration':<27} {'req/s':>16} {'x native':>12} {'trapped':>14}"
          f" {'trapped/s':>12} {'per request':>12}")
    print(f"  {'native':<27} {spread(native):>16} {'1.00':>12}")
    for key, rows in results.items():
        if key == "native":
            continue
        rates = [x[0] for x in rows]
        ratios = [x[0] / nat for x, nat in zip(rows, native, strict=True)]
        traps = [x[1] for x in rows]
        per_s = [x[1] / x[2] for x in rows if x[2]]
        per_req = [x[1] / (3 * args.requests) for x in rows]
        print(f"  {key:<27} {spread(rates):>16}"
              f" {min(ratios):.2f}..{max(ratios):.2f}".ljust(30)
              + f" {spread(traps):>14} {spread(per_s):>12}"
              f" {min(per_req):.4f}..{max(per_req):.4f}")
    if not nginx_results:
        print("\nnginx is not installed: apt-get install -y nginx-light (part 3 skipped)")
    else:
        print(f"\nnginx (master + 2 workers) under httpload, 16 connections, {args.seconds:g} s"
              f" per path, {args.runs} runs (min..max); requests/s and x native")
        for path in ("/ok", "/index.html"):
            base = [x[path] for x in nginx_results["native"]]
            print(f"  GET {path}")
            for key, rows in nginx_results.items():
                rates = [x[path] for x in rows]
                ratios = [x / b for x, b in zip(rates, base, strict=True)]
                print(f"    {key:<16} {spread(rates):>16} {min(ratios):.2f}..{max(ratios):.2f}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
