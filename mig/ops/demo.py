"""The README's demo: everything built so far, end to end, on the embedded broker.

It starts the embedded broker, runs the example counter server (examples/counter) as a
recorded primary, starts a replica that replays the log in another folder, has a client
increment counters (remembering every acknowledged increment), kills the primary with
SIGKILL in the middle of that load, lets the replica take over, and checks that every
acknowledged increment is in the new primary's memory, printing the measured gap.
"""

from __future__ import annotations

import json
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
from mig.broker.node import free_ports
from mig.deadline import wait_until
from mig.ops.logtool import verify
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


def _mig(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "mig", "--log-format", "json", *args],
                                stdout=out, stderr=out, env=dict(os.environ))


def _app_pid(log: Path) -> int | None:
    """The app's pid, from the recorder's start line in its JSON log."""
    for line in log.read_text(errors="replace").splitlines():
        if '"mig.recorder.started"' in line:
            try:
                return int(json.loads(line)["pid"])
            except (ValueError, KeyError):
                return None
    return None


class _Client:
    """Increments counters one request at a time and remembers what was acknowledged; a
    request whose reply never came is counted as unknown (the server may have applied it)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.acked: dict[str, int] = {}
        self.unknown: dict[str, int] = {}
        self.last_ack = time.monotonic()
        self.gap = 0.0
        self.rng = random.Random(7)

    def incr(self, deadline: float) -> bool:
        """One acknowledged increment, reconnecting as needed until ``deadline``."""
        name = self.rng.choice(["apples", "pears", "plums"])
        failed = False
        while time.monotonic() < deadline:
            try:
                if self.sock is None:
                    self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=1)
                _request(self.sock, f"incr {name}")
            except OSError:
                if self.sock is not None:  # sent, no reply: it may or may not have counted
                    self.unknown[name] = self.unknown.get(name, 0) + 1
                    self.sock.close()
                    self.sock = None
                failed = True
                time.sleep(0.05)
                name = self.rng.choice(["apples", "pears", "plums"])
                continue
            now = time.monotonic()
            if failed:
                self.gap = max(self.gap, now - self.last_ack)
            self.last_ack = now
            self.acked[name] = self.acked.get(name, 0) + 1
            return True
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
                    f' "{status.bootstrap}"\n[replica]\nheartbeat_ms = 200\n'
                    f'failover_timeout_ms = 1000\n')
    say(f"2. recording the counter server (examples/counter) as app '{app}' on port {port}")
    primary = _mig(["primary", "start", str(toml), "--member", "primary"],
                   work / "primary.log")
    replica = None
    client = _Client(port)
    ok = False
    try:
        if not wait_until(lambda: client.incr(time.monotonic() + 1), 60):
            say(f"   the primary did not answer (see {work}/primary.log)")
            return False
        say("3. starting a replica that replays the log in another folder ...")
        replica = _mig(["replica", "follow", str(toml), "--workdir", str(replica_dir),
                        "--member", "replica"], work / "replica.log")
        if not wait_until(lambda: _hot(broker, app), 60):
            say(f"   the replica did not catch up (see {work}/replica.log)")
            return False
        say("   the replica is hot (mig status shows it replaying)")
        say("4. a client increments counters; each acknowledged increment is remembered")
        until = time.monotonic() + 3
        while time.monotonic() < until:
            client.incr(until)
        say(f"   {sum(client.acked.values())} increments acknowledged by the primary")
        say("5. kill -9 of the primary (agent and app) in the middle of the load ...")
        app_pid = _app_pid(work / "primary.log")
        primary.kill()
        if app_pid:
            try:
                os.killpg(app_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        primary.wait(10)
        until = time.monotonic() + 20
        after = 0
        while time.monotonic() < until and after < 300:
            if client.incr(until):
                after += 1
        promo = _promotion(broker, app)
        if promo is None or after < 300:
            say(f"   no promotion (see {work}/replica.log)")
            return False
        say(f"   the replica took over at epoch {promo['new_epoch']}: detection"
            f" {promo['detection_ms']} ms, promotion {promo['promotion_ms']} ms;"
            f" the client saw a gap of {client.gap:.2f} s, then {after} more increments")
        say("6. every acknowledged increment is in the new primary's memory:")
        ok = True
        for name in sorted(client.acked):
            value = int(_request_once(port, f"get {name}"))
            acked, unknown = client.acked[name], client.unknown.get(name, 0)
            good = acked <= value <= acked + unknown
            ok = ok and good
            say(f"   {name}: {value} (acknowledged {acked}"
                + (f", {unknown} sent without a reply" if unknown else "") + ")"
                + ("" if good else "  <- WRONG"))
    finally:
        if client.sock is not None:
            client.sock.close()
        for proc in (primary, replica):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
    report = verify(broker.settings, app)
    say(f"7. `mig log verify {app}`: {report.records} records, "
        + ("ok" if report.ok else f"{len(report.problems)} problems"))
    say(f"   look at the log yourself: mig log tail {app} -t calls | less;"
        f" mig status {app}")
    say(f"done in {time.monotonic() - started:.1f} s; stop the broker with `mig broker down`")
    return bool(ok and report.ok)


def _request_once(port: int, line: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        return _request(sock, line)


def _control(broker: EmbeddedBroker, app: str) -> list[tuple[str, dict]]:
    from mig.control.read import read_control

    return read_control(broker.settings, app)


def _hot(broker: EmbeddedBroker, app: str) -> bool:
    latest = {}
    for name, rec in _control(broker, app):
        if name == "mig.log.MemberStatus":
            latest[rec["member"]] = rec["health"]
    return latest.get("replica") == "replaying"


def _promotion(broker: EmbeddedBroker, app: str) -> dict | None:
    promos = [rec for name, rec in _control(broker, app) if name == "mig.log.Promotion"]
    return promos[-1] if promos else None
