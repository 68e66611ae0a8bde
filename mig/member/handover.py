"""A replica becomes the primary's recorder: the handover after a promotion.

``Replayer.run`` returns once the replica has won the primary role and every process of
its app has gone live (or is about to, at its next call): the app's transactional writer
is open, the rings are turning around. ``take_over`` hands those to a ``Recorder``, which
records from there on as any primary does; processes still replaying their last records
are fed on each turn (``Replayer.settle_step``), and with ``[app] stdin = "topic"`` the
input is fed on once every process has taken its last logged record
(``Replayer.stdin_replayed``, mig/member/stdin.py).
"""

from __future__ import annotations

from typing import Any

from mig.member.primary import Recorder, RecordStats
from mig.member.replica import Replayer

__all__ = ["take_over"]


def take_over(replayer: Replayer, metrics: Any = None) -> RecordStats:
    """Go on as the primary of the app ``replayer`` was promoted for; returns when the app
    ends, is handed over or this member is fenced (as ``Recorder.run``)."""
    if replayer.stats.promoted_epoch is None or replayer.writer is None:
        raise ValueError("the replica was not promoted")
    recorder = Recorder(replayer.cfg, replayer.settings, replayer.run_dir,
                        member=replayer.member, epoch=replayer.stats.promoted_epoch,
                        metrics=metrics)
    return recorder.adopt(replayer.writer, replayer.proc, replayer.rings,
                          replayer.batch_next, on_turn=replayer.settle_step,
                          stdin_pipe=replayer.stdin_pipe, replayed=replayer.stdin_replayed)
