"""Converting between the shim's raw call records and the Avro ``mig.log.Call`` records."""

from __future__ import annotations

import struct
from typing import Any

from mig.channel import F_OUTPUT, RawCall
from mig.kinds import KIND_NAMES, KIND_NUMBERS

__all__ = ["to_avro", "from_avro", "describe"]


def to_avro(call: RawCall) -> dict[str, Any]:
    output = bool(call.flags & F_OUTPUT)
    return {
        "tid": call.tid, "seq": call.seq, "kind": KIND_NAMES.get(call.kind, "UNKNOWN"),
        "args": list(call.args), "result": call.result, "err": call.err,
        "payload": call.payload if call.payload else None,
        "out_len": call.out_len if output else None,
        "out_hash": struct.pack("<Q", call.out_hash) if output else None,
        "wall_ns": call.wall_ns,
    }


def from_avro(rec: dict[str, Any]) -> RawCall:
    args = (list(rec["args"]) + [0, 0, 0, 0])[:4]
    output = rec.get("out_len") is not None
    out_hash = struct.unpack("<Q", rec["out_hash"])[0] if output and rec.get("out_hash") else 0
    return RawCall(kind=KIND_NUMBERS.get(rec["kind"], 0), flags=F_OUTPUT if output else 0,
                   tid=rec["tid"], err=rec["err"], seq=rec["seq"], result=rec["result"],
                   args=(args[0], args[1], args[2], args[3]), wall_ns=rec["wall_ns"],
                   out_len=rec["out_len"] or 0, out_hash=out_hash,
                   payload=rec["payload"] or b"")


def describe(rec: dict[str, Any]) -> str:
    """A short human description of a recorded call, for divergence reports."""
    text = f"{rec['kind']}({', '.join(str(a) for a in rec['args'])}) = {rec['result']}"
    if rec.get("out_len") is not None:
        text += f" wrote {rec['out_len']} bytes"
    return text
