"""Running apps under mig in tests: an app.toml per test, `mig primary start` to record,
`mig replica follow` to replay in another folder, each as the real command."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import run_mig


def write_app(folder: Path, name: str, command: list[str], bootstrap: str,
              barrier_mode: str = "output", env: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["[app]", f'name = "{name}"',
             "command = [" + ", ".join(f'"{part}"' for part in command) + "]",
             f'barrier_mode = "{barrier_mode}"']
    if env:
        lines.append("env = { " + ", ".join(f'{k} = "{v}"' for k, v in env.items()) + " }")
    lines += ["[kafka]", f'bootstrap_servers = "{bootstrap}"']
    path = folder / "app.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def record(app_toml: Path, home: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_mig("primary", "start", str(app_toml), env={"MIG_HOME": str(home)},
                   timeout=timeout, check=True)


def replay(app_toml: Path, workdir: Path, home: Path, idle_exit: float = 10,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    return run_mig("replica", "follow", str(app_toml), "--workdir", str(workdir),
                   "--idle-exit", str(idle_exit), env={"MIG_HOME": str(home)},
                   timeout=timeout)
