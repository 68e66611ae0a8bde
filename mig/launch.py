"""Starting the app the same way on every host: same argv, cwd, environment and address
space layout (ADDR_NO_RANDOMIZE), with the shim preloaded.

The environment an app sees is the app.toml ``env`` on top of a fixed base, plus mig's own
variables. MIG_RUN_DIR differs between hosts, so it is padded with trailing slashes to a
fixed length: the process's environment block then has the same size everywhere, and with
ASLR off the stack and heap addresses a program can observe stay the same. MIG_MODE
"record" and "replay" have the same length on purpose.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import subprocess
from pathlib import Path

from mig.config import AppConfig
from mig.errors import MigError
from mig.paths import shim_library

__all__ = ["app_env", "launch", "kill_group", "BASE_ENV", "RUN_DIR_WIDTH"]

BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
RUN_DIR_WIDTH = 200
ADDR_NO_RANDOMIZE = 0x0040000


def app_env(cfg: AppConfig) -> dict[str, str]:
    """The environment the app sees, without mig's variables (what the identity digests)."""
    env = dict(BASE_ENV)
    env.update(cfg.env)
    return env


def _padded(run_dir: Path) -> str:
    text = str(run_dir)
    if len(text) > RUN_DIR_WIDTH:
        raise MigError(f"run folder path {text} is longer than {RUN_DIR_WIDTH} characters")
    return text + "/" * (RUN_DIR_WIDTH - len(text))


PR_SET_PDEATHSIG = 1


def _prepare_child(die_with_agent: bool) -> None:
    """In the app's process before exec: no address randomisation, death with the agent,
    and every signal at its default disposition and unblocked. A shell starts background
    jobs with SIGINT ignored, and the agent's own handlers differ by role: what the app
    inherits would differ between hosts, and so would what it does (Python's asyncio, for
    one, takes another path when SIGINT is ignored, and the replica diverged at start)."""
    libc = ctypes.CDLL(None, use_errno=True)
    current = libc.personality(0xFFFFFFFF)
    libc.personality(current | ADDR_NO_RANDOMIZE)
    # a primary's app dies with its agent: without it the app would accept clients and
    # hold their replies forever (nobody commits its records any more). Not a replaying
    # app: CRIU images are taken of those, and a restored image would carry the setting
    # and die as soon as criu, its first parent, exits; it is set when it goes live.
    if die_with_agent:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    for sig in signal.valid_signals():
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def private_run_dir(run_dir: Path) -> None:
    """Make the run folder (mode 700) or check the one there: the rings in it carry the
    app's records, so no other user may create files in it (or own it)."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        run_dir.mkdir(mode=0o700)
    except FileExistsError:
        st = run_dir.stat()
        if st.st_uid not in (os.geteuid(), 0) or st.st_mode & 0o022:
            raise MigError(f"run folder {run_dir}: owned by uid {st.st_uid}, mode"
                           f" {st.st_mode & 0o777:o}; other users could plant rings in it:"
                           " chmod 700 it (or use another --run-dir)") from None


def launch(cfg: AppConfig, mode: str, run_dir: Path, cwd: Path,
           log_file: Path) -> subprocess.Popen[bytes]:
    """Start the app under the shim in ``mode`` (record or replay).

    Recording, the app's stdin is mig's own: what the app reads from it is a recorded input
    like a socket's (``producer | mig primary start app.toml``). Replaying, it is /dev/null:
    the reads come from the log; after promotion the program reads the end of its input
    (docs/interceptor.md, "Standard input")."""
    shim = shim_library()
    if not shim.is_file():
        raise MigError(f"the shim is not built ({shim}): run `make -C shim` or reinstall mig")
    env = app_env(cfg)
    env.update({"LD_PRELOAD": str(shim), "MIG_MODE": mode, "MIG_RUN_DIR": _padded(run_dir),
                "MIG_LPID": "1", "MIG_BARRIER": cfg.barrier_mode,
                "MIG_CAPTURE": cfg.capture, "MIG_THREADS": cfg.threads,
                "MIG_STALL_MS": str(cfg.serial_stall_ms)})
    private_run_dir(run_dir)
    for stale in run_dir.glob("*.ring"):  # a previous run's rings would be taken for ours
        stale.unlink()
    (run_dir / "listeners").unlink(missing_ok=True)  # going live: shared listeners
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        try:
            prepare = functools.partial(_prepare_child, mode == "record")
            stdin = None if mode == "record" else subprocess.DEVNULL
            return subprocess.Popen(cfg.command, cwd=cwd, env=env, stdin=stdin,
                                    stdout=out, stderr=out, preexec_fn=prepare,
                                    start_new_session=True)
        except OSError as exc:
            raise MigError(f"cannot start {cfg.command[0]}: {exc.strerror}") from exc


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the app and every process it started (launch() made it a
    session leader; a restored app's holder is one too, and its pid namespace ends with it)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
        proc.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
