"""A control topic's history, as an app that ran for hours leaves it: the heartbeats of a
primary and the statuses of a replica, one of each every 200 ms, with their Kafka
timestamps spread the same way (the broker's time index finds records by them). Written
into a new app's topics before anything else, so its timestamps grow with its offsets.
Used by tests/member/test_failover.py and bench/status_bench.py."""

from __future__ import annotations

from typing import Any

from mig.kafka.clients import producer
from mig.kafka.topics import ensure_topics
from mig.wire.codec import Codec

__all__ = ["control_history"]


def control_history(settings: Any, app: str, records: int, end_ms: int) -> None:
    """``records`` records into ``mig.APP.control`` (made if missing), alternately a
    Heartbeat of primary "p" and a MemberStatus of replica "r", 100 ms apart by their
    Kafka timestamps, the last at ``end_ms``."""
    ensure_topics(settings, app)
    codec = Codec.default()
    prod = producer(settings, **{"linger.ms": 50})
    for i in range(records):
        ts = end_ms - (records - 1 - i) * 100
        if i % 2:
            name, rec = "mig.log.Heartbeat", {
                "app": app, "member": "p", "role": "PRIMARY", "epoch": 1, "ts_ms": ts,
                "calls_offset": i, "host": "h"}
        else:
            name, rec = "mig.log.MemberStatus", {
                "app": app, "member": "r", "role": "REPLICA", "epoch": 1, "lag_records": 0,
                "lag_ms": 0, "health": "replaying", "ts_ms": ts, "host": "h",
                "calls_offset": i}
        value = codec.encode(name, rec, validate=False)
        while True:
            try:
                prod.produce(f"mig.{app}.control", value, key=rec["member"],
                             headers=codec.headers(name), timestamp=ts)
                break
            except BufferError:  # the client's queue is full: let it send
                prod.poll(0.05)
        prod.poll(0)
    if prod.flush(60):
        raise AssertionError(f"the control history of {app} was not all written")
