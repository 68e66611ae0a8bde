"""Building CallBatch records straight from a ring, for the recorder's hot path.

The Call items are encoded by ``mig_encode_calls`` in ``libmigenc.so`` (C, built beside
the shim, called through ctypes), so no Python object is made per call; this module adds
the batch's own fields and the single-object header. The bytes are exactly what
``Codec.encode("mig.log.CallBatch", ...)`` would produce for the same calls
(tests/ring/test_fastbatch.py checks it against fastavro).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from mig.errors import MigError
from mig.paths import encoder_library
from mig.ring.kinds import KIND_NAMES
from mig.ring.memory import Ring
from mig.wire.codec import MAGIC, Codec

__all__ = ["BatchEncoder", "EncodedBatch", "batch_prefix", "call_kind_symbols", "kind_table"]


def _long(value: int) -> bytes:
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _string(text: str) -> bytes:
    raw = text.encode()
    return _long(len(raw)) + raw


@dataclass
class EncodedBatch:
    value: bytes
    count: int
    first_seq: int
    last_seq: int


class BatchEncoder:
    """Encodes runs of a ring's records into CallBatch values of at most ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        lib = ctypes.CDLL(str(encoder_library()))
        fn = lib.mig_encode_calls
        fn.restype = ctypes.c_uint64
        u64p = ctypes.POINTER(ctypes.c_uint64)
        fn.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64,
                       ctypes.c_char_p, ctypes.c_void_p, ctypes.c_uint64, u64p, u64p, u64p,
                       u64p]
        self._fn = fn
        problem = lib.mig_ring_problem
        problem.restype = ctypes.c_char_p
        problem.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64]
        self._problem = problem
        codec = Codec.default()
        self._prefix = batch_prefix(codec)
        self._kinds = kind_table(codec)
        self.limit = limit
        self._out = ctypes.create_string_buffer(limit)
        self._n = [ctypes.c_uint64() for _ in range(4)]

    def encode(self, ring: Ring, start: int, end: int, app: str, epoch: int, lpid: str,
               batch_seq: int, sent_ns: int) -> tuple[EncodedBatch | None, int]:
        """Encode records from position ``start`` towards ``end``. Returns the batch (None if
        only padding was there) and the position after the records taken."""
        nxt, count, first, last = self._n
        size = self._fn(ring.data_addr, ring.capacity, start, end, self._kinds, self._out,
                        self.limit, ctypes.byref(nxt), ctypes.byref(count), ctypes.byref(first),
                        ctypes.byref(last))
        if count.value == 0:
            if nxt.value == start and start < end:
                raise self.problem(ring, start, end)
            return None, nxt.value
        head = (self._prefix + _string(app) + _long(epoch) + _string(lpid) + _long(batch_seq)
                + _long(first.value) + _long(sent_ns) + _long(count.value))
        # (string_at copies the bytes written; .raw[:size] copied the whole buffer first)
        value = head + ctypes.string_at(self._out, size) + b"\x00"
        return EncodedBatch(value, count.value, first.value, last.value), nxt.value

    def problem(self, ring: Ring, start: int, end: int) -> MigError:
        """Why the record at position ``start`` cannot be encoded."""
        why = self._problem(ring.data_addr, ring.capacity, start, end)
        return MigError(f"ring {ring.path}: cannot encode the record at position {start}: "
                        + (why.decode() if why else "larger than a batch may be"))


def batch_prefix(codec: Codec) -> bytes:
    """What a CallBatch value starts with: the single-object encoding's marker and the
    schema's fingerprint."""
    return MAGIC + codec.fingerprint("mig.log.CallBatch")


def kind_table(codec: Codec) -> bytes:
    """256 bytes: a ring kind number's index among the CallKind enum's symbols."""
    symbols = call_kind_symbols(codec)
    table = bytearray(256)
    for number, name in KIND_NAMES.items():
        table[number] = symbols.index(name) if name in symbols else symbols.index("UNKNOWN")
    return bytes(table)


def call_kind_symbols(codec: Codec) -> list[str]:
    """The symbols of the CallKind enum, in order (an Avro enum is written as the index)."""
    batch = codec.schema("mig.log.CallBatch")
    calls = next(f for f in batch["fields"] if f["name"] == "calls")["type"]["items"]
    kind = next(f for f in calls["fields"] if f["name"] == "kind")["type"]
    return list(kind["symbols"])

