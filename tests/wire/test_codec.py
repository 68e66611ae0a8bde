"""Tests of mig/wire/codec.py: wire format, fingerprints, round trips, decode's one error type."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from fastavro.schema import load_schema, to_parsing_canonical_form
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mig.errors import DecodeError, SchemaError
from mig.paths import schema_dir
from mig.wire.codec import MAGIC, SCHEMA_HEADER, Codec
from tests.avro_strategies import records
from tests.samples import ALL_TYPES, PART_TYPES, sample

CODEC = Codec.default()
FUZZ = settings(
    max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow]
)
STRATEGIES = {name: records(CODEC.schema(name)) for name in CODEC.names}


# -- the Avro specification's algorithms, written out independently of fastavro -----------

_EMPTY64 = 0xC15D213AA4D7A795
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def _fp_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY64 & -(fp & 1))
        table.append(fp)
    return table


_FP_TABLE = _fp_table()


def crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO (Rabin) as the spec's "Schema Fingerprints" section gives it."""
    fp = _EMPTY64
    for byte in data:
        fp = (fp >> 8) ^ _FP_TABLE[(fp ^ byte) & 0xFF]
    return fp


def canonical_form(schema: Any, namespace: str = "", seen: set[str] | None = None) -> str:
    """Parsing Canonical Form per the spec ([PRIMITIVES] [FULLNAMES] [STRIP] [ORDER] ...)."""
    seen = set() if seen is None else seen
    if isinstance(schema, str):
        full = schema if schema in _PRIMITIVES or "." in schema or not namespace else (
            f"{namespace}.{schema}"
        )
        return json.dumps(full)
    if isinstance(schema, list):
        return "[" + ",".join(canonical_form(s, namespace, seen) for s in schema) + "]"
    kind = schema["type"]
    if kind in _PRIMITIVES:
        return json.dumps(kind)
    if kind in ("array", "map"):
        inner = "items" if kind == "array" else "values"
        return f'{{"type":"{kind}","{inner}":{canonical_form(schema[inner], namespace, seen)}}}'
    name = schema["name"]
    if "." not in name and (schema.get("namespace") or namespace):
        name = f"{schema.get('namespace') or namespace}.{name}"
    if name in seen:
        return json.dumps(name)
    seen.add(name)
    inner_ns = name.rpartition(".")[0]
    if kind == "enum":
        symbols = json.dumps(schema["symbols"], separators=(",", ":"))
        return f'{{"name":"{name}","type":"enum","symbols":{symbols}}}'
    if kind == "fixed":
        return f'{{"name":"{name}","type":"fixed","size":{schema["size"]}}}'
    fields = ",".join(
        f'{{"name":"{f["name"]}","type":{canonical_form(f["type"], inner_ns, seen)}}}'
        for f in schema["fields"]
    )
    return f'{{"name":"{name}","type":"record","fields":[{fields}]}}'


