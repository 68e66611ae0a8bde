"""The shim is built by the package's install and loads into a real process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mig.paths import shim_library
from mig.ring.kinds import KIND_NUMBERS
from mig.ring.memory import STATE_EXITED, Ring
from tests.ring.support import drain

PROBE = ("import ctypes; lib = ctypes.CDLL(None); f = lib.mig_shim_version;"
         " f.restype = ctypes.c_char_p; print(f().decode())")


def _probe(mode: str, run_dir: str | None, barrier: str = "async",
           timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LD_PRELOAD=str(shim_library()), MIG_MODE=mode, MIG_BARRIER=barrier)
    env.pop("MIG_RUN_DIR", None)
    if run_dir:
        env["MIG_RUN_DIR"] = run_dir
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_shim_is_built_and_preloads_into_a_process(tmp_path):
    lib = shim_library()
    assert lib.is_file(), f"{lib} missing: the install should have built it"
    off = _probe("", None)
    assert off.returncode == 0 and off.stdout.strip() == "mig-shim 0.2.0 off"
    rec = _probe("record", str(tmp_path))
    assert rec.returncode == 0 and rec.stdout.strip() == "mig-shim 0.2.0 record"
    ring = Ring(tmp_path / "1.ring")  # the process made its ring, with its calls in it
    assert ring.lpid == "1" and ring.state == STATE_EXITED
    kinds = {call.kind for call in drain(ring)}
    assert KIND_NUMBERS["GETRANDOM"] in kinds  # CPython seeds its hash from getrandom


def test_output_waits_for_a_commit_that_never_comes(tmp_path):
    # output mode with no agent: the print to the stdout pipe is an output whose causes
    # are not committed, so it must not be released
    with pytest.raises(subprocess.TimeoutExpired) as info:
        _probe("record", str(tmp_path), barrier="output", timeout=3)
    assert not info.value.stdout


def test_record_mode_without_run_dir_is_a_clear_fatal_error():
    proc = _probe("record", None)
    assert proc.returncode == 86
    assert proc.stderr.strip() == "mig-shim: fatal: MIG_MODE is set but MIG_RUN_DIR is not"


def test_shim_exports_nothing_but_its_api():
    out = subprocess.run(["nm", "-D", "--defined-only", str(shim_library())],
                         capture_output=True, text=True, check=True).stdout
    exported = {line.split()[-1] for line in out.splitlines() if " T " in line}
    version_script = (Path(__file__).resolve().parents[2] / "shim" / "libmigshim.map")
    listed = version_script.read_text().split("global:")[1].split("local:")[0]
    declared = {name.strip() for name in listed.replace("\n", " ").split(";") if name.strip()}
    assert exported == declared
    assert {"mig_shim_version", "clock_gettime", "read", "epoll_wait"} <= exported


SHIM = Path(__file__).resolve().parents[2] / "shim"


def _interposed() -> set[str]:
    listed = (SHIM / "libmigshim.map").read_text().split("global:")[1].split("local:")[0]
    names = {name.strip() for name in listed.replace("\n", " ").split(";") if name.strip()}
    return names - {"mig_shim_version"}


def _core_sources() -> list[Path]:
    # every file of the shim that is not a wrapper (mig_encode.c, mig_decode.c, mig_pump.c,
    # mig_bells.c and mig_hmac.c are the agents' batch codec, pump, wait and signature,
    # libmigenc.so: not in the app, no wrappers to reach around)
    return [p for p in sorted((SHIM / "src").glob("mig_*.c"))
            if p.name not in ("mig_encode.c", "mig_decode.c", "mig_pump.c", "mig_bells.c",
                              "mig_hmac.c")]


def test_poison_header_lists_every_interposed_function():
    text = (SHIM / "src" / "mig_poison.h").read_text()
    body = text.split("#define MIG_INTERPOSED(X)")[1].split("#define MIG_POISON")[0]
    assert set(re.findall(r"X\((\w+)\)", body)) == _interposed()


def test_every_core_file_includes_the_poison_header_last():
    for src in _core_sources():
        includes = re.findall(r'^#include [<"]([^>"]+)[>"]', src.read_text(), re.M)
        assert includes[-1] == "mig_poison.h", f"{src.name} includes {includes[-1]} last"


def test_no_core_object_calls_an_interposed_symbol():
    # mig_poison.h makes such a call a compile error; a _FORTIFY_SOURCE build inlines
    # some (read, recv, poll, open) past its attribute, and this sees those too
    objects = [SHIM / "build" / (src.stem + ".o") for src in _core_sources()]
    if not all(o.is_file() for o in objects):
        pytest.skip("the shim's objects are not in shim/build (a packaged install)")
    out = subprocess.run(["nm", "-u", *map(str, objects)], capture_output=True, text=True,
                         check=True).stdout
    undefined = {line.split()[-1].split("@")[0] for line in out.splitlines()
                 if line.strip() and not line.endswith(":")}
    assert undefined & _interposed() == set()
