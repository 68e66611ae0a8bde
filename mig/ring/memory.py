"""The agent's side of the shared-memory rings (layout: shim/src/mig_ring.h).

One ring per logical process of the app, ``RUN_DIR/<lpid>.ring``. In record mode the shim
writes call records and the agent encodes them straight from the ring (mig/ring/batch.py);
``Ring.commit`` then tells the waiting threads that everything up to a sequence number is
in Kafka. In replay mode the agent writes recorded calls for the shim to take
(mig/ring/decode.py ``BatchDecoder.fill``). Offsets and sizes here must match the C header:
tests/shim/test_shim_build.py reads a ring the real shim wrote, tests/ring/test_fastbatch.py feeds
rings written here to the C encoder, and every record/replay test goes through both.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from mig.errors import MigError
from mig.paths import encoder_library

__all__ = ["RawCall", "Ring", "RingError", "RingForeign", "REC", "HDR_SIZE", "new_rings", "SCAN_S",
           "bells_library", "futex_wake", "rearm_after_restore", "set_stdin_pipe",
           "stdin_pipe_of"]

MAGIC = 0x31474E4952474D4D
VERSION = 1
HDR_SIZE = 4096
F_PAD, F_OUTPUT = 1, 2
STATE_INIT, STATE_READY, STATE_EXITED, STATE_DIVERGED = 0, 1, 2, 3
STATE_LIVE_FAILED = 4  # the process could not go live (div_text says why) and has ended

# struct mig_rec: len u32, kind u16, flags u16, tid u32, err i32, seq u64, result i64,
# args 4*i64, wall_ns u64, out_len u64, out_hash u64, payload_len u32, reserved u32
REC = struct.Struct("<IHHIiQq4qQQQII")
assert REC.size == 96

_OFF = {"magic": 0, "version": 8, "mode": 12, "capacity": 16, "pid": 24, "state": 28,
        "lpid": 32, "head": 96, "tail": 104, "next_seq": 112, "committed_seq": 120,
        "commit_futex": 128, "data_futex": 132, "lock": 136, "waiters": 140,
        "barrier_seq": 144, "div_seq": 152, "div_text": 160, "parent_lpid": 416,
        "golive": 480, "frozen": 484, "writers": 488, "turn_futex": 492, "arm_gen": 496,
        "traps": 504, "going_live": 500, "stdin_read": 512, "stdin_dev": 520,
        "stdin_ino": 528, "doorbell": 536, "agent_sleeping": 540, "patched": 552}
MODE_RECORD, MODE_REPLAY = 1, 2

_SYS_FUTEX = 202  # x86-64
_FUTEX_WAKE = 1
_libc = ctypes.CDLL(None, use_errno=True)


def futex_wake(address: int) -> None:
    """Wake every thread waiting on the futex word at ``address`` (a ring's, or the agent's
    own doorbell: mig/ring/doorbell.py), in any process that maps it."""
    _libc.syscall(_SYS_FUTEX, ctypes.c_void_p(address), _FUTEX_WAKE, 0x7FFFFFFF, None, None, 0)


_bells: Any = None


def bells_library() -> Any:
    """The native doorbells of shim/src/mig_bells.c (in libmigenc): the agent's wait on
    its words (mig/ring/doorbell.py), and mig_bells_ring, which bumps a ring's futex word
    atomically (the app's threads bump it too) and wakes its waiters."""
    global _bells
    if _bells is None:
        lib = ctypes.CDLL(str(encoder_library()))
        vp, n = ctypes.c_void_p, ctypes.c_int
        lib.mig_bells_snapshot.argtypes = [vp, vp, n]
        lib.mig_bells_snapshot.restype = None
        lib.mig_bells_wait.argtypes = [vp, vp, n, vp, n, ctypes.c_int64, n]
        lib.mig_bells_wait.restype = ctypes.c_int
        lib.mig_bells_ring.argtypes, lib.mig_bells_ring.restype = [vp], None
        _bells = lib
    return _bells


class RingError(MigError):
    """A ring file that is not (or no longer) a valid mig ring."""


class RingForeign(RingError):
    """A ring file that is not private to the app's user: a local user could feed or read
    the app's records through it."""


@dataclass
class RawCall:
    kind: int
    flags: int
    tid: int
    err: int
    seq: int
    result: int
    args: tuple[int, int, int, int]
    wall_ns: int
    out_len: int
    out_hash: int
    payload: bytes

    def pack(self) -> bytes:
        length = (REC.size + len(self.payload) + 7) & ~7
        head = REC.pack(length, self.kind, self.flags, self.tid, self.err, self.seq,
                        self.result, *self.args, self.wall_ns, self.out_len, self.out_hash,
                        len(self.payload), 0)
        return head + self.payload + b"\0" * (length - REC.size - len(self.payload))


class Ring:
    """One mapped ring file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        try:
            st = os.fstat(fd)
            if st.st_uid != os.geteuid() or st.st_mode & 0o077:
                raise RingForeign(f"{path}: owned by uid {st.st_uid}, mode"
                                  f" {st.st_mode & 0o777:o}: a ring must belong to the app's"
                                  f" user (uid {os.geteuid()}) with mode 600; it is ignored")
            size = st.st_size
            if size < HDR_SIZE + 65536:
                raise RingError(f"{path}: {size} bytes is too small for a ring")
            self.mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        if self._u64("magic") != MAGIC or self._u32("version") != VERSION:
            self.mm.close()
            raise RingError(f"{path}: not a mig ring (or another version)")
        self.capacity = self._u64("capacity")
        if self.capacity & (self.capacity - 1) or HDR_SIZE + self.capacity > size:
            self.mm.close()
            raise RingError(f"{path}: bad capacity {self.capacity}")
        self.data = memoryview(self.mm)[HDR_SIZE:HDR_SIZE + self.capacity]
        self.lpid = self._str("lpid", 64)
        self.parent_lpid = self._str("parent_lpid", 64)
        self.pid = struct.unpack_from("<i", self.mm, _OFF["pid"])[0]
        self._futex_addr = {name: ctypes.addressof(ctypes.c_uint32.from_buffer(self.mm, _OFF[name]))
                            for name in ("commit_futex", "data_futex", "frozen", "doorbell",
                                         "agent_sleeping")}
        self.data_addr = ctypes.addressof(ctypes.c_char.from_buffer(self.mm, HDR_SIZE))
        self.header_addr = self.data_addr - HDR_SIZE  # (for the recorder's pump)

    # -- header fields
    def _u64(self, name: str) -> int:
        return int(struct.unpack_from("<Q", self.mm, _OFF[name])[0])

    def _u32(self, name: str) -> int:
        return int(struct.unpack_from("<I", self.mm, _OFF[name])[0])

    def _set_u64(self, name: str, value: int) -> None:
        struct.pack_into("<Q", self.mm, _OFF[name], value)

    def _str(self, name: str, size: int) -> str:
        raw = bytes(self.mm[_OFF[name]:_OFF[name] + size])
        return raw.split(b"\0", 1)[0].decode("utf-8", "replace")

    @property
    def state(self) -> int:
        return self._u32("state")

    @property
    def barrier_seq(self) -> int:
        return self._u64("barrier_seq")

    @property
    def committed_seq(self) -> int:
        return self._u64("committed_seq")

    @property
    def traps(self) -> int:
        """System calls the shim trapped in this process (complete capture)."""
        return self._u64("traps")

    @property
    def patched(self) -> int:
        """System calls made at sites of libc the shim patched, without a trap."""
        return self._u64("patched")

    @property
    def stdin_read(self) -> int:
        """Bytes this process read from the app's stdin pipe (mig/member/stdin.py)."""
        return self._u64("stdin_read")

    @property
    def waiters(self) -> int:
        """Threads of the app sleeping on a futex of this ring (replay: waiting for data)."""
        return self._u32("waiters")

    @property
    def going_live(self) -> bool:
        """Replay: the process has started going live (its listeners being made real)."""
        return bool(self._u32("going_live"))

    @property
    def mode(self) -> int:
        """MODE_RECORD or MODE_REPLAY; a replaying process that went live turns it to
        MODE_RECORD itself."""
        return self._u32("mode")

    @property
    def next_seq(self) -> int:
        return self._u64("next_seq")

    def go_live(self) -> None:
        """Replay: the record just put is the log's last; once the shim has taken it the
        process goes live (shim/src/mig_live.c)."""
        struct.pack_into("<I", self.mm, _OFF["golive"], 1)
        self._bump_and_wake("data_futex")

    def freeze(self, timeout: float = 5.0) -> bool:
        """Record: stop the app's threads before they append another record, and wait
        until none is between its check and publishing. True when the ring is still."""
        struct.pack_into("<I", self.mm, _OFF["frozen"], 1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.0005)  # a syscall: our store is visible before we read `writers`
            if self._u32("writers") == 0:
                return True
        return False

    def thaw(self) -> None:
        struct.pack_into("<I", self.mm, _OFF["frozen"], 0)
        futex_wake(self._futex_addr["frozen"])

    def divergence(self) -> tuple[int, str] | None:
        if self.state != STATE_DIVERGED:
            return None
        return self._u64("div_seq"), self._str("div_text", 256)

    def live_failure(self) -> str | None:
        """Why the process could not go live (a listener it could not make real), if so."""
        if self.state != STATE_LIVE_FAILED:
            return None
        return self._str("div_text", 256)

    # -- record mode (agent consumes)
    @property
    def head(self) -> int:
        return self._u64("head")

    @property
    def tail(self) -> int:
        return self._u64("tail")

    def next_record(self) -> tuple[int, int, int] | None:
        """Replay: (seq, thread, kind) of the record the app takes next, the one at the
        tail (a pad at the data area's end skipped); None when it has taken all it got."""
        tail, head = self.tail, self.head
        while tail < head:
            at = tail % self.capacity
            length, kind, flags = struct.unpack_from("<IHH", self.data, at)
            if not flags & F_PAD:  # (a record, unlike a pad, is whole before the end)
                _, _, _, tid, _, seq, *_ = REC.unpack_from(self.data, at)
                return seq, tid, kind
            if length <= 0:
                return None
            tail += length
        return None

    def release(self, position: int) -> None:
        """Everything before ``position`` is consumed: the shim may reuse the space."""
        self._set_u64("tail", position)

    def commit(self, upto_seq: int) -> None:
        """Every record with seq < upto_seq is in Kafka: release threads waiting for it."""
        if upto_seq <= self._u64("committed_seq"):
            return
        self._set_u64("committed_seq", upto_seq)
        self._bump_and_wake("commit_futex")

    # -- replay mode (worker produces)
    def space(self) -> int:
        return self.capacity - (self._u64("head") - self._u64("tail"))

    # -- the agent's doorbell (mig/ring/doorbell.py)
    @property
    def doorbell(self) -> tuple[int, int]:
        """(address, value) of this ring's doorbell word."""
        return self._futex_addr["doorbell"], self._u32("doorbell")

    @property
    def agent_sleeping_addr(self) -> int:
        """Address of the word the agent sets while it waits on the doorbells."""
        return self._futex_addr["agent_sleeping"]

    def publish_head(self, head: int) -> None:
        """Replay: the shim may read up to ``head`` (written before: BatchDecoder.fill)."""
        self._set_u64("head", head)

    def wake_reader(self) -> None:
        self._bump_and_wake("data_futex")

    def _bump_and_wake(self, name: str) -> None:
        bells_library().mig_bells_ring(self._futex_addr[name])

    def close(self) -> None:
        self.data.release()
        self._futex_addr.clear()
        try:
            self.mm.close()
        except BufferError:
            pass  # a ctypes view still refers to it; the mapping goes with the process


# How often an agent looks for new processes' rings (each look is a glob of the run folder,
# about 15 us here): the primary and the replica, whose turns come far more often.
SCAN_S = 0.005


def new_rings(run_dir: Path, known: dict[str, Ring]) -> dict[str, Ring]:
    """The rings in ``run_dir`` not in ``known``, by logical process id. A ring still being
    created (too small, no magic yet) is left for the next scan."""
    found: dict[str, Ring] = {}
    for path in run_dir.glob("*.ring"):
        lpid = path.name[: -len(".ring")]
        if lpid in known:
            continue
        try:
            found[lpid] = Ring(path)
        except RingForeign as exc:
            if path not in _REFUSED:
                _REFUSED.add(path)
                log.error("mig.channel.foreign_ring", reason=str(exc))
        except (RingError, OSError):
            continue  # still being created
    return found


log = structlog.get_logger("mig.channel")
_REFUSED: set[Path] = set()  # foreign rings already reported


def set_stdin_pipe(path: Path, dev: int, ino: int) -> None:
    """Name this host's stdin pipe in a ring file of a checkpoint before the app is
    restored from it (the shim counts reads of the pipe it names: mig/member/stdin.py)."""
    with open(path, "r+b") as f:
        f.seek(_OFF["stdin_dev"])
        f.write(struct.pack("<QQ", dev, ino))


def stdin_pipe_of(path: Path) -> tuple[int, int]:
    """The stdin pipe a ring file names (0, 0: none)."""
    with open(path, "rb") as f:
        f.seek(_OFF["stdin_dev"])
        return struct.unpack("<QQ", f.read(16))


def rearm_after_restore(path: Path) -> None:
    """Bump the ``arm_gen`` of a ring file in a checkpoint's run folder before the app is
    restored from it: CRIU does not restore Syscall User Dispatch, so the shim's threads arm
    their traps again when they see it changed (shim/src/mig_replay.c)."""
    with open(path, "r+b") as f:
        f.seek(_OFF["arm_gen"])
        (gen,) = struct.unpack("<I", f.read(4))
        f.seek(_OFF["arm_gen"])
        f.write(struct.pack("<I", (gen + 1) & 0xFFFFFFFF))
