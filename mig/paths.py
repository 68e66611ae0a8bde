"""Where mig finds its own files (schemas, the shim) and keeps its state (the mig home).

The mig home (``MIG_HOME``, default ``~/.mig``) holds the embedded broker's data and logs.
The jar cache (``MIG_CACHE``, default ``~/.cache/mig``) holds downloaded Kafka jars, shared by
every mig home on the host. These two environment variables are read here and nowhere else.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["mig_home", "cache_dir", "schema_dir", "shim_library", "encoder_library",
           "source_root", "run_root"]

_PKG = Path(__file__).resolve().parent


def source_root() -> Path:
    """The checkout this package was installed from (editable installs and tests)."""
    return _PKG.parent


def mig_home() -> Path:
    return Path(os.environ.get("MIG_HOME", Path.home() / ".mig")).expanduser()


def cache_dir() -> Path:
    return Path(os.environ.get("MIG_CACHE", Path.home() / ".cache" / "mig")).expanduser()


def schema_dir() -> Path:
    """The folder of ``*.avsc`` files: packaged copy first, then the source checkout."""
    packaged = _PKG / "_data" / "avro"
    if packaged.is_dir():
        return packaged
    return source_root() / "avro"


def _built(name: str) -> Path:
    """A library shim/Makefile builds: the packaged copy first, then the source checkout."""
    packaged = _PKG / "_data" / name
    if packaged.is_file():
        return packaged
    return source_root() / "shim" / "build" / name


def shim_library() -> Path:
    """Path of the built interposer library (``libmigshim.so``)."""
    return _built("libmigshim.so")


def encoder_library() -> Path:
    """Path of the recorder's batch encoder (``libmigenc.so``), loaded with ctypes."""
    return _built("libmigenc.so")


def run_root() -> Path:
    """Where the shared-memory rings live: tmpfs (``/dev/shm``) when the host has it, so
    the kernel never writes ring pages back to a disk; else under the mig home."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm / f"mig-{os.getuid()}"
    return mig_home() / "run"
