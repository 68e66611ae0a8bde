"""The app identity record: what program, on what kernel and libc, recorded a log.

A backup compares it with its own host before replaying (a different binary would
diverge at once); checkpoints carry it so a restore can refuse an incompatible image.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from mig import __version__
from mig.errors import MigError

__all__ = ["app_identity", "env_digest", "member_id", "sha256_file"]


def member_id(role: str = "") -> str:
    """A member's id when none is given: this host and process (``HOST-PID``, or
    ``HOST-ROLE-PID``), unique among the members of an app."""
    return "-".join([socket.gethostname(), *([role] if role else []), str(os.getpid())])


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def env_digest(env: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for key in sorted(env):
        digest.update(f"{key}={env[key]}\0".encode())
    return digest.hexdigest()


def app_identity(app: str, argv: list[str], cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """The ``mig.log.AppIdentity`` record for running ``argv`` in ``cwd`` with ``env``."""
    found = shutil.which(argv[0], path=env.get("PATH", os.environ.get("PATH")))
    if found is None:
        raise MigError(f"program '{argv[0]}' not found (app.command of {app})")
    binary = Path(found).resolve()
    libc = "-".join(platform.libc_ver()) or "unknown"
    return {
        "app": app, "argv": list(argv), "cwd": str(cwd), "env_digest": env_digest(env),
        "binary_path": str(binary), "binary_sha256": sha256_file(binary),
        "kernel": platform.release(), "libc": libc, "mig_version": __version__,
        "hostname": socket.gethostname(), "created_ms": int(time.time() * 1000),
    }
