"""How fast a fresh replica replays a recorded log (catch-up speed), in calls per second.

One embedded broker; bench/progs/clockloop.c makes ``--calls`` intercepted clock readings
and exits, recorded once by ``mig primary start`` (async mode). Then ``mig replica follow
--from-start --no-promote`` replays that log ``--runs`` times, each into a new working
folder; it returns when the replayed program has exited with nothing left to feed. The
figure is the replay span: from the replica's ``mig.replayer.started`` line (its app
launched) to the command's exit, so the interpreter's start-up and the broker connection
are left out, and calls/s = recorded calls / span.

``--against PYTHON``: each run is followed by the same replay with ``PYTHON -m mig`` (another
checkout of mig, with its own shim built), so two versions are compared side by side on
the same log; the ratio is this one's median span over the other's.

Run: .venv/bin/python bench/replay_bench.py [--calls 300000] [--runs 5] [--against PY]
Nothing asserts on timing: the script prints figures; a failed replay is said as such.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from benchlib import broker_down, broker_up, machine  # noqa: E402 - a sibling


def _started_at(stderr: str) -> float | None:
    for line in stderr.splitlines():
        if line.startswith("{"):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "mig.replayer.started":
                stamp = str(event["timestamp"]).replace("Z", "+00:00")
                return dt.datetime.fromisoformat(stamp).timestamp()
    return None


def replay_once(python: str, app: Path, work: Path, env: dict[str, str]) -> tuple[float, str]:
    """(replay span in seconds, the command's stdout); raises RuntimeError on a failure."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    began = time.time()
    out = subprocess.run([python, "-m", "mig", "--log-format", "json", "replica", "follow",
                          str(app), "--workdir", str(work / "app"), "--run-dir",
                          str(work / "run"), "--from-start", "--no-promote",
                          "--member", "bench-replica"],
                         env=env, capture_output=True, text=True, timeout=600,
                         cwd=work)  # (not the checkout: `-m mig` would import it first)
    ended = time.time()
    started = _started_at(out.stderr)
    if out.returncode != 0 or started is None:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{python}: replica exited {out.returncode}: {tail}")
    app_log = work / "app" / "state" / "mig-app.log"
    printed = app_log.read_text().strip() if app_log.is_file() else "(no output)"
    return ended - started, (f"{out.stdout.strip()}; whole command {ended - began:.2f} s;"
                             f" the app printed: {printed}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=300_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--against", metavar="PYTHON",
                    help="also replay with `PYTHON -m mig` (another checkout), side by side")
    args = ap.parse_args()
    print(machine())
    tmp = Path(tempfile.mkdtemp(prefix="mig-replay-bench-"))
    env = dict(os.environ, MIG_HOME=str(tmp / "home"))
    mig = [sys.executable, "-m", "mig"]
    try:
        subprocess.run(["gcc", "-O2", "-o", str(tmp / "clockloop"),
                        str(ROOT / "bench" / "progs" / "clockloop.c")], check=True, timeout=120)
        port = broker_up(mig, env)
        folder = tmp / "app"
        folder.mkdir()
        app = folder / "app.toml"
        app.write_text("\n".join([
            "[app]", 'name = "replay-bench"',
            f"command = {json.dumps([str(tmp / 'clockloop'), str(args.calls)])}",
            'barrier_mode = "async"', "[checkpoints]", "enabled = false",
            "[kafka]", f'bootstrap_servers = "127.0.0.1:{port}"']) + "\n")
        started = time.monotonic()
        rec = subprocess.run([*mig, "primary", "start", "--run-dir", str(tmp / "rec-run"),
                              str(app)], env=env, capture_output=True, text=True, timeout=600)
        print(f"recorded in {time.monotonic() - started:.1f} s: {rec.stdout.strip()}")
        if rec.returncode != 0:
            print(f"FAILED: the recording: {rec.stderr.strip().splitlines()[-1:]}")
            return 1
        pythons = [("this", sys.executable)] + ([("against", args.against)]
                                                if args.against else [])
        spans: dict[str, list[float]] = {label: [] for label, _ in pythons}
        said: dict[str, str] = {}
        for run in range(args.runs):
            for label, python in pythons:
                span, said[label] = replay_once(python, app, tmp / f"replica-{label}", env)
                spans[label].append(span)
                print(f"run {run + 1} {label}: {span:.2f} s ({said[label]})", flush=True)
        print(f"\n{'replica':40} {'median s':>9} {'min':>6} {'max':>6} {'calls/s':>10}")
        for label, python in pythons:
            med = statistics.median(spans[label])
            print(f"{label + ' (' + python + ')':40.40} {med:9.2f} {min(spans[label]):6.2f}"
                  f" {max(spans[label]):6.2f} {args.calls / med:10,.0f}")
        if args.against:
            ratio = statistics.median(spans["this"]) / statistics.median(spans["against"])
            print(f"this / against, median replay span: {ratio:.2f}")
        return 0
    finally:
        broker_down(mig, env)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
