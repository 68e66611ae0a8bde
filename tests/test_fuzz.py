"""Fuzzing of every decoder mig has: arbitrary bytes and mutated valid encodings either
decode to a value that encodes again, or raise mig's own error (DecodeError, ConfigError,
RingError, CheckpointError) with a one-line message. Never another exception, a hang, or
an allocation the input's length does not justify.

Each ``@example`` is an input that once failed (docs/fuzzing.md). Example counts are kept
small so the file runs in about a minute; ``MIG_FUZZ_EXAMPLES=N`` (docs/fuzzing.md) runs
the same properties longer.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mig.checkpoint.image import CheckpointError, compatible, unpack
from mig.checkpoint.store import chunk_index
from mig.config import load_config, parse_config
from mig.control.view import ControlView
from mig.errors import ConfigError, DecodeError, MigError
from mig.kafka.clients import KafkaSettings
from mig.kafka.reader import Batch
from mig.ops.logtool import EXPECTED, _row, log_reader, render_json, render_text
from mig.ring.batch import BatchEncoder
from mig.ring.calls import from_avro
from mig.ring.memory import RawCall, Ring, RingError
from mig.wire.auth import HEADER, load_keys
from mig.wire.codec import MAGIC, SCHEMA_HEADER, Codec
from tests.avro_strategies import records
from tests.ring.support import new_ring, parse_record, put, seek, to_avro
from tests.samples import sample
from tests.wire.test_codec import _zigzag

CODEC = Codec.default()
STRATEGIES = {name: records(CODEC.schema(name)) for name in CODEC.names}
_EXAMPLES = int(os.environ.get("MIG_FUZZ_EXAMPLES", "0"))  # a longer run: docs/fuzzing.md


def fuzz(examples: int) -> Any:
    """A bounded run by default; MIG_FUZZ_EXAMPLES examples per property when set."""
    return settings(max_examples=_EXAMPLES or examples, deadline=None,
                    suppress_health_check=list(HealthCheck))


def one_line(exc: BaseException) -> None:
    text = str(exc)
    assert text and "\n" not in text and len(text) < 400, repr(text)


# -- mutations of valid encodings -------------------------------------------------------------


zigzag = _zigzag  # an Avro long (tests/wire/test_codec.py)


HUGE = st.sampled_from([2**31 - 1, 2**31, 2**32, 2**40, 2**62, 2**63 - 1, -(2**63), -1, -2])


@st.composite
def mutated(draw: st.DrawFn, data: bytes, keep_header: bool = True) -> bytes:
    """``data`` with a few flips, inserts, deletes, a truncation or a huge varint; the
    single-object header (10 bytes) is kept when ``keep_header``, so the body is reached."""
    out = bytearray(data)
    low = 10 if keep_header and len(out) > 10 else 0
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "varint", "byte"]))
        at = draw(st.integers(low, max(low, len(out))))
        if op == "flip" and at < len(out):
            out[at] ^= draw(st.integers(1, 255))
        elif op == "byte" and at < len(out):
            out[at] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]))
        elif op == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del out[at:at + draw(st.integers(1, 8))]
        elif op == "truncate":
            del out[at:]
        elif op == "varint":
            out[at:at] = zigzag(draw(HUGE))
    return bytes(out)


@st.composite
def valid_encoding(draw: st.DrawFn, names: list[str] | None = None) -> tuple[str, bytes]:
    name = draw(st.sampled_from(names or CODEC.names))
    record = draw(STRATEGIES[name] | st.just(sample(name)))
    return name, CODEC.encode(name, record)


@st.composite
def mutated_encoding(draw: st.DrawFn, names: list[str] | None = None) -> bytes:
    _name, data = draw(valid_encoding(names))
    return draw(mutated(data, keep_header=draw(st.booleans())))


def decodes_validly(value: Any, headers: Any = None) -> tuple[str, dict[str, Any]] | None:
    """decode_message either refuses with a one-line DecodeError or returns a record that
    encodes again to something that decodes to the same record."""
    try:
        name, record = CODEC.decode_message(value, headers)
    except DecodeError as exc:
        one_line(exc)
        return None
    again = CODEC.encode(name, record)  # validates: a SchemaError here is a decoder bug
    assert CODEC.decode(again) == (name, record)
    return name, record


HEADERS = st.one_of(
    st.none(),
    st.lists(st.tuples(st.sampled_from([SCHEMA_HEADER, HEADER, "x"]),
                       st.none() | st.binary(max_size=24) | st.sampled_from(
                           [n.encode() for n in CODEC.names])), max_size=3),
)


# -- Codec.decode_message -----------------------------------------------------------------------


@fuzz(400)
@given(mutated_encoding(), HEADERS)
@example(MAGIC + CODEC.fingerprint("mig.log.CallBatch") + zigzag(2**62), None)
@example(MAGIC + CODEC.fingerprint("mig.log.CheckpointChunk") + b"\x02a\x02b\x00\x02"
         + zigzag(2**40), None)
@example(b"\xc3\x01\x96\xe02\xcf\xaa`\n\xe3\x80\x80\x80\x80\x10\x80\x80\x81\x00", None)  # int 2^31
def test_decode_message_of_mutated_records(value: bytes, headers: Any) -> None:
    decodes_validly(value, headers)


@fuzz(200)
@given(st.binary(max_size=300), HEADERS)
def test_decode_message_of_arbitrary_bytes(value: bytes, headers: Any) -> None:
    decodes_validly(value, headers)


@fuzz(200)
@given(st.sampled_from(CODEC.names), st.binary(max_size=300))
def test_decode_message_of_arbitrary_bodies(name: str, body: bytes) -> None:
    decodes_validly(MAGIC + CODEC.fingerprint(name) + body, CODEC.headers(name))


@fuzz(150)
@given(valid_encoding(), st.data(), HUGE)
def test_huge_length_prefixes_are_refused_without_allocating(
        encoded: tuple[str, bytes], data: st.DataObject, huge: int) -> None:
    name, value = encoded
    at = data.draw(st.integers(10, len(value)))
    bad = value[:at] + zigzag(huge) + value[at:]
    tracemalloc.start()
    started = time.monotonic()
    try:
        decodes_validly(bad)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.monotonic() - started < 2.0
    assert peak < 8 * len(bad) + (4 << 20), f"{peak} bytes allocated for {len(bad)}"


@pytest.mark.parametrize(("name", "record"), [
    ("mig.log.PartitionOffset", {"partition": 2**31, "offset": 0}),
    ("mig.log.CheckpointChunk", {**sample("mig.log.CheckpointChunk"), "index": -(2**31) - 1}),
    ("mig.log.CallBatch", {**sample("mig.log.CallBatch"),
                           "calls": [_c := sample("mig.log.CallBatch")["calls"][0],
                                     {**_c, "err": 2**40}]}),
    ("mig.log.CheckpointManifest", {**sample("mig.log.CheckpointManifest"),
                                    "barrier_offsets": [{"partition": 2**31 + 5, "offset": 1}]}),
])
def test_an_int_field_out_of_range_is_refused(name: str, record: dict[str, Any]) -> None:
    value = CODEC.encode(name, record, validate=False)  # fastavro writes it as a varint
    with pytest.raises(DecodeError, match=f"body does not decode as {name}: .*int value"
                       r" -?\d+ out of range") as info:
        CODEC.decode(value)
    one_line(info.value)


# -- CallBatch -> the ring records a replica feeds the shim -----------------------------------


def _call(**change: Any) -> dict[str, Any]:
    return {**sample("mig.log.CallBatch")["calls"][0], **change}


@fuzz(300)
@given(STRATEGIES["mig.log.CallBatch"].map(lambda b: b["calls"]) | st.just([]))
@example([_call(out_len=3, out_hash=b"12")])     # struct.error: unpack needs 8 bytes
@example([_call(tid=-1)])                          # struct.error when packed into the ring
@example([_call(seq=-5)])
@example([_call(wall_ns=-1)])
@example([_call(out_len=-1, out_hash=b"8 bytes!")])
@example([_call(out_len=5, out_hash=None)])      # silently taken as hash 0
@example([_call(args=[1, 2, 3, 4, 5])])          # the fifth silently dropped
def test_calls_of_a_batch_become_ring_records_or_a_decode_error(
        calls: list[dict[str, Any]]) -> None:
    for call in calls:
        try:
            raw = from_avro(call)
        except DecodeError as exc:
            one_line(exc)
            continue
        blob = raw.pack()
        back, length = parse_record(blob, 0, len(blob))
        assert back == raw and length == len(blob)
        again = to_avro(raw)
        if call["out_len"] is None:
            again["out_hash"] = again["out_len"] = None
        assert again == {**call, "args": (list(call["args"]) + [0] * 4)[:4],
                         "kind": again["kind"], "payload": call["payload"] or None}


def test_a_record_larger_than_the_ring_is_refused_not_waited_for(tmp_path: Path) -> None:
    ring = new_ring(tmp_path / "1.ring", capacity=1 << 16)
    call = from_avro(_call(payload=b"x" * (1 << 16)))
    with pytest.raises(RingError, match="does not fit a ring of 65536 bytes") as info:
        put(ring, call)
    one_line(info.value)
    ring.close()


# -- the control topic ---------------------------------------------------------------------------


CONTROL = sorted(EXPECTED["control"])


@fuzz(150)
@given(st.lists(st.tuples(st.sampled_from(CONTROL), st.data()), max_size=12),
       st.floats(0, 1e6))
def test_control_view_takes_any_decodable_control_record(
        seq: list[tuple[str, st.DataObject]], now: float) -> None:
    view = ControlView("shop")
    for t, (name, data) in enumerate(seq):
        value = CODEC.encode(name, data.draw(STRATEGIES[name]))
        value = data.draw(st.just(value) | mutated(value))
        got = decodes_validly(value)
        if got is not None:
            view.on_record(*got, now=float(t))
    view.claim_epoch(now, 5.0)
    view.winner(view.epoch + 1)
    view.pending_handoff()
    view.hot_replicas(now, 5.0)


# -- mig log: tail and verify's rows ---------------------------------------------------------------


# mig log's reader, on a consumer never used: its rules turn each message into an item
LOG_READER = log_reader(KafkaSettings("127.0.0.1:9"), "shop", client=object())


@fuzz(200)
@given(st.sampled_from(sorted(EXPECTED)), mutated_encoding() | st.binary(max_size=80)
       | st.none(), HEADERS, st.none() | st.binary(max_size=12))
@example("calls", CODEC.encode("mig.log.Barrier", sample("mig.log.Barrier")),
         [(SCHEMA_HEADER, b"\n")], None)   # the header's newline was in the reason
def test_log_rows_of_any_message(role: str, value: bytes | None, headers: Any,
                                 key: bytes | None) -> None:
    msg = Message(topic=f"mig.shop.{role}", partition=0, offset=7, key=key, value=value,
                  headers=headers, timestamp=(1, 0))
    row = _row(next(iter(Batch(LOG_READER, [msg]))))
    assert (row.record is None) or (row.schema in CODEC.names)
    if row.error is not None:
        assert "\n" not in row.error
    line = render_text(row)
    assert line.startswith(f"{role}[0]@7 ") and "\n" not in line
    assert json.loads(render_json(row))["offset"] == 7


# -- keys file and signatures ---------------------------------------------------------------------


KEY_LINE = "k1 " + "ab" * 16


@fuzz(300)
@given(st.text(max_size=120) | st.builds(lambda a, b: a + KEY_LINE + b, st.text(max_size=20),
                                         st.text(max_size=20)))
@example("k1 " + "٣" * 32)   # unicode digits are not hex
@example("k1 " + "ab" * 16 + "\x1c" + "k2 zz")
def test_load_keys_of_any_text(text: str) -> None:
    try:
        auth = load_keys(text, "keys")
    except ConfigError as exc:
        one_line(exc)
        assert "ab" * 16 not in str(exc)  # never the key itself
        return
    assert auth.keys and all(len(secret) >= 16 for _, secret in auth.keys)


AUTH = load_keys(KEY_LINE, "keys")


@fuzz(300)
@given(st.binary(max_size=40) | st.text(max_size=40)
       | st.builds(lambda s: b"k1:" + s, st.binary(max_size=70)),
       st.none() | st.binary(max_size=20), st.none() | st.binary(max_size=20))
@example(b"k1:\xff", b"1", b"x")          # TypeError from compare_digest on non-ASCII text
@example("k1:\u00e9", b"1", b"x")
@example(b"\xff\xfe" * 40 + b":00", None, None)
def test_signature_check_of_any_header(sig: Any, key: bytes | None,
                                       value: bytes | None) -> None:
    why = AUTH.check("calls", key, value, [(HEADER, sig)])
    assert why is None or ("\n" not in why and len(why) < 200)
    good = AUTH.sign("calls", key, value)
    assert AUTH.check("calls", key, value, [(HEADER, good)]) is None


# -- app.toml -------------------------------------------------------------------------------------


VALID_TOML = """\
[app]
name = "shop"
command = ["/usr/bin/python3", "-m", "shop"]
cwd = "."
env = { LANG = "C.UTF-8" }
barrier_mode = "output"

