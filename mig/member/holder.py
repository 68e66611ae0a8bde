"""The one owner of an app's process tree: every app mig starts (recorded, replayed, or
restored from a checkpoint) runs under a holder, and ends with its member's agent.

::

    agent ── holder (host namespaces)        PR_SET_PDEATHSIG=SIGKILL, set by the agent
               └─ init (pid 1 of a new pid    PR_SET_PDEATHSIG=SIGKILL, set by the holder
                   and mount namespace)
                   └─ the app (pid 1000), everything it starts

When the agent ends, however it ends (exit, SIGTERM, kill -9, a fenced primary's exit), the
kernel sends SIGKILL to the holder, the holder's death sends SIGKILL to init, and when the
init of a pid namespace dies the kernel kills every process in it: the app and whatever it
forked, double-forked, setsid'd or setuid'd, restored or not. Nothing has to be alive to do
the killing, so a kill -9 of the agent leaves nothing behind holding the app's port.

Why not the alternatives (docs/failover.md, "Who ends the app"):

- PR_SET_PDEATHSIG on the app itself covers one process, not the ones it forks (the setting
  is not inherited), is cleared when a process execs a setuid program, fires when the
  *thread* that forked it exits, and a CRIU image carries it: a restored app would die as
  soon as criu, its first parent, exits. Here it is set only on two processes of mig's own,
  each forked by a thread that lives as long as its process (the agent's main thread starts
  every app, see ``start``; the holder has one thread).
- A pidfd or a watcher process must be alive to act: a kill -9 takes the agent with it.
- A cgroup's ``cgroup.kill`` ends a tree too, but someone must write it after the agent is
  gone, and delegated cgroups are not available everywhere mig runs.

The holder also passes the agent's stop signals on (SIGTERM, SIGINT, SIGHUP, SIGQUIT,
SIGUSR1, SIGUSR2 to init, init to the app: the init of a pid namespace gets only the signals
it handles) and ends the way the app's first process ended: with its exit code, or killed by
its signal, so ``Popen.returncode`` is the app's. (util-linux's ``unshare --fork``, which
restored apps ran under before, blocks SIGTERM in 2.38 and exits with a code.)

The app's first process is pid 1000 in its namespace on every host, so a CRIU image of a
replica names pids that never collide with criu's own when it is restored in a new
namespace (criu runs there with a small pid), and a promoted replica's real pids are the
primary's.

Without CAP_SYS_ADMIN (a container's default) no namespace can be made: the app then runs
without one, its first process dying with init (PR_SET_PDEATHSIG), and the agent logs
``mig.launch.no_namespace``; a restore needs the namespaces and fails.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mig.deadline import Deadline
from mig.errors import MigError

__all__ = ["APP_PID", "HeldApp", "HolderError", "start"]

APP_PID = 1000
PR_SET_PDEATHSIG = 1
CLONE_NEWNS, CLONE_NEWPID = 0x00020000, 0x20000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_SLAVE = 2, 4, 8, 4096, 16384, 1 << 19
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2)


class HolderError(MigError):
    """The holder could not start the app."""


class HeldApp(subprocess.Popen[bytes]):
    """The holder's process: its signals reach the app, its exit is the app's.

    ``init_pid`` is the host pid of the namespace's init (``nsenter -t`` enters there),
    ``app_pid`` the app's first process as its namespace numbers it (``criu dump -t``)."""

    init_pid: int = 0
    app_pid: int = 0
    namespaced: bool = True  # False: no namespaces could be made (see _holder)
    app_cwd: Path | None = None  # the app's folder as the app sees it (launch: a bind)


ADDR_NO_RANDOMIZE = 0x0040000  # personality(2)


