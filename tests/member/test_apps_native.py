"""The test applications in tests/apps/, run natively (no mig).

mig's integration tests record these programs on a primary and replay them on a backup and
compare what they say and dump; that comparison means something only if the programs are
right on their own. Here each one serves 2000 random requests, the replies are checked
against a model of the requests the client made, and its DUMP must equal that model; then
each app's own features (idle timeout, TTL expiry, worker parts, ticks and children).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.apps import client

APPS = Path(__file__).resolve().parents[1] / "apps"
BUILD = APPS / "build"
HOST = "127.0.0.1"
NWORKERS = 3

# argv of each app, given its port
COMMANDS: dict[str, Callable[[int], list[str]]] = {
    "kvserver": lambda port: [str(BUILD / "kvserver"), str(port)],
    "kv_asyncio": lambda port: [sys.executable, str(APPS / "kv_asyncio.py"), str(port)],
    "workers": lambda port: [str(BUILD / "workers"), str(port), str(NWORKERS)],
    "sigselect": lambda port: [str(BUILD / "sigselect"), str(port)],
}


@pytest.fixture(scope="session")
def built() -> Path:
    proc = subprocess.run(["make", "-C", str(APPS)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, f"make failed:\n{proc.stdout}\n{proc.stderr}"
    return BUILD


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, then SIGKILL if it lingers; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return self.proc.returncode


@pytest.fixture
def start(built: Path, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Starts an app on a free port (extra argv appended) and kills it after the test."""
    servers: list[Server] = []

    def _start(app: str, *extra: str) -> Server:
        port = free_port()
        log = tmp_path / f"{app}-{len(servers)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([*COMMANDS[app](port), *extra], stdout=out,
                                    stderr=subprocess.STDOUT)
        server = Server(proc, port, log)
        servers.append(server)
        try:
            client.wait_port(HOST, port, 10)
        except TimeoutError as exc:
            raise AssertionError(f"{app} did not listen: {log.read_text()}") from exc
        return server

    yield _start
    for server in servers:
        server.stop()


