"""ackclient.py -- a write workload that survives a failover and records what it was promised.

The failover tests kill a primary in the middle of a workload and let a backup take over on
another address. What they must prove is that nothing the service acknowledged is lost.
``run_writes`` issues SETs of unique keys strictly one after another on one connection and
appends every acknowledged write -- only those whose ``OK`` reply was read -- to a JSONL ack
log, flushed at once, so even a crash of the test process loses no acknowledgement. It
knows nothing of mig; it speaks the line protocol of the test apps through ``client.py``.

On any error (connect refused, reset, timeout, end of stream, a reply other than ``OK``)
the current write is not acknowledged: the client closes the connection, waits (10 ms,
doubling to 200 ms, reset by the next ack), connects to the next address round robin and
sends the same key with the same value again. A repeated SET of the same value is
idempotent, so a write the old primary applied but never acknowledged does no harm. Each
interruption is reported as a gap: from the last ack before the first failed attempt to the
first ack after it, with the address before and after -- the gap a client sees.

``check_acked`` then compares the ack log with a DUMP of the surviving server: every
acknowledged key must be there with the acknowledged value.

Every socket call is bounded by the per-operation timeout; a run ends after ``count`` acks,
when its deadline passes (overrun by at most one operation's timeout) or when the stop file
appears, whichever comes first.

CLI: ``python3 ackclient.py HOST:PORT[,HOST:PORT...] COUNT ACK_LOG --prefix P
[--deadline S]`` prints the report as one JSON line at the end and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

if __package__:
    from .client import Connection, Dump, ProtocolError
else:  # run as a script from its own folder
    from client import Connection, Dump, ProtocolError

__all__ = [
    "Gap",
    "WriteReport",
    "check_acked",
    "format_addr",
    "parse_addrs",
    "run_writes",
]

BACKOFF_FIRST_S = 0.01
BACKOFF_MAX_S = 0.2


@dataclass
class Gap:
    """One interruption as the client saw it. ``addr_before`` is None when the run's first
    write failed (``t_before`` is then the run's start); ``addr_after`` and ``t_after`` are
    None when the run ended before another ack (``seconds`` then runs to the end)."""

    addr_before: str | None
    addr_after: str | None
    t_before: float  # time.time() of the last ack before the first failed attempt
    t_after: float | None  # time.time() of the first ack after it
    seconds: float
    failed_attempts: int


@dataclass
class WriteReport:
    acked: int = 0
    attempts: int = 0  # tries of a write, each failing or acked (acked + errors)
    errors: int = 0
    gaps: list[Gap] = field(default_factory=list)
    error_kinds: dict[str, int] = field(default_factory=dict)  # exception name -> count
    stopped: str = ""  # "count", "deadline" or "stop_file"
    elapsed_s: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def format_addr(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_addrs(text: str) -> list[tuple[str, int]]:
    """``HOST:PORT[,HOST:PORT...]`` (an IPv6 host in brackets) -> ``[(host, port), ...]``."""
    addrs = []
    for item in text.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"not HOST:PORT: {item!r}")
        addrs.append((host.removeprefix("[").removesuffix("]"), int(port)))
    return addrs


def _set(conn: Connection, key: str, value: str) -> None:
    reply = conn.request(f"SET {key} {value}")
    if reply != "OK" and not reply.startswith("OK "):
        raise ProtocolError(f"SET {key}: {reply!r}")


def run_writes(addresses: list[tuple[str, int]], count: int, ack_log: Path, *, prefix: str,
               deadline_s: float, per_op_timeout_s: float = 1.0,
               stop_file: Path | None = None, interval_s: float = 0.0) -> WriteReport:
    """SET ``{prefix}-{i:06d}`` to ``v{i}-{random hex}`` for i = 0.. until ``count`` are
    acknowledged, each ack appended to ``ack_log`` as ``{"key", "value", "addr", "t_ack"}``.
    ``interval_s`` spaces the starts of successive writes (not the retries) to pace the
    workload; 0 sends each write as soon as the previous one is acknowledged."""
    if not addresses:
        raise ValueError("no addresses")
    if not prefix or any(c.isspace() for c in prefix):
        raise ValueError(f"the prefix must be a non-empty word: {prefix!r}")
    report = WriteReport()
    kinds: Counter[str] = Counter()
    started = time.monotonic()
    t_started = time.time()
    deadline = started + deadline_s
    conn: Connection | None = None
    conn_addr = ""
    index = 0  # the address to connect to next
    backoff = BACKOFF_FIRST_S
    last_ack: tuple[str | None, float, float] = (None, t_started, started)  # addr, wall, mono
    broken: int = 0  # failed attempts since the last ack; > 0 means an interruption is open
    last_start = 0.0

    def stop_reason() -> str:
        if time.monotonic() >= deadline:
            return "deadline"
        if stop_file is not None and stop_file.exists():
            return "stop_file"
        return ""

    with open(ack_log, "a", encoding="utf-8") as log:
        try:
            i = 0
            while report.acked < count and not report.stopped:
                key, value = f"{prefix}-{i:06d}", f"v{i}-{os.urandom(4).hex()}"
                if interval_s > 0:
                    wait = last_start + interval_s - time.monotonic()
                    if wait > 0:
                        time.sleep(min(wait, max(0.0, deadline - time.monotonic())))
                last_start = time.monotonic()
                while True:
                    report.stopped = stop_reason()
                    if report.stopped:
                        break
                    report.attempts += 1
                    try:
                        if conn is None:
                            addr = addresses[index]
                            timeout = min(per_op_timeout_s, max(0.01, deadline - time.monotonic()))
                            conn = Connection(addr[0], addr[1], timeout=timeout)
                            conn_addr = format_addr(addr)
                        _set(conn, key, value)
                    except (OSError, ProtocolError, ValueError) as exc:
                        report.errors += 1
                        kinds[type(exc).__name__] += 1
                        broken += 1
                        if conn is not None:
                            conn.close()
                            conn = None
                        index = (index + 1) % len(addresses)
                        time.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
                        backoff = min(backoff * 2, BACKOFF_MAX_S)
                        continue
                    t_ack, mono_ack = time.time(), time.monotonic()
                    log.write(json.dumps({"key": key, "value": value, "addr": conn_addr,
                                          "t_ack": t_ack}) + "\n")
                    log.flush()
                    report.acked += 1
                    if broken:
                        report.gaps.append(Gap(last_ack[0], conn_addr, last_ack[1], t_ack,
                                               mono_ack - last_ack[2], broken))
                        broken = 0
                    last_ack = (conn_addr, t_ack, mono_ack)
                    backoff = BACKOFF_FIRST_S
                    break
                i += 1
        finally:
            if conn is not None:
                conn.close()
    if not report.stopped:
        report.stopped = "count"
    if broken:  # the run ended inside an interruption
        report.gaps.append(Gap(last_ack[0], None, last_ack[1], None,
                               time.monotonic() - last_ack[2], broken))
    report.error_kinds = dict(kinds)
    report.elapsed_s = time.monotonic() - started
    return report


def check_acked(ack_log: Path, dump: Dump) -> list[str]:
    """Every key acknowledged in ``ack_log`` must be in ``dump`` with the value of its last
    ack. The problems, one line each; an empty list means nothing acknowledged was lost."""
    problems: list[str] = []
    acked: dict[str, dict[str, object]] = {}
    for lineno, line in enumerate(Path(ack_log).read_text(encoding="utf-8").splitlines(), 1):
        try:
            record = json.loads(line)
            acked[record["key"]] = record
        except (ValueError, KeyError, TypeError):
            problems.append(f"{ack_log}:{lineno}: not an ack record: {line!r}")
    for key, record in acked.items():
        where = f"acked {record['value']} at {record['addr']} t={record['t_ack']}"
        entry = dump.entries.get(key)
        if entry is None:
            problems.append(f"missing {key}: {where}")
        elif not entry or entry[0] != record["value"]:
            got = entry[0] if entry else "(no value)"
            problems.append(f"wrong {key}: {where}, the dump has {got}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write unique keys through a failover; log every acknowledged write.")
    parser.add_argument("addresses", type=parse_addrs, help="HOST:PORT[,HOST:PORT...]")
    parser.add_argument("count", type=int, help="acknowledged writes to reach")
    parser.add_argument("ack_log", type=Path, help="JSONL file the acks are appended to")
    parser.add_argument("--prefix", required=True, help="keys are PREFIX-000000, ...")
    parser.add_argument("--deadline", type=float, default=60.0, metavar="S",
                        help="stop after S seconds in all (default 60)")
    parser.add_argument("--timeout", type=float, default=1.0, metavar="S",
                        help="bound of each socket call (default 1)")
    parser.add_argument("--interval", type=float, default=0.0, metavar="S",
                        help="space the starts of successive writes by S seconds")
    parser.add_argument("--stop-file", type=Path, metavar="PATH",
                        help="stop as soon as this file exists")
    args = parser.parse_args(argv)
    report = run_writes(args.addresses, args.count, args.ack_log, prefix=args.prefix,
                        deadline_s=args.deadline, per_op_timeout_s=args.timeout,
                        stop_file=args.stop_file, interval_s=args.interval)
    print(report.to_json(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
