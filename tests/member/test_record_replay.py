"""Record a program on a "primary" and replay it on a "backup" through the real broker:
one snippet per call family (tests/snippets), outputs compared byte for byte. Each snippet's
output differs between two native runs, so an identical replay output means the recorded
results really were replayed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_mig
from tests.deploy import need
from tests.harness import record, replay, write_app

SNIPPETS = Path(__file__).resolve().parents[1] / "snippets"
C_SNIPPETS = ["clocks", "random", "ident", "pipes", "sleeps", "tcp", "procs", "signals",
              "procfs", "bigio", "rawcalls", "dlthread", "msgs", "clockwaits", "fdctl", "vdsoclock",
              "brokenpipe", "mmsg", "sigwaits", "waitids"]


@pytest.fixture(scope="module")
def built() -> Path:
    subprocess.run(["make", "-s", "-C", str(SNIPPETS)], check=True)
    return SNIPPETS / "build"


def _native(command: list[str], folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([*command, "out.txt"], cwd=folder, check=True, timeout=30)
    return (folder / "out.txt").read_text()


def _statuses(name: str, bootstrap: str) -> list[dict]:
    """Every MemberStatus record of app ``name``'s control topic, oldest first."""
    return [json.loads(line)["record"] for line in run_mig(
        "log", "tail", name, "-t", "control", "--json", "-b", bootstrap, check=True
    ).stdout.splitlines() if '"mig.log.MemberStatus"' in line]


def _record_replay(tmp_path: Path, name: str, command: list[str], bootstrap: str,
                   capture: str | None = None, barrier_mode: str = "output"):
    prim, rep = tmp_path / "primary", tmp_path / "backup"
    app = write_app(prim, name, [*command, "out.txt"], bootstrap, capture=capture,
                    barrier_mode=barrier_mode)
    rec = record(app, tmp_path / "home-p")
    out = replay(app, rep, tmp_path / "home-r")
    assert out.returncode == 0, out.stdout + out.stderr
    status = _statuses(name, bootstrap)
    assert status and status[-1]["role"] == "REPLICA" and status[-1]["health"] == "stopped"
    # (a lag left at the end: the replica's log says whose calls, mig.replayer.calls_left_at_exit)
    assert status[-1]["lag_records"] == 0 and status[-1]["epoch"] == 1, out.stderr[-3000:]
    return rec, out, (prim / "out.txt").read_text(), (rep / "out.txt").read_text()


@pytest.mark.parametrize("snippet", C_SNIPPETS)
def test_snippet_replays_identically(snippet, built, tmp_path, settings, app_name):
    command = [str(built / snippet)]
    if snippet != "sleeps":  # its output is only as variable as the scheduler
        assert _native(command, tmp_path / "n1") != _native(command, tmp_path / "n2")
    rec, out, primary, backup = _record_replay(tmp_path, app_name, command,
                                               settings.bootstrap_servers)
    assert "app exit code 0" in rec.stdout
    assert primary and backup == primary
    if snippet == "signals":  # the shim's own signal for preemption, sent by the program
        assert "stkflt 1 handler kept" in primary, primary
        assert "winch 1 then default" in primary, primary  # SA_RESETHAND: once
    if snippet == "procfs":  # a directory of /proc, listed as on the primary
        assert re.search(r"/proc/self/fd: listed, [1-9]\d* fds", primary), primary
    if snippet == "pipes":  # a backup's placeholder would have seeked
        assert "lseek -1 errno 29\n" in primary, primary
    if snippet == "brokenpipe":  # a held write does not hide that the reader is gone
        assert "SIGPIPE default: read 5 'line '; the writer was killed by signal 13" in primary
        assert "SIGPIPE ignored: read 5 'line '; the writer exited 32" in primary, primary
    if snippet == "procs":  # an exec that failed, then one that did
        assert "exec'd after errno 2 " in primary, primary


def test_python_program_replays_identically(tmp_path, settings, app_name):
    command = [sys.executable, str(SNIPPETS / "py_snippet.py")]
    assert _native(command, tmp_path / "n1") != _native(command, tmp_path / "n2")
    _, _, primary, backup = _record_replay(tmp_path, app_name, command,
                                           settings.bootstrap_servers)
    assert "missing program: errno 2" in primary and "date 0 " in primary, primary
    assert "head 0 ['1', '2', '3']" in primary, primary
    assert backup == primary


