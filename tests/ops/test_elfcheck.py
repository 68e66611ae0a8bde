"""Programs the shim cannot see into are refused at start, with the binary named; links and
scripts are followed and named; a program's dynamic imports are read from its symbol table."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mig.ops.elfcheck import UnsupportedProgram, check_program, dynamic_imports, find_program
from tests.conftest import run_mig
from tests.harness import write_app

HELLO = "int main(void) { return 0; }\n"
SQLITE3 = Path("/usr/bin/sqlite3")  # Debian's sqlite3 package (.ci/run installs it)


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


def test_links_and_scripts_are_named(built):
    link = built / "link"
    link.symlink_to("dynamic")
    program = find_program(str(link))
    assert program.binary == (built / "dynamic").resolve()
    assert str(program) == f"{link} (a link to {(built / 'dynamic').resolve()})"
    assert program.name == "link"  # the name it runs under (argv[0])
    plain = find_program(str(built / "dynamic"))
    assert str(plain) == str(built / "dynamic") and plain.how == ()
    script = find_program(str(built / "script.py"))
    assert str(script).startswith(f"{built / 'script.py'} (a #! script run by ")
    assert script.script and script.name == script.binary.name
    (built / "link2").symlink_to(built / "static")
    with pytest.raises(UnsupportedProgram, match=f"^{link}2 \\(a link to .*static\\) is"
                                                 " statically linked"):
        find_program(str(built / "link2"))


def _readelf_imports(binary: Path) -> set[str]:
    """Undefined dynamic symbols and copy-relocated ones, as binutils' readelf lists them."""
    syms = subprocess.run(["readelf", "--dyn-syms", "-W", str(binary)], capture_output=True,
                          text=True, check=True).stdout
    names = {f[7].split("@")[0] for f in (line.split() for line in syms.splitlines())
             if len(f) >= 8 and f[6] == "UND"}
    relocs = subprocess.run(["readelf", "-r", "-W", str(binary)], capture_output=True,
                            text=True, check=True).stdout
    names |= {f[4].split("@")[0] for f in (line.split() for line in relocs.splitlines())
              if len(f) >= 5 and f[2] == "R_X86_64_COPY"}
    return names


@pytest.mark.skipif(not SQLITE3.is_file(), reason="needs Debian's sqlite3 package")
def test_imports_are_the_symbol_tables_not_strings_in_the_file():
    """sqlite3's shell has "clone" in its text (its `.clone` command) but does not import
    clone(); its stdin is a copy-relocated object, an import all the same."""
    imports = dynamic_imports(SQLITE3)
    assert b"\0clone\0" in SQLITE3.read_bytes()
    assert "clone" not in imports.symbols
    assert {"stdin", "popen", "system"} <= imports.symbols
    assert "libc.so.6" in imports.libraries
    if shutil.which("readelf"):
        assert imports.symbols == _readelf_imports(SQLITE3)


def test_imports_of_a_program_calling_clone(tmp_path):
    src = tmp_path / "cloner.c"
    src.write_text("#define _GNU_SOURCE\n#include <sched.h>\n#include <signal.h>\n"
                   "static char stack[65536];\nstatic int child(void *arg) { return 0; }\n"
                   "int main(void) { return clone(child, stack + sizeof stack, SIGCHLD, 0)"
                   " < 0; }\n")
    subprocess.run(["gcc", "-o", tmp_path / "cloner", src], check=True)
    imports = dynamic_imports(tmp_path / "cloner")
    assert "clone" in imports.symbols and "pthread_create" not in imports.symbols
    with pytest.raises(UnsupportedProgram, match="no dynamic symbol table"):
        dynamic_imports(_static(tmp_path))


def _static(folder: Path) -> Path:
    (folder / "s.c").write_text(HELLO)
    subprocess.run(["gcc", "-static", "-o", folder / "s", folder / "s.c"], check=True)
    return folder / "s"
