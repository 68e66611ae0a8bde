"""``mig doctor``: is this host (and an app.toml) ready for mig? One ``Check`` per question.

Every check returns what it found and, unless all is well, what to do about it; none of them
changes anything (no broker is started, no topic is created). The host checks cover what
recording, replay and checkpoints rely on: the kernel, glibc, CRIU, ptrace, namespaces and
the shim. With an app.toml, the app's program, its Kafka and its topics are checked too,
and whether the clocks of its running members agree (mig/ops/clocks.py). The program's
dynamic imports tell what it does that matters to replay (threads, child processes, a JIT
runtime, reading stdin): one line each, saying what it means.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mig.errors import MigError
from mig.ops.check import Check
from mig.ops.shapes import check_threads, program_shapes

if TYPE_CHECKING:
    from mig.config import AppConfig, Topics
    from mig.kafka.clients import KafkaSettings

__all__ = ["app_checks", "host_checks", "run_checks"]

MIN_KERNEL = (5, 4)  # the oldest kernel line mig is meant for; CRIU itself needs 3.11
MIN_GLIBC = (2, 31)
_TIMEOUT = 10.0


def run_checks(app_toml: Path | None = None, kafka_timeout: float = 3.0) -> list[Check]:
    """The host checks, then (with ``app_toml``) the app's."""
    checks = host_checks()
    if app_toml is not None:
        checks += app_checks(app_toml, kafka_timeout)
    return checks


def host_checks() -> list[Check]:
    steps: list[Callable[[], Check]] = [
        check_kernel, check_glibc, check_criu, check_ptrace, check_namespaces, check_shim,
        check_pump]
    return [step() for step in steps]


# --- host ---------------------------------------------------------------------------------

def _numbers(text: str) -> tuple[int, ...]:
    m = re.match(r"(\d+(?:\.\d+)*)", text)
    return tuple(int(p) for p in m.group(1).split(".")) if m else ()


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def check_kernel() -> Check:
    release, machine = platform.release(), platform.machine()
    found = f"Linux {release} ({machine})"
    if platform.system() != "Linux":
        return Check("kernel", "fail", f"{platform.system()} {release}",
                     "mig runs on Linux only")
    if machine != "x86_64":
        return Check("kernel", "warn", found, "mig is built and tested on x86_64 only")
    if _numbers(release) < MIN_KERNEL:
        return Check("kernel", "warn", found,
                     f"kernels older than {_dotted(MIN_KERNEL)} are untested; CRIU may"
                     " refuse features (see the criu line)")
    return Check("kernel", "ok", found)


def check_glibc() -> Check:
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        text = ""
    if not text.startswith("glibc "):
        return Check("glibc", "fail", "the C library is not glibc",
                     "the shim interposes glibc's functions: use a glibc-based distribution")
    version = text.split()[1]
    if _numbers(version) < MIN_GLIBC:
        return Check("glibc", "warn", f"glibc {version}",
                     f"glibc older than {_dotted(MIN_GLIBC)} is untested")
    return Check("glibc", "ok", f"glibc {version}")


def check_criu() -> Check:
    from mig.checkpoint.criu import MIN_VERSION, find_criu, install_hint

    try:
        info = find_criu()
    except MigError as exc:
        return Check("criu", "fail", str(exc).split(";")[0], install_hint())
    found = f"CRIU {info.version or '(unknown version)'} ({info.source}, {info.path})"
    last = info.check_output.splitlines()[-1] if info.check_output else "no output"
    if not info.check_ok:
        advice = ("`criu check` needs root: run mig as root" if os.geteuid() != 0
                  else f"this CRIU does not work on this kernel; {install_hint()}")
        return Check("criu", "fail", f"{found}: `criu check` fails: {last}", advice)
    if not info.good:
        return Check("criu", "fail", f"{found} is older than {_dotted(MIN_VERSION)}",
                     install_hint())
    return Check("criu", "ok", f"{found}: `criu check`: {last}")


