"""The README's demo command runs to the end against the embedded broker."""

from __future__ import annotations

from tests.conftest import run_mig


def test_demo_runs_and_verifies(broker, broker_home, app_name):
    proc = run_mig("demo", "--app", app_name, env={"MIG_HOME": str(broker_home)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert f"broker live at {broker.settings.bootstrap_servers}" in out
    assert f"mig.{app_name}.calls: created" in out
    assert "calls[0]@0 AppIdentity" in out
    assert "Heartbeat member=demo-primary role=PRIMARY" in out
    assert f"`mig log verify {app_name}`: 3 records, ok" in out
