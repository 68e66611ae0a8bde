"""The recorder agent's wait: for a doorbell, not a blind sleep.

Each ring has a doorbell word (``mig_ring.h``): a thread of the app bumps it when it raises
a barrier or waits for room in a full ring, and wakes the agent if it sleeps
(shim/src/mig_record.c ``ring_doorbell``). The agent has two more words: its own, which
another of its threads may bump (``ring``), and the first word of ``RUN_DIR/agent.bell``
(``attach``), which the shim of a process bumps once it has made its ring
(shim/src/mig_start.c ``ring_agent_bell``), so new processes are found when they come
(``new_process``), not by looking at the run folder on a timer. ``Doorbells.wait`` sleeps
on all of them at once (``futex_waitv``, Linux 5.16) until one rings or a timeout (the
agent's nearest timer) passes.

No ring is missed: the agent takes a ``snapshot`` of the words at the start of a turn,
before it looks at the rings, and waits only while every word still holds what it read,
so a bump during the turn ends the wait at once; ``agent_sleeping`` only spares the app a
wake-up system call while the agent is awake. A light wait (the agent was busy a moment
ago) is ended by barriers, full rings and fill marks only, so records gather between its
turns; a ``deep`` one (an idle agent, until its next timer) by any record appended as well
(shim/src/mig_bells.c says why none is missed). Past 126 rings, or on a kernel without
``futex_waitv``, the wait is a 1 ms sleep (the agent's old polling). The snapshot and the
wait are native (shim/src/mig_bells.c): in Python they were a third of the agent's Python
time under load.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mig.ring.memory import Ring, bells_library, futex_wake

__all__ = ["Doorbells"]

_MAX_WAITERS = 128  # the kernel's limit for one futex_waitv


BELL_FILE = "agent.bell"
_OWN_WORDS = 2  # the agent's own word and the new-process bell, before the rings' words


class Doorbells:
    """The doorbells of a primary's rings and the agent's own."""

    def __init__(self) -> None:
        self._own = ctypes.c_uint32(0)
        # the new-process bell: a word of the agent's memory until ``attach`` maps the file
        self._bell_word: Any = ctypes.c_uint32(0)
        self._bell_map: mmap.mmap | None = None
        self._bell_taken = 0  # the bell's value when new processes were last looked for
        self._waitv = True  # until the kernel says it has no futex_waitv
        self._lib = bells_library()
        self._rings: list[Ring] = []  # the rings the arrays below are of
        self._n = 0
        self._words: Any = None
        self._headers: Any = None
        self._seen: Any = None

    def attach(self, run_dir: Path) -> None:
        """Make ``RUN_DIR/agent.bell`` (in the app's run folder, before the app starts),
        which each new process's shim rings once its ring is made."""
        path = run_dir / BELL_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, mmap.PAGESIZE)
            self._bell_map = mmap.mmap(fd, mmap.PAGESIZE)
        finally:
            os.close(fd)
        self._bell_word = ctypes.c_uint32.from_buffer(self._bell_map)
        self._bell_taken = 0
        self._words = None  # (made again at the next snapshot, with this bell's address)

    def ring(self) -> None:
        """Ring the agent's own doorbell (from another thread of the agent)."""
        self._own.value = (self._own.value + 1) & 0xFFFFFFFF
        futex_wake(ctypes.addressof(self._own))

    def snapshot(self, rings: Sequence[Ring]) -> Any:
        """The value now of each doorbell word (its own, the new-process bell, then each
        ring's), read before looking at the rings; valid until the next snapshot."""
        if self._words is None or len(rings) != len(self._rings) or any(
                a is not b for a, b in zip(rings, self._rings, strict=True)):
            self._rings, self._n = list(rings), len(rings) + _OWN_WORDS
            self._words = (ctypes.c_void_p * self._n)(
                ctypes.addressof(self._own), ctypes.addressof(self._bell_word),
                *(r.doorbell[0] for r in rings))
            self._headers = (ctypes.c_void_p * max(1, len(rings)))(
                *(r.header_addr for r in rings))
            self._seen = (ctypes.c_uint32 * self._n)()
        self._lib.mig_bells_snapshot(self._words, self._seen, self._n)
        return self._seen

    def new_process(self, seen: Any) -> bool:
        """Whether a process made its ring since the last time this said so (``seen``:
        this turn's snapshot, taken before the run folder is looked at)."""
        if seen[1] == self._bell_taken:
            return False
        self._bell_taken = seen[1]
        return True

    def wait(self, seen: Any, rings: Sequence[Ring], timeout: float,
             deep: bool = False) -> None:
        """Sleep until a doorbell of ``seen`` (the last snapshot of ``rings``) holds
        another value than it did, or ``timeout`` seconds; ``deep``: or until a record is
        appended to any of the rings."""
        if not self._waitv or self._n > _MAX_WAITERS:
            time.sleep(min(timeout, 0.001))
            return
        if self._lib.mig_bells_wait(self._words, seen, self._n, self._headers, len(rings),
                                    int(timeout * 1e9), int(deep)) == -errno.ENOSYS:
            self._waitv = False
