"""What a member knows from ``mig.NAME.control``, read in the topic's order.

The control topic has one partition, so every member reads the same records in the same
order. That order is the only coordination mig uses:

- the current epoch is the newest ``Promotion``'s (1 before any promotion);
- the primary is the member whose heartbeats carry the current epoch; a primary whose app
  ended (its ``MemberStatus`` says ``stopped``) is not taken over;
- the successor for epoch E is the member of the *first* ``Claim`` for E in the topic; a
  claim for E that was not followed by a promotion within ``stale_after_s`` lets the next
  claimer try E + 1 (the winner died while promoting);
- a ``Handoff`` names the replica a planned migration hands the app to.

Times are the reader's own monotonic clock at the moment it read a record, so members
never compare their clocks. docs/failover.md tells the whole protocol.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ControlView", "Seen", "fresh_s"]


def fresh_s(heartbeat_ms: int) -> float:
    """How recent a member's status must be to count (hot replicas, claims): 5 of its
    heartbeats, at least a second."""
    return max(1.0, 5 * heartbeat_ms / 1000)


@dataclass
class Seen:
    record: dict[str, Any]
    at: float  # local monotonic time when it was read


@dataclass
class ControlView:
    app: str
    epoch: int = 1
    primary: str | None = None
    last_primary_seen: float = 0.0
    primary_stopped: bool = False  # the primary ended its app on purpose: nothing to take over
    promotions: list[dict[str, Any]] = field(default_factory=list)
    statuses: dict[str, Seen] = field(default_factory=dict)
    claims: dict[int, Seen] = field(default_factory=dict)  # first claim per epoch
    handoffs: list[Seen] = field(default_factory=list)
    migrates: list[Seen] = field(default_factory=list)

    def on_record(self, name: str, rec: dict[str, Any], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if name == "mig.log.Heartbeat":
            if rec["role"] == "PRIMARY" and rec["epoch"] >= self.epoch:
                self.epoch = rec["epoch"]
                self.primary = rec["member"]
                self.last_primary_seen = now
        elif name == "mig.log.MemberStatus":
            self.statuses[rec["member"]] = Seen(rec, now)
            if (rec["role"] == "PRIMARY" and rec["health"] == "stopped"
                    and rec["epoch"] >= self.epoch):
                self.primary_stopped = True
        elif name == "mig.log.Claim":
            self.claims.setdefault(rec["epoch"], Seen(rec, now))
        elif name == "mig.log.Promotion":
            self.promotions.append(rec)
            if rec["new_epoch"] >= self.epoch:
                self.epoch = rec["new_epoch"]
                self.primary = rec["member"]
                self.last_primary_seen = now
                self.primary_stopped = False
        elif name == "mig.log.Handoff":
            self.handoffs.append(Seen(rec, now))
        elif name == "mig.log.Migrate":
            self.migrates.append(Seen(rec, now))

    def claim_epoch(self, now: float, stale_after_s: float) -> int:
        """The epoch a claimer should claim now: the next one, past claims whose winner
        never promoted."""
        epoch = self.epoch + 1
        while epoch in self.claims and now - self.claims[epoch].at > stale_after_s:
            epoch += 1
        return epoch

    def winner(self, epoch: int) -> str | None:
        seen = self.claims.get(epoch)
        return seen.record["member"] if seen else None

    def pending_handoff(self) -> Seen | None:
        """The newest handoff from the current epoch's primary, if no promotion ended it."""
        for seen in reversed(self.handoffs):
            if seen.record["epoch"] == self.epoch:
                return seen
        return None

    def answers_checkpoint_request(self, member: str, now: float, fresh_s: float) -> bool:
        """Whether ``member`` (a replica) takes the checkpoint a CheckpointRequest asks for:
        only the least-lagged hot replica does. With none hot, the primary's host takes it
        (mig/checkpointer.py), by the same view of the statuses; a replica still catching
        up took it too, and one request made two checkpoints."""
        hot = self.hot_replicas(now, fresh_s)
        return bool(hot) and hot[0]["member"] == member

    def hot_replicas(self, now: float, fresh_s: float) -> list[dict[str, Any]]:
        """Replicas whose latest status is recent and healthy, least lag first."""
        out = [s.record for s in self.statuses.values()
               if now - s.at <= fresh_s and s.record["role"] == "REPLICA"
               and s.record["health"] == "replaying"]
        return sorted(out, key=lambda r: (r["lag_records"], r["member"]))
