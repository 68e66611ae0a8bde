"""Deadlines for the loops that wait for something or retry a call: ``Deadline`` (how long
is left, clamped for one call's own timeout), ``retry`` (a call retried while it raises a
passing error) and ``wait_until`` (a condition polled). One helper for every such loop in
mig, so each states what it waits for, not how to count time.

Chosen over a retry library (stamina, tenacity): mig's loops retry with a fixed pause and
most also need the time left as the timeout of the call they make (a Kafka request of at
most 2 s, never past the deadline), which those libraries do not hand to the call.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["Deadline", "retry", "wait_until"]

T = TypeVar("T")


class Deadline:
    """A moment on the monotonic clock, ``seconds`` from now."""

    __slots__ = ("at",)

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def left(self, floor: float = 0.0, cap: float = math.inf) -> float:
        """Seconds left, kept within [floor, cap]: the timeout of one call inside the loop."""
        return min(cap, max(floor, self.at - time.monotonic()))

    def passed(self) -> bool:
        return time.monotonic() >= self.at

    def renew(self, seconds: float) -> None:
        """Move the deadline to ``seconds`` from now (a loop that waits for progress)."""
        self.at = time.monotonic() + seconds


def retry(call: Callable[[Deadline], T], timeout: float,
          on: type[BaseException] | tuple[type[BaseException], ...], pause: float = 0.2) -> T:
    """``call(deadline)`` until it returns. An exception of ``on`` is retried after
    ``pause`` seconds while the deadline has not passed, and raised once it has; any other
    exception is raised at once."""
    deadline = Deadline(timeout)
    while True:
        try:
            return call(deadline)
        except on:
            if deadline.passed():
                raise
        time.sleep(pause)


def wait_until(condition: Callable[[], bool], timeout: float, pause: float = 0.1) -> bool:
    """Whether ``condition()`` became true within ``timeout`` seconds (looked at every
    ``pause`` seconds, and once more at the deadline)."""
    deadline = Deadline(timeout)
    while not condition():
        if deadline.passed():
            return False
        time.sleep(min(pause, deadline.left()))
    return True
