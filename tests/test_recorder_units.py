"""Pure logic of the recorder: cutting batches under Kafka's message size."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mig.channel import RawCall
from mig.recorder import split_batches


def _call(seq: int, size: int) -> RawCall:
    return RawCall(3, 0, 0, 0, seq, 0, (0, 0, 0, 0), 0, 0, 0, b"x" * size)


@given(st.lists(st.integers(0, 5000), max_size=60), st.integers(200, 20000))
def test_batches_keep_order_and_size(sizes, limit):
    calls = [_call(i, n) for i, n in enumerate(sizes)]
    parts = split_batches(calls, limit)
    assert [c for part in parts for c in part] == calls
    assert all(part for part in parts)
    for part in parts:
        if len(part) > 1:
            assert sum(96 + len(c.payload) for c in part) <= limit


def test_six_mib_of_reads_become_several_batches():
    calls = [_call(i, 65536) for i in range(96)]
    parts = split_batches(calls, 1048576 // 2)
    assert len(parts) == 14 and max(len(p) for p in parts) == 7
