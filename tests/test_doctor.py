"""``mig doctor``: the host checks pass on a prepared host, and an app whose program mig
cannot record, or whose topics mig cannot use, fails with exit code 1."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from mig.doctor import Check, app_checks, exit_code, render_text
from mig.kafka import KafkaSettings, admin_client
from mig.topics import ensure_topics, topic_names
from tests.conftest import run_mig
from tests.harness import write_app

HOST_CHECKS = ["kernel", "glibc", "criu", "ptrace", "namespaces", "shim", "threads"]
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
    return folder


def test_host_checks() -> None:
    code, checks = doctor_json()
    assert list(checks) == HOST_CHECKS
    assert checks["criu"]["status"] == "ok", checks["criu"]
    assert "`criu check`" in checks["criu"]["detail"]
    assert checks["shim"]["status"] == "ok", checks["shim"]
    assert checks["threads"]["status"] == "ok" and "data races" in checks["threads"]["detail"]
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
    assert list(checks) == HOST_CHECKS + ["config", "program", "capture", "kafka",
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


def test_program_threads_check() -> None:
    from mig.doctor import check_program_threads

    apps = Path(__file__).resolve().parent / "apps" / "build"
    subprocess.run(["make", "-s", "-C", str(apps.parent)], check=True, timeout=300)
    pool = check_program_threads(apps / "poolserver")
    assert pool.status == "ok" and "data races" in pool.detail
    single = check_program_threads(apps / "kvserver")
    assert single.status == "ok" and "does not start threads" in single.detail


def test_capture_check_says_which_calls_are_seen(programs: Path, tmp_path: Path) -> None:
    """`mig doctor APP.TOML` reports the capture mode: trap (this kernel has Syscall User
    Dispatch) or symbols, which is incomplete and says so."""
    from mig.doctor import check_capture

    trap = check_capture("trap")
    assert trap.status == "ok" and "Syscall User Dispatch" in trap.detail
    symbols = check_capture("symbols")
    assert symbols.status == "warn" and "raw syscall()" in symbols.detail
    toml = tmp_path / "app.toml"
    toml.write_text('[app]\nname = "cap"\ncommand = ["/bin/cat"]\ncapture = "symbols"\n'
                    '[kafka]\nbootstrap_servers = "127.0.0.1:1"\n')
    proc = run_mig("doctor", str(toml))
    assert "capture" in proc.stdout and "symbols: only calls through libc" in proc.stdout


# --- clocks -------------------------------------------------------------------------------

def test_clock_estimate_takes_the_least_delayed_sample_and_the_spread() -> None:
    from mig.clocksync import BROKER, estimate, samples_of, spread

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
    from mig.doctor import check_clocks

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
    from mig.codec import Codec
    from mig.kafka import producer

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
    from mig.doctor import check_clocks

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
