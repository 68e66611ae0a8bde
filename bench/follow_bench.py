"""A hot replica following a real program under sustained load: does it stay in step, and
how soon after the load has it caught up?

Each round starts the server under ``mig primary start`` (threads serialized, the
default) and a replica with ``mig replica follow`` (its own MIG_HOME, and the copy of the
app's folder it makes there, on this host), writes an operator's log file into the
primary's folder (as ``mig primary start app.toml > mig.log`` run there does: a replica's
folder is a copy), loads the server with bench/progs/httpload.c (CONNS keep-alive
connections, as fast as it answers, SECONDS), then waits (at most WAIT seconds) until the
replica's lag is 0 records or it has stopped. The servers: Debian's ``python3 -m
http.server`` (a thread per connection), or Node.js on tests/apps/node_http.js (event
loop, libuv's thread pool, V8's workers).

It prints each round (requests, the replica's state, seconds to catch up after the load,
and a divergence's report) and the count of rounds whose replica stopped. Nothing asserts
on timing; a replica that stops is the figure this measures, and the bench exits 1 then.
Run: .venv/bin/python bench/follow_bench.py [--server python|node] [--rounds N]
    [--seconds S] [--conns N] [--barrier output|async] [--wait S] [--env KEY=VALUE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from benchlib import broker_down, broker_up  # noqa: E402
from capture_bench import MIG, start_server, stop_server  # noqa: E402
from httpserver_bench import PAGE, command_line, load, set_up  # noqa: E402

from mig.broker.node import free_ports  # noqa: E402
from tests.apps.client import wait_port  # noqa: E402
from tests.harness import stop_mig  # noqa: E402


def replica_state(name: str, bootstrap: str, env: dict[str, str]) -> tuple[str, int | None]:
    """The replica's state and lag in records, from ``mig status --json``."""
    out = subprocess.run([*MIG, "status", name, "--bootstrap", bootstrap, "--json"], env=env,
                         capture_output=True, text=True, timeout=60, check=False).stdout
    try:
        apps = json.loads(out)["apps"]
    except (ValueError, KeyError):
        return "unknown", None
    for member in (m for app in apps for m in app.get("members", [])):
        if member.get("role") == "REPLICA":
            return str(member.get("state")), member.get("lag_records")
    return "absent", None


def report(log: Path) -> str:
    """The replica's one-line error, if it stopped with one."""
    lines = [ln for ln in log.read_text(errors="replace").splitlines()
             if ln.startswith("mig: error:")]
    return lines[-1][:300] if lines else ""


def one_round(tmp: Path, i: int, args: argparse.Namespace, exe: Path, bootstrap: str,
              env: dict[str, str]) -> tuple[int, str, float | None, str]:
    """Requests served, the replica's last state, seconds from the load's end to a lag of
    0 (None if it never got there), and its error line."""
    port = free_ports(1)[0]
    folder = tmp / f"round{i}"
    www = folder / "www"
    www.mkdir(parents=True)
    (www / PAGE).write_text("<html><body>" + "mig " * 256 + "</body></html>\n")
    name = f"follow{os.getpid()}r{i}"
    keys: dict[str, str | dict[str, str]] = {"barrier_mode": args.barrier,
                                             "threads": "serialized"}
    if args.env:
        keys["env"] = dict(kv.split("=", 1) for kv in args.env)
    primary = start_server(command_line(args.server, port, www), folder, name,
                           (bootstrap, env, keys))
    replica = None
    log = tmp / f"replica{i}.log"
    try:
        wait_port("127.0.0.1", port, 60)
        # its own copy of the app's folder (MIG_HOME/replicas/...), shown at the folder's
        # path in its mount namespace (mig/member/launch.py)
        renv = {**env, "MIG_HOME": str(tmp / f"home-r{i}")}
        with log.open("wb") as out:
            replica = subprocess.Popen([*MIG, "replica", "follow", str(folder / "app.toml")],
                                       env=renv, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while replica_state(name, bootstrap, env)[0] != "replaying":
            if replica.poll() is not None or time.monotonic() > deadline:
                return 0, "did not start", None, report(log)
            time.sleep(0.5)
        (folder / "operator.log").write_text("the operator's own log, beside app.toml\n")
        _, _, requests = load(exe, port, args.conns, args.seconds)
        ended = time.monotonic()
        state, lag = "unknown", None
        while time.monotonic() - ended < args.wait:
            state, lag = replica_state(name, bootstrap, env)
            if lag == 0 and state == "replaying":
                return requests, state, time.monotonic() - ended, ""
            if replica.poll() is not None:
                break
            time.sleep(0.5)
        return requests, state if replica.poll() is None else "stopped", None, report(log)
    finally:
        if replica is not None:
            stop_mig(replica, 30)
        stop_server(primary, False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", choices=("python", "node"), default="python")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=4.0, help="load per round")
    ap.add_argument("--conns", type=int, default=8, help="keep-alive connections")
    ap.add_argument("--barrier", choices=("output", "async"), default="output")
    ap.add_argument("--wait", type=float, default=60.0,
                    help="seconds after the load for the replica to catch up")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="an [app] env entry (MIG_PATCH=0, MIG_SLICE_US=100...); repeatable")
    args = ap.parse_args()
    if bad := [kv for kv in args.env if "=" not in kv or kv.startswith("=")]:
        ap.error(f"--env {bad[0]!r}: not KEY=VALUE")
    tmp, exe, env = set_up("follow-bench-")
    bootstrap = f"127.0.0.1:{broker_up(MIG, env)}"
    stopped = 0
    try:
        for i in range(args.rounds):
            requests, state, caught_up, error = one_round(tmp, i, args, exe, bootstrap, env)
            stopped += caught_up is None
            after = f"caught up {caught_up:.1f} s after the load" if caught_up is not None \
                else f"NOT caught up ({state})"
            print(f"round {i + 1}: {requests} requests; replica {after}"
                  + (f"\n    {error}" if error else ""), flush=True)
    finally:
        broker_down(MIG, env)
    print(f"\n{args.server}: {args.conns} keep-alive connections, {args.seconds:g} s,"
          f" {args.barrier} mode: the replica stopped or fell behind in {stopped} of"
          f" {args.rounds} rounds (logs in {tmp})")
    sys.exit(1 if stopped else 0)


if __name__ == "__main__":
    main()
