"""Loading the schemas of ``avro/`` for the codec (mig/wire/codec.py).

Schema files: one file per top-level named type, named by its full name
(``avro/mig.log.CallBatch.avsc``). A file may name a type defined in another file
(``"type": "mig.log.Role"``); fastavro's ``load_schema`` reads that file and inlines the
definition at its first use, so every top-level schema is self-contained and its
fingerprint (CRC-64-AVRO of the Parsing Canonical Form) covers the expanded form. What
fastavro does not check, this module does: a file is named after the type it defines, one
full name means one type across the folder (two different definitions are a
``SchemaError``), and no array's items may encode to zero bytes (a body could declare
2**60 of them in one byte)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro.repository.base import AbstractSchemaRepository, SchemaRepositoryError
from fastavro.schema import UnknownType, load_schema, to_parsing_canonical_form
from fastavro.schema import fingerprint as _fastavro_fingerprint

from mig.errors import SchemaError

__all__ = ["Compiled", "compile_writer", "load_folder", "read_json", "short"]

_PRIMITIVES = frozenset(
    {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
)
_NAMED = frozenset({"record", "error", "enum", "fixed"})
_RECORDS = frozenset({"record", "error"})
_MAX_CAUSE = 160

_Json = Any  # a JSON schema value: str, list or dict


@dataclass(frozen=True, slots=True)
class Compiled:
    """One self-contained schema, ready for fastavro."""

    name: str
    expanded: dict[str, Any]
    parsed: Any
    canonical: str
    fingerprint: bytes


class _Folder(AbstractSchemaRepository):
    """The folder's schema files by full name, as fastavro's loader asks for them, and
    ``extra`` schemas that are not files (a writer schema, which wins over its file)."""

    def __init__(self, folder: Path, extra: Mapping[str, Any] | None = None) -> None:
        self._folder = folder
        self._extra = dict(extra or {})

    def load(self, name: str) -> Any:
        if name in self._extra:
            return self._extra[name]
        path = self._folder / f"{name}.avsc"
        if not path.is_file():
            raise SchemaRepositoryError(name)
        return read_json(path)


def load_folder(folder: Path) -> dict[str, Compiled]:
    """The folder's record schemas by full name, each self-contained."""
    if not folder.is_dir():
        raise SchemaError(f"schema folder {folder} does not exist")
    files = sorted(folder.glob("*.avsc"))
    if not files:
        raise SchemaError(f"no .avsc files in {folder}")
    repo = _Folder(folder)
    records: dict[str, Compiled] = {}
    for path in files:
        schema = read_json(path)
        name = _top_name(schema, path.name)
        if path.name != f"{name}.avsc":
            raise SchemaError(f"{path.name}: defines {name}, so must be named {name}.avsc")
        if schema.get("type") in _RECORDS:
            records[name] = _compile(name, repo, path.name)
    _one_name_one_type(records)
    return records


def compile_writer(schema: dict[str, Any] | str, folder: Path) -> Compiled:
    """A writer schema (a record, dict or JSON text); names it does not define are taken
    from the folder."""
    raw = _schema_value(schema)
    if not isinstance(raw, dict) or raw.get("type") not in _RECORDS:
        raise SchemaError("writer schema: top level must be a record")
    name = _top_name(raw, "writer schema")
    return _compile(name, _Folder(folder, {name: raw}), "writer schema")


def read_json(path: Path) -> _Json:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SchemaError(f"{path.name}: not readable JSON: {short(exc)}") from exc


def _schema_value(schema: Any) -> _Json:
    if isinstance(schema, str):
        try:
            return json.loads(schema)
        except ValueError as exc:
            raise SchemaError(f"writer schema is not JSON: {short(exc)}") from exc
    if isinstance(schema, dict):
        # A fastavro-parsed schema would be taken as already parsed; start from plain JSON.
        return {k: v for k, v in schema.items() if not k.startswith("__")}
    raise SchemaError(f"writer schema is a {type(schema).__name__}, not a dict or JSON text")