def check_ptrace() -> Check:
    scope_file = Path("/proc/sys/kernel/yama/ptrace_scope")
    root = os.geteuid() == 0
    try:
        scope = int(scope_file.read_text().strip())
    except FileNotFoundError:
        return Check("ptrace", "ok", "no Yama LSM: ptrace is not restricted")
    except (OSError, ValueError) as exc:
        return Check("ptrace", "warn", f"cannot read {scope_file}: {exc}",
                     "CRIU needs to ptrace the app")
    found = f"kernel.yama.ptrace_scope = {scope}"
    if scope == 0 or (scope in (1, 2) and root):
        return Check("ptrace", "ok", found + (" (root may ptrace)" if scope else ""))
    if scope in (1, 2):
        return Check("ptrace", "warn", found + " and not root",
                     "CRIU must ptrace the app: run mig as root")
    return Check("ptrace", "fail", found + ": ptrace is disabled until reboot",
                 "set kernel.yama.ptrace_scope to 1 or less (sysctl.d) and reboot")


def check_namespaces() -> Check:
    unshare = shutil.which("unshare")
    if unshare is None:
        return Check("namespaces", "fail", "no `unshare` on PATH",
                     "install util-linux")
    failed = []
    # every app runs in a pid and mount namespace of its own (mig/member/holder.py)
    for what, args in (("pid and mount", ["--pid", "--mount", "--fork"]),
                       ("network", ["--net"])):
        ok, out = _run([unshare, *args, "true"])
        if not ok:
            failed.append(f"{what} ({out.splitlines()[-1] if out else 'failed'})")
    if failed:
        return Check("namespaces", "fail", "cannot create a namespace: " + ", ".join(failed),
                     "run mig as root (CAP_SYS_ADMIN); in a container, allow unshare"
                     " (e.g. a privileged container)")
    return Check("namespaces", "ok", "can create pid, mount and network namespaces")


def check_shim() -> Check:
    from mig.paths import shim_library

    shim = shim_library()
    if not shim.is_file():
        return Check("shim", "fail", f"not built: {shim}",
                     "run `make -C shim` (or reinstall mig)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIG_")}
    env["LD_PRELOAD"] = str(shim)
    ok, out = _run(["/bin/cat", "/proc/self/maps"], env=env)
    if not ok or str(shim) not in out:
        reason = next((line for line in out.splitlines() if "ld.so" in line or "mig" in line),
                      out.strip().splitlines()[-1] if out.strip() else "not loaded")
        return Check("shim", "fail", f"{shim} does not load: {reason}",
                     "rebuild it on this host: `make -C shim`")
    return Check("shim", "ok", f"{shim} loads (LD_PRELOAD into /bin/cat)")


def check_pump() -> Check:
    """Whether a primary's batches go through the native pump (mig/kafka/pump.py)."""
    from mig.kafka.pump import PumpUnavailable, bind

    try:
        bound = bind()
    except (PumpUnavailable, OSError) as exc:
        return Check("pump", "warn", f"a primary sends its batches in Python: {exc}",
                     "rebuild the agents' library on this host: `make -C shim`")
    if os.environ.get("MIG_NATIVE_PUMP") == "0":
        return Check("pump", "warn", "MIG_NATIVE_PUMP=0: a primary sends its batches in"
                     " Python", "unset MIG_NATIVE_PUMP (it is for comparisons)")
    return Check("pump", "ok", f"batches sent (and signed) natively: {bound}")


