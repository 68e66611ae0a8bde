"""mig/member/commit.py's group commit: Kafka's acknowledgements release the batches sent
before them, in send order, and no further."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

from mig.member.primary import Recorder
from tests.ring.support import new_ring


class _Writer:
    pump = None  # the Python path (the native one: tests/kafka/test_pump.py)

    def serve(self, timeout: float = 0.0) -> None:
        pass


def test_an_acknowledgement_releases_the_batches_sent_before_it_and_no_further(
        tmp_path: Path) -> None:
    rings = {lpid: new_ring(tmp_path / f"{lpid}.ring", lpid=lpid) for lpid in ("1", "2")}
    rec = Recorder.__new__(Recorder)
    rec.rings = rings
    rec.stats = type("Stats", (), {"barrier_commits": 0})()
    waits: list[float] = []  # mig_commit_seconds: what the released outputs waited for
    rec.metrics = type("Metrics", (), {"commit": staticmethod(waits.append)})()
    first: list[Any] = ["1", 10, True, 0.0]
    second: list[Any] = ["2", 5, False, 0.0]  # still in flight
    third: list[Any] = ["1", 20, True, 0.0]  # acknowledged, but sent after the second
    rec._in_flight = deque([first, second, third])
    writer: Any = _Writer()
    rec._settle_acks(writer)
    assert rings["1"].committed_seq == 10 and rings["2"].committed_seq == 0
    assert list(rec._in_flight) == [second, third] and len(waits) == 1
    second[2] = True
    rec._settle_acks(writer)
    assert rings["1"].committed_seq == 20 and rings["2"].committed_seq == 5
    assert not rec._in_flight and len(waits) == 3 and min(waits) > 0
    for ring in rings.values():
        ring.close()
