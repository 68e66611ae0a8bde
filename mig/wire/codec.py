"""Avro single-object encoding of every record mig writes to Kafka.

This module owns the conversion of records to bytes and back, and the writer versions it
knows; the schemas of ``avro/`` are loaded by mig/wire/schemas.py (reference resolution,
canonical forms, fingerprints).

Wire format (Avro specification, "Single object encoding"): ``C3 01``, then the 8-byte
little-endian CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form, then the
Avro binary body. The schema's full name also travels in the Kafka header ``mig.schema`` so
standard tools can find the schema without knowing the fingerprint.

``decode`` raises only ``DecodeError``, whatever the bytes; ``encode`` and schema loading
raise ``SchemaError``.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from fastavro.validation import validate as _fastavro_validate

from mig.errors import DecodeError, SchemaError
from mig.paths import schema_dir
from mig.wire.schemas import Compiled, compile_writer, load_folder, read_json, short

__all__ = ["SCHEMA_HEADER", "MAGIC", "Codec"]

SCHEMA_HEADER = "mig.schema"
MAGIC = b"\xc3\x01"

_HEADER_LEN = len(MAGIC) + 8
_NAMED = frozenset({"record", "error", "enum", "fixed"})

_Json = Any  # a JSON schema value: str, list or dict


@dataclass(frozen=True, slots=True)
class _Writer:
    """What decode needs for one fingerprint: the writer and the reader to resolve into."""

    name: str
    writer: Any
    reader: Any | None
    canonical: str
    ints: Any = None  # checks the decoded record's "int" values (None: it has none)


class Codec:
    """Encodes and decodes mig's records; knows the current schemas and extra writers."""

    @classmethod
    def default(cls) -> Codec:
        """The codec of the packaged schemas, loaded once per process."""
        global _default
        with _default_lock:
            if _default is None:
                _default = cls(schema_dir())
            return _default

    def __init__(self, schema_folder: Path) -> None:
        self._folder = Path(schema_folder)
        self._current: dict[str, Compiled] = load_folder(self._folder)
        self._writers: dict[bytes, _Writer] = {}
        for compiled in self._current.values():
            self._add_writer(compiled, reader=None)
        self.names: list[str] = sorted(self._current)
        # earlier versions of the schemas, so records written by an older mig still decode
        for old in sorted((self._folder / "history").glob("*.avsc")):
            try:
                self.register_writer(read_json(old))
            except SchemaError as exc:
                raise SchemaError(f"history/{old.name}: {exc}") from exc

    # -- schemas ---------------------------------------------------------------------

    def schema(self, full_name: str) -> dict[str, Any]:
        """The current schema, self-contained JSON form (references inlined, full names).

        A fresh copy: callers may change it, e.g. to build another version for tests.
        """
        return json.loads(json.dumps(self._get(full_name).expanded))

    def fingerprint(self, full_name: str) -> bytes:
        """CRC-64-AVRO fingerprint of the current schema, 8 bytes as on the wire."""
        return self._get(full_name).fingerprint

    def headers(self, full_name: str) -> list[tuple[str, bytes]]:
        """Kafka headers to send with a record of this type."""
        return [(SCHEMA_HEADER, self._get(full_name).name.encode())]

    def register_writer(self, schema: dict[str, Any] | str) -> bytes:
        """Accept records written with another version of a schema; return its fingerprint.

        ``schema`` is a record schema (dict or JSON text); names it does not define are
        taken from the schema folder. Records written with it decode into the current
        schema of the same full name (Avro schema resolution), or as written if there is
        no current schema of that name.
        """
        compiled = compile_writer(schema, self._folder)
        current = self._current.get(compiled.name)
        self._add_writer(compiled, reader=current.parsed if current else None)
        return compiled.fingerprint

    # -- encoding --------------------------------------------------------------------

    def encode(self, full_name: str, record: Mapping[str, Any], *, validate: bool = True) -> bytes:
        """Single-object encoding of ``record`` with the current schema ``full_name``.

        ``validate=False`` skips the full type check (about 3x the cost of writing); the
        writer still refuses missing fields, extra fields and most wrong types, but then
        silently turns bools and floats given for ints into ints.
        """
        compiled = self._get(full_name)
        if validate:
            _check_record(compiled, record)
        out = io.BytesIO()
        out.write(MAGIC)
        out.write(compiled.fingerprint)
        try:
            schemaless_writer(out, compiled.parsed, record, strict_allow_default=True)
        except Exception as exc:
            raise SchemaError(f"record does not fit {compiled.name}: {short(exc)}") from exc
        return out.getvalue()

    def decode(self, data: bytes | None) -> tuple[str, dict[str, Any]]:
        """``(full_name, record)`` of single-object encoded bytes; only raises DecodeError."""
        writer, raw = self._locate(data)
        return writer.name, _read_body(writer, raw)

    def decode_message(
        self, value: bytes | None, headers: Iterable[tuple[str, Any]] | None
    ) -> tuple[str, dict[str, Any]]:
        """Like ``decode``, and the ``mig.schema`` header, if any, must agree."""
        said = _header_name(headers)
        writer, raw = self._locate(value)
        if said is not None and said != writer.name:
            shown = said if said.isprintable() and len(said) <= 80 else repr(said[:80])
            raise DecodeError(f"header says {shown} but fingerprint is {writer.name}")
        return writer.name, _read_body(writer, raw)

    # -- internals -------------------------------------------------------------------

    def _get(self, full_name: str) -> Compiled:
        compiled = self._current.get(full_name)
        if compiled is None:
            raise SchemaError(f"no record schema named {full_name!r} in {self._folder}")
        return compiled

    def _add_writer(self, compiled: Compiled, reader: Any | None) -> None:
        known = self._writers.get(compiled.fingerprint)
        if known is not None:
            if known.canonical != compiled.canonical:
                raise SchemaError(
                    f"{compiled.name}: fingerprint {compiled.fingerprint.hex()}"
                    f" collides with {known.name}"
                )
            return
        self._writers[compiled.fingerprint] = _Writer(
            compiled.name, compiled.parsed, reader, compiled.canonical,
            _int_checker(compiled.expanded, {}),
        )

    def _locate(self, data: Any) -> tuple[_Writer, bytes]:
        raw = _as_bytes(data)
        if len(raw) >= len(MAGIC) and raw[: len(MAGIC)] != MAGIC:
            raise DecodeError(f"bad magic 0x{raw[:2].hex()} (not Avro single-object encoding)")
        if len(raw) < _HEADER_LEN:
            raise DecodeError(f"too short for a single-object header ({len(raw)} bytes)")
        fingerprint = raw[len(MAGIC) : _HEADER_LEN]
        writer = self._writers.get(fingerprint)
        if writer is None:
            raise DecodeError(f"unknown schema fingerprint {fingerprint.hex()}")
        return writer, raw


