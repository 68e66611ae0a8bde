"""Signed records (mig/wire/auth.py): with [security] hmac_keys_file, every record mig writes is
signed, and a record a foreign producer writes into the app's topics is refused by every
member, with its offset said, while the app goes on.

Test hosts and a broker as in tests/member/test_failover.py: the primary on host 0, a replica on
host 1.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from mig.errors import ConfigError
from mig.kafka.clients import KafkaSettings
from mig.kafka.writer import LogWriter
from mig.wire.auth import load_keys
from tests.apps.client import dump, request
from tests.deploy import Deployment, _answers, _wait_for
from tests.testnet import hosts_and_broker

KEY = "k2026 " + "5a" * 32 + "\n"


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    with hosts_and_broker(tmp_path_factory.mktemp("secbroker"), hosts=2) as pair:
        yield pair


def _signed(net, broker, tmp_path) -> Deployment:  # noqa: ANN001 - the fixtures'
    """A deployment whose records are signed ([security] hmac_keys_file, its keys file)."""
    dep = Deployment(net, broker, tmp_path,
                     extra_toml='[security]\nhmac_keys_file = "keys.txt"\n')
    keys = dep.tmp / "host0" / "keys.txt"
    keys.write_text("# rotated 2026-11\n" + KEY)
    os.chmod(keys, 0o600)
    return dep


def _start_with_writes(dep: Deployment, prefix: str, count: int) -> str:
    """Start the signed deployment and write ``count`` keys through its primary; the
    primary's address."""
    dep.start()
    ip0 = dep.net.host_ips[0]
    for i in range(count):
        assert request(ip0, dep.port, f"SET {prefix}{i} {i}").startswith("OK")
    return ip0


def test_forged_records_are_refused_and_the_app_goes_on(hosts, tmp_path):
    net, broker = hosts
    dep = _signed(net, broker, tmp_path)
    try:
        ip0 = _start_with_writes(dep, "s", 50)
        # a producer without the keys: a promotion of "evil" (which, acted on, would make
        # the primary stop its app) and a batch of calls for the replica to replay
        foreign = LogWriter(KafkaSettings(broker.settings.bootstrap_servers), dep.name)
        foreign.send("control", "mig.log.Promotion", {
            "app": dep.name, "member": "evil", "new_epoch": 9, "previous_epoch": 1,
            "calls_offsets": [], "ts_ms": int(time.time() * 1000), "detection_ms": None,
            "promotion_ms": 0, "reason": "failover"}, key="evil")
        foreign.send_raw("calls", b"\xc3\x01not a batch", key="1")
        foreign.commit()
        _wait_for(lambda: "mig.replayer.unauthenticated" in dep.log_text(1)
                  and "mig.recorder.unauthenticated" in dep.log_text(0), 20,
                  "both members to refuse the forged records")
        assert '"reason": "no mig.auth signature"' in dep.log_text(1)
        assert dep.procs[0].poll() is None and dep.procs[1].poll() is None
        for i in range(50, 80):  # the primary serves on, the replica replays on
            assert request(ip0, dep.port, f"SET s{i} {i}").startswith("OK")
        assert dump(ip0, dep.port, "after.txt") >= 80
        mine, theirs = dep.tmp / "host1" / "after.txt", dep.tmp / "host0" / "after.txt"
        _wait_for(lambda: mine.exists() and mine.read_bytes() == theirs.read_bytes(), 30,
                  "the replica to replay the dump")
        # signed records work end to end: a failover to the replica
        net.signal(0, signal.SIGKILL)
        _wait_for(lambda: _answers(net.host_ips[1], dep.port), 30, "host 1 to take over")
        assert request(net.host_ips[1], dep.port, "GET s79").startswith("VALUE 79")
    finally:
        dep.stop()


def test_status_and_migrate_refuse_forged_control_records(hosts, tmp_path):
    """`mig status` and `mig migrate`, given the app.toml (its keys), act on signed control
    records only, as the members do: a forged Promotion of "evil" does not make it the
    primary in `mig status`, and a forged status saying the primary stopped does not make
    `mig migrate` refuse; the migration itself (all signed) goes through."""
    import json

    from tests.conftest import run_mig

    net, broker = hosts
    dep = _signed(net, broker, tmp_path)
    try:
        ip0 = _start_with_writes(dep, "f", 20)
        foreign = LogWriter(KafkaSettings(broker.settings.bootstrap_servers), dep.name)
        now = int(time.time() * 1000)
        foreign.send("control", "mig.log.Promotion", {
            "app": dep.name, "member": "evil", "new_epoch": 9, "previous_epoch": 1,
            "calls_offsets": [], "ts_ms": now, "detection_ms": None, "promotion_ms": 0,
            "reason": "failover"}, key="evil")
        foreign.send("control", "mig.log.MemberStatus", {
            "app": dep.name, "member": "host0", "role": "PRIMARY", "epoch": 1,
            "lag_records": 0, "lag_ms": 0, "health": "stopped", "ts_ms": now + 5000,
            "host": None, "calls_offset": -1}, key="host0")
        foreign.commit()
        toml = ["--config", str(dep.app_toml)]
        shown = json.loads(run_mig("status", dep.name, "--json", *toml, check=True).stdout)
        (app,) = shown["apps"]
        assert (app["primary"], app["epoch"]) == ("host0", 1), app
        run = run_mig("migrate", dep.name, "--to", "host1", *toml, timeout=90)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "migrated" in run.stdout, run.stdout
        assert "mig.status.unauthenticated" in run.stderr
        _wait_for(lambda: _answers(net.host_ips[1], dep.port), 30, "host 1 to serve")
        assert request(net.host_ips[1], dep.port, "GET f19").startswith("VALUE 19")
        assert ip0 != net.host_ips[1]
    finally:
        dep.stop()


