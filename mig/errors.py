"""The one exception root of mig and its families.

Every error a user can cause (bad config, unreachable broker, undecodable record) is a
``MigError``: the CLI prints ``str(exc)`` as one line and exits with ``exc.exit_code``.
Third-party exceptions are wrapped with ``raise ... from exc`` so the cause stays visible
in debug logs but never reaches the user as a traceback.
"""

from __future__ import annotations

__all__ = [
    "MigError",
    "Fenced",
    "ConfigError",
    "BrokerError",
    "KafkaUnavailable",
    "KafkaRefused",
    "TopicConfigError",
    "DecodeError",
    "SchemaError",
]


class MigError(Exception):
    """Root of every error mig reports to a user."""

    exit_code = 1


class ConfigError(MigError):
    """An app.toml (or other user config) is missing, malformed or has a wrong key.

    The message always names the file and the key and says what was expected.
    """

    exit_code = 2

    def __init__(self, path: str, key: str | None, problem: str) -> None:
        self.path = path
        self.key = key
        self.problem = problem
        where = f"{path}: key '{key}'" if key else path
        super().__init__(f"{where}: {problem}")


class BrokerError(MigError):
    """The embedded broker could not be fetched, started, stopped or queried."""


class KafkaUnavailable(MigError):
    """No Kafka broker answered within the bounded wait."""


class KafkaRefused(KafkaUnavailable):
    """A broker answered but refused the client's credentials (SASL) or TLS handshake."""


class TopicConfigError(MigError):
    """An existing topic has a configuration mig cannot work with."""

    def __init__(self, topic: str, key: str, expected: str, actual: str) -> None:
        self.topic = topic
        self.key = key
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"topic {topic}: {key} is '{actual}' but mig needs '{expected}'"
            " (delete the topic or fix its config)"
        )


class SchemaError(MigError):
    """An Avro schema file is missing or invalid (a packaging or development error)."""


class DecodeError(MigError):
    """Bytes that are not a record mig can decode. ``reason`` is one short phrase."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Fenced(MigError):
    """A newer primary initialised the app's transactional producer: this one must stop its
    app at once and never release another output."""

    exit_code = 4
