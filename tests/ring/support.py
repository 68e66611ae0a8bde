"""Ring helpers only the tests use (the shim makes rings and the agent reads them in C):
a new ring file as the shim would make it, moving an empty ring's start (to make records
wrap), writing one record and reading a ring's records in Python, and a ring record as an
Avro ``mig.log.Call``.

``parse_record`` reads one record with the checks of ``mig_rec_problem`` (mig_ring.h), so
the fuzzers can hold the C readers to the same rules (tests/test_fuzz.py)."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

from mig.ring.kinds import KIND_NAMES
from mig.ring.memory import (
    _OFF,
    F_OUTPUT,
    F_PAD,
    HDR_SIZE,
    MAGIC,
    REC,
    STATE_READY,
    VERSION,
    RawCall,
    Ring,
    RingError,
)

_PAD = struct.Struct("<IHH")  # the first 8 bytes: len, kind, flags


def new_ring(path: Path, capacity: int = 1 << 16, lpid: str = "1") -> Ring:
    """A new empty ring file, as the shim would make it."""
    header = bytearray(HDR_SIZE)
    struct.pack_into("<QIIQiI", header, 0, MAGIC, VERSION, 1, capacity, os.getpid(),
                     STATE_READY)
    header[_OFF["lpid"]:_OFF["lpid"] + len(lpid)] = lpid.encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(bytes(header) + bytes(capacity))
    return Ring(path)


def seek(ring: Ring, position: int) -> None:
    """Start an empty ring at ``position``."""
    struct.pack_into("<Q", ring.mm, _OFF["head"], position)
    struct.pack_into("<Q", ring.mm, _OFF["tail"], position)


def put(ring: Ring, call: RawCall) -> bool:
    """Append one call record as the replica's agent would (mig/ring/decode.py BatchDecoder.fill
    does it for a whole batch in C); False if there is no room yet."""
    blob = call.pack()
    if len(blob) > ring.capacity:  # would never fit: waiting for room would hang
        raise RingError(f"{ring.path}: a record of {len(blob)} bytes (call seq"
                        f" {call.seq}) does not fit a ring of {ring.capacity} bytes")
    head = ring.head
    room = ring.capacity - (head & (ring.capacity - 1))
    need = len(blob) + (room if room < len(blob) else 0)
    if need > ring.space():
        return False
    if room < len(blob):
        struct.pack_into("<IHH", ring.data, head & (ring.capacity - 1), room, 0, F_PAD)
        head += room
    pos = head & (ring.capacity - 1)
    ring.data[pos:pos + len(blob)] = blob
    ring.publish_head(head + len(blob))
    return True


def drain(ring: Ring, max_bytes: int = 1 << 22) -> list[RawCall]:
    """Every complete record the shim has published, oldest first; frees their space."""
    head, tail = ring.head, ring.tail
    if head - tail > ring.capacity:
        raise RingError(f"{ring.path}: {head - tail} bytes published (tail {tail}, head"
                        f" {head}) but the ring holds {ring.capacity}")
    calls: list[RawCall] = []
    while tail < head and max_bytes > 0:
        pos = tail & (ring.capacity - 1)
        call, length = parse_record(ring.data, pos, min(head - tail, ring.capacity - pos))
        if call is not None:
            calls.append(call)
        tail += length
        max_bytes -= length
    ring.release(tail)
    return calls


def parse_record(buf: bytes | memoryview, offset: int, limit: int) -> tuple[RawCall | None, int]:
    """Parse one record at ``offset`` (at most ``limit`` bytes available). Returns the call
    (None for padding) and its length. Raises RingError on a malformed record."""
    if offset % 8:
        raise RingError(f"record at {offset}: position is not a multiple of 8")
    if limit < 8:
        raise RingError(f"record at {offset} cut short: {limit} bytes left")
    length, _kind, flags = _PAD.unpack_from(buf, offset)
    if length > limit or length % 8 or length < 8:
        raise RingError(f"record at {offset}: length {length} does not fit ({limit} bytes"
                        " left)")
    if flags & F_PAD:  # filler to the end of the data area: may be shorter than a header
        return None, length
    if length < REC.size:
        raise RingError(f"record at {offset}: length {length} is below the header size")
    (length, kind, flags, tid, err, seq, result, a0, a1, a2, a3, wall_ns, out_len, out_hash,
     plen, _reserved) = REC.unpack_from(buf, offset)
    if REC.size + plen > length:
        raise RingError(f"record at {offset}: payload of {plen} bytes overruns the record"
                        f" ({length} bytes)")
    if tid > 0x7FFFFFFF:  # the Avro field is an int
        raise RingError(f"record at {offset}: thread id {tid} out of range")
    if seq >> 63 or wall_ns >> 63 or (flags & F_OUTPUT and out_len >> 63):  # Avro longs
        raise RingError(f"record at {offset}: seq, wall_ns or out_len out of range")
    payload = bytes(buf[offset + REC.size: offset + REC.size + plen])
    return RawCall(kind, flags, tid, err, seq, result, (a0, a1, a2, a3), wall_ns, out_len,
                   out_hash, payload), length


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
