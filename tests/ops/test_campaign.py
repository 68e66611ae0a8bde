"""The short form of the fault campaign (tests/campaign/, docs/reliability.md): one round of
every fault, on three test hosts and a 3-broker cluster, with the checks of every round
(nothing acknowledged lost, nothing acknowledged by two primaries, hot replicas equal to
the primary). The long form is the same command with more rounds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.campaign.faults import FAULTS

ROOT = Path(__file__).resolve().parents[2]


def test_short_campaign_every_fault_once(tmp_path):
    run = subprocess.run([sys.executable, "-m", "tests.campaign", "--rounds", "1",
                          "--seed", "8", "--max-minutes", "20", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=25 * 60)
    print(run.stdout)
    print(run.stderr[-4000:])
    rows = [json.loads(line) for line in (tmp_path / "rounds.jsonl").read_text().splitlines()]
    assert sorted(r["fault"] for r in rows) == sorted(FAULTS), "not every fault ran"
    for r in rows:
        assert r["lost"] == 0 and r["double"] == 0, r
        assert r["unequal"] == 0, r
        assert r["ok"], r
    # the faults that take the primary away do cause a promotion
    failovers = {r["fault"]: r["failovers"] for r in rows}
    for fault in ("kill-primary", "pause-primary", "isolate-primary",
                  "failover-during-migrate"):
        assert failovers[fault] >= 1, (fault, rows)
    assert run.returncode == 0, run.stderr[-2000:]
