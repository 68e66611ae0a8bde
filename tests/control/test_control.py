"""ControlView: what a member concludes from the control topic's records, in order."""

from __future__ import annotations

from mig.control.view import ControlView


def _beat(member: str, epoch: int, role: str = "PRIMARY") -> tuple[str, dict]:
    return "mig.log.Heartbeat", {"app": "a", "member": member, "role": role, "epoch": epoch,
                                 "ts_ms": 0, "calls_offset": -1, "host": None}


def _status(member: str, lag: int, health: str = "replaying", role: str = "REPLICA",
            epoch: int = 1) -> tuple[str, dict]:
    return "mig.log.MemberStatus", {"app": "a", "member": member, "role": role,
                                    "epoch": epoch, "lag_records": lag, "lag_ms": 0,
                                    "health": health, "ts_ms": 0, "host": None,
                                    "calls_offset": -1}


def _claim(member: str, epoch: int) -> tuple[str, dict]:
    return "mig.log.Claim", {"app": "a", "member": member, "epoch": epoch,
                             "reason": "failover", "lag_records": 0, "ts_ms": 0}


def _promotion(member: str, epoch: int) -> tuple[str, dict]:
    return "mig.log.Promotion", {"app": "a", "member": member, "new_epoch": epoch,
                                 "previous_epoch": epoch - 1, "calls_offsets": [], "ts_ms": 0,
                                 "detection_ms": None, "promotion_ms": None,
                                 "reason": "failover"}


def _feed(view: ControlView, records, at: float) -> None:
    for name, rec in records:
        view.on_record(name, rec, now=at)


def test_the_first_claim_for_an_epoch_wins_and_stale_claims_move_on():
    view = ControlView("a")
    _feed(view, [_beat("p", 1), _claim("r2", 2), _claim("r1", 2)], at=10.0)
    assert view.winner(2) == "r2"
    assert view.claim_epoch(now=11.0, stale_after_s=5) == 2  # r2 is still promoting
    assert view.claim_epoch(now=16.0, stale_after_s=5) == 3  # r2 never promoted
    _feed(view, [_promotion("r2", 2)], at=12.0)
    assert (view.epoch, view.primary, view.last_primary_seen) == (2, "r2", 12.0)
    assert view.claim_epoch(now=30.0, stale_after_s=5) == 3


def test_heartbeats_of_an_older_epoch_do_not_count_as_the_primary_alive():
    view = ControlView("a")
    _feed(view, [_promotion("r1", 2)], at=5.0)
    _feed(view, [_beat("old", 1)], at=9.0)  # a zombie of epoch 1
    assert view.primary == "r1" and view.last_primary_seen == 5.0


def test_a_stopped_primary_is_not_taken_over_until_a_new_promotion():
    view = ControlView("a")
    _feed(view, [_beat("p", 1), _status("p", 0, "stopped", role="PRIMARY")], at=1.0)
    assert view.primary_stopped
    _feed(view, [_promotion("r1", 2)], at=2.0)
    assert not view.primary_stopped


def test_hot_replicas_are_fresh_healthy_and_least_lagged_first():
    view = ControlView("a")
    _feed(view, [_status("b", 7), _status("c", 2), _status("d", 0, "diverged")], at=10.0)
    _feed(view, [_status("e", 0)], at=1.0)  # too old
    assert [r["member"] for r in view.hot_replicas(now=10.5, fresh_s=1.0)] == ["c", "b"]


def test_a_checkpoint_request_is_answered_by_the_least_lagged_hot_replica_only():
    """With no hot replica the primary's host answers (mig/checkpoint/local.py): a replica
    still catching up must not answer too (one request made two checkpoints)."""
    view = ControlView("a")
    _feed(view, [_beat("p", 1), _status("late", 9000, "catching-up")], at=10.0)
    assert not view.answers_checkpoint_request("late") and view.hot_in_topic() == []
    _feed(view, [_status("b", 7), _status("c", 2), _status("late", 0)], at=11.0)
    assert [m for m in ("b", "c", "late") if view.answers_checkpoint_request(m)] == ["late"]


def test_a_status_grows_old_by_the_topics_beats_not_by_the_readers_clock():
    """Freshness at a request is judged in the topic's order, so every member decides
    alike. A replica whose agent was paused reads its own old status together with the
    request; by its clock the status is new, by the topic it is 5 primary heartbeats old."""
    view = ControlView("a")
    _feed(view, [_beat("p", 1), _status("r", 3)], at=10.0)
    _feed(view, [_beat("p", 1)] * 4, at=10.0)
    assert view.answers_checkpoint_request("r")
    _feed(view, [_beat("p", 1)], at=10.0)
    assert not view.answers_checkpoint_request("r") and view.hot_in_topic() == []
    _feed(view, [_status("r", 3)], at=10.0)  # it beats again
    assert view.answers_checkpoint_request("r")
    # another replica's statuses age it as well, the primary being gone
    _feed(view, [_status("s", 0, "catching-up")] * 5, at=10.0)
    assert view.hot_in_topic() == []


def test_pending_handoff_is_the_current_epochs():
    view = ControlView("a")
    handoff = {"app": "a", "event_id": "e", "from_member": "p", "to_member": "r",
               "epoch": 1, "calls_offsets": [], "frozen_ts_ms": 0, "ts_ms": 0}
    view.on_record("mig.log.Handoff", handoff, now=1.0)
    assert view.pending_handoff() is not None
    _feed(view, [_promotion("r", 2)], at=2.0)
    assert view.pending_handoff() is None
