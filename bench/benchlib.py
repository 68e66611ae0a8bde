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
