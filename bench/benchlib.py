"""Pieces the benchmark scripts share (imported as a sibling module: the scripts run as
``python bench/NAME.py``)."""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["cpu_by_process", "cpu_spent", "machine", "percentile", "sleeps_by_process",
           "wait_for"]


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


def toml_value(value: str | dict[str, str]) -> str:
    """A string, or a table of strings inline (the [app] env), as app.toml writes them."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f'{k} = "{v}"' for k, v in value.items()) + " }"
    return f'"{value}"'


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


def _under(roots: dict[str, int]) -> dict[int, tuple[str, str, list[str]]]:
    """Every live process under each root: pid -> (role, comm, the fields of its stat
    after the name), ROLE the root's key."""
    parent: dict[int, int] = {}
    stat: dict[int, tuple[str, list[str]]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        fields = text[text.rindex(")") + 2:].split()
        pid = int(entry.name)
        parent[pid] = int(fields[1])
        stat[pid] = (text[text.index("(") + 1:text.rindex(")")], fields)
    out: dict[int, tuple[str, str, list[str]]] = {}
    for role, root in roots.items():
        for pid, (comm, fields) in stat.items():
            at = pid
            while at > 1 and at != root:
                at = parent.get(at, 0)
            if at == root:
                out[pid] = (role, comm, fields)
    return out


def cpu_by_process(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system, every thread) each live process under each root has
    taken so far, summed by ``"ROLE COMM"`` (ROLE the root's key, COMM the process's name):
    two of these, before and after a load, say where its CPU went."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for role, comm, fields in _under(roots).values():
        key = f"{role} {comm}"
        out[key] = out.get(key, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def sleeps_by_process(roots: dict[str, int]) -> dict[str, float]:
    """Voluntary context switches (a thread blocked: a futex, a read, a poll) the live
    threads of each process under each root have made so far, summed by ``"ROLE COMM"``
    as cpu_by_process does."""
    out: dict[str, float] = {}
    for pid, (role, comm, _) in _under(roots).items():
        key = f"{role} {comm}"
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                status = (task / "status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    out[key] = out.get(key, 0.0) + int(line.split()[1])
    return out


def cpu_ticks(stat: str) -> int:
    """User and system clock ticks of a /proc stat file's text (a thread's, or a process's
    with every thread it had)."""
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def jit_cpu_s(pid: int) -> float:
    """CPU seconds a JVM's JIT compiler threads (``C1 CompilerThre``, ``C2 CompilerThre``
    in /proc) have taken so far: while they work, the JVM runs code not yet compiled.

    The JVM adds compiler threads while its queue of methods to compile is long and ends
    them when it is short (UseDynamicNumberOfCompilerThreads), and an ended thread's time
    leaves /proc/PID/task but stays in the process's own: counting the live compiler
    threads alone lost it (a warm-up round read -6% with C1 only). So this is the
    process's time less that of its live threads that are not compilers; another thread
    that ended counts as a compiler's, so a warm-up waits longer for it, never less."""
    tick = os.sysconf("SC_CLK_TCK")
    others = 0  # (read before the process's total: what they add meanwhile counts as JIT)
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            text = (task / "stat").read_text()
        except OSError:
            continue
        if "CompilerThre" not in text[text.index("(") + 1:text.rindex(")")]:
            others += cpu_ticks(text)
    try:
        total = cpu_ticks(Path(f"/proc/{pid}/stat").read_text())  # every thread's, ended too
    except OSError:
        return 0.0
    return max(0, total - others) / tick


# A broker is warm once its JIT compilers took less than this share of a core in two
# rounds of load in a row (warm_rounds).
WARM_JIT_SHARE = 0.03


def warm_rounds(load: Callable[[], float], brokers: Callable[[], list[int]], least_s: float,
                most_s: float) -> list[tuple[float, float]]:
    """Run ``load`` (one round of load, returning its req/s) until the JIT compilers of
    ``brokers()`` took less than WARM_JIT_SHARE of a core in two rounds in a row, after
    at least ``least_s`` and at most ``most_s`` of load. (req/s, the compilers' CPU over
    the round's time) of each round."""
    rounds: list[tuple[float, float]] = []
    started = time.monotonic()
    while time.monotonic() - started < most_s:
        jit, at = sum(jit_cpu_s(b) for b in brokers()), time.monotonic()
        rps = load()
        rounds.append((rps, (sum(jit_cpu_s(b) for b in brokers()) - jit)
                       / (time.monotonic() - at)))
        settled = len(rounds) >= 2 and all(r[1] < WARM_JIT_SHARE for r in rounds[-2:])
        if settled and time.monotonic() - started >= least_s:
            break
    return rounds


def cpu_spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """``after - before`` per key (a process that started between them: all of its time)."""
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


@contextmanager
def shim_alone(threads: str | None = None) -> Iterator[dict[str, str]]:
    """The environment of a program under the shim alone: what mig's launcher gives a
    recorded app (mig/member/launch.py), with a 1 GiB ring in a new folder (removed after)
    and no agent reading it, so no broker either. ``threads``: "serialized" or "parallel"
    with complete capture; None: the shim's defaults."""
    from mig.paths import shim_library

    run_dir = Path(tempfile.mkdtemp(prefix="mig-bench-ring-",
                                    dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
           "LD_PRELOAD": str(shim_library()), "MIG_MODE": "record",
           "MIG_RUN_DIR": str(run_dir), "MIG_LPID": "1", "MIG_BARRIER": "async",
           "MIG_RING_BYTES": str(1 << 30)}
    if threads:
        env.update({"MIG_CAPTURE": "trap", "MIG_THREADS": threads})
    try:
        yield env
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
