"""Hypothesis strategies that build valid records for any parsed Avro schema.

``records(schema)`` accepts a schema as JSON (dict, list or str) or as fastavro parsed it:
records, enums, fixed, arrays, maps, unions, primitives and references to named types
defined earlier in the same schema (recursive types included). Sizes are kept small; floats
avoid NaN and stay exact after a round trip.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

__all__ = ["records"]

_INT = 2**31
_LONG = 2**63

_PRIMITIVES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "boolean": st.booleans(),
    "int": st.integers(-_INT, _INT - 1),
    "long": st.integers(-_LONG, _LONG - 1),
    "float": st.floats(width=32, allow_nan=False),
    "double": st.floats(allow_nan=False),
    "bytes": st.binary(max_size=16),
    "string": st.text(max_size=8),
}
_MAX_ITEMS = 3


def records(schema: Any) -> st.SearchStrategy[Any]:
    """A strategy of values valid for ``schema`` (a dict for a record schema)."""
    return _strategy(schema, "", {})


def _full_name(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _strategy(
    schema: Any, namespace: str, named: dict[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[Any]:
    if isinstance(schema, list):
        return st.one_of([_strategy(branch, namespace, named) for branch in schema])
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return _PRIMITIVES[schema]
        full = _full_name(schema, namespace)
        return st.deferred(lambda: named[full])
    kind = schema["type"]
    if not isinstance(kind, str):
        return _strategy(kind, namespace, named)
    if kind == "array":
        items = _strategy(schema["items"], namespace, named)
        return st.lists(items, max_size=_MAX_ITEMS)
    if kind == "map":
        values = _strategy(schema["values"], namespace, named)
        return st.dictionaries(st.text(max_size=5), values, max_size=_MAX_ITEMS)
    if kind in ("record", "error", "enum", "fixed"):
        return _named_strategy(schema, namespace, named)
    if kind in _PRIMITIVES:
        return _PRIMITIVES[kind]
    return _strategy(kind, namespace, named)


def _named_strategy(
    schema: dict[str, Any], namespace: str, named: dict[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[Any]:
    full = _full_name(schema["name"], schema.get("namespace") or namespace)
    kind = schema["type"]
    if kind == "enum":
        strategy: st.SearchStrategy[Any] = st.sampled_from(schema["symbols"])
    elif kind == "fixed":
        strategy = st.binary(min_size=schema["size"], max_size=schema["size"])
    else:
        # Registered before the fields so a recursive reference finds it (lazily).
        named[full] = st.deferred(lambda: strategy)
        inner = full.rpartition(".")[0]
        strategy = st.fixed_dictionaries(
            {f["name"]: _strategy(f["type"], inner, named) for f in schema["fields"]}
        )
    named[full] = strategy
    return strategy
