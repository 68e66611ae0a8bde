"""Converting between the shim's raw call records and the Avro ``mig.log.Call`` records."""

from __future__ import annotations

import struct
from typing import Any

from mig.errors import DecodeError
from mig.ring.kinds import KIND_NUMBERS
from mig.ring.memory import F_OUTPUT, RawCall

__all__ = ["from_avro", "describe"]


_U32, _U64 = 1 << 32, 1 << 64
# the ring's record length is 32 bits, its header 96 bytes, and it is padded to 8
MAX_PAYLOAD = _U32 - 96 - 8


def _refuse(rec: dict[str, Any], problem: str) -> DecodeError:
    return DecodeError(f"call seq {rec.get('seq')}: {problem}")


def from_avro(rec: dict[str, Any]) -> RawCall:
    """The ring record of a decoded ``mig.log.Call``; DecodeError for a call the shim's
    ring cannot carry as recorded (the schema allows more than the recorder writes)."""
    if len(rec["args"]) > 4:
        raise _refuse(rec, f"{len(rec['args'])} arguments, at most 4 are recorded")
    for name, top in (("tid", _U32), ("seq", _U64), ("wall_ns", _U64)):
        if not 0 <= rec[name] < top:
            raise _refuse(rec, f"{name} {rec[name]} is out of range")
    output = rec.get("out_len") is not None
    if output and not 0 <= rec["out_len"] < _U64:
        raise _refuse(rec, f"out_len {rec['out_len']} is out of range")
    if output != (rec.get("out_hash") is not None):
        raise _refuse(rec, "out_len and out_hash must be given together")
    if output and len(rec["out_hash"]) != 8:
        raise _refuse(rec, f"out_hash is {len(rec['out_hash'])} bytes, expected 8")
    if rec["payload"] is not None and len(rec["payload"]) > MAX_PAYLOAD:
        raise _refuse(rec, f"payload of {len(rec['payload'])} bytes is too large")
    args = (list(rec["args"]) + [0, 0, 0, 0])[:4]
    out_hash = struct.unpack("<Q", rec["out_hash"])[0] if output else 0
    return RawCall(kind=KIND_NUMBERS.get(rec["kind"], 0), flags=F_OUTPUT if output else 0,
                   tid=rec["tid"], err=rec["err"], seq=rec["seq"], result=rec["result"],
                   args=(args[0], args[1], args[2], args[3]), wall_ns=rec["wall_ns"],
                   out_len=rec["out_len"] or 0, out_hash=out_hash,
                   payload=rec["payload"] or b"")


_LOCK_VARIANTS = ("lock", "trylock", "timedlock")
_LOCK_RUN = 3  # MIG_LOCK_RUN (shim/src/mig.h): a thread's acquisitions without a record


def describe(rec: dict[str, Any]) -> str:
    """A short human description of a recorded call, for divergence reports. A mutex
    record says what it is (``MUTEX_LOCK(3, 0, 499, 0)`` said nothing to a reader)."""
    args = rec["args"]
    if rec["kind"] == "MUTEX_LOCK" and len(args) >= 3 and args[0] == _LOCK_RUN:
        return f"MUTEX_LOCK({args[2]} mutex acquisitions without a record)"
    if rec["kind"] == "MUTEX_LOCK" and len(args) >= 2 and 0 <= args[0] < len(_LOCK_VARIANTS):
        return (f"MUTEX_LOCK({_LOCK_VARIANTS[args[0]]} of mutex {args[1] & (2**64 - 1):#x})"
                f" = {rec['result']}")
    text = f"{rec['kind']}({', '.join(str(a) for a in args)}) = {rec['result']}"
    if rec.get("out_len") is not None:
        text += f" wrote {rec['out_len']} bytes"
    return text