def model_of(log: Sequence[tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """Check every reply against the state the earlier requests imply; the final state
    (key -> (value, id))."""
    state: dict[str, tuple[str, str]] = {}
    for req, reply in log:
        op, key, *rest = req.split()
        if op == "SET":
            m = re.fullmatch(r"OK ([0-9a-f]{16})", reply)
            assert m, (req, reply)
            state[key] = (rest[0], m[1])
        elif op == "GET":
            want = f"VALUE {state[key][0]} {state[key][1]}" if key in state else "NONE"
            assert reply == want, (req, reply)
        else:
            assert reply == ("DELETED" if state.pop(key, None) else "NONE"), (req, reply)
    return state


def fnv1a(key: str) -> int:
    h = 2166136261
    for b in key.encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def dumped(app: str, path: Path) -> list[client.Dump]:
    """The dump file(s) an app wrote for DUMP path: one per worker for workers."""
    if app == "workers":
        return [client.read_dump(f"{path}.{i}") for i in range(NWORKERS)]
    return [client.read_dump(path)]


@pytest.mark.parametrize("app", list(COMMANDS))
def test_random_requests_match_the_model_and_the_dump(app, start, tmp_path):
    server = start(app)
    t0 = time.time()
    log = client.run_ops(HOST, server.port, 2000, seed=7)
    t1 = time.time()
    assert len(log) == 2000
    state = model_of(log)
    ops = [req.split()[0] for req, _ in log]
    replies = [reply for _, reply in log]
    assert ops.count("SET") > 800 and ops.count("DEL") > 150
    assert sum(r.startswith("VALUE") for r in replies) > 300  # GETs found keys...
    assert "DELETED" in replies and "NONE" in replies  # ...and missed some
    ids = [r[3:] for r in replies if r.startswith("OK ")]
    assert len(set(ids)) == len(ids)

    path = tmp_path / "state.dump"
    assert client.dump(HOST, server.port, path) == len(state)
    parts = dumped(app, path)
    entries = {k: e for part in parts for k, e in part.entries.items()}
    assert {k: (e[0], e[1]) for k, e in entries.items()} == state
    assert sum(len(p.entries) for p in parts) == len(entries)  # no key in two parts
    for part in parts:
        assert part.app == app
        assert part.keys == sorted(part.keys)
        assert int(part.header["entries"]) == len(part.entries)
        for entry in part.entries.values():
            assert t0 - 1 <= float(entry[2]) <= t1 + 1  # CLOCK_REALTIME of the SET
            assert int(entry[3]) >= 1
    if app == "workers":
        for i, part in enumerate(parts):
            assert part.header["part"] == f"{i}/{NWORKERS}"
            assert all(fnv1a(k) % NWORKERS == i for k in part.entries)
        assert all(part.entries for part in parts)
    if app == "kv_asyncio":
        assert all(e[4] == "-" for e in entries.values())
        assert parts[0].header["expired"] == "0"
    assert server.stop() in (0, -signal.SIGTERM)


@pytest.mark.parametrize("app", list(COMMANDS))
def test_bad_requests_get_err_and_quit_closes(app, start, tmp_path):
    server = start(app)
    with client.Connection(HOST, server.port, timeout=5) as conn:
        for bad in ["FROB x", "SET onlykey", "GET", "DEL a b", "DUMP", "  "]:
            assert conn.request(bad).startswith("ERR "), bad
        assert conn.request("SET a 1") .startswith("OK ")
        assert conn.request("\tGET   a ").startswith("VALUE 1 ")  # spaces and tabs split
        assert conn.request("DUMP /nonexistent-dir/x").startswith("ERR ")
        assert conn.request("QUIT") == "BYE"
        with pytest.raises(ConnectionError):
            conn.recv_line()
    with client.Connection(HOST, server.port, timeout=5) as conn:
        conn.send("SET k " + "x" * 5000)
        assert conn.recv_line() == "ERR line too long"
        with pytest.raises(ConnectionError):
            conn.recv_line()
    # pipelined requests on one connection come back in order
    with client.Connection(HOST, server.port, timeout=5) as conn:
        for i in range(50):
            conn.send(f"SET p{i} {i}")
            conn.send(f"GET p{i}")
        for i in range(50):
            assert conn.recv_line().startswith("OK ")
            assert conn.recv_line().startswith(f"VALUE {i} ")
    assert client.request(HOST, server.port, "GET a").startswith("VALUE 1 ")


def test_kvserver_closes_idle_connections(start):
    server = start("kvserver", "127.0.0.1", "1")
    idle = client.Connection(HOST, server.port, timeout=5)
    busy = client.Connection(HOST, server.port, timeout=5)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 1.6:
            assert busy.request("GET x") == "NONE"
            time.sleep(0.2)
        with pytest.raises(ConnectionError):
            idle.recv_line()
        assert time.monotonic() - t0 < 4
        assert busy.request("GET x") == "NONE"
    finally:
        idle.close()
        busy.close()


def test_kv_asyncio_expires_keys(start, tmp_path):
    server = start("kv_asyncio")
    with client.Connection(HOST, server.port, timeout=5) as conn:
        for key in ("a", "c"):
            assert conn.request(f"SET {key} v 150").startswith("OK ")
        assert conn.request("SET b v").startswith("OK ")
        assert conn.request("SET d v 0").startswith("ERR ")
        assert conn.request("SET d v soon").startswith("ERR ")
        assert conn.request("GET a").startswith("VALUE v ")
        time.sleep(0.5)
        assert conn.request("GET a") == "NONE"  # expired, by the sweep or on access
        assert conn.request("DEL a") == "NONE"
        path = tmp_path / "ttl.dump"
        assert client.dump(HOST, server.port, path) == 1
    got = client.read_dump(path)
    assert list(got.entries) == ["b"]  # c, never touched again, went in a sweep
    assert got.entries["b"][4] == "-"
    assert got.header == {"entries": "1", "expired": "2"}


def test_workers_dump_parts_and_stop_cleanly(start, tmp_path):
    server = start("workers")
    with client.Connection(HOST, server.port, timeout=5) as conn:
        keys = [f"w{i}" for i in range(30)]
        for key in keys:
            assert conn.request(f"SET {key} {key}v").startswith("OK ")
        path = tmp_path / "w.dump"
        assert conn.request(f"DUMP {path}") == "DUMPED 30"
    assert sorted(os.listdir(tmp_path)) == sorted(
        [f"w.dump.{i}" for i in range(NWORKERS)] + [server.log.name])
    parts = dumped("workers", path)
    assert sorted(k for p in parts for k in p.entries) == sorted(keys)
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children")
    workers = [int(p) for p in children.read_text().split()]
    assert len(workers) == NWORKERS
    assert server.stop() == 0  # exits 0 only after waitpid of every worker
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists()


def test_sigselect_ticks_spawns_and_reaps(start, tmp_path):
    server = start("sigselect")
    with client.Connection(HOST, server.port, timeout=5) as conn:
        first = int(conn.request("TICKS").split()[1])
        time.sleep(0.2)
        second = int(conn.request("TICKS").split()[1])
        assert second > first  # a SIGALRM every 10 ms
        codes = [3, 300, 7, 255, 0, 1000]
        for i, n in enumerate(codes, 1):
            assert conn.request(f"SPAWN {n}") == f"SPAWNED {i}"
        assert conn.request("SPAWN -1").startswith("ERR ")
        assert conn.request("SET s 1").startswith("OK ")
        deadline = time.monotonic() + 5
        while True:
            stats = dict(f.split("=") for f in conn.request("STATS").split()[1:])
            if stats["reaped"] == str(len(codes)) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert stats["spawned"] == stats["reaped"] == str(len(codes))
        assert stats["exitsum"] == str(sum(n % 256 for n in codes))
        assert stats["killed"] == "0"
        assert 1 <= int(stats["sigchld"]) <= len(codes)  # exits may share a SIGCHLD
        path = tmp_path / "sig.dump"
        assert client.dump(HOST, server.port, path) == 1
    got = client.read_dump(path)
    assert got.header["spawned"] == got.header["reaped"] == str(len(codes))
    assert got.header["exitsum"] == stats["exitsum"]
    assert int(got.header["ticks"]) >= int(stats["ticks"]) >= second
    assert list(got.entries) == ["s"]
