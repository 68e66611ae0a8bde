"""The README's demo: everything built so far, end to end, on the embedded broker.

It starts the embedded broker, runs the example counter server (examples/counter) as a
recorded primary, sends it client requests, starts a replica that replays the log in
another folder, asks the primary to dump its counters to a file (the replica performs the
same write while replaying), compares the two files, and verifies the log.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mig.broker import EmbeddedBroker
from mig.broker.cluster import free_ports
from mig.logtool import verify
from mig.paths import source_root

__all__ = ["run_demo"]


def _request(sock: socket.socket, line: str) -> str:
    sock.sendall(line.encode() + b"\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    return data.decode().strip()


def _connect(port: int, timeout: float = 30.0) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _mig(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "mig", "--log-format", "json", *args],
                                stdout=out, stderr=out, env=dict(os.environ))


def _wait_file(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size > 0:
            return True
        time.sleep(0.1)
    return False


def run_demo(say: Callable[[str], None], app: str = "demo") -> bool:
    started = time.monotonic()
    say("1. starting the embedded Kafka broker (the first run fetches its jars) ...")
    broker = EmbeddedBroker()
    status = broker.up()
    say(f"   broker live at {status.bootstrap} after {time.monotonic() - started:.1f} s")

    work = Path(tempfile.mkdtemp(prefix="mig-demo-"))
    (port,) = free_ports(1)
    server = source_root() / "examples" / "counter" / "server.py"
    primary_dir, replica_dir = work / "primary", work / "replica"
    primary_dir.mkdir()
    replica_dir.mkdir()
    toml = primary_dir / "app.toml"
    toml.write_text(f'[app]\nname = "{app}"\ncommand = ["{sys.executable}", "{server}",'
                    f' "{port}"]\nbarrier_mode = "output"\n[kafka]\nbootstrap_servers ='
                    f' "{status.bootstrap}"\n')
    say(f"2. recording the counter server (examples/counter) as app '{app}' on port {port}")
    primary = _mig(["primary", "start", str(toml)], work / "primary.log")
    replica = None
    try:
        sock = _connect(port)
        rng = random.Random(7)
        names = ["apples", "pears", "plums"]
        for _ in range(30):
            _request(sock, f"incr {rng.choice(names)}")
        say("   30 increments sent; the primary answers: "
            + ", ".join(f"{n}={_request(sock, f'get {n}')}" for n in names))
        say("3. starting a replica that replays the log in another folder ...")
        replica = _mig(["replica", "follow", str(toml), "--workdir", str(replica_dir)],
                       work / "replica.log")
        for _ in range(10):
            _request(sock, f"incr {rng.choice(names)}")
        say("   10 more increments while the replica follows")
        say("4. asking the primary to dump its counters to counters.txt ...")
        say(f"   primary: {_request(sock, 'dump counters.txt')}")
        sock.close()
        same = _wait_file(replica_dir / "counters.txt", 30) and (
            (replica_dir / "counters.txt").read_text()
            == (primary_dir / "counters.txt").read_text())
        say("   primary's counters.txt: "
            + (primary_dir / "counters.txt").read_text().strip().replace("\n", ", "))
        if same:
            say("   replica's counters.txt: identical: the replica holds the same state")
        else:
            say(f"   the replica's file differs or is missing (see {work}/replica.log)")
    finally:
        for proc in (primary, replica):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
    report = verify(broker.settings, app)
    say(f"5. `mig log verify {app}`: {report.records} records, "
        + ("ok" if report.ok else f"{len(report.problems)} problems"))
    say(f"   look at the log yourself: mig log tail {app} -t calls | less")
    say(f"done in {time.monotonic() - started:.1f} s; stop the broker with `mig broker down`")
    return bool(same and report.ok)
