"""mig/ring/decode.py: CallBatch values into ring records natively, exactly as the Python
path (the codec, then from_avro and RawCall.pack) would, or refused where it refuses."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mig.errors import DecodeError
from mig.ring.decode import BatchDecoder, DecodedBatch, from_calls
from mig.ring.memory import F_OUTPUT, RawCall, RingError
from mig.wire.codec import MAGIC, Codec
from tests.avro_strategies import records
from tests.ring.support import new_ring, parse_record, seek
from tests.samples import sample

CODEC = Codec.default()
NAME = "mig.log.CallBatch"
DECODER = BatchDecoder()
EXAMPLES = int(os.environ.get("MIG_FUZZ_EXAMPLES", "0"))


def fuzz(examples: int) -> Any:
    return settings(max_examples=EXAMPLES or examples, deadline=None,
                    suppress_health_check=list(HealthCheck))


def call(seq: int, **change: Any) -> dict[str, Any]:
    return {"tid": 1, "seq": seq, "kind": "CLOCK_GETTIME", "args": [1], "result": 0,
            "err": 0, "payload": b"\x01" * 16, "out_len": None, "out_hash": None,
            "wall_ns": 1_700_000_000_000_000_000 + seq, **change}


def batch(calls: list[dict[str, Any]], **change: Any) -> dict[str, Any]:
    return {"app": "shop", "epoch": 3, "lpid": "1", "batch_seq": 7,
            "first_seq": calls[0]["seq"] if calls else 0, "sent_ns": 12345, "calls": calls,
            **change}


def python_path(value: bytes) -> DecodedBatch | str:
    try:
        name, rec = CODEC.decode(value)
        assert name == NAME
        return from_calls(rec)
    except DecodeError as exc:
        return f"refused: {exc.reason}"


def native_path(value: bytes) -> DecodedBatch | str:
    try:
        decoded = DECODER.decode(value)
    except DecodeError as exc:
        return f"refused: {exc.reason}"
    assert decoded is not None
    return decoded


def agree(value: bytes) -> None:
    want, got = python_path(value), native_path(value)
    if isinstance(want, str) or isinstance(got, str):
        if isinstance(got, str) and "longer than 64 bits" in got:
            return  # the one documented difference: fastavro reads an overlong varint on
        assert isinstance(want, str) and isinstance(got, str), (want, got)
        return
    assert got == want


def test_a_batch_becomes_the_ring_records_the_python_path_makes() -> None:
    calls = [call(10), call(11, kind="WRITE", payload=None, out_len=5, out_hash=b"8 bytes!",
                         args=[1, 2, 3, 4], result=5),
             call(12, kind="READ", payload=b"hello", err=11, result=-1, tid=2)]
    value = CODEC.encode(NAME, batch(calls))
    got = DECODER.decode(value, CODEC.headers(NAME))
    assert got == python_path(value)
    assert got is not None and got.count == 3 and got.last_seq == 12 and got.epoch == 3
    first, length = parse_record(got.records, 0, len(got.records))
    assert first == RawCall(kind=3, flags=0, tid=1, err=0, seq=10, result=0, args=(1, 0, 0, 0),
                            wall_ns=calls[0]["wall_ns"], out_len=0, out_hash=0,
                            payload=b"\x01" * 16)
    second, _ = parse_record(got.records, length, len(got.records) - length)
    assert second is not None and second.flags == F_OUTPUT and second.out_len == 5
    empty = DECODER.decode(CODEC.encode(NAME, batch([], first_seq=40)))
    assert empty is not None and empty.count == 0 and empty.records == b""
    assert empty.last_seq == 39


def test_a_value_of_another_writer_is_left_to_the_codec() -> None:
    assert DECODER.decode(CODEC.encode("mig.log.Heartbeat", sample("mig.log.Heartbeat"))) is None
    assert DECODER.decode(MAGIC + b"\x00" * 8 + b"\x00") is None
    assert DECODER.decode(None) is None
    value = CODEC.encode(NAME, batch([call(1)]))
    with pytest.raises(DecodeError, match="header says mig.log.Claim"):
        DECODER.decode(value, [("mig.schema", b"mig.log.Claim")])


@pytest.mark.parametrize(("change", "why"), [
    ({"tid": -1}, "tid -1 is out of range"),
    ({"tid": 2**31}, "tid 2147483648 is out of the int range"),
    ({"err": -(2**31) - 1}, "err -2147483649 is out of the int range"),
    ({"seq": -5}, "seq -5 is out of range"),
    ({"wall_ns": -1}, "wall_ns -1 is out of range"),
    ({"args": [1, 2, 3, 4, 5]}, "5 arguments, at most 4"),
    ({"out_len": 3, "out_hash": b"12"}, "out_hash is 2 bytes, expected 8"),
    ({"out_len": 5, "out_hash": None}, "must be given together"),
    ({"out_len": None, "out_hash": b"8 bytes!"}, "must be given together"),
    ({"out_len": -1, "out_hash": b"8 bytes!"}, "out_len -1 is out of range"),
])
def test_a_call_the_ring_cannot_carry_is_refused_by_both_paths(change: dict[str, Any],
                                                                why: str) -> None:
    value = CODEC.encode(NAME, batch([call(1), {**call(2), **change}]), validate=False)
    with pytest.raises(DecodeError, match=why):
        DECODER.decode(value)
    assert isinstance(python_path(value), str)


def test_trailing_and_missing_bytes_are_refused() -> None:
    value = CODEC.encode(NAME, batch([call(1), call(2)]))
    with pytest.raises(DecodeError, match="1 trailing bytes"):
        DECODER.decode(value + b"\x00")
    for cut in range(11, len(value)):
        with pytest.raises(DecodeError):
            DECODER.decode(value[:cut])


CALLS = records(CODEC.schema(NAME))


@fuzz(300)
@given(CALLS)
def test_any_batch_the_schema_allows_decodes_as_the_python_path_decodes_it(
        rec: dict[str, Any]) -> None:
    agree(CODEC.encode(NAME, rec))


@fuzz(300)
@given(CALLS, st.data())
@example(batch([call(1)]), None)
def test_mutated_batches_decode_alike_or_are_refused_by_both(rec: dict[str, Any],
                                                              data: st.DataObject | None) -> None:
    value = bytearray(CODEC.encode(NAME, rec))
    if data is not None:
        for _ in range(data.draw(st.integers(1, 4))):
            at = data.draw(st.integers(10, max(10, len(value) - 1)))
            what = data.draw(st.sampled_from(["flip", "cut", "insert"]))
            if what == "flip" and at < len(value):
                value[at] ^= data.draw(st.integers(1, 255))
            elif what == "cut":
                del value[at:at + data.draw(st.integers(1, 8))]
            else:
                value[at:at] = data.draw(st.binary(min_size=1, max_size=10))
    agree(bytes(value))


def test_fill_puts_what_fits_and_pads_at_the_end_of_the_data_area(tmp_path: Path) -> None:
    ring = new_ring(tmp_path / "1.ring", 1 << 16)
    try:
        start = (1 << 16) - 1024
        seek(ring, start)  # 1,024 bytes before the end of the data area
        calls = [call(seq, payload=b"p" * 40) for seq in range(1, 12)]  # 136-byte records
        got = DECODER.decode(CODEC.encode(NAME, batch(calls)))
        assert got is not None
        assert DECODER.fill(ring, got) == (11, 11) and got.left == 0
        # 7 x 136 = 952 bytes fit before the end; the 72 left are a PAD, then record 8 at 0
        pad, length = parse_record(ring.data, start + 952, 72)
        assert pad is None and length == 72
        eighth, _ = parse_record(ring.data, 0, 136)
        assert eighth is not None and eighth.seq == 8 and eighth.payload == b"p" * 40
        assert ring.head == start + 952 + 72 + 4 * 136
        ring.release(ring.head)  # the app took them all

        many = DECODER.decode(CODEC.encode(NAME, batch(
            [call(seq, payload=b"p" * 40) for seq in range(100, 700)])))
        assert many is not None
        at = ring.head % (1 << 16)
        put, last = DECODER.fill(ring, many)
        # records up to the end of the data area, a PAD, then up to where the app is
        assert put == ((1 << 16) - at) // 136 + at // 136 and last == 99 + put
        assert many.left == 600 - put and DECODER.fill(ring, many)[0] == 0  # full: waits
        ring.release(ring.head)
        assert DECODER.fill(ring, many) == (600 - put, 699) and many.left == 0

        big = DECODER.decode(CODEC.encode(NAME, batch([call(1, payload=b"x" * 70000)])))
        assert big is not None
        with pytest.raises(RingError, match="does not fit a ring of 65536 bytes"):
            DECODER.fill(ring, big)
    finally:
        ring.close()
