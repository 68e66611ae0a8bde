"""The schemas in avro/ are well formed and evolve: old readers read new writers and back."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from fastavro.schema import load_schema

from mig.errors import DecodeError, SchemaError
from mig.paths import schema_dir
from mig.wire.codec import MAGIC, Codec
from tests.samples import sample

HEARTBEAT = "mig.log.Heartbeat"
UPTIME = {"name": "uptime_ms", "type": "long", "default": 0, "doc": "Member uptime (v2)."}


def _folder(tmp_path: Path, schema: dict[str, Any]) -> Path:
    """A copy of avro/ with the file of ``schema``'s type replaced by it."""
    folder = tmp_path / "avro"
    shutil.copytree(schema_dir(), folder)
    name = f"{schema['namespace']}.{schema['name']}"
    (folder / f"{name}.avsc").write_text(json.dumps(schema))
    return folder


def _raw(name: str) -> dict[str, Any]:
    return json.loads((schema_dir() / f"{name}.avsc").read_text())


def _heartbeat_with(field: dict[str, Any]) -> dict[str, Any]:
    schema = _raw(HEARTBEAT)
    schema["fields"].append(field)
    return schema


def _role_with(symbol: str) -> dict[str, Any]:
    schema = _raw("mig.log.Role")
    schema["symbols"].insert(-1, symbol)
    return schema


# -- the schema files -------------------------------------------------------------------------


def _walk_named(schema: Any) -> list[dict[str, Any]]:
    """Every record, enum and fixed defined in a schema, nested ones included."""
    if isinstance(schema, list):
        return [n for branch in schema for n in _walk_named(branch)]
    if not isinstance(schema, dict):
        return []
    kind = schema["type"]
    if kind == "array":
        return _walk_named(schema["items"])
    if kind == "map":
        return _walk_named(schema["values"])
    found = [schema] if kind in ("record", "enum", "fixed") else []
    for field in schema.get("fields", []):
        found += _walk_named(field["type"])
    return found


SCHEMA_FILES = sorted(schema_dir().glob("*.avsc"))


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_schema_file_is_well_formed(path: Path) -> None:
    schema = json.loads(path.read_text())
    assert schema["namespace"] == "mig.log"
    assert path.name == f"{schema['namespace']}.{schema['name']}.avsc"
    assert load_schema(str(path), _write_hint=False)  # fastavro resolves its references too
    for named in _walk_named(schema):
        assert named.get("doc"), f"{named['name']} has no doc"
        if named["type"] == "enum":
            assert named.get("default") in named["symbols"], f"{named['name']} needs a default"
        for field in named.get("fields", []):
            assert field.get("doc"), f"{named['name']}.{field['name']} has no doc"
            if isinstance(field["type"], list) and "null" in field["type"]:
                assert "default" in field and field["default"] is None, field["name"]


def test_every_schema_loads_in_the_codec() -> None:
    codec = Codec(schema_dir())
    assert len(codec.names) == len([p for p in SCHEMA_FILES if _raw(p.stem)["type"] == "record"])


def test_call_kind_has_every_symbol_the_shim_needs() -> None:
    batch = Codec(schema_dir()).schema("mig.log.CallBatch")
    call = next(f for f in batch["fields"] if f["name"] == "calls")["type"]["items"]
    kind = next(f for f in call["fields"] if f["name"] == "kind")["type"]
    for symbol in ("CLOCK_GETTIME", "GETRANDOM", "ACCEPT", "EPOLL_WAIT", "FORK", "PROC_READ"):
        assert symbol in kind["symbols"]
    assert kind["symbols"][-1] == kind["default"] == "UNKNOWN"


# -- a new field with a default -----------------------------------------------------------------


def test_old_reader_reads_a_record_with_a_new_field(tmp_path: Path) -> None:
    new = Codec(_folder(tmp_path, _heartbeat_with(UPTIME)))
    old = Codec(schema_dir())
    data = new.encode(HEARTBEAT, {**sample(HEARTBEAT), "uptime_ms": 5_000})
    with pytest.raises(DecodeError, match="unknown schema fingerprint"):
        old.decode(data)
    assert old.register_writer(new.schema(HEARTBEAT)) == new.fingerprint(HEARTBEAT)
    assert old.decode(data) == (HEARTBEAT, sample(HEARTBEAT))


def test_new_reader_fills_the_default_for_an_old_record(tmp_path: Path) -> None:
    new = Codec(_folder(tmp_path, _heartbeat_with(UPTIME)))
    old = Codec(schema_dir())
    data = old.encode(HEARTBEAT, sample(HEARTBEAT))
    new.register_writer(json.dumps(old.schema(HEARTBEAT)))  # JSON text works too
    assert new.decode(data) == (HEARTBEAT, {**sample(HEARTBEAT), "uptime_ms": 0})
    assert new.decode_message(data, old.headers(HEARTBEAT))[0] == HEARTBEAT


# -- a new enum symbol -----------------------------------------------------------------------------


def test_old_reader_reads_a_new_enum_symbol_as_the_default(tmp_path: Path) -> None:
    new = Codec(_folder(tmp_path, _role_with("OBSERVER")))
    old = Codec(schema_dir())
    assert new.fingerprint(HEARTBEAT) != old.fingerprint(HEARTBEAT)
    data = new.encode(HEARTBEAT, {**sample(HEARTBEAT), "role": "OBSERVER"})
    old.register_writer(new.schema(HEARTBEAT))
    assert old.decode(data) == (HEARTBEAT, {**sample(HEARTBEAT), "role": "UNKNOWN"})