def test_a_signed_batch_written_again_is_refused(hosts, tmp_path):
    """A copy of a correctly signed CallBatch produced again (a replay attack, or a
    misbehaving mirror) would make the replica run those calls twice: it is refused by its
    batch number, with the offset named, and the replica stays equal to the primary."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    net, broker = hosts
    dep = _signed(net, broker, tmp_path)
    try:
        ip0 = _start_with_writes(dep, "r", 30)
        conf = {"bootstrap.servers": broker.settings.bootstrap_servers}
        cons = Consumer({**conf, "group.id": "copier", "enable.auto.commit": False})
        topic = f"mig.{dep.name}.calls"
        cons.assign([TopicPartition(topic, 0, 0)])
        batches = []
        while len(batches) < 5:
            msg = cons.poll(5)
            assert msg is not None, "no calls records to copy"
            if msg.error() is None and msg.value()[:2] == b"\xc3\x01":
                batches.append(msg)
        cons.close()
        copier = Producer(conf)
        for msg in batches[2:5]:  # signed, so the signature check lets them through
            copier.produce(topic, value=msg.value(), key=msg.key(), headers=msg.headers(),
                           partition=0)
        copier.flush(10)
        _wait_for(lambda: "mig.replayer.duplicate_batch" in dep.log_text(1), 20,
                  "the replica to refuse the copies")
        assert dep.procs[1].poll() is None
        for i in range(30, 40):
            assert request(ip0, dep.port, f"SET r{i} {i}").startswith("OK")
        assert dump(ip0, dep.port, "after.txt") >= 40
        mine, theirs = dep.tmp / "host1" / "after.txt", dep.tmp / "host0" / "after.txt"
        _wait_for(lambda: mine.exists() and mine.read_bytes() == theirs.read_bytes(), 30,
                  "the replica to replay the dump, equal to the primary's")
    finally:
        dep.stop()


def test_keys_file_errors_never_show_a_key(tmp_path):
    with pytest.raises(ConfigError, match="line 1: expected 'KEY_ID HEX'") as info:
        load_keys("k1 abcd\n", "keys.txt")
    assert "abcd" not in str(info.value)
    auth = load_keys(KEY + "old " + "11" * 16 + "\n", "keys.txt")
    assert "5a5a" not in repr(auth)
    sig = auth.sign("calls", "1", b"x")
    assert sig.startswith(b"k2026:")
    assert auth.check("calls", b"1", b"x", [("mig.auth", sig)]) is None
    assert "does not match" in auth.check("control", b"1", b"x", [("mig.auth", sig)])
    assert "does not match" in auth.check("calls", b"1", b"y", [("mig.auth", sig)])
    older = load_keys("old " + "11" * 16 + "\n", "k").sign("calls", "1", b"x")
    assert auth.check("calls", b"1", b"x", [("mig.auth", older)]) is None  # rotation
    assert "unknown key id" in load_keys(KEY, "k").check("calls", b"1", b"x",
                                                         [("mig.auth", older)])


def test_a_signature_is_the_documented_hmac_of_role_key_and_value():
    """The signed message is fixed (mig/wire/auth.py; the native pump, shim/src/mig_hmac.c,
    makes the same): "mig1\\0ROLE\\0KEY\\0" then "V" and the value, or "T" for a tombstone,
    under the first key, whatever the Python side keeps precomputed between records."""
    import hashlib
    import hmac

    auth = load_keys(KEY + "old " + "11" * 16 + "\n", "keys")
    secret = bytes.fromhex("5a" * 32)
    for key in (None, "1.2", b"\x00\xffkey"):
        for value in (None, b"", os.urandom(1000)):
            raw = key.encode() if isinstance(key, str) else (key or b"")
            msg = (b"mig1\0calls\0" + raw + b"\0"
                   + (b"T" if value is None else b"V" + value))
            want = "k2026:" + hmac.new(secret, msg, hashlib.sha256).hexdigest()
            assert auth.sign("calls", key, value) == want.encode()
            headers = [("mig.auth", want.encode())]
            assert auth.check("calls", key, value, headers) is None
            assert auth.check("control", key, value, headers) is not None
