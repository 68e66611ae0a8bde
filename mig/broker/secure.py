"""A SASL_SSL listener for a test or evaluation broker: certificates made with openssl, SCRAM
and PLAIN users, and optionally Kafka's ACL authorizer.

``make_certificates`` writes a self-signed CA (``ca.pem``, what clients trust through
``ssl.ca.location``) and a broker certificate signed by it, valid for the given host names
and addresses, in a PKCS12 keystore the broker reads. A ``SaslListener`` handed to a
``KafkaNode`` adds ``SASL_SSL://HOST:PORT`` to its listeners; the node's own listeners
(inter-broker and controller) stay PLAINTEXT on their addresses, and their principal,
``User:ANONYMOUS``, is a super user when the authorizer is on, so the broker can reach
itself. That plaintext listener makes this a broker for tests, not for production.

SCRAM credentials live in the KRaft metadata log and are written at format time
(``StorageTool format --add-scram``); PLAIN users are listed in the listener's JAAS config.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from mig.errors import BrokerError

__all__ = ["SaslListener", "make_certificates", "MECHANISMS"]

MECHANISMS = ("SCRAM-SHA-512", "PLAIN")
_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise BrokerError(f"openssl {args[0]} failed: {proc.stderr.strip()[-300:]}")


def make_certificates(folder: Path, hosts: list[str], keystore_password: str) -> None:
    """A CA (``ca.pem``) and a broker keystore (``broker.p12``) for ``hosts`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for host in dict.fromkeys(hosts):
        try:
            ipaddress.ip_address(host)
            names.append(f"IP:{host}")
        except ValueError:
            names.append(f"DNS:{host}")
    (folder / "san.ext").write_text(f"subjectAltName={','.join(names)}\n")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
             "-subj", "/CN=mig test CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=folder)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={hosts[0]}",
             "-keyout", "broker.key", "-out", "broker.csr", cwd=folder)
    _openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "30", "-extfile", "san.ext", "-out", "broker.pem",
             cwd=folder)
    _openssl("pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key",
             "-certfile", "ca.pem", "-name", "broker", "-out", "broker.p12",
             "-passout", f"pass:{keystore_password}", cwd=folder)
    for name in ("ca.key", "broker.key", "broker.p12"):
        (folder / name).chmod(0o600)


@dataclass
class SaslListener:
    """A SASL_SSL listener on ``port``: ``users`` (name -> password) may log in with any of
    ``MECHANISMS``; ``acls`` turns on the StandardAuthorizer (no ACL: denied), with
    ``super_users`` allowed everything. ``folder`` holds the certificates."""

    port: int
    folder: Path
    users: dict[str, str]
    acls: bool = False
    super_users: tuple[str, ...] = ("admin",)
    keystore_password: str = field(default_factory=lambda: secrets.token_hex(12))

    def __post_init__(self) -> None:
        for name, password in self.users.items():  # they go into JAAS and --add-scram as is
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", name + password):
                raise BrokerError(f"SASL user {name!r}: names and passwords of test users are"
                                  " letters, digits, '.', '-' and '_' only")

    @property
    def ca_pem(self) -> Path:
        return self.folder / "ca.pem"

    def prepare(self, hosts: list[str]) -> None:
        """Make the certificates once (kept across restarts)."""
        if not (self.folder / "broker.p12").exists():
            make_certificates(self.folder, hosts, self.keystore_password)
            (self.folder / "keystore.pass").write_text(self.keystore_password + "\n")
            (self.folder / "keystore.pass").chmod(0o600)
        else:
            self.keystore_password = (self.folder / "keystore.pass").read_text().strip()

    def properties(self) -> dict[str, str]:
        """The broker properties of this listener (added to the node's own)."""
        prefix = "listener.name.sasl_ssl."
        plain_users = " ".join(f'user_{name}="{pw}"' for name, pw in self.users.items())
        props = {
            "sasl.enabled.mechanisms": ",".join(MECHANISMS),
            prefix + "scram-sha-512.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            prefix + "plain.sasl.jaas.config":
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};",
            prefix + "ssl.keystore.location": str(self.folder / "broker.p12"),
            prefix + "ssl.keystore.type": "PKCS12",
            prefix + "ssl.keystore.password": self.keystore_password,
            prefix + "ssl.key.password": self.keystore_password,
            prefix + "ssl.client.auth": "none",
        }
        if self.acls:
            props["authorizer.class.name"] = _AUTHORIZER
            props["super.users"] = ";".join(
                f"User:{name}" for name in ("ANONYMOUS", *self.super_users))
        return props

    def format_args(self) -> list[str]:
        """``StorageTool format`` arguments that store the users' SCRAM credentials."""
        args = []
        for name, password in self.users.items():
            args += ["--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]"]
        return args
