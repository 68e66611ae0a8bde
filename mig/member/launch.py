"""Starting the app the same way on every host: same argv, cwd, environment and address
space layout (ADDR_NO_RANDOMIZE), with the shim preloaded.

The environment an app sees is the app.toml ``env`` on top of a fixed base, plus mig's own
variables. MIG_RUN_DIR differs between hosts, so it is padded with trailing slashes to a
fixed length: the process's environment block then has the same size everywhere, and with
ASLR off the stack and heap addresses a program can observe stay the same. MIG_MODE
"record" and "replay" have the same length on purpose.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import structlog

from mig.config import AppConfig
from mig.errors import MigError
from mig.member.holder import HeldApp
from mig.member.holder import start as start_held
from mig.paths import shim_library

__all__ = ["app_env", "launch", "kill_group", "replica_workdir", "BASE_ENV",
           "RUN_DIR_WIDTH"]

BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
RUN_DIR_WIDTH = 200
log = structlog.get_logger("mig.launch")


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


def replica_workdir(cfg: AppConfig, member: str) -> tuple[Path, Path | None]:
    """Where a replica started without ``--workdir`` runs the app: ``MIG_HOME/replicas/
    NAME/MEMBER``, never the app's own folder (a primary on this host writes there). Made
    afresh at each start, as a copy of the app's folder without its ``state_dir`` (the
    app's own files, which a replica keeps for itself) and without mig's folders: a
    replica starts from a checkpoint or the log's start, never from files an earlier run
    left. The earlier run's folder is kept as ``MEMBER.previous`` (one). A folder over
    64 MiB is not copied (the replica then starts in an empty one, with a warning).
    Returns (folder, the previous one or None)."""
    import shutil

    from mig.checkpoint.local import copy_folder
    from mig.paths import mig_home, run_root

    folder = mig_home() / "replicas" / cfg.name / member
    previous = None
    if folder.exists():
        previous = folder.with_name(member + ".previous")
        shutil.rmtree(previous, ignore_errors=True)
        folder.rename(previous)
    folder.parent.mkdir(parents=True, exist_ok=True)
    why = copy_folder(cfg.cwd, folder, skip=(cfg.state_dir, mig_home(), run_root()))
    if why is not None:
        log.warning("mig.launch.app_folder_not_copied", folder=str(cfg.cwd), reason=why)
        folder.mkdir(exist_ok=True)
    return folder, previous


def _binds_to_app_folder(cfg: AppConfig, cwd: Path, run_dir: Path, log_file: Path) -> bool:
    """Whether a replica running in ``cwd`` can have it bound at the app's path
    (``cfg.cwd``) in its mount namespace: not when it is that folder, and not when either
    holds the other or the app's folder holds the rings or the log (the bind would hide
    them)."""
    here, there = cwd.resolve(), cfg.cwd.resolve()
    if here == there or not there.is_dir():
        return False

    def inside(a: Path, b: Path) -> bool:
        return a == b or b in a.parents

    return not (inside(here, there) or inside(there, here)
                or inside(run_dir.resolve(), there) or inside(log_file.resolve(), there))


def launch(cfg: AppConfig, mode: str, run_dir: Path, cwd: Path,
           log_file: Path, stdin_pipe: Any = None) -> HeldApp:
    """Start the app under the shim in ``mode`` (record or replay), under its holder
    (mig/member/holder.py: the app runs in a pid namespace of its own and ends with this agent).

    Recording, the app's stdin is mig's own: what the app reads from it is a recorded input
    like a socket's (``producer | mig primary start app.toml``). Replaying, it is /dev/null:
    the reads come from the log; after promotion the program reads the end of its input
    (docs/interceptor.md, "Standard input"). With ``stdin_pipe`` (``[app] stdin =
    "topic"``, mig/member/stdin.py) it is that pipe's read end, in either mode, and the shim
    counts what the app reads from it."""
    shim = shim_library()
    if not shim.is_file():
        raise MigError(f"the shim is not built ({shim}): run `make -C shim` or reinstall mig")
    env = app_env(cfg)
    env.update({"LD_PRELOAD": str(shim), "MIG_MODE": mode, "MIG_RUN_DIR": _padded(run_dir),
                "MIG_LPID": "1", "MIG_BARRIER": cfg.barrier_mode,
                "MIG_CAPTURE": cfg.capture, "MIG_THREADS": cfg.threads,
                "MIG_STALL_MS": str(cfg.serial_stall_ms)})
    if stdin_pipe is not None:
        env["MIG_STDIN"] = stdin_pipe.ident
    private_run_dir(run_dir)
    for stale in run_dir.glob("*.ring"):  # a previous run's rings would be taken for ours
        stale.unlink()
    (run_dir / "listeners").unlink(missing_ok=True)  # going live: shared listeners
    log_file.parent.mkdir(parents=True, exist_ok=True)
    inherit = mode == "record" or stdin_pipe is not None
    spec: dict[str, Any] = {"mode": "run", "command": cfg.command, "env": env, "cwd": str(cwd),
            "log": str(log_file), "stdin": "inherit" if inherit else "null"}
    if mode == "replay" and _binds_to_app_folder(cfg, cwd, run_dir, log_file):
        # the replica's folder shows at the app's own path, as on the primary: a program
        # that takes its path from getcwd() or realpath() (node resolving its script)
        # sees the same string, of the same length, on every member
        spec.update(cwd=str(cfg.cwd), host_cwd=str(cwd), binds=[[str(cwd.resolve()),
                                                                  str(cfg.cwd)]])
        try:  # the log too, at its path in the bound folder: a checkpoint names it there
            spec.update(log=str(cfg.cwd / log_file.resolve().relative_to(cwd.resolve())),
                        host_log=str(log_file))
        except ValueError:
            pass
    stdin: Any = subprocess.DEVNULL
    if stdin_pipe is not None:
        stdin = stdin_pipe.read_fd
    elif mode == "record":
        stdin = None
    held = start_held(spec, run_dir / "app.ready", log_file, stdin)
    held.app_cwd = Path(spec["cwd"]) if held.namespaced else cwd
    if not held.namespaced:
        log.warning("mig.launch.no_namespace", pid=held.app_pid,
                    reason="this member may not make a pid namespace (CAP_SYS_ADMIN): only"
                           " the app's first process ends with mig, unless mig is the init"
                           " of a container")
    return held


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the app and every process it started: the holder's process group holds the
    holder and its namespace's init, and the namespace ends with its init."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
        proc.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