# the first process goes on at once in replay (its reads are the log's), exits,
# and its namespace takes the child, still in its loop, with it
_CHILD_LEFT_BEHIND = """
import os, sys
r, w = os.pipe()
if os.fork() == 0:
    os.write(w, b"go")
    n = 0
    for i in range(20_000_000):  # no call: as long on a replica as here
        n += i
    for _ in range(10):
        os.getpid()
    os.write(w, b"done")
    os.read(r, 1)  # until killed with the app
    sys.exit(0)
os.read(r, 2)
os.read(r, 4)
open(sys.argv[1], "w").write("the child made its calls\\n")
"""


def test_a_child_left_behind_at_the_apps_exit_is_named_by_the_replica(tmp_path, settings,
                                                                      app_name):
    """When the app's first process exits on a replica, a process of it that had not yet
    taken the calls fed to it ends with it, and the final status counts those calls as not
    replayed: the replica's log says whose they are and where that process stopped."""
    (tmp_path / "left.py").write_text(_CHILD_LEFT_BEHIND)
    app = write_app(tmp_path / "primary", app_name,
                    [sys.executable, str(tmp_path / "left.py"), "out.txt"],
                    settings.bootstrap_servers)
    record(app, tmp_path / "home-p")
    out = replay(app, tmp_path / "backup", tmp_path / "home-r")
    assert out.returncode == 0, out.stderr
    left = [json.loads(line) for line in out.stderr.splitlines()
            if '"mig.replayer.calls_left_at_exit"' in line]
    assert [e["lpid"] for e in left] == ["1.1"], out.stderr[-3000:]  # the child, only
    assert left[0]["ring"] == "found" and left[0]["kind"] is not None
    status = _statuses(app_name, settings.bootstrap_servers)
    assert status[-1]["health"] == "stopped"
    assert status[-1]["lag_records"] == left[0]["calls"] >= 11  # 10 getpids and a write


def test_shared_file_mapping_is_warned_about_by_name(built, tmp_path, settings, app_name):
    _record_replay(tmp_path, app_name, [str(built / "procfs")], settings.bootstrap_servers)
    log = (tmp_path / "primary" / "state" / "mig-app.log").read_text()
    shared = (tmp_path / "primary" / "shared.dat").resolve()
    assert f"mig-shim: warning: MAP_SHARED mapping of {shared}" in log


def test_small_ring_wraps_many_times(built, tmp_path, settings, app_name):
    prim, rep = tmp_path / "primary", tmp_path / "backup"
    app = write_app(prim, app_name, [str(built / "manycalls"), "out.txt"],
                    settings.bootstrap_servers, barrier_mode="async",
                    env={"MIG_RING_BYTES": "65536"})
    rec = record(app, tmp_path / "home-p")
    # every call, none lost at exit: 20,000 of each, and libc's own getrandom of 8 bytes
    # at its first malloc (its tcache key: seen since capture is complete)
    assert "recorded 40001 calls" in rec.stdout
    out = replay(app, rep, tmp_path / "home-r")
    assert out.returncode == 0, out.stderr
    assert (rep / "out.txt").read_text() == (prim / "out.txt").read_text()


def test_an_async_primary_lets_records_gather_into_few_batches(built, tmp_path, settings,
                                                               app_name):
    """In async mode nothing waits for an acknowledgement: after a turn that sent records
    the agent waits for more (ASYNC_PACE_S, or until a ring passes half full), so a steady
    stream of calls for a second goes to the log in a batch per 2 ms of it or more (128
    batches, 7.8 ms each, here; 342, 2.9 ms each, in a CI run where the stream made 733,000
    calls and the ring's half-full doorbell rang more often), not in one per turn of an
    agent draining as fast as it can (981 batches before, one per 1.0 ms; each batch a
    Kafka request)."""
    app = write_app(tmp_path / "primary", app_name, [str(built / "clockstream"), "out.txt"],
                    settings.bootstrap_servers, barrier_mode="async")
    said = re.search(r"recorded (\d+) calls in (\d+) batches",
                     record(app, tmp_path / "home-p").stdout)
    made = re.fullmatch(r"calls (\d+) ms (\d+)\n",
                        (tmp_path / "primary" / "out.txt").read_text())
    assert said is not None and made is not None and int(said[1]) > int(made[1]) > 1000
    assert int(made[2]) / int(said[2]) >= 2.0, (said[0], made[0])  # ms of stream per batch