def _top_name(schema: _Json, where: str) -> str:
    name = schema.get("name") if isinstance(schema, dict) else None
    if not isinstance(name, str) or not name:
        raise SchemaError(f"{where}: the top level must be a named type")
    namespace = schema.get("namespace")
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


def _compile(name: str, repo: _Folder, where: str) -> Compiled:
    try:
        parsed = load_schema(name, repo=repo)
        canonical = to_parsing_canonical_form(parsed)
        fingerprint = bytes.fromhex(_fastavro_fingerprint(canonical, "CRC-64-AVRO"))
    except SchemaError:
        raise
    except UnknownType as exc:
        raise SchemaError(f"{where}: unknown type {exc.name}") from exc
    except Exception as exc:
        raise SchemaError(f"{where}: invalid schema: {short(exc)}") from exc
    if not isinstance(parsed, dict):
        raise SchemaError(f"{where}: the top level must be a named type")
    expanded = {k: v for k, v in parsed.items() if not k.startswith("__")}
    _refuse_unbounded_arrays(expanded, {}, where)
    return Compiled(name, expanded, parsed, canonical, fingerprint)


def _one_name_one_type(records: Mapping[str, Compiled]) -> None:
    """Refuse a full name that two schemas define differently (each file is loaded on its
    own, so fastavro sees only the clashes inside one)."""
    seen: dict[str, Any] = {}
    for compiled in records.values():
        for name, definition in compiled.parsed["__named_schemas"].items():
            shape = _shape(definition, top=True)
            if seen.setdefault(name, shape) != shape:
                raise SchemaError(f"{compiled.name}.avsc: {name} is defined twice, differently")


def _shape(schema: _Json, *, top: bool = False) -> _Json:
    """A definition with the named types inside it reduced to their names: one type is
    written out where it is first used, which differs from file to file."""
    if isinstance(schema, list):
        return [_shape(branch) for branch in schema]
    if not isinstance(schema, dict):
        return schema
    if schema.get("type") in _NAMED and not top:
        return schema["name"]
    out = {k: v for k, v in schema.items() if not k.startswith("__")}
    for key in ("type", "items", "values"):
        if key in out:
            out[key] = _shape(out[key])
    if "fields" in out:
        out["fields"] = [{**field, "type": _shape(field["type"])} for field in out["fields"]]
    return out


def _refuse_unbounded_arrays(schema: _Json, named: dict[str, Any], where: str) -> None:
    """Refuse arrays whose items may encode to zero bytes.

    A body may declare 2**60 such items in one byte, and no input length check would stop
    the decoder's loop; every other length in a body is bounded by the bytes it spans.
    """
    if isinstance(schema, list):
        for branch in schema:
            _refuse_unbounded_arrays(branch, named, where)
        return
    if not isinstance(schema, dict):
        return
    kind = schema["type"]
    if kind in _NAMED:
        named[schema["name"]] = schema
    if kind == "array":
        if _may_be_empty(schema["items"], named, set()):
            raise SchemaError(f"{where}: an array of items that encode to zero bytes")
        _refuse_unbounded_arrays(schema["items"], named, where)
    elif kind == "map":
        _refuse_unbounded_arrays(schema["values"], named, where)
    elif kind in ("record", "error"):
        for field in schema["fields"]:
            _refuse_unbounded_arrays(field["type"], named, where)



def _may_be_empty(schema: _Json, named: Mapping[str, Any], seen: set[str]) -> bool:
    """Whether a value of this schema can encode to zero bytes."""
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return schema == "null"
        if schema in seen or schema not in named:
            return False
        return _may_be_empty(named[schema], named, seen)
    if isinstance(schema, list):
        return False  # a union always writes its branch index
    kind = schema["type"]
    if kind == "fixed":
        return schema["size"] == 0
    if kind in ("record", "error"):
        inner = seen | {schema["name"]}
        return all(_may_be_empty(f["type"], named, inner) for f in schema["fields"])
    return kind == "null"


def short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return first if len(first) <= _MAX_CAUSE else first[: _MAX_CAUSE - 3] + "..."