def prepare_child() -> None:
    """In the app's process before exec: no address randomisation, and every signal at its
    default disposition and unblocked. A shell starts background jobs with SIGINT ignored,
    and the agent's own handlers differ by role: what the app inherits would differ between
    hosts, and so would what it does (Python's asyncio, for one, takes another path when
    SIGINT is ignored, and the replica diverged at start). That the app ends with its
    agent is the holder's work (mig/member/holder.py), not a setting of the app's processes."""
    libc = ctypes.CDLL(None, use_errno=True)
    current = libc.personality(0xFFFFFFFF)
    libc.personality(current | ADDR_NO_RANDOMIZE)
    for sig in signal.valid_signals():
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _die_with_parent(parent: int) -> None:
    """In a child before exec: SIGKILL when the thread that forked it ends; if the parent
    is already gone, now."""
    _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def start(spec: dict[str, Any], ready: Path, log_file: Path, stdin: Any,
          timeout: float = 60.0) -> HeldApp:
    """Start the holder for ``spec`` (``run`` an app or ``restore`` an image, see
    ``_init``) and wait until the app runs (init writes its pid to ``ready``).

    Call it from the agent's main thread: the holder dies when the thread that started it
    ends (PR_SET_PDEATHSIG), which must be the agent's end, not a helper thread's."""
    ready.unlink(missing_ok=True)
    agent = os.getpid()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    # the spec (the app's environment among it) through a pipe, not argv: a command line
    # is readable by every user of the host
    spec_r, spec_w = os.pipe()
    with open(log_file, "ab") as out:
        try:
            holder = HeldApp([sys.executable, "-m", "mig.member.holder", str(spec_r), str(ready)],
                             stdin=stdin, stdout=out, stderr=out, pass_fds=(spec_r,),
                             preexec_fn=lambda: _die_with_parent(agent),
                             start_new_session=True)
        except OSError as exc:
            os.close(spec_w)
            raise HolderError(f"cannot start the app's holder: {exc.strerror}") from exc
        finally:
            os.close(spec_r)
    with os.fdopen(spec_w, "wb") as pipe:
        try:
            pipe.write(json.dumps(spec).encode())
        except BrokenPipeError:
            pass  # the holder is gone: said below
    deadline = Deadline(timeout)
    while True:
        ended = holder.poll() is not None  # (before the look: an app may end at once)
        try:
            pid, _, where = ready.read_text().partition(" ")
            holder.app_pid, holder.namespaced = int(pid), where == "ns"
            break
        except (OSError, ValueError):
            pass
        if ended or deadline.passed():
            holder.kill()
            holder.wait()
            raise HolderError(f"the app did not start: {_last_line(log_file)} (see {log_file})")
        time.sleep(0.01)
    try:
        holder.init_pid = _first_child(holder.pid)
    except HolderError:
        pass  # the app ran and has already ended, taking its namespace along: no init
    return holder


