"""The README's demo command runs to the end against the embedded broker: a primary killed
with SIGKILL under load, the replica promoted, nothing acknowledged lost."""

from __future__ import annotations

from tests.conftest import run_mig


def test_demo_runs_and_verifies(broker, broker_home, app_name):
    proc = run_mig("demo", "--app", app_name, env={"MIG_HOME": str(broker_home)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert f"broker live at {broker.settings.bootstrap_servers}" in out
    assert "the replica is hot" in out
    assert "the replica took over at epoch 2: detection " in out
    assert "every acknowledged increment is in the new primary's memory:" in out
    assert "WRONG" not in out
    assert f"`mig log verify {app_name}`: " in out and "records, ok" in out
