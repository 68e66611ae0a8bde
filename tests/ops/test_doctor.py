"""``mig doctor``: the host checks pass on a prepared host, and an app whose program mig
cannot record, or whose topics mig cannot use, fails with exit code 1. The program is named
as found (a link and its target), and what its imports mean for replay is said, one line
for each shape (threads, child processes, a JIT runtime, stdin)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from mig.kafka.clients import KafkaSettings, admin_client
from mig.kafka.topics import ensure_topics, topic_names
from mig.ops.check import Check, exit_code, render_text
from mig.ops.doctor import app_checks
from tests.conftest import run_mig
from tests.harness import write_app

HOST_CHECKS = ["kernel", "glibc", "criu", "ptrace", "namespaces", "shim", "pump"]
TOPIC_CHECKS = ["topic.calls", "topic.checkpoints", "topic.control"]


def doctor_json(*args: str) -> tuple[int, dict[str, dict[str, str]]]:
    proc = run_mig("doctor", "--json", *args)
    checks = json.loads(proc.stdout)
    assert all(set(c) == {"check", "status", "detail", "advice"} for c in checks)
    assert all(c["status"] in ("ok", "warn", "fail") for c in checks)
    return proc.returncode, {c["check"]: c for c in checks}


def wait_listed(settings: KafkaSettings, app: str, count: int = 3) -> None:
    """Until the broker's metadata lists the app's new topics: a broker busy creating
    __consumer_offsets (the first consumer group, the doctor's own clock reader) can answer
    a create before its metadata shows the topic."""
    deadline = time.monotonic() + 30
    admin = admin_client(settings)
    while sum(app in t for t in admin.list_topics(timeout=5).topics) < count:
        assert time.monotonic() < deadline, f"the topics of {app} are not listed after 30 s"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("programs")
    src = folder / "hello.c"
    src.write_text("int main(void) { return 0; }\n")
    subprocess.run(["gcc", "-o", folder / "dynamic", src], check=True)
    subprocess.run(["gcc", "-static", "-o", folder / "static", src], check=True)
    cloner = folder / "cloner.c"
    cloner.write_text("#define _GNU_SOURCE\n#include <sched.h>\n#include <signal.h>\n"
                      "static char stack[65536];\nstatic int run(void *arg) { return 0; }\n"
                      "int main(void) { return clone(run, stack + sizeof stack, SIGCHLD, 0)"
                      " < 0; }\n")
    subprocess.run(["gcc", "-o", folder / "cloner", cloner], check=True)
    # a program that needs a library named as LuaJIT's: the JIT runtime is told by that name
    lib = folder / "jit.c"
    lib.write_text("int luaL_newstate(void) { return 1; }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libluajit-5.1.so.2", "-o",
                    folder / "libluajit-5.1.so.2", lib], check=True)
    user = folder / "jituser.c"
    user.write_text("int luaL_newstate(void);\nint main(void) { return !luaL_newstate(); }\n")
    subprocess.run(["gcc", "-o", folder / "jituser", user, folder / "libluajit-5.1.so.2"],
                   check=True)
    return folder


def test_host_checks() -> None:
    code, checks = doctor_json()
    assert list(checks) == HOST_CHECKS
    assert checks["criu"]["status"] == "ok", checks["criu"]
    assert "`criu check`" in checks["criu"]["detail"]
    assert checks["shim"]["status"] == "ok", checks["shim"]
    assert checks["pump"]["status"] == "ok", checks["pump"]  # (mig/kafka/pump.py)
    assert "librdkafka 2." in checks["pump"]["detail"], checks["pump"]
    assert code == (1 if any(c["status"] == "fail" for c in checks.values()) else 0)


def test_missing_criu_fails(tmp_path: Path) -> None:
    """No criu on PATH and an empty mig cache: the criu line fails, naming the script that
    installs one, and so does the exit code; the other host checks still run."""
    import shutil

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    unshare = shutil.which("unshare")
    assert unshare is not None
    (bin_dir / "unshare").symlink_to(unshare)
    env = {"PATH": str(bin_dir), "MIG_CACHE": str(tmp_path / "cache")}
    proc = run_mig("doctor", env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.split()[1:2] == ["criu"])
    assert lines[at].startswith("fail  criu"), lines[at]
    assert "no criu on PATH" in lines[at]
    assert f"no private CRIU at {tmp_path / 'cache' / 'criu' / 'bin' / 'criu'}" in lines[at]
    assert "-> run `bash " in lines[at + 1] and "scripts/install-criu.sh`" in lines[at + 1]
    assert [line.split()[1] for line in lines if not line.startswith(" ")] == HOST_CHECKS


def test_static_program_fails(programs: Path, settings: KafkaSettings, tmp_path: Path,
                              app_name: str) -> None:
    app = write_app(tmp_path, app_name, [str(programs / "static")], settings.bootstrap_servers)
    code, checks = doctor_json(str(app))
    assert code == 1
    assert list(checks) == HOST_CHECKS + ["config", "program", "capture", "threads", "kafka",
                                          *TOPIC_CHECKS, "clocks"]
    assert checks["program"]["status"] == "fail"
    assert "statically linked" in checks["program"]["detail"]
    assert checks["kafka"]["status"] == "ok"
    for name in TOPIC_CHECKS:  # nothing was created by looking
        assert checks[name]["status"] == "warn"
        assert "created at first start" in checks[name]["detail"]
    assert checks["clocks"]["status"] == "warn"
    assert "does not exist" in checks["clocks"]["detail"]


def test_existing_topics(programs: Path, settings: KafkaSettings, tmp_path: Path,
                         app_name: str) -> None:
    app = write_app(tmp_path, app_name, [str(programs / "dynamic")], settings.bootstrap_servers)
    ensure_topics(settings, app_name)
    wait_listed(settings, app_name)
    checks = {c.check: c for c in app_checks(app)}
    assert checks["program"].status == "ok"
    assert [checks[n].status for n in TOPIC_CHECKS] == ["ok"] * 3, checks


def test_wrong_cleanup_policy_fails(programs: Path, settings: KafkaSettings,
                                   tmp_path: Path, app_name: str) -> None:
    from confluent_kafka.admin import NewTopic

    calls = topic_names(app_name)["calls"]
    admin = admin_client(settings)
    admin.create_topics([NewTopic(calls, 1, 1, config={"cleanup.policy": "compact"})])[
        calls].result(timeout=30)
    wait_listed(settings, app_name, 1)
    app = write_app(tmp_path, app_name, [str(programs / "dynamic")], settings.bootstrap_servers)
    checks = {c.check: c for c in app_checks(app)}
    assert checks["topic.calls"].status == "fail"
    assert "cleanup.policy is 'compact'" in checks["topic.calls"].detail
    assert exit_code(list(checks.values())) == 1


def test_unreachable_kafka_and_bad_config(programs: Path, tmp_path: Path) -> None:
    app = write_app(tmp_path / "a", "nokafka", [str(programs / "dynamic")], "127.0.0.1:1")
    checks = {c.check: c for c in app_checks(app, kafka_timeout=0.5)}
    assert checks["kafka"].status == "fail" and "127.0.0.1:1" in checks["kafka"].detail
    assert not any(name.startswith("topic") for name in checks)
    bad = tmp_path / "bad.toml"
    bad.write_text("[app]\nname = 'x'\n")
    assert [(c.check, c.status) for c in app_checks(bad)] == [("config", "fail")]


def test_text_output() -> None:
    text = render_text([Check("kernel", "ok", "Linux 6.1"),
                        Check("threads", "warn", "not yet", "single-threaded only")])
    assert text.splitlines() == ["ok    kernel   Linux 6.1",
                                 "warn  threads  not yet",
                                 "               -> single-threaded only"]


def shapes(binary: Path | str, capture: str = "trap", threads: str = "serialized",
           stdin: str = "inherit") -> dict[str, Check]:
    from mig.ops.elfcheck import find_program
    from mig.ops.shapes import program_shapes

    return {c.check: c for c in program_shapes(find_program(str(binary)), capture, threads,
                                               stdin)}


def test_threads_say_what_their_mode_orders() -> None:
    """A program that starts threads: serialized (the default) is ok and says memory shared
    without locks replays; parallel is a warning saying what is ordered (locks) and what
    is not; a program that starts none gets no threads line."""
    apps = Path(__file__).resolve().parents[1] / "apps" / "build"
    subprocess.run(["make", "-s", "-C", str(apps.parent)], check=True, timeout=300)
    serial = shapes(apps / "poolserver")["program.threads"]
    assert serial.status == "ok", serial
    assert "run one at a time" in serial.detail and "serial_stall_ms" in serial.detail
    pool = shapes(apps / "poolserver", threads="parallel")["program.threads"]
    assert pool.status == "warn", pool
    assert pool.detail.startswith("poolserver imports pthread_create: its threads are"
                                  " recorded in lock order")
    assert "sharing memory without locks can make a replica diverge" in pool.detail
    assert "docs/threads.md" in pool.advice
    assert "program.threads" not in shapes(apps / "kvserver")


@pytest.mark.skipif(not Path("/usr/bin/sqlite3").is_file(),
                    reason="needs Debian's sqlite3 package")
def test_sqlite3_is_not_said_to_import_clone(programs: Path) -> None:
    """The sqlite3 shell has the word "clone" in its text, not in its imports: no clone
    warning, even with capture = "symbols"; a program that imports clone() gets it."""
    sqlite3 = shapes("/usr/bin/sqlite3", "symbols")
    assert "program.threads" not in sqlite3, sqlite3
    assert sqlite3["program.forks"].detail.startswith("sqlite3 imports system, popen: a"
                                                      " replica starts its child processes")
    assert sqlite3["program.stdin"].detail.startswith("sqlite3 imports stdin, readline:")
    assert "a promoted replica's stdin is /dev/null" in sqlite3["program.stdin"].detail
    topic = shapes("/usr/bin/sqlite3", stdin="topic")["program.stdin"]
    assert "a promoted replica feeds it on from the first byte not read" in topic.detail
    cloner = shapes(programs / "cloner", "symbols")["program.threads"]
    assert cloner.status == "warn" and "imports clone: with capture" in cloner.detail
    trapped = shapes(programs / "cloner", threads="parallel")["program.threads"]
    assert trapped.status == "warn" and "recorded in lock order" in trapped.detail


def test_jit_runtime_is_named(programs: Path) -> None:
    jit = shapes(programs / "jituser")
    assert list(jit) == ["program.jit"]
    assert jit["program.jit"].status == "warn"
    assert jit["program.jit"].detail.startswith("jituser loads libluajit-5.1.so.2 (LuaJIT), a"
                                                " JIT runtime:")
    assert shapes(programs / "dynamic") == {}
    from mig.ops.elfcheck import Program
    from mig.ops.shapes import program_shapes

    unread = program_shapes(Program(programs / "static", programs / "static"))
    assert [(c.check, c.status) for c in unread] == [("program.imports", "warn")]
    assert "no dynamic symbol table" in unread[0].detail


def test_program_behind_a_link_is_named_with_its_target(programs: Path,
                                                         tmp_path: Path) -> None:
    link = tmp_path / "server"
    link.symlink_to(programs / "cloner")
    app = write_app(tmp_path / "a", "linked", [str(link)], "127.0.0.1:1")
    checks = {c.check: c for c in app_checks(app, kafka_timeout=0.5)}
    assert checks["program"].detail == (f"{link} (a link to {programs / 'cloner'}) is"
                                        " dynamically linked against libc")
    assert checks["program.threads"].detail.startswith("server imports clone:")
    proc = run_mig("doctor", str(app))
    line = next(ln for ln in proc.stdout.splitlines() if ln.split()[:2] == ["ok", "program"])
    assert f"{link} (a link to {programs / 'cloner'})" in line


@pytest.mark.skipif(not Path("/usr/bin/redis-server").is_symlink(),
                    reason="needs Debian's redis-server (a link to redis-check-rdb)")
def test_redis_server_is_named_as_a_link() -> None:
    from mig.ops.elfcheck import find_program

    program = find_program("/usr/bin/redis-server")
    assert str(program) == "/usr/bin/redis-server (a link to /usr/bin/redis-check-rdb)"
    assert shapes("/usr/bin/redis-server")["program.threads"].detail.startswith(
        "redis-server imports pthread_create")


def test_capture_check_says_which_calls_are_seen(programs: Path, tmp_path: Path) -> None:
    """`mig doctor APP.TOML` reports the capture mode: trap (this kernel has Syscall User
    Dispatch) or symbols, which is incomplete and says so."""
    from mig.ops.doctor import check_capture

    trap = check_capture("trap")
    assert trap.status == "ok" and "Syscall User Dispatch" in trap.detail
    symbols = check_capture("symbols")
    assert symbols.status == "warn" and "raw syscall()" in symbols.detail
    toml = tmp_path / "app.toml"
    toml.write_text('[app]\nname = "cap"\ncommand = ["/bin/cat"]\ncapture = "symbols"\n'
                    '[kafka]\nbootstrap_servers = "127.0.0.1:1"\n')
    proc = run_mig("doctor", str(toml))
    assert "capture" in proc.stdout and "symbols: only calls through libc" in proc.stdout
    # serialized threads (the default) need the trap: doctor fails that combination
    assert "serialized: needs capture" in proc.stdout, proc.stdout


def test_threads_check_says_which_mode_applies_and_why() -> None:
    from mig.ops.shapes import check_threads

    default = check_threads("serialized", "trap")
    assert default.status == "ok" and "one thread of a process runs at a time" in default.detail
    assert "the default" in default.detail
    chosen = check_threads("parallel", "trap")
    assert chosen.status == "ok" and "chosen in app.toml" in chosen.detail
    assert "only their lock acquisitions are ordered" in chosen.detail
    assert check_threads("serialized", "symbols").status == "fail"


# --- clocks -------------------------------------------------------------------------------

def test_clock_estimate_takes_the_least_delayed_sample_and_the_spread() -> None:
    from mig.ops.clocks import BROKER, estimate, samples_of, spread

    beat = {"member": "a", "host": "host-a", "ts_ms": 10_000}
    # CreateTime: the producer's clock; the body's ts_ms is not looked at
    assert [s.offset_ms for s in samples_of("mig.log.Heartbeat", beat, 1, 10_500, 10_020)] == [
        480]
    # LogAppendTime: the body is the member's clock, the Kafka timestamp the broker's
    both = samples_of("mig.log.Heartbeat", beat, 2, 10_030, 10_040)
    assert [(s.clock, s.offset_ms) for s in both] == [("host-a", -40), (BROKER, -10)]
    assert samples_of("mig.log.Promotion", beat, 1, 0, 0) == []
    samples = [*both, *samples_of("mig.log.MemberStatus", {"member": "b", "host": None,
                                                           "ts_ms": 0}, 1, 10_900, 10_950),
               *samples_of("mig.log.MemberStatus", {"member": "b", "host": None,
                                                    "ts_ms": 0}, 1, 11_000, 11_030)]
    clocks = estimate(samples, own="doctor-host")
    assert [(c.clock, c.offset_ms, c.samples) for c in clocks] == [
        ("host-a", -40, 1), ("b", -30, 2), (BROKER, -10, 1), ("doctor-host", 0, 0)]
    assert spread(clocks) == 40
    assert [c.clock for c in estimate(samples, own="host-a")] == ["host-a", "b", BROKER]


def _clocks_while_beating(settings, app_name, skews):  # noqa: ANN001, ANN202
    """The clocks check, run while _beats writes heartbeats with the given skews (ms)."""
    from mig.ops.doctor import check_clocks

    stop = threading.Event()
    writer = threading.Thread(target=_beats, args=(settings, app_name, skews, stop))
    writer.start()
    try:
        time.sleep(0.5)
        return check_clocks(settings, app_name, window_s=1.5)
    finally:
        stop.set()
        writer.join()


def _beats(settings: KafkaSettings, app: str, skews: dict[str, int], stop: threading.Event
           ) -> None:
    """Members on hosts whose clocks are ``skews`` ms off, writing heartbeats until stopped:
    the producer's timestamp argument stands for the member's clock."""
    from mig.kafka.clients import producer
    from mig.wire.codec import Codec

    codec = Codec.default()
    headers = codec.headers("mig.log.Heartbeat")
    prod = producer(settings)
    topic = topic_names(app)["control"]
    while not stop.is_set():
        for host, skew in skews.items():
            now = int(time.time() * 1000) + skew
            value = codec.encode("mig.log.Heartbeat", {
                "app": app, "member": f"m-{host}", "role": "REPLICA", "epoch": 1,
                "ts_ms": now, "calls_offset": -1, "host": host})
            prod.produce(topic, value, key=f"m-{host}", headers=headers, timestamp=now)
        prod.flush(5)
        stop.wait(0.05)
    prod.flush(5)


@pytest.mark.parametrize(("skew", "status"), [(0, "ok"), (600, "warn"), (-5000, "fail")])
def test_clocks_of_members(settings: KafkaSettings, app_name: str, skew: int,
                           status: str) -> None:
    ensure_topics(settings, app_name)
    wait_listed(settings, app_name)
    check = _clocks_while_beating(settings, app_name, {"host-a": 0, "host-b": skew})
    assert check.status == status, check
    if status == "ok":
        assert "agree within" in check.detail and "host-b (m-host-b)" in check.detail
        assert check.advice == ""
        return
    # host-a and this host share a clock: either may be named for it
    if skew > 0:
        assert check.detail.startswith("host-b (m-host-b) is "), check.detail
    else:
        assert "ms ahead of host-b (m-host-b) (clocks: host-b" in check.detail, check.detail
    gap = int(check.detail.split(" is ")[1].split(" ms")[0])
    assert abs(gap - abs(skew)) < 100, check.detail
    assert "chrony or NTP" in check.advice


def test_clocks_without_members(settings: KafkaSettings, app_name: str) -> None:
    from mig.ops.doctor import check_clocks

    ensure_topics(settings, app_name)
    wait_listed(settings, app_name)
    check = check_clocks(settings, app_name, window_s=0.5)
    assert check.status == "warn" and "had no member record in 0.5 s" in check.detail


def test_clocks_with_log_append_time_include_the_brokers(settings: KafkaSettings,
                                                         app_name: str) -> None:
    """A control topic that stamps LogAppendTime: the records' ts_ms are the members'
    clocks, and the Kafka timestamps the broker's, which joins the comparison."""
    from confluent_kafka.admin import NewTopic

    control = topic_names(app_name)["control"]
    admin = admin_client(settings)  # kept: a collected client cancels its futures
    admin.create_topics([NewTopic(control, 1, 1, config={
        "cleanup.policy": "delete", "message.timestamp.type": "LogAppendTime"})])[
        control].result(timeout=30)
    ensure_topics(settings, app_name)
    wait_listed(settings, app_name)
    check = _clocks_while_beating(settings, app_name, {"host-a": 0, "host-b": 3000})
    assert check.status == "fail", check
    assert check.detail.startswith("host-b (m-host-b) is "), check.detail
    assert "broker " in check.detail.split("(clocks: ")[1], check.detail
