"""Writing mig records to an application's topics, optionally in Kafka transactions.

``LogWriter`` encodes records with the codec (single-object encoding + schema header) and
produces them to ``mig.NAME.<role>``. With a ``transactional_id`` every ``commit()`` is one
Kafka transaction: readers using read_committed see all of it or none of it, and a newer
writer with the same id fences this one (the basis of promotion in later issues).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import structlog

from mig.deadline import Deadline
from mig.errors import Fenced, MigError
from mig.kafka.clients import KafkaSettings, producer
from mig.kafka.pump import Pump, pumped
from mig.kafka.topics import topic_names
from mig.wire.auth import HEADER as AUTH_HEADER
from mig.wire.codec import Codec

__all__ = ["LogWriter"]

log = structlog.get_logger()

# how long a commit that fails with a retriable error (the broker stalled) is tried again
COMMIT_RETRY_S = 60.0


class _Failures:
    """How a LogWriter tells why its producer failed: librdkafka's errors as they come,
    whether a newer producer with our transactional id fenced it, the native pump's
    refusals."""

    app: str
    fenced: str
    pump: Pump | None
    _producer: Any
    _transactional: bool

    def raise_pump_refusal(self) -> None:
        """Raise what the pump's first refused batch says (Fenced when a newer producer
        with our transactional id exists)."""
        assert self.pump is not None
        code, text = self.pump.error()
        if code in _fencing_codes():
            self.fenced = text
        self._probe_fatal()  # (raises Fenced when the producer was fenced)
        raise MigError(f"Kafka refused records: {text}")

    def _probe_fatal(self) -> None:
        """Raise Fenced if librdkafka's producer is in its fatal state because a newer
        producer with our transactional id fenced it. Serves the pending error callbacks
        first; then, for a transactional producer, asks init_transactions, which answers
        with the fatal error in that state (and only with a state error otherwise)."""
        from confluent_kafka import KafkaException

        try:
            self._producer.poll(0)
        except KafkaException as exc:  # the fatal error itself: its reason is wanted
            self._last_error = exc.args[0]
        except Exception:  # noqa: BLE001 - only probing; the caller raises its own error
            pass
        if self.fenced:
            raise Fenced(f"fenced: a newer primary of {self.app} took over ({self.fenced})")
        if not self._transactional:
            return
        try:
            self._producer.init_transactions(0.01)
        except KafkaException as exc:
            self._raise_if_fenced(exc.args[0])
        except Exception:  # noqa: BLE001
            pass

    def _on_error(self, err: Any) -> None:
        # kept as the object: asking it anything here can fail while the client has a
        # fatal error pending, and the reason is wanted once the call that failed returns
        self._last_error = err
        if _is_fencing(err):
            self.fenced = err.str()

    def _last_error_text(self, fallback: object) -> str:
        """The reason of librdkafka's last reported error (a fatal one, such as a refused
        producer id, surfaces as a bare "returned NULL" from flush), else ``fallback``."""
        err = getattr(self, "_last_error", None)
        try:
            return str(err.str()) if err is not None else str(fallback)
        except Exception:  # noqa: BLE001 - a malformed error object: say what we have
            return str(fallback)

    def _raise_if_fenced(self, err: Any) -> None:
        if _is_fencing(err):
            self.fenced = err.str()
            raise Fenced(f"fenced: a newer primary of {self.app} took over ({err.str()})")


class LogWriter(_Failures):
    def __init__(self, settings: KafkaSettings, app: str,
                 transactional_id: str | None = None, timeout: float = 15.0,
                 fence_now: bool = True, linger_ms: float | None = None,
                 pump_limit: int | None = None) -> None:
        from confluent_kafka import KafkaException

        self.app = app
        self.topics = topic_names(app)
        self.codec = Codec.default()
        self.timeout = timeout
        self._errors: list[str] = []
        self._offsets: list[tuple[str, int, int]] = []
        extra: dict[str, Any] = {}
        if transactional_id:
            extra["transactional.id"] = transactional_id
        # librdkafka's global errors come here, not as exceptions raised from inside a
        # flush() (its fatal "fenced" error was raised there as a bare KafkaError object)
        extra["error_cb"] = self._on_error
        if linger_ms is not None and "linger.ms" not in settings.properties:
            extra["linger.ms"] = linger_ms  # (an app.toml [kafka] linger.ms wins)
        # with pump_limit, the recorder's native path (mig/kafka/pump.py) when it may serve
        self._producer, self.pump = pumped(
            lambda more: producer(settings, **extra, **more), self.topics["calls"], app,
            pump_limit, settings.auth)
        self._transactional = bool(transactional_id)
        self._open = False
        self.fenced = ""  # why, once a newer writer with the same transactional id fenced us
        self._transactional_id = transactional_id
        self._bootstrap = settings.bootstrap_servers
        self._auth = settings.auth  # mig/wire/auth.py: every record signed when set
        if self._transactional and fence_now:
            self.fence()
        elif self._transactional:
            # connected and with metadata now, so that fence() later takes milliseconds
            # (a cold producer waits for its coordinator lookup to be retried)
            try:
                self._producer.list_topics(timeout=timeout)
            except KafkaException as exc:
                raise MigError(f"cannot reach Kafka at {self._bootstrap}:"
                               f" {exc.args[0].str()}") from exc

    def try_fence(self, timeout: float) -> bool:
        """``fence()`` bounded by ``timeout``: False when it did not complete in time (the
        old primary left a transaction open: the coordinator aborts it and librdkafka only
        asks again after a fixed 500 ms). The producer is then spent: ``discard()`` it and
        fence with another, which finds the abort done."""
        from confluent_kafka import KafkaException

        try:
            self._producer.init_transactions(timeout)
            return True
        except KafkaException as exc:
            if exc.args[0].fatal():
                raise MigError(f"cannot start transactions as '{self._transactional_id}':"
                               f" {exc.args[0].str()}") from exc
            return False

    def discard(self) -> None:
        """Destroy the producer now (its pending requests and timers go with it): the last
        reference goes, CPython frees it at once. (No gc.collect(): in a replica that holds
        many objects a full collection took a tenth of a second of the promotion.)"""
        self._producer = None
        if self.pump is not None:  # (its producer is gone: free it)
            self.pump.close()

    def fence(self) -> None:
        """Initialise transactions under our transactional id: Kafka fences every older
        producer with the same id and aborts its open transaction."""
        from confluent_kafka import KafkaException

        try:
            self._producer.init_transactions(self.timeout)
        except KafkaException as exc:
            raise MigError(f"cannot start transactions as '{self._transactional_id}' at"
                           f" {self._bootstrap}: {exc.args[0].str()}") from exc

    def send(self, role: str, full_name: str, record: dict[str, Any],
             key: str | None = None, partition: int | None = None,
             validate: bool = True) -> None:
        """Queue one record for ``mig.NAME.<role>``; it is durable after ``commit()``.
        ``validate=False`` skips the full type check (for records mig builds itself)."""
        value = self.codec.encode(full_name, record, validate=validate)
        self.send_raw(role, value, key, self.codec.headers(full_name), partition)

    def send_raw(self, role: str, value: bytes | None, key: str | None = None,
                 headers: list[tuple[str, bytes]] | None = None,
                 partition: int | None = None,
                 on_acked: Callable[[], None] | None = None) -> None:
        """Queue one encoded record; ``on_acked`` is called (from ``flush``, ``serve`` or
        ``commit``) once every in-sync replica has it."""
        self.begin()
        headers = list(headers or [])
        if self._auth is not None:
            headers.append((AUTH_HEADER, self._auth.sign(role, key, value)))
        report = self._delivered if on_acked is None else (
            lambda err, msg: self._delivered(err, msg, on_acked))
        kwargs: dict[str, Any] = {"key": key, "value": value, "headers": headers,
                                  "on_delivery": report}
        if partition is not None:
            kwargs["partition"] = partition
        from confluent_kafka import KafkaException

        try:
            self._producer.produce(self.topics[role], **kwargs)
        except KafkaException as exc:
            self._raise_if_fenced(exc.args[0])
            if exc.args[0].fatal():  # "Local: Fatal error": fenced, if that is its reason
                self._probe_fatal()
            raise MigError(f"cannot send to {self.topics[role]}: {exc.args[0].str()}") from exc
        self._producer.poll(0)

    def begin(self) -> None:
        """Open a transaction if none is (a transactional writer sends only inside one)."""
        if self._transactional and not self._open:
            from confluent_kafka import KafkaException

            try:
                self._producer.begin_transaction()
            except KafkaException as exc:
                self._raise_if_fenced(exc.args[0])
                raise MigError(f"cannot begin a transaction: {exc.args[0].str()}") from exc
            self._open = True

    def commit(self) -> list[tuple[str, int, int]]:
        """Make everything sent so far durable; returns (topic, partition, offset) of each."""
        from confluent_kafka import KafkaException

        deadline = Deadline(max(self.timeout, COMMIT_RETRY_S))
        while True:
            try:
                if self._transactional and self._open:
                    self._producer.commit_transaction(self.timeout)
                    self._open = False
                break
            except KafkaException as exc:
                err = exc.args[0]
                self._raise_if_fenced(err)
                # a broker that stalls (a slow controller, a leader moving) times the commit
                # out with a retriable error: calling commit again resumes it
                if err.retriable() and not deadline.passed():
                    log.warning("mig.logwriter.commit_retry", error=err.str())
                    continue
                raise MigError(f"commit to Kafka failed: {err.str()}") from exc
            except SystemError as exc:  # the client's "returned NULL" on a fatal state
                self._probe_fatal()
                raise MigError(f"commit to Kafka failed: {self._last_error_text(exc)}") from None
        self.flush()
        offsets, self._offsets = self._offsets, []
        return offsets

    def flush(self) -> None:
        """Wait until every record sent so far is acknowledged by all in-sync replicas
        (acks=all), without committing the open transaction."""
        from confluent_kafka import KafkaException

        started = time.monotonic()
        deadline = Deadline(max(self.timeout, COMMIT_RETRY_S))
        try:
            remaining = self._producer.flush(self.timeout)
            # the brokers cannot take them yet (a partition below min.insync.replicas while
            # a broker restarts): librdkafka keeps trying, and so does the primary, like a
            # commit, rather than give its app up
            while remaining and not self.fenced and not deadline.passed():
                log.warning("mig.logwriter.flush_waiting", records=remaining,
                            waited_s=round(time.monotonic() - started))
                remaining = self._producer.flush(deadline.left(0.1, self.timeout))
        except KafkaException as exc:  # librdkafka's fatal errors surface here too
            self._raise_if_fenced(exc.args[0])
            raise MigError(f"the Kafka producer failed: {exc.args[0].str()}") from exc
        except:  # noqa: E722 - a bare KafkaError object is not an exception class (error_cb)
            failure = sys.exc_info()[1]
            if isinstance(failure, (KeyboardInterrupt, SystemExit)):
                raise
            if hasattr(failure, "code"):
                self._raise_if_fenced(failure)
            # the client can also fail a flush with a SystemError ("returned NULL without
            # setting an exception") when librdkafka has just entered its fatal state: ask
            # librdkafka why before calling it a generic failure
            self._probe_fatal()
            raise MigError(f"the Kafka producer failed: {self._last_error_text(failure)}") from None
        if remaining:
            raise MigError(f"{remaining} records not acknowledged within"
                           f" {max(self.timeout, COMMIT_RETRY_S):g} s")
        self._raise_reported()

    def serve(self, timeout: float = 0.0) -> None:
        """Take the delivery reports that have come (waiting at most ``timeout`` seconds for
        the first): their ``on_acked`` run. Raises as ``flush`` does for a fenced writer or
        a refused record; unlike it, never waits for the rest."""
        from confluent_kafka import KafkaException

        try:
            self._producer.poll(timeout)
        except KafkaException as exc:
            self._raise_if_fenced(exc.args[0])
            raise MigError(f"the Kafka producer failed: {exc.args[0].str()}") from exc
        self._raise_reported()

    def _raise_reported(self) -> None:
        """Raise what the delivery reports taken so far said: fenced, or records refused."""
        if self.fenced:
            raise Fenced(f"fenced: a newer primary of {self.app} took over ({self.fenced})")
        if self._errors:
            errors, self._errors = self._errors, []
            raise MigError(f"Kafka refused records: {'; '.join(errors[:3])}")

    def poll_reports(self, timeout: float) -> int:
        """Wait at most ``timeout`` seconds for delivery reports and take them (their
        ``on_acked`` run here); the number taken. For a thread of its own: it raises
        nothing, ``serve`` says the errors."""
        try:
            return int(self._producer.poll(timeout))
        except Exception as exc:  # noqa: BLE001 - said by serve() in the writer's thread
            self._errors.append(f"delivery reports: {exc}")
            return 0

    def settle(self) -> list[str]:
        """Without waiting: take the delivery reports of what was sent so far and return
        the refusals since the last call (for records nobody waits on, such as a replica's
        statuses: a broker that cannot take them must not stop the replay)."""
        self._producer.poll(0)
        self._offsets.clear()
        errors, self._errors = self._errors, []
        return errors

    def delivered(self) -> list[tuple[str, int, int]]:
        """(topic, partition, offset) of every record acknowledged since the last commit
        (after ``flush()``: all sent so far), in the open transaction if there is one."""
        return list(self._offsets)

    @property
    def open_transaction(self) -> bool:
        return self._open

    def abort(self) -> None:
        """Abandon the open transaction: nothing sent since the last commit becomes visible."""
        from confluent_kafka import KafkaException

        if not (self._transactional and self._open):
            return
        try:
            self._producer.abort_transaction(self.timeout)
        except KafkaException as exc:
            raise MigError(f"aborting the transaction failed: {exc.args[0].str()}") from exc
        self._producer.poll(0)  # deliver the purge reports of the aborted records
        self._open = False
        self._errors.clear()
        self._offsets.clear()

    def _delivered(self, err: Any, msg: Any, on_acked: Callable[[], None] | None = None
                   ) -> None:
        if err is not None:
            if _is_fencing(err):
                self.fenced = err.str()
            self._errors.append(f"{msg.topic()}: {err.str()}")
        else:
            self._offsets.append((msg.topic(), msg.partition(), msg.offset()))
            if on_acked is not None:
                on_acked()


def _fencing_codes() -> set[int]:
    from confluent_kafka import KafkaError

    return {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}


def _is_fencing(err: Any) -> bool:
    """A newer producer with our transactional id exists (librdkafka reports it as a fatal
    error, with one of these codes)."""
    try:
        return err.code() in _fencing_codes() or (err.fatal() and "fenc" in err.str().lower())
    except AttributeError:
        return False
