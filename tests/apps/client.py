"""client.py -- the client side of the test applications' line protocol.

kvserver, workers, sigselect and kv_asyncio.py are the programs mig's integration tests
record on a primary and replay on a backup; this module is how tests drive them and read
their dumps. It knows nothing of mig either. Every call is bounded by a socket timeout.

``run_ops`` issues a deterministic (per seed) random mix of SET/GET/DEL over a few
connections. Each round sends one request on every connection before reading any reply, so
the server really sees concurrent clients, but the requests of a round touch distinct keys:
whatever order the server serves them in, the replies are the same, and the returned log
can be checked against a simple model.

CLI: ``python3 client.py HOST PORT N SEED [--dump PATH]`` prints one ``request<TAB>reply``
line per operation (and ``DUMPED <n>`` after a dump).
"""

from __future__ import annotations

import argparse
import random
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Connection",
    "Dump",
    "ProtocolError",
    "dump",
    "read_dump",
    "request",
    "run_ops",
    "wait_port",
]


class ProtocolError(Exception):
    """The server answered something the protocol does not allow here."""


class Connection:
    """One TCP connection speaking the line protocol (one request line, one reply line)."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._buf = b""

    def send(self, line: str) -> None:
        self._sock.sendall(line.encode() + b"\n")

    def recv_line(self) -> str:
        """The next reply line, without its newline; ConnectionError if the server closed."""
        while b"\n" not in self._buf:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode()

    def request(self, line: str) -> str:
        self.send(line)
        return self.recv_line()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def request(host: str, port: int, line: str, timeout: float = 10.0) -> str:
    """Send one request on a fresh connection and return its reply line."""
    with Connection(host, port, timeout) as conn:
        return conn.request(line)


def _random_op(rng: random.Random, key: str) -> str:
    roll = rng.random()
    if roll < 0.5:
        return f"SET {key} v{rng.getrandbits(32):08x}"
    if roll < 0.85:
        return f"GET {key}"
    return f"DEL {key}"


def run_ops(host: str, port: int, n: int, seed: int, keys: int = 200, conns: int = 4,
            timeout: float = 10.0) -> list[tuple[str, str]]:
    """Issue ``n`` SET/GET/DEL requests (about 50/35/15 %) on keys ``k0``..``k{keys-1}``,
    round robin over ``conns`` connections, and return the ``(request, reply)`` log in
    request order. The requests depend only on ``seed``, ``n``, ``keys`` and ``conns``."""
    if keys < conns:
        raise ValueError(f"keys ({keys}) must be at least conns ({conns})")
    rng = random.Random(seed)
    log: list[tuple[str, str]] = []
    socks: list[Connection] = []
    try:
        for _ in range(conns):
            socks.append(Connection(host, port, timeout))
        while len(log) < n:
            size = min(conns, n - len(log))
            reqs = [_random_op(rng, f"k{k}") for k in rng.sample(range(keys), size)]
            for conn, req in zip(socks, reqs, strict=False):
                conn.send(req)
            for conn, req in zip(socks, reqs, strict=False):
                log.append((req, conn.recv_line()))
    finally:
        for conn in socks:
            conn.close()
    return log


def dump(host: str, port: int, path: str | Path, timeout: float = 30.0) -> int:
    """Ask the server to DUMP its state to ``path`` (no spaces); the entry count it wrote."""
    reply = request(host, port, f"DUMP {path}", timeout)
    word, _, count = reply.partition(" ")
    if word != "DUMPED" or not count.isdigit():
        raise ProtocolError(f"DUMP {path}: {reply!r}")
    return int(count)


@dataclass
class Dump:
    """A dump file: the header's app name and ``name=value`` fields, and the entries by key
    (``[value, id, sec.nsec, seq, ...]``, kv_asyncio adding ``ttl_ms`` or ``-``)."""

    app: str
    header: dict[str, str] = field(default_factory=dict)
    entries: dict[str, list[str]] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)  # in file order


def read_dump(path: str | Path) -> Dump:
    lines = Path(path).read_text().splitlines()
    if not lines:
        raise ProtocolError(f"{path}: empty dump")
    app, *fields = lines[0].split()
    result = Dump(app=app, header=dict(f.split("=", 1) for f in fields))
    for line in lines[1:]:
        key, *rest = line.split(" ")
        result.keys.append(key)
        result.entries[key] = rest
    return result


def wait_port(host: str, port: int, timeout: float) -> None:
    """Return once a TCP connect to ``host:port`` succeeds; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from exc
            time.sleep(0.02)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Drive a mig test app with random requests.")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("n", type=int, help="number of requests")
    parser.add_argument("seed", type=int)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--dump", metavar="PATH", help="DUMP the state here afterwards")
    args = parser.parse_args(argv)
    try:
        for req, reply in run_ops(args.host, args.port, args.n, args.seed, args.keys):
            print(f"{req}\t{reply}")
        if args.dump:
            print(f"DUMPED {dump(args.host, args.port, args.dump)}")
    except (OSError, ProtocolError) as exc:
        print(f"client: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
