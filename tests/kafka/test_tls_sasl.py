"""mig against a broker that only talks SASL_SSL: certificates made at test time, SCRAM
users, Kafka's ACL authorizer (mig/broker/secure.py), and the password read from a file or
an environment variable (app.toml `{ file = ... }` / `{ env = ... }`).

The broker's own inter-broker and controller listeners stay PLAINTEXT; every client here
uses the SASL_SSL port, except where a test shows that a plaintext client cannot use it.
"""

from __future__ import annotations

import json
import re
import secrets
import signal
import subprocess
from pathlib import Path

import pytest

from mig.broker import EmbeddedBroker
from mig.broker.jars import classpath, ensure_jars, java_command
from mig.broker.node import free_ports
from mig.broker.secure import SaslListener
from mig.errors import KafkaRefused, KafkaUnavailable, MigError
from mig.kafka.clients import KafkaSettings, consumer, end_offsets, wait_reachable
from mig.kafka.writer import LogWriter
from tests.apps.client import request
from tests.conftest import run_mig
from tests.deploy import Deployment, _answers, _wait_for
from tests.testnet import HostNet

SNIPPETS = Path(__file__).resolve().parents[1] / "snippets"
APPS = Path(__file__).resolve().parents[1] / "apps"
DOCS = Path(__file__).resolve().parents[2] / "docs"
USERS = ("admin", "member", "operator", "inspector", "nobody")


@pytest.fixture(scope="module")
def hosts_and_sasl_broker(tmp_path_factory):
    """Two test hosts (tests/testnet.py) and the broker on the root side, reachable from
    them: (net, broker, users with their passwords)."""
    subprocess.run(["make", "-s", "-C", str(SNIPPETS)], check=True)
    subprocess.run(["make", "-s", "-C", str(APPS)], check=True)
    home = tmp_path_factory.mktemp("saslbroker")
    net = HostNet(hosts=2)
    try:
        port, cport, sport = free_ports(3)
        users = {name: f"pw{name}{secrets.token_hex(12)}" for name in USERS}
        listener = SaslListener(port=sport, folder=home / "tls", users=users, acls=True)
        broker = EmbeddedBroker(home=home, port=port, controller_port=cport,
                                host=net.root_ips[0], sasl=listener)
        try:
            broker.up(timeout=120)
            yield net, broker, users
        finally:
            broker.down()
    finally:
        net.close()


@pytest.fixture(scope="module")
def sasl_broker(hosts_and_sasl_broker):
    _, broker, users = hosts_and_sasl_broker
    return broker, users


def _kafka_toml(broker: EmbeddedBroker, user: str, secret: str) -> str:
    """The [kafka] keys (without the header) for ``user`` on the SASL_SSL listener."""
    assert broker.node.sasl is not None
    return (f'bootstrap_servers = "{broker.node.sasl_bootstrap}"\n'
            '"security.protocol" = "SASL_SSL"\n'
            f'"ssl.ca.location" = "{broker.node.sasl.ca_pem}"\n'
            '"sasl.mechanism" = "SCRAM-SHA-512"\n'
            f'"sasl.username" = "{user}"\n'
            f'"sasl.password" = {secret}\n')


def _app_toml(folder: Path, name: str, broker: EmbeddedBroker, user: str,
              password: str | None = None, secret: str | None = None,
              extra: str = "") -> Path:
    """An app.toml recording the random snippet as ``user``; the password goes into
    ``kafka.pass`` beside it (600), unless ``secret`` names another source."""
    folder.mkdir(parents=True, exist_ok=True)
    if secret is None:
        (folder / "kafka.pass").write_text(f"{password}\n")
        (folder / "kafka.pass").chmod(0o600)
        secret = '{ file = "kafka.pass" }'
    path = folder / "app.toml"
    path.write_text(
        "[app]\n"
        f'name = "{name}"\n'
        f'command = ["{SNIPPETS / "build" / "random"}", "out.txt"]\n'
        "[kafka]\n" + _kafka_toml(broker, user, secret) + extra)
    return path


def _record_and_replay(tmp_path: Path, app: Path) -> tuple[str, list[str]]:
    """Record the app as a primary, replay it in another folder; return the replica's
    output file and every output of the two commands."""
    rec = run_mig("primary", "start", str(app), env={"MIG_HOME": str(tmp_path / "home-p")})
    assert rec.returncode == 0, rec.stdout + rec.stderr
    assert "app exit code 0" in rec.stdout
    (tmp_path / "backup").mkdir()
    rep = run_mig("replica", "follow", str(app), "--workdir", str(tmp_path / "backup"),
                  "--idle-exit", "3", env={"MIG_HOME": str(tmp_path / "home-r")})
    assert rep.returncode == 0, rep.stdout + rep.stderr
    primary = (app.parent / "out.txt").read_text()
    backup = (tmp_path / "backup" / "out.txt").read_text()
    assert primary and backup == primary
    return backup, [rec.stdout, rec.stderr, rep.stdout, rep.stderr]


