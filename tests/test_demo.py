"""The README's demo command runs to the end against the embedded broker."""

from __future__ import annotations

from tests.conftest import run_mig


def test_demo_runs_and_verifies(broker, broker_home, app_name):
    proc = run_mig("demo", "--app", app_name, env={"MIG_HOME": str(broker_home)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert f"broker live at {broker.settings.bootstrap_servers}" in out
    assert "30 increments sent; the primary answers: apples=" in out
    assert "replica's counters.txt: identical: the replica holds the same state" in out
    assert f"`mig log verify {app_name}`: " in out and "records, ok" in out
