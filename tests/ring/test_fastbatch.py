"""The recorder's C batch encoder produces exactly fastavro's bytes for the same calls,
wherever the records sit in the ring (wrap-around padding included), and cuts batches
under its byte limit."""

from __future__ import annotations

from collections import deque

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mig.ring.batch import BatchEncoder
from mig.ring.kinds import KIND_NUMBERS
from mig.ring.memory import F_OUTPUT, RawCall
from mig.wire.codec import Codec
from tests.ring.support import new_ring, put, seek, to_avro

CODEC = Codec.default()
I64 = st.integers(-(2**63), 2**63 - 1)

calls_strategy = st.lists(st.builds(
    RawCall,
    kind=st.sampled_from(sorted(KIND_NUMBERS.values())),
    flags=st.sampled_from([0, F_OUTPUT]),
    tid=st.integers(0, 2**31 - 1), err=st.integers(0, 200),
    seq=st.integers(0, 2**62), result=I64,
    args=st.tuples(I64, I64, I64, I64), wall_ns=st.integers(0, 2**63 - 1),
    out_len=st.integers(0, 2**40), out_hash=st.integers(0, 2**64 - 1),
    payload=st.binary(max_size=700)), min_size=1, max_size=25)


def _expected(calls: list[RawCall], lpid: str, batch_seq: int, sent_ns: int) -> bytes:
    avro = []
    for call in calls:
        rec = to_avro(call)
        if not call.flags & F_OUTPUT:
            rec["out_len"] = rec["out_hash"] = None
        avro.append(rec)
    return CODEC.encode("mig.log.CallBatch", {
        "app": "fast", "epoch": 3, "lpid": lpid, "batch_seq": batch_seq,
        "first_seq": calls[0].seq, "sent_ns": sent_ns, "calls": avro})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(calls=calls_strategy, offset=st.integers(0, 1 << 16))
def test_bytes_equal_fastavro_anywhere_in_the_ring(tmp_path, calls, offset):
    ring = new_ring(tmp_path / "r.ring", capacity=1 << 16)
    start = (1 << 20) + offset - offset % 8  # positions keep growing: wrap at any point
    seek(ring, start)
    for call in calls:
        assert put(ring, call)
    encoder = BatchEncoder(limit=1 << 20)
    batch, pos = encoder.encode(ring, start, ring.head, "fast", 3, "1.2", 9, 12345)
    assert pos == ring.head and batch is not None and batch.count == len(calls)
    assert batch.value == _expected(calls, "1.2", 9, 12345)
    assert CODEC.decode(batch.value)[1]["calls"][-1]["seq"] == calls[-1].seq
    ring.close()


def test_batches_are_cut_under_the_limit(tmp_path):
    ring = new_ring(tmp_path / "r.ring", capacity=1 << 20)
    calls = [RawCall(28, 0, 0, 0, i, 4096, (5, 4096, 0, 0), 1, 0, 0, bytes([i]) * 4096)
             for i in range(100)]
    for call in calls:
        assert put(ring, call)
    encoder = BatchEncoder(limit=40_000)
    pos, seen = ring.tail, []
    while pos < ring.head:
        batch, pos = encoder.encode(ring, pos, ring.head, "fast", 1, "1", len(seen), 0)
        assert batch is not None and len(batch.value) <= 40_000 + 64
        seen.append(batch)
    assert sum(b.count for b in seen) == 100
    # full batches: one more 4 KiB record would not have fitted under the limit
    assert all(len(b.value) + 4096 > 40_000 - 200 for b in seen[:-1])
    assert [b.first_seq for b in seen] == sorted(b.first_seq for b in seen)
    ring.close()


def test_recorder_drain_budget_never_splits_a_record(tmp_path):
    # records of 112 bytes never end exactly on a 256 KiB budget: the drain must take the
    # record that straddles it (this crashed the recorder once)
    from mig.member.primary import Recorder

    ring = new_ring(tmp_path / "1.ring", capacity=1 << 20)
    calls = [RawCall(3, 0, 0, 0, i, 0, (1, 0, 0, 0), 7, 0, 0, b"x" * 16) for i in range(5000)]
    for call in calls:
        assert put(ring, call)

    class Writer:  # the Python path (the native one: tests/kafka/test_pump.py)
        sent: list[bytes] = []
        pump = None

        def send_raw(self, role, value, key=None, headers=None, on_acked=None):
            self.sent.append(value)

    rec = Recorder.__new__(Recorder)
    rec.cfg = type("Cfg", (), {"name": "fast"})()
    rec.epoch, rec.rings, rec.batch_seq, rec.sent_seq = 1, {"1": ring}, {"1": 0}, {}
    rec.stats = type("Stats", (), {"batches": 0, "calls": 0})()
    rec.encoder, rec.headers, rec.drain_bytes = BatchEncoder(1 << 19), [], 256 * 1024
    rec.metrics, rec._in_flight = None, deque()
    writer = Writer()
    total = 0
    while (sent := rec._drain(writer)):
        total += sent
    assert total == 5000 and rec.sent_seq["1"] == 5000 and ring.tail == ring.head
    ring.close()