def _field(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


def _record(name: str, *fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": list(fields)}


def _write_schema(folder: Path, schema: dict[str, Any]) -> None:
    name = schema["name"]
    if "namespace" in schema:
        name = f"{schema['namespace']}.{name}"
    (folder / f"{name}.avsc").write_text(json.dumps(schema))


def _decodes_or_refuses(data: bytes) -> None:
    """decode either returns a known record or raises DecodeError, never anything else."""
    try:
        name, record = CODEC.decode(data)
    except DecodeError as exc:
        assert exc.reason and "\n" not in exc.reason
        return
    assert name in CODEC.names
    assert isinstance(record, dict)


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# -- schemas and fingerprints ---------------------------------------------------------------


def test_samples_cover_every_top_level_type() -> None:
    assert set(ALL_TYPES) | set(PART_TYPES) == set(CODEC.names)
    assert not set(ALL_TYPES) & set(PART_TYPES)
    assert "mig.log.CallBatch" in CODEC.names
    assert "mig.log.Role" not in CODEC.names  # an enum, not a record


def test_default_codec_is_loaded_once() -> None:
    assert Codec.default() is Codec.default()


def test_crc64_avro_matches_the_spec_test_vectors() -> None:
    # share/test/data/schema-tests.txt of apache/avro
    assert crc64_avro(b'"int"') == 8247732601305521295
    assert crc64_avro(b'"null"') == 7195948357588979594


def test_fingerprint_of_a_spec_test_schema(tmp_path: Path) -> None:
    _write_schema(tmp_path, _record("foo"))
    expected = (-4824392279771201922).to_bytes(8, "little", signed=True)
    assert Codec(tmp_path).fingerprint("foo") == expected


@pytest.mark.parametrize("name", CODEC.names)
def test_fingerprint_is_crc64_of_the_expanded_canonical_form(name: str) -> None:
    form = canonical_form(CODEC.schema(name))
    assert CODEC.fingerprint(name) == crc64_avro(form.encode()).to_bytes(8, "little")


@pytest.mark.parametrize("name", CODEC.names)
def test_references_resolve_as_fastavro_load_schema_does(name: str) -> None:
    loaded = load_schema(str(schema_dir() / f"{name}.avsc"), _write_hint=False)
    form = to_parsing_canonical_form(loaded)
    assert crc64_avro(form.encode()).to_bytes(8, "little") == CODEC.fingerprint(name)


def test_shared_types_are_inlined_once_then_referenced() -> None:
    manifest = CODEC.schema("mig.log.CheckpointManifest")
    fields = {f["name"]: f["type"] for f in manifest["fields"]}
    assert fields["barrier_offsets"]["items"]["type"] == "record"
    assert fields["identity"]["name"] == "mig.log.AppIdentity"
    form = canonical_form(manifest)
    assert form.count('"name":"mig.log.PartitionOffset","type":"record"') == 1
    assert form.count('"name":"mig.log.AppIdentity","type":"record"') == 1


def test_schema_returns_a_copy() -> None:
    CODEC.schema("mig.log.Heartbeat")["fields"].clear()
    assert CODEC.schema("mig.log.Heartbeat")["fields"]


# -- encoding ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CODEC.names)
def test_sample_round_trip(name: str) -> None:
    data = CODEC.encode(name, sample(name))
    assert data[:2] == MAGIC
    assert data[2:10] == CODEC.fingerprint(name)
    assert CODEC.decode(data) == (name, sample(name))
    assert CODEC.decode_message(data, CODEC.headers(name)) == (name, sample(name))


@FUZZ
@given(st.data())
def test_generated_round_trip(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(CODEC.names))
    record = data.draw(STRATEGIES[name])
    assert CODEC.decode(CODEC.encode(name, record)) == (name, record)


KITCHEN = {
    **_record(
        "Kitchen",
        _field("b", "boolean"),
        _field("f", "float"),
        _field("d", "double"),
        _field("fx", {"type": "fixed", "name": "Four", "size": 4}),
        _field("m", {"type": "map", "values": ["null", "long"]}),
        _field("e", {"type": "enum", "name": "Color", "symbols": ["RED", "BLUE"]}),
        _field("u", ["null", _record("A", _field("x", "int")), _record("B", _field("y", "bytes"))]),
        _field("again", {"type": "array", "items": "Color"}),
        _field("next", ["null", "Kitchen"], default=None),
    ),
    "namespace": "test.k",
}


def test_strategies_cover_every_kind_of_schema(tmp_path: Path) -> None:
    _write_schema(tmp_path, KITCHEN)
    codec = Codec(tmp_path)

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(records(codec.schema("test.k.Kitchen")))
    def round_trip(record: dict[str, Any]) -> None:
        assert codec.decode(codec.encode("test.k.Kitchen", record)) == ("test.k.Kitchen", record)

    round_trip()


def test_headers_name_the_schema() -> None:
    assert CODEC.headers("mig.log.Barrier") == [(SCHEMA_HEADER, b"mig.log.Barrier")]


def test_encode_unknown_name() -> None:
    with pytest.raises(SchemaError, match="no record schema named 'mig.log.Nope'"):
        CODEC.encode("mig.log.Nope", {})
    with pytest.raises(SchemaError):
        CODEC.headers("mig.log.Role")


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"epoch": "3"}, "mig.log.Heartbeat.epoch is '3', expected long"),
        ({"epoch": True}, "mig.log.Heartbeat.epoch is True, expected long"),
        ({"epoch": 1.5}, "mig.log.Heartbeat.epoch is 1.5, expected long"),
        ({"role": "BOSS"}, "mig.log.Heartbeat.role is 'BOSS', expected enum mig.log.Role"),
        ({"epoch": None}, "expected long"),
        ({"extra": 1}, "more fields than the schema specifies: extra"),
    ],
)
def test_encode_refuses_a_record_that_does_not_fit(change: dict[str, Any], why: str) -> None:
    record = {**sample("mig.log.Heartbeat"), **change}
    with pytest.raises(SchemaError, match="record does not fit mig.log.Heartbeat: ") as info:
        CODEC.encode("mig.log.Heartbeat", record)
    assert why in str(info.value)


