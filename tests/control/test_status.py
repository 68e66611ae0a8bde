"""`mig status`: the aggregation of control records (pure), and the real command on the
session broker."""

from __future__ import annotations

import json
import time

from mig.control.status import summarize
from mig.kafka.topics import ensure_topics
from mig.kafka.writer import LogWriter
from tests.conftest import run_mig

NOW = 1_764_000_100_000


def beat(member, epoch, ts, role="PRIMARY", host=None, app="shop"):
    return ("mig.log.Heartbeat", {"app": app, "member": member, "role": role, "epoch": epoch,
                                  "ts_ms": ts, "calls_offset": 10, "host": host})


def status(member, epoch, ts, health="replaying", lag=(0, 0), host=None, role="REPLICA",
           app="shop"):
    return ("mig.log.MemberStatus", {
        "app": app, "member": member, "role": role, "epoch": epoch, "lag_records": lag[0],
        "lag_ms": lag[1], "health": health, "ts_ms": ts, "host": host, "calls_offset": -1})


def promotion(member, new_epoch, ts, reason="failover", detection=800, took=95, app="shop"):
    return ("mig.log.Promotion", {
        "app": app, "member": member, "new_epoch": new_epoch, "previous_epoch": new_epoch - 1,
        "calls_offsets": [{"partition": 0, "offset": 42}], "ts_ms": ts,
        "detection_ms": detection, "promotion_ms": took, "reason": reason})


def by_member(st):
    return {m.member: m for m in st.members}


def test_several_members_primary_from_heartbeats():
    st = summarize([
        beat("a", 1, NOW - 500, host="host-a"),
        status("b", 1, NOW - 300, lag=(12, 340), host="host-b"),
        status("c", 1, NOW - 200, lag=(0, 0)),
        beat("a", 1, NOW - 100, host="host-a"),
    ], NOW, 200)
    assert (st.app, st.epoch, st.primary, st.last_promotion) == ("shop", 1, "a", None)
    assert [m.member for m in st.members] == ["a", "b", "c"]  # the primary first
    m = by_member(st)
    assert (m["a"].role, m["a"].host, m["a"].lag_records, m["a"].state) == (
        "PRIMARY", "host-a", 0, "ok")
    assert m["a"].age_ms == 100
    assert (m["b"].role, m["b"].lag_records, m["b"].lag_ms, m["b"].state) == (
        "REPLICA", 12, 340, "replaying")
    assert m["c"].host is None and m["c"].checkpoint is None


def test_promotion_bumps_epoch_and_old_primary_is_fenced():
    st = summarize([
        beat("a", 1, NOW - 5000),
        status("b", 1, NOW - 4900, lag=(3, 20)),
        promotion("b", 2, NOW - 1000, detection=812, took=95),
        beat("b", 2, NOW - 100),
        beat("a", 1, NOW - 50),  # the old primary, alive and unaware: a zombie
    ], NOW, 200)
    assert (st.epoch, st.primary) == (2, "b")
    p = st.last_promotion
    assert (p["member"], p["reason"], p["new_epoch"], p["previous_epoch"]) == (
        "b", "failover", 2, 1)
    assert (p["detection_ms"], p["promotion_ms"], p["age_ms"]) == (812, 95, 1000)
    m = by_member(st)
    assert (m["b"].role, m["b"].epoch, m["b"].lag_records, m["b"].state) == (
        "PRIMARY", 2, 0, "ok")
    assert (m["a"].role, m["a"].epoch, m["a"].state) == ("FENCED", 1, "fenced")


def test_promotion_without_heartbeat_yet_names_the_primary():
    st = summarize([beat("a", 1, NOW - 9000), promotion("b", 2, NOW - 10)], NOW, 200)
    assert (st.epoch, st.primary) == (2, "b")
    m = by_member(st)
    assert (m["b"].role, m["b"].state) == ("PRIMARY", "promoted")
    assert (m["a"].role, m["a"].state) == ("FENCED", "stale")  # old and silent


def test_stale_member_uses_ten_heartbeats_or_two_seconds():
    records = [beat("a", 1, NOW - 100), status("b", 1, NOW - 2500)]
    assert by_member(summarize(records, NOW, 200))["b"].state == "stale"  # 2500 > 2000
    assert by_member(summarize(records, NOW, None))["b"].state == "stale"  # default 2 s
    assert by_member(summarize(records, NOW, 500))["b"].state == "replaying"  # 2500 < 5000
    st = summarize(records, NOW, None)
    assert st.stale_after_ms == 2000 and by_member(st)["a"].state == "ok"


