"""A planned handoff (mig/member/handoff.py) whose last commit is answered late: the successor
read the Handoff and fenced the old primary before the commit's answer came back, so the
commit reports the fence, or an unknown broker error, although the Handoff is in the log.
The real broker and the real producers; only the moment of the answer is chosen by the
test."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from mig.config import parse_config
from mig.errors import Fenced, MigError
from mig.kafka.clients import KafkaSettings
from mig.kafka.topics import ensure_topics
from mig.kafka.writer import LogWriter
from mig.member.primary import Recorder


class _AnsweredAfterTheFence(LogWriter):
    """The old primary's producer. The commit of the transaction holding the Handoff really
    commits; then the successor fences this producer (a real ``init_transactions`` under the
    same id) and, when ``promote``, announces its Promotion; then the commit says what
    librdkafka said in the CI run where this was seen."""

    def __init__(self, settings: KafkaSettings, app: str, promote: bool,
                 answer: MigError) -> None:
        super().__init__(settings, app, transactional_id=f"mig.{app}.primary")
        self.settings = settings
        self.promote = promote
        self.answer = answer
        self.handoff: dict[str, Any] | None = None

    def send(self, role: str, full_name: str, record: dict[str, Any], **kw: Any) -> None:
        if full_name == "mig.log.Handoff":
            self.handoff = record
        super().send(role, full_name, record, **kw)

    def commit(self) -> list[tuple[str, int, int]]:
        done = super().commit()
        if self.handoff is None:
            return done
        successor = LogWriter(self.settings, self.app,
                              transactional_id=f"mig.{self.app}.primary")
        if self.promote:
            successor.send("control", "mig.log.Promotion", {
                "app": self.app, "member": self.handoff["to_member"], "new_epoch": 2,
                "previous_epoch": 1, "calls_offsets": self.handoff["calls_offsets"],
                "ts_ms": int(time.time() * 1000), "detection_ms": None, "promotion_ms": 1,
                "reason": "handoff"}, key=self.handoff["to_member"])
        successor.commit()
        raise self.answer


# what librdkafka answered in the two CI runs where this was seen
FENCED = Fenced("fenced: a newer primary of APP took over (Failed to end transaction: Local:"
                " This instance has been fenced by a newer instance)")
UNKNOWN = MigError("commit to Kafka failed: EndTxn commit failed: Unknown broker error")


@pytest.mark.parametrize("answer", [FENCED, UNKNOWN], ids=["fenced", "unknown-error"])
@pytest.mark.parametrize("promoted", [True, False], ids=["promoted", "nobody-promoted"])
def test_a_handoff_commit_answered_with_the_fence_is_settled_by_the_control_topic(
        settings: KafkaSettings, app_name: str, tmp_path: Path, promoted: bool,
        answer: MigError) -> None:
    """Promoted: the handoff is done (the app is killed, the primary ends as handed over);
    before the fix the commit's answer went up as an error and the old primary exited 4
    (fenced) or 1 (the unknown error) after a handoff that had worked. Nobody promoted
    within handoff_timeout_ms: the answer stands."""
    cfg = parse_config(f'[app]\nname = "{app_name}"\ncommand = ["sleep", "60"]\n'
                       "[failover]\nhandoff_timeout_ms = 3000\n", tmp_path / "app.toml")
    ensure_topics(settings, cfg.name, cfg.topics)
    rec = Recorder(cfg, settings, tmp_path / "run", member="host0")
    rec._hot = lambda now: [{"member": "host1"}]  # type: ignore[method-assign]
    writer = _AnsweredAfterTheFence(settings, cfg.name, promoted, answer)
    control = rec._control_reader(20)
    app = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        control = rec._follow_control(control)  # (the history's reader: closed)
        rec._ask_migrate("test", "host1")
        started = time.monotonic()
        if promoted:
            assert rec._handoff(writer, app, control) is True
            assert app.wait(5) == -9 and rec.stats.migrated_to == "host1"
        else:
            with pytest.raises(type(answer), match="end transaction|EndTxn"):
                rec._handoff(writer, app, control)
            assert time.monotonic() - started >= 3.0  # the control topic was read first
    finally:
        app.kill()
        app.wait()
        control.close()