[kafka]
bootstrap_servers = "127.0.0.1:9092"
"linger.ms" = 5

[replica]
heartbeat_ms = 200

[metrics]
address = "127.0.0.1:9464"
"""


@st.composite
def mutated_text(draw: st.DrawFn, text: str) -> str:
    raw = draw(mutated(text.encode(), keep_header=False))
    return raw.decode("utf-8", "replace")


def config_or_error(text: str, path: Path) -> None:
    try:
        cfg = parse_config(text, path)
    except ConfigError as exc:
        one_line(exc)
        assert str(path) in str(exc)
        return
    assert cfg.name and cfg.command and cfg.cwd.is_absolute()


@fuzz(300)
@given(st.text(max_size=200) | mutated_text(VALID_TOML))
@example("a=" + "[" * 5000)                                          # RecursionError
@example(VALID_TOML.replace('cwd = "."', 'cwd = "a\\u0000b"'))     # ValueError: NUL
@example(VALID_TOML.replace('"-m"', '"-\\u0000m"'))
@example(VALID_TOML.replace("9464", "9" * 5000))
def test_parse_config_of_any_text(text: str) -> None:
    config_or_error(text, Path("/srv/shop/app.toml"))


@fuzz(60)
@given(st.binary(max_size=200) | mutated(VALID_TOML.encode(), keep_header=False))
@example(b"\xff\xfe[app]")
def test_load_config_of_any_file(tmp_path_factory: pytest.TempPathFactory,
                                 data: bytes) -> None:
    path = tmp_path_factory.mktemp("cfg") / "app.toml"
    path.write_bytes(data)
    try:
        load_config(path)
    except ConfigError as exc:
        one_line(exc)


# -- checkpoints: manifests, chunk keys, archives -------------------------------------------------


@fuzz(200)
@given(STRATEGIES["mig.log.CheckpointManifest"], st.text(max_size=12) | st.just("4" * 5000),
       st.text(max_size=12))
@example(sample("mig.log.CheckpointManifest"), "4" * 5000, "6.1")   # int() > 4300 digits
@example({**sample("mig.log.CheckpointManifest"), "criu_version": "4" * 5000}, "4.0", "6.1")
@example({**sample("mig.log.CheckpointManifest"), "criu_version": "4\u00b2"}, "4.0", "6.1")
def test_compatible_with_any_manifest(manifest: dict[str, Any], criu: str,
                                      kernel: str) -> None:
    why = compatible(manifest, criu, kernel)
    assert why is None or ("\n" not in why and len(why) < 300)


@fuzz(300)
@given(st.text(max_size=30))
@example("cid/abc")    # ValueError in the tombstone handler of _read_chunks
@example("cid/\u00b2")
@example("cid/" + "9" * 5000)
def test_chunk_index_of_any_key(key: str) -> None:
    index = chunk_index(key)
    assert index is None or int(key.rpartition("/")[2]) == index


def _archive() -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        for name, data in [("images/core-1.img", b"core" * 40), ("work/state/db", b"db" * 90),
                           ("run/1.ring", b"\0" * 300)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _raw_tar() -> bytes:
    return gzip.decompress(_archive())


ARCHIVE = _archive()


@fuzz(120)
@given(mutated(ARCHIVE, keep_header=False)
       | mutated(_raw_tar(), keep_header=False).map(lambda t: gzip.compress(t, mtime=0)))
@example(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03\xcb\xccMLO-\xd6O\xce/J\xd55\xd4\xcb"
         b"\xccMg\xa0>0\x00\x023\x13\x130\r\x04\xe8\xb4\x81\x91\t\x82\r\x1674077bP0`"
         b"\xa0\x03(-.I,\x02Z\xcf02\x01\x00\x08K\xcd\x04\x00\x02\x00\x00")  # ReadError
def test_unpack_of_a_damaged_archive(tmp_path_factory: pytest.TempPathFactory,
                                     data: bytes) -> None:
    base = tmp_path_factory.mktemp("unpack")
    try:
        unpack(data, base / "images", base / "work", base / "run")
    except CheckpointError as exc:
        one_line(exc)


# -- the rings: Python's reader and the C encoder agree, and both refuse corrupt records ---------


CAPACITY = 1 << 16


@st.composite
def ring_bytes(draw: st.DrawFn) -> tuple[int, int, bytes]:
    """(tail, head, data area) of a ring holding valid records, then damaged."""
    calls = draw(st.lists(st.builds(
        RawCall, kind=st.integers(0, 60), flags=st.sampled_from([0, 2]),
        tid=st.integers(0, 5), err=st.integers(-5, 200), seq=st.integers(0, 2**40),
        result=st.integers(-(2**63), 2**63 - 1), args=st.tuples(*[st.integers(-9, 9)] * 4),
        wall_ns=st.integers(0, 2**62), out_len=st.integers(0, 99),
        out_hash=st.integers(0, 2**64 - 1), payload=st.binary(max_size=64)), max_size=6))
    start = draw(st.integers(0, CAPACITY // 8 - 1)) * 8
    data = bytearray(CAPACITY)
    pos = start
    for call in calls:
        blob = call.pack()
        room = CAPACITY - pos % CAPACITY
        if room < len(blob):
            struct.pack_into("<IHH", data, pos % CAPACITY, room, 0, 1)
            pos += room
        data[pos % CAPACITY:pos % CAPACITY + len(blob)] = blob
        pos += len(blob)
    for _ in range(draw(st.integers(0, 3))):
        at = (start + draw(st.integers(0, max(0, pos - start + 8)))) % CAPACITY
        width = draw(st.sampled_from([1, 2, 4]))
        value = draw(st.integers(0, 2 ** (8 * width) - 1) | st.sampled_from([0, 1, 8, 96]))
        data[at:at + width] = value.to_bytes(width, "little")[: CAPACITY - at]
    head = pos + draw(st.sampled_from([0, 0, 0, 8, -8, 4096]))
    return start, max(start, head), bytes(data)


def _python_reads(ring: Ring, tail: int, head: int) -> tuple[list[RawCall], str | None]:
    out = []
    while tail < head:
        pos = tail & (CAPACITY - 1)
        try:
            call, length = parse_record(ring.data, pos, min(head - tail, CAPACITY - pos))
        except RingError as exc:
            one_line(exc)
            return out, str(exc)
        if call is not None:
            out.append(call)
        tail += length
    return out, None


@fuzz(250)
@given(ring_bytes())
@example((CAPACITY - 48, CAPACITY + 96, b"\0" * (CAPACITY - 48) + struct.pack("<I", 96) * 12))
@example((0, 96, RawCall(1, 0, 1, 0, 1 << 63, 0, (0,) * 4, 0, 0, 0, b"").pack()
           + bytes(CAPACITY - 96)))   # seq 2^63: the encoder wrote it as a negative long
def test_ring_records_python_and_c_agree(tmp_path_factory: pytest.TempPathFactory,
                                         ring_state: tuple[int, int, bytes]) -> None:
    tail, head, data = ring_state
    ring = new_ring(tmp_path_factory.mktemp("ring") / "1.ring", capacity=CAPACITY)
    ring.data[:] = data
    expected, problem = _python_reads(ring, tail, head)
    encoder = BatchEncoder(limit=1 << 20)
    got: list[int] = []
    pos, failed = tail, None
    while pos < head:
        try:
            batch, nxt = encoder.encode(ring, pos, head, "shop", 1, "1", 0, 0)
        except MigError as exc:
            one_line(exc)
            failed = exc
            break
        if batch is not None:
            got += [c["seq"] for c in CODEC.decode(batch.value)[1]["calls"]]
        assert nxt > pos
        pos = nxt
    assert got == [c.seq for c in expected]
    assert (failed is None) == (problem is None), (failed, problem)
    ring.close()


# -- the C record readers under AddressSanitizer and UBSan (tests/fuzz/ring_fuzz.c) ---------------


FUZZ_DIR = Path(__file__).parent / "fuzz"
RING_FUZZ_ITERATIONS = 700_000


@pytest.fixture(scope="module")
def ring_fuzz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    build = tmp_path_factory.mktemp("ring_fuzz")
    proc = subprocess.run(["make", "-s", "-C", str(FUZZ_DIR), f"BUILD={build}",
                           f"{build}/ring_fuzz"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (
        "cannot build tests/fuzz/ring_fuzz.c with -fsanitize=address,undefined: gcc needs"
        " its sanitizer runtimes (Debian: libasan8 and libubsan1, installed with gcc)\n"
        + proc.stderr)
    return build / "ring_fuzz"


def _run_fuzzer(args: list[str]) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "ASAN_OPTIONS": "detect_leaks=1",
                               "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_ring_records_mutational_loop(ring_fuzz: Path) -> None:
    started = time.monotonic()
    out = _run_fuzzer([str(ring_fuzz), "-n", str(RING_FUZZ_ITERATIONS), "-s", "1"])
    counts = re.match(r"ring_fuzz: (\d+) inputs, (\d+) refused as corrupt, (\d+) records"
                      r" encoded, (\d+) replayed", out)
    assert counts, out
    inputs, refused, encoded, replayed = map(int, counts.groups())
    assert inputs == RING_FUZZ_ITERATIONS
    # the loop reaches both sides: valid records taken, corrupt ones refused
    assert refused > inputs // 10 and encoded > inputs // 10 and replayed > inputs // 10
    assert time.monotonic() - started < 60


@st.composite
def ring_file(draw: st.DrawFn) -> bytes:
    """One input of ring_fuzz: a small ring of valid records (Python's packing), damaged."""
    cap_log2 = draw(st.integers(6, 12))
    cap = 1 << cap_log2
    start = draw(st.integers(0, 2**40)) * 8
    data = bytearray(cap)
    pos = start
    for plen in draw(st.lists(st.integers(0, 80), max_size=6)):
        blob = RawCall(draw(st.integers(0, 60)), draw(st.sampled_from([0, 2])), 1, 0,
                       pos, -1, (1, 2, 3, 4), 5, 6, 7, b"p" * plen).pack()
        room = cap - pos % cap
        if pos - start + len(blob) + (room if room < len(blob) else 0) > cap:
            break
        if room < len(blob):
            struct.pack_into("<IHH", data, pos % cap, room, 0, 1)
            pos += room
        data[pos % cap:pos % cap + len(blob)] = blob
        pos += len(blob)
    raw = draw(mutated(bytes(data), keep_header=False))[:cap]
    span = pos - start + draw(st.sampled_from([0, 0, 8, -8, 1 << 20]))
    head = struct.pack("<QQII", start, span % 2**64, draw(st.sampled_from([1 << 16, 100, 0])),
                       cap_log2)
    return head + raw


@fuzz(8)
@given(st.lists(ring_file(), min_size=40, max_size=40))
def test_ring_records_from_generated_files(ring_fuzz: Path, inputs: list[bytes]) -> None:
    folder = Path(tempfile.mkdtemp(prefix="ring-inputs-"))
    try:
        paths = []
        for i, data in enumerate(inputs):
            paths.append(folder / f"{i}.bin")
            paths[-1].write_bytes(data)
        out = _run_fuzzer([str(ring_fuzz), *map(str, paths)])
        assert out.startswith(f"ring_fuzz: {len(inputs)} inputs, "), out
    finally:
        shutil.rmtree(folder)


def _ring_input(start: int, span: int, cap_log2: int, data: bytes) -> bytes:
    return struct.pack("<QQII", start, span, 1 << 16, cap_log2) + data


RING_REGRESSIONS = {
    # the encoder stepped over padding for 2^40 bytes (the head said so): a hang
    "pads-for-ever": _ring_input(0, 1 << 40, 8, struct.pack("<IHH", 8, 0, 1) * 32),
    # a record header 48 bytes before the end of the data area: payload_len read past it
    "crosses-the-end": _ring_input(208, 144, 8, bytes(208) + struct.pack("<I", 96) * 12),
    # a position that is not a multiple of 8: misaligned loads (UBSan)
    "misaligned": _ring_input(4, 96, 8, RawCall(1, 0, 1, 0, 0, 0, (0,) * 4, 0, 0, 0,
                                                b"").pack()),
    # seq 2^63: encoded as a negative long
    "seq-over-long": _ring_input(0, 96, 8, RawCall(1, 0, 1, 0, 1 << 63, 0, (0,) * 4, 0, 0, 0,
                                                   b"").pack()),
    # thread id 2^31: encoded into the Avro int field tid, which it does not fit
    "tid-over-int": _ring_input(0, 96, 8, RawCall(1, 0, 1 << 31, 0, 0, 0, (0,) * 4, 0, 0, 0,
                                                  b"").pack()),
}


def test_ring_records_regressions(ring_fuzz: Path, tmp_path: Path) -> None:
    paths = []
    for name, data in RING_REGRESSIONS.items():
        paths.append(tmp_path / f"{name}.bin")
        paths[-1].write_bytes(data)
    out = _run_fuzzer([str(ring_fuzz), *map(str, paths)])
    assert out.startswith(f"ring_fuzz: {len(paths)} inputs, {len(paths)} refused as corrupt,"
                          " 0 records encoded, 0 replayed"), out


def test_an_int_out_of_range_inside_a_union_is_refused() -> None:
    manifest = {**sample("mig.log.CheckpointManifest"),
                "chunks_from": {"partition": 5, "offset": 1}}
    value = CODEC.encode("mig.log.CheckpointManifest", manifest)
    assert value.endswith(b"\x02\x0a\x02")  # union branch 1, partition 5, offset 1
    bad = value[:-3] + b"\x02" + zigzag(2**31 + 5) + b"\x02"
    with pytest.raises(DecodeError, match="chunks_from: partition: int value 2147483653"):
        CODEC.decode(bad)


@pytest.mark.parametrize(("record", "why"), [
    # a PAD record of length 0: the shim's reader spun on it for ever
    (struct.pack("<IHH", 0, 0, 1), "record length is not a multiple of 8"),
    # a payload of 1 MiB in a 96-byte record: the shim handed it on (read() copies it out)
    (RawCall(5, 0, 1, 0, 0, 16, (0,) * 4, 0, 0, 0, b"").pack()[:88]
     + struct.pack("<II", 1 << 20, 0), "payload overruns the record"),
])
def test_the_shim_stops_a_replay_at_a_corrupt_record(tmp_path: Path, record: bytes,
                                                    why: str) -> None:
    from mig.paths import shim_library

    env = dict(os.environ, LD_PRELOAD=str(shim_library()), MIG_MODE="replay",
               MIG_RUN_DIR=str(tmp_path), MIG_BARRIER="async")
    # CPython asks getrandom for its hash seed first: that call waits for its record
    proc = subprocess.Popen([sys.executable, "-c", "pass"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                ring = Ring(tmp_path / "1.ring")
                break
            except (RingError, OSError):
                assert time.monotonic() < deadline, "the shim made no ring"
                time.sleep(0.02)
        ring.data[:len(record)] = record
        seek(ring, 0)
        struct.pack_into("<Q", ring.mm, 96, 96)  # head: one record published
        ring.wake_reader()
        assert proc.wait(timeout=10) == 87
        assert ring.divergence() == (0, f"corrupt ring record at position 0: {why}")
        ring.close()
    finally:
        proc.kill()
        proc.wait()


def test_the_shim_refuses_recorded_input_longer_than_the_buffer(tmp_path: Path) -> None:
    """A READ record (checked and well formed) whose payload is longer than the buffer the
    app passed: copying it would overrun the app's memory, so the shim reports a divergence
    before copying anything."""
    from mig.paths import shim_library
    from mig.ring.kinds import KIND_NUMBERS

    src = tmp_path / "reader.c"
    src.write_text("#include <unistd.h>\nint main(void) { char b[4];"
                   " return (int)read(0, b, sizeof b); }\n")
    exe = tmp_path / "reader"
    subprocess.run(["gcc", "-O0", "-o", str(exe), str(src)], check=True)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = dict(os.environ, LD_PRELOAD=str(shim_library()), MIG_MODE="replay",
               MIG_RUN_DIR=str(run_dir), MIG_BARRIER="async")
    r, w = os.pipe()  # stdin a pipe: read(0) is a recorded call
    proc = subprocess.Popen([str(exe)], env=env, stdin=r, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    os.close(r)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                ring = Ring(run_dir / "1.ring")
                break
            except (RingError, OSError):
                assert time.monotonic() < deadline, "the shim made no ring"
                time.sleep(0.02)
        record = RawCall(KIND_NUMBERS["READ"], 0, 0, 0, 0, 64, (0, 4, 0, 0), 0, 0, 0,
                         b"x" * 64).pack()
        ring.data[:len(record)] = record
        seek(ring, 0)
        struct.pack_into("<Q", ring.mm, 96, len(record))  # head: one record published
        ring.wake_reader()
        assert proc.wait(timeout=10) == 87
        seq, text = ring.divergence()
        assert text == ("recorded input longer than the app's buffer: recorded READ 64,"
                        " replay made READ 4 in thread 0"), text
        ring.close()
    finally:
        os.close(w)
        proc.kill()
        proc.wait()