def test_app_records_and_replays_over_sasl_ssl_and_the_password_is_never_shown(
        sasl_broker, tmp_path, app_name):
    broker, users = sasl_broker
    password = users["admin"]
    app = _app_toml(tmp_path / "primary", app_name, broker, "admin", password)
    # inspection with the password in an environment variable instead
    env_toml = _app_toml(tmp_path / "inspect", app_name, broker, "admin",
                         secret='{ env = "T_MIG_KAFKA_PASSWORD" }')
    env = {"T_MIG_KAFKA_PASSWORD": password}
    outputs = []
    for args in (["config", "check", str(app)], ["topics", "ensure", str(app)]):
        proc = run_mig(*args, check=True)
        outputs += [proc.stdout, proc.stderr]
    assert "mig." + app_name + ".calls: created" in outputs[2]
    _, more = _record_and_replay(tmp_path, app)
    outputs += more
    tail = run_mig("log", "tail", app_name, "--json", "--config", str(env_toml), env=env,
                   check=True)
    names = [json.loads(line)["schema"] for line in tail.stdout.splitlines()]
    assert "mig.log.CallBatch" in names, tail.stdout[:500]
    status = run_mig("status", app_name, "--config", str(env_toml), env=env, check=True)
    assert re.search(r"REPLICA\s+1\s+0\b", status.stdout), status.stdout
    status_json = run_mig("status", app_name, "--json", "--config", str(app), check=True)
    doctor = run_mig("doctor", str(app), "--json")
    checks = {c["check"]: c for c in json.loads(doctor.stdout)}
    assert checks["kafka"]["status"] == "ok", checks["kafka"]
    for proc in (tail, status, status_json, doctor):
        outputs += [proc.stdout, proc.stderr]
    assert not [out for out in outputs if password in out]
    # nor in any file the members left behind (logs, run folders, the app's state)
    leaked = [str(p) for p in tmp_path.rglob("*") if p.is_file() and p.name != "kafka.pass"
              and password.encode() in p.read_bytes()]
    assert leaked == []


def test_wrong_password_plaintext_and_untrusted_broker_are_refused(sasl_broker, tmp_path,
                                                                    app_name):
    broker, users = sasl_broker
    wrong = "pwwrong" + secrets.token_hex(8)
    app = _app_toml(tmp_path / "p", app_name, broker, "admin", wrong)
    for args in (["topics", "ensure", str(app)],
                 ["primary", "start", str(app)],
                 ["log", "tail", app_name, "--config", str(app)],
                 ["replica", "follow", str(app), "--workdir", str(tmp_path / "r")]):
        proc = run_mig(*args, timeout=60, env={"MIG_HOME": str(tmp_path / "home")})
        assert proc.returncode == 1, proc.stdout + proc.stderr
        line = proc.stderr.strip().splitlines()[-1]
        assert line.startswith(f"mig: error: Kafka at {broker.node.sasl_bootstrap} refused"
                               " the connection: SASL authentication error"), line
        assert "invalid credentials" in line and "Traceback" not in proc.stderr
        assert wrong not in proc.stdout + proc.stderr
    # PLAIN works as well as SCRAM for a right password
    good = broker.sasl_settings("admin", users["admin"], mechanism="PLAIN")
    assert wait_reachable(good, timeout=10) == 1
    bad = broker.sasl_settings("admin", wrong, mechanism="PLAIN")
    with pytest.raises(KafkaRefused, match="SASL authentication error"):
        wait_reachable(bad, timeout=10)
    # a plaintext client gets nothing from the SASL_SSL port (and is not taken for one
    # whose credentials were refused)
    with pytest.raises(KafkaUnavailable) as info:
        wait_reachable(KafkaSettings(broker.node.sasl_bootstrap), timeout=4)
    assert not isinstance(info.value, KafkaRefused)
    assert "does security.protocol match this listener's?" in str(info.value)
    # a client that does not trust the broker's CA refuses it
    untrusted = dict(good.properties)
    del untrusted["ssl.ca.location"]
    with pytest.raises(KafkaRefused, match="SSL handshake failed.*certificate verify"):
        wait_reachable(KafkaSettings(good.bootstrap_servers, untrusted), timeout=10)


