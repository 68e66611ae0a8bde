"""The guarantees of DESIGN.md that the interceptor provides, each with a test that fails
if the guarantee is broken: output commit, identity checks and divergence detection."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mig.broker.node import free_ports
from tests.apps.client import Connection, wait_port
from tests.conftest import run_mig
from tests.harness import record, replay, write_app

ROOT = Path(__file__).resolve().parents[1]
KVSERVER = ROOT / "apps" / "build" / "kvserver"
SNIPPETS = ROOT / "snippets" / "build"


@pytest.fixture(scope="module", autouse=True)
def built():
    subprocess.run(["make", "-s", "-C", str(ROOT / "apps")], check=True)
    subprocess.run(["make", "-s", "-C", str(ROOT / "snippets")], check=True)


def _start_primary(tmp_path: Path, app: Path) -> subprocess.Popen:
    env = dict(os.environ, MIG_HOME=str(tmp_path / "home-p"))
    log = open(tmp_path / "primary.log", "ab")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen([sys.executable, "-m", "mig", "--log-format", "json", "primary",
                             "start", str(app)], env=env, stdout=log, stderr=log)


@contextlib.contextmanager
def _kvserver(broker, tmp_path, app_name, mode) -> Iterator[Connection]:
    """kvserver under ``mig primary start`` in ``mode``: a connection to it, after one
    request answered; the primary is stopped (SIGTERM) after."""
    (port,) = free_ports(1)
    app = write_app(tmp_path, app_name, [str(KVSERVER), str(port)],
                    broker.settings.bootstrap_servers, barrier_mode=mode)
    primary = _start_primary(tmp_path, app)
    try:
        wait_port("127.0.0.1", port, 30)
        conn = Connection("127.0.0.1", port, timeout=30)
        assert conn.request("SET warm up").startswith("OK ")
        yield conn
    finally:
        primary.send_signal(signal.SIGTERM)
        primary.wait(30)


def _reply_while_broker_paused(broker, tmp_path, app_name, mode) -> tuple[float | None, float]:
    """Send a request while the broker is stopped (SIGSTOP) for 3 s. Returns the seconds
    until the reply arrived while paused (None: it did not) and after the resume."""
    with _kvserver(broker, tmp_path, app_name, mode) as conn:
        broker.node.pause()
        try:
            started = time.monotonic()
            conn.send("SET during pause")
            conn._sock.settimeout(3.0)  # noqa: SLF001 - the test bounds its own wait
            try:
                reply = conn.recv_line()
                while_paused: float | None = time.monotonic() - started
            except TimeoutError:
                reply, while_paused = None, None
        finally:
            broker.node.resume()
        if reply is None:
            conn._sock.settimeout(30.0)  # noqa: SLF001
            reply = conn.recv_line()
        assert reply.startswith("OK "), reply
        return while_paused, time.monotonic() - started


def test_output_mode_holds_replies_while_the_broker_is_paused(broker, tmp_path, app_name):
    while_paused, total = _reply_while_broker_paused(broker, tmp_path, app_name, "output")
    assert while_paused is None, "a reply left the primary before its input was committed"
    assert total < 30


def _pauses_answered(broker, tmp_path, app_name, mode, pauses) -> list[tuple[int, int, int]]:
    """``pauses`` times: send 0 to 3 requests, wait 0 to 120 ms (a random phase of the
    agent's turns and of its transaction commits, every 100 ms), pause the broker, send one
    more request and read replies for 50 ms. Returns (pause, requests before it, replies
    read while paused) for each pause during which the last request was answered too."""
    answered = []
    with _kvserver(broker, tmp_path, app_name, mode) as conn:
        rnd = random.Random(7)
        for i in range(pauses):
            before = rnd.randrange(4)
            for j in range(before):  # in flight when the pause comes, or answered before
                conn.send(f"SET k{i}.{j} v")
            time.sleep(rnd.choice([0.0, 0.0, rnd.random() * 0.003, rnd.random() * 0.12]))
            broker.node.pause()
            try:
                conn.send(f"SET p{i} v")
                conn._sock.settimeout(0.05)  # noqa: SLF001 - the test bounds its own wait
                got = 0
                with contextlib.suppress(TimeoutError):
                    while got <= before:
                        conn.recv_line()
                        got += 1
            finally:
                broker.node.resume()
            if got > before:
                answered.append((i, before, got))
            conn._sock.settimeout(30.0)  # noqa: SLF001
            for _ in range(got, before + 1):
                assert conn.recv_line().startswith("OK ")
    return answered


def test_output_mode_holds_replies_at_any_phase_of_the_agents_turns(broker, tmp_path,
                                                                   app_name):
    # 100 pauses: one at a single moment after start-up (the test above) cannot tell a
    # release that depends on where the agent is in its turns or its commit cycle
    answered = _pauses_answered(broker, tmp_path, app_name, "output", 100)
    assert not answered, f"replies left the primary while the broker was paused: {answered}"


def test_async_mode_does_not_wait_for_the_broker(broker, tmp_path, app_name):
    # the contrast that shows the output-mode test can fail: no barrier, no wait
    while_paused, _ = _reply_while_broker_paused(broker, tmp_path, app_name, "async")
    assert while_paused is not None and while_paused < 3


def test_replica_refuses_a_different_environment(settings, tmp_path, app_name):
    prim = write_app(tmp_path / "p", app_name, [str(SNIPPETS / "clocks"), "out.txt"],
                     settings.bootstrap_servers, env={"MODE": "a"})
    record(prim, tmp_path / "hp")
    other = write_app(tmp_path / "r", app_name, [str(SNIPPETS / "clocks"), "out.txt"],
                      settings.bootstrap_servers, env={"MODE": "b"})
    out = replay(other, tmp_path / "rw", tmp_path / "hr")
    assert out.returncode == 1
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("mig: error: this host cannot replay the recorded app: env_digest:")
    assert not (tmp_path / "rw" / "out.txt").exists()


def test_replica_refuses_a_different_binary(settings, tmp_path, app_name):
    prim = write_app(tmp_path / "p", app_name, [str(SNIPPETS / "clocks"), "out.txt"],
                     settings.bootstrap_servers)
    record(prim, tmp_path / "hp")
    other = write_app(tmp_path / "r", app_name, [str(SNIPPETS / "random"), "out.txt"],
                      settings.bootstrap_servers)
    out = replay(other, tmp_path / "rw", tmp_path / "hr")
    assert out.returncode == 1
    assert "binary_sha256: recorded" in out.stderr and "argv: recorded" in out.stderr


def test_divergence_is_reported_and_shown_by_mig_log(settings, tmp_path, app_name):
    prim, back = tmp_path / "p", tmp_path / "b"
    app = write_app(prim, app_name, [str(SNIPPETS / "local_file"), "out.txt"],
                    settings.bootstrap_servers)
    (prim / "local.txt").write_text("primary's file\n")
    back.mkdir()
    (back / "local.txt").write_text("backup's file!\n")
    record(app, tmp_path / "hp")
    out = replay(app, back, tmp_path / "hr")
    assert out.returncode == 3, out.stdout + out.stderr
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("mig: error: divergence at lpid 1 seq ")
    # the logical process, thread and call by name, the offset, and what to do next
    assert " (thread 0, WRITE), calls offset " in line, line
    assert "output bytes differ (hash): recorded WRITE" in line
    offset = int(line.split("calls offset ")[1].split(":")[0])
    seq = int(line.split(" seq ")[1].split(" ")[0])
    assert line.endswith(f" Next: `mig log tail {app_name} -t calls --from {offset}` shows the"
                         f" records there, `mig doctor {app}` checks this host and the program"
                         " (docs/operations.md, re-bootstrap a diverged replica)"), line
    shown = run_mig("log", "tail", app_name, "-t", "calls", "--from", str(offset), "--json",
                    "-b", settings.bootstrap_servers, check=True)
    first = json.loads(shown.stdout.splitlines()[0])
    assert first["offset"] == offset
    call = next(c for c in first["record"]["calls"] if c["seq"] == seq)
    assert call["kind"] == "WRITE" and call["out_len"] > 0
    # the same app with the same file replays cleanly: the detection is not a false alarm
    (back / "local.txt").write_text("primary's file\n")
    (back / "out.txt").unlink(missing_ok=True)
    clean = replay(app, back, tmp_path / "hr2")
    assert clean.returncode == 0, clean.stderr
    assert (back / "out.txt").read_text() == (prim / "out.txt").read_text()


def test_second_primary_on_a_recorded_log_is_refused(settings, tmp_path, app_name):
    app = write_app(tmp_path / "p", app_name, [str(SNIPPETS / "clocks"), "out.txt"],
                    settings.bootstrap_servers)
    record(app, tmp_path / "hp")
    again = run_mig("primary", "start", str(app), env={"MIG_HOME": str(tmp_path / "hp")})
    assert again.returncode == 1
    assert again.stderr.strip().splitlines()[-1].startswith(
        f"mig: error: mig.{app_name}.calls already holds a recording (")


def test_stopping_the_primary_ends_the_app_after_its_last_outputs(settings, tmp_path, app_name):
    # the app's exit waits for its held outputs; the recorder must keep serving them
    (port,) = free_ports(1)
    app = write_app(tmp_path, app_name, [sys.executable, str(ROOT / "apps" / "kv_asyncio.py"),
                                         str(port)], settings.bootstrap_servers)
    primary = _start_primary(tmp_path, app)
    wait_port("127.0.0.1", port, 30)
    with Connection("127.0.0.1", port) as conn:
        assert conn.request("SET a 1").startswith("OK ")
    started = time.monotonic()
    primary.send_signal(signal.SIGTERM)
    assert primary.wait(30) == 0
    assert time.monotonic() - started < 10  # ended by SIGTERM, not by the SIGKILL fallback
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
