"""A client of the counter server that rides through a failover.

``python3 client.py HOST:PORT [HOST:PORT ...]`` sends ``incr NAME`` every ``--interval``
seconds and prints each answer. When the connection breaks (the primary died, or handed
the app over) it tries the addresses in turn until one answers, and prints how long it
was without an answer: the failover gap as a client sees it. Every answer is one more
than the last one, on the old primary and on the new one; an increment whose answer was
lost with the connection is sent again, and may then count twice.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"'{text}' is not HOST:PORT")
    return host, int(port)


def connect(addresses: list[tuple[str, int]], timeout: float) -> socket.socket | None:
    for address in addresses:
        try:
            return socket.create_connection(address, timeout=timeout)
        except OSError:
            continue
    return None


def request(sock: socket.socket, line: str) -> str:
    sock.sendall(line.encode() + b"\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    return data.decode().strip()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("addresses", nargs="+", type=parse_address, metavar="HOST:PORT",
                        help="the members' addresses, tried in turn")
    parser.add_argument("--name", default="apples", help="the counter to increment")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between two")
    parser.add_argument("--count", type=int, default=0, help="stop after this many answers"
                        " (default: never)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sock: socket.socket | None = None
    answered = 0
    last_answer = time.monotonic()
    while not args.count or answered < args.count:
        if sock is None:
            sock = connect(args.addresses, timeout=2.0)
            if sock is None:
                time.sleep(0.2)
                continue
        try:
            value = request(sock, f"incr {args.name}")
        except OSError:
            sock.close()
            sock = None
            continue
        now = time.monotonic()
        gap = now - last_answer
        last_answer = now
        answered += 1
        note = f"  (no answer for {gap:.1f} s)" if gap > 2 * args.interval + 1 else ""
        print(f"{args.name} = {value}{note}", flush=True)
        time.sleep(args.interval)
    if sock is not None:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
