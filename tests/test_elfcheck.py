"""Programs the shim cannot see into are refused at start, with the binary named."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from mig.elfcheck import UnsupportedProgram, check_program
from tests.conftest import run_mig
from tests.harness import write_app

HELLO = "int main(void) { return 0; }\n"


@pytest.fixture
def built(tmp_path):
    src = tmp_path / "hello.c"
    src.write_text(HELLO)
    subprocess.run(["gcc", "-o", tmp_path / "dynamic", src], check=True)
    subprocess.run(["gcc", "-static", "-o", tmp_path / "static", src], check=True)
    marker = tmp_path / "marker"
    marker.write_bytes(b"\xff Go buildinf:")
    shutil.copy(tmp_path / "dynamic", tmp_path / "golike")
    subprocess.run(["objcopy", "--add-section", f".go.buildinfo={marker}",
                    tmp_path / "golike"], check=True)
    script = tmp_path / "script.py"
    script.write_text("#!/usr/bin/env python3\nprint('hi')\n")
    script.chmod(0o755)
    return tmp_path


def test_dynamic_programs_and_scripts_pass(built):
    assert check_program(str(built / "dynamic")) == (built / "dynamic").resolve()
    # the interpreter chain is followed to a real ELF program (python3 may itself be a script)
    assert check_program(str(built / "script.py")).read_bytes()[:4] == b"\x7fELF"
    assert check_program(sys.executable)


def test_static_binary_is_refused(built):
    with pytest.raises(UnsupportedProgram, match="is statically linked"):
        check_program(str(built / "static"))


def test_go_binary_is_refused(built):
    with pytest.raises(UnsupportedProgram, match="is a Go program"):
        check_program(str(built / "golike"))


def test_primary_start_refuses_before_writing_anything(built, settings, tmp_path, app_name):
    app = write_app(tmp_path / "p", app_name, [str(built / "static")], settings.bootstrap_servers)
    proc = run_mig("primary", "start", str(app), env={"MIG_HOME": str(tmp_path / "h")})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"mig: error: {built / 'static'} is statically linked")
    tail = run_mig("log", "tail", app_name, "-b", settings.bootstrap_servers)
    assert "does not exist" in tail.stderr  # not even the topics were created
