"""The CLI surface: --help on every command, the example configs, the log format switch."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import run_mig

COMMANDS = [[], ["broker"], ["broker", "up"], ["broker", "down"], ["broker", "status"],
            ["broker", "classpath"], ["topics"], ["topics", "ensure"], ["config"],
            ["config", "check"], ["config", "reference"], ["log"], ["log", "tail"],
            ["log", "verify"], ["demo"], ["status"], ["input"]]
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "mig")
def test_help_on_every_command(command):
    proc = run_mig(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout


def _commands(command, path=()):  # noqa: ANN001, ANN202
    """Every command of the click tree under ``command``, with its path of names."""
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _commands(sub, (*path, name))


def test_help_shows_the_bracketed_words_of_every_help_text():
    """`[kafka]`, `[security]`... in a help text are words, not markup: each appears in
    that command's --help as written (a markup renderer took them for styles)."""
    import structlog
    import typer.main
    from typer.testing import CliRunner

    from mig.cli import app

    checked, lost = 0, []
    logging = structlog.get_config()  # mig's callback logs to the runner's stderr, closed after
    for path, command in _commands(typer.main.get_command(app)):
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        words = {w for text in texts for w in re.findall(r"\[[^\[\]]+\]", text)}
        if not words:
            continue
        try:
            result = CliRunner().invoke(app, [*path, "--help"], terminal_width=100)
        finally:
            structlog.configure(**logging)
        assert result.exit_code == 0, result.output
        shown = " ".join(result.output.replace("\u2502", " ").split())
        lost += [f"mig {' '.join(path)}: {w}" for w in sorted(words) if w not in shown]
        checked += 1
    assert checked >= 3  # --bootstrap's [kafka], --config's [security], status's [replica]
    assert not lost, "\n".join(lost)


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


def test_input_refuses_an_app_whose_stdin_is_not_its_topic(tmp_path):
    """`mig input` feeds apps with [app] stdin = "topic" only: for another it says which
    setting is in the way, in one line, and sends nothing (no broker is even asked)."""
    app = tmp_path / "app.toml"
    app.write_text('[app]\nname = "plain"\ncommand = ["cat"]\n')
    run = run_mig("input", str(app), input="select 1;\n")
    assert run.returncode == 1
    assert run.stderr.strip() == (f"mig: error: {app}: app.stdin is 'inherit': mig input"
                                  " feeds apps with stdin = \"topic\" (their stdin is then"
                                  " mig.NAME.input)")


def test_the_cli_imports_no_kafka_reading_until_a_command_runs() -> None:
    """`mig --help` and every command pay for what the CLI imports at start: the Kafka
    client, the reader and the status fold are imported inside the commands that use them
    (mig status drew them in for every command, 70 ms of 140)."""
    code = ("import sys, mig.cli; heavy = [m for m in ('confluent_kafka', 'mig.kafka.reader',"
            " 'mig.control.status', 'fastavro') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=tempfile.gettempdir())
    assert out.stdout.strip() == "[]", out.stdout