_default: Codec | None = None
_default_lock = threading.Lock()


# -- decoding helpers --------------------------------------------------------------------


def _as_bytes(data: Any) -> bytes:
    if data is None:
        raise DecodeError("empty value")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"value is {type(data).__name__}, not bytes")
    raw = bytes(data)
    if not raw:
        raise DecodeError("empty value")
    return raw


def _read_body(writer: _Writer, raw: bytes) -> dict[str, Any]:
    body = io.BytesIO(raw)
    body.seek(_HEADER_LEN)
    try:
        record = schemaless_reader(body, writer.writer, writer.reader)
    except Exception as exc:
        raise DecodeError(
            f"body does not decode as {writer.name}: {_decode_cause(exc)}"
        ) from exc
    trailing = len(raw) - body.tell()
    if trailing:
        raise DecodeError(f"{trailing} trailing bytes after {writer.name}")
    if not isinstance(record, dict):
        raise DecodeError(f"body of {writer.name} is not a record")
    if writer.ints is not None:
        bad = writer.ints(record)
        if bad is not None:
            raise DecodeError(f"body does not decode as {writer.name}: {bad}")
    return record


_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_Check = Any  # Callable[[Any], str | None]: what is wrong with a decoded value, or None


def _int_checker(schema: _Json, named: dict[str, _Check | None]) -> _Check | None:
    """A function telling whether a decoded value's Avro ``int`` parts are in range, or None
    when the schema has no int. fastavro reads an int as a varint without a range check, so
    a body may carry 2**40 in an int field; mig refuses it as not fitting the schema."""
    if isinstance(schema, str):
        if schema == "int":
            return _check_int
        return named.get(schema)  # a named type defined earlier (inlined at first use)
    if isinstance(schema, list):
        return _union_checker(schema, named)
    kind = schema["type"]
    if kind == "array":
        inner = _int_checker(schema["items"], named)
        return None if inner is None else _each(inner, lambda v: v)
    if kind == "map":
        inner = _int_checker(schema["values"], named)
        return None if inner is None else _each(inner, lambda v: v.values())
    if kind in ("record", "error"):
        named[schema["name"]] = None  # (a recursive record is not used by mig)
        fields = []
        for field in schema["fields"]:
            check = _int_checker(field["type"], named)
            if check is not None:
                fields.append((field["name"], check))
        named[schema["name"]] = _fields(fields) if fields else None
        return named[schema["name"]]
    if kind in _NAMED:
        named[schema["name"]] = None
        return None
    return _check_int if kind == "int" else None