def test_new_reader_reads_old_enum_symbols(tmp_path: Path) -> None:
    new = Codec(_folder(tmp_path, _role_with("OBSERVER")))
    old = Codec(schema_dir())
    new.register_writer(old.schema(HEARTBEAT))
    for role in ("PRIMARY", "FENCED", "UNKNOWN"):
        data = old.encode(HEARTBEAT, {**sample(HEARTBEAT), "role": role})
        assert new.decode(data)[1]["role"] == role


# -- incompatible changes fail as DecodeError ---------------------------------------------------


def test_a_new_field_without_default_cannot_read_old_records(tmp_path: Path) -> None:
    no_default = {k: v for k, v in UPTIME.items() if k != "default"}
    new = Codec(_folder(tmp_path, _heartbeat_with(no_default)))
    old = Codec(schema_dir())
    new.register_writer(old.schema(HEARTBEAT))
    with pytest.raises(DecodeError) as info:
        new.decode(old.encode(HEARTBEAT, sample(HEARTBEAT)))
    assert info.value.reason.startswith(
        "body does not decode as mig.log.Heartbeat: writer schema is not compatible"
    )


def test_a_changed_field_type_fails_as_decode_error(tmp_path: Path) -> None:
    schema = _raw(HEARTBEAT)
    next(f for f in schema["fields"] if f["name"] == "epoch")["type"] = "string"
    new = Codec(_folder(tmp_path, schema))
    old = Codec(schema_dir())
    old.register_writer(new.schema(HEARTBEAT))
    with pytest.raises(DecodeError, match="body does not decode as mig.log.Heartbeat"):
        old.decode(new.encode(HEARTBEAT, {**sample(HEARTBEAT), "epoch": "three"}))


# -- register_writer ------------------------------------------------------------------------------


def test_registering_the_current_schema_changes_nothing() -> None:
    codec = Codec(schema_dir())
    assert codec.register_writer(codec.schema(HEARTBEAT)) == codec.fingerprint(HEARTBEAT)
    data = codec.encode(HEARTBEAT, sample(HEARTBEAT))
    assert codec.decode(data) == (HEARTBEAT, sample(HEARTBEAT))


def test_writer_may_reference_shared_types_by_name() -> None:
    codec = Codec(schema_dir())
    v2 = _heartbeat_with(UPTIME)  # still says "type": "mig.log.Role"
    assert codec.register_writer(v2) != codec.fingerprint(HEARTBEAT)


def test_a_writer_with_no_current_schema_decodes_as_written() -> None:
    codec = Codec(schema_dir())
    future = {
        "type": "record", "name": "Future", "namespace": "mig.log",
        "fields": [{"name": "app", "type": "string"}, {"name": "role", "type": "Role"}],
    }
    fingerprint = codec.register_writer(future)
    body = io.BytesIO()
    named: dict[str, Any] = {}
    parse_schema(_raw("mig.log.Role"), named)
    schemaless_writer(body, parse_schema(future, named), {"app": "shop", "role": "FENCED"})
    data = MAGIC + fingerprint + body.getvalue()
    assert codec.decode(data) == ("mig.log.Future", {"app": "shop", "role": "FENCED"})


BAD_DEFAULT = {"name": "a", "type": "int", "default": "z"}


@pytest.mark.parametrize(
    ("schema", "match"),
    [
        ("{not json", "writer schema is not JSON"),
        ('"int"', "top level must be a record"),
        ({"type": "enum", "name": "E", "symbols": ["A"]}, "top level must be a record"),
        ({"type": "record", "name": "x.R", "fields": [{"name": "a", "type": "x.Nope"}]},
         "unknown type x.Nope"),
        ({"type": "record", "name": "x.R", "fields": [{"name": "a"}]}, "missing 'type'"),
        (
            {"type": "record", "name": "x.R", "fields": [BAD_DEFAULT]},
            "invalid schema",
        ),
        (42, "not a dict or JSON text"),
    ],
)
def test_register_writer_refuses_bad_schemas(schema: Any, match: str) -> None:
    with pytest.raises(SchemaError, match=match):
        Codec(schema_dir()).register_writer(schema)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_call_batches_of_the_previous_version_still_decode(tmp_path: Path, version: str) -> None:
    """avro/history keeps CallBatch as it was before FSTAT and IOCTL (v1) and before LSEEK
    (v2): a log written by that mig decodes with today's codec (its kinds by name)."""
    history = schema_dir() / "history" / f"mig.log.CallBatch.{version}.avsc"
    folder = tmp_path / "old"
    shutil.copytree(schema_dir(), folder, ignore=shutil.ignore_patterns("history"))
    shutil.copy2(history, folder / "mig.log.CallBatch.avsc")
    old = Codec(folder)
    new = Codec(schema_dir())
    assert old.fingerprint("mig.log.CallBatch") != new.fingerprint("mig.log.CallBatch")
    record = sample("mig.log.CallBatch")
    name, decoded = new.decode(old.encode("mig.log.CallBatch", record))
    assert name == "mig.log.CallBatch" and decoded == record