def _last_line(log_file: Path) -> str:
    try:
        lines = log_file.read_text(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    return lines[-1] if lines else "no output"


def _first_child(pid: int) -> int:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError as exc:
        raise HolderError(f"the app's holder {pid} is gone") from exc
    if not children:
        raise HolderError(f"the app's holder {pid} has no namespace init")
    return int(children[0])


# -- in the holder (python -m mig.member.holder SPEC_FD READY)

def _holder(spec: dict[str, Any], ready: Path) -> int:
    """Make the namespaces, fork init, pass signals on, end as the app ended."""
    libc = _libc()
    if libc.unshare(CLONE_NEWPID | CLONE_NEWNS) != 0:
        # Without CAP_SYS_ADMIN (a container's default): a restore needs its namespaces, an
        # app runs without them, its first process dying with init (the agent logs it).
        # In a container whose init is mig, the container's own pid namespace then ends
        # the app's processes with mig.
        err = ctypes.get_errno()
        if spec["mode"] != "run":
            print(f"mig holder: cannot make a pid and mount namespace: {os.strerror(err)}"
                  " (run mig as root)", file=sys.stderr, flush=True)
            return 1
        # no mount namespace, no binds: the app runs in the folder they would have shown
        spec = dict(spec, namespaced=False, cwd=spec.get("host_cwd", spec.get("cwd")),
                    log=spec.get("host_log", spec.get("log")), binds=[])
    alive_r, alive_w = os.pipe()  # init sees EOF here if the holder died before its prctl
    status_r, status_w = os.pipe()  # init writes the app's wait status here
    # held until each side has its handlers: none is lost, none runs the other's
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    init = os.fork()
    if init == 0:
        os.close(alive_w)
        os.close(status_r)
        code = 1
        try:
            code = _init(spec, ready, alive_r, status_w)
        except BaseException as exc:  # noqa: BLE001 - pid 1 must end with a line, not hang
            print(f"mig holder: {exc!r}", file=sys.stderr, flush=True)
        os._exit(code)
    os.close(alive_r)
    os.close(status_w)
    for sig in FORWARDED:
        signal.signal(sig, lambda signum, frame: _send(init, signum))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
    _, st = os.waitpid(init, 0)
    with os.fdopen(status_r, "rb") as got:
        text = got.read().decode(errors="replace").strip()
    if text:
        st = int(text)
    if os.WIFSIGNALED(st):  # end by the app's signal, so our parent sees it as the app's
        ended_by = os.WTERMSIG(st)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        signal.signal(ended_by, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [ended_by])
        os.kill(os.getpid(), ended_by)
        return 128 + ended_by
    return os.waitstatus_to_exitcode(st) if os.WIFEXITED(st) else 1


def _send(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _renice_namespace(nice: int) -> None:
    """Every thread of this pid namespace (its /proc is the namespace's) at ``nice``: CRIU
    restores the nice value an image was dumped with, and the primary's own checkpointer
    dumps at nice 10; a restored app runs at its member's priority instead."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue  # ended meanwhile
        for tid in tids:
            try:
                os.setpriority(os.PRIO_PROCESS, int(tid), nice)
            except OSError as exc:  # a lower nice needs CAP_SYS_NICE
                print(f"mig holder: cannot set nice {nice} on thread {tid}: {exc.strerror}",
                      file=sys.stderr, flush=True)
                return


def _init(spec: dict[str, Any], ready: Path, alive: int, status: int) -> int:
    """pid 1 of the new namespaces: die with the holder, mount, start or restore the app,
    pass signals on, reap everything orphaned here, and end (ending every process left in
    the namespace) when the app's first process ends.

    ``spec``: ``{"mode": "run", "command": [...], "env": {...}, "cwd": ..., "log": ...,
    "stdin": "null" or "inherit", "binds": [[here, there], ...], "host_cwd": ...,
    "host_log": ...}`` (a replica's folder bound at the primary's path: ``cwd`` and ``log``
    are in that path, ``host_cwd`` and ``host_log`` where they are when no namespace can be
    made) or ``{"mode":
    "restore", "images": ..., "root_pid": N, "criu": [...], "binds": [[here, there], ...],
    "nice": N}`` (nice: the restored threads' nice value; absent: as dumped).
    """
    libc = _libc()
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if select.select([alive], [], [], 0)[0]:  # EOF: the holder is already gone
        return 1
    app = 0
    pending: list[int] = []

    def forward(signum: int, frame: object) -> None:
        if app:
            _send(app, signum)
        else:
            pending.append(signum)

    for sig in FORWARDED:  # unhandled, they would not reach pid 1 at all
        signal.signal(sig, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)

    def mount(source: str | None, target: str, fstype: str | None, flags: int) -> None:
        if libc.mount(source and source.encode(), target.encode(), fstype and fstype.encode(),
                      flags, None) != 0:
            err = ctypes.get_errno()
            raise HolderError(f"mount {source} on {target}: {os.strerror(err)}")

    namespaced = spec.get("namespaced", True)
    if namespaced:
        # mounts of the host still reach the app; ours (the binds, /proc) stay here
        mount(None, "/", None, MS_REC | MS_SLAVE)
        for here, there in spec.get("binds", []):
            Path(there).mkdir(parents=True, exist_ok=True)
            mount(here, there, None, MS_BIND)
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    if spec["mode"] == "run":
        if namespaced:
            Path("/proc/sys/kernel/ns_last_pid").write_text(str(APP_PID - 1))
            prepare = prepare_child
        else:
            def prepare() -> None:
                prepare_child()
                libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

        # the app's files are opened here, in its mount namespace: CRIU looks the mount of
        # every open file up in the namespace it dumps from
        stdin = subprocess.DEVNULL if spec["stdin"] == "null" else None
        try:
            with open(spec["log"], "ab") as out:
                proc = subprocess.Popen(spec["command"], cwd=spec["cwd"], env=spec["env"],
                                        stdin=stdin, stdout=out, stderr=out,
                                        preexec_fn=prepare, start_new_session=True)
        except OSError as exc:
            print(f"mig holder: cannot start {spec['command'][0]}: {exc.strerror}",
                  file=sys.stderr, flush=True)
            return 127
        app = proc.pid
    else:
        run = subprocess.run([*spec["criu"], "restore", "-D", spec["images"], "-d",
                              "--file-locks", "-o", "restore.log", "-v2"])
        if run.returncode != 0:
            return run.returncode
        app = int(spec["root_pid"])
        if namespaced and spec.get("nice") is not None:
            _renice_namespace(int(spec["nice"]))
    for held_back in pending:
        _send(app, held_back)
    tmp = ready.with_name(ready.name + ".tmp")
    tmp.write_text(f"{app} {'ns' if namespaced else 'host'}")
    tmp.rename(ready)
    while True:  # reap everything orphaned into this namespace; end with the app
        try:
            pid, st = os.waitpid(-1, 0)
        except ChildProcessError:  # a restored app is not our child: wait for it to go
            time.sleep(0.2)
            try:
                os.kill(app, 0)
                continue
            except ProcessLookupError:
                return 0
        if pid == app:
            os.write(status, str(st).encode())
            return 0


if __name__ == "__main__":
    with os.fdopen(int(sys.argv[1]), "rb") as given:
        _spec = json.loads(given.read())
    sys.exit(_holder(_spec, Path(sys.argv[2])))
