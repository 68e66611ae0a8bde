"""mig/config/: app.toml parsing and its one-line errors (file, key, what was expected)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mig.config import SECTIONS, Replica, load_config, parse_config, reference_markdown
from mig.errors import ConfigError
from tests.conftest import run_mig

GOOD = """
[app]
name = "counter"
command = ["python3", "app.py", "--port", "7000"]
cwd = "srv"
barrier_mode = "sync"
env = { MODE = "test" }

[kafka]
bootstrap_servers = "10.0.0.1:9092,10.0.0.2:9092"
"security.protocol" = "SASL_SSL"
"linger.ms" = 5

[topics]
partitions = 2

[replica]
failover_timeout_ms = 1500
"""


def test_good_config_is_typed_and_resolved(tmp_path):
    cfg = parse_config(GOOD, tmp_path / "app.toml")
    assert cfg.name == "counter"
    assert cfg.command == ["python3", "app.py", "--port", "7000"]
    assert cfg.cwd == (tmp_path / "srv").resolve()
    assert cfg.state_dir == (tmp_path / "srv" / "state").resolve()
    assert cfg.barrier_mode == "sync"
    assert cfg.topics.partitions == 2 and cfg.topics.max_message_bytes == 1048576
    assert cfg.replica == Replica(heartbeat_ms=200, failover_timeout_ms=1500,
                           max_lag_records=10_000, fetch_coalesce_ms=0)
    assert cfg.failover.on_promote == "" and cfg.failover.migrate_on_stop is True
    settings = cfg.kafka_settings()
    assert settings is not None
    conf = settings.as_librdkafka_dict()
    assert conf["bootstrap.servers"] == "10.0.0.1:9092,10.0.0.2:9092"
    assert conf["security.protocol"] == "SASL_SSL" and conf["linger.ms"] == 5


def test_defaults_and_embedded_kafka(tmp_path):
    cfg = parse_config('[app]\nname = "a"\ncommand = ["true"]\n', tmp_path / "app.toml")
    assert cfg.barrier_mode == "output"
    assert cfg.kafka_settings() is None


@pytest.mark.parametrize(("text", "message"), [
    ('[app]\ncommand = ["x"]\n',
     "app.toml: key 'app.name': missing (required: a string)"),
    ('[app]\nname = "a"\ncommand = ["x"]\nbarier_mode = "sync"\n',
     "app.toml: key 'app.barier_mode': unknown key (did you mean 'barrier_mode'?)"),
    ('[app]\nname = "a"\ncommand = "x"\n',
     "app.toml: key 'app.command': expected a list of strings, the program first;"
     " got a string 'x'"),
    ('[app]\nname = "a"\ncommand = []\n',
     "app.toml: key 'app.command': expected a list of strings, the program first;"
     " got an empty list"),
    ('[app]\nname = "a"\ncommand = ["redis-server", "--port", 5]\n',
     "app.toml: key 'app.command[2]': expected a string, got an integer 5"),
    ('[app]\nname = "a"\ncommand = ["x", true]\n',
     "app.toml: key 'app.command[1]': expected a string, got a boolean True"),
    ('[app]\nname = "a"\ncommand = ["", "--save", ""]\n',
     "app.toml: key 'app.command[0]': the program is an empty string: expected its name"
     " or path"),
    ('[app]\nname = "a"\ncommand = ["x", "", "a\\u0000b"]\n',
     "app.toml: key 'app.command[2]': contains a NUL character (not allowed in"
     " arguments)"),
    ('[app]\nname = "a"\ncommand = ["x"]\n[topics]\npartitions = "2"\n',
     "app.toml: key 'topics.partitions': expected an integer, got a string '2'"),
    ('[app]\nname = "a"\ncommand = ["x"]\n[topics]\npartitions = 0\n',
     "app.toml: key 'topics.partitions': expected at least 1, got 0"),
    ('[app]\nname = "a"\ncommand = ["x"]\n[replica]\nfetch_coalesce_ms = 21\n',
     "app.toml: key 'replica.fetch_coalesce_ms': expected at most 20, got 21"),
    ('[app]\nname = "a"\ncommand = ["x"]\nbarrier_mode = "fast"\n',
     "app.toml: key 'app.barrier_mode': expected one of sync, output, async; got 'fast'"),
    ('[app]\nname = "A b"\ncommand = ["x"]\n',
     "app.toml: key 'app.name': 'A b' is not a valid name: expected lower-case letters,"
     " digits, '-' or '_', at most 63"),
    ('[app]\nname = "a"\ncommand = ["x"]\n[replicas]\n',
     "app.toml: key 'replicas': unknown section (did you mean 'replica'?)"),
    ('[app]\nname = "a"\ncommand = ["x"]\n[kafka]\n"ssl.ca" = ["a"]\n',
     "app.toml: key 'kafka.ssl.ca': expected a string, number or boolean (a librdkafka"
     " property), or a table { file = \"PATH\" } or { env = \"NAME\" }, got a list ['a']"),
    ('[app]\nname = "a"\ncommand = ["x"]\n[kafka]\n"sasl.password" = ["hunter2"]\n',
     "app.toml: key 'kafka.sasl.password': expected a string, number or boolean (a librdkafka"
     " property), or a table { file = \"PATH\" } or { env = \"NAME\" }, got a list"),
    ('[app]\nname = "a"\ncommand = ["x"]\n[kafka]\n"sasl.password" = { fil = "p" }\n',
     "app.toml: key 'kafka.sasl.password': expected a string, number or boolean, or a table"
     " { file = \"PATH\" } or { env = \"NAME\" }, got a table with keys 'fil'"),
    ('[app]\nname = "a"\ncommand = ["x"]\n[replica]\nheartbeat_ms = true\n',
     "app.toml: key 'replica.heartbeat_ms': expected an integer, got a boolean True"),
    ('[app]\nname = "a"\ncommand = ["x"]\n[metrics]\naddress = "9464"\n',
     "app.toml: key 'metrics.address': '9464' is not host:port"),
])
def test_bad_keys_name_file_key_and_expectation(text, message):
    with pytest.raises(ConfigError) as info:
        parse_config(text, Path("app.toml"))
    assert str(info.value) == message


def test_command_arguments_are_kept_as_they_are(tmp_path):
    text = ('[app]\nname = "a"\ncommand = ["redis-server", "--save", "", "a  b", " ",'
            ' "it\'s \\"q\\"", "\u00e9\\t$HOME;*"]\n')
    cfg = parse_config(text, tmp_path / "app.toml")
    assert cfg.command == ["redis-server", "--save", "", "a  b", " ", "it's \"q\"",
                           "\u00e9\t$HOME;*"]
    assert parse_config('[app]\nname = "a"\ncommand = ["x", ""]\n',
                        tmp_path / "app.toml").command == ["x", ""]
    with pytest.raises(ConfigError) as info:
        parse_config('[app]\nname = "a"\n', Path("app.toml"))
    assert str(info.value) == ("app.toml: key 'app.command': missing (required: a list of"
                               " strings, the program first)")


def test_command_error_shows_the_refused_element_whole(tmp_path):
    text = ('[app]\nname = "a"\ncommand = ["redis-server", "",'
            ' ["--save", "900 1", "--appendonly", "no", "--dir", "/var/lib/redis"]]\n')
    with pytest.raises(ConfigError) as info:
        parse_config(text, Path("app.toml"))
    assert str(info.value) == (
        "app.toml: key 'app.command[2]': expected a string, got a list"
        " ['--save', '900 1', '--appendonly', 'no', '--dir', '/var/lib/redis']")
    long = "redis-server --save '' --appendonly no --dir /var/lib/redis"
    cfg = tmp_path / "app.toml"
    cfg.write_text(f'[app]\nname = "a"\ncommand = "{long}"\n')
    proc = run_mig("config", "check", str(cfg))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"mig: error: {cfg}: key 'app.command': expected a"
                                        " list of strings, the program first; got a"
                                        f" string {long!r}"]


def test_command_arguments_reach_the_program(tmp_path):
    """launch() starts app.command as it is: an empty argument, spaces, quotes, unicode."""
    from mig.member.launch import kill_group, launch
    from mig.paths import shim_library

    assert shim_library().is_file(), "the shim is not built: run `make install`"
    toml = tmp_path / "app.toml"
    toml.write_text('[app]\nname = "a"\nbarrier_mode = "async"\ncommand = ["/bin/sh", "-c",'
                    ' "printf \'%s|\' \\"$@\\"", "sh", "a", "", "b  c", "\'\\"\u00e9", ""]\n')
    cfg = load_config(toml)
    log = tmp_path / "app.log"
    proc = launch(cfg, "record", tmp_path / "run", cfg.cwd, log)
    try:
        assert proc.wait(30) == 0, log.read_text()
    finally:
        kill_group(proc)
    assert log.read_text().splitlines()[-1] == "a||b  c|'\"\u00e9||"


def test_invalid_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"app.toml: not valid TOML: .*line 1"):
        parse_config("[app\n", Path("app.toml"))
    with pytest.raises(ConfigError, match="nope.toml: file not found"):
        load_config(tmp_path / "nope.toml")


def test_cli_exit_2_one_line_no_traceback(tmp_path):
    cfg = tmp_path / "app.toml"
    cfg.write_text('[app]\nname = "a"\ncommand = ["x"]\nstate_dri = "s"\n')
    proc = run_mig("config", "check", str(cfg))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"mig: error: {cfg}: key 'app.state_dri': unknown key"
                                   " (did you mean 'state_dir'?)")
    cfg.write_text('[app]\nname = "a"\ncommand = ["x"]\n')
    ok = run_mig("config", "check", str(cfg))
    assert ok.returncode == 0 and "ok (app a: x)" in ok.stdout
    cfg.write_text('[app]\nname = "a"\ncommand = ["redis-server", "--save", "", "a b"]\n')
    ok = run_mig("config", "check", str(cfg))
    assert ok.returncode == 0 and "ok (app a: redis-server --save '' 'a b')" in ok.stdout


def test_reference_lists_every_key_and_docs_match(tmp_path):
    text = reference_markdown()
    for section, keys in SECTIONS.items():
        assert f"## [{section}]" in text
        for key in keys:
            assert f"| `{key}` |" in text
    committed = Path(__file__).resolve().parents[2] / "docs" / "app-toml.md"
    assert committed.read_text() == text, (
        "regenerate: mig config reference --write docs/app-toml.md")


SECRET_TOML = """
[app]
name = "a"
command = ["x"]
[kafka]
bootstrap_servers = "h:9093"
"security.protocol" = "SASL_SSL"
"ssl.key.location" = "client.key"
"sasl.username" = "alice"
"sasl.password" = { file = "secrets/kafka.pass" }
"ssl.key.password" = { env = "T_MIG_KEY_PASS" }
"""


def _secret_file(tmp_path: Path, text: str = "s3cr3t-file\n", mode: int = 0o600) -> Path:
    path = tmp_path / "secrets" / "kafka.pass"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def test_kafka_secrets_from_file_and_env_are_used_but_never_shown(tmp_path, monkeypatch):
    _secret_file(tmp_path)
    monkeypatch.setenv("T_MIG_KEY_PASS", "s3cr3t-env")
    cfg = parse_config(SECRET_TOML, tmp_path / "app.toml")
    settings = cfg.kafka_settings()
    assert settings is not None
    conf = settings.as_librdkafka_dict()
    assert conf["sasl.password"] == "s3cr3t-file"  # the trailing newline dropped
    assert conf["ssl.key.password"] == "s3cr3t-env"
    shown = repr(settings) + repr(cfg) + str(settings.redacted())
    assert "s3cr3t" not in shown
    assert settings.redacted()["sasl.password"] == "[redacted]"
    assert settings.redacted()["sasl.username"] == "alice"
    assert settings.redacted()["ssl.key.location"] == "client.key"  # a path is shown
    inline = parse_config(SECRET_TOML.replace('{ file = "secrets/kafka.pass" }',
                                              '"inline-pw"').replace(
        '"ssl.key.password" = { env = "T_MIG_KEY_PASS" }', ""), tmp_path / "app.toml")
    assert "inline-pw" not in repr(inline.kafka_settings())  # secret by its name alone


def test_kafka_secret_errors_name_file_or_variable_never_the_value(tmp_path, monkeypatch):
    app = tmp_path / "app.toml"
    monkeypatch.setenv("T_MIG_KEY_PASS", "s3cr3t-env")
    with pytest.raises(ConfigError) as info:
        parse_config(SECRET_TOML, app)
    assert str(info.value) == (f"{app}: key 'kafka.sasl.password': cannot read"
                               f" {tmp_path / 'secrets' / 'kafka.pass'}: No such file or"
                               " directory")
    _secret_file(tmp_path, mode=0o644)
    with pytest.raises(ConfigError, match=r"key 'kafka.sasl.password': .*kafka.pass can be"
                       r" read by every user: chmod 600 \(or 640\) it") as info:
        parse_config(SECRET_TOML, app)
    assert "s3cr3t" not in str(info.value)
    _secret_file(tmp_path, text="\n")
    with pytest.raises(ConfigError, match=r"kafka.pass is empty"):
        parse_config(SECRET_TOML, app)
    _secret_file(tmp_path)
    monkeypatch.delenv("T_MIG_KEY_PASS")
    with pytest.raises(ConfigError) as info:
        parse_config(SECRET_TOML, app)
    assert str(info.value) == (f"{app}: key 'kafka.ssl.key.password': the environment"
                               " variable T_MIG_KEY_PASS is not set (or empty)")


@pytest.mark.parametrize(("name", "secret"), [
    ("sasl.password", True), ("ssl.key.password", True), ("ssl.keystore.password", True),
    ("ssl.key.pem", True), ("sasl.oauthbearer.client.secret", True),
    ("sasl.oauthbearer.config", True), ("sasl.jaas.config", True),
    ("ssl.key.location", False), ("ssl.keystore.location", False),
    ("sasl.kerberos.keytab", False), ("ssl.ca.location", False), ("sasl.username", False),
    ("security.protocol", False), ("linger.ms", False),
])
def test_which_kafka_properties_are_secret(name, secret):
    from mig.kafka.clients import is_sensitive

    assert is_sensitive(name) is secret
