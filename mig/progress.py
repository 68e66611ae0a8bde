"""Progress of long operations (a checkpoint's upload or fetch, a replica catching up).

On a terminal, one line on stderr rewritten in place (at most 10 times a second); otherwise
a structured log line (``mig.progress``) at most every ``every_s`` seconds, so a journal
shows that the work moves without a line per chunk.
"""

from __future__ import annotations

import sys
import time

import structlog

__all__ = ["Progress"]

log = structlog.get_logger("mig.progress")


class Progress:
    def __init__(self, what: str, unit: str = "MB", scale: float = 1e6,
                 every_s: float = 5.0) -> None:
        self.what, self.unit, self.scale, self.every_s = what, unit, scale, every_s
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()
        self._shown = float("-inf")  # the first update is shown
        self._open = False  # a TTY line is waiting for its end

    def update(self, done: float, total: float | None = None) -> None:
        """``done`` of ``total`` (None: an amount still to go, e.g. records behind)."""
        now = time.monotonic()
        last = total is not None and done >= total
        if not last and now - self._shown < (0.1 if self.tty else self.every_s):
            return
        self._shown = now
        if total is None:
            text = f"{done / self.scale:,.1f} {self.unit} to go"
        else:
            pct = 100 * done // max(total, 1)
            rate = done / max(now - self.started, 1e-3) / self.scale
            text = (f"{done / self.scale:,.1f} of {total / self.scale:,.1f} {self.unit}"
                    f" ({pct:.0f}%, {rate:,.1f} {self.unit}/s)")
        if self.tty:
            sys.stderr.write(f"\r{self.what}: {text}\033[K")
            self._open = True
            if last:
                self.end()
            else:
                sys.stderr.flush()
        else:
            log.info("mig.progress", what=self.what, done=round(done / self.scale, 1),
                     total=None if total is None else round(total / self.scale, 1),
                     unit=self.unit)

    def end(self) -> None:
        """End the TTY line (the caller's own log line says how it ended)."""
        if self._open:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self._open = False
