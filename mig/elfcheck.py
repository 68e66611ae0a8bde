"""Refusing programs the shim cannot see into, before they start.

The shim works by being preloaded into a dynamically linked program that calls libc. A
statically linked binary never loads it; a Go program makes its system calls without libc.
Either would be recorded as if it made no calls at all, and a backup would diverge at once,
so mig refuses both at start with a message naming the binary. A script (``#!``) is checked
through its interpreter.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

from mig.errors import MigError

__all__ = ["check_program", "UnsupportedProgram"]

PT_INTERP = 3
GO_SECTIONS = {b".go.buildinfo", b".note.go.buildid", b".gopclntab"}


class UnsupportedProgram(MigError):
    exit_code = 2


def check_program(argv0: str, path_env: str | None = None, cwd: Path | None = None) -> Path:
    """The resolved binary that will run for ``argv0`` (a relative path is the app's
    ``cwd``'s, as when it is started there); raises UnsupportedProgram."""
    if "/" in argv0 and not argv0.startswith("/") and cwd is not None:
        argv0 = str(Path(cwd) / argv0)
    found = shutil.which(argv0, path=path_env) if "/" not in argv0 else argv0
    if not found or not Path(found).is_file():
        raise UnsupportedProgram(f"program '{argv0}' not found")
    binary = Path(found).resolve()
    with open(binary, "rb") as fh:
        head = fh.read(256)
    if head.startswith(b"#!"):
        words = head[2:].split(b"\n", 1)[0].split()
        if not words:
            raise UnsupportedProgram(f"{binary}: empty #! line")
        interp = words[0].decode()
        if interp.endswith("/env") and len(words) > 1:
            interp = words[1].decode()
        return check_program(interp, path_env)
    if not head.startswith(b"\x7fELF"):
        raise UnsupportedProgram(f"{binary} is neither an ELF program nor a #! script")
    _check_elf(binary)
    return binary


def _check_elf(binary: Path) -> None:
    data = binary.read_bytes()
    if data[4] != 2 or data[5] != 1:
        raise UnsupportedProgram(f"{binary}: only 64-bit little-endian ELF programs are supported")
    (phoff, shoff) = struct.unpack_from("<QQ", data, 0x20)
    (phentsize, phnum, shentsize, shnum, shstrndx) = struct.unpack_from("<HHHHH", data, 0x36)
    interps = [struct.unpack_from("<I", data, phoff + i * phentsize)[0] == PT_INTERP
               for i in range(phnum)]
    if not any(interps):
        raise UnsupportedProgram(
            f"{binary} is statically linked: the shim cannot be preloaded into it, so its"
            " calls cannot be recorded (link it dynamically against libc)")
    if shoff and shnum and shstrndx < shnum:
        names_off = struct.unpack_from("<Q", data, shoff + shstrndx * shentsize + 0x18)[0]
        for i in range(shnum):
            name_at = struct.unpack_from("<I", data, shoff + i * shentsize)[0]
            name = data[names_off + name_at: data.index(b"\0", names_off + name_at)]
            if name in GO_SECTIONS:
                raise UnsupportedProgram(
                    f"{binary} is a Go program: Go makes system calls without libc, which the"
                    " shim cannot see, so mig cannot record it")
