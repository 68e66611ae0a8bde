"""Where did a replica's threads go out of step? Compare the switch points' traces of a
primary and a replica (MIG_TRACE_POINTS=DIR in the app's [app] env: shim/src/mig_sched.c
writes DIR/record-LPID and DIR/replay-LPID) thread by thread, and show, for each thread
whose calls differ, the first switch point where they part, with the calls around it.

usage: python3 scripts/points_diff.py RECORD-FILE REPLAY-FILE [--context N]

A line of a trace is ``P THREAD POINT CALL NR`` (the thread passed switch point POINT at
the shim's function CALL; NR the trapped system call's number, 0 through libc's symbol),
or ``T THREAD POINT`` (it took the token). A replica that stopped early has fewer points:
that is no difference; a call made at the same point on one host and not the other is.
Exit 0 when no thread's calls differ, 1 when one does, 2 on bad input.
docs/threads.md, "Where threads went out of step", tells how to read it.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

Point = tuple[int, str, int]  # switch point, call, system call number


def syscall_names() -> dict[int, str]:
    """Numbers to names from the kernel's header, where it is installed."""
    for header in (Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
                   Path("/usr/include/asm/unistd_64.h")):
        if header.is_file():
            return {int(n): name for name, n in
                    re.findall(r"#define __NR_(\w+)\s+(\d+)", header.read_text())}
    return {}


def read_trace(path: Path) -> dict[int, list[Point]]:
    """Each thread's switch points, in order."""
    threads: dict[int, list[Point]] = {}
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        fields = line.split()
        if not fields or fields[0] in ("T", "S"):  # took the token; stopped in a spin
            continue
        if fields[0] != "P" or len(fields) != 5:
            sys.exit(f"points_diff: {path}:{number}: not a trace line: {line[:80]!r}")
        try:
            thread, point, nr = int(fields[1]), int(fields[2]), int(fields[4])
        except ValueError:
            sys.exit(f"points_diff: {path}:{number}: not a trace line: {line[:80]!r}")
        threads.setdefault(thread, []).append((point, fields[3], nr))
    return threads


def show(p: Point | None, names: dict[int, str]) -> str:
    if p is None:
        return "-"
    point, call, nr = p
    return f"{point} {call}" + (f" ({names.get(nr, nr)})" if nr else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("record", type=Path)
    ap.add_argument("replay", type=Path)
    ap.add_argument("--context", type=int, default=8, help="switch points shown before")
    args = ap.parse_args()
    for path in (args.record, args.replay):
        if not path.is_file():
            print(f"points_diff: {path}: no such file", file=sys.stderr)
            return 2
    rec, rep = read_trace(args.record), read_trace(args.replay)
    names = syscall_names()
    parted = 0
    for thread in sorted(set(rec) | set(rep)):
        a, b = rec.get(thread, []), rep.get(thread, [])
        at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
        if at is None:
            print(f"thread {thread}: the same {min(len(a), len(b))} switch points"
                  f" (record {len(a)}, replay {len(b)})")
            continue
        parted += 1
        print(f"thread {thread}: parts at its switch point {a[at][0]}"
              f" (record {len(a)} points, replay {len(b)})")
        print(f"    {'record':<44} replay")
        for i in range(max(0, at - args.context), at + 3):
            x = a[i] if i < len(a) else None
            y = b[i] if i < len(b) else None
            mark = ">" if i == at else " "
            print(f"  {mark} {show(x, names):<44} {show(y, names)}")
    return 1 if parted else 0


if __name__ == "__main__":
    sys.exit(main())
