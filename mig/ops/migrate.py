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

import time
import uuid
from typing import Any

from mig.control.requests import answers, request_reader, requested_by
from mig.deadline import Deadline
from mig.errors import MigError
from mig.kafka.clients import KafkaSettings
from mig.kafka.writer import LogWriter

__all__ = ["request_migration"]


def request_migration(settings: KafkaSettings, app: str, to: str | None = None,
                      reason: str = "mig migrate", timeout: float = 30.0) -> dict[str, Any]:
    """Write the request and wait for its handoff and promotion. Returns what happened:
    event_id, from_member, to_member, epoch, gap_ms."""
    reader = request_reader(settings, app, "migrate", primary=True, committed=False)
    try:
        event = str(uuid.uuid4())
        writer = LogWriter(settings, app)
        writer.send("control", "mig.log.Migrate", {
            "app": app, "event_id": event, "to_member": to, "reason": reason,
            "requested_by": requested_by(),
            "ts_ms": int(time.time() * 1000)}, key=event)
        writer.commit()
        handoff: dict[str, Any] | None = None
        deadline = Deadline(timeout)
        while not deadline.passed():
            # with signed records, a forged Promotion or Handoff is no answer
            for name, rec in answers(reader, app, event):
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
        reader.close()
