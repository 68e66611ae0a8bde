"""What the parts of the replay path share: its errors, its figures and its limits."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mig.errors import MigError

if TYPE_CHECKING:
    from mig.config import AppConfig
    from mig.control.view import ControlView
    from mig.kafka.clients import KafkaSettings
    from mig.kafka.reader import Item, Reader
    from mig.kafka.writer import LogWriter
    from mig.member.metrics import Metrics
    from mig.progress import Progress
    from mig.ring.decode import BatchDecoder, DecodedBatch
    from mig.ring.memory import Ring

# batches whose place in the log a replica remembers, to explain a divergence in one of
# them (mig/member/feed.py re-reads that batch from the log)
RECENT_BATCHES = 20_000
# calls read but not yet fed to the app above which the replica stops fetching (and below
# half of which it fetches again): a replica far behind holds a bounded backlog in memory
MAX_PENDING = 100_000
CATCHING_UP_BATCHES = 50  # a replica further behind than this says "catching-up"


class Divergence(MigError):
    """The replica's app did something the log does not say: it is no failover target."""

    exit_code = 3


class PromotionFailed(MigError):
    """The replica fenced the old primary and read the log, but its app cannot go live (a
    listener it cannot make real): it does not announce itself as the primary."""

    exit_code = 5


@dataclass
class ReplayStats:
    calls: int = 0
    batches: int = 0
    last_offset: int = -1
    divergence: str | None = None
    promoted_epoch: int | None = None  # this replica became the primary at this epoch
    detection_ms: int | None = None  # None after a handoff: nothing was detected
    promotion_ms: int | None = None
    promotion_reason: str | None = None  # "failover" or "handoff"
    refused: int = 0  # records without a valid signature (mig/wire/auth.py) or copies, skipped


def compare_identity(recorded: dict[str, Any], local: dict[str, Any]) -> list[str]:
    """Differences that make replay impossible, as 'what: recorded X, here Y' lines."""
    out = []
    for key in ("binary_sha256", "argv", "libc", "env_digest"):
        if recorded[key] != local[key]:
            out.append(f"{key}: recorded {recorded[key]!r}, here {local[key]!r}")
    return out



class ReplicaState:
    """The state a replica's parts share (mig/member/replica.py sets it, mig/member/feed.py,
    mig/member/failover.py and mig/checkpoint/taker.py use it): declared here, so each
    part's use of it is checked."""

    cfg: AppConfig
    settings: KafkaSettings
    run_dir: Path
    workdir: Path
    idle_exit_s: float | None
    rings: dict[str, Ring]
    pending: dict[str, deque[DecodedBatch]]
    in_ring: dict[str, deque[tuple[int, int, int]]]
    placed: dict[str, deque[tuple[int, int, int, int]]]
    batches: BatchDecoder
    _pending_n: int
    _paused: bool
    stats: ReplayStats
    proc: Any
    stdin_pipe: Any
    epoch: int
    host: str
    member: str
    status: LogWriter
    can_promote: bool
    control: ControlView
    next_offset: dict[int, int]
    eof_at: dict[int, int]
    _at_end: set[int]
    batch_next: dict[str, int]
    last_calls_at: float
    started_at: float
    detected_at: float | None
    last_alive: float
    claimed: set[int]
    writer: LogWriter | None
    health: str
    _cons: Any  # the reader's consumer (pause, watermarks)
    _reader: Reader | None
    control_read: bool
    _catching_up: Progress | None
    _status_sent: dict[int, float]
    log_resumed: float
    own_read_at: float
    _calls_topic: str
    _live_marked: set[str]
    _standby: list[LogWriter]
    use_checkpoints: bool
    identity_rec: dict[str, Any] | None
    last_seq: dict[str, int]
    launched: bool
    restored_from: str | None
    _restored: dict[str, Any] | None
    _ckpt_calls: int
    _ckpt_at: float
    _ckpt_asked: str | None
    _started_ms: int
    _ckpt_retry_at: float
    _ckpt_thread: threading.Thread | None
    _ckpt_error: str | None
    _ckpt_failed: tuple[str, str] | None
    stored: str | None
    metrics: Metrics | None
    checkpoint_once: bool

    if TYPE_CHECKING:  # the parts' methods another part calls
        def _backlog(self) -> bool: ...
        def _check(self) -> None: ...
        def _discover(self) -> None: ...
        def _feed(self) -> None: ...
        def _flow(self, resume: bool = False) -> None: ...
        def lag(self) -> tuple[int, int]: ...
        def _new_stdin_pipe(self) -> Any: ...
        def _on_control(self, item: Item) -> None: ...
        def _publish_status(self, final: bool = False) -> None: ...
        def _standby_writer(self) -> None: ...
        def _take(self, item: Item) -> bool | str: ...
