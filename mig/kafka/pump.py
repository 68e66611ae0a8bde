"""The recorder's hot path in native code (shim/src/mig_pump.c): a ring's records
encoded into CallBatch values and produced to Kafka on the primary's own producer, each
acknowledgement releasing the barriers it covers from librdkafka's broker thread. No
Python runs per batch: the agent makes one call per ring and turn.

The producer stays confluent_kafka's (mig/kafka/writer.py: transactions, fencing, commit,
every other record); the library is also a librdkafka plugin (``plugin.library.paths``),
which is how it gets that producer's handle and its acknowledgements. With ``[security]``
keys the pump signs each batch as mig/wire/auth.py does (HMAC-SHA256 in
shim/src/mig_hmac.c, the same ``mig.auth`` header)."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from mig.errors import MigError
from mig.paths import encoder_library
from mig.ring.batch import batch_prefix, kind_table
from mig.ring.memory import Ring
from mig.wire.auth import HEADER as AUTH_HEADER
from mig.wire.auth import Auth
from mig.wire.codec import Codec

__all__ = ["Drained", "Pump", "PumpUnavailable", "bind", "hmac_hex", "librdkafka_path",
           "pumped"]

# mig_pump_drain's results
BAD_RECORD, REFUSED, QUEUE_FULL = -1, -2, -3
PARTITIONS = 256  # acknowledged offsets kept per partition of the calls topic (mig_pump.c)

_lib: Any = None
_bound_to = ""  # the librdkafka _library() bound to
log = structlog.get_logger()


class PumpUnavailable(MigError):
    """This process cannot pump natively (its librdkafka was not found): the Python path
    serves."""


def librdkafka_path() -> str:
    """The librdkafka confluent_kafka loaded, from this process's mappings."""
    import confluent_kafka.cimpl  # noqa: F401 - loads it

    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split(maxsplit=5)[-1].strip()
            if "/librdkafka" in path and ".so" in path:
                return path
    raise PumpUnavailable("no librdkafka among this process's mappings")


def bind() -> str:
    """Bind the pump to this process's librdkafka (once); which one it is, with its
    version. PumpUnavailable says why it cannot be."""
    _library()
    version = ctypes.CDLL(_bound_to).rd_kafka_version_str
    version.restype = ctypes.c_char_p
    return f"{_bound_to} (librdkafka {version().decode()})"



def _library() -> Any:
    global _lib, _bound_to
    if _lib is None:
        lib = ctypes.CDLL(str(encoder_library()))
        why = ctypes.create_string_buffer(512)
        path = librdkafka_path()
        if lib.mig_pump_bind(path.encode(), why, len(why)) != 0:
            raise PumpUnavailable(why.value.decode(errors="replace"))
        _bound_to = path
        vp, u64, u64p = ctypes.c_void_p, ctypes.c_uint64, ctypes.POINTER(ctypes.c_uint64)
        lib.mig_pump_new.restype = vp
        lib.mig_pump_new.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                                     ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                                     ctypes.c_size_t, ctypes.c_char_p, u64]
        lib.mig_pump_drain.restype = ctypes.c_int
        lib.mig_pump_drain.argtypes = [vp, vp, vp, u64, u64, u64, u64, ctypes.c_int64,
                                       ctypes.c_char_p, u64p, ctypes.c_int64, u64p, u64p,
                                       u64p, u64p, u64p]
        for name in ("expect", "forget"):
            getattr(lib, f"mig_pump_{name}").argtypes = [vp]
            getattr(lib, f"mig_pump_{name}").restype = None
        for name in ("bound", "free", "failed"):
            getattr(lib, f"mig_pump_{name}").argtypes = [vp]
            getattr(lib, f"mig_pump_{name}").restype = ctypes.c_int
        lib.mig_pump_in_flight.argtypes = [vp]
        lib.mig_pump_in_flight.restype = u64
        lib.mig_pump_error.argtypes = [vp, ctypes.c_char_p, ctypes.c_size_t]
        lib.mig_pump_error.restype = ctypes.c_int
        lib.mig_pump_acked_offsets.argtypes = [vp, ctypes.POINTER(ctypes.c_int64), ctypes.c_int]
        lib.mig_pump_acked_offsets.restype = None
        lib.mig_pump_latencies.argtypes = [vp, u64p, ctypes.POINTER(ctypes.c_uint32), u64]
        lib.mig_pump_latencies.restype = u64
        lib.mig_pump_sign.argtypes = [vp, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                                      ctypes.c_char_p, ctypes.c_size_t]
        lib.mig_pump_sign.restype = ctypes.c_int
        lib.mig_hmac_hex.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                                     ctypes.c_size_t, ctypes.c_char_p]
        lib.mig_hmac_hex.restype = None
        _lib = lib
    return _lib


@dataclass(slots=True)
class Drained:
    """What one ``Pump.drain`` sent: ``result`` 0, or BAD_RECORD (the record at ``next``
    cannot be encoded), REFUSED (``Pump.error`` says why) or QUEUE_FULL (the rest next
    turn)."""

    result: int
    next: int
    calls: int
    batches: int
    bytes: int
    last_seq: int
    batch_seq: int


