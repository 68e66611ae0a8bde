"""The embedded broker's lifecycle through the real `mig broker` command, and its errors."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from mig.broker.node import free_ports
from tests.conftest import run_mig


def test_status_reports_the_live_session_broker(broker, broker_home):
    proc = run_mig("broker", "status", env={"MIG_HOME": str(broker_home)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"broker live at {broker.settings.bootstrap_servers} (pid ")
    st = json.loads(run_mig("broker", "status", "--json",
                            env={"MIG_HOME": str(broker_home)}).stdout)
    assert st["answering"] and st["brokers"] == 1 and st["kafka_version"].startswith("4.")


def test_up_down_status_are_idempotent(tmp_path):
    env = {"MIG_HOME": str(tmp_path)}
    port, cport = free_ports(2)
    up = run_mig("broker", "up", "--port", str(port), "--controller-port", str(cport), env=env)
    assert up.returncode == 0, up.stderr
    pid = json.loads(run_mig("broker", "status", "--json", env=env).stdout)["pid"]
    try:
        started = time.monotonic()
        again = run_mig("broker", "up", env=env)  # remembers its ports
        assert again.returncode == 0
        assert time.monotonic() - started < 15
        assert f"(pid {pid}," in again.stdout
        clash = run_mig("broker", "up", "--port", str(port + 1), env=env)
        assert clash.returncode == 1 and "mig broker down --purge" in clash.stderr
    finally:
        down = run_mig("broker", "down", env=env)
    assert down.stdout.strip() == "broker stopped"
    st = run_mig("broker", "status", env=env)
    assert st.returncode == 1 and st.stdout.startswith("broker not running")
    assert run_mig("broker", "down", env=env).stdout.strip() == "broker was not running"


def test_missing_maven_is_a_clear_error(tmp_path):
    java_home = Path(shutil.which("java")).resolve().parent.parent
    env = {"MIG_HOME": str(tmp_path / "home"), "MIG_CACHE": str(tmp_path / "cache"),
           "PATH": "/nonexistent", "JAVA_HOME": str(java_home)}
    proc = run_mig("broker", "up", env=env)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "mig: error: Maven (mvn) is not installed")


def test_missing_java_is_a_clear_error(tmp_path):
    env = {"MIG_HOME": str(tmp_path), "PATH": str(tmp_path / "nobin"), "JAVA_HOME": ""}
    proc = run_mig("broker", "up", env=env)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "mig: error: Java is not installed"), proc.stderr
    assert sys.executable  # the runner itself needs no PATH


def test_unreachable_broker_bounded_wait_one_line():
    (dead,) = free_ports(1)
    started = time.monotonic()
    proc = run_mig("log", "tail", "x", "-b", f"127.0.0.1:{dead}")
    elapsed = time.monotonic() - started
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(f"mig: error: no Kafka broker answered at 127.0.0.1:{dead}"
                                " within 10 s")
    assert "Traceback" not in proc.stderr and "rdkafka" not in proc.stderr
    assert elapsed < 30


def test_read_commands_do_not_start_the_embedded_broker(tmp_path):
    proc = run_mig("log", "tail", "x", env={"MIG_HOME": str(tmp_path)})
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith(
        "the embedded broker is not running: start it with `mig broker up`,"
        " or pass --bootstrap HOST:PORT")


def test_cluster_ids_never_look_like_an_option():
    """The storage tool parses `-t ID`: an id starting with '-' failed formatting."""
    from mig.broker.node import new_cluster_id

    ids = [new_cluster_id() for _ in range(5000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(i) == 22 for i in ids) and len(set(ids)) == len(ids)


def test_pause_returns_once_every_thread_of_the_broker_is_stopped(broker):
    # kill(SIGSTOP) returns before the JVM's threads have stopped: a test that pauses the
    # broker to show that nothing is acknowledged meanwhile relies on this wait
    pid = broker.node.pid()
    broker.node.pause()
    try:
        states = [stat.read_text().rsplit(") ", 1)[1][:1]
                  for stat in Path(f"/proc/{pid}/task").glob("*/stat")]
    finally:
        broker.node.resume()
    assert len(states) > 10 and set(states) <= {"T", "t"}, states
    assert broker.node.pid() == pid


def test_pausing_a_node_that_is_not_running_is_an_error(tmp_path):
    from mig.broker.node import KafkaNode
    from mig.errors import BrokerError

    port, cport = free_ports(2)
    node = KafkaNode(node_id=1, directory=tmp_path, port=port, controller_port=cport)
    try:
        node.pause()
    except BrokerError as exc:
        assert str(exc) == f"cannot pause the Kafka node in {tmp_path}: it is not running"
    else:
        raise AssertionError("a pause of a node that is not running passed as done")
