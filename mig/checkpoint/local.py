"""The primary's own checkpoints, for an app that no hot replica follows.

Checkpoints are taken by replaying, never by stopping the live app: CRIU's dump of the
primary itself would stall it for the dump, and CRIU 4.1 cannot dump the established TCP
connections of a live server on recent kernels at all (docs/checkpoints.md). So when a
checkpoint is due and no hot replica would take it, ``mig primary`` runs a short-lived local
replica (``mig replica follow --checkpoint-once``, niced, in a folder under its run folder):
it restores the newest checkpoint (or replays from the log's start), replays to the end of
the log as it was when it started, dumps and stores one checkpoint, and exits. The app goes
on; what it pays is CPU (docs/benchmarks.md measures its clients' latency meanwhile).

Triggers (app.toml ``[checkpoints]``, with ``when_alone = true``): ``mig checkpoint NAME``
(a CheckpointRequest) when no hot replica is there to answer it, ``every_seconds`` since the
primary started or since its last checkpoint, ``every_records`` recorded calls.

The local replica replays in a copy of the app's folder as it was when the app started here
(``snapshot_start``: taken before the primary launches its app, or before a replica that
later became primary launched its own from the log's start), so a program that reads its
files relative to its folder (a configuration, a database it opens) finds them as the
recording did. A replay that restores a checkpoint takes the folder from the checkpoint.
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import structlog

from mig.config import AppConfig
from mig.kafka.clients import KafkaSettings

log = structlog.get_logger()

_PR_SET_PDEATHSIG = 1
START_COPY = "app-start"  # in the run folder: the app's folder as the app started here
# bytes: a bigger folder is not copied (the run folder is on tmpfs, in memory, when the
# host has /dev/shm), and a warning says so
START_COPY_LIMIT = 64 * 1024 * 1024


def folder_bytes(src: Path, skip: tuple[Path, ...] = (), stop_above: int | None = None
                 ) -> int:
    """The bytes of the files under ``src``, leaving out ``skip`` (folders inside it); the
    count stops once it is over ``stop_above``."""
    import os

    skipped = {p.resolve() for p in skip}
    total = 0
    for root, dirs, files in os.walk(src):
        dirs[:] = [d for d in dirs if (Path(root) / d).resolve() not in skipped]
        for name in files:
            try:
                total += (Path(root) / name).lstat().st_size
            except OSError:
                pass
        if stop_above is not None and total > stop_above:
            break
    return total


def copy_folder(src: Path, dest: Path, skip: tuple[Path, ...] = (),
                limit: int = START_COPY_LIMIT) -> str | None:
    """Copy ``src`` to ``dest`` (a new folder), leaving out ``skip`` (folders inside src),
    unless src holds more than ``limit`` bytes. None when copied, else why not."""
    if folder_bytes(src, skip, stop_above=limit) > limit:
        return f"it holds more than {limit >> 20} MiB"
    skipped = {p.resolve() for p in skip}

    def ignore(where: str, names: list[str]) -> set[str]:
        return {n for n in names if (Path(where) / n).resolve() in skipped}

    try:
        shutil.copytree(src, dest, symlinks=True, ignore=ignore)
    except (OSError, shutil.Error) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        return str(exc)
    return None


def snapshot_start(folder: Path, run_dir: Path) -> bool:
    """Copy ``folder`` (the app's, before its app starts) to ``run_dir/app-start``, for the
    checkpoints this member may take alone (the run folder itself left out when it is
    inside). A folder over START_COPY_LIMIT is not copied: its checkpointer then replays in
    an empty folder, with a warning here. True when copied."""
    dest = run_dir / START_COPY
    shutil.rmtree(dest, ignore_errors=True)
    why = copy_folder(folder, dest, skip=(run_dir,))
    if why is not None:
        log.warning("mig.recorder.start_folder_not_copied", folder=str(folder),
                    reason=f"{why}: checkpoints this member takes alone replay the app in"
                           " an empty folder")
    return why is None


def _child_setup() -> None:
    # below the app in CPU priority, and gone with the primary
    import os

    os.nice(10)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class PrimaryCheckpointer:
    """Starts and watches the local checkpointing replica of one primary."""

    def __init__(self, cfg: AppConfig, settings: KafkaSettings, run_dir: Path,
                 member: str) -> None:
        self.cfg = cfg
        self.settings = settings
        self.folder = run_dir / "checkpointer"
        self.member = f"{member}-checkpointer"
        ck = cfg.checkpoints
        self.enabled = ck.enabled and ck.when_alone
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.last_at = time.monotonic()  # the schedule counts from the primary's start
        self.last_calls = 0
        self.asked: str | None = None  # a CheckpointRequest no replica answers
        self.running_for: str | None = None  # the request the running checkpointer answers
        # (event_id, reason) of requests that failed here: the primary publishes them
        # (RequestFailed), so mig checkpoint says why at once instead of timing out
        self.failed_requests: list[tuple[str, str]] = []
        self.taken = 0
        self.failed = 0
        self._criu_checked = False
        self._criu_missing = ""

    def ask(self, event_id: str) -> None:
        self.asked = event_id

    def step(self, now: float, calls: int, replica_hot: bool) -> None:
        """Once per control turn: start the checkpointer when one is due, reap it when it
        ended."""
        if self.proc is not None:
            if self.proc.poll() is None:
                return
            self._reaped(now)
        if replica_hot and self.asked is None:
            # a hot replica checkpoints on its own schedule; a request asked here was
            # decided when it was read (no replica hot then, mig/control/view.py), and is taken
            self.last_at, self.last_calls = now, calls
            return
        if not self.enabled:
            if self.asked is not None:
                off = ("enabled = false" if not self.cfg.checkpoints.enabled
                       else "when_alone = false")
                self._request_failed(f"no hot replica, and this primary takes no"
                                     f" checkpoints itself ([checkpoints] {off})")
            return
        ck = self.cfg.checkpoints
        due = (self.asked is not None
               or (ck.every_seconds and now - self.last_at >= ck.every_seconds)
               or (ck.every_records and calls - self.last_calls >= ck.every_records))
        if not due:
            return
        if not self._criu_ok():
            if self.asked is not None:
                self._request_failed(f"no hot replica, and no CRIU here: {self._criu_missing}")
            return
        self.last_at, self.last_calls = now, calls
        self.running_for = self.asked
        self._start(self.asked or "schedule")
        self.asked = None

    def _request_failed(self, reason: str, event: str | None = None) -> None:
        event = event or self.asked
        self.asked = None
        if event is not None:
            self.failed_requests.append((event, reason))

    def _criu_ok(self) -> bool:
        from mig.checkpoint.criu import CriuMissing, find_criu

        if self._criu_checked:
            return self.enabled
        self._criu_checked = True
        try:
            find_criu()
        except CriuMissing as exc:
            log.warning("mig.recorder.checkpoints_off", reason=str(exc))
            self._criu_missing = str(exc)
            self.enabled = False
        return self.enabled

    def _start(self, reason: str) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        start = self.folder.parent / START_COPY
        if start.is_dir():
            shutil.copytree(start, self.folder / "work", symlinks=True)
        else:
            (self.folder / "work").mkdir()
        cmd = [sys.executable, "-m", "mig", "replica", "follow", str(self.cfg.path),
               "--checkpoint-once", "--member", self.member,
               "--bootstrap", self.settings.bootstrap_servers,
               "--workdir", str(self.folder / "work"), "--run-dir", str(self.folder / "run")]
        out = open(self.folder / "checkpointer.log", "wb")  # noqa: SIM115 - the child's
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, preexec_fn=_child_setup,
                                         start_new_session=True)
        finally:
            out.close()
        self.started_at = time.monotonic()
        log.info("mig.recorder.checkpointer_started", reason=reason, pid=self.proc.pid,
                 log=str(self.folder / "checkpointer.log"))

    def _reaped(self, now: float) -> None:
        assert self.proc is not None
        code = self.proc.returncode
        self.proc = None
        event, self.running_for = self.running_for, None
        took = int((now - self.started_at) * 1000)
        text = self._log_lines()
        if code == 0:
            self.taken += 1
            stored = [line for line in text if line.startswith("checkpoint ")]
            log.info("mig.recorder.checkpoint", took_ms=took,
                     result=stored[-1] if stored else "stored")
            shutil.rmtree(self.folder, ignore_errors=True)
        else:
            # the folder stays for a look at its log; the next attempt waits a schedule
            self.failed += 1
            reason = text[-1] if text else "(no output)"
            log.warning("mig.recorder.checkpoint_failed", exit_code=code, took_ms=took,
                        reason=reason, log=str(self.folder / "checkpointer.log"))
            if event is not None:
                reason = reason.removeprefix("mig: error: ")
                self._request_failed(f"its local replay ended with code {code}: {reason}"
                                     f" (log {self.folder / 'checkpointer.log'})", event)

    def _log_lines(self) -> list[str]:
        try:
            raw = (self.folder / "checkpointer.log").read_text(errors="replace")
        except OSError:
            return []
        return [line for line in raw.splitlines() if line.strip()]

    def stop(self) -> None:
        """The primary stops: so does its checkpointer (its replica kills its app)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        log.info("mig.recorder.checkpointer_stopped")


__all__ = ["PrimaryCheckpointer", "copy_folder", "snapshot_start"]
