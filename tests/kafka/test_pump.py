"""mig/kafka/pump.py (shim/src/mig_pump.c), against the real embedded broker: the native
pump sends a ring's records as the bytes the Python encoder makes, each acknowledgement
raises the ring's committed_seq by itself (no Python takes the delivery report), batches are
cut under the limit and numbered in turn, a fenced producer's refusal is raised as
Fenced, its batch never released, and an app with keys has its batches signed as Python
signs them."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import time

import pytest
from confluent_kafka import TopicPartition

from mig.errors import Fenced
from mig.kafka.clients import consumer
from mig.kafka.pump import QUEUE_FULL, REFUSED, hmac_hex
from mig.kafka.topics import ensure_topics, topic_names
from mig.kafka.writer import LogWriter
from mig.ring.batch import BatchEncoder
from mig.ring.decode import BatchDecoder
from mig.ring.memory import RawCall, Ring
from mig.wire.auth import HEADER as AUTH_HEADER
from mig.wire.auth import load_keys
from mig.wire.codec import SCHEMA_HEADER
from tests.ring.support import new_ring, put

LIMIT = 1 << 20


def _calls(n: int, size: int = 100, first: int = 0) -> list[RawCall]:
    return [RawCall(28, 0, i % 3, 0, first + i, size, (5, size, 0, 0), 1000 + i, 0, 0,
                    bytes([i % 256]) * size) for i in range(n)]


def _writer(settings, app: str, limit: int = LIMIT) -> LogWriter:
    writer = LogWriter(settings, app, transactional_id=f"mig.{app}.primary", pump_limit=limit)
    assert writer.pump is not None, "the pump did not get the producer's handle"
    return writer


def _big_calls_ring(tmp_path) -> Ring:
    """A ring of 100 calls of 4 KiB each: ten batches or more of 40,000 bytes."""
    ring = new_ring(tmp_path / "r.ring", capacity=1 << 20)
    for call in _calls(100, size=4096):
        assert put(ring, call)
    return ring


def _wait(until, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def _read_calls(settings, app: str, n: int) -> list[tuple[bytes, list]]:
    topic = topic_names(app)["calls"]
    cons = consumer(settings, **{"group.id": f"pump-{app}"})
    cons.assign([TopicPartition(topic, 0, 0)])
    got: list[tuple[bytes, list]] = []
    deadline = time.monotonic() + 15
    try:
        while len(got) < n and time.monotonic() < deadline:
            msg = cons.poll(0.2)
            if msg is not None and not msg.error():
                got.append((msg.value(), msg.headers() or []))
    finally:
        cons.close()
    return got


def _drain(writer: LogWriter, ring: Ring, batch_seq: int = 0):
    assert writer.pump is not None
    writer.begin()
    return writer.pump.drain(ring, ring.tail, ring.head, 1 << 30, 3, "1.2", batch_seq, 12345)


def test_a_batch_is_the_python_encoders_and_its_acknowledgement_releases_the_ring(
        tmp_path, settings, app_name):
    ensure_topics(settings, app_name)
    writer = _writer(settings, app_name)
    ring = new_ring(tmp_path / "r.ring", capacity=1 << 16)
    calls = _calls(30)
    for call in calls:
        assert put(ring, call)
    start = ring.tail
    out = _drain(writer, ring, batch_seq=9)
    assert (out.result, out.calls, out.batches, out.next) == (0, 30, 1, ring.head)
    assert (out.last_seq, out.batch_seq) == (29, 10)
    # nobody polls the producer here: the broker thread's acknowledgement does it
    _wait(lambda: ring.committed_seq == 30, f"committed_seq stayed {ring.committed_seq}")
    assert writer.pump.in_flight == 0
    writer.commit()
    [(value, headers)] = _read_calls(settings, app_name, 1)
    expected, _ = BatchEncoder(LIMIT).encode(ring, start, ring.head, app_name, 3, "1.2", 9,
                                             12345)
    assert expected is not None and value == expected.value
    assert (SCHEMA_HEADER, b"mig.log.CallBatch") in headers
    assert writer.pump.acked_offsets() == {0: 0}
    assert len(writer.pump.latencies()) == 1 and writer.pump.latencies() == []
    ring.close()


def test_batches_are_cut_under_the_limit_and_numbered_in_turn(tmp_path, settings, app_name):
    ensure_topics(settings, app_name)
    writer = _writer(settings, app_name, 40_000)
    ring = _big_calls_ring(tmp_path)
    out = _drain(writer, ring, batch_seq=5)
    assert out.result == 0 and out.calls == 100 and out.batches >= 10
    assert out.batch_seq == 5 + out.batches
    _wait(lambda: ring.committed_seq == 100, f"committed_seq stayed {ring.committed_seq}")
    writer.commit()
    got = _read_calls(settings, app_name, out.batches)
    assert len(got) == out.batches and all(len(v) <= 40_000 + 64 for v, _ in got)
    decoded = [BatchDecoder().decode(v, h) for v, h in got]
    assert [b.batch_seq for b in decoded if b] == list(range(5, 5 + out.batches))
    assert sum(b.count for b in decoded if b) == 100
    ring.close()


def test_a_fenced_producers_batch_is_refused_and_never_released(tmp_path, settings,
                                                                 app_name):
    ensure_topics(settings, app_name)
    old = _writer(settings, app_name)
    ring = new_ring(tmp_path / "r.ring", capacity=1 << 16)
    for call in _calls(5):
        assert put(ring, call)
    assert _drain(old, ring).result == 0
    _wait(lambda: ring.committed_seq == 5, "the first batch was not acknowledged")
    LogWriter(settings, app_name, transactional_id=f"mig.{app_name}.primary")  # fences
    for call in _calls(5, first=5):
        assert put(ring, call)
    assert old.pump is not None
    out = old.pump.drain(ring, ring.tail, ring.head, 1 << 30, 3, "1.2", 1, 0)
    assert out.result in (0, REFUSED)
    _wait(lambda: old.pump.error()[0] != 0, "the fenced producer's batch was not refused")
    with pytest.raises(Fenced):
        old.raise_pump_refusal()
    time.sleep(0.2)
    assert ring.committed_seq == 5  # the refused batch's waiters are never released
    ring.close()


def test_a_full_producer_queue_leaves_the_rest_in_the_ring_for_later(tmp_path, settings,
                                                                     app_name):
    ensure_topics(settings, app_name)
    small = dataclasses.replace(settings, properties={**settings.properties,
                                                      "queue.buffering.max.messages": 3})
    writer = _writer(small, app_name, 40_000)
    assert writer.pump is not None
    ring = _big_calls_ring(tmp_path)
    writer.begin()
    seq, results, sent = 0, [], 0
    while ring.tail < ring.head:
        out = writer.pump.drain(ring, ring.tail, ring.head, 1 << 30, 3, "1.2", seq, 0)
        results.append(out.result)
        ring.release(out.next)
        seq, sent = out.batch_seq, sent + out.calls
        writer.serve(0.01)
    assert QUEUE_FULL in results and set(results) <= {0, QUEUE_FULL}
    assert sent == 100
    _wait(lambda: ring.committed_seq == 100, f"committed_seq stayed {ring.committed_seq}")
    writer.commit()
    decoded = [BatchDecoder().decode(v, h) for v, h in _read_calls(settings, app_name, seq)]
    assert [b.batch_seq for b in decoded if b] == list(range(seq))
    assert [c for b in decoded if b for c in range(b.first_seq, b.last_seq + 1)] == list(
        range(100))
    ring.close()


def test_the_pumps_hmac_is_pythons():
    """HMAC-SHA256 of shim/src/mig_hmac.c against Python's, at every length around the
    block boundaries (55, 56, 64: the padding's cases), long messages, and keys shorter
    than, as long as and longer than a block (hashed first)."""
    lengths = [*range(0, 200), 1000, 4095, 4096, 100_000]
    for klen in (16, 32, 63, 64, 65, 200):
        key = os.urandom(klen)
        for n in lengths:
            msg = os.urandom(n)
            assert hmac_hex(key, msg) == hmac.new(key, msg, hashlib.sha256).hexdigest(), \
                (klen, n)


def test_a_signed_apps_batches_carry_the_signature_its_replicas_check(
        tmp_path, settings, app_name):
    """With [security] keys the primary's batches still go through the pump (they took the
    Python path), each with a mig.auth header that mig/wire/auth.py accepts; one byte of a
    batch changed and it is refused."""
    ensure_topics(settings, app_name)
    auth = load_keys(f"k7 {'ab' * 32}\nold {'cd' * 16}\n", "keys")
    writer = _writer(dataclasses.replace(settings, auth=auth), app_name, 40_000)
    ring = _big_calls_ring(tmp_path)
    out = _drain(writer, ring)
    assert out.result == 0 and out.batches >= 10
    _wait(lambda: ring.committed_seq == 100, f"committed_seq stayed {ring.committed_seq}")
    writer.commit()
    got = _read_calls(settings, app_name, out.batches)
    assert len(got) == out.batches
    for value, headers in got:
        assert dict(headers)[AUTH_HEADER].startswith(b"k7:"), headers
        assert auth.check("calls", "1.2", value, headers) is None
    value, headers = got[0]
    forged = value[:-2] + bytes([value[-2] ^ 1]) + value[-1:]
    assert "does not match" in (auth.check("calls", "1.2", forged, headers) or "")
    ring.close()
