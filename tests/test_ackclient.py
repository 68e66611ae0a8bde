"""tests/apps/ackclient.py against real kvservers, natively (no mig).

The failover tests trust ackclient to record exactly the writes a service acknowledged and
to find any of them missing afterwards. Here: a clean run has no gaps and a clean check;
killing the server mid-run sends the client to the second address with one gap, and the
check against the second server reports every key the first one acknowledged as missing --
the checker can fail.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.apps import client
from tests.apps.ackclient import check_acked, format_addr, run_writes

APPS = Path(__file__).parent / "apps"
KVSERVER = APPS / "build" / "kvserver"
HOST = "127.0.0.1"


@pytest.fixture(scope="module", autouse=True)
def built() -> None:
    proc = subprocess.run(["make", "-s", "-C", str(APPS)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, f"make failed:\n{proc.stdout}\n{proc.stderr}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@pytest.fixture
def kvserver(tmp_path: Path) -> Iterator[Callable[[], tuple[subprocess.Popen[bytes], int]]]:
    """Starts a kvserver on a free port; all are killed after the test."""
    procs: list[subprocess.Popen[bytes]] = []

    def _start() -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        log = tmp_path / f"kvserver-{len(procs)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([str(KVSERVER), str(port)], stdout=out,
                                    stderr=subprocess.STDOUT)
        procs.append(proc)
        client.wait_port(HOST, port, 10)
        return proc, port

    yield _start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


def acks(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def dump_of(port: int, path: Path) -> client.Dump:
    client.dump(HOST, port, path)
    return client.read_dump(path)


def test_clean_run_has_no_gaps_and_checks_clean(kvserver, tmp_path: Path) -> None:
    _, port = kvserver()
    log = tmp_path / "acks.jsonl"
    report = run_writes([(HOST, port)], 300, log, prefix="clean", deadline_s=10)
    assert (report.acked, report.attempts, report.errors, report.gaps) == (300, 300, 0, [])
    assert report.stopped == "count"
    records = acks(log)
    assert [r["key"] for r in records] == [f"clean-{i:06d}" for i in range(300)]
    assert {r["addr"] for r in records} == {f"{HOST}:{port}"}
    assert len({r["value"] for r in records}) == 300
    dump = dump_of(port, tmp_path / "dump")
    assert check_acked(log, dump) == []
    # the checker sees a wrong value too
    dump.entries["clean-000007"][0] = "other"
    assert check_acked(log, dump) == [
        f"wrong clean-000007: acked {records[7]['value']} at {HOST}:{port} "
        f"t={records[7]['t_ack']}, the dump has other"]


def test_kill_mid_run_moves_to_the_second_address(kvserver, tmp_path: Path) -> None:
    first, port1 = kvserver()
    _, port2 = kvserver()
    addr1, addr2 = format_addr((HOST, port1)), format_addr((HOST, port2))
    log = tmp_path / "acks.jsonl"
    log.touch()

    def kill_after_100_acks() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if log.read_bytes().count(b"\n") >= 100:
                first.send_signal(signal.SIGKILL)
                return
            time.sleep(0.001)

    killer = threading.Thread(target=kill_after_100_acks, daemon=True)
    killer.start()
    # paced at 5 ms a write, so the kill lands well inside the run
    report = run_writes([(HOST, port1), (HOST, port2)], 300, log, prefix="fo",
                        deadline_s=15, interval_s=0.005)
    killer.join(5)
    assert first.wait(5) == -signal.SIGKILL

    assert report.acked == 300 and report.stopped == "count"
    assert report.errors >= 1 and report.attempts == report.acked + report.errors
    assert len(report.gaps) == 1
    gap = report.gaps[0]
    assert (gap.addr_before, gap.addr_after) == (addr1, addr2)
    assert 0 < gap.seconds < 5 and gap.failed_attempts == report.errors
    records = acks(log)
    assert [r["key"] for r in records] == [f"fo-{i:06d}" for i in range(300)]
    on_first = [r for r in records if r["addr"] == addr1]
    assert 100 <= len(on_first) < 300
    assert all(r["addr"] == addr2 for r in records[len(on_first):])
    assert gap.t_before == on_first[-1]["t_ack"]
    assert gap.t_after == records[len(on_first)]["t_ack"]

    problems = check_acked(log, dump_of(port2, tmp_path / "dump2"))
    assert len(problems) == len(on_first)
    assert [p.split()[1].rstrip(":") for p in problems] == [r["key"] for r in on_first]
    assert all(p.startswith("missing ") for p in problems)


def test_nothing_listening_ends_at_the_deadline(tmp_path: Path) -> None:
    log = tmp_path / "acks.jsonl"
    started = time.monotonic()
    report = run_writes([(HOST, free_port())], 10, log, prefix="none", deadline_s=0.5)
    assert time.monotonic() - started < 2
    assert (report.acked, report.stopped) == (0, "deadline")
    assert report.errors == report.attempts >= 3
    assert len(report.gaps) == 1 and report.gaps[0].addr_before is None
    assert report.gaps[0].addr_after is None and report.gaps[0].t_after is None
    assert log.read_text() == ""


def test_stop_file_and_cli(kvserver, tmp_path: Path) -> None:
    _, port = kvserver()
    stop = tmp_path / "stop"
    stop.touch()
    report = run_writes([(HOST, port)], 10, tmp_path / "none.jsonl", prefix="s",
                        deadline_s=5, stop_file=stop)
    assert (report.acked, report.attempts, report.stopped) == (0, 0, "stop_file")

    log = tmp_path / "cli.jsonl"
    proc = subprocess.run([sys.executable, str(APPS / "ackclient.py"), f"{HOST}:{port}", "50",
                           str(log), "--prefix", "cli", "--deadline", "10"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert (out["acked"], out["attempts"], out["errors"], out["gaps"]) == (50, 50, 0, [])
    assert check_acked(log, dump_of(port, tmp_path / "dump")) == []
