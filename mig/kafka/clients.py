"""Kafka client construction for mig: one settings object, lazily built clients, bounded waits.

No other module builds a librdkafka configuration by hand. librdkafka's own log lines are
routed to the ``mig.rdkafka`` stdlib logger (silent unless debugging) instead of stderr,
so a user sees mig's one-line errors, not a stream of connection-refused messages. A broker
that refuses the client's credentials or certificate is the exception: ``wait_reachable``
fails at once with librdkafka's reason, and long-lived clients log it once
(``mig.kafka.refused``), instead of retrying in silence.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from mig.deadline import Deadline, retry
from mig.errors import KafkaRefused, KafkaUnavailable

__all__ = ["KafkaSettings", "admin_client", "producer", "consumer", "wait_reachable",
           "reachable_consumer", "quick_start", "end_offsets", "watermarks", "offset_since",
           "is_sensitive", "REDACTED"]

_rdkafka_log = logging.getLogger("mig.rdkafka")
_rdkafka_log.addHandler(logging.NullHandler())
_rdkafka_log.propagate = False


REDACTED = "[redacted]"
# librdkafka properties whose values are secrets: passwords, passphrases, client secrets,
# inline PEM keys, JAAS and OAUTHBEARER configs, tokens. Properties that name a file
# (ssl.key.location, sasl.kerberos.keytab, ...) are shown: the file's permissions guard it.
_SENSITIVE = re.compile(r"password|passphrase|secret|token|jaas|oauthbearer\.config|key",
                        re.IGNORECASE)
_PATH_LIKE = re.compile(r"(\.location|\.file|keytab)$", re.IGNORECASE)


def is_sensitive(name: str) -> bool:
    """True for a librdkafka property whose value must never be shown."""
    return bool(_SENSITIVE.search(name)) and not _PATH_LIKE.search(name)


@dataclass(frozen=True)
class KafkaSettings:
    """Where Kafka is and how to talk to it (any librdkafka property in ``properties``).

    ``secrets`` names the properties whose values came from a file or an environment
    variable (app.toml's ``{ file = ... }`` / ``{ env = ... }``); those and every property
    ``is_sensitive`` calls secret are shown as ``[redacted]`` by ``redacted()`` and repr.
    """

    bootstrap_servers: str
    properties: dict[str, Any] = field(default_factory=dict)
    source: str = "config"  # "config", "option" or "embedded": said in errors
    # mig/wire/auth.py: the app's record keys ([security] of app.toml); None: records unsigned
    auth: Any = field(default=None, compare=False, repr=False)
    secrets: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    def redacted(self) -> dict[str, Any]:
        """``properties`` safe to show: secret values replaced by ``[redacted]``."""
        return {k: REDACTED if k in self.secrets or is_sensitive(k) else v
                for k, v in self.properties.items()}

    def __repr__(self) -> str:  # never a secret
        return (f"KafkaSettings(bootstrap_servers={self.bootstrap_servers!r},"
                f" properties={self.redacted()!r}, source={self.source!r})")

    def as_librdkafka_dict(self, **overrides: Any) -> dict[str, Any]:
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers,
                                "error_cb": _Refusals(self.bootstrap_servers)}
        conf.update(self.properties)
        conf.update(overrides)
        if not callable(getattr(conf.get("logger"), "log", None)):
            conf["logger"] = _rdkafka_log
        return conf


class _Refusals:
    """A client's error callback: remembers the first time the broker refused its
    credentials (SASL) or the TLS handshake failed, and logs each such reason once.
    librdkafka only reports these through this callback; its calls merely time out."""

    def __init__(self, bootstrap: str, quiet: bool = False) -> None:
        self.bootstrap = bootstrap
        self.quiet = quiet  # the caller raises the reason itself
        self.first: str | None = None
        self._said: set[int] = set()

    def __call__(self, err: Any) -> None:
        from confluent_kafka import KafkaError

        if err.code() not in (KafkaError._AUTHENTICATION, KafkaError._SSL,
                              KafkaError.SASL_AUTHENTICATION_FAILED):
            return
        if self.first is None:
            self.first = err.str()
        if not self.quiet and err.code() not in self._said:
            self._said.add(err.code())
            import structlog

            structlog.get_logger("mig.kafka").error("mig.kafka.refused",
                                                    bootstrap=self.bootstrap,
                                                    reason=err.str())


def admin_client(settings: KafkaSettings) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient(settings.as_librdkafka_dict())


def producer(settings: KafkaSettings, **overrides: Any) -> Any:
    from confluent_kafka import Producer

    conf = {"enable.idempotence": True, "acks": "all", "linger.ms": 2}
    # after a broker is lost, find the partitions' new leaders and the new transaction
    # coordinator within a fraction of a failover timeout (librdkafka's backoffs grow to
    # 1 s and 10 s by default); an app.toml property of the same name wins
    for name, value in (("retry.backoff.max.ms", 200), ("reconnect.backoff.max.ms", 1000)):
        if name not in settings.properties:
            conf[name] = value
    conf.update(overrides)
    return Producer(settings.as_librdkafka_dict(**conf))


def consumer(settings: KafkaSettings, **overrides: Any) -> Any:
    from confluent_kafka import Consumer

    conf = {"group.id": "mig-inspect", "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "enable.partition.eof": True,
            "isolation.level": "read_committed"}
    conf.update(overrides)
    return Consumer(settings.as_librdkafka_dict(**conf))


def wait_reachable(settings: KafkaSettings, timeout: float = 10.0) -> int:
    """Wait until a broker answers a metadata request; return the number of brokers.

    Raises KafkaUnavailable after ``timeout`` seconds with one line naming the address.
    """
    from confluent_kafka.admin import AdminClient

    refusals = _Refusals(settings.bootstrap_servers, quiet=True)
    failures = _Failures()
    client = AdminClient(settings.as_librdkafka_dict(error_cb=refusals, logger=failures))
    return len(_first_metadata(client, settings, refusals, failures, timeout).brokers)


def quick_start(settings: KafkaSettings) -> dict[str, Any]:
    """Properties for a short-lived client (mig status, a checkpoint listing): its first
    metadata answer comes from the bootstrap connection, which librdkafka then replaces
    with one to the broker's own id, and a new connection waits half of
    ``reconnect.backoff.ms`` (100 ms by default): 55 ms of every short command on the
    embedded broker, 15 ms with 20. An app.toml property of the same name wins."""
    return {} if "reconnect.backoff.ms" in settings.properties else {"reconnect.backoff.ms": 20}


def reachable_consumer(settings: KafkaSettings, timeout: float = 10.0,
                       **overrides: Any) -> tuple[Any, Any]:
    """``consumer(settings, **overrides)`` once a broker answered it: (consumer, the
    cluster's metadata). The same wait and errors as ``wait_reachable``, on the consumer's
    own connection: a short command (mig status) does not open a second client for it."""
    refusals = _Refusals(settings.bootstrap_servers, quiet=True)
    failures = _Failures()
    cons = consumer(settings, error_cb=refusals, logger=failures,
                    **{**quick_start(settings), **overrides})
    try:
        return cons, _first_metadata(cons, settings, refusals, failures, timeout)
    except BaseException:
        cons.close()
        raise


def _first_metadata(client: Any, settings: KafkaSettings, refusals: _Refusals,
                    failures: _Failures, timeout: float) -> Any:
    from confluent_kafka import KafkaException

    deadline = Deadline(timeout)
    last = "no answer"
    while True:
        try:
            meta = client.list_topics(timeout=deadline.left(0.2, 2.0))
            if meta.brokers:
                return meta
        except KafkaException as exc:
            last = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
        client.poll(0)  # serves the error and log callbacks (a consumer: nothing assigned)
        if refusals.first is not None:
            raise KafkaRefused(f"Kafka at {settings.bootstrap_servers} refused the"
                               f" connection: {_reason(refusals.first)}")
        if deadline.passed():
            if failures.last is not None:  # why the last connection failed says more
                last = _reason(failures.last)
            if "state APIVERSION_QUERY" in last:
                last += ("; the broker closed the connection at the first request: does"
                         " security.protocol match this listener's?")
            raise KafkaUnavailable(
                f"no Kafka broker answered at {settings.bootstrap_servers} within"
                f" {timeout:g} s ({last}); is it running? (embedded: mig broker up)")
        time.sleep(0.1)


class _Failures:
    """A librdkafka logger (anything with ``log``) that keeps the last connection failure
    (a ``FAIL`` line) and passes every line on to ``mig.rdkafka``."""

    def __init__(self) -> None:
        self.last: str | None = None

    def log(self, level: int, fmt: str, *args: Any) -> None:
        _rdkafka_log.log(level, fmt, *args)
        if args and args[0] == "FAIL":
            self.last = re.sub(r"^\[thrd:[^\]]*\]: ", "", str(args[-1]))


def _reason(text: str) -> str:
    """librdkafka's error text without its ``[proto://]host:port/id: `` prefix."""
    return re.sub(r"^(?:\w+://)?[^\s/]+/[^\s:]+: ", "", text)


def watermarks(cons: Any, topic: str, partition: int, timeout: float = 30.0
               ) -> tuple[int, int]:
    """(low, high) watermark of one partition, asked of its leader. A partition whose leader
    just moved answers with an error for a moment ("Leader high watermark is not caught
    up", "Not leader for partition", a destroyed broker handle): asked again until
    ``timeout`` seconds have passed."""
    from confluent_kafka import KafkaException, TopicPartition

    def ask(deadline: Deadline) -> tuple[int, int]:
        # a leader moving, a broker connection torn down with it, a request timed out
        # while the cluster re-elects: all pass; what is left at the deadline is said
        low, high = cons.get_watermark_offsets(TopicPartition(topic, partition),
                                               timeout=deadline.left(1.0, 10.0))
        return low, high

    try:
        return retry(ask, timeout, on=KafkaException)
    except KafkaException as exc:
        raise KafkaUnavailable(f"cannot read the offsets of {topic} [{partition}]:"
                               f" {exc.args[0].str()}") from exc


def offset_since(cons: Any, topic: str, partition: int, since_ms: int,
                 timeout: float = 10.0) -> int | None:
    """The offset of the first record of ``topic [partition]`` whose Kafka timestamp is
    ``since_ms`` or later (the broker's time index); None when no record is that recent."""
    from confluent_kafka import TopicPartition

    found = cons.offsets_for_times([TopicPartition(topic, partition, since_ms)],
                                   timeout=timeout)[0].offset
    return None if found < 0 else found


def end_offsets(cons: Any, topic: str, timeout: float = 15.0) -> dict[int, int]:
    """The high watermark of every partition of ``topic``. Retries while a new topic's
    partitions have no leader yet (for at most ``timeout`` seconds)."""
    from confluent_kafka import KafkaException, TopicPartition

    def ask(deadline: Deadline) -> dict[int, int]:
        meta = cons.list_topics(topic, timeout=deadline.left(1.0))
        return {p: cons.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
                for p in meta.topics[topic].partitions}

    try:  # leaderless right after creation: wait it out
        return retry(ask, timeout, on=KafkaException)
    except KafkaException as exc:
        raise KafkaUnavailable(f"cannot read the end offsets of {topic}:"
                               f" {exc.args[0].str()}") from exc
