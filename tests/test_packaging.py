"""Packaging: the systemd units and docker-compose.yml run real ``mig`` commands, the units'
restart policy never brings a fenced primary back, the compose client rides a counter
server, and ``pip install .`` from a source checkout ships a working shim."""

from __future__ import annotations

import importlib.util
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mig.broker.node import free_ports
from tests.conftest import run_mig

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "packaging" / "systemd"


def unit(name: str) -> dict[str, dict[str, str]]:
    """A unit file's sections and keys (the last value of a key wins, as in systemd)."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for raw in (UNITS / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{name}: '{line}' is not KEY=VALUE"
        current[key.strip()] = value.strip()
    return sections


def parse_mig(args: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse ``mig ARGS`` as the CLI would, without running it: the command's path and its
    parameters; an unknown command or option raises."""
    import typer.main

    from mig.cli import app

    cmd: Any = typer.main.get_command(app)
    ctx = cmd.make_context("mig", list(args))
    path = []
    while hasattr(cmd, "resolve_command"):
        name, cmd, rest = cmd.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        path.append(name)
        ctx = cmd.make_context(name, rest, parent=ctx)
    return " ".join(path), ctx.params


def exec_start(name: str, app: str = "shop", host: str = "host-a") -> list[str]:
    argv = shlex.split(unit(name)["Service"]["ExecStart"])
    return [a.replace("%i", app).replace("%H", host) for a in argv]


@pytest.mark.parametrize(("name", "command"), [("mig-primary@.service", "primary start"),
                                               ("mig-replica@.service", "replica follow")])
def test_units_start_real_commands(name: str, command: str) -> None:
    argv = exec_start(name)
    assert argv[0] == "/opt/mig/bin/mig"
    path, params = parse_mig(argv[1:])
    assert path == command
    assert str(params["config"]) == "/etc/mig/shop.toml"
    assert params["member"] == "host-a"
    help_run = run_mig(*command.split(), "--help")
    assert help_run.returncode == 0 and "APP.TOML" in help_run.stdout


def test_restart_policy_never_brings_back_a_fenced_primary() -> None:
    primary = unit("mig-primary@.service")
    replica = unit("mig-replica@.service")
    assert primary["Service"]["Restart"] == "no"
    assert replica["Service"]["Restart"] == "on-failure"
    # the codes a restart cannot help: bad config or program (2), divergence (3)
    assert replica["Service"]["RestartPreventExitStatus"].split() == ["2", "3"]
    for u in (primary, replica):
        assert u["Service"]["KillMode"] == "mixed"  # SIGTERM to mig, not to the app
    assert primary["Unit"]["Conflicts"] == "mig-replica@%i.service"
    assert replica["Unit"]["Conflicts"] == "mig-primary@%i.service"
    from mig.errors import ConfigError, Fenced
    from mig.member.replica import Divergence

    assert (ConfigError.exit_code, Divergence.exit_code, Fenced.exit_code) == (2, 3, 4)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_units_verify(tmp_path: Path) -> None:
    """systemd's own check, on instances whose ExecStart is this checkout's mig (verify
    wants the binary to exist). It exits 0 on mistakes it ignores: no output is the test."""
    mig = Path(sys.executable).with_name("mig")
    assert mig.is_file()
    paths = []
    for name in ("mig-primary@.service", "mig-replica@.service"):
        target = tmp_path / name.replace("@.", "@shop.")
        target.write_text((UNITS / name).read_text().replace("/opt/mig/bin/mig", str(mig)))
        paths.append(str(target))
    proc = subprocess.run(["systemd-analyze", "verify", *paths], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout + proc.stderr == "", proc.stdout + proc.stderr


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_services_run_real_commands() -> None:
    services = compose()["services"]
    assert set(services) == {"kafka", "primary", "replica", "client"}
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["mig"]' in dockerfile and "COPY examples/counter /app" in dockerfile
    commands = {}
    for name in ("primary", "replica"):
        service = services[name]
        assert service["build"] == "." and "entrypoint" not in service
        commands[name], params = parse_mig(service["command"])
        assert params["bootstrap"] == "kafka:9092" and params["member"] == name
        assert str(params["config"]) == "app.toml"
        assert (ROOT / "examples" / "counter" / "app.toml").is_file()
    assert commands == {"primary": "primary start", "replica": "replica follow"}
    assert services["primary"]["restart"] == "no"
    client = services["client"]
    assert client["entrypoint"] == ["python3", "-u", "client.py"]
    # by its path: tests/apps has a client module of its own
    spec = importlib.util.spec_from_file_location("counter_client",
                                                  ROOT / "examples" / "counter" / "client.py")
    assert spec is not None and spec.loader is not None
    counter_client = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(counter_client)
    args = counter_client.build_parser().parse_args(client["command"])
    assert args.addresses == [("primary", 7000), ("replica", 7000)]


def test_compose_client_rides_to_the_next_address(tmp_path: Path) -> None:
    """The compose client against a real counter server: the first address refuses, so it
    goes to the second, and counts."""
    (port,) = free_ports(1)
    (dead,) = free_ports(1)
    counter = ROOT / "examples" / "counter"
    server = subprocess.Popen([sys.executable, str(counter / "server.py"), str(port)],
                              cwd=tmp_path)
    try:
        command = compose()["services"]["client"]["command"]
        args = [f"127.0.0.1:{dead}", f"127.0.0.1:{port}", *command[2:], "--count", "3",
                "--interval", "0.01"]
        proc = subprocess.run([sys.executable, "-u", str(counter / "client.py"), *args],
                              capture_output=True, text=True, timeout=30)
    finally:
        server.kill()
        server.wait()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["apples = 1", "apples = 2", "apples = 3"]


def test_pip_install_ships_the_shim(tmp_path: Path) -> None:
    """``pip install .`` of a source checkout (the files git tracks) into a fresh venv: the
    installed mig finds its shim and schemas in the package, not in the checkout, and the
    doctor's shim check passes with it."""
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(src)],
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    shutil.rmtree(src)  # nothing may come from the checkout any more
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "from mig.paths import shim_library, encoder_library, schema_dir;"
                            "print(shim_library(), encoder_library(), schema_dir())"],
                           capture_output=True, text=True, cwd=tmp_path, check=True)
    paths = [Path(p) for p in where.stdout.split()]
    assert all(p.exists() and "site-packages" in p.parts for p in paths), paths
    assert len(list(paths[2].glob("*.avsc"))) >= 10
    doctor = subprocess.run([str(venv / "bin" / "mig"), "doctor"], capture_output=True,
                            text=True, cwd=tmp_path, timeout=120)
    shim = next(line for line in doctor.stdout.splitlines() if line.split()[1:2] == ["shim"])
    assert shim.startswith("ok") and str(paths[0]) in shim, doctor.stdout
