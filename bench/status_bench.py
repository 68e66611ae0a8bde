"""How long ``mig status NAME`` takes to answer, against a running app.

Two figures, each over ``--runs`` calls: the whole command (a new ``python -m mig status``
process: interpreter, imports, Kafka, exit) and ``mig.status.collect`` alone in this
process (what each redraw of ``mig status --watch`` costs).
Run (an app recording on the embedded broker, e.g. examples/counter under mig primary):
    .venv/bin/python bench/status_bench.py counter --config app.toml --runs 20
or, first writing HOURS of a primary's heartbeats and a replica's statuses (heartbeat_ms
200, with their Kafka timestamps spread over those hours) for a new app NAME:
    .venv/bin/python bench/status_bench.py big --bootstrap 127.0.0.1:9092 --synthetic 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("--config", type=Path)
    ap.add_argument("--bootstrap")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--synthetic", type=float, metavar="HOURS")
    ap.add_argument("--against", metavar="PYTHON", help="also time `PYTHON -m mig status`"
                    " (another install of mig, e.g. with other library versions), each of"
                    " its calls right after one of this interpreter's")
    args = ap.parse_args()
    if args.synthetic:
        synthetic_history(args.name, args.bootstrap, args.synthetic)
    where = (["--config", str(args.config)] if args.config else []) + (
        ["--bootstrap", args.bootstrap] if args.bootstrap else [])
    command: list[float] = []
    against: list[float] = []
    for _ in range(args.runs):
        for python, into in ((sys.executable, command), (args.against, against)):
            if python is None:
                continue
            started = time.monotonic()
            subprocess.run([python, "-m", "mig", "--log-format", "json", "status",
                            args.name, *where], check=True, capture_output=True)
            into.append((time.monotonic() - started) * 1000)

    from mig.control.status import collect
    from mig.kafka.connect import resolve_kafka

    settings = resolve_kafka(args.bootstrap, args.config)
    inner = []
    for _ in range(args.runs):
        started = time.monotonic()
        collect(settings, args.name)
        inner.append((time.monotonic() - started) * 1000)
    rows = [("mig status (whole command)", command), ("collect() alone", inner)]
    if against:
        rows.insert(1, (f"mig status with {args.against}", list(against)))
        print(f"this interpreter / {args.against}: median ratio"
              f" {statistics.median(command) / statistics.median(against):.2f}")
    for label, ms in rows:
        ms.sort()
        print(f"{label:28} median {statistics.median(ms):6.0f} ms   p90"
              f" {ms[int(0.9 * (len(ms) - 1))]:6.0f} ms   min {ms[0]:6.0f} ms"
              f"   ({len(ms)} runs)")


def synthetic_history(app: str, bootstrap: str, hours: float) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/
    from mig.kafka.connect import resolve_kafka
    from tests.history import control_history

    count = int(hours * 3600 * 10)  # 5 heartbeats and 5 statuses a second
    control_history(resolve_kafka(bootstrap, None), app, count, int(time.time() * 1000))
    print(f"wrote {count} control records over {hours:g} h for {app}")


if __name__ == "__main__":
    main()
