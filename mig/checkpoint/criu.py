"""Finding the CRIU mig checkpoints with: the host's own when it is good enough, else the
private one ``scripts/install-criu.sh`` unpacks under the mig cache folder.

Good enough means version 4.0 or later and ``criu check`` passing on this kernel (older
distribution packages, Debian 12's 3.17 among them, fail it on recent kernels). The answer
is worked out once per process: ``criu check`` takes a moment and the host does not change
under a running mig.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mig.errors import MigError
from mig.paths import cache_dir, source_root

__all__ = ["CriuInfo", "CriuMissing", "MIN_VERSION", "find_criu", "criu_version",
           "private_criu", "install_hint"]

MIN_VERSION = (4, 0)
_VERSION_RE = re.compile(r"^Version:\s*(\d+(?:\.\d+)*)", re.MULTILINE)
_TIMEOUT = 30.0


class CriuMissing(MigError):
    """No CRIU that mig can use is on this host."""


@dataclass(frozen=True)
class CriuInfo:
    path: Path  # what to run: the host's criu or the private wrapper
    version: str  # "4.1.1"; "" when ``--version`` printed none
    source: str  # "host" or "private"
    check_ok: bool  # ``criu check`` exited 0
    check_output: str  # what ``criu check`` printed (stderr, then stdout)

    def argv(self, *args: str) -> list[str]:
        """The command line running this CRIU with ``args``."""
        return [str(self.path), *args]

    @property
    def good(self) -> bool:
        return self.check_ok and _at_least(self.version, MIN_VERSION)


def criu_version(text: str) -> str:
    """The version in ``criu --version`` output (``Version: 4.1.1`` -> ``"4.1.1"``); ""."""
    m = _VERSION_RE.search(text)
    return m.group(1) if m else ""


def private_criu() -> Path:
    """Where scripts/install-criu.sh puts its wrapper by default."""
    return cache_dir() / "criu" / "bin" / "criu"


def install_hint() -> str:
    script = source_root() / "scripts" / "install-criu.sh"
    where = f"bash {script}" if script.is_file() else "scripts/install-criu.sh of mig's source"
    return f"run `{where}` (it installs CRIU 4.x privately under {private_criu().parents[1]})"


@functools.cache
def find_criu() -> CriuInfo:
    """The CRIU to use: a good host one, else the private one (whatever its check says: the
    caller decides); raises CriuMissing naming what was found and how to install one."""
    host = shutil.which("criu")
    host_info = _probe(Path(host), "host") if host else None
    if host_info is not None and host_info.good:
        return host_info
    private = private_criu()
    if private.is_file():
        return _probe(private, "private")
    if host_info is not None:
        found = (f"the host's criu {host_info.version or '(unknown version)'} at {host}"
                 f" {'is older than 4.0' if host_info.check_ok else 'fails `criu check`'}")
    else:
        found = "no criu on PATH"
    raise CriuMissing(f"no usable CRIU: {found}, and no private CRIU at {private};"
                      f" {install_hint()}")


def _probe(path: Path, source: str) -> CriuInfo:
    version = criu_version(_run([str(path), "--version"])[1])
    ok, output = _run([str(path), "check"])
    return CriuInfo(path=path, version=version, source=source, check_ok=ok,
                    check_output=output.strip())


def _run(argv: list[str]) -> tuple[bool, str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    # warnings go to stderr, the verdict ("Looks good.") to stdout: the verdict comes last
    return proc.returncode == 0, proc.stderr + proc.stdout


def _at_least(version: str, minimum: tuple[int, ...]) -> bool:
    try:
        parts = tuple(int(p) for p in version.split("."))
    except ValueError:
        return False
    return parts >= minimum
