"""Real programs nobody here wrote, from Debian, under mig: the yardstick of complete
capture (docs/programs.md). A program that is not installed fails its test, naming the
command that installs it (.ci/run installs them)."""

from __future__ import annotations

import shutil
import subprocess

from tests.conftest import run_mig
from tests.harness import replay, write_app


def need(program: str, package: str) -> str:
    path = shutil.which(program)
    assert path, f"{program} is not installed: apt-get install -y {package}"
    return path


def _sql(rows: int) -> str:
    return ("create table t(a, b);\n"
            + "insert into t values(random(), hex(randomblob(8)));\n" * rows
            + "select count(*), sum(a % 1000000) from t;\n"
            + "select a, b from t order by a limit 3;\n")


def test_sqlite3_shell_fed_through_a_pipe_records_and_replays(tmp_path, settings, app_name):
    """`producer | mig primary start app.toml`: the shell reads its SQL from stdin with
    stdio (libc's internal read, trapped), so what it read is in the log and a backup
    replays it to the same output; random() and randomblob() come from the log too."""
    sqlite = need("sqlite3", "sqlite3")
    sql = _sql(40)
    native = [subprocess.run([sqlite, ":memory:"], input=sql, capture_output=True, text=True,
                             check=True).stdout for _ in range(2)]
    assert native[0] != native[1]  # random(): a replay that matches was replayed
    prim, rep = tmp_path / "primary", tmp_path / "backup"
    app = write_app(prim, app_name, [sqlite, "db.sqlite"], settings.bootstrap_servers)
    rec = run_mig("primary", "start", str(app), input=sql, check=True,
                  env={"MIG_HOME": str(tmp_path / "home-p")})
    assert "app exit code 0" in rec.stdout
    out = replay(app, rep, tmp_path / "home-r")
    assert out.returncode == 0, out.stdout + out.stderr
    primary = (prim / "state" / "mig-app.log").read_text()
    backup = (rep / "mig-app.log").read_text()
    assert primary.splitlines()[0].startswith("40|"), primary
    assert backup == primary
    # and the shell's table is in the backup's database file too
    dump = subprocess.run([sqlite, str(rep / "db.sqlite"), "select count(*) from t;"],
                          capture_output=True, text=True, check=True).stdout
    assert dump.strip() == "40"
