"""How long ``mig status NAME`` takes to answer, against a running app.

Two figures, each over ``--runs`` calls: the whole command (a new ``python -m mig status``
process: interpreter, imports, Kafka, exit) and ``mig.status.collect`` alone in this
process (what each redraw of ``mig status --watch`` costs).
Run (an app recording on the embedded broker, e.g. examples/counter under mig primary):
    .venv/bin/python bench/status_bench.py counter --config app.toml --runs 20
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
    args = ap.parse_args()
    where = (["--config", str(args.config)] if args.config else []) + (
        ["--bootstrap", args.bootstrap] if args.bootstrap else [])
    command = []
    for _ in range(args.runs):
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "mig", "--log-format", "json", "status",
                        args.name, *where], check=True, capture_output=True)
        command.append((time.monotonic() - started) * 1000)

    from mig.connect import resolve_kafka
    from mig.status import collect

    settings = resolve_kafka(args.bootstrap, args.config)
    inner = []
    for _ in range(args.runs):
        started = time.monotonic()
        collect(settings, args.name)
        inner.append((time.monotonic() - started) * 1000)
    for label, ms in (("mig status (whole command)", command), ("collect() alone", inner)):
        ms.sort()
        print(f"{label:28} median {statistics.median(ms):6.0f} ms   p90"
              f" {ms[int(0.9 * (len(ms) - 1))]:6.0f} ms   min {ms[0]:6.0f} ms"
              f"   ({len(ms)} runs)")


if __name__ == "__main__":
    main()
