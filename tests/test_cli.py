"""The CLI surface: --help on every command, the example configs, the log format switch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_mig

COMMANDS = [[], ["broker"], ["broker", "up"], ["broker", "down"], ["broker", "status"],
            ["broker", "classpath"], ["topics"], ["topics", "ensure"], ["config"],
            ["config", "check"], ["config", "reference"], ["log"], ["log", "tail"],
            ["log", "verify"], ["demo"], ["status"]]
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "mig")
def test_help_on_every_command(command):
    proc = run_mig(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout


def test_version():
    from importlib.metadata import version

    import mig

    proc = run_mig("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"mig {mig.__version__}\n"
    assert mig.__version__ == version("mig")  # pyproject.toml's, as installed


@pytest.mark.parametrize("example", sorted(ROOT.glob("examples/*/app.toml")),
                         ids=lambda p: p.parent.name)
def test_example_configs_are_valid(example):
    proc = run_mig("config", "check", str(example))
    assert proc.returncode == 0, proc.stderr


def test_json_log_lines_when_not_a_tty(tmp_path):
    # `broker down` on an empty home logs nothing; `topics ensure` of an unreachable Kafka
    # fails with one error line: stderr has no console art, only that line
    proc = run_mig("--log-format", "json", "--log-level", "debug", "broker", "status",
                   "--json", env={"MIG_HOME": str(tmp_path)})
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["running"] is False
