"""Refusing programs the shim cannot see into, before they start.

The shim works by being preloaded into a dynamically linked program that calls libc. A
statically linked binary never loads it; a Go program makes its system calls without libc.
Either would be recorded as if it made no calls at all, and a backup would diverge at once,
so mig refuses both at start with a message naming the binary. A script (``#!``) is checked
through its interpreter, a symbolic link through its target, and both are named.

``dynamic_imports`` reads what a program takes from its libraries (its dynamic symbol
table's undefined symbols and copy-relocated objects such as ``stdin``, and the libraries
it needs): ``mig doctor`` tells from them whether it starts threads or processes.
"""

from __future__ import annotations

import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from mig.errors import MigError

__all__ = ["check_program", "find_program", "Program", "dynamic_imports", "Imports",
           "UnsupportedProgram"]

PT_INTERP = 3
SHT_RELA, SHT_DYNAMIC, SHT_DYNSYM = 4, 6, 11
DT_NEEDED = 1
R_X86_64_COPY = 5
GO_SECTIONS = {b".go.buildinfo", b".note.go.buildid", b".gopclntab"}


class UnsupportedProgram(MigError):
    exit_code = 2


@dataclass(frozen=True)
class Program:
    """What an app's ``argv0`` runs: ``path`` as found (a link not followed), the ELF
    ``binary`` that runs (links followed, a script's interpreter), and how one leads to the
    other (``a link to /usr/bin/redis-check-rdb``)."""

    path: Path
    binary: Path
    how: tuple[str, ...] = ()
    script: bool = False

    def __str__(self) -> str:
        return f"{self.path} ({', '.join(self.how)})" if self.how else str(self.path)

    @property
    def name(self) -> str:
        """The name that runs: the program's, or its interpreter's for a script."""
        return self.binary.name if self.script else self.path.name


def check_program(argv0: str, path_env: str | None = None, cwd: Path | None = None) -> Path:
    """The resolved binary that will run for ``argv0`` (a relative path is the app's
    ``cwd``'s, as when it is started there); raises UnsupportedProgram."""
    return find_program(argv0, path_env, cwd).binary


def find_program(argv0: str, path_env: str | None = None, cwd: Path | None = None) -> Program:
    """``check_program``, keeping the name ``argv0`` was found under and the links and
    interpreter followed from it."""
    if "/" in argv0 and not argv0.startswith("/") and cwd is not None:
        argv0 = str(Path(cwd) / argv0)
    found = shutil.which(argv0, path=path_env) if "/" not in argv0 else argv0
    if not found or not Path(found).is_file():
        raise UnsupportedProgram(f"program '{argv0}' not found")
    path = Path(found)
    binary = path.resolve()
    how = (f"a link to {binary}",) if path.is_symlink() else ()
    shown = str(Program(path, binary, how))
    with open(binary, "rb") as fh:
        head = fh.read(256)
    if head.startswith(b"#!"):
        words = head[2:].split(b"\n", 1)[0].split()
        if not words:
            raise UnsupportedProgram(f"{shown}: empty #! line")
        interp = words[0].decode()
        if interp.endswith("/env") and len(words) > 1:
            interp = words[1].decode()
        runner = find_program(interp, path_env)
        return Program(path, runner.binary, (*how, f"a #! script run by {runner.path}",
                                             *runner.how), script=True)
    if not head.startswith(b"\x7fELF"):
        raise UnsupportedProgram(f"{shown} is neither an ELF program nor a #! script")
    _check_elf(binary, shown)
    return Program(path, binary, how)


@dataclass(frozen=True)
class Imports:
    """What a dynamically linked program takes from its libraries."""

    symbols: frozenset[str]  # undefined dynamic symbols, and objects copied in (stdin)
    libraries: tuple[str, ...]  # DT_NEEDED: libc.so.6, ...


def dynamic_imports(binary: Path) -> Imports:
    """The names ``binary`` imports, read from its dynamic symbol table (.dynsym, whose
    undefined entries are what the loader binds from libraries) and its copy relocations
    (a non-PIE program's ``stdin`` is defined in its own .bss, copied from libc's); not
    strings found anywhere in the file. Raises UnsupportedProgram when there is none to
    read (no section headers) or the file is malformed."""
    try:
        data = binary.read_bytes()
        sections = _sections(data)
        dynsym = next((i for i, sec in enumerate(sections) if sec.type == SHT_DYNSYM), None)
        if dynsym is None:
            raise UnsupportedProgram(f"{binary} has no dynamic symbol table to read")
        sym, strtab = sections[dynsym], sections[sections[dynsym].link]
        names, undefined = [], set()
        for i in range(sym.size // 24):
            name_at, _info, _other, shndx = struct.unpack_from("<IBBH", data, sym.offset + i * 24)
            names.append(_cstr(data, strtab.offset + name_at))
            if shndx == 0 and names[-1]:
                undefined.add(names[-1])
        for rela in (sec for sec in sections if sec.type == SHT_RELA and sec.link == dynsym):
            for at in range(rela.offset, rela.offset + rela.size - 23, 24):
                info = struct.unpack_from("<Q", data, at + 8)[0]
                if info & 0xFFFFFFFF == R_X86_64_COPY:
                    undefined.add(names[info >> 32])
        needed = []
        for dyn in (sec for sec in sections if sec.type == SHT_DYNAMIC):
            strings = sections[dyn.link].offset
            for at in range(dyn.offset, dyn.offset + dyn.size - 15, 16):
                tag, value = struct.unpack_from("<qQ", data, at)
                if tag == DT_NEEDED:
                    needed.append(_cstr(data, strings + value))
    except (OSError, struct.error, IndexError, ValueError) as exc:
        raise UnsupportedProgram(f"cannot read the dynamic symbols of {binary}: {exc}") from exc
    return Imports(frozenset(undefined), tuple(needed))


@dataclass(frozen=True)
class _Section:
    name: bytes
    type: int
    offset: int
    size: int
    link: int


def _sections(data: bytes) -> list[_Section]:
    """The section headers of a 64-bit little-endian ELF file ([] when it has none)."""
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    if not shoff or not shnum or shstrndx >= shnum:
        return []
    heads = [struct.unpack_from("<IIQQQQI", data, shoff + i * shentsize) for i in range(shnum)]
    names_off = heads[shstrndx][4]
    return [_Section(_cstr(data, names_off + name).encode(), kind, offset, size, link)
            for name, kind, _flags, _addr, offset, size, link in heads]


def _cstr(data: bytes, at: int) -> str:
    return data[at:data.index(b"\0", at)].decode("utf-8", "replace")


def _check_elf(binary: Path, shown: str) -> None:
    data = binary.read_bytes()
    if data[4] != 2 or data[5] != 1:
        raise UnsupportedProgram(f"{shown}: only 64-bit little-endian ELF programs are supported")
    phoff = struct.unpack_from("<Q", data, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    interps = [struct.unpack_from("<I", data, phoff + i * phentsize)[0] == PT_INTERP
               for i in range(phnum)]
    if not any(interps):
        raise UnsupportedProgram(
            f"{shown} is statically linked: the shim cannot be preloaded into it, so its"
            " calls cannot be recorded (link it dynamically against libc)")
    if any(sec.name in GO_SECTIONS for sec in _sections(data)):
        raise UnsupportedProgram(
            f"{shown} is a Go program: Go makes system calls without libc, which the"
            " shim cannot see, so mig cannot record it")
