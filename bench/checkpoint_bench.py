"""Checkpoints, measured in one run against one embedded broker.

Three test hosts (network namespaces, tests/testnet.py) and a broker on the root side all
of them reach; tests/apps' kvserver, run through the real ``mig primary start`` /
``mig replica follow`` / ``mig checkpoint`` / ``mig migrate`` commands
(tests/deploy.py's ``Deployment``: the primary on host 0, a replica on host 1). The phases
run one after the other, every process of the test hosts killed between them:

1. **Cold migration without mig** (the baseline of 5). kvserver started natively on host 0
   (no mig), given the same state as the app of phase 4 (``BALLAST``, then the SETs), a
   client writing to it every 2 ms (tests/apps/ackclient.py, alternating host 0 and
   host 2 after an error), then ``criu dump`` (the process stops), a copy of the image
   folder, ``criu restore`` on host 2 in a new pid and mount namespace, as mig restores.
   The client-visible gap is the longest time between two acks. CRIU needs
   ``--tcp-close`` (the client's connection is restored closed, the client reconnects to
   the new address) and ``--network-lock skip`` (no iptables on the test hosts). If CRIU
   cannot dump the server (CRIU 4.1 cannot dump any TCP socket on Linux 6.16 and later:
   the kernel restricted ``SO_PASSCRED``/``SO_PASSSEC`` to Unix and netlink sockets,
   fixed in CRIU 4.2), the error is reported and the same dump, copy and restore are timed
   on a process holding the same amount of memory and no socket: the floor of a cold
   migration's gap, without the client's reconnection.
2. **Checkpoint duration and size against RSS, and the primary's stall** (1 and 2). An
   app with ``BALLAST 100`` then ``BALLAST 500`` (MiB); after each, once the replica has
   replayed it, a client writes to the primary every 2 ms for a few seconds (the
   baseline), then ``mig checkpoint NAME`` while it goes on. Figures: the RSS of the
   replica's app process (``VmRSS``), the archive's size (the manifest's
   ``total_size``), how long the replica's app was held (``held_ms`` of the replica's
   ``mig.replayer.checkpoint`` log line), the replica's time from the cut to that line
   (``total_ms``: the manifest stored and the calls before the oldest kept checkpoint
   deleted), the time from the request to ``mig checkpoint`` printing the stored
   manifest, and the worst gap between two consecutive acks of the client during the
   checkpoint against the worst one before it; and the worst gap in each stage of the
   checkpoint (request -> the cut starts, the app held, packing, storing and trimming,
   then until ``mig checkpoint`` printed it; the stages' bounds from the replica's log
   line: its time, ``total_ms`` and ``held_ms``).
3. **Late join replaying the whole log** (the baseline of 3). An app without checkpoints
   (``[checkpoints] enabled = false``): ``BALLAST 100`` and 100,000 SETs (four pipelined
   connections), a DUMP on the primary, then ``mig replica follow --from-start`` on
   host 2; the time from its start until its replay of that DUMP writes a file identical
   to the primary's.
4. **Late join from a checkpoint, and the compacted topic** (3 and 4). An app with
   ``keep = 2`` and ``[topics] checkpoint_segment_ms = 1000``: ``BALLAST 100``, then the
   same 100,000 SETs in five parts with ``mig checkpoint`` after each of the first four,
   a DUMP, then ``mig replica follow`` on host 2, which restores the newest checkpoint and
   replays the last part. Timed as in 3, split at its ``mig.replayer.restored`` log line
   (start -> restored: reading the manifests, fetching and checking the chunks,
   unpacking, ``criu restore``; restored -> caught up: replaying the calls after the
   checkpoint). Then the size of the checkpoints topic on the broker's disk (the
   ``.log`` segment files of its partition folder, not those already marked for
   deletion) against the live manifests' ``total_size``: right after the fourth
   checkpoint, and again at the end of the run, after a bounded wait for the log cleaner.
5. **mig migrate** (5). On the app of 4, the same client as in 1 (2 ms apart, all three
   addresses round robin): ``mig migrate NAME --to host1`` (the replica that has run
   since the start), then ``--to host2`` (the replica restored from the checkpoint). The
   client-visible gap is the longest time between two acks, as in 1. (Only the first
   when the late join of 4 did not work.)

Nothing asserts on timing: the table at the end says which target each figure met or
missed. A phase that goes wrong is reported with what was seen, and the run goes on with
the next phase.

Needs root (network namespaces, CRIU). Run: .venv/bin/python bench/checkpoint_bench.py
[--quick] [--keep]  (about 4 minutes; --quick: 20 and 100 MiB, 20,000 SETs)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/ (the test hosts, the test apps' clients)

import benchlib  # noqa: E402 - a sibling of this script
from benchlib import count_lines, machine, percentile, print_table  # noqa: E402

from mig.broker.node import free_ports  # noqa: E402
from mig.checkpoint.criu import find_criu  # noqa: E402
from mig.checkpoint.store import list_manifests  # noqa: E402
from mig.kafka.clients import consumer, end_offsets  # noqa: E402
from tests.apps.ackclient import run_writes  # noqa: E402
from tests.apps.client import dump, request  # noqa: E402
from tests.deploy import Deployment  # noqa: E402
from tests.testnet import hosts_and_broker  # noqa: E402

APPS = ROOT / "tests" / "apps"
KVSERVER = APPS / "build" / "kvserver"
INTERVAL_S = 0.002  # the steady client: between the starts of successive writes
MAX_WRITES = 1_000_000  # a client stops on its stop file well before this
TARGETS = {"stall_ms": 20.0, "late_join_s": 10.0, "migrate_ms": 300.0}


class BenchFailed(Exception):
    """A phase could not be completed: what was expected and what was seen."""


@dataclass
class Sizes:
    ballasts: tuple[int, ...]  # MiB, phase 2
    late_mb: int  # MiB, phases 1, 3, 4
    records: int  # SETs, phases 1, 3, 4
    native_rounds: int
    baseline_s: float  # the client alone before each checkpoint
    clean_wait_s: float  # bounded wait for the log cleaner at the end


@dataclass
class CkptFigures:
    mb: int
    rss_mib: float | None = None
    size: int = 0
    chunks: int = 0
    held_ms: int | None = None
    total_ms: int | None = None
    request_s: float = 0.0
    base_worst_ms: float = 0.0
    base_p99_ms: float = 0.0
    base_acks: int = 0
    during_worst_ms: float = 0.0
    during_p99_ms: float = 0.0
    during_acks: int = 0
    during_s: float = 0.0
    # worst gap (ms) in each stage: request -> the cut starts, the app held (cut and
    # dump), packing, storing and trimming, then until mig checkpoint printed it
    stages: dict[str, float] = field(default_factory=dict)


@dataclass
class AloneFigures:
    """A checkpoint of a primary that no replica follows (its local checkpointer)."""
    what: str
    size: int = 0
    took_ms: int = 0  # checkpointer started -> exited (mig.recorder.checkpoint)
    held_ms: int = 0  # the checkpointer's own app held (not the primary's)
    request_s: float = 0.0
    base_worst_ms: float = 0.0
    during_worst_ms: float = 0.0
    during_p99_ms: float = 0.0
    during_acks: int = 0


@dataclass
class NativeRound:
    what: str  # "kvserver" or "memory only"
    dump_s: float = 0.0
    copy_s: float = 0.0
    restore_s: float = 0.0  # restore started -> restored (kvserver: answering)
    image_bytes: int = 0
    gap_s: float | None = None  # client-visible (kvserver only)


@dataclass
class Results:
    ckpts: list[CkptFigures] = field(default_factory=list)
    alone: list[AloneFigures] = field(default_factory=list)
    native: list[NativeRound] = field(default_factory=list)
    native_error: str = ""
    native_rss_mib: float | None = None
    from_start_s: float | None = None
    from_start_calls: int | None = None
    late_s: float | None = None
    late_restored_s: float | None = None  # start -> restored log line
    late_restore_ms: int | None = None  # the criu restore part (restore_ms)
    late_replay_s: float | None = None  # restored -> caught up
    late_after_calls: int | None = None  # calls-topic offsets after the checkpoint
    late_calls: int | None = None  # calls-topic offsets in all
    late_ckpt_size: int | None = None
    late_rss_mib: float | None = None
    topic_after4: tuple[int, int, int] | None = None  # (disk bytes, segments, live bytes)
    topic_end: tuple[int, int, int] | None = None
    topic_end_wait_s: float = 0.0
    b_sizes: list[int] = field(default_factory=list)  # phase 4's checkpoint sizes
    migrations: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------ helpers


def _copy_images(images: Path, moved: Path, r: NativeRound) -> Path:
    """The cold migration's copy step: the images to another folder, timed and sized."""
    t = time.monotonic()
    shutil.copytree(images, moved)
    r.copy_s = time.monotonic() - t
    r.image_bytes = sum(f.stat().st_size for f in moved.iterdir())
    return moved


