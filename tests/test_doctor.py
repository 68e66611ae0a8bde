"""``mig doctor``: the host checks pass on a prepared host, and an app whose program mig
cannot record, or whose topics mig cannot use, fails with exit code 1."""

from __future__ import annotations

import json
import subprocess
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


def test_static_program_fails(programs: Path, settings: KafkaSettings, tmp_path: Path,
                              app_name: str) -> None:
    app = write_app(tmp_path, app_name, [str(programs / "static")], settings.bootstrap_servers)
    code, checks = doctor_json(str(app))
    assert code == 1
    assert list(checks) == HOST_CHECKS + ["config", "program", "kafka"] + TOPIC_CHECKS
    assert checks["program"]["status"] == "fail"
    assert "statically linked" in checks["program"]["detail"]
    assert checks["kafka"]["status"] == "ok"
    for name in TOPIC_CHECKS:  # nothing was created by looking
        assert checks[name]["status"] == "warn"
        assert "created at first start" in checks[name]["detail"]


def test_existing_topics(programs: Path, settings: KafkaSettings, tmp_path: Path,
                         app_name: str) -> None:
    app = write_app(tmp_path, app_name, [str(programs / "dynamic")], settings.bootstrap_servers)
    ensure_topics(settings, app_name)
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