def _check_int(value: Any) -> str | None:
    if isinstance(value, int) and not _INT_MIN <= value <= _INT_MAX:
        return f"int value {value} out of range"
    return None


def _each(inner: _Check, items: Any) -> _Check:
    def check(value: Any) -> str | None:
        for item in items(value):
            bad = inner(item)
            if bad is not None:
                return bad
        return None

    return check


def _fields(fields: list[tuple[str, _Check]]) -> _Check:
    def check(value: Any) -> str | None:
        for name, inner in fields:
            bad = inner(value.get(name))
            if bad is not None:
                return f"{name}: {bad}"
        return None

    return check


def _union_checker(branches: list[_Json], named: dict[str, _Check | None]) -> _Check | None:
    checks = [_int_checker(branch, named) for branch in branches]
    if all(check is None for check in checks):
        return None

    def check(value: Any) -> str | None:
        if value is None:
            return None
        # fastavro gives the branch's value without its index: check it against every
        # branch it could be (a dict against record branches, an int against int ones)
        for branch, inner in zip(branches, checks, strict=True):
            if inner is None:
                continue
            is_int = branch == "int" or (isinstance(branch, dict) and branch["type"] == "int")
            if isinstance(value, bool) or (is_int != isinstance(value, int)):
                continue
            bad = inner(value)
            if bad is not None:
                return bad
        return None

    return check


def _decode_cause(exc: Exception) -> str:
    text = short(exc)
    if isinstance(exc, EOFError):
        return f"ends early ({text})" if text else "ends early"
    if isinstance(exc, IndexError):
        # fastavro indexes a list for enum symbols and union branches, the buffer otherwise
        return "enum or union index out of range" if "list" in text else "ends early"
    if isinstance(exc, UnicodeDecodeError):
        return "a string is not valid UTF-8"
    if type(exc).__name__ == "SchemaResolutionError":
        return f"writer schema is not compatible ({text})"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _header_name(headers: Any) -> str | None:
    """The schema name the ``mig.schema`` header gives, None if there is no such header."""
    if headers is None:
        return None
    try:
        pairs = list(headers.items() if isinstance(headers, Mapping) else headers)
        values = {value for key, value in pairs if key == SCHEMA_HEADER}
    except Exception as exc:
        raise DecodeError("malformed Kafka headers") from exc
    if not values:
        return None
    if len(values) > 1:
        raise DecodeError(f"conflicting {SCHEMA_HEADER} headers")
    value = values.pop()
    if isinstance(value, str):
        return value
    try:
        return bytes(value).decode("utf-8")
    except Exception as exc:
        raise DecodeError(f"header {SCHEMA_HEADER} is not UTF-8 text") from exc


# -- encoding helpers --------------------------------------------------------------------


def _check_record(compiled: Compiled, record: Any) -> None:
    try:
        _fastavro_validate(record, compiled.parsed, raise_errors=True)
    except Exception as exc:
        raise SchemaError(
            f"record does not fit {compiled.name}: {_validation_cause(exc)}"
        ) from exc


def _validation_cause(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if not errors:
        return short(exc)
    first = errors[0]
    datum = repr(first.datum)
    if len(datum) > 40:
        datum = datum[:37] + "..."
    return f"{first.field or 'value'} is {datum}, expected {_type_label(first.schema)}"


def _type_label(schema: _Json) -> str:
    if isinstance(schema, list):
        return " or ".join(_type_label(branch) for branch in schema)
    if isinstance(schema, dict):
        kind = schema.get("type")
        if isinstance(kind, str) and kind in _NAMED:
            return f"{kind} {schema.get('name')}"
        return str(kind)
    return str(schema)


