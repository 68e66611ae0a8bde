"""What the parts of the record path share: its figures, and the state the primary's parts
use (mig/member/primary.py sets it; mig/member/handoff.py and mig/member/commit.py use
it), declared here so each part's use of it is checked."""

from __future__ import annotations

import signal
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mig.checkpoint.local import PrimaryCheckpointer
    from mig.config import AppConfig
    from mig.control.view import ControlView
    from mig.kafka.clients import KafkaSettings
    from mig.kafka.reader import Item
    from mig.kafka.writer import LogWriter
    from mig.member.metrics import Metrics
    from mig.ring.batch import BatchEncoder
    from mig.ring.doorbell import Doorbells
    from mig.ring.memory import Ring

__all__ = ["RecordStats", "RecorderState"]


@dataclass
class RecordStats:
    calls: int = 0
    batches: int = 0
    commits: int = 0
    barrier_commits: int = 0
    exit_code: int | None = None
    migrated_to: str | None = None  # a planned handoff ended this primary's run
    traps: int = 0  # system calls the shim trapped, all processes (docs/interceptor.md)
    patched: int = 0  # ... and made at patched sites of libc instead (shim/src/mig_patch.c)
    shim_fatal: str | None = None  # the shim's reason, when it stopped the app (exit 86)
    stop_signal: int | None = None  # the signal mig sent the app to stop it (SIGTERM)
    stop_timed_out: bool = False  # it did not end within the stop timeout: SIGKILL
    turns: int = 0  # the agent's loop turns (an idle agent sleeps to its next timer)

    def unclean(self) -> str | None:
        """Why the app did not stop cleanly: it was killed by a signal other than the one mig
        sent it to stop it (a crash, the OOM killer, an operator's kill -9, or mig's SIGKILL
        when it did not end in time). None when it exited by itself, ended by mig's stop
        signal, or was handed over to another member."""
        code = self.exit_code
        if self.migrated_to or code is None or code >= 0 or -code == self.stop_signal:
            return None
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        if self.stop_timed_out:
            return f"the app did not end after {self._stop_name()} and was killed ({name})"
        return f"the app was killed by {name}"

    def _stop_name(self) -> str:
        return signal.Signals(self.stop_signal).name if self.stop_signal else "the stop"



class RecorderState:
    """The state of a primary that its parts share."""

    cfg: AppConfig
    settings: KafkaSettings
    run_dir: Path
    member: str
    host: str
    epoch: int
    flush_ms: int
    rings: dict[str, Ring]
    batch_seq: dict[str, int]
    sent_seq: dict[str, int]
    _in_flight: deque[list[Any]]
    bells: Doorbells
    stats: RecordStats
    _stop: bool
    _stop_handoff_tried: bool
    _migrate_to: str | None
    _migrate_reason: str
    _started_ms: int
    stop_timeout_s: float
    batch_bytes: int
    encoder: BatchEncoder
    headers: list[tuple[str, bytes]]
    drain_bytes: int
    control: ControlView
    on_turn: Any
    last_calls_offset: dict[int, int]
    _migrate_asked: str | None
    _backlog: bool
    _view_fresh_at: float
    _next_trigger_check: float
    _load_high_since: float | None
    metrics: Metrics | None
    checkpointer: PrimaryCheckpointer
    stdin_pipe: Any
    feeder: Any
    _feed_when: Any

    if TYPE_CHECKING:  # the parts' methods another part calls
        def _commit(self, writer: LogWriter) -> None: ...
        def _drain(self, writer: LogWriter) -> int: ...
        def _turns(self, writer: LogWriter, proc: Any, control: Any) -> None: ...
        def _on_control(self, item: Item) -> None: ...
        def _fresh_s(self) -> float: ...
