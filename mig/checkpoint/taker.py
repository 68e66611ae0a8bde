"""A replica's checkpoints: restoring the newest usable one at start, taking one
on schedule or on request (CRIU dump at a barrier, uploaded while the replay goes on).
Part of the Replayer (mig/member/replica.py); the archive and store are mig/checkpoint/store.py."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import structlog

from mig.deadline import Deadline
from mig.errors import MigError
from mig.kafka.clients import watermarks
from mig.member.launch import app_env, kill_group
from mig.member.replay_state import ReplicaState, compare_identity
from mig.progress import Progress
from mig.ring.memory import (
    rearm_after_restore,
    set_stdin_pipe,
    stdin_pipe_of,
)
from mig.wire.identity import app_identity

log = structlog.get_logger("mig.replayer")


class Checkpointing(ReplicaState):
    """Restore at start; take checkpoints while replaying."""

    # -- checkpoints
    def _maybe_restore(self, cons: Any, topic: str, parts: list[int]) -> dict[int, int]:
        """Start from the newest checkpoint this host can restore (its calls offsets), or
        from the log's start. A checkpoint is refused, with the reason logged, when its CRIU
        or kernel is not this host's kind, its app identity differs, or it is corrupt."""

        from mig.checkpoint.store import list_manifests

        start = {p: 0 for p in parts}
        tried: set[str] = set()
        # A checkpoint listed here can be superseded (its chunks tombstoned) and the calls
        # before it deleted while this member fetches it: list again, a few times, while
        # new checkpoints keep appearing.
        for _ in range(3):
            low = {p: watermarks(cons, topic, p)[0] for p in parts}
            if not self.use_checkpoints:
                if any(o > 0 for o in low.values()):
                    raise MigError(f"{topic} no longer holds its start (records before"
                                   f" {low} were deleted after a checkpoint): replay from a"
                                   " checkpoint (--from-checkpoint)")
                return start
            manifests = [m for m in list_manifests(self.settings, self.cfg.name)
                         if m["checkpoint_id"] not in tried]
            if not manifests:
                break
            tried.update(m["checkpoint_id"] for m in manifests)
            offsets = self._restore_newest(manifests, low)
            if offsets is None:
                continue
            # a newer checkpoint may have been stored, and the calls this one continues
            # from deleted, while it was fetched and restored: then it cannot be used
            now_low = {p: watermarks(cons, topic, p)[0] for p in parts}
            gone = {p: o for p, o in offsets.items() if o < now_low.get(p, 0)}
            if not gone:
                return {p: offsets.get(p, 0) for p in parts}
            log.warning("mig.replayer.checkpoint_refused", checkpoint_id=self.restored_from,
                        reason=f"the calls it continues from ({gone}) were deleted while it"
                               " was restored: a newer checkpoint superseded it")
            self._undo_restore()
        trimmed = {p: o for p, o in low.items() if o > 0}
        if trimmed:
            raise MigError(f"{topic} no longer holds its start (records before {trimmed} were"
                           " deleted after a checkpoint) and no checkpoint could be restored"
                           " here (see the mig.replayer.checkpoint_refused lines)")
        return start

    def _undo_restore(self) -> None:
        """Stop an app restored from a checkpoint that turned out to be unusable."""
        if self.proc is not None:
            kill_group(self.proc)
        self.proc = None
        self.identity_rec, self.restored_from, self._restored = None, None, None
        self.batch_next, self.last_seq = {}, {}
        self.launched = False

    def _restore_newest(self, manifests: list[dict[str, Any]], low: dict[int, int]
                        ) -> dict[int, int] | None:
        """Restore the newest of ``manifests`` this host can; its calls offsets, or None."""
        from mig.checkpoint.criu import CriuMissing, find_criu
        from mig.checkpoint.image import CheckpointError, compatible, restore_app, unpack
        from mig.checkpoint.store import fetch_checkpoint

        try:
            criu = find_criu()
        except CriuMissing as exc:
            log.warning("mig.replayer.no_criu", reason=str(exc))
            return None
        local = app_identity(self.cfg.name, self.cfg.command, self.cfg.cwd, app_env(self.cfg))
        for manifest in reversed(manifests):
            cid = manifest["checkpoint_id"]
            why = compatible(manifest, criu.version, os.uname().release)
            problems = compare_identity(manifest["identity"], local)
            gone = [f"{po['partition']}:{po['offset']} < {low.get(po['partition'], 0)}"
                    for po in manifest["barrier_offsets"]
                    if po["offset"] < low.get(po["partition"], 0)]
            if gone:
                why = (f"the calls it continues from were deleted ({', '.join(gone)}: the"
                       " log now starts later)")
            if why or problems:
                log.warning("mig.replayer.checkpoint_refused", checkpoint_id=cid,
                            reason=why or "; ".join(problems))
                continue
            try:
                data = fetch_checkpoint(self.settings, self.cfg.name, manifest,
                                        progress=Progress(f"checkpoint {cid} fetch").update)
                images = self.run_dir / "criu-images"
                shutil.rmtree(images, ignore_errors=True)
                self.workdir.mkdir(parents=True, exist_ok=True)
                self.run_dir.mkdir(parents=True, exist_ok=True)
                unpack(data, images, self.workdir, self.run_dir)
                self.stdin_pipe = self._new_stdin_pipe()
                dumped_stdin = 0
                for ring in self.run_dir.glob("*.ring"):
                    rearm_after_restore(ring)
                    if self.stdin_pipe is not None:
                        dumped_stdin = dumped_stdin or stdin_pipe_of(ring)[1]
                        set_stdin_pipe(ring, self.stdin_pipe.dev, self.stdin_pipe.ino)
                binds = [(self.workdir.resolve(), Path(manifest["workdir"])),
                         (self.run_dir.resolve(), Path(manifest["run_dir"]))]
                started = time.monotonic()
                self.proc = restore_app(images, manifest["root_pid"],
                                        [(a, b) for a, b in binds if a != b],
                                        self.workdir / "mig-restore.log",
                                        stdin=(self.stdin_pipe, dumped_stdin)
                                        if self.stdin_pipe is not None else None)
                if self.stdin_pipe is not None:
                    self.stdin_pipe.close_read_end()
            except CheckpointError as exc:
                log.warning("mig.replayer.checkpoint_refused", checkpoint_id=cid,
                            reason=str(exc))
                continue
            self.identity_rec = manifest["identity"]
            self.batch_next = dict(manifest["batch_seqs"])
            self.last_seq = dict(manifest["lpid_seqs"])
            self.restored_from = cid
            self._restored = manifest
            self.launched = True
            offsets = {po["partition"]: po["offset"] for po in manifest["barrier_offsets"]}
            log.info("mig.replayer.restored", checkpoint_id=cid, size=manifest["total_size"],
                     offsets=offsets, restore_ms=int((time.monotonic() - started) * 1000))
            if self.can_promote:
                self._standby_writer()
            return offsets
        return None

    def _once_step(self) -> bool:
        """--checkpoint-once: ask for the checkpoint once every calls partition was read to
        the end it had at the start; True when it is stored. Raises MigError if it failed."""
        if self._ckpt_error is not None:
            raise MigError(f"the checkpoint failed: {self._ckpt_error}")
        if self._ckpt_thread is None:
            # (an end offset counts transaction markers: compare events, not offsets)
            at_end = set(self.next_offset) <= self._at_end
            if at_end and self.launched and not self._backlog() and self._ckpt_asked is None:
                self._ckpt_asked = "--checkpoint-once"
            return False
        if self._ckpt_thread.is_alive():
            return False
        if self.stored is None:
            raise MigError("the checkpoint was not stored (see mig.replayer.checkpoint_failed)")
        return True

    def _request_failed(self, event: str, why: str) -> None:
        """Say in the control topic, at once, why this replica could not take the checkpoint
        a CheckpointRequest asked of it (RequestFailed): mig checkpoint waits for it."""
        self.status.send("control", "mig.log.RequestFailed", {
            "app": self.cfg.name, "event_id": event, "request": "checkpoint",
            "member": self.member, "reason": why, "ts_ms": int(time.time() * 1000)},
            key=event)
        for error in self.status.settle():
            log.warning("mig.replayer.status_failed", error=error)

    def _checkpoint_step(self) -> None:
        """Take a checkpoint when a trigger says so (records, seconds, mig checkpoint)."""
        if self._ckpt_failed is not None:  # the store thread failed a request's checkpoint
            self._request_failed(*self._ckpt_failed)
            self._ckpt_failed = None
        if (self._ckpt_asked is not None and not self.checkpoint_once
                and (not self.use_checkpoints or self.stats.divergence)):
            self._request_failed(self._ckpt_asked, self.stats.divergence or
                                 "checkpoints are off on this replica ([checkpoints] enabled"
                                 " = false, or --from-start)")
            self._ckpt_asked = None
        if not self.use_checkpoints or not self.launched or self.stats.divergence:
            return
        if self.checkpoint_once and self._ckpt_asked is None:
            return  # only the one _once_step asks for
        now = time.monotonic()
        ck = self.cfg.checkpoints
        due = (self._ckpt_asked is not None
               or (ck.every_records and self.stats.calls - self._ckpt_calls
                   >= ck.every_records)
               or (ck.every_seconds and now - self._ckpt_at >= ck.every_seconds))
        if not due or now < self._ckpt_retry_at:
            return
        if self._ckpt_thread is not None and self._ckpt_thread.is_alive():
            return  # the previous one is still being stored
        reason = ("request " + self._ckpt_asked) if self._ckpt_asked else "schedule"
        event = None if self.checkpoint_once else self._ckpt_asked
        try:
            self._checkpoint(reason, event)
            self._ckpt_asked = None
        except MigError as exc:
            log.warning("mig.replayer.checkpoint_failed", reason=str(exc))
            self._ckpt_error = str(exc)
            self._ckpt_retry_at = now + 30
            self._ckpt_asked = None
            if event is not None:
                self._request_failed(event, str(exc))
        self._ckpt_calls = self.stats.calls
        self._ckpt_at = time.monotonic()

    def _quiet(self) -> bool:
        """Every record read is in a ring and taken, and every process sleeps in the shim
        waiting for its next one (or has ended)."""
        from mig.ring.memory import STATE_EXITED

        if any(self.pending.values()):
            return False
        return all(r.state == STATE_EXITED or (r.head == r.tail and r.waiters > 0)
                   for r in self.rings.values())

    def _checkpoint(self, reason: str, event: str | None = None) -> None:
        """Dump at a cut (the app held only for the dump and a copy of its files), then
        compress and store in a background thread."""
        from mig.checkpoint.image import Archive, CheckpointError, dump_app, pack, stage
        from mig.checkpoint.store import (
            store_checkpoint,
        )

        started = time.monotonic()
        deadline = Deadline(10)
        while not self._quiet():  # the cut: feed what was read, then let the app take it
            if deadline.passed():
                raise CheckpointError("the app did not come to rest in the shim within 10 s"
                                      " (a process waits outside it, e.g. for a child)")
            self._discover()
            self._feed()
            self._check()
            time.sleep(0.001)
        held = time.monotonic()
        folder = self.run_dir / f"criu-dump-{int(time.time() * 1000)}"
        images, staged = folder / "images", folder / "staged"
        # the app is dumped from inside its holder's namespaces (dump_app); a restored one
        # under the pids and paths of the image it came from
        # (the folder at the path the app sees it: the app's own, where it was bound)
        seen = getattr(self.proc, "app_cwd", None) or self.workdir
        where: dict[str, Any] = {"workdir": str(Path(seen).resolve()),
                                 "run_dir": str(self.run_dir.resolve())}
        if self._restored is not None:
            where = {k: self._restored[k] for k in where}
        where["root_pid"] = self.proc.app_pid
        dump_app(self.proc.app_pid, images, self.proc.init_pid)
        stage(self.workdir, self.run_dir, staged)  # the files as they are with the image
        dump_ms = int((time.monotonic() - held) * 1000)  # from here the app runs on
        meta = {"epoch": self.control.epoch,
                "barrier_offsets": [{"partition": p, "offset": o}
                                    for p, o in sorted(self.next_offset.items())],
                "lpid_seqs": dict(self.last_seq), "identity": self.identity_rec,
                "batch_seqs": dict(self.batch_next), **where}

        def finish() -> None:  # compress and upload while the replay goes on
            try:
                data = pack(images, staged / "work", staged / "run")
                manifest = store_checkpoint(self.settings, self.cfg.name, self.member,
                                            Archive(data, dump_ms), meta,
                                            self.cfg.checkpoints.keep)
                self.stored = manifest["checkpoint_id"]
                if self.metrics is not None:
                    self.metrics.checkpoint(time.monotonic() - started)
                self._ckpt_error = None
                log.info("mig.replayer.checkpoint", checkpoint_id=manifest["checkpoint_id"],
                         reason=reason, size=len(data), held_ms=dump_ms,
                         total_ms=int((time.monotonic() - started) * 1000),
                         offsets=meta["barrier_offsets"])
            except MigError as exc:
                log.warning("mig.replayer.checkpoint_failed", reason=str(exc))
                self._ckpt_error = str(exc)
                if event is not None:  # published by the replay loop (_checkpoint_step)
                    self._ckpt_failed = (event, str(exc))
            finally:
                shutil.rmtree(folder, ignore_errors=True)

        self._ckpt_thread = threading.Thread(target=finish, name="mig-checkpoint", daemon=True)
        self._ckpt_thread.start()
