"""What the parts of the replay path share: its errors, its figures and its limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mig.errors import MigError

RECENT_CALLS = 200_000
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

