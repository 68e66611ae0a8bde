"""Every key app.toml may hold, declared once: its type, default and meaning, and the
reference page made from them (docs/app-toml.md, ``reference_markdown``). The loader
(mig/config/__init__.py) validates against ``SECTIONS``.

``[app]`` and ``[kafka]`` are tables of ``Key``s (their values become ``AppConfig``'s own
fields and the librdkafka settings); every other section is a frozen dataclass whose fields
carry their ``Key`` (``key()``), so ``cfg.replica.heartbeat_ms`` is typed and its default
and doc are written once."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["Checkpoints", "Failover", "Key", "Metrics", "NAME_RE", "OPEN_SECTIONS", "Replica",
           "SECTIONS", "SECTION_TYPES", "Security", "TYPE_WORDS", "Topics", "key",
           "reference_markdown"]


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
    maximum: int | None = None


def key(kind: str, default: Any, doc: str, *, minimum: int | None = None,
        maximum: int | None = None) -> Any:
    """A section dataclass's field: its default, and its ``Key`` for the loader and the
    reference page."""
    return field(default=default, metadata={"key": Key(kind, default, doc, minimum=minimum,
                                                       maximum=maximum)})


OPEN_SECTIONS = {"kafka"}  # extra keys allowed: librdkafka properties


TYPE_WORDS = {"str": "a string", "int": "an integer", "bool": "true or false",
               "argv": "a list of strings, the program first", "strmap": "a table of strings",
               "choice": "one of"}


APP_KEYS: dict[str, Key] = {
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
}


KAFKA_KEYS: dict[str, Key] = {
    "bootstrap_servers": Key("str", None, "Kafka brokers, `host:port,...`. Unset: the"
                             " embedded broker (`mig broker up`)."),
}


@dataclass(frozen=True)
class Topics:
    """[topics]"""
    partitions: int = key("int", 1, "Partitions of `mig.NAME.calls`.", minimum=1)
    replication_factor: int = key("int", 0, "Replication factor of the app's topics;"
        " 0 = min(3, number of brokers).", minimum=0)
    checkpoint_segment_ms: int = key("int", 60000, "`segment.ms` of the compacted"
        " checkpoints topic (short, so compaction runs soon).", minimum=1000)
    control_retention_ms: int = key("int", 7 * 24 * 3600 * 1000,
        "`retention.ms` of `mig.NAME.control`.", minimum=60000)
    max_message_bytes: int = key("int", 1048576, "`max.message.bytes` of the app's topics;"
        " checkpoint chunks are cut below it.", minimum=65536)


@dataclass(frozen=True)
class Replica:
    """[replica]"""
    heartbeat_ms: int = key("int", 200, "Interval of the primary's heartbeats.", minimum=10)
    failover_timeout_ms: int = key("int", 1000, "No heartbeat and no committed record for"
        " this long: the primary is presumed dead.", minimum=50)
    max_lag_records: int = key("int", 10_000, "A replica with more records than this"
        " still to replay does not claim the primary role (it claims"
        " once it has caught up that far: about 0.1 s of replay).", minimum=0)
    fetch_coalesce_ms: int = key("int", 0, "A replica's read of the calls topic is answered"
        " once 64 KiB of records wait or after this many ms, so a busy app's records come"
        " in fewer, larger fetches (under load, less CPU on the broker and the replica,"
        " docs/benchmarks.md; its lag grows by up to this much, and an idle replica asks"
        " the broker this often). 0: each record as soon as it is there.",
        minimum=0, maximum=20)


@dataclass(frozen=True)
class Checkpoints:
    """[checkpoints]"""
    enabled: bool = key("bool", True, "Replicas take checkpoints (CRIU images of the app) into"
        " `mig.NAME.checkpoints`, and a replica that starts late restores"
        " the newest one instead of replaying the whole log.")
    every_records: int = key("int", 0, "A replica checkpoints after this many replayed"
        " calls (the primary alone: recorded calls). 0: no such trigger.", minimum=0)
    every_seconds: int = key("int", 600, "A replica (or the primary alone) checkpoints this"
        " often. 0: no such trigger.", minimum=0)
    when_alone: bool = key("bool", True, "With no hot replica, the primary's host takes the"
        " checkpoints: a short-lived local replay of the app, niced, that"
        " dumps it and exits (the live app is not stopped).")
    keep: int = key("int", 2, "Checkpoints kept; older ones are tombstoned, and calls"
        " records before the oldest kept one are deleted.", minimum=1)


@dataclass(frozen=True)
class Security:
    """[security]"""
    hmac_keys_file: str = key("str", "", "File of record keys (`KEY_ID HEX` per line, the"
        " first signs; relative to app.toml; not readable by other"
        " users): every record mig writes is signed and every member"
        " refuses unsigned or tampered ones (docs/security.md). Empty:"
        " records are not signed.")
    hmac_keys_env: str = key("str", "", "Name of an environment variable holding the keys"
        " instead (lines separated by newlines or ';').")


@dataclass(frozen=True)
class Metrics:
    """[metrics]"""
    address: str = key("str", "", "host:port where this member serves Prometheus metrics"
        " (/metrics), e.g. 0.0.0.0:9464; every member of the app uses it on"
        " its own host. `--metrics` overrides it. Empty: none.")


@dataclass(frozen=True)
class Failover:
    """[failover]"""
    on_promote: str = key("str", "", "Shell command run (in the background, from app.cwd)"
        " when this member becomes primary, e.g. to move a service"
        " address. It gets MIG_APP, MIG_MEMBER and MIG_EPOCH in its"
        " environment. Empty: none.")
    migrate_on_stop: bool = key("bool", True, "SIGTERM to `mig primary` hands the app to a"
        " hot replica (a planned migration) when there is one,"
        " instead of stopping it.")
    maintenance_file: str = key("str", "", "When this file (relative to app.cwd) appears,"
        " the primary migrates the app to a hot replica. Empty:"
        " no such trigger.")
    load_threshold: int = key("int", 0, "When the 1-minute load average of the primary's"
        " host stays above this for 10 s, the primary migrates the"
        " app to a hot replica. 0: no such trigger.", minimum=0)
    handoff_timeout_ms: int = key("int", 10000, "How long a planned migration may take"
        " before the primary calls it off and resumes.", minimum=100)


def _keys(section: type) -> dict[str, Key]:
    return {f.name: f.metadata["key"] for f in fields(section)}


# the sections with a dataclass, in the order of the reference page
SECTION_TYPES: dict[str, type] = {
    "topics": Topics, "replica": Replica, "checkpoints": Checkpoints, "security": Security,
    "metrics": Metrics, "failover": Failover,
}

SECTIONS: dict[str, dict[str, Key]] = {
    "app": APP_KEYS, "kafka": KAFKA_KEYS,
    **{section: _keys(kind) for section, kind in SECTION_TYPES.items()},
}


def reference_markdown() -> str:
    """docs/app-toml.md, generated from SECTIONS."""
    lines = ["# app.toml reference", "",
             "Generated from `mig/config/keys.py` by `mig config reference`; do not edit by hand.",
             ""]
    for section, keys in SECTIONS.items():
        lines += [f"## [{section}]", "", "| key | type | default | meaning |",
                  "| --- | --- | --- | --- |"]
        for name, key in keys.items():
            kind = TYPE_WORDS[key.type]
            if key.choices:
                kind += " " + ", ".join(f"`{c}`" for c in key.choices)
            default = "required" if key.required else (
                "unset" if key.default is None else f"`{key.default!r}`")
            lines.append(f"| `{name}` | {kind} | {default} | {key.doc} |")
        if section in OPEN_SECTIONS:
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

