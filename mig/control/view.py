"""What a member knows from ``mig.NAME.control``, read in the topic's order.

The control topic has one partition, so every member reads the same records in the same
order. That order is the only coordination mig uses:

- the current epoch is the newest ``Promotion``'s (1 before any promotion);
- the primary is the member whose heartbeats carry the current epoch; a primary whose app
  ended (its ``MemberStatus`` says ``stopped``) is not taken over;
- the successor for epoch E is the member of the *first* ``Claim`` for E in the topic; a
  claim for E that was not followed by a promotion within ``stale_after_s`` lets the next
  claimer try E + 1 (the winner died while promoting);
- a ``Handoff`` names the replica a planned migration hands the app to;
- a ``CheckpointRequest`` is answered by the replica that was hot *in the topic's order*
  at the request (least lag first), or by the primary's host when none was: every member
  decides it alike, whatever its own clock or a pause made of the records' arrival.

Times are the reader's own monotonic clock at the moment it read a record, so members
never compare their clocks. In the topic's order a member's status grows old by beats:
the heartbeats and statuses other members published after it (each member publishes one
every ``heartbeat_ms``). docs/failover.md tells the whole protocol.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ControlView", "Seen", "fresh_s"]


def fresh_s(heartbeat_ms: int) -> float:
    """How recent a member's status must be to count (hot replicas, claims): 5 of its
    heartbeats, at least a second."""
    return max(1.0, 5 * heartbeat_ms / 1000)


# a status is stale in the topic's order once another member beat this often after it
FRESH_BEATS = 5


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
    beats: dict[str, int] = field(default_factory=dict)  # heartbeats and statuses per member
    # per member: everyone's beats when its latest status was read
    beats_at_status: dict[str, dict[str, int]] = field(default_factory=dict)

    def on_record(self, name: str, rec: dict[str, Any], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if name in ("mig.log.Heartbeat", "mig.log.MemberStatus"):
            self.beats[rec["member"]] = self.beats.get(rec["member"], 0) + 1
        if name == "mig.log.Heartbeat":
            if rec["role"] == "PRIMARY" and rec["epoch"] >= self.epoch:
                self.epoch = rec["epoch"]
                self.primary = rec["member"]
                self.last_primary_seen = now
        elif name == "mig.log.MemberStatus":
            self.statuses[rec["member"]] = Seen(rec, now)
            self.beats_at_status[rec["member"]] = dict(self.beats)
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

    def answers_checkpoint_request(self, member: str) -> bool:
        """Whether ``member`` (a replica) takes the checkpoint of the CheckpointRequest just
        read: the least-lagged replica hot in the topic's order does; with none, the
        primary's host (mig/checkpoint/local.py). Every member reads the same records in the
        same order, so exactly one answers. Judged by the readers' clocks, a replica still
        catching up answered beside the primary's host, and so did a replica whose agent
        had been paused: its old statuses, read late, looked new to it."""
        hot = self.hot_in_topic()
        return bool(hot) and hot[0]["member"] == member

    def hot_in_topic(self) -> list[dict[str, Any]]:
        """Replicas whose latest status says replaying and is fresh in the topic's order
        (no other member beat FRESH_BEATS times since), least lag first."""
        return self._replaying(lambda member, _seen: self._fresh_in_topic(member))

    def hot_replicas(self, now: float, fresh_s: float) -> list[dict[str, Any]]:
        """Replicas whose latest status is recent and healthy, least lag first."""
        return self._replaying(lambda _member, seen: now - seen.at <= fresh_s)

    def _fresh_in_topic(self, member: str) -> bool:
        then = self.beats_at_status.get(member, {})
        return all(n - then.get(other, 0) < FRESH_BEATS
                   for other, n in self.beats.items() if other != member)

    def _replaying(self, fresh: Callable[[str, Seen], bool]) -> list[dict[str, Any]]:
        """Replicas whose latest status says replaying and is ``fresh``, least lag first."""
        out = [seen.record for member, seen in self.statuses.items()
               if seen.record["role"] == "REPLICA" and seen.record["health"] == "replaying"
               and fresh(member, seen)]
        return sorted(out, key=lambda r: (r["lag_records"], r["member"]))