WAKES = ["eventfd", "pipe", "socketpair"]


@pytest.mark.parametrize("through", WAKES)
def test_a_write_to_an_eventfd_is_recorded_but_not_held(built, tmp_path, settings, app_name,
                                                        through):
    """evpingpong: two threads hand a count back and forth through two eventfds (or two
    pipes, or the two ends of a socketpair: a self-pipe), 500 rounds, as a thread pool
    wakes an event loop. Only the app's own threads read them, so in output mode a write
    to one is recorded and done at once, not held until a commit covers it: the rounds go
    to the log in a few batches (1 here; 1001, one per write, when each wake waited for a
    commit: Node.js took 5 to 6 ms a request so), and the backup replays the same count."""
    rec, _, primary, backup = _record_replay(
        tmp_path, app_name, [str(built / "evpingpong"), *([through] if through != "eventfd"
                                                          else [])],
        settings.bootstrap_servers)
    said = re.search(r"recorded (\d+) calls in (\d+) batches", rec.stdout)
    assert said is not None and int(said[1]) > 2000, rec.stdout
    assert int(said[2]) <= 50, said[0]
    assert re.fullmatch(r"count 1001 in_order 1 ms \d+\n", primary), primary
    assert backup == primary


def test_a_pipe_made_where_close_range_closed_a_file_is_recorded(built, tmp_path, settings,
                                                               app_name):
    """fdreuse: a regular file read, closed by close_range, and a pipe made by a raw pipe2
    at its fd number; 1000 rounds through the pipe. The shim's cached class of that number
    (a regular file: I/O not recorded) must go with the close: the pipe's 1000 reads are
    recorded as its writes are (about 1000 calls fewer when they were not, and a backup
    read its own pipe instead of the log), and the backup replays the same sum."""
    rec, _, primary, backup = _record_replay(tmp_path, app_name, [str(built / "fdreuse")],
                                             settings.bootstrap_servers, barrier_mode="async")
    said = re.search(r"recorded (\d+) calls", rec.stdout)
    assert said is not None and int(said[1]) > 3000, rec.stdout  # clock, write, read x 1000
    assert primary.startswith("pipe at the file's number: yes, sum "), primary
    assert backup == primary


@pytest.mark.parametrize("through", WAKES)
def test_a_write_to_an_eventfd_another_process_holds_is_held(built, tmp_path, settings,
                                                             app_name, through):
    """evpingpong fork: the same 500 rounds between a process and its forked child. The
    child's outputs wait for the child's own records, not its parent's, so a parent's
    write the child reads is an output like any other: held until committed, each round
    waiting a commit (at least one batch a round), else a failover could replay the
    parent to write again what the child already took."""
    rec, _, primary, backup = _record_replay(
        tmp_path, app_name, [str(built / "evpingpong"), "fork",
                             *([through] if through != "eventfd" else [])],
        settings.bootstrap_servers)
    said = re.search(r"recorded (\d+) calls in (\d+) batches", rec.stdout)
    assert said is not None and int(said[2]) >= 500, rec.stdout
    assert re.fullmatch(r"count 1001 in_order 1 ms \d+\n", primary), primary
    assert backup == primary


def test_the_release_thread_of_held_outputs_wakes_only_threads_that_wait(built, tmp_path,
                                                                         settings, app_name):
    """evpingpong fork through pipes: 1,000 held outputs (500 rounds, each process's writes
    released by its own release thread). Each change of the hold queue made a futex wake
    whether a thread waited for one or not: the release thread after every item it wrote,
    woke nobody (376 and 469 such wakes here; futex calls were about a tenth of a Redis
    primary's CPU in output mode). Now a change wakes only when a thread sleeps on the
    queue. Counted by strace over the app's threads (their comm is the program's): the
    wakes that woke nobody."""
    calls, _ = _app_futex_calls(tmp_path, app_name,
                                [str(built / "evpingpong"), "fork", "pipe", "out.txt"],
                                settings.bootstrap_servers, ("evpingpong",))
    assert re.fullmatch(r"count 1001 in_order 1 ms \d+\n",
                        (tmp_path / "primary" / "out.txt").read_text())
    wakes = [ln for ln in calls if "FUTEX_WAKE" in ln]
    for_nobody = [ln for ln in wakes if ln.endswith("= 0")]
    assert len(wakes) >= 1000, len(wakes)  # the app's wakes of its release threads are seen
    assert len(for_nobody) < 50, (len(for_nobody), for_nobody[:5])