def test_encode_refuses_out_of_range_int_and_non_records() -> None:
    with pytest.raises(SchemaError, match="PartitionOffset.partition is 4294967296"):
        CODEC.encode("mig.log.PartitionOffset", {"partition": 2**32, "offset": 0})
    with pytest.raises(SchemaError, match="record does not fit"):
        CODEC.encode("mig.log.PartitionOffset", [1, 2])  # type: ignore[arg-type]


def test_encode_without_validation_still_refuses_missing_and_extra_fields() -> None:
    record = sample("mig.log.Heartbeat")
    del record["epoch"]
    with pytest.raises(SchemaError, match="epoch"):
        CODEC.encode("mig.log.Heartbeat", record, validate=False)
    with pytest.raises(SchemaError, match="extra"):
        record = {**sample("mig.log.Heartbeat"), "extra": 1}
        CODEC.encode("mig.log.Heartbeat", record, validate=False)


def test_missing_nullable_fields_take_their_default() -> None:
    record = sample("mig.log.Migrate")
    del record["to_member"]
    assert CODEC.decode(CODEC.encode("mig.log.Migrate", record))[1]["to_member"] is None


# -- decode errors ------------------------------------------------------------------------------


def _heartbeat() -> bytes:
    return CODEC.encode("mig.log.Heartbeat", sample("mig.log.Heartbeat"))


