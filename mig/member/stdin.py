"""The program's standard input from a topic (``[app] stdin = "topic"``).

``producer | mig input APP.TOML`` appends what it reads to ``mig.NAME.input`` (``publish``);
each chunk is acknowledged by Kafka before ``mig input`` reads on. On every member the
program's stdin is a pipe whose write end the member's agent holds (``StdinPipe``). The
primary's agent feeds it from the topic (``Feeder``), starting at the first byte the
program has not read; a replica feeds nothing (its program's reads come from the log).

How a member knows where to start: the shim counts, per process, the bytes the program
read from that pipe, recorded or replayed alike (ring field ``stdin_read``; it recognises
the pipe by the device and inode the agent gives it in ``MIG_STDIN``). A promoted replica
sums the counts of every ring (``consumed``) once its processes are live, and its feeder
skips that many bytes of the topic: what the old primary's program read and logged is
replayed, what it had not read (still in its pipe, or never fed) is fed again. So an input
byte the log shows read is read once, and no acknowledged byte is lost.
"""

from __future__ import annotations

import os
import select
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

import structlog

from mig.errors import MigError
from mig.kafka.clients import KafkaSettings
from mig.wire.identity import member_id

__all__ = ["StdinPipe", "Feeder", "publish", "consumed", "CHUNK"]

log = structlog.get_logger("mig.appinput")

CHUNK = 64 * 1024  # bytes per InputChunk record at most


class StdinPipe:
    """The pipe that is the program's stdin: ``read_fd`` goes to the app, ``write_fd``
    stays with the agent. ``ident`` is what the shim matches (``MIG_STDIN``)."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.write_fd, False)  # the feeder's writes wait in select()
        st = os.fstat(self.read_fd)
        self.dev, self.ino = st.st_dev, st.st_ino

    @property
    def ident(self) -> str:
        return f"{self.dev}:{self.ino}"

    def close_read_end(self) -> None:
        """After the app has it: the agent keeps only the write end."""
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1


def consumed(run_dir: Path) -> int:
    """Bytes of stdin the app's processes have read, by their rings (live or ended)."""
    from mig.ring.memory import Ring

    total = 0
    for path in sorted(run_dir.glob("*.ring")):
        ring = Ring(path)
        try:
            total += ring.stdin_read
        finally:
            ring.close()
    return total


def publish(settings: KafkaSettings, app: str, stream: BinaryIO, end: bool,
            progress: Any = None) -> tuple[int, int]:
    """Append ``stream`` to ``mig.NAME.input`` as it arrives, each chunk acknowledged
    before the next read (a producer piping into ``mig input`` is told its bytes are safe
    as soon as it can write more); with ``end``, then mark the end of the input. Returns
    (bytes, records)."""
    from mig.kafka.writer import LogWriter

    writer = LogWriter(settings, app)
    key = member_id("input")
    sent = records = 0
    fd = stream.fileno()
    while True:
        try:
            data = os.read(fd, CHUNK)
        except OSError as exc:
            raise MigError(f"cannot read the input to send: {exc.strerror}") from exc
        if not data and not end:
            break
        writer.send("input", "mig.log.InputChunk", {
            "app": app, "data": data, "end": not data, "ts_ns": time.time_ns()}, key=key)
        writer.flush()
        records += 1
        sent += len(data)
        if progress is not None:
            progress(sent, records)
        if not data:
            break
    return sent, records


class Feeder:
    """Writes the input topic's bytes, from byte ``skip`` on, into the app's stdin pipe, on
    a thread of its own; at an end-of-input chunk it closes the pipe (the program reads
    end-of-file). ``stop()`` ends it (a fenced or handed-over primary feeds no more)."""

    def __init__(self, settings: KafkaSettings, app: str, pipe: StdinPipe, skip: int) -> None:
        self.settings = settings
        self.app = app
        self.pipe = pipe
        self.skip = skip
        self.fed = 0  # bytes written into the pipe
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mig-stdin-feeder",
                                        daemon=True)

    def start(self) -> Feeder:
        log.info("mig.appinput.feeding", app=self.app, from_byte=self.skip)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        try:
            self._feed()
        except Exception as exc:  # the thread's end: say why in the agent's log
            # the pipe stays open: the program waits for input rather than take this for
            # the end of it
            self.error = str(exc)
            log.error("mig.appinput.feed_failed", app=self.app, error=str(exc))
            return
        try:  # the end of the input (or this member feeds no more): end-of-file
            os.close(self.pipe.write_fd)
        except OSError:
            pass

    def _feed(self) -> None:
        from confluent_kafka import TopicPartition

        from mig.kafka.reader import END, REFUSED, UNDECODABLE, Reader
        from mig.kafka.topics import topic_names

        topic = topic_names(self.app)["input"]
        # a consumer error is said and passes (a broker lost or moving: the consumer goes on
        # by itself); forged and undecodable records come here to be placed first (below)
        reader = Reader(self.settings, self.app, "mig.appinput", errors="log",
                        refused="yield", undecodable="yield",
                        conf={"group.id": f"mig-input-{self.app}", "enable.auto.commit": False,
                              "isolation.level": "read_committed", "fetch.wait.max.ms": 20})
        try:
            reader.assign([TopicPartition(topic, 0, 0)])
            at = 0  # stream position of the next byte of the topic
            first = True
            while not self._stop.is_set():
                for item in reader.poll(1, 0.2):
                    if item.kind == END:
                        continue
                    if first and item.offset > 0:
                        # the bytes are counted from the topic's first record: without it,
                        # no position in the input can be found (never skip or repeat input)
                        raise MigError(f"{topic} no longer starts at offset 0 (its first"
                                       f" record is at {item.offset}): the input's position"
                                       f" {self.skip} cannot be found")
                    first = False
                    if item.kind == REFUSED:
                        continue
                    if item.kind == UNDECODABLE:
                        log.error("mig.appinput.undecodable", topic=topic, offset=item.offset,
                                  reason=item.reason)
                        continue
                    if item.name != "mig.log.InputChunk":
                        continue
                    assert item.record is not None
                    data: bytes = item.record["data"]
                    if at + len(data) > self.skip:
                        self._write(data[max(0, self.skip - at):])
                    at += len(data)
                    if item.record["end"]:
                        log.info("mig.appinput.end", app=self.app, bytes=at)
                        return
        finally:
            reader.close()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._stop.is_set():
            if not select.select([], [self.pipe.write_fd], [], 0.2)[1]:
                continue  # the pipe is full: the program reads slower than the input comes
            try:
                n = os.write(self.pipe.write_fd, view)
            except BlockingIOError:
                continue
            except BrokenPipeError:  # the program closed its stdin: nobody reads on
                self._stop.set()
                return
            view = view[n:]
            self.fed += n

