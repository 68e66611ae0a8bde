"""Every record type through the real broker and back, by the library and by `mig log tail`."""

from __future__ import annotations

import json

from mig.kafka.topics import ensure_topics
from mig.kafka.writer import LogWriter
from mig.ops.logtool import EXPECTED, read_rows
from tests.conftest import run_mig
from tests.samples import ALL_TYPES, sample

# every record type written to a topic; the rest of ALL_TYPES are named parts of them
MESSAGES = sorted(set().union(*EXPECTED.values()))


def test_every_message_type_has_a_sample():
    assert set(MESSAGES) <= set(ALL_TYPES)


def _role(full_name: str) -> str:
    return next(role for role, names in EXPECTED.items() if full_name in names)


def _write_all(settings, app, transactional_id=None):
    ensure_topics(settings, app, with_input=True)
    writer = LogWriter(settings, app, transactional_id=transactional_id)
    for name in MESSAGES:
        writer.send(_role(name), name, sample(name), key=name.rsplit(".", 1)[-1])
    return writer.commit()


def test_every_type_round_trips_through_kafka(settings, app_name):
    offsets = _write_all(settings, app_name, transactional_id=f"mig.{app_name}.test")
    assert len(offsets) == len(MESSAGES)
    rows = list(read_rows(settings, app_name))
    got = {row.schema: row.record for row in rows}
    assert all(row.error is None for row in rows), [r.error for r in rows if r.error]
    for name in MESSAGES:
        assert got[name] == sample(name), name


def test_aborted_records_are_history_unless_committed_only(settings, app_name):
    """A transaction that fencing aborted held acknowledged records that replicas replayed:
    mig's own reading shows them; --committed-only shows what read_committed sees."""
    ensure_topics(settings, app_name)
    writer = LogWriter(settings, app_name, transactional_id=f"mig.{app_name}.abort")
    writer.send("control", "mig.log.Heartbeat", sample("mig.log.Heartbeat"))
    writer.flush()
    writer.abort()
    writer.send("control", "mig.log.MemberStatus", sample("mig.log.MemberStatus"))
    writer.commit()
    schemas = [r.schema for r in read_rows(settings, app_name, roles=["control"])]
    assert schemas == ["mig.log.Heartbeat", "mig.log.MemberStatus"]
    committed = [r.schema for r in read_rows(settings, app_name, roles=["control"],
                                             committed_only=True)]
    assert committed == ["mig.log.MemberStatus"]


def test_mig_log_tail_json_decodes_what_was_written(settings, app_name):
    _write_all(settings, app_name)
    proc = run_mig("log", "tail", app_name, "--json", "--bootstrap", settings.bootstrap_servers,
                   check=True)
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert sorted(r["schema"] for r in rows) == MESSAGES
    assert all("error" not in r for r in rows)
    batch = next(r for r in rows if r["schema"] == "mig.log.CallBatch")
    assert batch["topic"] == f"mig.{app_name}.calls"
    assert batch["record"]["lpid"] == sample("mig.log.CallBatch")["lpid"]


def test_mig_log_tail_text_and_topic_filter_and_offset(settings, app_name):
    _write_all(settings, app_name)
    proc = run_mig("log", "tail", app_name, "-t", "control", "-b", settings.bootstrap_servers,
                   check=True)
    lines = proc.stdout.splitlines()
    assert len(lines) == len(EXPECTED["control"])
    assert all(line.startswith("control[0]@") for line in lines)
    proc = run_mig("log", "tail", app_name, "-t", "control", "--from", "2", "-b",
                   settings.bootstrap_servers, check=True)
    assert proc.stdout.splitlines() == lines[2:]


def test_tail_from_checkpoint_starts_at_the_manifest_offsets(settings, app_name):
    ensure_topics(settings, app_name)
    writer = LogWriter(settings, app_name)
    batch = sample("mig.log.CallBatch")
    for i in range(5):
        calls = [dict(c, seq=i * len(batch["calls"]) + j) for j, c in enumerate(batch["calls"])]
        writer.send("calls", "mig.log.CallBatch", dict(batch, batch_seq=i, calls=calls), key="1")
    writer.commit()
    manifest = dict(sample("mig.log.CheckpointManifest"),
                    barrier_offsets=[{"partition": 0, "offset": 3}])
    writer.send("checkpoints", "mig.log.CheckpointManifest", manifest, key="manifest")
    writer.commit()
    proc = run_mig("log", "tail", app_name, "--from", "checkpoint", "--json", "-b",
                   settings.bootstrap_servers, check=True)
    offsets = [json.loads(line)["offset"] for line in proc.stdout.splitlines()]
    assert offsets == [3, 4]


def test_tail_from_checkpoint_without_one_is_a_clear_error(settings, app_name):
    ensure_topics(settings, app_name)
    proc = run_mig("log", "tail", app_name, "--from", "checkpoint", "-b",
                   settings.bootstrap_servers)
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith(
        f"mig: error: no checkpoint manifest in mig.{app_name}.checkpoints: use --from beginning")