def _header(name: str) -> bytes:
    return MAGIC + CODEC.fingerprint(name)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (None, "empty value"),
        (b"", "empty value"),
        ("text", "value is str, not bytes"),
        (b"\xc3\x01abc", "too short for a single-object header (5 bytes)"),
        (b"\xc3", "too short for a single-object header (1 bytes)"),
        (b'{"app": "shop"}', "bad magic 0x7b22 (not Avro single-object encoding)"),
        (
            MAGIC + bytes.fromhex("0123456789abcdef") + b"\x00",
            "unknown schema fingerprint 0123456789abcdef",
        ),
        (_heartbeat() + b"abc", "3 trailing bytes after mig.log.Heartbeat"),
        (_header("mig.log.Heartbeat"), "body does not decode as mig.log.Heartbeat: ends early"),
        (_heartbeat()[:-1], "body does not decode as mig.log.Heartbeat: ends early"),
        (
            _header("mig.log.Barrier") + b"\x02a\x02\x02b\x02\x40",  # reason index 32
            "body does not decode as mig.log.Barrier: enum or union index out of range",
        ),
        (
            _header("mig.log.Migrate") + b"\x04\xff\xfe",
            "body does not decode as mig.log.Migrate: a string is not valid UTF-8",
        ),
    ],
)
def test_decode_error_reasons(data: Any, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        CODEC.decode(data)
    assert info.value.reason.startswith(reason)
    assert str(info.value) == info.value.reason


def test_decode_accepts_bytearray_and_memoryview() -> None:
    data = _heartbeat()
    assert CODEC.decode(bytearray(data))[0] == "mig.log.Heartbeat"
    assert CODEC.decode(memoryview(data))[0] == "mig.log.Heartbeat"


@pytest.mark.parametrize("huge", [2**60, 2**62, -(2**60)])
def test_huge_declared_lengths_fail_fast(huge: int) -> None:
    string_body = _header("mig.log.CallBatch") + _zigzag(huge) + b"shop"
    # app "shop", epoch 3, lpid "1", batch_seq, first_seq, sent_ns 0, then the calls count
    fields = b"\x08shop" + b"\x06" + b"\x021" + b"\x00" * 3
    array_body = _header("mig.log.CallBatch") + fields + _zigzag(huge) + b"\x02"
    for data in (string_body, array_body):
        started = time.monotonic()
        with pytest.raises(DecodeError, match="body does not decode as mig.log.CallBatch"):
            CODEC.decode(data)
        assert time.monotonic() - started < 1.0


def test_decode_message_checks_the_header() -> None:
    data = _heartbeat()
    assert CODEC.decode_message(data, None)[0] == "mig.log.Heartbeat"
    assert CODEC.decode_message(data, [])[0] == "mig.log.Heartbeat"
    assert CODEC.decode_message(data, [("other", None), (SCHEMA_HEADER, b"mig.log.Heartbeat")])[0]
    assert CODEC.decode_message(data, {SCHEMA_HEADER: b"mig.log.Heartbeat"})[0]
    with pytest.raises(DecodeError) as info:
        CODEC.decode_message(data, CODEC.headers("mig.log.MemberStatus"))
    assert info.value.reason == (
        "header says mig.log.MemberStatus but fingerprint is mig.log.Heartbeat"
    )


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([(SCHEMA_HEADER, b"\xff")], "header mig.schema is not UTF-8 text"),
        ([(SCHEMA_HEADER, None)], "header mig.schema is not UTF-8 text"),
        ([(SCHEMA_HEADER, b"a"), (SCHEMA_HEADER, b"b")], "conflicting mig.schema headers"),
        (42, "malformed Kafka headers"),
        ([("only-a-key",)], "malformed Kafka headers"),
    ],
)
def test_decode_message_bad_headers(headers: Any, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        CODEC.decode_message(_heartbeat(), headers)
    assert info.value.reason == reason


# -- fuzz: decode raises DecodeError or returns a record, nothing else -----------------------


@FUZZ
@given(st.binary(max_size=64))
def test_fuzz_random_bytes(data: bytes) -> None:
    _decodes_or_refuses(data)


@FUZZ
@given(st.sampled_from(CODEC.names), st.binary(max_size=200))
def test_fuzz_random_body_after_a_valid_header(name: str, body: bytes) -> None:
    _decodes_or_refuses(_header(name) + body)


@FUZZ
@given(st.data())
def test_fuzz_truncated_and_flipped_encodings(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(CODEC.names))
    encoded = CODEC.encode(name, data.draw(STRATEGIES[name]))
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(DecodeError):
        CODEC.decode(encoded[:cut])
    at = data.draw(st.integers(0, len(encoded) - 1))
    flipped = bytearray(encoded)
    flipped[at] ^= data.draw(st.integers(1, 255))
    _decodes_or_refuses(bytes(flipped))


@pytest.mark.parametrize("name", CODEC.names)
def test_every_truncation_and_byte_flip_of_the_samples(name: str) -> None:
    encoded = CODEC.encode(name, sample(name))
    for cut in range(len(encoded)):
        with pytest.raises(DecodeError):
            CODEC.decode(encoded[:cut])
    for at in range(len(encoded)):
        for mask in (0x01, 0x80, 0xFF):
            flipped = bytearray(encoded)
            flipped[at] ^= mask
            _decodes_or_refuses(bytes(flipped))


# -- loading a schema folder ------------------------------------------------------------------


def test_missing_folder_is_a_schema_error(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="does not exist"):
        Codec(tmp_path / "nope")
    with pytest.raises(SchemaError, match="no .avsc files"):
        Codec(tmp_path)


def test_file_must_be_named_after_its_type(tmp_path: Path) -> None:
    (tmp_path / "wrong.avsc").write_text(json.dumps(_record("foo")))
    with pytest.raises(SchemaError, match="wrong.avsc: defines foo, so must be named foo.avsc"):
        Codec(tmp_path)


def test_bad_json_and_unknown_references(tmp_path: Path) -> None:
    (tmp_path / "a.b.avsc").write_text("{not json")
    with pytest.raises(SchemaError, match="a.b.avsc: not readable JSON"):
        Codec(tmp_path)
    _write_schema(tmp_path, {**_record("b", _field("x", "Missing")), "namespace": "a"})
    with pytest.raises(SchemaError, match="a.b.avsc: unknown type a.Missing"):
        Codec(tmp_path)


def test_one_name_means_one_type(tmp_path: Path) -> None:
    color = {"type": "enum", "name": "Color", "symbols": ["RED"]}
    _write_schema(tmp_path, _record("n.A", _field("c", color)))
    _write_schema(tmp_path, _record("n.B", _field("c", {**color, "symbols": ["BLUE"]})))
    with pytest.raises(SchemaError, match="n.Color is defined twice, differently"):
        Codec(tmp_path)


def test_arrays_of_zero_byte_items_are_refused(tmp_path: Path) -> None:
    _write_schema(tmp_path, _record("z", _field("xs", {"type": "array", "items": _record("E")})))
    with pytest.raises(SchemaError, match="zero bytes"):
        Codec(tmp_path)
