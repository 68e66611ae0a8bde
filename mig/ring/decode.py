"""CallBatch values straight into ring records, for the replica's hot path.

The mirror of mig/ring/batch.py: the batch's own fields (app, epoch, lpid, batch_seq,
first_seq, sent_ns) and its calls, the last field, turned into the records the shim's ring
holds, by one call of ``mig_decode_batch`` in ``libmigenc.so`` (shim/src/mig_decode.c),
with the checks the Python path makes (mig/wire/codec.py's int ranges, mig/ring/calls.py
``from_avro``); ``BatchDecoder.fill`` then copies as many of them as fit into a ring, by
``mig_ring_fill``. No Python object is made per call.

Only a value written with the current CallBatch schema is read here; ``decode`` returns
None for any other (an older writer's, whose kinds are named differently: avro/history),
and the caller decodes it with the codec, then ``from_calls`` packs its calls the same way.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mig.errors import DecodeError
from mig.paths import encoder_library
from mig.ring.batch import call_kind_symbols
from mig.ring.calls import from_avro
from mig.ring.kinds import KIND_NUMBERS
from mig.ring.memory import Ring, RingError
from mig.wire.codec import MAGIC, SCHEMA_HEADER, Codec

__all__ = ["BatchDecoder", "DecodedBatch", "from_calls"]

NAME = "mig.log.CallBatch"
_WALL = struct.Struct("<Q")
_WALL_AT = 64  # offset of wall_ns in a ring record (struct mig_rec, shim/src/mig_ring.h)


@dataclass(slots=True)
class DecodedBatch:
    """One CallBatch as ring records (``records``, ``count`` of them). ``pos`` is the
    first record not yet put into the ring, ``left`` how many are left."""

    app: str
    epoch: int
    lpid: str
    batch_seq: int
    first_seq: int
    sent_ns: int
    records: bytes
    count: int
    last_seq: int  # of the last call (first_seq - 1 when there is none)
    pos: int = 0
    left: int = 0

    def __post_init__(self) -> None:
        self.left = self.count

    def next_wall_ns(self) -> int:
        """When the next record to put was recorded (for the replica's lag)."""
        return int(_WALL.unpack_from(self.records, self.pos + _WALL_AT)[0])


class BatchDecoder:
    """Decodes CallBatch values of the current schema into ring records."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(str(encoder_library()))
        fn = lib.mig_decode_batch
        fn.restype = ctypes.c_int
        u64p = ctypes.POINTER(ctypes.c_uint64)
        fn.argtypes = [ctypes.c_char_p, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_void_p,
                       ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint64,
                       ctypes.POINTER(ctypes.c_int64), u64p, u64p, u64p, ctypes.c_char_p,
                       ctypes.c_uint64]
        self._fn = fn
        fill = lib.mig_ring_fill
        fill.restype = ctypes.c_int64
        fill.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64,
                         ctypes.c_char_p, ctypes.c_uint64, ctypes.c_uint64, u64p, u64p, u64p]
        self._fill = fill
        codec = Codec.default()
        self._prefix = MAGIC + codec.fingerprint(NAME)
        symbols = call_kind_symbols(codec)
        self._kinds = (ctypes.c_uint16 * len(symbols))(
            *(KIND_NUMBERS.get(name, 0) for name in symbols))
        self._nsym = len(symbols)
        self._out = ctypes.create_string_buffer(1 << 20)
        self._why = ctypes.create_string_buffer(200)
        self._used, self._count, self._last = (ctypes.c_uint64() for _ in range(3))
        self._fields = (ctypes.c_int64 * 8)()
        self._refs = tuple(ctypes.byref(n) for n in (self._used, self._count, self._last))
        self._next, self._head = ctypes.c_uint64(), ctypes.c_uint64()

    def decode(self, value: bytes | None, headers: Iterable[tuple[str, Any]] | None = None
               ) -> DecodedBatch | None:
        """The batch, or None when ``value`` is not a CallBatch of the current schema.
        Raises DecodeError for one that is and does not decode (or whose ``mig.schema``
        header names another type)."""
        if not value or not value.startswith(self._prefix):
            return None
        for key, said in headers or ():
            if key == SCHEMA_HEADER and said != NAME.encode():
                shown = said.decode(errors="replace")[:80] if said else repr(said)
                raise DecodeError(f"header says {shown} but fingerprint is {NAME}")
        f = self._fields
        while True:  # the batch's own fields, then its calls, in one call
            rc = self._fn(value, len(value), len(self._prefix), ctypes.addressof(self._kinds),
                          self._nsym, ctypes.addressof(self._out), len(self._out), f,
                          *self._refs, self._why, len(self._why))
            if rc != -2:
                break
            self._out = ctypes.create_string_buffer(max(2 * len(self._out),
                                                        2 * self._used.value))
        if rc != 0:
            raise DecodeError(f"body does not decode as {NAME}: {self._why.value.decode()}")
        try:
            app, lpid = value[f[0]:f[0] + f[1]].decode(), value[f[3]:f[3] + f[4]].decode()
        except UnicodeDecodeError as exc:
            raise DecodeError(f"body does not decode as {NAME}: a string is not UTF-8"
                              ) from exc
        records = ctypes.string_at(self._out, self._used.value)
        count, first_seq = self._count.value, f[6]
        return DecodedBatch(app, f[2], lpid, f[5], first_seq, f[7], records, count,
                            self._last.value if count else first_seq - 1)

    def fill(self, ring: Ring, batch: DecodedBatch) -> tuple[int, int]:
        """Put as many of ``batch``'s records as fit into ``ring`` (publishing its head);
        returns (records put, seq of the last one). RingError for a record the ring can
        never hold."""
        n = self._fill(ring.data_addr, ring.capacity, ring.head, ring.tail, batch.records,
                       len(batch.records), batch.pos, ctypes.byref(self._next),
                       ctypes.byref(self._head), ctypes.byref(self._last))
        if n < 0:
            size = int.from_bytes(batch.records[batch.pos:batch.pos + 4], "little")
            raise RingError(f"{ring.path}: a record of {size} bytes does not fit a ring of"
                            f" {ring.capacity} bytes")
        if n:
            batch.pos, batch.left = self._next.value, batch.left - n
            ring.publish_head(self._head.value)
        return n, self._last.value


def from_calls(rec: dict[str, Any]) -> DecodedBatch:
    """A CallBatch decoded by the codec, as ring records (DecodeError as from_avro says)."""
    calls = rec["calls"]
    records = b"".join(from_avro(call).pack() for call in calls)
    return DecodedBatch(rec["app"], rec["epoch"], rec["lpid"], rec["batch_seq"],
                        rec["first_seq"], rec["sent_ns"], records, len(calls),
                        calls[-1]["seq"] if calls else rec["first_seq"] - 1)
