"""What a program's dynamic imports say it does that matters to replay (threads, child
processes, a JIT runtime, reading stdin), and what the app's thread mode means for it: the
program lines of ``mig doctor`` (mig/ops/doctor.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mig.errors import MigError
from mig.ops.check import Check

if TYPE_CHECKING:
    from mig.ops.elfcheck import Program

__all__ = ["check_threads", "program_shapes"]


THREAD_STARTS = ("pthread_create", "clone", "__clone", "clone3")



PROCESS_STARTS = ("fork", "vfork", "_Fork", "posix_spawn", "posix_spawnp", "system", "popen",
                  "daemon")



STDIN_READS = ("stdin", "getchar", "getchar_unlocked", "gets", "scanf", "__isoc99_scanf",
               "__isoc23_scanf", "vscanf", "__isoc99_vscanf", "__isoc23_vscanf", "readline")



JIT_RUNTIMES = {"libjvm.so": "the JVM", "libjli.so": "the JVM", "libnode.so": "Node.js (V8)",
                "libv8.so": "V8", "libluajit-5.1.so": "LuaJIT", "libmonosgen-2.0.so": "Mono",
                "libmono-2.0.so": "Mono", "libcoreclr.so": ".NET"}



def check_threads(threads: str, capture: str) -> Check:
    """Which thread mode app.toml's `threads` chooses, and what it means for replay."""
    if threads == "serialized" and capture != "trap":
        return Check("threads", "fail", "serialized: needs capture = \"trap\" (futex waits"
                     " are where threads switch); with capture = \"symbols\" the shim runs"
                     " them in parallel", 'set [app] capture = "trap", or threads = "parallel"')
    if threads == "serialized":
        return Check("threads", "ok", "serialized: one thread of a process runs at a time"
                     " and the log says where they switched, so threads that share memory"
                     " without locks replay (the default; docs/threads.md)")
    return Check("threads", "ok", "parallel (chosen in app.toml): threads run at once and"
                 " only their lock acquisitions are ordered; memory shared without locks can"
                 " make a replica diverge (it stops with a report)")



def program_shapes(program: Program, capture: str = "trap",
                   threads: str = "serialized", stdin: str = "inherit") -> list[Check]:
    """What the program's dynamic imports say it does that matters to replay (threads,
    child processes, a JIT runtime, reading stdin): one line for each it does. The
    program's own imports only: its libraries may start threads of their own."""
    from mig.ops.elfcheck import dynamic_imports

    try:
        imports = dynamic_imports(program.binary)
    except MigError as exc:
        return [Check("program.imports", "warn", str(exc), "whether it starts threads or"
                      " processes is not known: see docs/threads.md")]
    name = program.name

    def found(names: tuple[str, ...]) -> str:
        return ", ".join(n for n in names if n in imports.symbols)

    checks = []
    if starts := found(THREAD_STARTS):
        checks.append(_threads_shape(name, starts, imports.symbols, capture, threads))
    if forks := found(PROCESS_STARTS):
        checks.append(Check("program.forks", "ok", f"{name} imports {forks}: a replica"
                            " starts its child processes for real, and each replays its own"
                            " recorded calls (logical ids 1.1, 1.2... in start order);"
                            " memory they share is not ordered between them"))
    runtimes = [(lib, JIT_RUNTIMES[key]) for lib in imports.libraries
                if (key := lib.split(".so")[0] + ".so") in JIT_RUNTIMES]
    if runtimes:
        lib, runtime = runtimes[0]
        checks.append(Check("program.jit", "warn", f"{name} loads {lib} ({runtime}), a JIT"
                            " runtime: it compiles code and collects garbage on threads of"
                            " its own, at moments that depend on timing and with memory"
                            " shared without locks, so a replica can diverge with threads"
                            " in parallel; with threads serialized Node.js is tested, the"
                            " others are not", "try a replica under load before relying on it"
                            " (docs/programs.md lists the programs tested)"))
    if reads := found(STDIN_READS):
        if stdin == "topic":
            checks.append(Check("program.stdin", "ok", f"{name} imports {reads}: its stdin is"
                                " the app's input topic (mig input appends to it); what it"
                                " reads is recorded and replayed, and a promoted replica"
                                " feeds it on from the first byte not read"))
        else:
            checks.append(Check("program.stdin", "ok", f"{name} imports {reads}: what it"
                                " reads from its stdin (mig primary start's own) is recorded"
                                " and replayed; a promoted replica's stdin is /dev/null (end"
                                " of input); [app] stdin = \"topic\" carries the input over"))
    return checks



def _threads_shape(name: str, starts: str, symbols: frozenset[str], capture: str,
                   threads: str) -> Check:
    if threads == "serialized" and capture == "trap":
        return Check("program.threads", "ok", f"{name} imports {starts}: its threads run one"
                     " at a time and the log says where they switched, so memory they share"
                     " without locks replays too; a thread spinning on memory while another"
                     " waits is preempted where its state recurs, and one that spins while it"
                     " writes for longer than serial_stall_ms ends that (docs/threads.md)")
    if capture == "symbols" and symbols & {"clone", "__clone", "clone3"}:
        return Check("program.threads", "warn", f"{name} imports {starts}: with capture ="
                     " \"symbols\", threads started with clone() are not told apart from"
                     " their creator, and replay can diverge",
                     'set [app] capture = "trap", or start threads with pthread_create'
                     " (docs/threads.md)")
    also = ("; futex calls through syscall(), which it imports, are not ordered either"
            if "syscall" in symbols else "")
    return Check("program.threads", "warn", f"{name} imports {starts}: its threads are"
                 " recorded in lock order (mutexes, condition variables, semaphores, joins);"
                 f" threads sharing memory without locks can make a replica diverge{also}",
                 "a replica that diverges stops with a report; docs/threads.md, \"The"
                 " limit\"")