def test_diverged_and_stopped_replicas_stay_so_however_old():
    st = summarize([
        beat("a", 1, NOW - 100),
        status("b", 1, NOW - 60_000, health="replaying", lag=(5, 5)),
        status("b", 1, NOW - 59_000, health="diverged", lag=(7, 900)),
        status("c", 1, NOW - 60_000, health="stopped"),
        status("d", 1, NOW - 50, health="diverged"),
    ], NOW, 200)
    m = by_member(st)
    assert (m["b"].state, m["b"].lag_records, m["b"].lag_ms) == ("diverged", 7, 900)
    assert m["c"].state == "stopped"
    assert m["d"].state == "diverged"


def test_handoff_migration_and_pending_claim_in_header():
    st = summarize([
        beat("a", 1, NOW - 9000),
        ("mig.log.Migrate", {"app": "shop", "event_id": "e1", "to_member": "b",
                             "reason": "kernel update", "requested_by": "ops@x",
                             "ts_ms": NOW - 8000}),
        ("mig.log.Handoff", {"app": "shop", "event_id": "e1", "from_member": "a",
                             "to_member": "b", "epoch": 1, "calls_offsets": [],
                             "frozen_ts_ms": NOW - 7600, "ts_ms": NOW - 7500}),
        promotion("b", 2, NOW - 7400, reason="handoff", detection=None, took=100),
        beat("b", 2, NOW - 100),
        ("mig.log.Claim", {"app": "shop", "member": "c", "epoch": 3, "reason": "failover",
                           "lag_records": 4, "ts_ms": NOW - 20}),
    ], NOW, 200)
    assert (st.epoch, st.primary) == (2, "b")
    assert st.last_migration["kind"] == "handoff"
    assert st.last_migration["from_member"] == "a" and st.last_migration["age_ms"] == 7500
    assert st.last_promotion["reason"] == "handoff"
    assert st.last_promotion["detection_ms"] is None
    assert st.pending_claim["member"] == "c" and st.pending_claim["epoch"] == 3
    assert by_member(st)["c"].role == "CANDIDATE"
    # a handed-over primary is done, not lost: never FENCED and stale, however old
    a = by_member(st)["a"]
    assert (a.role, a.state) == ("EX-PRIMARY", "handed over to b")


def test_no_records():
    st = summarize([], NOW, None, app="empty")
    assert (st.app, st.epoch, st.primary, st.members, st.last_promotion) == (
        "empty", None, None, [], None)


# ---------------------------------------------------------------- the real command

def _write(settings, app, records):
    ensure_topics(settings, app)
    writer = LogWriter(settings, app)
    for name, rec in records:
        writer.send("control", name, dict(rec, app=app), key=rec.get("member"))
    writer.commit()


def test_status_command_json_and_text(settings, app_name, tmp_path):
    # the config's heartbeat_ms makes members stale after 20 s: the command's own start-up
    # cannot make a fresh record look old
    config = tmp_path / "app.toml"
    config.write_text(f'[app]\nname = "{app_name}"\ncommand = ["true"]\n'
                      f'[kafka]\nbootstrap_servers = "{settings.bootstrap_servers}"\n'
                      '[replica]\nheartbeat_ms = 2000\n')
    now = int(time.time() * 1000)
    _write(settings, app_name, [
        beat("a", 1, now - 60_000, host="host-a"),
        status("b", 1, now - 59_000, lag=(3, 40), host="host-b"),
        promotion("b", 2, now - 30_000, detection=812, took=95),
        beat("b", 2, now, host="host-b"),
        status("c", 2, now, lag=(12, 345), host="host-c"),
        status("d", 1, now - 58_000, health="diverged", lag=(7, 900), host="host-d"),
    ])
    bootstrap = settings.bootstrap_servers
    proc = run_mig("status", app_name, "--json", "-c", str(config))
    assert proc.returncode == 0, proc.stderr
    (app,) = json.loads(proc.stdout)["apps"]
    assert (app["app"], app["epoch"], app["primary"]) == (app_name, 2, "b")
    assert app["stale_after_ms"] == 20_000
    assert app["last_promotion"]["detection_ms"] == 812
    assert app["last_promotion"]["promotion_ms"] == 95
    assert app["last_promotion"]["reason"] == "failover"
    members = {m["member"]: m for m in app["members"]}
    assert list(members) == ["b", "a", "c", "d"]
    assert (members["a"]["role"], members["a"]["state"]) == ("FENCED", "stale")
    assert (members["b"]["role"], members["b"]["host"], members["b"]["lag_records"]) == (
        "PRIMARY", "host-b", 0)
    assert (members["c"]["lag_records"], members["c"]["lag_ms"]) == (12, 345)
    assert members["c"]["state"] == "replaying"
    assert members["d"]["state"] == "diverged"
    assert members["c"]["checkpoint"] is None

    proc = run_mig("status", app_name, "-c", str(config))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"app {app_name}  epoch 2  primary b  last promotion: b")
    assert "failover, detection 812 ms, promotion 95 ms" in lines[0]
    assert lines[1].split() == ["MEMBER", "HOST", "ROLE", "EPOCH", "LAG", "LAG_MS", "SEEN",
                                "CHECKPOINT", "STATE"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert rows["b"][:6] == ["b", "host-b", "PRIMARY", "2", "0", "0"]
    assert rows["a"][2] == "FENCED" and rows["a"][-1] == "stale"
    assert rows["c"][4:6] == ["12", "345"] and rows["c"][-2:] == ["-", "replaying"]
    assert rows["d"][-1] == "diverged"
    state_col = lines[1].index("STATE")
    assert all(line[state_col - 2:state_col] == "  " for line in lines[1:])  # aligned

    proc = run_mig("status", "--json", "-b", bootstrap)  # every app
    assert proc.returncode == 0, proc.stderr
    assert app_name in [a["app"] for a in json.loads(proc.stdout)["apps"]]


def test_status_of_an_app_without_records(settings, app_name):
    ensure_topics(settings, app_name)
    proc = run_mig("status", app_name, "-b", settings.bootstrap_servers)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"app {app_name}  epoch -  primary -")
    assert "no members have reported" in proc.stdout


