"""Running apps under mig in tests: an app.toml per test, `mig primary start` to record,
`mig replica follow` to replay in another folder, each as the real command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import run_mig


def write_app(folder: Path, name: str, command: list[str], bootstrap: str,
              barrier_mode: str = "output", env: dict[str, str] | None = None,
              capture: str | None = None, threads: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["[app]", f'name = "{name}"',
             "command = [" + ", ".join(f'"{part}"' for part in command) + "]",
             f'barrier_mode = "{barrier_mode}"']
    if capture:
        lines.append(f'capture = "{capture}"')
    if threads:
        lines.append(f'threads = "{threads}"')
    if env:
        lines.append("env = { " + ", ".join(f'{k} = "{v}"' for k, v in env.items()) + " }")
    lines += ["[kafka]", f'bootstrap_servers = "{bootstrap}"']
    path = folder / "app.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def logged_calls(tail_json: str) -> list[dict]:
    """The calls of every CallBatch in the output of `mig log tail --json`, in its order."""
    return [call for line in tail_json.splitlines()
            for call in (json.loads(line).get("record") or {}).get("calls", [])]


def record(app_toml: Path, home: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_mig("primary", "start", str(app_toml), env={"MIG_HOME": str(home)},
                   timeout=timeout, check=True)


def replay(app_toml: Path, workdir: Path, home: Path, idle_exit: float = 10,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    return run_mig("replica", "follow", str(app_toml), "--workdir", str(workdir),
                   "--idle-exit", str(idle_exit), env={"MIG_HOME": str(home)},
                   timeout=timeout)


def start_mig(args: list[str], home: Path, wrap=None) -> subprocess.Popen:  # noqa: ANN001
    """A long-running mig command (JSON logs to HOME.log beside ``home``); ``wrap`` turns
    the command line into one run on a test host (HostNet.wrap)."""
    cmd = [sys.executable, "-m", "mig", "--log-format", "json", *args]
    env = dict(os.environ, MIG_HOME=str(home))
    log = open(home.parent / f"{home.name}.log", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(wrap(cmd) if wrap else cmd, env=env, stdout=log, stderr=log)


def stop_mig(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM, then SIGKILL if it has not ended within ``grace`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
