"""``mig migrate``: ask the primary of an app to hand it to a replica, and wait for it.

The request is a ``Migrate`` record in ``mig.NAME.control``. The primary answers with a
``Handoff`` naming the successor once it has stopped taking input and every record is
acknowledged; the successor answers with a ``Promotion``. A primary that cannot hand over
(no hot replica, the successor did not promote) answers with a ``RequestFailed`` at once,
and the request fails with its reason instead of waiting out the timeout. The
client-visible gap of the switchover is from the primary's freeze
(``Handoff.frozen_ts_ms``) to the promotion.
"""

from __future__ import annotations

import getpass
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

from mig.control.status import refuse_if_nobody_runs
from mig.errors import DecodeError, MigError
from mig.kafka.clients import KafkaSettings, consumer, end_offsets
from mig.kafka.topics import topic_names
from mig.kafka.writer import LogWriter
from mig.wire.auth import authentic
from mig.wire.codec import Codec

__all__ = ["answers", "request_migration", "request_reader", "failure_line"]


def failure_line(app: str, rec: dict[str, Any]) -> str:
    """One line for a RequestFailed record: who could not do what, and why."""
    what = {"migrate": "migrate", "checkpoint": "checkpoint"}.get(rec["request"], rec["request"])
    return f"{rec['member']} could not {what} {app}: {rec['reason']}"


def request_reader(settings: KafkaSettings, app: str, purpose: str, primary: bool,
                   committed: bool) -> Any:
    """A consumer of ``app``'s control topic from its end, for the answers to a request
    about to be written (``purpose``: migrate, checkpoint). Refuses an app whose topic does
    not exist, and one whose members' last statuses say nobody can answer
    (``refuse_if_nobody_runs``; ``primary``: the primary must)."""
    from confluent_kafka import TopicPartition

    topic = topic_names(app)["control"]
    cons = consumer(settings, **{"group.id": f"mig-{purpose}-{app}",
                                 "isolation.level": "read_committed" if committed
                                 else "read_uncommitted",
                                 "fetch.wait.max.ms": 20})
    try:
        meta = cons.list_topics(topic, timeout=10)
        if topic not in meta.topics or meta.topics[topic].error is not None:
            raise MigError(f"no app named {app!r}: topic {topic} does not exist")
        refuse_if_nobody_runs(settings, app, primary=primary)
        cons.assign([TopicPartition(topic, 0, end_offsets(cons, topic).get(0, 0))])
    except BaseException:
        cons.close()
        raise
    return cons


def answers(cons: Any, settings: KafkaSettings, app: str, event: str,
            reader: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The control records that arrived for a request (one consume of ``cons``): those
    signed rightly when the app's are (mig/wire/auth.py) and decodable. A ``RequestFailed`` for
    ``event`` ends the request at once with its reason (MigError)."""
    codec = Codec.default()
    for msg in cons.consume(100, 0.1):
        if msg.error() is not None or not authentic(settings.auth, "control", msg, reader):
            continue
        try:
            name, rec = codec.decode_message(msg.value(), msg.headers())
        except DecodeError:
            continue
        if name == "mig.log.RequestFailed" and rec["event_id"] == event:
            raise MigError(failure_line(app, rec))
        yield name, rec


def request_migration(settings: KafkaSettings, app: str, to: str | None = None,
                      reason: str = "mig migrate", timeout: float = 30.0) -> dict[str, Any]:
    """Write the request and wait for its handoff and promotion. Returns what happened:
    event_id, from_member, to_member, epoch, gap_ms."""
    cons = request_reader(settings, app, "migrate", primary=True, committed=False)
    try:
        event = str(uuid.uuid4())
        writer = LogWriter(settings, app)
        writer.send("control", "mig.log.Migrate", {
            "app": app, "event_id": event, "to_member": to, "reason": reason,
            "requested_by": f"{getpass.getuser()}@{socket.gethostname()}",
            "ts_ms": int(time.time() * 1000)}, key=event)
        writer.commit()
        handoff: dict[str, Any] | None = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # with signed records, a forged Promotion or Handoff is no answer
            for name, rec in answers(cons, settings, app, event, "mig.migrate"):
                if name == "mig.log.Handoff" and rec["event_id"] == event:
                    handoff = rec
                elif name == "mig.log.Promotion" and handoff is None:
                    # a failover, or another migration, changed the primary first: the
                    # primary that would have handed over for this request is gone
                    target = " (the member asked for)" if rec["member"] == to else ""
                    raise MigError(f"{rec['member']}{target} became primary of {app} at epoch"
                                   f" {rec['new_epoch']} by {rec['reason']} before this request"
                                   " was handed over; nothing was migrated for it (see mig"
                                   " status, and run mig migrate again if the app should move)")
                elif (name == "mig.log.Promotion" and handoff is not None
                      and rec["new_epoch"] > handoff["epoch"]):
                    return {"event_id": event, "from_member": handoff["from_member"],
                            "to_member": rec["member"], "epoch": rec["new_epoch"],
                            "gap_ms": rec["ts_ms"] - handoff["frozen_ts_ms"]}
        if handoff is None:
            raise MigError(f"the primary of {app} did not hand over within {timeout:g} s:"
                           " is it running, and is there a hot replica (see mig status)?"
                           + (f" Is {to!r} a replica of {app}?" if to else ""))
        raise MigError(f"{handoff['to_member']} did not become primary within {timeout:g} s"
                       f" of the handoff (event {event})")
    finally:
        cons.close()
