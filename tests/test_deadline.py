"""mig/deadline.py: the one helper of the loops that wait or retry."""

from __future__ import annotations

import time

import pytest

from mig.deadline import Deadline, retry, wait_until


class Flaky(Exception):
    pass


def test_retry_passes_the_errors_it_is_told_until_the_call_returns() -> None:
    tries: list[float] = []

    def call(deadline: Deadline) -> str:
        tries.append(deadline.left())
        if len(tries) < 3:
            raise Flaky
        return "done"

    assert retry(call, 5.0, on=Flaky, pause=0.01) == "done"
    assert len(tries) == 3
    assert all(0 < left <= 5.0 for left in tries) and tries[0] > tries[-1]


def test_retry_raises_the_last_error_once_the_deadline_passed() -> None:
    tries = 0

    def call(deadline: Deadline) -> None:
        nonlocal tries
        tries += 1
        raise Flaky(tries)

    started = time.monotonic()
    with pytest.raises(Flaky) as info:
        retry(call, 0.2, on=Flaky, pause=0.02)
    assert 0.2 <= time.monotonic() - started < 2.0
    assert tries >= 3 and info.value.args == (tries,)


def test_retry_raises_any_other_error_at_once() -> None:
    tries = 0

    def call(deadline: Deadline) -> None:
        nonlocal tries
        tries += 1
        raise KeyError("not passing")

    with pytest.raises(KeyError):
        retry(call, 5.0, on=Flaky)
    assert tries == 1


def test_left_is_clamped_for_one_call_timeout() -> None:
    deadline = Deadline(10.0)
    assert deadline.left(cap=2.0) == 2.0
    assert 9.0 < deadline.left() <= 10.0
    gone = Deadline(-1.0)
    assert gone.passed() and gone.left() == 0.0 and gone.left(0.2, 2.0) == 0.2
    gone.renew(10.0)
    assert not gone.passed()


def test_wait_until_says_whether_the_condition_came_true_in_time() -> None:
    at = time.monotonic() + 0.1
    assert wait_until(lambda: time.monotonic() >= at, 5.0, pause=0.01)
    looks = 0

    def never() -> bool:
        nonlocal looks
        looks += 1
        return False

    started = time.monotonic()
    assert not wait_until(never, 0.1, pause=0.02)
    assert 0.1 <= time.monotonic() - started < 2.0 and looks >= 3
