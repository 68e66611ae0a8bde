"""app.toml: the one place mig's application configuration is defined, parsed and validated.

Every key is declared once in ``SECTIONS`` (mig/config/keys.py: type, default, doc).
``load_config`` turns a file into a typed ``AppConfig`` or raises ``ConfigError`` naming the
file, the key and what was expected (a validator of mig's own rather than pydantic or
msgspec: their errors would have to be mapped back to these messages, which also never show
a secret, name an argument by index and suggest a close key); ``reference_markdown``
renders the same table as docs/app-toml.md, so the docs cannot drift from the code. The
``[kafka]`` table passes any librdkafka property through; a property's value may instead be
read from a file (``{ file = "path" }``, relative to app.toml, not readable by other users)
or an environment variable (``{ env = "NAME" }``), so secrets such as ``sasl.password`` stay
out of app.toml. Such values are never shown.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mig.config.keys import (
    NAME_RE,
    OPEN_SECTIONS,
    SECTION_TYPES,
    SECTIONS,
    TYPE_WORDS,
    Checkpoints,
    Failover,
    Key,
    Metrics,
    Replica,
    Security,
    Topics,
    reference_markdown,
)
from mig.errors import ConfigError
from mig.kafka.clients import KafkaSettings, is_sensitive

__all__ = ["AppConfig", "Checkpoints", "Failover", "Key", "Metrics", "Replica", "SECTIONS",
           "Security", "Topics", "load_config", "parse_config", "reference_markdown"]




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
    topics: Topics = Topics()
    replica: Replica = Replica()
    failover: Failover = Failover()
    checkpoints: Checkpoints = Checkpoints()
    metrics: Metrics = Metrics()
    security: Security = Security()
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

        return auth_from_config(self.path.parent, self.security.hmac_keys_file,
                                self.security.hmac_keys_env, str(self.path))


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
                     kafka_properties=kafka, kafka_secrets=secrets,
                     **{section: kind(**values[section])
                        for section, kind in SECTION_TYPES.items()},
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
                if section in OPEN_SECTIONS:
                    values[name] = _passthrough(value, where, dotted)
                    continue
                raise ConfigError(where, dotted, "unknown key" + _suggest(name, keys))
            values[name] = _check(keys[name], value, where, dotted)
        for name, key in keys.items():
            if name not in values:
                if key.required:
                    raise ConfigError(where, f"{section}.{name}",
                                      f"missing (required: {TYPE_WORDS[key.type]})")
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
            raise bad(TYPE_WORDS["str"])
        if key.choices and value not in key.choices:
            raise ConfigError(where, dotted, f"expected one of {', '.join(key.choices)};"
                              f" got '{value}'")
        return value
    if key.type == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        if key.minimum is not None and value < key.minimum:
            raise ConfigError(where, dotted, f"expected at least {key.minimum}, got {value}")
        if key.maximum is not None and value > key.maximum:
            raise ConfigError(where, dotted, f"expected at most {key.maximum}, got {value}")
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
        raise ConfigError(where, dotted, f"expected {TYPE_WORDS['argv']}; got {got}")
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


