"""Checkpoints: a hot replica dumps the app with CRIU into mig.NAME.checkpoints; a replica
that starts late on another test host restores it (in its own pid and mount namespace,
beside the other members on this machine) and replays from the checkpoint's offsets to the
primary's state; the calls topic is trimmed; bad checkpoints are refused with a reason.

Test hosts and the broker as in tests/member/test_failover.py: the primary on host 0, the
checkpointing replica on host 1, the late replica on host 2.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mig.checkpoint.store import CHUNKS, MANIFESTS, list_manifests
from mig.kafka.clients import consumer
from mig.kafka.writer import LogWriter
from tests.apps.client import dump, request
from tests.deploy import Deployment, _answers, _wait_for, port_free
from tests.testnet import hosts_and_broker


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    """Three test hosts and a broker all of them reach."""
    with hosts_and_broker(tmp_path_factory.mktemp("ckbroker"), hosts=3) as pair:
        yield pair


def _writes(dep: Deployment, start: int, count: int) -> None:
    for i in range(start, start + count):
        assert request(dep.net.host_ips[0], dep.port, f"SET k{i:05d} v{i}").startswith("OK")


def _checkpoint(dep: Deployment) -> str:
    run = subprocess.run([sys.executable, "-m", "mig", "checkpoint", dep.name, "--bootstrap",
                          dep.broker.settings.bootstrap_servers, "--timeout", "60"],
                         capture_output=True, text=True, timeout=90)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("checkpoint "), run.stdout
    return run.stdout.split()[1].rstrip(":")


def _log_events(dep: Deployment, host: int, event: str) -> list[dict]:
    out = []
    for line in dep.log_text(host).splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            out.append(json.loads(line))
    return out


def _same_dump(dep: Deployment, host: int, name: str) -> None:
    assert dump(dep.net.host_ips[0], dep.port, name) > 0
    primary = dep.tmp / "host0" / name
    mine = dep.tmp / f"host{host}" / name
    _wait_for(lambda: mine.exists() and mine.read_bytes() == primary.read_bytes(), 60,
              f"host {host} to replay the dump")


def _low_watermark(dep: Deployment) -> int:
    from confluent_kafka import TopicPartition

    cons = consumer(dep.broker.settings)
    try:
        return cons.get_watermark_offsets(TopicPartition(f"mig.{dep.name}.calls", 0),
                                          timeout=10)[0]
    finally:
        cons.close()


def test_a_late_replica_restores_the_checkpoint_and_catches_up(hosts, tmp_path):
    net, broker = hosts
    dep = Deployment(net, broker, tmp_path, extra_toml="[checkpoints]\nkeep = 2\n")
    try:
        dep.start()
        _writes(dep, 0, 300)
        first = _checkpoint(dep)
        manifests = list_manifests(broker.settings, dep.name)
        assert [m["checkpoint_id"] for m in manifests] == [first]
        m = manifests[0]
        assert m["member"] == "host1" and m["chunk_count"] >= 1 and m["total_size"] > 0
        assert m["barrier_offsets"][0]["offset"] > 0 and m["lpid_seqs"]["1"] > 0
        print(f"\ncheckpoint {first}: {m['total_size']} bytes, app held {m['dump_ms']} ms")
        _wait_for(lambda: _low_watermark(dep) == m["barrier_offsets"][0]["offset"], 20,
                  "the calls before the checkpoint to be deleted")
        _writes(dep, 300, 200)
        # a late replica on host 2: from the checkpoint, not the (trimmed) log start
        started = time.monotonic()
        dep.start_replica(2)
        _wait_for(lambda: "host2" in dep.hot(), 60, "the late replica to be hot")
        restored = _log_events(dep, 2, "mig.replayer.restored")
        assert restored and restored[0]["checkpoint_id"] == first, dep.log_text(2)[-2000:]
        print(f"late replica hot {time.monotonic() - started:.1f} s after its start,"
              f" restore {restored[0]['restore_ms']} ms")
        _writes(dep, 500, 100)
        # a raw syscall(SYS_getrandom) after the restore: trapped only if the restored
        # threads armed their traps again (CRIU does not restore them)
        for i in range(5):
            assert request(dep.net.host_ips[0], dep.port, f"SETRAND r{i}").startswith("OK")
        _same_dump(dep, 2, "state-a.txt")
        _same_dump(dep, 1, "state-a.txt")
        # the restored replica takes checkpoints too (CRIU runs in its namespaces): with
        # host 1 gone, it is the one hot replica that answers
        net.signal(1, signal.SIGKILL)
        time.sleep(2)  # host 1's last status is no longer fresh
        second = _checkpoint(dep)
        m2 = [m for m in list_manifests(broker.settings, dep.name)
              if m["checkpoint_id"] == second][0]
        assert m2["member"] == "host2", m2
        assert m2["barrier_offsets"][0]["offset"] > m["barrier_offsets"][0]["offset"]
        # and its checkpoint restores: a new replica on host 1, from scratch
        for folder in ("host1", "run1", "home1"):
            subprocess.run(["rm", "-rf", str(tmp_path / folder)], check=True)
        (tmp_path / "host1.log").write_text("")
        dep.start_replica(1)
        _wait_for(lambda: _log_events(dep, 1, "mig.replayer.restored"), 60,
                  "host 1 to restore")
        assert _log_events(dep, 1, "mig.replayer.restored")[0]["checkpoint_id"] == second
        _writes(dep, 600, 100)
        _same_dump(dep, 1, "state-b.txt")
        # the restored replicas are failover targets too: kill the primary and host 2
        net.signal(0, signal.SIGKILL)
        net.signal(2, signal.SIGKILL)
        _wait_for(lambda: _answers(net.host_ips[1], dep.port), 30, "host 1 to take over")
        assert request(net.host_ips[1], dep.port, "GET k00042").startswith("VALUE v42")
        assert request(net.host_ips[1], dep.port, "GET k00699").startswith("VALUE v699")
    finally:
        dep.stop()


def _restored_replica(dep: Deployment, host: int) -> None:
    """Start a replica on ``host`` from scratch and wait until it restored the newest
    checkpoint and replayed what the primary wrote since."""
    for folder in (f"host{host}", f"run{host}", f"home{host}"):
        subprocess.run(["rm", "-rf", str(dep.tmp / folder)], check=True)
    (dep.tmp / f"host{host}.log").write_text("")
    dep.start_replica(host)
    _wait_for(lambda: _log_events(dep, host, "mig.replayer.restored"), 60,
              f"host {host} to restore")
    _same_dump(dep, host, f"restored-{time.monotonic_ns()}.txt")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_a_restored_app_ends_with_its_agent(hosts, tmp_path, sig):
    """An app restored from a checkpoint runs in its own pid namespace: whatever ends its
    agent ends it, the replica's (kill -9) and, once that replica is the primary, the
    primary's (kill -9 or SIGTERM: then mig exits 0, the app having stopped as asked), and
    the port is free at once."""
    net, broker = hosts
    dep = Deployment(net, broker, tmp_path)
    try:
        dep.start()
        _writes(dep, 0, 50)
        _checkpoint(dep)
        _restored_replica(dep, 2)
        if sig == signal.SIGKILL:
            dep.procs[2].kill()
            _wait_for(lambda: not net.pids(2), 5, "the restored replica's app to end")
            _restored_replica(dep, 2)
        net.signal(0, signal.SIGKILL)
        net.signal(1, signal.SIGKILL)
        _wait_for(lambda: _answers(net.host_ips[2], dep.port), 30, "host 2 to take over")
        time.sleep(2)  # host 1's last status is no longer fresh: no handoff to it on SIGTERM
        agent = dep.procs[2]
        agent.send_signal(sig)
        _wait_for(lambda: not net.pids(2), 5, "the restored primary's app to end")
        assert port_free(net, 2, dep.port)
        if sig == signal.SIGTERM:
            assert agent.wait(10) == 0, dep.log_text(2)[-2000:]
    finally:
        dep.stop()


@pytest.mark.parametrize("threads", ["serialized", "parallel"])
def test_a_multi_threaded_app_is_checkpointed_and_restored(hosts, tmp_path, threads):
    """poolserver (an accept thread and 4 workers waiting on condition variables), in both
    thread modes: CRIU's parasite runs in every thread, so each must wait for its records
    with its trap open (a thread whose selector said "block" there got SIGSYS and failed
    the dump), and a late replica restores it (with the run token's state, serialized)
    and replays on."""
    net, broker = hosts
    dep = Deployment(net, broker, tmp_path, app="poolserver", app_keys=f'threads = "{threads}"\n')
    try:
        dep.start()
        _writes(dep, 0, 100)
        cid = _checkpoint(dep)
        dep.start_replica(2)
        _wait_for(lambda: _log_events(dep, 2, "mig.replayer.restored"), 60,
                  "host 2 to restore")
        assert _log_events(dep, 2, "mig.replayer.restored")[0]["checkpoint_id"] == cid
        _writes(dep, 100, 50)
        _same_dump(dep, 2, "state-t.txt")
    finally:
        dep.stop()


def test_bad_checkpoints_are_refused_with_a_reason(hosts, tmp_path):
    """keep = 2: the newest checkpoint is corrupted, a forged newer one claims another
    kernel; the late replica refuses both, saying why, and restores the older good one."""
    net, broker = hosts
    dep = Deployment(net, broker, tmp_path, extra_toml="[checkpoints]\nkeep = 3\n")
    try:
        dep.start()
        _writes(dep, 0, 100)
        good = _checkpoint(dep)
        _writes(dep, 100, 100)
        bad = _checkpoint(dep)
        manifests = {m["checkpoint_id"]: m for m in list_manifests(broker.settings, dep.name)}
        writer = LogWriter(broker.settings, dep.name)
        # corrupt chunk 0 of `bad` (a later record with the same key wins)
        writer.send("checkpoints", "mig.log.CheckpointChunk", {
            "app": dep.name, "checkpoint_id": bad, "index": 0,
            "count": manifests[bad]["chunk_count"], "data": b"not a checkpoint",
            "sha256": "0" * 64}, key=f"{bad}/000000", partition=CHUNKS)
        # a forged newest checkpoint from another kernel
        forged = dict(manifests[good], checkpoint_id="9999999999999-forged",
                      kernel="2.6.32-old", created_ms=manifests[bad]["created_ms"] + 1)
        writer.send("checkpoints", "mig.log.CheckpointManifest", forged,
                    key="manifest/9999999999999-forged", partition=MANIFESTS)
        writer.commit()
        _writes(dep, 200, 50)
        dep.start_replica(2)
        _wait_for(lambda: "host2" in dep.hot(), 60, "the late replica to be hot")
        refused = {e["checkpoint_id"]: e["reason"]
                   for e in _log_events(dep, 2, "mig.replayer.checkpoint_refused")}
        assert "kernel 2.6.32-old" in refused["9999999999999-forged"]
        assert "corrupt" in refused[bad]
        restored = _log_events(dep, 2, "mig.replayer.restored")
        assert restored and restored[0]["checkpoint_id"] == good
        _same_dump(dep, 2, "state-b.txt")
    finally:
        dep.stop()


def test_mig_checkpoint_list_and_log(hosts, tmp_path):
    net, broker = hosts
    dep = Deployment(net, broker, tmp_path)
    try:
        dep.start()
        _writes(dep, 0, 20)
        cid = _checkpoint(dep)
        run = subprocess.run([sys.executable, "-m", "mig", "checkpoint", dep.name, "--list",
                              "--bootstrap", broker.settings.bootstrap_servers],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0 and f"checkpoint {cid}: calls offsets 0:" in run.stdout
        assert "CRIU 4." in run.stdout
        status = subprocess.run([sys.executable, "-m", "mig", "status", dep.name, "--json",
                                 "--bootstrap", broker.settings.bootstrap_servers],
                                capture_output=True, text=True, timeout=60)
        app = json.loads(status.stdout)["apps"][0]
        assert [c["checkpoint_id"] for c in app["checkpoints"]] == [cid]
        row = next(m for m in app["members"] if m["member"] == "host1")
        assert row["checkpoint"].startswith(cid)
        text = subprocess.run([sys.executable, "-m", "mig", "status", dep.name,
                               "--bootstrap", broker.settings.bootstrap_servers],
                              capture_output=True, text=True, timeout=60).stdout
        assert f"last checkpoint: {cid} by host1, calls offsets 0:" in text
    finally:
        dep.stop()


def test_one_request_makes_one_checkpoint_when_the_replica_is_not_hot(hosts, tmp_path):
    """The replica's host is paused (SIGSTOP) long enough that its status is old, and a
    checkpoint is asked for: the primary's host answers (a local replay), and the replica,
    once it runs again and reads the request, must not answer too. It did: a replica that
    was not hot answered every request, and one request made two checkpoints."""
    net, broker = hosts
    dep = Deployment(net, broker, tmp_path)
    paused = False
    try:
        dep.start()
        _writes(dep, 0, 20)
        net.signal(1, signal.SIGSTOP)
        paused = True
        time.sleep(2.5)  # more than 5 of the primary's heartbeats (200 ms)
        _writes(dep, 20, 20)
        asked_ms = int(time.time() * 1000)
        run = subprocess.Popen([sys.executable, "-m", "mig", "checkpoint", dep.name,
                                "--bootstrap", broker.settings.bootstrap_servers,
                                "--timeout", "60"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for(lambda: any(name == "mig.log.CheckpointRequest" for name, _ in dep.control()),
                  30, "the request in the control topic")
        net.signal(1, signal.SIGCONT)
        paused = False
        out, err = run.communicate(timeout=90)
        assert run.returncode == 0, out + err
        _wait_for(lambda: "host1" in dep.hot(), 60, "the replica to be hot again")
        deadline = time.monotonic() + 10  # a second answer would be there by then
        while True:
            made = [m for m in list_manifests(broker.settings, dep.name)
                    if m["created_ms"] >= asked_ms]
            if len(made) > 1 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert [m["member"] for m in made] == ["host0-checkpointer"], made
    finally:
        if paused:
            net.signal(1, signal.SIGCONT)
        dep.stop()


def test_a_primary_alone_checkpoints_by_a_local_replay(hosts, tmp_path):
    """No replica: mig checkpoint is answered by the primary's host, which replays the app
    locally (mig replica follow --checkpoint-once) and dumps that; the second time it starts
    from the first checkpoint. A late replica restores the second one."""
    net, broker = hosts
    dep = Deployment(net, broker, tmp_path, replicas=())
    try:
        dep.start()
        _writes(dep, 0, 200)
        first = _checkpoint(dep)
        _writes(dep, 200, 200)
        second = _checkpoint(dep)
        manifests = {m["checkpoint_id"]: m for m in list_manifests(broker.settings, dep.name)}
        assert manifests[first]["member"] == manifests[second]["member"] == "host0-checkpointer"
        assert (manifests[second]["barrier_offsets"][0]["offset"]
                > manifests[first]["barrier_offsets"][0]["offset"])
        _wait_for(lambda: len(_log_events(dep, 0, "mig.recorder.checkpoint")) == 2, 30,
                  "the primary to reap its checkpointer")
        assert not (tmp_path / "run0" / "checkpointer").exists()  # nothing left behind
        dep.start_replica(1)
        _wait_for(lambda: "host1" in dep.hot(), 60, "the late replica to be hot")
        restored = _log_events(dep, 1, "mig.replayer.restored")
        assert restored and restored[0]["checkpoint_id"] == second, dep.log_text(1)[-2000:]
        _writes(dep, 400, 50)
        _same_dump(dep, 1, "state-alone.txt")
    finally:
        dep.stop()


def test_checkpoint_and_migrate_of_an_app_nobody_follows_fail_at_once_with_the_reason(
        hosts, tmp_path):
    """The member asked answers what it cannot do in the control topic (RequestFailed), and
    the commands end with that reason at once: the timeouts (60 s) are never waited out.
    First the primary alone, then with a hot replica that takes no checkpoints."""
    net, broker = hosts
    dep = Deployment(net, broker, tmp_path, replicas=(),
                     extra_toml="[checkpoints]\nwhen_alone = false\n")

    def fails(*args: str) -> str:
        run = subprocess.run([sys.executable, "-m", "mig", *args, "--timeout", "60",
                              "--bootstrap", broker.settings.bootstrap_servers],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 1, run.stdout + run.stderr
        assert len(run.stderr.strip().splitlines()) == 1, run.stderr
        assert "within 60 s" not in run.stderr
        return run.stderr.strip()

    try:
        dep.start()
        assert fails("checkpoint", dep.name) == (
            f"mig: error: host0 could not checkpoint {dep.name}: no hot replica, and this"
            " primary takes no checkpoints itself ([checkpoints] when_alone = false)")
        assert fails("migrate", dep.name) == (
            f"mig: error: host0 could not migrate {dep.name}: no hot replica (no replica"
            " reported)")
        events = _log_events(dep, 0, "mig.recorder.request_failed")
        assert [e["request"] for e in events] == ["checkpoint", "migrate"]
        # a hot replica that takes no checkpoints (--from-start) answers for itself
        dep.start_replica(1, "--from-start")
        _wait_for(lambda: "host1" in dep.hot(), 60, "the replica to be hot")
        assert fails("checkpoint", dep.name) == (
            f"mig: error: host1 could not checkpoint {dep.name}: checkpoints are off on this"
            " replica ([checkpoints] enabled = false, or --from-start)")
        assert fails("migrate", dep.name, "--to", "host9") == (
            f"mig: error: host0 could not migrate {dep.name}: host9 is not a hot replica"
            " (hot: host1)")
        # both stopped (their last statuses say so): nobody can answer, said at once
        for host in (1, 0):
            dep.procs[host].send_signal(signal.SIGTERM)
            dep.procs[host].wait(30)
        said = fails("migrate", dep.name)
        assert said.startswith(f"mig: error: the primary of {dep.name}, host0, stopped its"
                               " app "), said
        said = fails("checkpoint", dep.name)
        assert said.startswith(f"mig: error: no member of {dep.name} can take a checkpoint:"
                               " host0 stopped "), said
        assert ", host1 stopped " in said
    finally:
        dep.stop()


def _end_offsets(dep: Deployment, role: str) -> dict[int, int]:
    from mig.kafka.clients import end_offsets

    cons = consumer(dep.broker.settings)
    try:
        return end_offsets(cons, f"mig.{dep.name}.{role}")
    finally:
        cons.close()


def test_missing_chunk_deleted_offsets_and_truncated_archive_are_refused(hosts, tmp_path):
    """Three bad checkpoints newer than a good one: a chunk tombstoned away, a manifest whose
    calls offsets were deleted, and a truncated archive whose hashes are right. The late
    replica refuses each with its reason, restores the good one, and writes nothing to the
    checkpoints topic."""
    import gzip
    import hashlib

    net, broker = hosts
    dep = Deployment(net, broker, tmp_path, extra_toml="[checkpoints]\nkeep = 5\n")
    try:
        dep.start()
        _writes(dep, 0, 60)
        good = _checkpoint(dep)
        _writes(dep, 60, 60)
        missing = _checkpoint(dep)
        manifests = {m["checkpoint_id"]: m for m in list_manifests(broker.settings, dep.name)}
        writer = LogWriter(broker.settings, dep.name)
        # chunk gone
        writer.send_raw("checkpoints", None, key=f"{missing}/000000", partition=CHUNKS)
        # a manifest pointing before the log's start (offset 0 was deleted by trimming)
        stale = dict(manifests[good], checkpoint_id="9999999999990-stale",
                     created_ms=manifests[missing]["created_ms"] + 1,
                     barrier_offsets=[{"partition": 0, "offset": 0}])
        writer.send("checkpoints", "mig.log.CheckpointManifest", stale,
                    key="manifest/9999999999990-stale", partition=MANIFESTS)
        # a truncated archive, with hashes that match the truncated bytes
        whole = gzip.compress(os.urandom(100_000))[:3000]
        digest = hashlib.sha256(whole).hexdigest()
        trunc = dict(manifests[good], checkpoint_id="9999999999991-trunc",
                     created_ms=manifests[missing]["created_ms"] + 2, chunk_count=1,
                     total_size=len(whole), sha256=digest,
                     chunks=[{"index": 0, "size": len(whole), "sha256": digest}])
        writer.send("checkpoints", "mig.log.CheckpointChunk", {
            "app": dep.name, "checkpoint_id": trunc["checkpoint_id"], "index": 0, "count": 1,
            "data": whole, "sha256": digest}, key=f"{trunc['checkpoint_id']}/000000",
            partition=CHUNKS)
        writer.send("checkpoints", "mig.log.CheckpointManifest", trunc,
                    key=f"manifest/{trunc['checkpoint_id']}", partition=MANIFESTS)
        writer.commit()
        _wait_for(lambda: _low_watermark(dep) > 0, 20, "the calls topic to be trimmed")
        before = _end_offsets(dep, "checkpoints")
        dep.start_replica(2)
        _wait_for(lambda: "host2" in dep.hot(), 60, "the late replica to be hot")
        refused = {e["checkpoint_id"]: e["reason"]
                   for e in _log_events(dep, 2, "mig.replayer.checkpoint_refused")}
        assert "missing" in refused[missing], refused
        assert "were deleted" in refused["9999999999990-stale"], refused
        assert "truncated" in refused["9999999999991-trunc"], refused
        restored = _log_events(dep, 2, "mig.replayer.restored")
        assert restored and restored[0]["checkpoint_id"] == good
        assert _end_offsets(dep, "checkpoints") == before  # the reader wrote nothing
        _same_dump(dep, 2, "state-c.txt")
    finally:
        dep.stop()


def test_few_hundred_mb_of_state_checkpointed_restored_and_promoted(hosts, tmp_path):
    """The issue's end-to-end case: 300 MB of state under load, a checkpoint on the replica,
    a late third host restores it, catches up, matches the primary, the calls topic's start
    moved past the checkpoint, and the late replica takes over serving every acknowledged
    write."""
    from tests.apps.ackclient import check_acked, run_writes
    from tests.apps.client import read_dump

    net, broker = hosts
    dep = Deployment(net, broker, tmp_path)
    try:
        dep.start()
        reply = request(net.host_ips[0], dep.port, "BALLAST 300", timeout=60)
        assert reply.startswith("BALLAST 300 ")
        ack_log = tmp_path / "acks.jsonl"
        report = run_writes([(net.host_ips[0], dep.port)], 300, ack_log, prefix="a",
                            deadline_s=60)
        assert report.acked == 300
        started = time.monotonic()
        cid = _checkpoint(dep)
        took = time.monotonic() - started
        m = next(x for x in list_manifests(broker.settings, dep.name)
                 if x["checkpoint_id"] == cid)
        print(f"\n300 MB app: checkpoint {m['total_size'] / 1e6:.1f} MB in"
              f" {m['chunk_count']} chunks, app held {m['dump_ms']} ms, request to stored"
              f" {took:.1f} s")
        _wait_for(lambda: _low_watermark(dep) >= m["barrier_offsets"][0]["offset"], 20,
                  "the calls before the checkpoint to be deleted")
        report = run_writes([(net.host_ips[0], dep.port)], 300, ack_log, prefix="b",
                            deadline_s=60)
        joined = time.monotonic()
        dep.start_replica(2)
        _wait_for(lambda: "host2" in dep.hot(), 120, "the late replica to be hot")
        print(f"late replica hot {time.monotonic() - joined:.1f} s after its start")
        _same_dump(dep, 2, "big.txt")
        assert "ballast=300:" in (tmp_path / "host2" / "big.txt").read_text().splitlines()[0]
        net.signal(0, signal.SIGKILL)
        net.signal(1, signal.SIGKILL)
        _wait_for(lambda: _answers(net.host_ips[2], dep.port), 30, "host 2 to take over")
        assert dump(net.host_ips[2], dep.port, "after.txt") == 600
        assert check_acked(ack_log, read_dump(tmp_path / "host2" / "after.txt")) == []
    finally:
        dep.stop()


@pytest.mark.parametrize("partitions", [2, 1])
def test_storage_layouts(hosts, partitions):
    """Two partitions (manifests, chunks): a manifest says where its chunks start. A topic
    made with one partition (the earlier layout) still stores and serves checkpoints."""
    from confluent_kafka.admin import NewTopic

    from mig.checkpoint.image import Archive
    from mig.checkpoint.store import fetch_checkpoint, store_checkpoint
    from mig.kafka.clients import admin_client
    from mig.kafka.topics import ensure_topics, topic_specs
    from tests.samples import sample

    _, broker = hosts
    app = f"layout{partitions}x{int(time.time() * 1000) % 100000}"
    if partitions == 1:
        spec = next(s for s in topic_specs(app) if s.role == "checkpoints")
        admin = admin_client(broker.settings)
        admin.create_topics([NewTopic(spec.name, num_partitions=1, replication_factor=1,
                                      config=spec.config)])[spec.name].result(timeout=15)
    ensure_topics(broker.settings, app)
    meta = {"epoch": 1, "barrier_offsets": [{"partition": 0, "offset": 0}],
            "lpid_seqs": {"1": 1}, "identity": sample("mig.log.AppIdentity"),
            "workdir": "/w", "run_dir": "/r",
            "root_pid": 1, "batch_seqs": {"1": 1}}
    blobs = [os.urandom(700_000), os.urandom(300_000), os.urandom(500_000)]
    stored = [store_checkpoint(broker.settings, app, "m", Archive(b, 1), meta, keep=2)
              for b in blobs]
    listed = list_manifests(broker.settings, app)
    assert [m["checkpoint_id"] for m in listed] == [m["checkpoint_id"] for m in stored[1:]]
    for m, blob in zip(listed, blobs[1:], strict=True):
        if partitions == 2:
            assert m["chunks_from"]["partition"] == CHUNKS and m["chunks_from"]["offset"] > 0
        else:
            assert m["chunks_from"] is None
        assert fetch_checkpoint(broker.settings, app, m) == blob
