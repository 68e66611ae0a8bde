"""Authenticated records: an HMAC over every record mig writes, checked by every member.

A replica executes whatever the log tells it, and a primary stops its app when the control
topic says another member was promoted, so whoever can write to an app's topics could
otherwise steer it. With ``[security] hmac_keys_file`` (or ``hmac_keys_env``) in app.toml,
every record mig writes carries a ``mig.auth`` header, ``KID:HEX``: HMAC-SHA256 under the
key ``KID`` over the topic's role (calls, checkpoints, control), the Kafka key and the
value (a tombstone signs an empty value, marked as such). Members check it on every record
they act on: calls a replica replays, control records (heartbeats, claims, promotions,
migrations) and checkpoint manifests and chunks. A record without a valid signature is
refused, said in an error log line with its topic, partition and offset, and skipped: the
records around it go on being replayed, and the primary is not harmed. Every reader of the
app's topics checks through ``authentic``, called in one place: mig/kafka/reader.py.

Keys file: one key per line, ``KID HEX`` (a key id of letters, digits, ``-``, ``_`` or
``.``, then at least 32 hex digits, 16 bytes); blank lines and ``#`` comments are
ignored. The first key signs; every listed key is accepted. To rotate: add the new key as
the first line on every member (restart them), and remove the old one once no record
signed with it is needed any more (after the next checkpoint trims the calls topic).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from mig.errors import ConfigError

__all__ = ["Auth", "HEADER", "authentic", "load_keys"]

log = structlog.get_logger()

HEADER = "mig.auth"
_KID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_HEX = re.compile(r"^[0-9a-fA-F]{32,}$")


@dataclass(frozen=True)
class Auth:
    keys: tuple[tuple[str, bytes], ...]  # (kid, key); the first signs
    source: str  # where the keys came from, for messages (never the keys)

    def sign(self, role: str, key: str | bytes | None, value: bytes | None) -> bytes:
        kid, secret = self.keys[0]
        return f"{kid}:{_mac(secret, role, key, value)}".encode()

    def check(self, role: str, key: str | bytes | None, value: bytes | None,
              headers: list[tuple[str, bytes]] | None) -> str | None:
        """None when the record carries a valid signature; else what is wrong."""
        sig = next((v for k, v in headers or [] if k == HEADER), None)
        if sig is None:
            return "no mig.auth signature"
        kid, _, mac = (sig.decode(errors="replace") if isinstance(sig, bytes)
                       else str(sig)).partition(":")
        secret = dict(self.keys).get(kid)
        if secret is None:
            return f"signed with unknown key id {_shown(kid)}"
        # bytes: compare_digest refuses str with non-ASCII characters (a forged header)
        if not hmac.compare_digest(mac.encode(errors="replace"),
                                   _mac(secret, role, key, value).encode()):
            return f"signature does not match (key id {_shown(kid)})"
        return None

    def __repr__(self) -> str:  # never the secrets
        return f"Auth(keys={[k for k, _ in self.keys]}, source={self.source!r})"


def _shown(kid: str) -> str:
    """A key id from a header, quoted, on one line and short (it may be forged)."""
    text = kid if len(kid) <= 64 else kid[:61] + "..."
    return repr(text) if not _KID.match(text) else f"'{text}'"


@functools.lru_cache(maxsize=16)
def _keyed(secret: bytes) -> hmac.HMAC:
    """An HMAC with ``secret`` set up and nothing hashed yet: copied per record, so the key's
    pads are not hashed again for each (half of a check's time, in a replica's profile)."""
    return hmac.new(secret, digestmod=hashlib.sha256)


def _mac(secret: bytes, role: str, key: str | bytes | None, value: bytes | None) -> str:
    if isinstance(key, str):
        key = key.encode()
    mac = _keyed(secret).copy()
    mac.update(b"mig1\0" + role.encode() + b"\0" + (key or b"") + b"\0"
               + (b"T" if value is None else b"V"))
    if value is not None:
        mac.update(value)  # (not copied into one message with the rest)
    return mac.hexdigest()


def load_keys(text: str, where: str) -> Auth:
    """Parse a keys file's text (``where`` names it in errors)."""
    keys: list[tuple[str, bytes]] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not _KID.match(parts[0]) or not _HEX.match(parts[1]) \
                or len(parts[1]) % 2:
            raise ConfigError(where, None, f"line {n}: expected 'KEY_ID HEX' with at least"
                              " 32 hex digits (the key itself is not shown)")
        keys.append((parts[0], bytes.fromhex(parts[1])))
    if not keys:
        raise ConfigError(where, None, "no key in it")
    return Auth(tuple(keys), where)


def auth_from_config(base: Path, keys_file: str, keys_env: str, where: str) -> Auth | None:
    """The app.toml's ``[security]`` keys, or None when neither is set."""
    if keys_file:
        path = (base / keys_file).resolve()
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(where, "security.hmac_keys_file",
                              f"cannot read {path}: {exc.strerror}") from None
        mode = path.stat().st_mode & 0o077
        if mode & 0o007:
            raise ConfigError(where, "security.hmac_keys_file", f"{path} can be read by"
                              " every user: chmod 600 (or 640) it")
        return load_keys(text, str(path))
    if keys_env:
        env_text = os.environ.get(keys_env)
        if not env_text:
            raise ConfigError(where, "security.hmac_keys_env",
                              f"the environment variable {keys_env} is not set")
        return load_keys(env_text.replace(";", "\n"), f"${keys_env}")
    return None


def authentic(auth: Auth | None, role: str, msg: Any, reader: str) -> bool:
    """Whether the Kafka message ``msg`` of topic ``role`` may be acted on: always when the
    app's records are not signed (``auth`` None), else only with a valid signature. A record
    that is not signed rightly is left out with an error line naming ``reader``, the topic,
    the offset and why: every reader of the app's topics treats forged records alike."""
    if auth is None:
        return True
    why = auth.check(role, msg.key(), msg.value(), msg.headers())
    if why is not None:
        log.error(f"{reader}.unauthenticated", topic=msg.topic(), partition=msg.partition(),
                  offset=msg.offset(), reason=why)
    return why is None
