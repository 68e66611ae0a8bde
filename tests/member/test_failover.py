"""Failover and planned migration across test hosts, with nothing acknowledged lost.

Three test hosts (network namespaces): the primary on host 0, replicas on hosts 1 and 2,
the broker on the root side where every host reaches it. The test app is kvserver
listening on every address of its host. A client in the root namespace writes unique keys
one at a time, moving to the next host's address when a connection fails, and logs every
write acknowledged to it (tests/apps/ackclient.py). Each test injects one fault under that
load, then checks what the issue asks:

- the promoted app answers, and every acknowledged write is in its state (a DUMP);
- exactly one member promoted (one Promotion for the new epoch in the control topic);
- no write was acknowledged by the old primary after the promotion;
and prints the detection time, promotion time and the client-visible gap.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.apps.ackclient import check_acked, run_writes
from tests.apps.client import dump, read_dump, request
from tests.deploy import Deployment, _answers, _wait_for, port_free
from tests.history import control_history
from tests.testnet import hosts_and_broker


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    """Three test hosts and a broker all of them reach."""
    with hosts_and_broker(tmp_path_factory.mktemp("fobroker"), hosts=3) as pair:
        yield pair


def _acks(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _under_load(dep: Deployment, fault, count: int = 1200, fault_after: int = 300):
    """Run the writer; call fault() once `fault_after` writes are acknowledged."""
    ack_log = dep.tmp / "acks.jsonl"
    result: dict = {}

    def writer() -> None:
        result["report"] = run_writes(dep.addresses(), count, ack_log, prefix="k",
                                      deadline_s=90, per_op_timeout_s=1.0, interval_s=0.002)

    thread = threading.Thread(target=writer)
    thread.start()
    _wait_for(lambda: len(_acks(ack_log)) >= fault_after, 60, "the first writes")
    fault_at = time.time()
    fault()
    thread.join(120)
    assert not thread.is_alive(), "the client did not finish"
    return result["report"], ack_log, fault_at


def _check_outcome(dep: Deployment, report, ack_log: Path, count: int,
                   expect_member: set[str]) -> dict:
    assert report.acked == count, f"only {report.acked} of {count} writes acknowledged"
    promos = [p for p in dep.promotions() if p["new_epoch"] == 2]
    assert len(promos) == 1, f"expected one promotion to epoch 2, got {promos}"
    promo = promos[0]
    assert promo["member"] in expect_member
    new_host = int(promo["member"].removeprefix("host"))
    # the promoted app answers, and holds every acknowledged write
    assert dump(dep.net.host_ips[new_host], dep.port, "final.txt") >= count
    problems = check_acked(ack_log, read_dump(dep.tmp / f"host{new_host}" / "final.txt"))
    assert problems == [], problems[:5]
    # nothing was acknowledged by the old primary once the new one was promoted
    late = [a for a in _acks(ack_log) if a["addr"].startswith(dep.net.host_ips[0] + ":")
            and a["t_ack"] * 1000 > promo["ts_ms"]]
    assert late == [], f"the old primary acknowledged {len(late)} writes after the promotion"
    gaps = [g.seconds for g in report.gaps]
    print(f"\n{dep.name}: detection {promo['detection_ms']} ms, promotion"
          f" {promo['promotion_ms']} ms, client-visible gap {max(gaps, default=0):.3f} s,"
          f" {report.acked} writes acknowledged, 0 lost")
    return promo


@pytest.mark.parametrize("app", ["kvserver", "kv-asyncio", "poolserver"])
def test_kill_9_of_the_primary_host_under_load(hosts, tmp_path, app):
    """Also for Python's asyncio (an event loop with a self-pipe socketpair and signal
    handlers; it diverged at start when the primary had inherited SIGINT ignored), and for
    a thread-pool server (its worker threads go live one by one, where each waited)."""
    net, broker = hosts
    dep = Deployment(net, broker, tmp_path, app=app)
    try:
        dep.start()
        report, acks, _ = _under_load(dep, lambda: net.signal(0, signal.SIGKILL))
        promo = _check_outcome(dep, report, acks, 1200, {"host1"})
        assert promo["reason"] == "failover" and promo["detection_ms"] >= 1000
        hook = dep.app_toml.parent / "promoted-by-hook.txt"  # on_promote ran, from app.cwd
        _wait_for(hook.exists, 10, "the on_promote command")
        assert hook.read_text().split() == ["2", "host1"]
    finally:
        dep.stop()


def test_a_replica_whose_fetches_are_coalesced_follows_and_takes_over(hosts, tmp_path):
    """[replica] fetch_coalesce_ms = 5: the replica's reads of the log are answered once 64
    KiB wait or after 5 ms. Under the same load and kill -9 as above it follows, takes over
    and holds every acknowledged write."""
    from mig.config import load_config
    from mig.member.replica import replica_fetch

    net, broker = hosts
    dep = Deployment(net, broker, tmp_path)
    dep.app_toml.write_text(dep.app_toml.read_text().replace(
        "[replica]\n", "[replica]\nfetch_coalesce_ms = 5\n"))
    assert replica_fetch(load_config(dep.app_toml)) == {"fetch.min.bytes": 65536,
                                                         "fetch.wait.max.ms": 5}
    try:
        dep.start()
        report, acks, _ = _under_load(dep, lambda: net.signal(0, signal.SIGKILL))
        promo = _check_outcome(dep, report, acks, 1200, {"host1", "host2"})
        assert promo["reason"] == "failover"
    finally:
        dep.stop()


def test_primary_host_cut_off_from_broker_and_clients(hosts, tmp_path):
    net, broker = hosts
    dep = Deployment(net, broker, tmp_path)
    try:
        dep.start()
        report, acks, _ = _under_load(dep, lambda: net.link(0, up=False))
        _check_outcome(dep, report, acks, 1200, {"host1"})
        # back on the network, the old primary finds it was fenced and stops its app
        net.link(0, up=True)
        dep.procs[0].wait(60)
        assert dep.procs[0].returncode != 0
        assert "fenced" in dep.log_text(0)
        assert not _answers(net.host_ips[0], dep.port)
    finally:
        net.link(0, up=True)
        dep.stop()


def test_paused_primary_never_serves_after_the_promotion(hosts, tmp_path):
    net, broker = hosts
    dep = Deployment(net, broker, tmp_path)
    try:
        dep.start()

        def pause_until_promoted() -> None:
            net.signal(0, signal.SIGSTOP)
            _wait_for(lambda: any(p["new_epoch"] == 2 for p in dep.promotions()), 30,
                      "the promotion")

        report, acks, _ = _under_load(dep, pause_until_promoted)
        net.signal(0, signal.SIGCONT)
        # the zombie wakes up: a write sent to it now must not be acknowledged
        try:
            reply = request(net.host_ips[0], dep.port, "SET zombie 1", timeout=3.0)
        except OSError:
            reply = None
        assert reply is None or not reply.startswith("OK"), "the zombie acknowledged a write"
        dep.procs[0].wait(30)
        assert dep.procs[0].returncode == 4, dep.log_text(0)[-2000:]
        _check_outcome(dep, report, acks, 1200, {"host1"})
    finally:
        net.signal(0, signal.SIGCONT)
        dep.stop()


@pytest.mark.parametrize("app", ["kvserver", "poolserver"])
def test_migrate_under_load(hosts, tmp_path, app):
    net, broker = hosts
    dep = Deployment(net, broker, tmp_path, app=app)
    try:
        dep.start()
        out: dict = {}

        def migrate() -> None:
            out["run"] = subprocess.run(
                [sys.executable, "-m", "mig", "migrate", dep.name, "--to", "host1",
                 "--bootstrap", broker.settings.bootstrap_servers],
                capture_output=True, text=True, timeout=60)

        report, acks, _ = _under_load(dep, migrate)
        run = out["run"]
        assert run.returncode == 0, run.stderr
        assert "switchover gap" in run.stdout
        promo = _check_outcome(dep, report, acks, 1200, {"host1"})
        assert promo["reason"] == "handoff"
        dep.procs[0].wait(30)
        assert dep.procs[0].returncode == 0  # handed over, not fenced
        assert "handed the app over to host1" in dep.log_text(0)
        # the successor says it was a handoff (no detection), status shows the old
        # primary as handed over (not FENCED and stale)
        assert (f"promoted to primary of {dep.name} at epoch {promo['new_epoch']} (handoff,"
                " promotion ") in dep.log_text(1)
        assert "detection None" not in dep.log_text(1)
        st = subprocess.run([sys.executable, "-m", "mig", "status", dep.name, "--json",
                             "--bootstrap", broker.settings.bootstrap_servers],
                            capture_output=True, text=True, timeout=60, check=True)
        rows = {m["member"]: m for m in json.loads(st.stdout)["apps"][0]["members"]}
        assert (rows["host0"]["role"], rows["host0"]["state"]) == (
            "EX-PRIMARY", "handed over to host1"), rows["host0"]
        print(run.stdout.strip())
    finally:
        dep.stop()


def test_two_backups_one_promotes_the_other_follows(hosts, tmp_path):
    net, broker = hosts
    dep = Deployment(net, broker, tmp_path, replicas=(1, 2))
    try:
        dep.start()
        report, acks, _ = _under_load(dep, lambda: net.signal(0, signal.SIGKILL))
        promo = _check_outcome(dep, report, acks, 1200, {"host1", "host2"})
        winner = int(promo["member"].removeprefix("host"))
        other = 3 - winner
        # the other backup follows the new primary: it replays the DUMP too, to the byte
        final = dep.tmp / f"host{winner}" / "final.txt"
        mine = dep.tmp / f"host{other}" / "final.txt"
        _wait_for(lambda: mine.exists() and mine.read_bytes() == final.read_bytes(), 60,
                  "the other backup to replay the new primary's dump")
        assert dep.procs[other].poll() is None, "the other backup stopped"
        assert not _answers(net.host_ips[other], dep.port)  # it did not go live
    finally:
        dep.stop()


@pytest.mark.parametrize("trigger", ["sigterm", "maintenance-file"])
def test_planned_handoff_triggers(hosts, tmp_path, trigger):
    """SIGTERM to mig primary with a hot replica, and the maintenance file, migrate the app
    instead of stopping it."""
    net, broker = hosts
    dep = Deployment(net, broker, tmp_path)
    try:
        dep.start()

        def fire() -> None:
            if trigger == "sigterm":
                dep.procs[0].send_signal(signal.SIGTERM)
            else:
                (dep.app_toml.parent / "maintenance").write_text("kernel upgrade\n")

        report, acks, _ = _under_load(dep, fire)
        promo = _check_outcome(dep, report, acks, 1200, {"host1"})
        assert promo["reason"] == "handoff"
        dep.procs[0].wait(30)
        assert dep.procs[0].returncode == 0
        assert "handed the app over to host1" in dep.log_text(0)
        reason = "SIGTERM to mig primary" if trigger == "sigterm" else "maintenance file"
        assert reason in dep.log_text(0)
    finally:
        dep.stop()


def test_a_new_primary_hands_over_only_to_replicas_alive_now(hosts, tmp_path):
    """The control topic's old records are history, not signs of life: a replica killed
    just before a migration still has "replaying" as its last status there. The new
    primary, stopped with SIGTERM at once, must not hand the app to it (it would freeze
    the app for the handoff's timeout and then stop it); with no replica alive it stops
    the app at once."""
    net, broker = hosts
    dep = Deployment(net, broker, tmp_path, replicas=(1, 2))
    try:
        dep.start()
        net.signal(2, signal.SIGKILL)
        run = subprocess.run([sys.executable, "-m", "mig", "migrate", dep.name, "--to", "host1",
                              "--bootstrap", broker.settings.bootstrap_servers],
                             capture_output=True, text=True, timeout=90)
        assert run.returncode == 0, run.stdout + run.stderr
        dep.procs[1].send_signal(signal.SIGTERM)  # host 0 has handed over and ends
        started = time.monotonic()
        dep.procs[1].wait(60)
        took = time.monotonic() - started
        text = dep.log_text(1)
        assert "mig.recorder.handoff_start" not in text, text[-2000:]
        assert took < 8, f"SIGTERM to the stop took {took:.1f} s"
    finally:
        dep.stop()


def test_after_a_failed_stop_handoff_the_app_still_gets_its_time_to_end(hosts, tmp_path):
    """SIGTERM to mig primary with a hot replica that does not take over (here one that
    follows only, --no-promote): the handoff waits out handoff_timeout_ms (12 s), then the
    app is asked to end and has its 10 s to do so. The stop used to count those 10 s from
    before the handoff, and killed the app at once."""
    net, broker = hosts
    dep = Deployment(net, broker, tmp_path, replicas=(),
                     extra_toml="handoff_timeout_ms = 12000\n")
    try:
        dep.start()
        dep.start_replica(1, "--no-promote")
        _wait_for(lambda: "host1" in dep.hot(), 60, "the replica to be hot")
        dep.procs[0].send_signal(signal.SIGTERM)
        dep.procs[0].wait(60)
        text = dep.log_text(0)
        assert "mig.recorder.handoff_timeout" in text, text[-2000:]
        assert "did not end after SIGTERM" not in text, text[-2000:]
        assert "app exit code -9" not in text, text[-2000:]
    finally:
        dep.stop()


def test_a_replica_in_its_default_folder_takes_over(hosts, tmp_path):
    """A replica started without --workdir (it runs in MIG_HOME/replicas/NAME/MEMBER, a
    copy of the app's folder) follows, takes over after kill -9 of the primary, and
    serves from that folder."""
    net, broker = hosts
    dep = Deployment(net, broker, tmp_path, replicas=())
    try:
        dep.start()
        for i in range(20):
            assert request(net.host_ips[0], dep.port, f"SET d{i} {i}").startswith("OK")
        dep.start_replica(1, workdir=False)
        _wait_for(lambda: "host1" in dep.hot(), 60, "the replica to be hot")
        net.signal(0, signal.SIGKILL)
        _wait_for(lambda: _answers(net.host_ips[1], dep.port), 30, "host 1 to take over")
        assert request(net.host_ips[1], dep.port, "GET d19").startswith("VALUE 19")
        assert dep.procs[1].poll() is None, dep.log_text(1)[-2000:]
        folder = tmp_path / "home1" / "replicas" / dep.name / "host1"
        assert (folder / "state" / "mig-app.log").is_file()
        assert not (tmp_path / "host1").exists()
    finally:
        dep.stop()


def test_a_promoted_primary_waits_as_any_primary_once_its_processes_went_live(hosts,
                                                                             tmp_path):
    """After a promotion the agent feeds the processes still replaying at a 1 ms pace; it
    kept that pace for as long as it was primary (about 1,000 turns a second with an idle
    app). Now only while a process still replays: the promoted primary of an idle kvserver
    turns at an idle primary's pace (the turns in its last log line over its time as
    primary)."""
    net, broker = hosts
    dep = Deployment(net, broker, tmp_path)
    try:
        dep.start()
        net.signal(0, signal.SIGKILL)
        _wait_for(lambda: _answers(net.host_ips[1], dep.port), 30, "host 1 to take over")
        promoted = time.monotonic()
        time.sleep(3)
        dep.procs[1].send_signal(signal.SIGTERM)
        dep.procs[1].wait(30)
        lived = time.monotonic() - promoted
        stopped = [json.loads(line) for line in dep.log_text(1).splitlines()
                   if '"mig.recorder.stopped"' in line]
        assert stopped, dep.log_text(1)[-2000:]
        turns = stopped[-1]["turns"]
        assert turns < 150 * lived, f"{turns} turns in {lived:.1f} s as the primary"
    finally:
        dep.stop()


def test_a_promoted_replica_is_heard_at_once_whatever_the_control_history(hosts, tmp_path):
    """An app whose control topic holds a long history (150,000 heartbeats and statuses
    of four hours, the newest an hour old). kill -9 of the primary: one replica takes
    over, and it must heartbeat within failover_timeout_ms of its promotion, or the other
    replica takes it for dead and promotes again. A promoted replica read the whole topic
    before its first heartbeat (seconds for a topic of some days), and the other promoted
    again a second later (the fault campaign saw epochs 43 and 44 1.0 s apart)."""
    net, broker = hosts
    dep = Deployment(net, broker, tmp_path, replicas=(1, 2))
    try:
        control_history(broker.settings, dep.name, 150_000, int((time.time() - 3600) * 1000))
        dep.start()
        time.sleep(2)  # the replicas' statuses after the history
        net.signal(0, signal.SIGKILL)
        _wait_for(lambda: [p for p in dep.promotions() if p["new_epoch"] == 2], 30,
                  "a replica to take over")
        time.sleep(6)  # a second takeover would be there by now
        epochs = [(p["new_epoch"], p["member"]) for p in dep.promotions()]
        assert len(epochs) == 1, f"promoted again: {epochs}"
    finally:
        dep.stop()


def _app_pids(net, host: int, comm: str) -> list[int]:  # noqa: ANN001 - the fixture's net
    out = []
    for pid in net.pids(host):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == comm:
                out.append(pid)
        except OSError:
            pass
    return out


def test_a_replica_far_behind_claims_only_once_it_has_caught_up(hosts, tmp_path):
    """[replica] max_lag_records: a replica with more records than that still to replay
    does not claim the primary role when the primary dies, and claims once it has caught
    up that far. Here the replica's app is stopped while the primary records, so records
    pile up for it; the primary is killed; the replica waits; its app goes on, and it
    claims with at most max_lag_records to replay and serves every write. It used to claim
    at once, with thousands of records still to replay (the claim is a promise to be live
    within about a second)."""
    net, broker = hosts
    dep = Deployment(net, broker, tmp_path)
    dep.app_toml.write_text(dep.app_toml.read_text().replace(
        "[replica]\n", "[replica]\nmax_lag_records = 40\n"))
    stopped: list[int] = []
    try:
        dep.start()
        stopped = _app_pids(net, 1, "kvserver")
        assert len(stopped) == 1, net.pids(1)
        os.kill(stopped[0], signal.SIGSTOP)
        for i in range(100):
            assert request(net.host_ips[0], dep.port, f"SET b{i} {i}").startswith("OK")

        def behind() -> bool:
            rows = [rec for name, rec in dep.control()
                    if name == "mig.log.MemberStatus" and rec["member"] == "host1"]
            return bool(rows) and rows[-1]["lag_records"] > 40

        _wait_for(behind, 20, "the replica to report more than 40 records to replay")
        net.signal(0, signal.SIGKILL)
        _wait_for(lambda: "mig.replayer.primary_lost" in dep.log_text(1), 20,
                  "the replica to see the primary gone")
        time.sleep(3)  # time enough to claim (failover_timeout_ms is 1000)
        claims = [rec for name, rec in dep.control() if name == "mig.log.Claim"]
        assert claims == [], f"claimed while far behind: {claims}"
        os.kill(stopped.pop(), signal.SIGCONT)
        _wait_for(lambda: _answers(net.host_ips[1], dep.port), 30, "host 1 to take over")
        claims = [rec for name, rec in dep.control() if name == "mig.log.Claim"]
        assert [c["member"] for c in claims] == ["host1"], claims
        assert claims[0]["lag_records"] <= 40, claims
        assert request(net.host_ips[1], dep.port, "GET b99").startswith("VALUE 99")
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        dep.stop()


def _stall(broker, seconds: float) -> None:  # noqa: ANN001 - the fixture's broker
    """The broker stops answering (SIGSTOP) for ``seconds``, then goes on."""
    broker.node.pause()
    try:
        time.sleep(seconds)
    finally:
        broker.node.resume()


def test_a_broker_that_stalls_20_s_is_waited_for(hosts, tmp_path):
    """The broker stops answering for 20 s (SIGSTOP), longer than a commit's timeout: the
    primary tries its commit again instead of dying, and goes on serving afterwards. (No
    replica: with one, a stall this long is a failover, as it should be.)"""
    net, broker = hosts
    dep = Deployment(net, broker, tmp_path, replicas=())
    try:
        dep.start()
        ip = net.host_ips[0]
        assert request(ip, dep.port, "SET before 1").startswith("OK")
        _stall(broker, 20)
        assert request(ip, dep.port, "SET after 2", timeout=60).startswith("OK")
        assert request(ip, dep.port, "GET before").startswith("VALUE 1")
        assert dep.procs[0].poll() is None, dep.log_text(0)[-2000:]
        assert "mig.logwriter.commit_retry" in dep.log_text(0)
    finally:
        dep.stop()


def test_a_stalled_broker_is_not_taken_for_a_dead_primary(hosts, tmp_path):
    """The broker stops answering for 3 s (SIGSTOP), three failover timeouts: every member
    stalls at once, the primary included. The replica sees its own statuses come back late
    (mig.replayer.control_stalled), gives the primary a whole timeout of flowing log, and
    does not fail over; the primary serves on."""
    net, broker = hosts
    dep = Deployment(net, broker, tmp_path)
    try:
        dep.start()
        ip = net.host_ips[0]
        assert request(ip, dep.port, "SET before 1").startswith("OK")
        _stall(broker, 3)
        assert request(ip, dep.port, "SET after 2", timeout=30).startswith("OK")
        time.sleep(5)  # several timeouts of flowing log: a wrong claim would come by now
        assert dep.promotions() == [], dep.log_text(1)[-2000:]
        assert dep.procs[0].poll() is None and dep.procs[1].poll() is None
        assert "mig.replayer.control_stalled" in dep.log_text(1)
        assert "mig.replayer.primary_lost" not in dep.log_text(1)
        assert request(ip, dep.port, "GET after").startswith("VALUE 2")
    finally:
        dep.stop()


def _scrape(ip: str, port: int) -> dict[str, float]:
    """The mig_ series of a member's /metrics, by name and labels (those of app and member
    left out)."""
    import re
    import urllib.request

    text = urllib.request.urlopen(f"http://{ip}:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"(mig_\w+)(?:\{(.*)\})? (\S+)$", line)
        if m:
            labels = ",".join(kv for kv in (m.group(2) or "").split(",")
                              if kv and not kv.startswith(("app=", "member=")))
            out[f"{m.group(1)}{{{labels}}}" if labels else m.group(1)] = float(m.group(3))
    return out


def test_metrics_are_served_through_a_failover(hosts, tmp_path):
    """[metrics] address on every member: the primary counts recorded calls and commits, the
    replica its replayed calls and lag; after kill -9 of the primary the replica says it is
    primary in epoch 2, with its detection and promotion times."""
    net, broker = hosts
    dep = Deployment(net, broker, tmp_path, extra_toml='[metrics]\naddress = "0.0.0.0:9464"\n')
    try:
        dep.start()
        for i in range(50):
            assert request(net.host_ips[0], dep.port, f"SET m{i} {i}").startswith("OK")
        p = _scrape(net.host_ips[0], 9464)
        assert p['mig_role{role="primary"}'] == 1 and p["mig_epoch"] == 1
        assert p['mig_calls_total{direction="recorded"}'] > 100
        assert p["mig_commit_seconds_count"] > 0
        # buckets fine enough for a commit of a tenth of a millisecond
        assert 'mig_commit_seconds_bucket{le="0.0001"}' in p, sorted(p)
        _wait_for(lambda: _scrape(net.host_ips[1], 9464).get(
            'mig_calls_total{direction="replayed"}', 0) > 100, 30, "the replica's metrics")
        r = _scrape(net.host_ips[1], 9464)
        assert r['mig_role{role="replica"}'] == 1 and "mig_replica_lag_records" in r
        net.signal(0, signal.SIGKILL)
        _wait_for(lambda: _scrape(net.host_ips[1], 9464).get(
            'mig_role{role="primary"}') == 1, 30, "the promoted replica's metrics")
        r = _scrape(net.host_ips[1], 9464)
        assert r["mig_epoch"] == 2
        assert 0.5 < r["mig_failover_detection_seconds"] < 10
        assert 0 < r["mig_promotion_seconds"] < 10
        before = r['mig_calls_total{direction="recorded"}'] if (
            'mig_calls_total{direction="recorded"}' in r) else 0
        assert request(net.host_ips[1], dep.port, "SET after 1").startswith("OK")
        _wait_for(lambda: _scrape(net.host_ips[1], 9464).get(
            'mig_calls_total{direction="recorded"}', 0) > before, 10, "recorded calls")
    finally:
        dep.stop()


def test_an_agent_killed_with_9_takes_its_app_along(hosts, tmp_path):
    """kill -9 of a member's agent alone (not of its host): its app ends within seconds, a
    replica's (replaying, started from the log's start) as well as the primary's, and the
    port is free for whoever takes over."""
    net, broker = hosts
    dep = Deployment(net, broker, tmp_path, replicas=(1, 2))
    try:
        dep.start()
        for i in range(20):
            assert request(net.host_ips[0], dep.port, f"SET d{i} {i}").startswith("OK")
        assert len(net.pids(1)) > 1  # the agent and its app
        dep.procs[1].kill()
        _wait_for(lambda: not net.pids(1), 5, "the replica's app to end with its agent")
        dep.procs[0].kill()
        _wait_for(lambda: not net.pids(0), 5, "the primary's app to end with its agent")
        assert port_free(net, 0, dep.port)
        _wait_for(lambda: _answers(net.host_ips[2], dep.port), 30, "host 2 to take over")
    finally:
        dep.stop()


def test_a_promotion_whose_app_cannot_listen_fails_and_says_why(hosts, tmp_path):
    """Host 1's replica must take over, but another program holds the app's port there:
    its app cannot make its listener real. The promotion fails rather than announce a
    primary nobody can reach: no Promotion record, the member's status says
    promotion-failed, `mig replica` exits 5 naming the bind, and the app does not stay
    behind spinning on a dead socket."""
    net, broker = hosts
    dep = Deployment(net, broker, tmp_path)
    squatter = None
    try:
        dep.start()
        assert request(net.host_ips[0], dep.port, "SET a 1").startswith("OK")
        squatter = subprocess.Popen(net.wrap(1, [
            sys.executable, "-c",
            "import socket, time\n"
            "s = socket.socket()\n"
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('0.0.0.0', {dep.port}))\n"
            "s.listen()\n"
            "print('ready', flush=True)\n"
            "time.sleep(120)\n"]), stdout=subprocess.PIPE, text=True)
        assert squatter.stdout is not None and squatter.stdout.readline() == "ready\n"
        net.signal(0, signal.SIGKILL)
        dep.procs[1].wait(60)
        text = dep.log_text(1)
        assert dep.procs[1].returncode == 5, text[-3000:]
        assert "promotion failed: process 1: going live: cannot bind the listening socket" \
               " at the primary's address: Address already in use" in text, text[-3000:]
        assert [p for p in dep.promotions() if p["member"] == "host1"] == []
        statuses = [rec for name, rec in dep.control()
                    if name == "mig.log.MemberStatus" and rec["member"] == "host1"]
        assert statuses and statuses[-1]["health"] == "promotion-failed", statuses[-3:]
        status = subprocess.run([sys.executable, "-m", "mig", "status", dep.name, "--bootstrap",
                                 broker.settings.bootstrap_servers],
                                capture_output=True, text=True, timeout=60)
        assert "promotion-failed" in status.stdout, status.stdout + status.stderr
        # nothing of the member is left on host 1 but the squatter
        _wait_for(lambda: net.pids(1) == [squatter.pid] or len(net.pids(1)) <= 1, 10,
                  "host 1's app to end")
    finally:
        if squatter is not None:
            squatter.kill()
            squatter.wait(10)
        dep.stop()
