"""A primary's planned handoff: the triggers (a Migrate request, SIGTERM with a hot
replica, the maintenance file, the load threshold) and the handoff itself: freeze the app,
acknowledge everything, name the successor in a Handoff, wait for its promotion.
docs/failover.md tells the protocol. Part of the Recorder (mig/member/primary.py)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import structlog

from mig.control.view import fresh_s
from mig.deadline import Deadline
from mig.errors import Fenced, MigError
from mig.kafka.clients import end_offsets
from mig.kafka.reader import END, Reader
from mig.kafka.topics import topic_names
from mig.kafka.writer import LogWriter
from mig.member.launch import kill_group
from mig.member.record_state import RecorderState

log = structlog.get_logger("mig.recorder")


class Handing(RecorderState):
    """The planned handoff of a primary to a hot replica."""

    # -- planned handoff
    def _fresh_s(self) -> float:
        return fresh_s(self.cfg.replica.heartbeat_ms)

    def _hot(self, now: float) -> list[dict[str, Any]]:
        return self.control.hot_replicas(now, self._fresh_s())

    def _ask_migrate(self, reason: str, to: str | None = None) -> None:
        self._migrate_asked = f"{self.member}-{int(time.time() * 1000)}"
        self._migrate_to = to
        self._migrate_reason = reason

    def _check_triggers(self, now: float) -> None:
        """The maintenance file and the load threshold (app.toml [failover])."""
        if now < self._next_trigger_check or self._migrate_asked is not None:
            return
        self._next_trigger_check = now + 0.5
        fo = self.cfg.failover
        if fo.maintenance_file:
            path = self.cfg.cwd / fo.maintenance_file
            if path.exists() and self._hot(now):
                self._ask_migrate(f"maintenance file {path}")
                self._next_trigger_check = now + 10  # if it fails, not again at once
                return
        if fo.load_threshold:
            try:
                load = float(Path("/proc/loadavg").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                return
            if load <= fo.load_threshold:
                self._load_high_since = None
            elif self._load_high_since is None:
                self._load_high_since = now
            elif now - self._load_high_since >= 10 and self._hot(now):
                self._ask_migrate(f"load average {load:.1f} above {fo.load_threshold}")
                self._load_high_since = None
                self._next_trigger_check = now + 30

    def _handoff(self, writer: LogWriter, proc: subprocess.Popen[bytes],
                 control: Reader) -> bool:
        """Planned migration: stop taking input at a barrier, commit everything, name the
        successor in a Handoff record with the log's end, and wait for its promotion.
        True when the app was handed over (this primary is done)."""
        event, self._migrate_asked = self._migrate_asked, None
        assert event is not None
        now = time.monotonic()
        hot = self._hot(now)
        to = self._migrate_to or (hot[0]["member"] if hot else None)
        if to is None or to not in {r["member"] for r in hot}:
            why = "no hot replica" if not hot else f"{to} is not a hot replica"
            log.warning("mig.recorder.migrate_refused", event_id=event, to=to, reason=why,
                        hot=[r["member"] for r in hot])
            if hot:
                why += f" (hot: {', '.join(r['member'] for r in hot)})"
            else:  # what the replicas said of themselves last
                seen = sorted(f"{s.record['member']} {s.record['health']}"
                              for s in self.control.statuses.values()
                              if s.record["role"] == "REPLICA")
                why += f" (replicas: {', '.join(seen)})" if seen else " (no replica reported)"
            self._request_failed(writer, "migrate", event, why)
            return False
        frozen_ms = int(time.time() * 1000)
        log.info("mig.recorder.handoff_start", event_id=event, to=to,
                 reason=self._migrate_reason)
        for ring in self.rings.values():
            if not ring.freeze():
                log.warning("mig.recorder.freeze_slow", lpid=ring.lpid)
        while self._drain(writer):
            pass
        self._commit(writer)
        ends = dict(end_offsets(control.consumer, topic_names(self.cfg.name)["calls"]))
        writer.send("control", "mig.log.Handoff", {
            "app": self.cfg.name, "event_id": event, "from_member": self.member,
            "to_member": to, "epoch": self.epoch,
            "calls_offsets": [{"partition": p, "offset": o} for p, o in sorted(ends.items())],
            "frozen_ts_ms": frozen_ms, "ts_ms": int(time.time() * 1000)}, key=self.member)
        unsure: MigError | None = None
        try:
            writer.commit()
        except MigError as exc:
            # the successor can read the Handoff and fence this producer before the commit's
            # own answer comes back, which then says "fenced", or, from Kafka 4.1, "EndTxn
            # commit failed: Unknown broker error" (both seen: the Handoff committed, the
            # successor promoted): the Handoff may be committed all the same. The control
            # topic tells: the successor's Promotion below, or, if none comes, the error
            # stands (the app is stopped, never thawed: the transaction's fate is unknown).
            unsure = exc
            log.warning("mig.recorder.handoff_commit_unsure", to=to, reason=str(exc))
        else:
            log.info("mig.recorder.handoff_written", to=to,
                     freeze_to_handoff_ms=int(time.time() * 1000) - frozen_ms, calls_end=ends)
        deadline = Deadline(self.cfg.failover.handoff_timeout_ms / 1000)
        while not deadline.passed():
            try:
                for item in control.poll(100, 0.05):
                    if item.kind != END:
                        self._on_control(item)
            except Fenced as exc:
                # the successor is primary: our held outputs were all released (everything
                # was acknowledged before the handoff); the app must not run on
                kill_group(proc)
                self.stats.migrated_to = to
                log.info("mig.recorder.handed_over", to=to, reason=str(exc))
                return True
        if unsure is not None:  # and nobody says they took over: stop with the commit's error
            raise unsure
        log.warning("mig.recorder.handoff_timeout", event_id=event, to=to)
        for ring in self.rings.values():
            ring.thaw()
        self._request_failed(writer, "migrate", event, f"{to} did not become primary within"
                             f" {self.cfg.failover.handoff_timeout_ms} ms of"
                             " the handoff; the app runs on here")
        return False

    def _request_failed(self, writer: LogWriter, request: str, event: str, why: str) -> None:
        """Say in the control topic, at once, why a request failed here (RequestFailed,
        committed with the next transaction): mig migrate and mig checkpoint wait for it."""
        writer.send("control", "mig.log.RequestFailed", {
            "app": self.cfg.name, "event_id": event, "request": request,
            "member": self.member, "reason": why, "ts_ms": int(time.time() * 1000)},
            key=event)
        log.info("mig.recorder.request_failed", request=request, event_id=event, reason=why)

