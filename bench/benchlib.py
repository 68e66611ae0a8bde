"""Pieces the benchmark scripts share (imported as a sibling module: the scripts run as
``python bench/NAME.py``)."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["machine", "percentile", "wait_for"]


def machine() -> str:
    """One line on the machine the figures come from."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / (1 << 20):.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return (f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}){mem}, {cpu},"
            f" Linux {platform.release()}, Python {platform.python_version()}")


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (with 20 samples, p99 is the largest); None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100)
    return ordered[int(rank) - 1]


def wait_for(cond: Callable[[], object], timeout: float, what: str, step: float = 0.05,
             error: type[Exception] = RuntimeError) -> None:
    """Poll ``cond`` every ``step`` s until it is true; ``error`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(step)
    raise error(f"timed out after {timeout:g} s waiting for {what}")


def count_lines(path: Path) -> int:
    """Lines in ``path`` (an ack log), 0 while it does not exist."""
    try:
        with open(path, "rb") as fh:
            return sum(1 for _ in fh)
    except FileNotFoundError:
        return 0


def print_table(rows: list[tuple[str, str, str, str]],
                head: tuple[str, str, str, str] = ("figure", "measured", "target", "")) -> None:
    """The summary table every benchmark ends with: columns padded to their widest cell."""
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    for row in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def broker_up(mig: list[str], env: dict[str, str]) -> int:
    """``mig broker up`` on free ports (the mig home in ``env``); returns the Kafka port."""
    import subprocess

    from mig.broker.node import free_ports

    port, cport = free_ports(2)
    out = subprocess.run([*mig, "broker", "up", "--port", str(port), "--controller-port",
                          str(cport)], env=env, capture_output=True, text=True, timeout=300,
                         check=True)
    print(out.stdout.strip(), flush=True)
    return port


def broker_down(mig: list[str], env: dict[str, str]) -> None:
    import subprocess

    subprocess.run([*mig, "broker", "down"], env=env, capture_output=True, timeout=120,
                   check=False)
