"""Hostile and foreign records in an app's topics: `mig log` never crashes, names the offset
and the reason, and keeps walking. `mig log verify` finds sequence gaps."""

from __future__ import annotations

import json
import os

from confluent_kafka import Producer

from mig.kafka.topics import ensure_topics
from mig.kafka.writer import LogWriter
from mig.wire.codec import Codec
from tests.conftest import run_mig
from tests.samples import sample


def _raw(settings, topic, values):
    prod = Producer({"bootstrap.servers": settings.bootstrap_servers})
    for value, headers in values:
        prod.produce(topic, value=value, headers=headers)
    assert prod.flush(10) == 0


def _hostile_calls_topic(settings, app):
    ensure_topics(settings, app)
    codec = Codec.default()
    good = codec.encode("mig.log.CallBatch", sample("mig.log.CallBatch"))
    fp = codec.fingerprint("mig.log.CallBatch")
    _raw(settings, f"mig.{app}.calls", [
        (good, codec.headers("mig.log.CallBatch")),                   # 0 fine
        (os.urandom(64), None),                                       # 1 random bytes
        (json.dumps({"foreign": "record"}).encode(), None),           # 2 a foreign JSON record
        (b"\xc3\x01\x01\x02", None),                                  # 3 truncated header
        (b"\xc3\x01" + b"\xab" * 8 + b"\x00", None),                  # 4 unknown fingerprint
        (b"\xc3\x01" + fp + b"\xff\xff", None),                      # 5 body that does not decode
        (codec.encode("mig.log.Heartbeat", sample("mig.log.Heartbeat")), None),  # 6 wrong topic
        (good, [("mig.schema", b"mig.log.Barrier")]),                 # 7 header contradicts
        (b"", None),                                                  # 8 empty value
        (good, None),                                                 # 9 fine, no header
    ])


def test_tail_reports_every_bad_record_and_continues(settings, app_name):
    _hostile_calls_topic(settings, app_name)
    proc = run_mig("log", "tail", app_name, "-t", "calls", "--json", "-b",
                   settings.bootstrap_servers)
    assert proc.returncode == 0, proc.stderr
    rows = {r["offset"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert sorted(rows) == list(range(10))
    assert "error" not in rows[0] and "error" not in rows[9]
    reasons = {off: rows[off].get("error", "") for off in range(1, 9)}
    assert "magic" in reasons[1] or "short" in reasons[1]
    assert "magic" in reasons[2]
    assert "short" in reasons[3]
    assert "unknown schema fingerprint abababababababab" in reasons[4]
    assert "does not decode as mig.log.CallBatch" in reasons[5]
    assert reasons[6] == "mig.log.Heartbeat does not belong in the calls topic"
    assert "header says mig.log.Barrier" in reasons[7]
    assert reasons[8]


def test_tail_text_mode_names_offset_and_reason(settings, app_name):
    _hostile_calls_topic(settings, app_name)
    proc = run_mig("log", "tail", app_name, "-t", "calls", "-b", settings.bootstrap_servers)
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert len(lines) == 10
    assert lines[4].startswith("calls[0]@4 UNDECODABLE")
    assert "unknown schema fingerprint" in lines[4]
    assert lines[0].startswith("calls[0]@0 CallBatch lpid=")


def test_verify_reports_undecodable_records_and_exits_1(settings, app_name):
    _hostile_calls_topic(settings, app_name)
    proc = run_mig("log", "verify", app_name, "-b", settings.bootstrap_servers)
    assert proc.returncode == 1
    out = proc.stdout.splitlines()
    bad = [line for line in out if ": undecodable: " in line]
    assert len(bad) == 8
    assert f"mig.{app_name}.calls[0]@4: undecodable: unknown schema fingerprint" in out[3]
    assert out[-1].startswith("10 records (") and out[-1].endswith(" problems")


def _batch(lpid, batch_seq, seqs, epoch=1):
    base = sample("mig.log.CallBatch")
    call = base["calls"][0]
    return dict(base, lpid=lpid, epoch=epoch, batch_seq=batch_seq, first_seq=seqs[0],
                calls=[dict(call, seq=s) for s in seqs])


def test_verify_finds_sequence_gaps_repeats_and_epoch_regressions(settings, app_name):
    ensure_topics(settings, app_name)
    writer = LogWriter(settings, app_name)
    for batch in [_batch("1", 0, [0, 1, 2]), _batch("1.1", 0, [0, 1]),
                  _batch("1", 1, [3, 4]), _batch("1", 2, [6, 7]),        # gap: 5 missing
                  _batch("1.1", 1, [1, 2]),                             # repeat of seq 1
                  _batch("1", 4, [8], epoch=2), _batch("1", 5, [9], epoch=1)]:
        writer.send("calls", "mig.log.CallBatch", batch, key=batch["lpid"])
    writer.commit()
    proc = run_mig("log", "verify", app_name, "-b", settings.bootstrap_servers)
    assert proc.returncode == 1
    out = proc.stdout
    assert "@3: lpid 1 seq gap: expected 5, got 6" in out
    assert "@4: lpid 1.1 seq repeat: expected 2, got 1" in out
    assert "@5: lpid 1 batch_seq 4, expected 3" in out
    assert "@6: lpid 1 epoch went back from 2 to 1" in out


def test_verify_clean_log_is_ok(settings, app_name):
    ensure_topics(settings, app_name)
    writer = LogWriter(settings, app_name)
    for batch in [_batch("1", 0, [0, 1, 2]), _batch("1", 1, [3]), _batch("1.1", 0, [0])]:
        writer.send("calls", "mig.log.CallBatch", batch, key=batch["lpid"])
    writer.commit()
    proc = run_mig("log", "verify", app_name, "-b", settings.bootstrap_servers)
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.strip() == "3 records (CallBatch=3): ok"


def test_unknown_app_is_a_clear_error(settings):
    proc = run_mig("log", "tail", "no-such-app", "-b", settings.bootstrap_servers)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "mig: error: topic mig.no-such-app.calls does not exist (is 'no-such-app' the app's name?)")