def wait_for(cond, timeout: float, what: str, step: float = 0.05) -> None:  # noqa: ANN001
    benchlib.wait_for(cond, timeout, what, step, error=BenchFailed)


def rss_mib(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def program_pid(pids: list[int], name: str) -> int | None:
    """The first of ``pids`` whose program (argv[0]) is called ``name``."""
    for pid in pids:
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            continue
        if Path(argv0).name == name:
            return pid
    return None


def log_events(path: Path, event: str) -> list[dict[str, Any]]:
    out = []
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def log_time(event: dict[str, Any]) -> float:
    """A JSON log line's timestamp (ISO, UTC) as seconds since the epoch."""
    return dt.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def ack_times(ack_log: Path) -> list[float]:
    try:
        lines = ack_log.read_text().splitlines()
    except OSError:
        return []
    return [json.loads(line)["t_ack"] for line in lines if line]


def gaps_within(times: list[float], start: float, end: float) -> list[float]:
    """Intervals between consecutive acks that overlap [start, end] (seconds)."""
    return [b - a for a, b in zip(times, times[1:], strict=False) if b >= start and a <= end]


def same_file(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()
    except OSError:
        return False


def load_sets(host: str, port: int, start: int, count: int, conns: int = 4,
              window: int = 256, timeout: float = 60.0) -> float:
    """SET k{i:06d} v{i} for i in [start, start + count): ``conns`` connections, each
    sending ``window`` requests before reading their replies (the server handles
    pipelining); every reply must be ``OK ...``. Seconds it took."""
    errors: list[str] = []
    started = time.monotonic()

    def run(keys: range) -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout) as sock:
                buf = b""
                for lo in range(0, len(keys), window):
                    batch = keys[lo:lo + window]
                    sock.sendall(b"".join(f"SET k{i:06d} v{i}\n".encode() for i in batch))
                    for i in batch:
                        while b"\n" not in buf:
                            chunk = sock.recv(65536)
                            if not chunk:
                                raise ConnectionError("the server closed the connection")
                            buf += chunk
                        line, _, buf = buf.partition(b"\n")
                        if not line.startswith(b"OK"):
                            raise BenchFailed(f"SET k{i:06d}: {line[:80]!r}")
        except (OSError, BenchFailed) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    per = -(-count // conns)
    threads = [threading.Thread(target=run, args=(range(start + j * per,
                                                       min(start + count, start + (j + 1) * per)),),
                                daemon=True) for j in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout * 10)
    if errors or any(t.is_alive() for t in threads):
        raise BenchFailed(f"loading {count} SETs: {errors or 'a connection hung'}")
    return time.monotonic() - started


def topic_disk(data_dir: Path, topic: str) -> tuple[int, int]:
    """(bytes of the live ``.log`` segment files, their number) of every partition of
    ``topic`` on the broker's disk; segments already marked for deletion are not counted
    (Kafka removes them ``file.delete.delay.ms``, 60 s, after compaction replaced them)."""
    total = segments = 0
    for folder in data_dir.glob(f"{topic}-*"):
        if not folder.name[len(topic) + 1:].isdigit():
            continue
        try:
            for f in folder.iterdir():
                if f.name.endswith(".log"):
                    total += f.stat().st_size
                    segments += 1
        except OSError:
            pass
    return total, segments


class Writer:
    """tests/apps/ackclient.run_writes in a thread, until its stop file appears."""

    def __init__(self, addrs: list[tuple[str, int]], ack_log: Path, prefix: str) -> None:
        self.ack_log = ack_log
        self.stop_file = ack_log.with_suffix(".stop")
        self.out: dict[str, Any] = {}
        self.started = time.time()

        def run() -> None:
            self.out["report"] = run_writes(addrs, MAX_WRITES, ack_log, prefix=prefix,
                                            deadline_s=300, per_op_timeout_s=1.0,
                                            interval_s=INTERVAL_S, stop_file=self.stop_file)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def acks(self) -> int:
        return count_lines(self.ack_log)

    def wait_acks(self, n: int, timeout: float, what: str) -> None:
        wait_for(lambda: self.acks() >= n or not self.thread.is_alive(), timeout, what,
                 step=0.005)
        if self.acks() < n:
            raise BenchFailed(f"the client stopped after {self.acks()} acks ({what}):"
                              f" {self.out.get('report')}")

    def stop(self) -> list[float]:
        self.stop_file.touch()
        self.thread.join(30)
        return ack_times(self.ack_log)


# ------------------------------------------------------------------------ the bench


class Bench:
    def __init__(self, tmp: Path, sizes: Sizes) -> None:
        self.tmp = tmp
        self.sizes = sizes
        self.net: Any = None
        self.broker: Any = None
        self.res = Results()
        self.deps: list[Deployment] = []
        self.criu = find_criu()
        self.only = ""  # --only: run the phases whose name holds this

    # -- common
    @property
    def ips(self) -> list[str]:
        return self.net.host_ips

    def clear_hosts(self) -> None:
        """Kill every process of every test host (the apps, mig, restored images)."""
        for h in range(len(self.ips)):
            self.net.signal(h, signal.SIGKILL)
        for dep in self.deps:
            dep.stop()
        try:
            wait_for(lambda: not any(self.net.pids(h) for h in range(len(self.ips))), 20,
                     "the test hosts to be empty", step=0.1)
        except BenchFailed:
            pass

    def mig(self, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mig", *args, "--bootstrap",
                               self.broker.settings.bootstrap_servers],
                              capture_output=True, text=True, timeout=timeout)

    def checkpoint(self, dep: Deployment, timeout: float = 240) -> tuple[str, float]:
        """``mig checkpoint NAME``: (checkpoint id, seconds until it printed it)."""
        started = time.monotonic()
        run = self.mig(["checkpoint", dep.name, "--timeout", str(int(timeout))], timeout + 30)
        took = time.monotonic() - started
        if run.returncode != 0 or not run.stdout.startswith("checkpoint "):
            raise BenchFailed(f"mig checkpoint exited with {run.returncode}:"
                              f" {(run.stdout + run.stderr).strip()[-600:]}")
        return run.stdout.split()[1].rstrip(":"), took

    def ballast(self, dep: Deployment, mb: int) -> None:
        """``BALLAST MB`` on the primary (MB MiB of state from 8 random bytes)."""
        reply = request(self.ips[0], dep.port, f"BALLAST {mb}", timeout=120)
        if not reply.startswith(f"BALLAST {mb} "):
            raise BenchFailed(f"BALLAST {mb}: {reply}")

    def checkpoint_under_client(self, dep: Deployment, ack_log: str, prefix: str
                                ) -> tuple[str, float, list[float], float, float, list[float],
                                           list[float]]:
        """``mig checkpoint`` while a client writes to the primary every 2 ms, started
        ``baseline_s`` before: (checkpoint id, request -> printed s, ack times, request and
        printed wall times, gaps between acks before the request, gaps during it)."""
        writer = Writer([(self.ips[0], dep.port)], dep.tmp / ack_log, prefix)
        time.sleep(self.sizes.baseline_s)
        t_req = time.time()
        cid, took = self.checkpoint(dep)
        t_done = time.time()
        time.sleep(0.3)
        times = writer.stop()
        base = gaps_within(times, writer.started + 0.3, t_req)
        during = gaps_within(times, t_req, t_done)
        return cid, took, times, t_req, t_done, base, during

    def manifest(self, dep: Deployment, cid: str) -> dict[str, Any]:
        for m in list_manifests(self.broker.settings, dep.name):
            if m["checkpoint_id"] == cid:
                return m
        raise BenchFailed(f"checkpoint {cid} is not among the live manifests")

    def calls_end(self, dep: Deployment) -> int:
        cons = consumer(self.broker.settings)
        try:
            return sum(end_offsets(cons, f"mig.{dep.name}.calls").values())
        finally:
            cons.close()

    def same_dump(self, dep: Deployment, host: int, name: str, timeout: float = 120) -> None:
        """DUMP on the primary; wait until host ``host`` replayed it to the same file."""
        dump(self.ips[0], dep.port, name, timeout=60)
        wait_for(lambda: same_file(dep.tmp / "host0" / name, dep.tmp / f"host{host}" / name),
                 timeout, f"host {host} to replay DUMP {name}", step=0.05)

    def tail(self, path: Path, lines: int = 12) -> str:
        try:
            text = path.read_text(errors="replace").splitlines()
        except OSError:
            return f"(no {path})"
        return "\n".join("    " + line[:400] for line in text[-lines:])

    # -- phase 1: cold migration without mig
    def start_native(self, host: int, argv: list[str]) -> subprocess.Popen[bytes]:
        """``argv`` on test host ``host`` outside mig. Its stdio is opened inside the
        host's mount namespace (``ip netns exec`` makes one): CRIU must find the mount of
        every open file in the namespace it dumps."""
        cmd = " ".join(shlex.quote(a) for a in argv)
        return subprocess.Popen(self.net.wrap(host, ["sh", "-c",
                                                     f"exec {cmd} </dev/null >/dev/null 2>&1"]),
                                start_new_session=True)

    def criu_dump(self, pid: int, images: Path) -> tuple[float, str]:
        """``criu dump`` (the process ends) run in the process's mount and network
        namespaces. (seconds, "" or the error CRIU gave)."""
        images.mkdir(parents=True)
        argv = ["nsenter", "--target", str(pid), "--mount", "--net",
                *self.criu.argv("dump", "-t", str(pid), "-D", str(images), "--tcp-close",
                                "--network-lock", "skip", "-o", "dump.log")]
        started = time.monotonic()
        run = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        took = time.monotonic() - started
        if run.returncode == 0:
            return took, ""
        try:
            said = (images / "dump.log").read_text(errors="replace")
        except OSError:
            said = run.stderr
        errors = [line.split("): ", 1)[-1] for line in said.splitlines()
                  if "Error" in line and "RLIMIT" not in line]
        return took, f"criu dump exited with {run.returncode}: " + " | ".join(errors[:3])

    def criu_restore(self, host: int, images: Path) -> tuple[subprocess.Popen[bytes], Path]:
        """``criu restore`` on test host ``host`` in a new pid and mount namespace (as mig
        restores), detached; a shell stays as the namespace's first process. Returns it
        and the file that appears once the restore is done."""
        marker = images / "restored"
        cmd = " ".join(shlex.quote(a) for a in self.criu.argv(
            "restore", "-d", "-D", str(images), "--tcp-close", "-o", "restore.log"))
        proc = subprocess.Popen(self.net.wrap(host, [
            "unshare", "--pid", "--fork", "--mount-proc", "sh", "-c",
            f"{cmd} && touch {shlex.quote(str(marker))} && exec sleep 86400"]),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        return proc, marker

    def phase_native(self) -> None:
        s = self.sizes
        base = self.tmp / "native"
        base.mkdir()
        for rnd in range(s.native_rounds):
            (port,) = free_ports(1)
            proc = self.start_native(0, [str(KVSERVER), str(port), "0.0.0.0"])
            wait_for(lambda port=port: self._answers(self.ips[0], port), 20, "native kvserver")
            reply = request(self.ips[0], port, f"BALLAST {s.late_mb}", timeout=120)
            if not reply.startswith("BALLAST"):
                raise BenchFailed(f"BALLAST: {reply}")
            load_sets(self.ips[0], port, 0, s.records)
            pid = program_pid(self.net.pids(0), "kvserver") or proc.pid
            self.res.native_rss_mib = rss_mib(pid)
            writer = Writer([(self.ips[0], port), (self.ips[2], port)],
                            base / f"acks-{rnd}.jsonl", f"n{rnd}")
            writer.wait_acks(200, 30, "200 writes to the native server")
            images = base / f"images-{rnd}"
            dump_s, error = self.criu_dump(pid, images)
            if error:
                writer.stop()
                self.res.native_error = error
                print(f"native kvserver: {error}", flush=True)
                self.clear_hosts()
                break
            r = NativeRound("kvserver", dump_s=dump_s)
            moved = _copy_images(images, base / f"moved-{rnd}", r)
            t = time.monotonic()
            holder, _ = self.criu_restore(2, moved)
            wait_for(lambda port=port, holder=holder: self._answers(self.ips[2], port)
                     or holder.poll() is not None, 60,
                     "the restored kvserver to answer on host 2", step=0.005)
            r.restore_s = time.monotonic() - t
            if holder.poll() is not None:
                writer.stop()
                raise BenchFailed(f"criu restore failed: {self.tail(moved / 'restore.log', 4)}")
            at = writer.acks()
            writer.wait_acks(at + 200, 30, "200 writes to the restored server")
            times = writer.stop()
            r.gap_s = max(gaps_within(times, 0, float("inf")), default=None)
            self.res.native.append(r)
            print(f"native round {rnd}: client gap {r.gap_s * 1000:.0f} ms = dump"
                  f" {dump_s * 1000:.0f} ms + copy {r.copy_s * 1000:.0f} ms + restore to"
                  f" answering {r.restore_s * 1000:.0f} ms (+ the client's retries);"
                  f" image {r.image_bytes / 1e6:.0f} MB", flush=True)
            self.clear_hosts()
        if self.res.native_error:
            self.phase_native_memory(base)

    def phase_native_memory(self, base: Path) -> None:
        """The same dump, copy and restore on a process holding as much memory and no
        socket (what CRIU here can move)."""
        s = self.sizes
        mb = round(self.res.native_rss_mib or s.late_mb)
        for rnd in range(s.native_rounds):
            ready = base / f"ready-{rnd}"
            prog = (f"import os, time; x = bytearray(os.urandom({mb} << 20));"
                    f" open({str(ready)!r}, 'w').close(); time.sleep(86400)")
            proc = self.start_native(0, [sys.executable, "-c", prog])
            wait_for(ready.exists, 60, "the memory-only process")
            images = base / f"mem-images-{rnd}"
            dump_s, error = self.criu_dump(proc.pid, images)
            if error:
                raise BenchFailed(f"memory-only process: {error}")
            r = NativeRound("memory only", dump_s=dump_s)
            moved = _copy_images(images, base / f"mem-moved-{rnd}", r)
            t = time.monotonic()
            holder, marker = self.criu_restore(2, moved)
            wait_for(lambda marker=marker, holder=holder: marker.exists()
                     or holder.poll() is not None, 60,
                     "the restore on host 2", step=0.002)
            r.restore_s = time.monotonic() - t
            if not marker.exists():
                raise BenchFailed(f"criu restore failed: {self.tail(moved / 'restore.log', 4)}")
            restored = program_pid(self.net.pids(2), Path(sys.executable).name)
            print(f"memory-only round {rnd} ({mb} MiB, RSS after restore"
                  f" {rss_mib(restored) or 0:.0f} MiB): dump {dump_s * 1000:.0f} ms + copy"
                  f" {r.copy_s * 1000:.0f} ms + restore {r.restore_s * 1000:.0f} ms ="
                  f" {(dump_s + r.copy_s + r.restore_s) * 1000:.0f} ms;"
                  f" image {r.image_bytes / 1e6:.0f} MB", flush=True)
            self.res.native.append(r)
            self.clear_hosts()

    @staticmethod
    def _answers(host: str, port: int) -> bool:
        try:
            return request(host, port, "GET probe", timeout=1.0).startswith(("NONE", "VALUE"))
        except OSError:
            return False

    # -- phase 2: checkpoint size and duration against RSS; the primary's stall
    def phase_sizes(self) -> None:
        dep = Deployment(self.net, self.broker, self.tmp / "a",
                         extra_toml="[checkpoints]\nkeep = 2\nevery_seconds = 0\n")
        self.deps.append(dep)
        dep.start()
        for mb in self.sizes.ballasts:
            f = CkptFigures(mb)
            self.ballast(dep, mb)
            self.same_dump(dep, 1, f"ballast-{mb}.txt")
            f.rss_mib = rss_mib(program_pid(self.net.pids(1), "kvserver"))
            cid, f.request_s, times, t_req, t_done, base, during = self.checkpoint_under_client(
                dep, f"acks-{mb}.jsonl", f"s{mb}")
            f.base_worst_ms = max(base, default=0) * 1000
            f.base_p99_ms = (percentile(base, 99) or 0) * 1000
            f.base_acks = len(base)
            f.during_worst_ms = max(during, default=0) * 1000
            f.during_p99_ms = (percentile(during, 99) or 0) * 1000
            f.during_acks = len(during)
            f.during_s = t_done - t_req
            m = self.manifest(dep, cid)
            f.size, f.chunks = m["total_size"], m["chunk_count"]

            def logged(cid: str = cid) -> list[dict[str, Any]]:
                return [e for e in log_events(dep.tmp / "host1.log", "mig.replayer.checkpoint")
                        if e.get("checkpoint_id") == cid]

            wait_for(lambda: bool(logged()), 60, "the replica's mig.replayer.checkpoint line")
            ev = logged()[0]
            f.held_ms, f.total_ms = ev["held_ms"], ev["total_ms"]
            t_stored = log_time(ev)
            t_cut = t_stored - f.total_ms / 1000
            t_free = t_cut + f.held_ms / 1000
            for stage, (a, b) in {"request -> cut": (t_req, t_cut), "held": (t_cut, t_free),
                                  "pack + store + trim": (t_free, t_stored),
                                  "then -> printed": (t_stored, t_done)}.items():
                f.stages[stage] = max(gaps_within(times, a, b), default=0) * 1000
            self.res.ckpts.append(f)
            print(f"checkpoint, {mb} MiB ballast: replica app RSS {f.rss_mib or 0:.0f} MiB,"
                  f" archive {f.size / 1e6:.1f} MB in {f.chunks} chunks, app held"
                  f" {f.held_ms} ms, cut -> stored and trimmed {f.total_ms} ms, request -> printed"
                  f" {f.request_s:.1f} s; primary's client: worst gap between acks"
                  f" {f.during_worst_ms:.0f} ms during it ({f.during_acks} acks in"
                  f" {f.during_s:.1f} s, p99 {f.during_p99_ms:.1f} ms) vs {f.base_worst_ms:.0f}"
                  f" ms before ({f.base_acks} acks, p99 {f.base_p99_ms:.1f} ms); worst gap by"
                  " stage: " + ", ".join(f"{k} {v:.0f} ms" for k, v in f.stages.items()),
                  flush=True)

    # -- phase 2b: a primary alone checkpoints by a local replay; its stall
    def phase_alone(self) -> None:
        mb = self.sizes.late_mb
        dep = Deployment(self.net, self.broker, self.tmp / "alone", replicas=(),
                         extra_toml="[checkpoints]\nkeep = 2\nevery_seconds = 0\n")
        self.deps.append(dep)
        dep.start()
        self.ballast(dep, mb)
        load_sets(self.ips[0], dep.port, 0, self.sizes.records // 5)
        for what in ("first (replays the log from its start)",
                     "second (restores the first, replays the rest)"):
            f = AloneFigures(what)
            load_sets(self.ips[0], dep.port, 0, self.sizes.records // 10)
            k = len(self.res.alone)
            cid, f.request_s, _, _, _, base, during = self.checkpoint_under_client(
                dep, f"acks-alone-{k}.jsonl", f"a{k}")
            f.base_worst_ms = max(base, default=0) * 1000
            f.during_worst_ms = max(during, default=0) * 1000
            f.during_p99_ms = (percentile(during, 99) or 0) * 1000
            f.during_acks = len(during)
            m = self.manifest(dep, cid)
            f.size, f.held_ms = m["total_size"], m["dump_ms"]
            n = len(self.res.alone) + 1
            wait_for(lambda n=n: len(log_events(dep.tmp / "host0.log",
                                                "mig.recorder.checkpoint")) >= n,
                     60, "the primary to reap its checkpointer")
            f.took_ms = log_events(dep.tmp / "host0.log", "mig.recorder.checkpoint")[n - 1][
                "took_ms"]
            self.res.alone.append(f)
            print(f"primary alone, {mb} MiB ballast, {f.what}: archive {f.size / 1e6:.1f} MB,"
                  f" checkpointer ran {f.took_ms / 1000:.1f} s (its app held {f.held_ms} ms),"
                  f" request -> printed {f.request_s:.1f} s; the primary's client: worst gap"
                  f" {f.during_worst_ms:.0f} ms during it ({f.during_acks} acks, p99"
                  f" {f.during_p99_ms:.1f} ms) vs {f.base_worst_ms:.0f} ms before", flush=True)

    # -- phase 3: late join replaying the whole log
    def phase_from_start(self) -> None:
        s = self.sizes
        dep = Deployment(self.net, self.broker, self.tmp / "c", replicas=(),
                         extra_toml="[checkpoints]\nenabled = false\n")
        self.deps.append(dep)
        dep.start()
        reply = request(self.ips[0], dep.port, f"BALLAST {s.late_mb}", timeout=120)
        if not reply.startswith("BALLAST"):
            raise BenchFailed(f"BALLAST: {reply}")
        took = load_sets(self.ips[0], dep.port, 0, s.records)
        dump(self.ips[0], dep.port, "caught.txt", timeout=60)
        self.res.from_start_calls = self.calls_end(dep)
        started = time.monotonic()
        proc = dep.start_replica(2, "--from-start")
        ours, theirs = dep.tmp / "host2" / "caught.txt", dep.tmp / "host0" / "caught.txt"

        def caught() -> bool:
            if proc.poll() is not None:
                raise BenchFailed(f"the late replica exited with {proc.returncode}:\n"
                                  + self.tail(dep.tmp / "host2.log"))
            return same_file(ours, theirs)

        wait_for(caught, 300, "the --from-start replica to catch up", step=0.05)
        self.res.from_start_s = time.monotonic() - started
        print(f"late join --from-start: {s.late_mb} MiB ballast + {s.records:,} SETs"
              f" (loaded in {took:.1f} s; {self.res.from_start_calls:,} calls-topic offsets):"
              f" caught up {self.res.from_start_s:.1f} s after its start", flush=True)

    # -- phase 4: late join from a checkpoint; the compacted topic
    def phase_late_join(self, dep: Deployment) -> None:
        s = self.sizes
        dep.start()
        reply = request(self.ips[0], dep.port, f"BALLAST {s.late_mb}", timeout=120)
        if not reply.startswith("BALLAST"):
            raise BenchFailed(f"BALLAST: {reply}")
        per = s.records // 5
        last: dict[str, Any] = {}
        for part in range(5):
            count = per if part < 4 else s.records - 4 * per
            load_sets(self.ips[0], dep.port, part * per, count)
            if part < 4:
                cid, took = self.checkpoint(dep)
                last = self.manifest(dep, cid)
                self.res.b_sizes.append(last["total_size"])
                print(f"  checkpoint {part + 1} after {(part + 1) * per:,} SETs:"
                      f" {last['total_size'] / 1e6:.1f} MB, {took:.1f} s", flush=True)
        topic = f"mig.{dep.name}.checkpoints"
        live = sum(m["total_size"] for m in list_manifests(self.broker.settings, dep.name))
        self.res.topic_after4 = (*topic_disk(self.broker.node.data_dir, topic), live)
        disk, segs, _ = self.res.topic_after4
        print(f"checkpoints topic right after the 4th checkpoint: {disk / 1e6:.1f} MB on disk"
              f" in {segs} segments, live checkpoints {live / 1e6:.1f} MB", flush=True)
        dump(self.ips[0], dep.port, "caught.txt", timeout=60)
        self.res.late_calls = self.calls_end(dep)
        self.res.late_after_calls = self.res.late_calls - sum(
            po["offset"] for po in last["barrier_offsets"])
        self.res.late_ckpt_size = last["total_size"]
        log = dep.tmp / "host2.log"
        t0 = time.time()
        started = time.monotonic()
        proc = dep.start_replica(2)
        ours, theirs = dep.tmp / "host2" / "caught.txt", dep.tmp / "host0" / "caught.txt"

        gone: list[float] = []

        def caught() -> bool:
            if proc.poll() is not None:
                raise BenchFailed(f"the late replica exited with {proc.returncode}:\n"
                                  + self.tail(log))
            if dep.procs[0].poll() is not None:
                raise BenchFailed(f"the primary ended ({dep.procs[0].returncode}) while the"
                                  " late replica caught up:\n"
                                  + self.tail(dep.tmp / "host0.log", 4))
            if same_file(ours, theirs):
                return True
            # restored, but no app on host 2 any more: it will never catch up
            restored = log_events(log, "mig.replayer.restored")
            if program_pid(self.net.pids(2), "kvserver") is None and restored:
                gone.append(time.monotonic())
                if gone[-1] - gone[0] > 3:
                    self.res.late_restored_s = log_time(restored[0]) - t0
                    self.res.late_restore_ms = restored[0]["restore_ms"]
                    said = self.tail(dep.tmp / "run2" / "criu-images" / "restore.log", 3)
                    raise BenchFailed("the late replica restored the checkpoint, but the"
                                      " restored app is no longer on host 2 (the replica"
                                      " goes on saying it replays); CRIU's restore.log"
                                      f" ends with:\n{said}")
            return False

        wait_for(caught, 120, "the late replica to catch up", step=0.05)
        self.res.late_s = time.monotonic() - started
        t_caught = time.time()
        restored = log_events(log, "mig.replayer.restored")
        if not restored:
            refused = log_events(log, "mig.replayer.checkpoint_refused")
            raise BenchFailed(f"the late replica caught up without restoring a checkpoint"
                              f" (refused: {[e.get('reason') for e in refused]})")
        ev = restored[0]
        if ev["checkpoint_id"] != last["checkpoint_id"]:
            self.res.failures.append(f"the late replica restored {ev['checkpoint_id']}, not"
                                     f" the newest {last['checkpoint_id']}")
        self.res.late_restored_s = log_time(ev) - t0
        self.res.late_replay_s = t_caught - log_time(ev)
        self.res.late_restore_ms = ev["restore_ms"]
        self.res.late_rss_mib = rss_mib(program_pid(self.net.pids(2), "kvserver"))
        print(f"late join from a checkpoint: {s.late_mb} MiB ballast + {s.records:,} SETs"
              f" ({self.res.late_calls:,} calls-topic offsets, {self.res.late_after_calls:,} after"
              f" the checkpoint of {self.res.late_ckpt_size / 1e6:.1f} MB): caught up"
              f" {self.res.late_s:.1f} s after its start = start -> restored"
              f" {self.res.late_restored_s:.1f} s (of which criu restore"
              f" {self.res.late_restore_ms} ms; the rest: starting, reading the manifests,"
              f" fetching, checking and unpacking the chunks)"
              f" + replay {self.res.late_replay_s:.1f} s; restored app RSS"
              f" {self.res.late_rss_mib or 0:.0f} MiB", flush=True)

    # -- phase 5: mig migrate
    def phase_migrate(self, dep: Deployment) -> None:
        """To host 1, then (when the late join worked) to the restored replica on host 2."""
        targets = ((0, 1), (1, 2)) if self.res.late_s is not None else ((0, 1),)
        want = {f"host{new}" for _, new in targets}
        wait_for(lambda: want <= dep.hot(), 60, f"{sorted(want)} to be hot", step=0.3)
        addrs = [(self.ips[h], dep.port) for h in sorted({0, *(n for _, n in targets)})]
        for rnd, (old, new) in enumerate(targets):
            before = {p["new_epoch"] for p in dep.promotions()}
            order = [(self.ips[old], dep.port), (self.ips[new], dep.port)]
            order += [a for a in addrs if a not in order]
            writer = Writer(order, dep.tmp / f"acks-migrate-{rnd}.jsonl", f"m{rnd}")
            writer.wait_acks(200, 30, "200 writes before the migration")
            run = self.mig(["migrate", dep.name, "--to", f"host{new}"], 90)
            said = (run.stdout + run.stderr).strip()
            if run.returncode != 0:
                writer.stop()
                raise BenchFailed(f"mig migrate --to host{new} exited with {run.returncode}:"
                                  f" {said[-600:]}")
            match = re.search(r"switchover gap (-?\d+) ms", run.stdout)

            def promoted(before: set[int] = before) -> dict[str, Any] | None:
                fresh = [p for p in dep.promotions() if p["new_epoch"] not in before]
                return fresh[0] if fresh else None

            wait_for(lambda: promoted() is not None, 30, "the Promotion", step=0.3)
            promo = promoted()
            assert promo is not None
            at = writer.acks()
            writer.wait_acks(at + 200, 30, "200 writes after the promotion")
            times = writer.stop()
            gap = max(gaps_within(times, 0, float("inf")), default=0.0)
            row = {"from": f"host{old}", "to": f"host{new}", "gap_ms": gap * 1000,
                   "switchover_ms": int(match.group(1)) if match else None,
                   "member": promo["member"], "reason": promo["reason"]}
            self.res.migrations.append(row)
            print(f"mig migrate host{old} -> host{new}"
                  f"{' (restored from the checkpoint)' if new == 2 else ''}: client gap"
                  f" {gap * 1000:.0f} ms, printed switchover gap {row['switchover_ms']} ms;"
                  f" promoted {promo['member']} ({promo['reason']})", flush=True)
            if promo["member"] != f"host{new}":
                raise BenchFailed(f"the promotion went to {promo['member']}, not host{new}")

    def measure_compaction(self, dep: Deployment) -> None:
        topic = f"mig.{dep.name}.checkpoints"
        live = sum(m["total_size"] for m in list_manifests(self.broker.settings, dep.name))
        started = time.monotonic()
        disk, segs = topic_disk(self.broker.node.data_dir, topic)
        while disk > 1.15 * live and time.monotonic() - started < self.sizes.clean_wait_s:
            time.sleep(2)
            disk, segs = topic_disk(self.broker.node.data_dir, topic)
        self.res.topic_end = (disk, segs, live)
        self.res.topic_end_wait_s = time.monotonic() - started
        print(f"checkpoints topic at the end (waited {self.res.topic_end_wait_s:.0f} s more"
              f" for the log cleaner): {disk / 1e6:.1f} MB on disk in {segs} segments, live"
              f" checkpoints {live / 1e6:.1f} MB", flush=True)

    def diagnose(self, dep: Deployment) -> None:
        """What the members said last, what mig status says, and what every process of
        the test hosts is doing (state and kernel wait channel)."""
        for h in range(3):
            path = dep.tmp / f"host{h}.log"
            if path.exists():
                print(f"--- last lines of {path}:\n{self.tail(path, 8)}")
        try:
            run = self.mig(["status", dep.name], 60)
            print(f"--- mig status {dep.name}:\n{run.stdout}{run.stderr}")
        except subprocess.SubprocessError as exc:
            print(f"--- mig status: {exc}")
        for h in range(3):
            for pid in self.net.pids(h):
                try:
                    state = next(line.split(None, 1)[1] for line in
                                 Path(f"/proc/{pid}/status").read_text().splitlines()
                                 if line.startswith("State:"))
                    wchan = Path(f"/proc/{pid}/wchan").read_text()
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                except (OSError, StopIteration):
                    continue
                print(f"    host {h} pid {pid} {state} wchan={wchan or '-'}"
                      f" {argv.decode(errors='replace')[:150]}")

    # -- the run
    def phase(self, name: str, fn, *args: Any) -> Any:  # noqa: ANN001
        if self.only not in name:
            return None
        print(f"\n-- {name}", flush=True)
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - reported, and the run goes on
            msg = f"{name}: {type(exc).__name__}: {exc}"
            self.res.failures.append(msg)
            print(f"PHASE STOPPED: {msg}", flush=True)
            for dep in self.deps[-1:]:
                self.diagnose(dep)
            return None
        finally:
            if name != "late join from a checkpoint":
                self.clear_hosts()

    def run(self) -> None:
        with hosts_and_broker(self.tmp / "kafka", hosts=3) as (net, broker):
            self.net, self.broker = net, broker
            try:
                self.phase("cold migration without mig (CRIU dump, copy, restore)",
                           self.phase_native)
                self.phase("checkpoint size and duration against RSS; the primary's stall",
                           self.phase_sizes)
                self.phase("a primary alone checkpoints by a local replay; its stall",
                           self.phase_alone)
                self.phase("late join replaying the whole log (--from-start)",
                           self.phase_from_start)
                dep = Deployment(net, broker, self.tmp / "b",
                                 extra_toml="[checkpoints]\nkeep = 2\nevery_seconds = 0\n"
                                            "[topics]\ncheckpoint_segment_ms = 1000\n")
                self.deps.append(dep)
                self.phase("late join from a checkpoint", self.phase_late_join, dep)
                if self.res.late_s is None:  # whatever the late replica does, it goes
                    net.signal(2, signal.SIGKILL)
                if dep.procs.get(0) is not None and dep.procs[0].poll() is None:
                    self.phase("mig migrate", self.phase_migrate, dep)
                if self.res.topic_after4 is not None:
                    self.phase("compaction", self.measure_compaction, dep)
                self.clear_hosts()
            finally:
                self.clear_hosts()

    # -- the table
    def table(self) -> list[tuple[str, str, str, str]]:
        r = self.res
        rows: list[tuple[str, str, str, str]] = []
        for f in r.ckpts:
            rows.append((f"checkpoint of a {f.mb} MiB app: replica app RSS / archive / app held"
                         " / cut -> stored and trimmed / request -> printed",
                         f"{f.rss_mib or 0:,.0f} MiB / {f.size / 1e6:,.1f} MB / {f.held_ms:,} ms"
                         f" / {(f.total_ms or 0) / 1000:.1f} s / {f.request_s:.1f} s", "", ""))
        for f in r.ckpts:
            stall = f.during_worst_ms - f.base_worst_ms
            ratio = f.during_worst_ms / f.base_worst_ms if f.base_worst_ms else float("nan")
            rows.append((f"primary's client during the {f.mb} MiB checkpoint: worst gap between"
                         " acks, during vs before",
                         f"{f.during_worst_ms:,.0f} vs {f.base_worst_ms:,.0f} ms ({ratio:.2f}x)",
                         f"no stall (<= before + {TARGETS['stall_ms']:.0f} ms)",
                         "met" if stall <= TARGETS["stall_ms"] else "MISSED"))
            rows.append(("  worst gap by stage: " + " / ".join(f.stages),
                         " / ".join(f"{v:,.0f}" for v in f.stages.values()) + " ms", "", ""))
        for a in r.alone:
            stall = a.during_worst_ms - a.base_worst_ms
            ratio = a.during_worst_ms / a.base_worst_ms if a.base_worst_ms else float("nan")
            rows.append((f"primary alone, {self.sizes.late_mb} MiB app, {a.what}: its client's"
                         " worst gap between acks, during vs before",
                         f"{a.during_worst_ms:,.0f} vs {a.base_worst_ms:,.0f} ms ({ratio:.2f}x)",
                         f"no stall (<= before + {TARGETS['stall_ms']:.0f} ms)",
                         "met" if stall <= TARGETS["stall_ms"] else "MISSED"))
            rows.append(("  archive / checkpointer start -> exit / request -> printed",
                         f"{a.size / 1e6:,.1f} MB / {a.took_ms / 1000:.1f} s /"
                         f" {a.request_s:.1f} s", "", ""))
        s = self.sizes
        what = f"{s.late_mb} MiB + {s.records:,} SETs"
        if r.late_s is not None:
            rows.append((f"late join from a checkpoint, {what}: start -> caught up",
                         f"{r.late_s:.1f} s", f"<= {TARGETS['late_join_s']:.0f} s",
                         "met" if r.late_s <= TARGETS["late_join_s"] else "MISSED"))
            rows.append((f"  = start -> restored (criu restore part) + replay of"
                         f" {r.late_after_calls:,} calls-topic offsets",
                         f"{r.late_restored_s:.1f} s ({r.late_restore_ms:,} ms) +"
                         f" {r.late_replay_s:.1f} s", "", ""))
        elif r.late_restored_s is not None:
            rows.append((f"late join from a checkpoint, {what}: start -> restored (criu restore"
                         " part); it never caught up",
                         f"{r.late_restored_s:.1f} s ({r.late_restore_ms:,} ms)", "<= 10 s",
                         "MISSED"))
        else:
            rows.append((f"late join from a checkpoint, {what}", "-", "<= 10 s", "-"))
        rows.append((f"late join --from-start (no checkpoint), {what}"
                     + (f" ({r.from_start_calls:,} calls-topic offsets)" if r.from_start_calls
                        else ""),
                     "-" if r.from_start_s is None else f"{r.from_start_s:.1f} s", "", ""))
        for label, snap in (("right after the 4th checkpoint", r.topic_after4),
                            (f"at the end (+{r.topic_end_wait_s:.0f} s for the cleaner)",
                             r.topic_end)):
            if snap is not None:
                disk, segs, live = snap
                rows.append((f"checkpoints topic on disk vs live checkpoints (keep 2, 4 taken),"
                             f" {label}",
                             f"{disk / 1e6:,.0f} vs {live / 1e6:,.0f} MB"
                             f" ({disk / live if live else float('nan'):.2f}x, {segs} segments)",
                             "", ""))
        kv = [n for n in r.native if n.what == "kvserver"]
        mem = [n for n in r.native if n.what == "memory only"]
        if kv:
            g = percentile([n.gap_s for n in kv if n.gap_s is not None], 50)
            rows.append((f"cold migration without mig (criu dump, copy, restore), client gap"
                         f" p50 of {len(kv)}", "-" if g is None else f"{g * 1000:,.0f} ms",
                         "", ""))
        if r.native_error:
            rows.append(("cold migration of kvserver without mig", "not possible here:"
                         " criu dump fails on its TCP sockets", "", ""))
        if mem:
            tot = percentile([n.dump_s + n.copy_s + n.restore_s for n in mem], 50) or 0
            rows.append((f"cold migration floor: dump + local copy + restore of a socket-free"
                         f" process of the same memory, p50 of {len(mem)}",
                         f"{tot * 1000:,.0f} ms ({mem[0].image_bytes / 1e6:,.0f} MB image)",
                         "", ""))
        for m in r.migrations:
            rows.append((f"mig migrate {m['from']} -> {m['to']}, client gap (printed"
                         " switchover gap)", f"{m['gap_ms']:,.0f} ms ({m['switchover_ms']} ms)",
                         f"<= {TARGETS['migrate_ms']:.0f} ms",
                         "met" if m["gap_ms"] <= TARGETS["migrate_ms"] else "MISSED"))
        return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true",
                        help="20 and 100 MiB apps, 20 MiB + 20,000 SETs for the late joins")
    parser.add_argument("--only", default="", metavar="WORDS",
                        help="run only the phases whose name holds WORDS (e.g. 'alone')")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (logs, ack logs, dumps, images)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("needs root: the test hosts are network namespaces")
    if args.quick:
        sizes = Sizes((20, 100), 20, 20_000, 1, 2.0, 20.0)
    else:
        sizes = Sizes((100, 500), 100, 100_000, 3, 4.0, 60.0)
    criu = find_criu()
    print(f"mig checkpoint benchmark{' (--quick)' if args.quick else ''},"
          f" {dt.datetime.now().isoformat(timespec='seconds')}")
    print(f"machine: {machine()}; CRIU {criu.version} ({criu.source})", flush=True)
    subprocess.run(["make", "-s", "-C", str(APPS)], check=True, timeout=300)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="mig-ckbench-"))
    bench = Bench(tmp, sizes)
    bench.only = args.only
    try:
        bench.run()
    except (BenchFailed, subprocess.SubprocessError, OSError) as exc:
        bench.res.failures.append(f"set-up: {exc}")
        print(f"\nRUN STOPPED: {exc}", flush=True)
    rows = bench.table()
    print(f"\n== summary ({time.monotonic() - started:.0f} s) ==")
    print_table(rows)
    if bench.res.native_error:
        print(f"native kvserver dump: {bench.res.native_error}")
    for failure in bench.res.failures:
        print(f"FAILED: {failure}")
    if args.keep or bench.res.failures:
        print(f"logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if bench.res.failures else 0


if __name__ == "__main__":
    sys.exit(main())
