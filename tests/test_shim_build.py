"""The shim is built by the package's install and loads into a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mig.paths import shim_library

PROBE = ("import ctypes; lib = ctypes.CDLL(None); f = lib.mig_shim_version;"
         " f.restype = ctypes.c_char_p; print(f().decode())")


def test_shim_is_built_and_preloads_into_a_process():
    lib = shim_library()
    assert lib.is_file(), f"{lib} missing: the install should have built it"
    for mode, word in [("record", "record"), ("replay", "replay"), ("", "off")]:
        env = dict(os.environ, LD_PRELOAD=str(lib), MIG_MODE=mode)
        out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                             text=True, check=True).stdout.strip()
        assert out == f"mig-shim 0.2.0 {word}"


def test_shim_exports_nothing_but_its_api():
    out = subprocess.run(["nm", "-D", "--defined-only", str(shim_library())],
                         capture_output=True, text=True, check=True).stdout
    exported = {line.split()[-1] for line in out.splitlines() if " T " in line}
    version_script = (Path(__file__).resolve().parent.parent / "shim" / "libmigshim.map")
    listed = version_script.read_text().split("global:")[1].split("local:")[0]
    declared = {name.strip() for name in listed.replace("\n", " ").split(";") if name.strip()}
    assert exported == declared
    assert {"mig_shim_version", "clock_gettime", "read", "epoll_wait"} <= exported
