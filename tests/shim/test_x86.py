"""shim/src/mig_x86.c, the reading of libc's machine code behind patched system-call sites
(shim/src/mig_patch.c), checked against objdump on this machine's libc:

- every instruction boundary it finds in a function it reads whole is objdump's, and the
  other way round, and it reads nearly all of libc's functions whole;
- it never calls a site safe to replace when a branch (objdump's reading: jumps, calls,
  loops) lands inside the bytes replaced; and it calls most of libc's sites safe.
"""

from __future__ import annotations

import bisect
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIBC = Path("/lib/x86_64-linux-gnu/libc.so.6")


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Path:
    exe = tmp_path_factory.mktemp("x86") / "x86_harness"
    subprocess.run(["make", "-s", "-C", str(ROOT / "shim")], check=True, timeout=300)
    subprocess.run(["gcc", "-O1", "-Wall", "-Wextra", "-Werror", "-I", str(ROOT / "shim/src"),
                    "-I", str(ROOT / "shim/build"), "-o", str(exe),
                    str(ROOT / "tests/shim/x86_harness.c"), str(ROOT / "shim/src/mig_x86.c"),
                    "-ldl"], check=True, timeout=120)
    return exe


@pytest.fixture(scope="module")
def objdump() -> tuple[list[int], list[int], set[int]]:
    """libc's instruction addresses, its syscall instructions, and every branch target."""
    tool = shutil.which("objdump")
    assert tool, "objdump is missing: apt-get install binutils"
    text = subprocess.run([tool, "-d", "--no-show-raw-insn", str(LIBC)], capture_output=True,
                          text=True, check=True).stdout
    starts, syscalls, targets = [], [], set()
    for line in text.splitlines():
        found = re.match(r"\s+([0-9a-f]+):\t(.*)", line)
        if not found:
            continue
        at = int(found[1], 16)
        starts.append(at)
        if found[2].strip() == "syscall":
            syscalls.append(at)
        branch = re.search(r"\b(j\w+|call|loop\w*)\s+([0-9a-f]+) <", found[2])
        if branch:
            targets.add(int(branch[2], 16))
    return sorted(starts), syscalls, targets


def _run(harness: Path, sites: list[int]) -> str:
    return subprocess.run([str(harness)], input="\n".join(f"{s:x}" for s in sites),
                          capture_output=True, text=True, check=True, timeout=120).stdout


def test_instruction_lengths_agree_with_objdump(harness, objdump):
    starts, _, _ = objdump
    mine: set[int] = set()
    functions = []
    for line in _run(harness, []).splitlines():
        kind, *rest = line.split()
        if kind == "I":
            mine.add(int(rest[0], 16))
        else:
            functions.append((int(rest[0], 16), int(rest[1], 16), rest[2] == "1"))
    whole = [(lo, hi) for lo, hi, ok in functions if ok]
    assert len(whole) >= 0.98 * len(functions), (len(whole), len(functions))
    known = set(starts)
    ordered = sorted(mine)
    compared = 0
    for lo, hi in whole:
        if lo not in known:  # (a function starting inside another's padding: __restore_rt)
            continue
        i = bisect.bisect_left(starts, lo)
        theirs: set[int] = set()
        while i < len(starts) and starts[i] < hi:
            theirs.add(starts[i])
            i += 1
        # (objdump stops at the end of a section; bytes between two sections are read on
        # to the next function here, harmlessly: no branch goes there)
        j = bisect.bisect_left(ordered, lo)
        ours = set()
        while j < len(ordered) and ordered[j] <= max(theirs, default=lo):
            ours.add(ordered[j])
            j += 1
        assert ours == theirs, (hex(lo), sorted(hex(a) for a in ours ^ theirs)[:10])
        compared += len(ours)
    assert compared > 100_000, compared


def test_no_site_is_called_safe_when_a_branch_lands_inside(harness, objdump):
    _, syscalls, targets = objdump
    safe = {}
    for line in _run(harness, syscalls).splitlines():
        kind, *rest = line.split()
        if kind == "S":
            safe[(int(rest[0], 16), int(rest[1]))] = rest[2] == "1"
    ordered = sorted(targets)

    def inside(site: int, n: int) -> bool:
        """A branch lands strictly inside [site, site + n)."""
        i = bisect.bisect_right(ordered, site)
        return i < len(ordered) and ordered[i] < site + n

    landed = [(site, n) for (site, n), ok in safe.items() if ok and inside(site, n)]
    assert not landed, [(hex(s), n) for s, n in landed]
    # the reading is not so cautious that it patches nothing: libc has sites with a branch
    # target right after them, and most without
    unsafe_by_branch = [s for s in syscalls if inside(s, 8)]
    assert unsafe_by_branch
    assert sum(safe[(s, 8)] for s in syscalls) >= 0.8 * len(syscalls)
