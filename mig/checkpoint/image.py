"""A checkpoint's image: CRIU's dump of a replica's app, the archive it travels in, and
the restore of one under the app's holder.

Taking one (``Replayer._checkpoint``, mig/checkpoint/taker.py): the replay stops feeding
at a cut where every process sleeps in the shim waiting for its next record; ``criu dump
--leave-running`` of the app's process tree (the shim's channel is a mapped file, which
CRIU keeps as a file mapping); the images, the ring files and the app's working folder
(its ``state_dir`` lives there) go into one gzip'd tar (``pack``). Its Kafka store is
mig/checkpoint/store.py.

Restoring one: ``compatible`` says whether this host can (CRIU not older than the image's,
same major; same kernel release series), ``unpack`` lays it out, and ``restore_app`` runs
``criu restore`` under the app's holder (mig/member/holder.py), in a new pid and mount
namespace where this member's folders are mounted at the paths the image names, so it can
run beside other members on one machine.
"""

from __future__ import annotations

import gzip
import io
import os
import platform
import shutil
import subprocess
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mig.errors import MigError
from mig.member.holder import HeldApp

__all__ = ["Archive", "CheckpointError", "compatible", "dump_app", "pack", "restore_app",
           "stage", "unpack"]


class CheckpointError(MigError):
    """A checkpoint cannot be taken, stored, fetched or restored."""



@dataclass
class Archive:
    data: bytes
    dump_ms: int



def dump_app(pid: int, images: Path, holder: int) -> None:
    """``criu dump --leave-running`` of the process tree rooted at ``pid``.

    Every app runs in its holder's pid and mount namespaces (mig/member/holder.py; a restored one
    under the pids it had when it was dumped); CRIU dumps a subtree only from inside its pid
    namespace, so CRIU runs there (``nsenter``: ``holder`` is the host pid of the
    namespace's init) and ``pid`` is the app's pid in that namespace. The image of a
    restored app then names the same pids and paths as the one it was restored from."""
    from mig.checkpoint.criu import find_criu

    criu = find_criu()
    images.mkdir(parents=True, exist_ok=True)
    # --file-locks: a program may hold a lock when the cut comes (sqlite3 holds one on its
    # database from a transaction's first write to its commit); CRIU refuses to dump such
    # a tree without it, and restores the locks with it
    cmd = criu.argv("dump", "-t", str(pid), "-D", str(images), "--leave-running",
                    "--file-locks", "-o", "dump.log", "-v2")
    cmd = ["nsenter", "-t", str(holder), "--pid", "--mount", *cmd]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if run.returncode != 0:
        tail = _log_tail(images / "dump.log")
        raise CheckpointError(f"criu dump of pid {pid} failed (exit {run.returncode}): {tail}")



