"""Loading the schemas of ``avro/`` for the codec (mig/wire/codec.py).

Schema files: one file per top-level named type, named by its full name
(``avro/mig.log.CallBatch.avsc``). A file may name a type defined in another file
(``"type": "mig.log.Role"``); the loader inlines the definition at its first use, so every
top-level schema is self-contained and its fingerprint (CRC-64-AVRO of the Parsing
Canonical Form) covers the expanded form. One full name means one type: two different
definitions of a name are a ``SchemaError``, and so is an array whose items may encode to
zero bytes (a body could declare 2**60 of them in one byte)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from mig.errors import SchemaError

__all__ = ["Compiled", "compile_schema", "load_folder", "normalize", "read_json", "schema_value",
           "short"]

_PRIMITIVES = frozenset(
    {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
)
_NAMED = frozenset({"record", "error", "enum", "fixed"})
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



def load_folder(folder: Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Top-level schemas by full name, and every named type defined anywhere in the folder."""
    if not folder.is_dir():
        raise SchemaError(f"schema folder {folder} does not exist")
    files = sorted(folder.glob("*.avsc"))
    if not files:
        raise SchemaError(f"no .avsc files in {folder}")
    definitions: dict[str, dict[str, Any]] = {}
    tops: dict[str, dict[str, Any]] = {}
    for path in files:
        schema = normalize(read_json(path), "", definitions, path.name)
        name = schema.get("name") if isinstance(schema, dict) else None
        if name is None:
            raise SchemaError(f"{path.name}: the top level must be a named type")
        if path.name != f"{name}.avsc":
            raise SchemaError(f"{path.name}: defines {name}, so must be named {name}.avsc")
        tops[name] = schema
    return tops, definitions



def read_json(path: Path) -> _Json:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SchemaError(f"{path.name}: not readable JSON: {short(exc)}") from exc



def schema_value(schema: Any) -> _Json:
    if isinstance(schema, str):
        try:
            return json.loads(schema)
        except ValueError as exc:
            raise SchemaError(f"writer schema is not JSON: {short(exc)}") from exc
    if isinstance(schema, dict):
        # A fastavro-parsed schema would be taken as already parsed; start from plain JSON.
        return {k: v for k, v in schema.items() if not k.startswith("__")}
    raise SchemaError(f"writer schema is a {type(schema).__name__}, not a dict or JSON text")



def _full_name(name: str, namespace: str) -> str:
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"



def normalize(
    schema: _Json, namespace: str, found: dict[str, dict[str, Any]], where: str
) -> _Json:
    """A copy with every name and reference made a full name and ``namespace`` dropped.

    Named types met on the way are added to ``found``; a name already there with a
    different definition is an error (one name, one type).
    """
    if isinstance(schema, str):
        return schema if schema in _PRIMITIVES else _full_name(schema, namespace)
    if isinstance(schema, list):
        return [normalize(branch, namespace, found, where) for branch in schema]
    if not isinstance(schema, dict) or "type" not in schema:
        raise SchemaError(f"{where}: not an Avro schema: {str(schema)[:60]}")
    kind = schema["type"]
    if not isinstance(kind, str):
        return normalize(kind, namespace, found, where)
    if kind in ("array", "map"):
        inner = "items" if kind == "array" else "values"
        if inner not in schema:
            raise SchemaError(f"{where}: {kind} without {inner!r}")
        return {**schema, inner: normalize(schema[inner], namespace, found, where)}
    if kind in _PRIMITIVES:
        return dict(schema)
    if kind not in _NAMED:
        return normalize(kind, namespace, found, where)
    return _normalize_named(schema, namespace, found, where)



def _normalize_named(
    schema: dict[str, Any], namespace: str, found: dict[str, dict[str, Any]], where: str
) -> dict[str, Any]:
    name = schema.get("name")
    if not isinstance(name, str) or not name:
        raise SchemaError(f"{where}: a {schema['type']} without a name")
    full = _full_name(name, schema.get("namespace") or namespace)
    own_namespace = full.rpartition(".")[0]
    out = {k: v for k, v in schema.items() if k != "namespace"}
    out["name"] = full
    if schema["type"] in ("record", "error"):
        out["fields"] = [
            _normalize_field(field, own_namespace, found, where)
            for field in schema.get("fields", [])
        ]
    known = found.get(full)
    if known is not None and known != out:
        raise SchemaError(f"{where}: {full} is defined twice, differently")
    found[full] = out
    return out



def _normalize_field(
    field: Any, namespace: str, found: dict[str, dict[str, Any]], where: str
) -> dict[str, Any]:
    if not isinstance(field, dict) or "name" not in field or "type" not in field:
        raise SchemaError(f"{where}: a field needs a name and a type: {str(field)[:60]}")
    return {**field, "type": normalize(field["type"], namespace, found, where)}



def _expand(schema: _Json, definitions: Mapping[str, dict[str, Any]], defined: set[str]) -> _Json:
    """Inline each named type at its first use; later uses stay references by full name."""
    if isinstance(schema, str):
        if schema in _PRIMITIVES or schema in defined:
            return schema
        if schema not in definitions:
            raise SchemaError(f"unknown type {schema}")
        return _expand(definitions[schema], definitions, defined)
    if isinstance(schema, list):
        return [_expand(branch, definitions, defined) for branch in schema]
    kind = schema["type"]
    if kind in ("array", "map"):
        inner = "items" if kind == "array" else "values"
        return {**schema, inner: _expand(schema[inner], definitions, defined)}
    if kind not in _NAMED:
        return dict(schema)
    if schema["name"] in defined:
        return schema["name"]
    defined.add(schema["name"])
    if kind not in ("record", "error"):
        return dict(schema)
    fields = [
        {**field, "type": _expand(field["type"], definitions, defined)}
        for field in schema["fields"]
    ]
    return {**schema, "fields": fields}



def compile_schema(
    schema: dict[str, Any], definitions: Mapping[str, dict[str, Any]], where: str
) -> Compiled:
    try:
        expanded = _expand(schema, definitions, set())
    except SchemaError as exc:
        raise SchemaError(f"{where}: {exc}") from exc
    try:
        parsed = parse_schema(expanded)
        canonical = to_parsing_canonical_form(expanded)
        fingerprint = bytes.fromhex(_fastavro_fingerprint(canonical, "CRC-64-AVRO"))
    except Exception as exc:
        raise SchemaError(f"{where}: invalid schema: {short(exc)}") from exc
    _refuse_unbounded_arrays(expanded, {}, where)
    return Compiled(schema["name"], expanded, parsed, canonical, fingerprint)



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

