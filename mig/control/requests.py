"""Operators' requests through the control topic, and their answers.

``mig migrate`` and ``mig checkpoint`` write a request (``Migrate``, ``CheckpointRequest``)
into ``mig.NAME.control`` and read the topic from there for the answer: the records that
do the work (``Handoff`` and ``Promotion``, or a new checkpoint manifest), or a
``RequestFailed`` naming the request, which ends it at once with its reason.
"""

from __future__ import annotations

import getpass
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

from mig.checkpoint.store import list_manifests
from mig.control.status import refuse_if_nobody_runs
from mig.deadline import Deadline
from mig.errors import MigError
from mig.kafka.clients import KafkaSettings, end_offsets
from mig.kafka.reader import RECORD, Reader
from mig.kafka.topics import topic_names
from mig.kafka.writer import LogWriter

__all__ = ["answers", "failure_line", "request_checkpoint", "request_reader", "requested_by"]


def requested_by() -> str:
    """Who asks: user@host."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def failure_line(app: str, rec: dict[str, Any]) -> str:
    """One line for a RequestFailed record: who could not do what, and why."""
    what = {"migrate": "migrate", "checkpoint": "checkpoint"}.get(rec["request"], rec["request"])
    return f"{rec['member']} could not {what} {app}: {rec['reason']}"



def request_reader(settings: KafkaSettings, app: str, purpose: str, primary: bool,
                   committed: bool) -> Reader:
    """A reader of ``app``'s control topic from its end, for the answers to a request about
    to be written (``purpose``: migrate, checkpoint; its refusals are said as
    ``mig.PURPOSE.unauthenticated``). Refuses an app whose topic does not exist, and one
    whose members' last statuses say nobody can answer (``refuse_if_nobody_runs``;
    ``primary``: the primary must)."""
    from confluent_kafka import TopicPartition

    topic = topic_names(app)["control"]
    # consumer errors and undecodable records are no answer: skipped
    reader = Reader(settings, app, f"mig.{purpose}", errors="skip", undecodable="skip",
                    conf={"group.id": f"mig-{purpose}-{app}",
                          "isolation.level": "read_committed" if committed
                          else "read_uncommitted",
                          "fetch.wait.max.ms": 20})
    try:
        cons = reader.consumer
        meta = cons.list_topics(topic, timeout=10)
        if topic not in meta.topics or meta.topics[topic].error is not None:
            raise MigError(f"no app named {app!r}: topic {topic} does not exist")
        refuse_if_nobody_runs(settings, app, primary=primary)
        reader.assign([TopicPartition(topic, 0, end_offsets(cons, topic).get(0, 0))])
    except BaseException:
        reader.close()
        raise
    return reader



def answers(reader: Reader, app: str, event: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The control records that arrived for a request (one poll of ``reader``): those
    signed rightly when the app's are (mig/wire/auth.py) and decodable. A ``RequestFailed`` for
    ``event`` ends the request at once with its reason (MigError)."""
    for item in reader.poll(100, 0.1):
        if item.kind != RECORD or item.name is None or item.record is None:
            continue  # the end of the topic
        if item.name == "mig.log.RequestFailed" and item.record["event_id"] == event:
            raise MigError(failure_line(app, item.record))
        yield item.name, item.record


def request_checkpoint(settings: KafkaSettings, app: str, timeout: float = 60.0
                       ) -> dict[str, Any]:
    """Ask for a checkpoint now (a CheckpointRequest in mig.NAME.control) and wait for its
    manifest, which is returned. A member that cannot take it answers with a RequestFailed:
    raises MigError with its reason at once; with no answer, after ``timeout`` seconds."""
    reader = request_reader(settings, app, "checkpoint", primary=False, committed=True)
    try:
        asked = int(time.time() * 1000)
        event = str(uuid.uuid4())
        writer = LogWriter(settings, app)
        writer.send("control", "mig.log.CheckpointRequest", {
            "app": app, "event_id": event, "reason": "mig checkpoint",
            "requested_by": requested_by(), "ts_ms": asked},
            key=event)
        writer.commit()
        deadline = Deadline(timeout)
        next_look = 0.0
        while not deadline.passed():
            for _ in answers(reader, app, event):
                pass  # only a RequestFailed for this request matters here (it raises)
            if time.monotonic() >= next_look:
                fresh = [m for m in list_manifests(settings, app) if m["created_ms"] >= asked]
                if fresh:
                    return fresh[-1]
                next_look = time.monotonic() + 0.5
    finally:
        reader.close()
    raise MigError(f"no checkpoint of {app} within {timeout:g} s: does a replica follow it,"
                   " or its primary run, with [checkpoints] enabled (and when_alone) and CRIU"
                   " (see mig status and mig doctor)?")

