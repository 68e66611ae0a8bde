"""mig finds a CRIU that works on this host, and that CRIU really checkpoints and restores a
running process: the restored process goes on counting from where it was dumped.

CRIU is core to mig (checkpoints), so these tests never skip: without a usable CRIU they
fail with the install instruction (``scripts/install-criu.sh``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mig.checkpoint.criu import CriuInfo, CriuMissing, criu_version, find_criu

COUNTER = """\
import os, sys, time
path = sys.argv[1]
n = 0
while True:
    n += 1
    with open(path + ".tmp", "w") as fh:  # nothing stays open: CRIU checks open files' sizes
        fh.write(str(n))
    os.replace(path + ".tmp", path)
    time.sleep(0.05)
"""


def usable_criu() -> CriuInfo:
    try:
        info = find_criu()
    except CriuMissing as exc:
        missing = str(exc)  # failed outside the handler: one line, no chained traceback
    else:
        assert info.good, (f"CRIU {info.version} ({info.source}, {info.path}) is not usable:"
                           f" {info.check_output}")
        return info
    pytest.fail(missing, pytrace=False)


def read_counter(path: Path) -> int:
    for _ in range(20):  # os.replace makes it whole, but it may not exist yet
        try:
            return int(path.read_text())
        except (FileNotFoundError, ValueError):
            time.sleep(0.02)
    raise AssertionError(f"{path} never held a number")


def wait_counter_above(path: Path, value: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and (now := read_counter(path)) > value:
            return now
        time.sleep(0.05)
    raise AssertionError(f"the counter in {path} stayed at {read_counter(path)} <= {value}")


def criu(info: CriuInfo, *args: str, images: Path, log: str) -> None:
    proc = subprocess.run(info.argv(*args, "-D", str(images), "-v4", "-o", log),
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        tail = (images / log).read_text().splitlines()[-15:] if (images / log).exists() else []
        raise AssertionError(f"criu {args[0]} failed ({proc.returncode}): {proc.stderr}\n"
                             + "\n".join(tail))


def alive(pid: int, marker: str) -> bool:
    """``pid`` runs our counter (not an unrelated process that got the pid since)."""
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False


def test_version_parse() -> None:
    assert criu_version("Version: 4.1.1\nGitID: v4.1.1\n") == "4.1.1"
    assert criu_version("Version: 3.17\n") == "3.17"
    assert criu_version("criu: command not found") == ""


def test_find_criu_returns_a_criu_whose_check_passes() -> None:
    info = usable_criu()
    assert info.source in ("host", "private")
    assert int(info.version.split(".")[0]) >= 4
    assert find_criu() is info  # worked out once per process


def test_dump_and_restore_a_counting_process(tmp_path: Path) -> None:
    info = usable_criu()
    script = tmp_path / "counter.py"
    script.write_text(COUNTER)
    counter = tmp_path / "count"
    images = tmp_path / "images"
    images.mkdir()
    # a session leader of its own (setsid): CRIU dumps the whole session, no --shell-job
    proc = subprocess.Popen([sys.executable, str(script), str(counter)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    pid = proc.pid
    try:
        wait_counter_above(counter, 5)
        criu(info, "dump", "-t", str(pid), images=images, log="dump.log")
        proc.wait(timeout=10)  # dump without --leave-running kills the process
        dumped = read_counter(counter)
        time.sleep(0.3)
        assert read_counter(counter) == dumped, "the counter moved after the dump"

        criu(info, "restore", "-d", images=images, log="restore.log")
        assert alive(pid, str(script)), "the restored process does not have its old pid"
        first = read_counter(counter)
        assert first >= dumped, "the restored process started over"
        later = wait_counter_above(counter, dumped + 5)
        assert later > dumped + 5
        assert alive(pid, str(script))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if alive(pid, str(script)):  # the restored copy: a child of init, not ours
            os.kill(pid, signal.SIGKILL)