def test_outputs_a_commit_already_covers_do_not_ring_the_agent(tmp_path, settings, app_name):
    """A shell loop echoes 1,000 lines into a pipe to cat: 1,000 held outputs in a burst.
    The release thread comes to each in turn, and one commit covers many; each still rang
    the agent's doorbell (a futex wake of the agent's sleep, a turn of it that sent the
    few records since: 20 to 159 rings by the app's threads against 9 to 23 waits for a
    commit, and 307 to 484 batches, here). Now a barrier already covered, or already asked
    for by another thread, rings nothing: 9 rings, 11 or 12 waits, 44 to 133 batches."""
    need("sh", "dash")
    calls, said = _app_futex_calls(
        tmp_path, app_name,
        ["/bin/sh", "-c", "for i in $(seq 1 1000); do echo line $i; done | cat > out.txt"],
        settings.bootstrap_servers, ("sh", "cat"))
    assert (tmp_path / "primary" / "out.txt").read_text().count("\n") == 1000
    # the rings' words (a shared futex), not libc's: a ring is followed by a wait for the
    # commit it asked for, so rings beyond the waits are the agent woken for nothing
    rings = [ln for ln in calls if "FUTEX_WAKE," in ln]
    waits = [ln for ln in calls if "FUTEX_WAIT," in ln]
    assert len(rings) <= len(waits) + 5, (len(rings), len(waits), said)