def _doc_acl_lines() -> list[str]:
    """The `$ACLS ...` lines of docs/security.md's ACL block."""
    text = (DOCS / "security.md").read_text()
    block = text.split("## Kafka ACLs", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    lines = [ln for ln in block.splitlines() if ln.startswith("$ACLS ")]
    assert len(lines) >= 4, block
    return lines


def _apply_doc_acls(broker: EmbeddedBroker, app: str) -> None:
    """Run the documented kafka-acls lines with Kafka's AclCommand (on the plaintext
    listener, whose principal is a super user)."""
    tool = f"{java_command()} -cp '{classpath(ensure_jars())}' org.apache.kafka.tools.AclCommand"
    script = "\n".join([
        f'kafka_acls() {{ {tool} "$@"; }}',
        f"APP={app} MEMBER=User:member OPERATOR=User:operator INSPECTOR=User:inspector",
        f'ACLS="kafka_acls --bootstrap-server {broker.settings.bootstrap_servers} --add"',
        "set -e", *_doc_acl_lines()])
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def _write_error(settings: KafkaSettings, app: str, role: str) -> str | None:
    """Write one record to ``mig.APP.<role>`` as mig's members do: None if it was
    written, else the error mig reports."""
    try:
        writer = LogWriter(settings, app, timeout=10)
        writer.send_raw(role, b"x", key="probe")
        writer.commit()
    except MigError as exc:
        return str(exc)
    return None


def _ends(settings: KafkaSettings, app: str) -> dict[str, int]:
    """Records in each of the app's topics (sum of the partitions' end offsets)."""
    cons = consumer(settings)
    try:
        return {role: sum(end_offsets(cons, f"mig.{app}.{role}").values())
                for role in ("calls", "checkpoints", "control")}
    finally:
        cons.close()


def test_documented_acls_let_each_role_do_its_part_and_no_more(sasl_broker, tmp_path,
                                                               app_name):
    broker, users = sasl_broker
    _apply_doc_acls(broker, app_name)
    # the member creates the topics, records and replays with nothing but its ACLs
    app = _app_toml(tmp_path / "primary", app_name, broker, "member", users["member"])
    run_mig("topics", "ensure", str(app), check=True)
    _record_and_replay(tmp_path, app)

    def role(name: str) -> tuple[Path, KafkaSettings]:
        toml = _app_toml(tmp_path / name, app_name, broker, name, users[name])
        return toml, broker.sasl_settings(name, users[name])

    roles = ("calls", "checkpoints", "control")
    inspector, inspector_settings = role("inspector")
    tail = run_mig("log", "tail", app_name, "--json", "--config", str(inspector), check=True)
    assert '"mig.log.CallBatch"' in tail.stdout
    status = run_mig("status", app_name, "--config", str(inspector), check=True)
    assert "REPLICA" in status.stdout and "PRIMARY" in status.stdout
    admin = broker.sasl_settings("admin", users["admin"])
    before = _ends(admin, app_name)
    for topic in roles:
        # refused: mostly said as a (cluster or topic) authorization failure; the Python
        # client sometimes loses the reason of the fatal one (a "returned NULL" from flush)
        assert _write_error(inspector_settings, app_name, topic) is not None, topic

    _, operator_settings = role("operator")
    assert _write_error(operator_settings, app_name, "control") is None  # requests
    for topic in roles[:2]:
        err = _write_error(operator_settings, app_name, topic)
        assert err is not None and "authoriz" in err.lower(), (topic, err)
    after = _ends(admin, app_name)
    assert after == {**before, "control": before["control"] + 1}  # the operator's only

    nobody, _ = role("nobody")
    proc = run_mig("log", "tail", app_name, "--config", str(nobody), timeout=60)
    assert proc.returncode == 1
    assert "not authorized" in proc.stderr.lower(), proc.stderr


def test_failover_as_the_member_user_under_the_documented_acls(hosts_and_sasl_broker,
                                                               tmp_path):
    """A replica on another host takes over from a killed primary with only the
    member's ACLs: it fences the old primary under the transactional id mig.APP.primary,
    claims the epoch and goes live."""
    net, broker, users = hosts_and_sasl_broker
    dep = Deployment(net, broker, tmp_path, kafka_toml=_kafka_toml(
        broker, "member", '{ file = "kafka.pass" }'))
    secret = dep.tmp / "host0" / "kafka.pass"
    secret.write_text(users["member"] + "\n")
    secret.chmod(0o600)
    _apply_doc_acls(broker, dep.name)
    try:
        dep.start()
        ip0, ip1 = net.host_ips
        for i in range(30):
            assert request(ip0, dep.port, f"SET a{i} {i}").startswith("OK")
        net.signal(0, signal.SIGKILL)
        _wait_for(lambda: _answers(ip1, dep.port), 30, "host 1 to take over")
        assert request(ip1, dep.port, "GET a29").startswith("VALUE 29")
        promotions = dep.promotions()
        assert promotions and promotions[-1]["member"] == "host1"
        assert promotions[-1]["new_epoch"] == 2
        logs = dep.log_text(0) + dep.log_text(1)
        assert "mig.kafka.refused" not in logs and "authoriz" not in logs.lower()
        assert users["member"] not in logs
    finally:
        dep.stop()