def check_capture(capture: str) -> Check:
    """Which calls the shim sees under app.toml's `capture`, and whether this kernel can."""
    if capture == "symbols":
        return Check("capture", "warn", "symbols: only calls through libc's exported"
                     " functions are seen; libc's internal calls (stdio), dlsym'd functions,"
                     " raw syscall() and their threads are not recorded, and replay can"
                     " drift", 'set [app] capture = "trap" (docs/interceptor.md)')
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(59, 0, 0, 0, 0) != 0:  # PR_SET_SYSCALL_USER_DISPATCH, OFF: a probe
        return Check("capture", "fail", "trap: this kernel has no Syscall User Dispatch"
                     " (Linux 5.11+ with CONFIG_SYSCALL_USER_DISPATCH)",
                     'use a newer kernel, or [app] capture = "symbols" (incomplete)')
    return Check("capture", "ok", "trap: every system call the program makes is handled,"
                 " whoever makes it (Syscall User Dispatch; threads registered at clone)")


# --- the app ------------------------------------------------------------------------------

def app_checks(app_toml: Path, kafka_timeout: float = 3.0) -> list[Check]:
    """The app.toml itself, its program, its Kafka and its topics (read-only)."""
    from mig.config import load_config
    from mig.member.launch import app_env
    from mig.ops.elfcheck import find_program

    try:
        cfg = load_config(app_toml)
    except MigError as exc:
        return [Check("config", "fail", str(exc), "fix the app.toml (`mig config check`)")]
    checks = [Check("config", "ok", f"{app_toml}: app {cfg.name}")]
    try:
        program = find_program(cfg.command[0], app_env(cfg)["PATH"], cfg.cwd)
        checks.append(Check("program", "ok", f"{program} is dynamically linked against libc"))
        checks += program_shapes(program, cfg.capture, cfg.threads, cfg.stdin)
    except MigError as exc:
        checks.append(Check("program", "fail", str(exc),
                            "mig records programs that call libc dynamically: rebuild or"
                            " pick another binary"))
    checks.append(check_capture(cfg.capture))
    checks.append(check_threads(cfg.threads, cfg.capture))
    kafka, settings = _check_kafka(cfg, app_toml, kafka_timeout)
    checks.append(kafka)
    if settings is not None:
        checks += _check_topics(settings, cfg.name, cfg.topics, kafka_timeout)
        window = min(5.0, max(1.0, 3 * cfg.replica.heartbeat_ms / 1000))
        checks.append(check_clocks(settings, cfg.name, window, kafka_timeout))
    return checks


def check_clocks(settings: KafkaSettings, app: str, window_s: float,
                 timeout: float = 3.0) -> Check:
    """Whether the wall clocks of the app's members (and this host's) agree, from the
    records arriving on its control topic for ``window_s`` seconds (mig/ops/clocks.py)."""
    from mig.ops.clocks import FAIL_MS, WARN_MS, estimate, observe, spread

    advice = ("synchronise the hosts' clocks with chrony or NTP (docs/operations.md,"
              " \"Clocks\")")
    try:
        samples = observe(settings, app, window_s, timeout)
    except MigError as exc:
        return Check("clocks", "warn", f"cannot compare clocks: {exc}",
                     "check the client's permission to read the control topic")
    if not samples:
        why = ("does not exist" if samples is None
               else f"had no member record in {window_s:g} s")
        return Check("clocks", "warn", f"clocks not compared: mig.{app}.control {why}",
                     "run `mig doctor APP.TOML` again while the app's members run")
    clocks = estimate(samples)
    gap = spread(clocks)
    behind, ahead = clocks[0], clocks[-1]
    names = ", ".join(_clock_name(c.clock, c.members) for c in clocks)
    if gap <= WARN_MS:
        if len(clocks) == 1:
            return Check("clocks", "ok", f"one clock, nothing to compare: {names}")
        return Check("clocks", "ok", f"{len(clocks)} clocks agree within {gap} ms: {names}")
    found = (f"{_clock_name(ahead.clock, ahead.members)} is {gap} ms ahead of"
             f" {_clock_name(behind.clock, behind.members)} (clocks: " + ", ".join(
                 f"{_clock_name(c.clock, c.members)} {c.offset_ms:+d} ms" for c in clocks)
             + " from this host's)")
    if gap <= FAIL_MS:
        return Check("clocks", "warn", found + f"; more than {WARN_MS} ms", advice)
    return Check("clocks", "fail", found + f"; more than {FAIL_MS} ms", advice)


