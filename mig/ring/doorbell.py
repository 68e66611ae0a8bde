"""The recorder agent's wait: for a doorbell, not a blind sleep.

Each ring has a doorbell word (``mig_ring.h``): a thread of the app bumps it when it raises
a barrier or waits for room in a full ring, and wakes the agent if it sleeps
(shim/src/mig_record.c ``ring_doorbell``). The agent has one more word of its own, which
its acknowledgement thread bumps when Kafka acknowledged batches. ``Doorbells.wait`` sleeps
on all of them at once (``futex_waitv``, Linux 5.16) until one rings or a timeout (the
agent's nearest timer) passes.

No ring is missed: the agent takes a ``snapshot`` of the words at the start of a turn,
before it looks at the rings, and waits only while every word still holds what it read,
so a bump during the turn ends the wait at once; ``agent_sleeping`` only spares the app a
wake-up system call while the agent is awake. Past 127 rings, or on a kernel without
``futex_waitv``, the wait is a 1 ms sleep (the agent's old polling).
"""

from __future__ import annotations

import ctypes
import errno
import time
from collections.abc import Sequence

from mig.ring.memory import Ring, futex_wake

__all__ = ["Doorbells"]

_SYS_FUTEX_WAITV = 449  # x86-64
_FUTEX2_SIZE_U32 = 0x02
_CLOCK_MONOTONIC = 1
_MAX_WAITERS = 128  # the kernel's limit for one futex_waitv
_libc = ctypes.CDLL(None, use_errno=True)


class _Waiter(ctypes.Structure):
    _fields_ = [("val", ctypes.c_uint64), ("uaddr", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("reserved", ctypes.c_uint32)]


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class Doorbells:
    """The doorbells of a primary's rings and the agent's own."""

    def __init__(self) -> None:
        self._own = ctypes.c_uint32(0)
        self._waitv = True  # until the kernel says it has no futex_waitv

    def ring(self) -> None:
        """Ring the agent's own doorbell (from another thread of the agent)."""
        self._own.value = (self._own.value + 1) & 0xFFFFFFFF
        futex_wake(ctypes.addressof(self._own))

    def snapshot(self, rings: Sequence[Ring]) -> list[tuple[int, int]]:
        """(address, value now) of each doorbell word: read before looking at the rings."""
        return [(ctypes.addressof(self._own), self._own.value)] + [r.doorbell for r in rings]

    def wait(self, seen: list[tuple[int, int]], rings: Sequence[Ring], timeout: float) -> None:
        """Sleep until a doorbell of ``seen`` holds another value than it did, or
        ``timeout`` seconds."""
        if not self._waitv or len(seen) > _MAX_WAITERS:
            time.sleep(min(timeout, 0.001))
            return
        waiters = (_Waiter * len(seen))(*(
            _Waiter(value, address, _FUTEX2_SIZE_U32, 0) for address, value in seen))
        deadline = time.monotonic() + timeout  # CLOCK_MONOTONIC, as the wait's clock
        sec = int(deadline)
        until = _Timespec(sec, int((deadline - sec) * 1e9))
        for ring in rings:
            ring.agent_sleeping(True)
        try:
            if _libc.syscall(_SYS_FUTEX_WAITV, waiters, len(seen), 0, ctypes.byref(until),
                             _CLOCK_MONOTONIC) < 0 and ctypes.get_errno() == errno.ENOSYS:
                self._waitv = False
        finally:
            for ring in rings:
                ring.agent_sleeping(False)
