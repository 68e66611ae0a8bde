"""kv_asyncio.py -- an asyncio TCP key-value server whose keys can expire.

One of the programs mig's integration tests record on a primary and replay on a backup; it
knows nothing of mig. It is the interpreter-sized test: CPython's asyncio loop (epoll via
the selector), timers on time.monotonic() (clock_gettime(CLOCK_MONOTONIC)), entry timestamps
from time.time_ns() (CLOCK_REALTIME), ids from the default ``random`` generator, which
CPython seeds from the OS (getrandom) at start, and a task that wakes every 50 ms to expire
keys. Which keys have expired by a DUMP depends on time and on when the loop woke; a replay
feeds back the recorded clocks and epoll results, so the backup must expire the same ones.
Nothing in a DUMP depends on anything but the requests, the clocks and the randomness the
program saw -- no pids, no addresses.

usage: python3 kv_asyncio.py PORT [BIND_ADDR]            BIND_ADDR defaults to 127.0.0.1

Protocol (one request line, one reply line; tokens split on spaces and tabs):
  SET key value [ttl_ms] -> OK <id>            id: 16 hex chars; ttl_ms > 0 expires the key
  GET key                -> VALUE <value> <id> | NONE
  DEL key                -> DELETED | NONE
  DUMP path              -> DUMPED <n>         writes "kv_asyncio entries=<n> expired=<k>",
                                               then "key value id sec.nsec seq ttl_ms|-"
                                               per entry, sorted by key (bytes)
  QUIT                   -> BYE, then the connection closes
  anything wrong         -> ERR <reason>
Connections idle for 60 s are closed. SIGTERM or SIGINT stops the server.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import signal
import sys
import time
from dataclasses import dataclass

MAX_LINE = 4096
IDLE_TIMEOUT = 60.0
SWEEP_INTERVAL = 0.05


@dataclass(slots=True)
class Entry:
    value: bytes
    id: str
    ts_ns: int  # time.time_ns() at the SET
    seq: int  # the store's SET counter at the SET
    ttl_ms: int | None
    deadline: float | None  # time.monotonic() from which the key is gone


class Store:
    """The table, its expiry heap and the protocol's verbs."""

    def __init__(self) -> None:
        self.entries: dict[bytes, Entry] = {}
        self.seq = 0
        self.expired = 0
        # (deadline, seq, key); stale when the key was set again or deleted since
        self._deadlines: list[tuple[float, int, bytes]] = []

    def set(self, key: bytes, value: bytes, ttl_ms: int | None) -> Entry:
        self.seq += 1
        deadline = None if ttl_ms is None else time.monotonic() + ttl_ms / 1000
        entry = Entry(value, f"{random.getrandbits(64):016x}", time.time_ns(), self.seq,
                      ttl_ms, deadline)
        self.entries[key] = entry
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, entry.seq, key))
        return entry

    def get(self, key: bytes) -> Entry | None:
        """The live entry; one whose deadline passed since the last sweep expires here."""
        entry = self.entries.get(key)
        if entry is not None and entry.deadline is not None and time.monotonic() >= entry.deadline:
            del self.entries[key]
            self.expired += 1
            return None
        return entry

    def delete(self, key: bytes) -> bool:
        if self.get(key) is None:
            return False
        del self.entries[key]
        return True

    def sweep(self) -> None:
        now = time.monotonic()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, seq, key = heapq.heappop(self._deadlines)
            entry = self.entries.get(key)
            if entry is not None and entry.seq == seq:
                del self.entries[key]
                self.expired += 1

    async def sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.sweep()

    def dump(self, path: str) -> int:
        """Write the state as it is (entries past their deadline until the next sweep)."""
        lines = [f"kv_asyncio entries={len(self.entries)} expired={self.expired}\n".encode()]
        for key in sorted(self.entries):
            e = self.entries[key]
            ttl = b"-" if e.ttl_ms is None else str(e.ttl_ms).encode()
            ts = f"{e.ts_ns // 10**9}.{e.ts_ns % 10**9:09d} {e.seq} ".encode()
            lines.append(b" ".join([key, e.value, e.id.encode(), ts + ttl]) + b"\n")
        with open(path, "wb") as f:
            f.writelines(lines)
        return len(self.entries)

    def handle(self, line: bytes) -> tuple[bytes, bool]:
        """The reply to one request line, and whether the connection should close."""
        parts = [p for p in line.replace(b"\t", b" ").split(b" ") if p]
        if not parts:
            return b"ERR empty request", False
        cmd, args = parts[0], parts[1:]
        if cmd == b"SET":
            ttl = None
            if len(args) == 3 and args[2].isdigit() and int(args[2]) > 0:
                ttl = int(args[2])
            elif len(args) != 2:
                return b"ERR usage: SET key value [ttl_ms]", False
            return b"OK " + self.set(args[0], args[1], ttl).id.encode(), False
        if cmd == b"GET":
            if len(args) != 1:
                return b"ERR usage: GET key", False
            entry = self.get(args[0])
            if entry is None:
                return b"NONE", False
            return b"VALUE " + entry.value + b" " + entry.id.encode(), False
        if cmd == b"DEL":
            if len(args) != 1:
                return b"ERR usage: DEL key", False
            return (b"DELETED" if self.delete(args[0]) else b"NONE"), False
        if cmd == b"DUMP":
            if len(args) != 1:
                return b"ERR usage: DUMP path", False
            try:
                return f"DUMPED {self.dump(args[0].decode())}".encode(), False
            except (OSError, UnicodeDecodeError) as exc:
                return f"ERR dump: {exc}".encode(), False
        if cmd == b"QUIT":
            return b"BYE", True
        return b"ERR unknown command", False

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    async with asyncio.timeout(IDLE_TIMEOUT):
                        line = await reader.readline()
                except TimeoutError:
                    break
                except ValueError:  # no newline within MAX_LINE bytes
                    writer.write(b"ERR line too long\n")
                    await writer.drain()
                    break
                if not line.endswith(b"\n"):
                    break  # EOF; an unfinished last line is dropped, as the C apps do
                reply, close = self.handle(line[:-1].removesuffix(b"\r"))
                writer.write(reply + b"\n")
                await writer.drain()
                if close:
                    break
        except ConnectionError:
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass


async def main(port: int, host: str) -> None:
    store = Store()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await asyncio.start_server(store.serve, host, port, limit=MAX_LINE)
    sweeper = asyncio.create_task(store.sweep_forever())
    try:
        await stop.wait()
    finally:
        # not wait_closed(): from 3.12 on it waits for every client to hang up;
        # asyncio.run cancels the connection tasks instead
        server.close()
        sweeper.cancel()


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or not sys.argv[1].isdigit():
        print("usage: kv_asyncio.py PORT [BIND_ADDR]", file=sys.stderr)
        sys.exit(2)
    asyncio.run(main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"))