def _app_futex_calls(tmp_path: Path, name: str, command: list[str], bootstrap: str,
                     comms: tuple[str, ...]) -> tuple[list[str], str]:
    """Record ``command`` under strace: the futex wakes and waits made by the app's
    threads (those whose comm is one of ``comms``), and the primary's output."""
    strace = need("strace", "strace")
    trace = tmp_path / "futex.txt"
    app = write_app(tmp_path / "primary", name, command, bootstrap)
    env = {**os.environ, "MIG_HOME": str(tmp_path / "home")}
    out = subprocess.run([strace, "-f", "--decode-pids=comm", "-o", str(trace), "-e",
                          "trace=futex", sys.executable, "-m", "mig", "primary", "start",
                          str(app)], env=env, capture_output=True, text=True, timeout=180,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stdout + out.stderr
    return [ln for ln in trace.read_text().splitlines() if "FUTEX_WA" in ln
            and any(f"<{comm}>" in ln for comm in comms)], out.stdout


def test_held_outputs_arrive_in_order_across_close_shutdown_and_exit(built, tmp_path, settings,
                                                                     app_name):
    _, _, primary, backup = _record_replay(tmp_path, app_name, [str(built / "held")],
                                           settings.bootstrap_servers)
    assert primary == ("after close: 'first second' then EOF\n"
                       "after shutdown: 'before shutdown' then EOF\n"
                       "from child: 'from the child' then EOF\n"
                       "child exit 0\n"
                       "dup2 over a held fd: the reader saw its bytes, then EOF\n")
    assert backup == primary


def test_raw_calls_are_not_replayed_without_complete_capture(built, tmp_path, settings,
                                                            app_name):
    """The control for rawcalls: with only the symbol wrappers (capture = "symbols") its raw
    getrandom and stdio reads of /dev/urandom are not recorded, so the backup's output
    differs. Complete capture is what makes the snippet replay (the test above)."""
    _, _, primary, backup = _record_replay(tmp_path, app_name, [str(built / "rawcalls")],
                                           settings.bootstrap_servers, capture="symbols")
    assert primary and backup != primary


@pytest.mark.parametrize("patch", ["serialized", "threads-first", "parallel", "off"])
def test_busy_system_call_sites_of_libc_are_patched_not_trapped(built, tmp_path, settings,
                                                               app_name, patch):
    """patched: 2,000 raw getrandom calls alone, then two threads taking 2,000 turns each
    through a condition variable, each turn a raw getrandom: system calls libc makes at its
    own sites. The shim patches a site once it trapped 8 times (shim/src/mig_patch.c): the
    calls after that are made without a signal, and the app replays byte for byte. Also
    patched: a site where another thread waits in the kernel, inside libc's read, called
    by the shim's wrapper; that thread gets its bytes.
    - serialized (the default): nearly every call is made at a patched site;
    - parallel: sites are patched while the process has one thread (getrandom's, which the
      turns then use too), not once it has threads (the condition variable's futex calls
      trap);
    - MIG_PATCH=0 (the control): every one of those calls traps;
    - threads-first: serialized, the twelve threads made first, so clone3's site is patched
      when the first write starts the shim's release thread of held outputs (its
      pthread_create, the shim's own call, reaches the patched site)."""
    threads = "parallel" if patch == "parallel" else None
    env = {"MIG_PATCH": "0"} if patch == "off" else None
    prim, rep = tmp_path / "primary", tmp_path / "backup"
    argv = [str(built / "patched"), "out.txt", "2000"]
    if patch == "threads-first":
        argv.append(patch)
    app = write_app(prim, app_name, argv, settings.bootstrap_servers, env=env,
                    threads=threads)
    rec = record(app, tmp_path / "home-p")
    out = replay(app, rep, tmp_path / "home-r")
    assert out.returncode == 0, out.stdout + out.stderr
    primary = (prim / "out.txt").read_text()
    assert primary.startswith("read x, the blocked reader got 'through'\n2000 turns, random"
                              " mix "), primary
    assert (rep / "out.txt").read_text() == primary
    found = re.search(r"(\d+) trapped, (\d+) at patched sites", rec.stdout)
    assert found, rec.stdout
    trapped, patched = int(found[1]), int(found[2])
    print(f"\npatched, {patch}: {trapped} trapped, {patched} at patched sites")
    if patch in ("serialized", "threads-first"):
        assert patched >= 5900 and trapped < 400, (trapped, patched)
    elif patch == "parallel":
        assert patched >= 5900 and trapped >= 4000, (trapped, patched)
    else:
        assert patched == 0 and trapped >= 8000, (trapped, patched)


def test_held_reply_of_a_raw_closed_socket_reaches_its_own_peer(built, tmp_path, settings,
                                                                 app_name):
    """A socket closed with syscall(SYS_close) while its reply is held: the reply must leave
    on that socket, not on the next one given the same number (a data leak when the close
    went unseen)."""
    _, _, primary, backup = _record_replay(tmp_path, app_name, [str(built / "rawclose")],
                                           settings.bootstrap_servers)
    assert primary == ("same number again: yes\n"
                       "peer a: 'reply for a' then EOF\n"
                       "peer b: 'reply for b' then EOF\n")
    assert backup == primary


def test_datagram_peers_and_passed_fds_are_what_the_program_would_see(built, tmp_path,
                                                                      settings, app_name):
    """recvfrom's peer address and recvmsg's ancillary data reach the program on the primary
    as they would natively (a UDP echo answers the right port; an fd passed with SCM_RIGHTS
    arrives and is read), and a backup gets the same from the log."""
    _, _, primary, backup = _record_replay(tmp_path, app_name, [str(built / "msgs")],
                                           settings.bootstrap_servers)
    lines = primary.splitlines()
    server = re.fullmatch(r"server got 4 'ping' from port (\d+) \(client is (\d+)\), len 16",
                          lines[0])
    assert server and server[1] == server[2] != "0", primary
    assert lines[1:] == ["client got 4 'pong' from the server: yes",
                         "recvmsg 2 'fd' controllen 24 flags 0 passed fd yes",
                         "read 21 'through the passed fd'"]
    assert backup == primary


def test_a_system_call_mig_cannot_record_stops_the_program_naming_it(built, tmp_path,
                                                                      settings, app_name):
    """A raw io_uring_setup: the primary's program is stopped at it (exit 86), and
    `mig primary start` says which call it was and where it came from, in one line."""
    app = write_app(tmp_path / "primary", app_name, [str(built / "refused"), "out.txt"],
                    settings.bootstrap_servers)
    rec = run_mig("primary", "start", str(app), env={"MIG_HOME": str(tmp_path / "home")})
    assert rec.returncode == 86, rec.stdout + rec.stderr
    assert "app exit code 86" in rec.stdout
    said = [line for line in rec.stderr.splitlines() if line.startswith("mig: error:")]
    assert len(said) == 1 and re.fullmatch(
        r"mig: error: the shim stopped the app: system call io_uring_setup \(425\) from"
        r"( libc.so.6\+0x[0-9a-f]+ called from)? refused\+0x[0-9a-f]+: not supported under"
        r" mig \(docs/interceptor.md\)", said[0]), said
    assert (tmp_path / "primary" / "out.txt").read_text() == "before\n"


def test_an_app_killed_by_a_signal_mig_did_not_send_fails_mig_primary(tmp_path, settings,
                                                                      app_name):
    """The app killed by SIGSEGV, not by the SIGTERM mig sends to stop it: `mig primary
    start` exits 128 + 11 and says so in one line (it exited 0)."""
    app = write_app(tmp_path / "primary", app_name, ["/bin/sh", "-c", "kill -SEGV $$"],
                    settings.bootstrap_servers)
    rec = run_mig("primary", "start", str(app), env={"MIG_HOME": str(tmp_path / "home")})
    assert rec.returncode == 128 + signal.SIGSEGV, rec.stdout + rec.stderr
    assert "app exit code -11" in rec.stdout
    said = [line for line in rec.stderr.splitlines() if line.startswith("mig: error:")]
    assert said == ["mig: error: the app was killed by SIGSEGV"]


def test_a_successful_call_leaves_errno_as_it_was(built, tmp_path, settings, app_name):
    """In sync mode every call waits for its commit on a futex, in 20 ms slices; a slice
    that ran out (ETIMEDOUT) used to leave its errno to the program after a call that
    succeeded (2 of 2,000 calls in one run). Natively and under mig: never."""
    prim, rep = tmp_path / "primary", tmp_path / "backup"
    app = write_app(prim, app_name, [str(built / "errnokeep"), "out.txt"],
                    settings.bootstrap_servers, barrier_mode="sync")
    record(app, tmp_path / "home-p")
    out = replay(app, rep, tmp_path / "home-r")
    assert out.returncode == 0, out.stdout + out.stderr
    primary = (prim / "out.txt").read_text()
    assert primary == "errno changed by a successful call 0 times (last 0)\n"
    assert (rep / "out.txt").read_text() == primary


@pytest.mark.parametrize("barrier_mode", ["output", "sync"])
def test_sendfile_and_splice_to_a_socket_serve_what_a_native_run_serves(
        built, tmp_path, settings, app_name, barrier_mode):
    """A server answering with a file through sendfile (an offset pointer, the file's own
    position) and splice (file to pipe to socket), as nginx's `sendfile on` does: the client
    gets the file, the offsets end where a native run's do -- also when a nonblocking socket
    fills up and a write is short, which sync mode makes real -- and the backup replays it
    identically. Only the port differs from a native run."""
    command = [str(built / "sendfile")]
    native = _native(command, tmp_path / "n1")
    rec, _, primary, backup = _record_replay(tmp_path, app_name, command,
                                             settings.bootstrap_servers,
                                             barrier_mode=barrier_mode)
    assert "app exit code 0" in rec.stdout
    assert primary.splitlines()[1:] == native.splitlines()[1:], primary
    assert " no" not in native and "EINVAL" in native, native
    assert backup == primary


def test_a_replica_without_workdir_runs_in_a_fresh_copy_of_its_own(built, tmp_path, settings,
                                                                   app_name):
    """Without --workdir a replica never writes in the app's own folder (a primary on the
    same host runs there): it runs in MIG_HOME/replicas/NAME/MEMBER, made at each start as
    a copy of the app's folder without its state_dir, and its app's output goes to
    state/mig-app.log there, where the primary's goes; the last run's folder is kept."""
    prim = tmp_path / "primary"
    app = write_app(prim, app_name, [str(built / "manycalls"), "out.txt"],
                    settings.bootstrap_servers, barrier_mode="async")
    (prim / "deployed.cfg").write_text("a file deployed with the app\n")
    record(app, tmp_path / "home-p")
    before = {p: p.read_bytes() for p in prim.rglob("*") if p.is_file()}
    home = tmp_path / "home-r"
    folder = home / "replicas" / app_name / "r1"
    for run in (1, 2):
        out = run_mig("replica", "follow", str(app), "--member", "r1", "--idle-exit", "5",
                      env={"MIG_HOME": str(home)}, timeout=120)
        assert out.returncode == 0, out.stderr
        assert f"runs the app in {folder}, a fresh copy of {prim}" in out.stderr
        if run == 2:
            assert f"(the last run's: {folder.with_name('r1.previous')})" in out.stderr
    assert {p: p.read_bytes() for p in prim.rglob("*") if p.is_file()} == before
    assert (folder / "deployed.cfg").read_text() == "a file deployed with the app\n"
    assert (folder / "out.txt").read_text() == (prim / "out.txt").read_text()
    replayed = (folder / "state" / "mig-app.log").read_text()
    assert replayed == (prim / "state" / "mig-app.log").read_text()


def test_a_replica_runs_its_app_at_the_primarys_path(tmp_path, settings, app_name):
    """A replica's folder is bound at the app's own path in the replica's mount namespace:
    a program that takes its path from getcwd() (node resolving its script, here pwd) sees
    the primary's, of the same length, and replays; the files land in the replica's
    folder, and the app's own folder is left alone."""
    prim = tmp_path / "primary"
    app = write_app(prim, app_name, ["/bin/sh", "-c", "pwd; echo made > made.txt"],
                    settings.bootstrap_servers)
    record(app, tmp_path / "home-p")
    (prim / "made.txt").unlink()
    rep = tmp_path / "a-replica-folder-with-a-longer-name"
    out = replay(app, rep, tmp_path / "home-r")
    assert out.returncode == 0, out.stderr
    said = (rep / "state" / "mig-app.log").read_text()
    assert said == (prim / "state" / "mig-app.log").read_text() == f"{prim}\n"
    assert (rep / "made.txt").read_text() == "made\n"
    assert not (prim / "made.txt").exists()


def test_memory_protection_keys_are_absent_on_every_member(tmp_path, settings, app_name):
    """pkey_alloc depends on the CPU, which members may not share: every member answers as
    a host without protection keys (ENOSPC), so a program that would use them (V8, which
    node runs) takes the same path on all of them. Before, the call was refused (exit 86)."""
    code = ("import ctypes, errno, sys; libc = ctypes.CDLL(None, use_errno=True);"
            " a = libc.syscall(330, 0, 0), errno.errorcode.get(ctypes.get_errno());"
            " f = libc.syscall(331, 1), errno.errorcode.get(ctypes.get_errno());"
            " open(sys.argv[1], 'w').write(f'{a[0]} {a[1]} {f[0]} {f[1]}')")
    _, _, primary, backup = _record_replay(tmp_path, app_name, [sys.executable, "-c", code],
                                           settings.bootstrap_servers)
    assert primary == "-1 ENOSPC -1 EINVAL"
    assert backup == primary


def test_an_idle_primary_agent_sleeps_until_its_next_timer(tmp_path, settings, app_name):
    """An agent with nothing to send sleeps until its nearest timer (the control topic's
    read, a heartbeat, a commit: about 20 turns a second), woken by the app's first record
    or a new process's bell (mig/ring/doorbell.py); it turned 200 times a second before,
    4 to 5% of a core for an app that does nothing. A shell that sleeps 3 s, then forks a
    child whose output reaches its file."""
    app = write_app(tmp_path / "primary", app_name,
                    ["sh", "-c", "sleep 3; /bin/echo done > out.txt"],
                    settings.bootstrap_servers)
    rec = record(app, tmp_path / "home-p")
    assert (tmp_path / "primary" / "out.txt").read_text() == "done\n"
    turns = re.search(r"\"turns\": (\d+)", rec.stderr)
    assert turns is not None, rec.stderr
    assert int(turns[1]) < 3 * 60, f"{turns[1]} turns in an app's 3 s of sleep"


def test_a_replica_whose_app_stops_taking_calls_does_not_end_as_done(
        tmp_path, settings, app_name):
    """--idle-exit stops a replica once the log has had nothing new for that long. A shell
    reads a flag file (read for real on each host, not recorded): the primary's says go,
    and the shell runs date; the replica's says wait, and its shell spins at no call. The
    replica used to stop with exit 0 and "replayed N calls" while its app had not taken
    the log's fork of date; it now stops with an error naming that call."""
    script = "read f < flag; if [ $f = wait ]; then while :; do :; done; fi; /bin/date > out.txt"
    app = write_app(tmp_path / "primary", app_name, ["/bin/sh", "-c", script],
                    settings.bootstrap_servers)
    (tmp_path / "primary" / "flag").write_text("go\n")
    record(app, tmp_path / "home-p")
    assert (tmp_path / "primary" / "out.txt").exists()
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "flag").write_text("wait\n")
    run = replay(app, backup, tmp_path / "home-r", idle_exit=2, timeout=60)
    assert run.returncode == 1, (run.returncode, run.stdout, run.stderr[-2000:])
    assert "has not made its next recorded call: seq" in run.stderr, run.stderr[-2000:]
    assert not (backup / "out.txt").exists()