def test_unknown_app_is_one_line_error(settings, app_name):
    proc = run_mig("status", app_name, "-b", settings.bootstrap_servers)
    assert proc.returncode != 0
    assert proc.stdout == ""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("mig: error:")]
    assert errors == [f"mig: error: no app '{app_name}': topic mig.{app_name}.control does"
                      " not exist (`mig status` without a name lists the apps)"], proc.stderr
    assert "Traceback" not in proc.stderr


def _write_at(settings, app, records, kafka_ts_ms):
    """Records with an old Kafka timestamp, as a member wrote them that long ago."""
    from confluent_kafka import Producer

    from mig.wire.codec import Codec

    codec = Codec.default()
    prod = Producer({"bootstrap.servers": settings.bootstrap_servers})
    for name, rec in records:
        prod.produce(f"mig.{app}.control", codec.encode(name, dict(rec, app=app)),
                     key=rec["member"], headers=codec.headers(name), timestamp=kafka_ts_ms)
    assert prod.flush(10) == 0


def test_status_reads_the_last_minutes_and_decodes_only_each_members_newest(
        settings, app_name):
    """mig status reads the control records of the last --since seconds (the topic grows
    by every member's heartbeat: a read from its start got slower every hour), decodes
    only each member's newest heartbeat and status, and says what it left out; --since 0
    reads them all, and a topic silent for longer is read whole."""
    ensure_topics(settings, app_name)
    now = int(time.time() * 1000)
    _write_at(settings, app_name, [status("old", 1, now - 1_800_000, health="diverged")],
              now - 1_800_000)
    many = []
    for i in range(300):  # what a primary and a replica write in 30 s
        many += [beat("a", 1, now - 30_000 + 100 * i, host="host-a"),
                 status("b", 1, now - 30_000 + 100 * i, lag=(i % 7, i), host="host-b")]
    _write(settings, app_name, [*many, promotion("b", 2, now - 10, detection=900),
                                beat("b", 2, now, host="host-b")])
    shown = run_mig("status", app_name, "--json", "-b", settings.bootstrap_servers)
    (recent,) = json.loads(shown.stdout)["apps"]
    assert sorted(m["member"] for m in recent["members"]) == ["a", "b"]  # "old": 30 min
    assert recent["records"] == 602 and recent["since_ms"] is not None
    from mig.control.read import read_apps, read_control
    from mig.control.status import collect

    (whole,) = collect(settings, app_name, heartbeat_ms=2000, since_s=0)
    assert whole.records == 603 and whole.since_ms is None
    assert {m.member: m.state for m in whole.members}["old"] == "diverged"
    # only the newest repeats decoded, the same answer as from every record
    newest = read_apps(settings, [app_name], 10, None, latest_only=True)[app_name].records
    assert len(newest) == 1 + 2 + 1 + 1  # old's status, a's and b's newest, the promotion
    part = summarize(newest, now, 2000)
    full = summarize(read_control(settings, app_name), now, 2000)
    assert full.records == 603
    assert (part.epoch, part.primary, part.members, part.last_promotion) == (
        full.epoch, full.primary, full.members, full.last_promotion)
    text = run_mig("status", app_name, "-b", settings.bootstrap_servers).stdout
    assert "  read the control records of the last 10m00s (602): a member silent for" in text

    other = f"{app_name}x"  # a topic whose every record is older: read whole
    ensure_topics(settings, other)
    _write_at(settings, other, [beat("z", 1, now - 1_800_000)], now - 1_800_000)
    (quiet,) = collect(settings, other, since_s=600)
    assert [m.member for m in quiet.members] == ["z"] and quiet.since_ms is None