def _clock_name(clock: str, members: tuple[str, ...]) -> str:
    import socket

    if not members:
        return "this host" if clock == socket.gethostname() else clock
    return f"{clock} ({'/'.join(members)})"


def _check_kafka(cfg: AppConfig, app_toml: Path,
                 timeout: float) -> tuple[Check, KafkaSettings | None]:
    from mig.errors import KafkaRefused
    from mig.kafka.clients import wait_reachable
    from mig.kafka.connect import resolve_kafka

    try:
        settings = resolve_kafka(None, app_toml)
    except MigError as exc:
        if cfg.bootstrap_servers is None:
            return Check("kafka", "warn", "no [kafka] bootstrap_servers and the embedded"
                         " broker is not running", "`mig primary start` starts the embedded"
                         " broker; for production set [kafka] bootstrap_servers"), None
        return Check("kafka", "fail", str(exc), "check [kafka] of the app.toml"), None
    try:
        brokers = wait_reachable(settings, timeout=timeout)
    except KafkaRefused as exc:
        return Check("kafka", "fail", str(exc), "fix the credentials or TLS settings"
                     " (sasl.*, ssl.*) in [kafka] of the app.toml"), None
    except MigError as exc:
        return Check("kafka", "fail", str(exc),
                     "start the broker or fix [kafka] bootstrap_servers"), None
    return Check("kafka", "ok", f"{brokers} broker(s) answer at {settings.bootstrap_servers}"
                 f" ({settings.source})"), settings


def _check_topics(settings: KafkaSettings, app: str, topics: Topics,
                  timeout: float) -> list[Check]:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import ConfigResource

    from mig.kafka.clients import admin_client
    from mig.kafka.topics import STRICT_KEYS, topic_specs

    admin = admin_client(settings)
    try:
        meta = admin.list_topics(timeout=timeout)
        specs = topic_specs(app, topics, brokers=len(meta.brokers))
        existing = [s for s in specs if s.name in meta.topics]
        futures = admin.describe_configs(
            [ConfigResource(ConfigResource.Type.TOPIC, s.name) for s in existing]
        ) if existing else {}
        actual = {res.name: {k: e.value for k, e in fut.result(timeout=timeout).items()}
                  for res, fut in futures.items()}
    except KafkaException as exc:
        return [Check("topics", "fail", f"cannot read the app's topics: {exc}",
                      "check the broker and the client's permissions (describe configs)")]
    checks = []
    for spec in specs:
        name = f"topic.{spec.role}"
        if spec.name not in actual:
            checks.append(Check(name, "warn", f"{spec.name} does not exist: created at first"
                                " start", "nothing to do (`mig topics ensure` creates it now)"))
            continue
        have = actual[spec.name]
        wrong = [k for k in STRICT_KEYS if have.get(k) != spec.config[k]]
        if wrong:
            checks.append(Check(name, "fail", f"{spec.name}: " + ", ".join(
                f"{k} is '{have.get(k)}', mig needs '{spec.config[k]}'" for k in wrong),
                "delete the topic (mig recreates it) or fix its config"))
            continue
        differ = [f"{k}={have.get(k)} (expected {v})" for k, v in spec.config.items()
                  if k not in STRICT_KEYS and str(have.get(k)) != v]
        if differ:
            checks.append(Check(name, "warn", f"{spec.name}: " + ", ".join(differ),
                                "mig works, but set these with kafka-configs to match"))
        else:
            checks.append(Check(name, "ok", f"{spec.name} exists with mig's config"))
    return checks


def _run(argv: list[str], env: dict[str, str] | None = None) -> tuple[bool, str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT,
                              env=env, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    return proc.returncode == 0, proc.stdout + proc.stderr
