"""app.toml: the one place mig's application configuration is defined, parsed and validated.

Every key is declared once in ``SECTIONS`` (type, default, doc). ``load_config`` turns a file
into a typed ``AppConfig`` or raises ``ConfigError`` naming the file, the key and what was
expected; ``reference_markdown`` renders the same table as docs/app-toml.md, so the docs
cannot drift from the code. The ``[kafka]`` table passes any librdkafka property through;
a property's value may instead be read from a file (``{ file = "path" }``, relative to
app.toml, not readable by other users) or an environment variable (``{ env = "NAME" }``),
so secrets such as ``sasl.password`` stay out of app.toml. Such values are never shown.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mig.errors import ConfigError
from mig.kafka.clients import KafkaSettings, is_sensitive

__all__ = ["AppConfig", "Key", "SECTIONS", "load_config", "parse_config", "reference_markdown"]

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
BARRIER_MODES = ("sync", "output", "async")
CAPTURE_MODES = ("trap", "symbols")
THREAD_MODES = ("serialized", "parallel")
STDIN_MODES = ("inherit", "topic")


@dataclass(frozen=True)
class Key:
    type: str  # "str", "int", "bool", "argv", "strmap", "choice"
    default: Any
    doc: str
    required: bool = False
    choices: tuple[str, ...] = ()
    minimum: int | None = None


SECTIONS: dict[str, dict[str, Key]] = {
    "app": {
        "name": Key("str", None, "Application name; used in topic names `mig.NAME.*`."
                    " Lower-case letters, digits, `-` and `_`, at most 63.", required=True),
        "command": Key("argv", None, "The program and its arguments. The program must not"
                       " be empty; each argument reaches it as written, empty strings"
                       " included (e.g. `[\"redis-server\", \"--save\", \"\"]`).",
                       required=True),
        "cwd": Key("str", ".", "Working directory of the program, relative to app.toml."),
        "state_dir": Key("str", "state", "The app's own files (relative to cwd); a backup"
                         " keeps its own copy and checkpoints carry it."),
        "env": Key("strmap", {}, "Extra environment variables for the program."),
        "barrier_mode": Key("choice", "output", "`sync`: a barrier after every call;"
                            " `output`: before every externally visible output;"
                            " `async`: no barriers (bounded loss window).",
                            choices=BARRIER_MODES),
        "capture": Key("choice", "trap", "`trap`: every system call the program makes is"
                       " handled, whoever makes it (libc's internal calls, `dlsym`, raw"
                       " `syscall()`), by Syscall User Dispatch (Linux 5.11+); `symbols`:"
                       " only calls through libc's exported functions (incomplete: for"
                       " comparison and old kernels). The same on every member."
                       " docs/interceptor.md.", choices=CAPTURE_MODES),
        "threads": Key("choice", "serialized", "`serialized`: one thread of a process runs"
                       " at a time and where they switch is logged, so threads that share"
                       " memory without locks replay (needs capture `trap`); `parallel`:"
                       " threads run at once and only their lock acquisitions are ordered"
                       " (for programs known to be free of data races). The same on every"
                       " member. docs/threads.md.", choices=THREAD_MODES),
        "serial_stall_ms": Key("int", 2000, "Serialized threads: how long a thread waits to"
                               " run while another runs without any system call before"
                               " the primary stops serializing (and replicas stop there)"
                               " rather than hang the program.", minimum=10),
        "stdin": Key("choice", "inherit", "Where the program's standard input comes from."
                     " `inherit`: `mig primary start`'s own (`producer | mig primary"
                     " start`); a promoted replica's is at its end. `topic`: the topic"
                     " `mig.NAME.input`, which `producer | mig input APP.TOML` appends to;"
                     " whichever member is primary feeds it on from the first byte the"
                     " program has not read, so a piped program survives failover and"
                     " migration. docs/interceptor.md.", choices=STDIN_MODES),
    },
    "kafka": {
        "bootstrap_servers": Key("str", None, "Kafka brokers, `host:port,...`. Unset: the"
                                 " embedded broker (`mig broker up`)."),
    },
    "topics": {
        "partitions": Key("int", 1, "Partitions of `mig.NAME.calls`.", minimum=1),
        "replication_factor": Key("int", 0, "Replication factor of the app's topics;"
                                  " 0 = min(3, number of brokers).", minimum=0),
        "checkpoint_segment_ms": Key("int", 60000, "`segment.ms` of the compacted"
                                     " checkpoints topic (short, so compaction runs soon).",
                                     minimum=1000),
        "control_retention_ms": Key("int", 7 * 24 * 3600 * 1000,
                                    "`retention.ms` of `mig.NAME.control`.", minimum=60000),
        "max_message_bytes": Key("int", 1048576, "`max.message.bytes` of the app's topics;"
                                 " checkpoint chunks are cut below it.", minimum=65536),
    },
    "replica": {
        "heartbeat_ms": Key("int", 200, "Interval of the primary's heartbeats.", minimum=10),
        "failover_timeout_ms": Key("int", 1000, "No heartbeat and no committed record for"
                                   " this long: the primary is presumed dead.", minimum=50),
        "max_lag_records": Key("int", 10_000, "A replica with more records than this"
                               " still to replay does not claim the primary role (it claims"
                               " once it has caught up that far: about 0.1 s of replay)."
                               , minimum=0),
    },
    "checkpoints": {
        "enabled": Key("bool", True, "Replicas take checkpoints (CRIU images of the app) into"
                       " `mig.NAME.checkpoints`, and a replica that starts late restores"
                       " the newest one instead of replaying the whole log."),
        "every_records": Key("int", 0, "A replica checkpoints after this many replayed"
                             " calls (the primary alone: recorded calls). 0: no such"
                             " trigger.", minimum=0),
        "every_seconds": Key("int", 600, "A replica (or the primary alone) checkpoints this"
                             " often. 0: no such"
                             " trigger.", minimum=0),
        "when_alone": Key("bool", True, "With no hot replica, the primary's host takes the"
                          " checkpoints: a short-lived local replay of the app, niced, that"
                          " dumps it and exits (the live app is not stopped)."),
        "keep": Key("int", 2, "Checkpoints kept; older ones are tombstoned, and calls"
                    " records before the oldest kept one are deleted.", minimum=1),
    },
    "security": {
        "hmac_keys_file": Key("str", "", "File of record keys (`KEY_ID HEX` per line, the"
                              " first signs; relative to app.toml; not readable by other"
                              " users): every record mig writes is signed and every member"
                              " refuses unsigned or tampered ones (docs/security.md). Empty:"
                              " records are not signed."),
        "hmac_keys_env": Key("str", "", "Name of an environment variable holding the keys"
                             " instead (lines separated by newlines or ';')."),
    },
    "metrics": {
        "address": Key("str", "", "host:port where this member serves Prometheus metrics"
                       " (/metrics), e.g. 0.0.0.0:9464; every member of the app uses it on"
                       " its own host. `--metrics` overrides it. Empty: none."),
    },
    "failover": {
        "on_promote": Key("str", "", "Shell command run (in the background, from app.cwd)"
                          " when this member becomes primary, e.g. to move a service"
                          " address. It gets MIG_APP, MIG_MEMBER and MIG_EPOCH in its"
                          " environment. Empty: none."),
        "migrate_on_stop": Key("bool", True, "SIGTERM to `mig primary` hands the app to a"
                               " hot replica (a planned migration) when there is one,"
                               " instead of stopping it."),
        "maintenance_file": Key("str", "", "When this file (relative to app.cwd) appears,"
                                " the primary migrates the app to a hot replica. Empty:"
                                " no such trigger."),
        "load_threshold": Key("int", 0, "When the 1-minute load average of the primary's"
                              " host stays above this for 10 s, the primary migrates the"
                              " app to a hot replica. 0: no such trigger.", minimum=0),
        "handoff_timeout_ms": Key("int", 10000, "How long a planned migration may take"
                                  " before the primary calls it off and resumes.",
                                  minimum=100),
    },
}

_OPEN_SECTIONS = {"kafka"}  # extra keys allowed: librdkafka properties
_TYPE_WORDS = {"str": "a string", "int": "an integer", "bool": "true or false",
               "argv": "a list of strings, the program first", "strmap": "a table of strings",
               "choice": "one of"}


@dataclass(frozen=True)
class AppConfig:
    path: Path
    name: str
    command: list[str]
    cwd: Path
    state_dir: Path
    env: dict[str, str]
    barrier_mode: str
    capture: str
    bootstrap_servers: str | None
    kafka_properties: dict[str, Any] = field(repr=False)  # may hold secrets
    topics: dict[str, int]
    replica: dict[str, int]
    failover: dict[str, Any] = field(default_factory=dict)
    checkpoints: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    security: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, dict[str, Any]] = field(repr=False, default_factory=dict)
    # the [kafka] properties read from a file or an environment variable: never shown
    kafka_secrets: frozenset[str] = field(repr=False, default=frozenset())
    threads: str = "serialized"
    serial_stall_ms: int = 2000
    stdin: str = "inherit"

    def state_dir_at(self, folder: Path) -> Path:
        """The app's state folder when it runs in ``folder`` (a replica's working folder):
        at the same place relative to it as ``state_dir`` is to ``cwd``."""
        try:
            return folder / self.state_dir.relative_to(self.cwd)
        except ValueError:  # a state_dir outside cwd: the default name, in folder
            return folder / "state"

    def kafka_settings(self) -> KafkaSettings | None:
        """Settings for the configured Kafka, or None: use the embedded broker. (The record
        keys, ``auth()``, are added by mig.connect.resolve_kafka, which reads them once.)"""
        if self.bootstrap_servers is None:
            return None
        return KafkaSettings(self.bootstrap_servers, dict(self.kafka_properties),
                             secrets=self.kafka_secrets)

    def auth(self) -> Any:
        """The record keys of ``[security]`` (mig/wire/auth.py), or None."""
        from mig.wire.auth import auth_from_config

        sec = self.security or {}
        return auth_from_config(self.path.parent, sec.get("hmac_keys_file", ""),
                                sec.get("hmac_keys_env", ""), str(self.path))


def load_config(path: str | Path) -> AppConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), None, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), None, f"cannot read: {exc}") from exc
    return parse_config(text, path)


def parse_config(text: str, path: Path) -> AppConfig:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), None, f"not valid TOML: {exc}") from exc
    except RecursionError:
        raise ConfigError(str(path), None, "not valid TOML: arrays or tables nested too"
                          " deeply") from None
    values = _validate(doc, str(path))
    app = values["app"]
    if not NAME_RE.match(app["name"]):
        raise ConfigError(str(path), "app.name", f"'{app['name']}' is not a valid name:"
                          " expected lower-case letters, digits, '-' or '_', at most 63")
    base = path.parent.resolve()
    cwd = (base / app["cwd"]).resolve()
    kafka = dict(values["kafka"])
    bootstrap = kafka.pop("bootstrap_servers")
    secrets = frozenset(k for k, v in kafka.items() if isinstance(v, dict))
    for name in secrets:
        kafka[name] = _read_secret(kafka[name], base, str(path), f"kafka.{name}")
    if values["metrics"]["address"]:
        from mig.member.metrics import parse_address

        try:
            parse_address(values["metrics"]["address"])
        except ValueError as exc:
            raise ConfigError(str(path), "metrics.address", str(exc)) from None
    return AppConfig(path=path, name=app["name"], command=list(app["command"]), cwd=cwd,
                     state_dir=(cwd / app["state_dir"]).resolve(), env=dict(app["env"]),
                     barrier_mode=app["barrier_mode"], capture=app["capture"],
                     bootstrap_servers=bootstrap,
                     kafka_properties=kafka, topics=values["topics"],
                     replica=values["replica"], failover=values["failover"],
                     checkpoints=values["checkpoints"], metrics=values["metrics"],
                     security=values["security"], raw=values, kafka_secrets=secrets,
                     threads=app["threads"], serial_stall_ms=app["serial_stall_ms"],
                     stdin=app["stdin"])


def _validate(doc: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    for section, body in doc.items():
        if section not in SECTIONS:
            raise ConfigError(where, section, "unknown section" + _suggest(section, SECTIONS))
        if not isinstance(body, dict):
            raise ConfigError(where, section, f"expected a table [{section}], got"
                              f" {_describe(body)}")
    out: dict[str, dict[str, Any]] = {}
    for section, keys in SECTIONS.items():
        body = doc.get(section, {})
        values: dict[str, Any] = {}
        for name, value in body.items():
            dotted = f"{section}.{name}"
            if name not in keys:
                if section in _OPEN_SECTIONS:
                    values[name] = _passthrough(value, where, dotted)
                    continue
                raise ConfigError(where, dotted, "unknown key" + _suggest(name, keys))
            values[name] = _check(keys[name], value, where, dotted)
        for name, key in keys.items():
            if name not in values:
                if key.required:
                    raise ConfigError(where, f"{section}.{name}",
                                      f"missing (required: {_TYPE_WORDS[key.type]})")
                values[name] = key.default
        out[section] = values
    return out


def _check(key: Key, value: Any, where: str, dotted: str) -> Any:
    def bad(expected: str) -> ConfigError:
        return ConfigError(where, dotted, f"expected {expected}, got {_describe(value)}")

    if key.type == "argv":
        return _check_argv(value, where, dotted)
    if _has_nul(value):
        raise ConfigError(where, dotted, "contains a NUL character (not allowed in paths,"
                          " arguments or environment variables)")
    if key.type in ("str", "choice"):
        if not isinstance(value, str):
            raise bad(_TYPE_WORDS["str"])
        if key.choices and value not in key.choices:
            raise ConfigError(where, dotted, f"expected one of {', '.join(key.choices)};"
                              f" got '{value}'")
        return value
    if key.type == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        if key.minimum is not None and value < key.minimum:
            raise ConfigError(where, dotted, f"expected at least {key.minimum}, got {value}")
        return value
    if key.type == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if key.type == "strmap":
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise bad("a table of strings")
        return value
    raise AssertionError(f"unknown key type {key.type}")


def _check_argv(value: Any, where: str, dotted: str) -> list[str]:
    """A program and its arguments: any list of strings whose first is not empty. The
    arguments are kept as they are (an empty one is an argument too). An error names the
    element it refuses, ``app.command[2]``, and shows it whole."""
    if not isinstance(value, list) or not value:
        got = "an empty list" if isinstance(value, list) else _describe(value, cut=False)
        raise ConfigError(where, dotted, f"expected {_TYPE_WORDS['argv']}; got {got}")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise ConfigError(where, f"{dotted}[{index}]",
                              f"expected a string, got {_describe(item, cut=False)}")
        if "\0" in item:
            raise ConfigError(where, f"{dotted}[{index}]", "contains a NUL character (not"
                              " allowed in arguments)")
    if not value[0]:
        raise ConfigError(where, f"{dotted}[0]", "the program is an empty string: expected"
                          " its name or path")
    return list(value)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\0" in value
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    return False


def _passthrough(value: Any, where: str, dotted: str) -> Any:
    if isinstance(value, (str, int, bool, float)):
        return value
    if (isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("file", "env")
            and isinstance(next(iter(value.values())), str) and next(iter(value.values()))):
        return dict(value)  # read by _read_secret once the app.toml's folder is known
    if isinstance(value, dict):  # never _describe it: it may be a mistyped secret
        raise ConfigError(where, dotted, "expected a string, number or boolean, or a table"
                          " { file = \"PATH\" } or { env = \"NAME\" }, got a table with"
                          f" keys {', '.join(map(repr, value)) or 'none'}")
    raise ConfigError(where, dotted, "expected a string, number or boolean (a librdkafka"
                      " property), or a table { file = \"PATH\" } or { env = \"NAME\" },"
                      f" got {_describe(value, show=not is_sensitive(dotted))}")


def _read_secret(ref: dict[str, str], base: Path, where: str, dotted: str) -> str:
    """The value of ``{ file = PATH }`` (trailing newlines dropped) or ``{ env = NAME }``.
    Errors name the file or variable, never the value."""
    if "env" in ref:
        value = os.environ.get(ref["env"], "")
        if not value:
            raise ConfigError(where, dotted, f"the environment variable {ref['env']} is not"
                              " set (or empty)")
        return value
    path = (base / ref["file"]).resolve()
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(where, dotted, f"cannot read {path}: {reason}") from None
    if mode & 0o007:
        raise ConfigError(where, dotted, f"{path} can be read by every user: chmod 600"
                          " (or 640) it")
    value = text.rstrip("\r\n")
    if not value:
        raise ConfigError(where, dotted, f"{path} is empty")
    return value


def _describe(value: Any, show: bool = True, cut: bool = True) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a table"}
    kind = kinds.get(type(value), type(value).__name__)
    if not show:  # a secret's value is never shown, not even a mistyped one
        return kind
    shown = repr(value)
    return f"{kind} {shown if len(shown) <= 40 or not cut else shown[:37] + '...'}"


def _suggest(name: str, known: dict[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(known)})"


def reference_markdown() -> str:
    """docs/app-toml.md, generated from SECTIONS."""
    lines = ["# app.toml reference", "",
             "Generated from `mig/config.py` by `mig config reference`; do not edit by hand.",
             ""]
    for section, keys in SECTIONS.items():
        lines += [f"## [{section}]", "", "| key | type | default | meaning |",
                  "| --- | --- | --- | --- |"]
        for name, key in keys.items():
            kind = _TYPE_WORDS[key.type]
            if key.choices:
                kind += " " + ", ".join(f"`{c}`" for c in key.choices)
            default = "required" if key.required else (
                "unset" if key.default is None else f"`{key.default!r}`")
            lines.append(f"| `{name}` | {kind} | {default} | {key.doc} |")
        if section in _OPEN_SECTIONS:
            lines += ["", "Any other key in `[kafka]` is passed to librdkafka as a property,"
                      " e.g. `\"security.protocol\" = \"SASL_SSL\"`. A value may instead"
                      " come from a file, `\"sasl.password\" = { file = \"kafka.pass\" }`"
                      " (relative to app.toml, trailing newlines dropped; refused when other"
                      " users can read it), or from an environment variable,"
                      " `\"sasl.password\" = { env = \"KAFKA_PASSWORD\" }`; a missing file"
                      " or variable is an error naming it. Such values, and those of"
                      " properties named like a secret (`password`, `secret`, `key`, `token`,"
                      " ... but not `*.location` paths), are never shown in logs, errors or"
                      " status (docs/security.md)."]
        lines.append("")
    return "\n".join(lines)
