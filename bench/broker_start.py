"""Cold and warm start of the embedded broker, measured side by side in one run.

cold: empty jar cache and empty Maven repository (everything fetched from Maven Central),
      storage formatted, broker started, until it answers a metadata request.
warm: jars cached, storage formatted, broker started again until it answers.
Run: .venv/bin/python bench/broker_start.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mig.broker.node import free_ports


def mig(args: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "mig", "--log-format", "json", *args], env=env,
                   check=True, capture_output=True)
    return time.monotonic() - started


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = dict(os.environ, MIG_HOME=str(root / "home"), MIG_CACHE=str(root / "cache"),
                   MAVEN_OPTS=f"-Dmaven.repo.local={root / 'm2'}")
        port, cport = free_ports(2)
        up = ["broker", "up", "--port", str(port), "--controller-port", str(cport)]
        cold = mig(up, env)
        mig(["broker", "down"], env)
        warm = [mig(up, env)]
        mig(["broker", "down"], env)
        warm.append(mig(up, env))
        noop = mig(up, env)  # already up: idempotent
        mig(["broker", "down"], env)
    print(f"cold start (fetch jars + format + start): {cold:6.1f} s")
    print(f"warm start (cached jars, formatted):      {min(warm):6.1f} s (best of {len(warm)})")
    print(f"up when already running:                  {noop:6.1f} s")
    print(f"cold / warm:                              {cold / min(warm):6.1f}x")


if __name__ == "__main__":
    main()