class Pump:
    """One producer's native pump. ``producer_conf()`` goes into the producer's
    configuration and ``expect()`` is called just before the producer is made; ``bound``
    then says whether the pump has its handle."""

    def __init__(self, topic: str, app: str, limit: int, auth: Auth | None = None) -> None:
        self._lib = _library()
        codec = Codec.default()
        [(name, value)] = codec.headers("mig.log.CallBatch")
        prefix, kinds = batch_prefix(codec), kind_table(codec)
        self._p = self._lib.mig_pump_new(topic.encode(), app.encode(), name.encode(), value,
                                         len(value), prefix, len(prefix), kinds, limit)
        if not self._p:
            raise PumpUnavailable(f"cannot make a pump for {topic}")
        if auth is not None:
            kid, secret = auth.keys[0]
            if self._lib.mig_pump_sign(self._p, AUTH_HEADER.encode(), b"calls", kid.encode(),
                                       secret, len(secret)) != 0:
                self.close()
                raise PumpUnavailable(f"cannot sign with key id {kid!r} natively")
        self._n = [ctypes.c_uint64() for _ in range(6)]
        self._seen = ctypes.c_uint64()
        self._lat = (ctypes.c_uint32 * 1024)()
        self._offsets = (ctypes.c_int64 * PARTITIONS)()
        self._why = ctypes.create_string_buffer(512)

    @staticmethod
    def producer_conf() -> dict[str, Any]:
        return {"plugin.library.paths": str(encoder_library())}

    def expect(self) -> None:
        self._lib.mig_pump_expect(self._p)

    @property
    def bound(self) -> bool:
        return bool(self._lib.mig_pump_bound(self._p))

    def drain(self, ring: Ring, start: int, end: int, budget: int, epoch: int, lpid: str,
              batch_seq: int, sent_ns: int) -> Drained:
        """Encode and send ``ring``'s records from ``start`` towards ``end`` (at most
        ``budget`` bytes of ring), as batches ``batch_seq`` on."""
        seq, nxt, calls, batches, size, last = self._n
        seq.value = batch_seq
        rc = self._lib.mig_pump_drain(self._p, ring.header_addr, ring.data_addr,
                                      ring.capacity, start, end, budget, epoch,
                                      lpid.encode(), ctypes.byref(seq), sent_ns,
                                      ctypes.byref(nxt), ctypes.byref(calls),
                                      ctypes.byref(batches), ctypes.byref(size),
                                      ctypes.byref(last))
        return Drained(rc, nxt.value, calls.value, batches.value, size.value, last.value,
                       seq.value)

    @property
    def failed(self) -> bool:
        """A batch was refused (``error`` says why)."""
        return bool(self._lib.mig_pump_failed(self._p))

    def error(self) -> tuple[int, str]:
        """(librdkafka's error code, text) of the first batch refused; (0, "") if none."""
        code = self._lib.mig_pump_error(self._p, self._why, len(self._why))
        return code, self._why.value.decode(errors="replace") if code else ""

    @property
    def in_flight(self) -> int:
        return int(self._lib.mig_pump_in_flight(self._p))

    def acked_offsets(self) -> dict[int, int]:
        """The highest acknowledged offset of each partition that has one."""
        self._lib.mig_pump_acked_offsets(self._p, self._offsets, PARTITIONS)
        return {p: off for p, off in enumerate(self._offsets) if off >= 0}

    def latencies(self) -> list[float]:
        """Seconds each batch released since the last call waited for its acknowledgement
        (the latest 1,024 at most)."""
        n = self._lib.mig_pump_latencies(self._p, ctypes.byref(self._seen), self._lat, 1024)
        return [self._lat[i] / 1e6 for i in range(n)]

    def forget(self) -> None:
        """The rings are about to be unmapped: later acknowledgements touch none of them."""
        self._lib.mig_pump_forget(self._p)

    def close(self) -> None:
        """Free the pump once its producer is gone (else it is left: a small leak)."""
        if self._p and self._lib.mig_pump_free(self._p) == 0:
            self._p = None


def hmac_hex(secret: bytes, message: bytes) -> str:
    """The pump's HMAC-SHA256 of ``message`` (hex), to compare with Python's."""
    out = ctypes.create_string_buffer(65)
    _library().mig_hmac_hex(secret, len(secret), message, len(message), out)
    return out.value.decode()


def pumped(make: Callable[[dict[str, Any]], Any], topic: str, app: str, limit: int | None,
           auth: Auth | None = None) -> tuple[Any, Pump | None]:
    """The producer ``make(extra_conf)`` returns and, when ``limit`` is given, a pump of
    batches of at most ``limit`` bytes bound to it, signing them with ``auth``'s first key
    when given; None when it cannot be had (said in a warning) or with
    ``MIG_NATIVE_PUMP=0`` in the environment (the Python path, to compare:
    bench/commit_bench.py)."""
    pump = None
    if limit is not None and os.environ.get("MIG_NATIVE_PUMP") != "0":
        try:
            pump = Pump(topic, app, limit, auth)
        except PumpUnavailable as exc:
            log.warning("mig.pump.unavailable", reason=str(exc))
    if pump is None:
        return make({}), None
    pump.expect()
    try:
        made = make(pump.producer_conf())
    except BaseException:
        pump.close()  # (no later producer takes it)
        raise
    if pump.bound:
        return made, pump
    log.warning("mig.pump.unbound", topic=topic)
    pump.close()
    return made, None