def pack(images: Path, workdir: Path, run_dir: Path) -> bytes:
    """One gzip'd tar: ``images/``, ``work/`` (the app's folder), ``run/`` (the rings)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=3, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        tar.add(images, arcname="images")
        tar.add(workdir, arcname="work")
        for ring in sorted(run_dir.glob("*.ring")):
            tar.add(ring, arcname=f"run/{ring.name}")
    return buf.getvalue()



def stage(workdir: Path, run_dir: Path, dest: Path) -> None:
    """Copy the app's folder and the rings as they are at the dump (``dest/work``,
    ``dest/run``), so compressing them can wait until the app runs again.

    The app is held while this runs, but others may change its folder: a file or folder
    removed meanwhile is not in the copy (as it is not in the folder), where it stopped
    the replica with a traceback. Any other failure to copy is a CheckpointError."""
    try:
        shutil.copytree(workdir, dest / "work", symlinks=True, copy_function=_copy_if_there)
    except shutil.Error as exc:
        failed = [(src, why) for src, _dst, why in exc.args[0] if os.path.lexists(src)]
        if failed:
            raise CheckpointError(f"cannot copy the app's folder: {failed[0][0]}:"
                                  f" {failed[0][1]}") from exc
    except OSError as exc:
        raise CheckpointError(f"cannot copy the app's folder: {exc}") from exc
    (dest / "run").mkdir(parents=True)
    for ring in run_dir.glob("*.ring"):
        shutil.copy2(ring, dest / "run" / ring.name)



def _copy_if_there(src: str, dst: str) -> str:
    try:
        return str(shutil.copy2(src, dst))
    except FileNotFoundError:
        if os.path.lexists(src):
            raise
        return dst  # removed while the folder was copied


def unpack(data: bytes, images: Path, workdir: Path, run_dir: Path) -> None:
    for folder in (images, workdir, run_dir):
        folder.mkdir(parents=True, exist_ok=True)
    try:
        raw = gzip.decompress(data)
        tar = tarfile.open(fileobj=io.BytesIO(raw), mode="r")
        members = tar.getmembers()  # reads every header: a damaged one raises here
    except (OSError, EOFError, tarfile.TarError, zlib.error) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"the archive is truncated or not a checkpoint ({first})") from exc
    with tar:
        for member in members:
            top, _, rest = member.name.partition("/")
            dest = {"images": images, "work": workdir, "run": run_dir}.get(top)
            if dest is None or ".." in Path(rest).parts:
                raise CheckpointError(f"unexpected entry in the checkpoint: {member.name}")
            if not rest:
                continue
            member.name = rest
            try:
                tar.extract(member, dest, filter="tar")
            except (OSError, EOFError, tarfile.TarError) as exc:
                raise CheckpointError(f"the archive is truncated or damaged at {rest}"
                                      f" ({exc})") from exc



def kernel_release() -> str:
    return platform.release()



def compatible(manifest: dict[str, Any], criu_version: str, kernel: str) -> str | None:
    """Why this host cannot restore ``manifest`` (None: it can). CRIU must be the same major
    version and not older than the one that dumped; the kernel the same release series."""
    def nums(text: str) -> tuple[int, ...]:
        out = []
        for part in text.split("."):
            digits = "".join(ch for ch in part if ch.isascii() and ch.isdigit())
            if not digits or len(digits) > 9:  # not a version number (int() refuses 4300)
                break
            out.append(int(digits))
        return tuple(out)

    theirs, ours = nums(manifest["criu_version"]), nums(criu_version)
    if not theirs or not ours or theirs[0] != ours[0] or ours < theirs:
        return (f"the image was dumped by CRIU {_shown(manifest['criu_version'])}, this host"
                f" has CRIU {_shown(criu_version) or 'unknown'}")
    if nums(manifest["kernel"])[:2] != nums(kernel)[:2]:
        return (f"the image was dumped on kernel {_shown(manifest['kernel'])}, this host runs"
                f" {_shown(kernel)}")
    return None



def _shown(text: str, limit: int = 60) -> str:
    """A manifest's text in a message: one line, at most ``limit`` characters."""
    text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[: limit - 3] + "..."



def restore_app(images: Path, root_pid: int, binds: list[tuple[Path, Path]],
                log_file: Path, stdin: tuple[Any, int] | None = None) -> HeldApp:
    """Restore the image under its holder (mig/member/holder.py): in a new pid and mount
    namespace, bind ``binds`` (here -> image's path), ``criu restore``; the holder's init
    stays until the app's first process ends, and the whole namespace ends with this
    agent. Returns the holder (its signals reach the app, its exit is the app's).

    ``stdin``: (this host's stdin pipe, the inode of the pipe the image's app had as its
    stdin): CRIU gives every fd of the app that was that pipe this host's pipe instead
    (``--inherit-fd``; the pipe is criu's own stdin, passed down by the holder)."""
    from mig.checkpoint.criu import find_criu
    from mig.member.holder import HolderError
    from mig.member.holder import start as start_held

    criu = find_criu().argv()
    held_stdin: Any = subprocess.DEVNULL
    if stdin is not None and stdin[1]:
        criu += ["--inherit-fd", f"fd[0]:pipe:[{stdin[1]}]"]
        held_stdin = stdin[0].read_fd
    # at this agent's priority, not the one dumped (a primary's checkpointer runs niced)
    spec = {"mode": "restore", "images": str(images), "root_pid": root_pid,
            "criu": criu, "binds": [[str(a), str(b)] for a, b in binds],
            "nice": os.getpriority(os.PRIO_PROCESS, 0)}
    try:
        return start_held(spec, images / "restored", log_file, held_stdin)
    except HolderError as exc:
        raise CheckpointError(f"criu restore failed: {_log_tail(images / 'restore.log')}"
                              f" ({exc})") from exc



def _log_tail(path: Path, lines: int = 4) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    # (CRIU's complaint about RLIMIT_NOFILE is harmless and would hide the cause)
    errors = [line.strip() for line in text if ("Error" in line or "error" in line)
              and "RLIMIT_NOFILE" not in line]
    return " | ".join((errors or text)[-lines:])

