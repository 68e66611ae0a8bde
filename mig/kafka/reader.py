"""Reading mig's topics: one consumer loop's rules, kept in one place.

Every part of mig that reads or follows a topic of an app (the primary's control topic, a
replica's calls and control, the input feeder, ``mig status``, the answers to ``mig
migrate`` and ``mig checkpoint``, the checkpoint store, doctor's clock check, ``mig log``)
takes its messages from a ``Reader``. It consumes, and turns each Kafka message into one
``Item``: the message, its topic's role (calls, control, checkpoints, input), and, checked
once and decoded once, the record's schema name and fields. The rules, applied in this
order to each message of a batch, as the caller iterates it:

1. **Partition end**: an end-of-partition event is an ``END`` item (its offset is where
   the partition ends: transaction markers take offsets no record has). Never an error.
2. **Consumer errors** (a broker lost, a partition moving), by ``errors``: ``"raise"``
   MigError ``reading TOPIC: why``; ``"skip"``; ``"log"``: a warning ``NAME.read_error``
   (topic, error), then skipped; ``"yield"``: an ``ERROR`` item whose ``reason`` is that
   same line, for the caller to decide.
3. **The caller's filter** ``want(msg)``: a record it does not want is dropped before any
   check (a chunk when listing manifests, a record written after a read began): its
   signature is not even checked, so no refusal is said for it.
4. **Signatures** (mig/wire/auth.py): when the app's records are signed, a record without
   a valid signature is said once in ``NAME.unauthenticated`` (topic, partition, offset,
   reason), counted in ``refused``, not decoded, and skipped; with ``refused="yield"`` it
   comes as a ``REFUSED`` item, for callers that need to know where one was.
   ``signed=False`` (``mig log``, which shows every record as it is) checks nothing.
5. **Tombstones**: with ``tombstones=True`` a record without a value (compaction's delete
   marker, signed like any record) is a ``TOMBSTONE`` item, not decoded; otherwise it is
   undecodable like any other empty value.
6. **Decoding** (``Codec.decode_message``, the schema header checked against the
   fingerprint): a ``RECORD`` item with ``name`` and ``record``. An undecodable record, by
   ``undecodable``: ``"log"``: a warning ``undecodable_event`` (default
   ``NAME.undecodable``) with topic, partition, offset and reason, then skipped;
   ``"skip"``; ``"yield"``: an ``UNDECODABLE`` item with the ``reason`` (``mig log`` shows
   it, a replica stops on an undecodable call). ``decode=False`` leaves decoding to the
   caller's ``decode(item)``, under the same rule: ``mig status`` decodes only the newest
   heartbeat of each member.

A batch (``poll``) is consumed at once and checked lazily: an item's rules run when the
caller reaches it, so a caller that stops in the middle (a primary fenced by a promotion)
leaves the rest unread, unchecked and unsaid, as it always did. The Kafka client is
imported when a reader is made, never by importing this module (``mig status`` starts
fast: bench/status_bench.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from mig.errors import DecodeError, MigError
from mig.kafka.clients import KafkaSettings, consumer, reachable_consumer
from mig.kafka.topics import topic_names
from mig.wire.auth import authentic

__all__ = ["Reader", "Batch", "Item", "END", "ERROR", "REFUSED", "TOMBSTONE", "UNDECODABLE",
           "RECORD"]

END = "end"                  # the partition was read to its end
ERROR = "error"              # the consumer reported an error (errors="yield")
REFUSED = "refused"          # no valid signature (refused="yield")
TOMBSTONE = "tombstone"      # a record without a value (tombstones=True)
UNDECODABLE = "undecodable"  # not a record mig can decode (undecodable="yield")
RECORD = "record"            # a record, decoded unless decode=False

_POLICIES = {"errors": ("raise", "skip", "log", "yield"), "refused": ("skip", "yield"),
             "undecodable": ("log", "skip", "yield")}


@dataclass(slots=True)
class Item:
    """One message of a topic, as a reader's rules left it (``kind``, one of the above)."""

    kind: str
    msg: Any  # the confluent_kafka Message, as consumed
    role: str  # calls, control, checkpoints or input (mig/kafka/topics.py)
    name: str | None = None  # RECORD: the record's schema full name (once decoded)
    record: dict[str, Any] | None = None  # RECORD: its fields (once decoded)
    reason: str | None = None  # ERROR: "reading TOPIC: why"; UNDECODABLE: why

    @property
    def topic(self) -> str:
        return str(self.msg.topic())

    @property
    def partition(self) -> int:
        return int(self.msg.partition())

    @property
    def offset(self) -> int:
        return int(self.msg.offset())


class Batch:
    """The messages of one ``Reader.poll``: already fetched (``len``), checked and decoded
    one by one as they are iterated."""

    def __init__(self, reader: Reader, msgs: list[Any]) -> None:
        self._reader = reader
        self._msgs = msgs

    def __len__(self) -> int:
        return len(self._msgs)

    def __iter__(self) -> Iterator[Item]:
        return self._reader._items(self._msgs)


class Reader:
    """A consumer of one or more apps' topics under the rules of this module's docstring.

    ``name`` is the reading part's log name (``mig.replayer``): its refusals are said as
    ``NAME.unauthenticated``. ``conf`` are the consumer's properties
    (``mig.kafka.clients.consumer``); ``consumer`` is the client itself, for what a reader
    does not do (topics, pause, watermarks). Close it with ``close()`` (or ``with``).
    """

    def __init__(self, settings: KafkaSettings, apps: str | Sequence[str], name: str, *,
                 conf: dict[str, Any] | None = None, errors: str = "raise",
                 refused: str = "skip", undecodable: str = "log",
                 undecodable_event: str | None = None, signed: bool = True,
                 tombstones: bool = False, decode: bool = True,
                 want: Callable[[Any], bool] | None = None, client: Any = None) -> None:
        from mig.wire.codec import Codec

        for rule, value in (("errors", errors), ("refused", refused),
                            ("undecodable", undecodable)):
            if value not in _POLICIES[rule]:
                raise ValueError(f"{rule}={value!r}: one of {', '.join(_POLICIES[rule])}")
        self.name = name
        self.auth = settings.auth if signed else None
        self.errors = errors
        self.refused_rule = refused
        self.undecodable = undecodable
        self.undecodable_event = undecodable_event or f"{name}.undecodable"
        self.tombstones = tombstones
        self.decoding = decode
        self.want = want
        self.refused = 0  # records refused by the signature check so far
        self.fetched_ms = 0  # wall clock (ms) when the last poll returned
        self._assigned = ""  # the topics assigned, for an error that names none
        self._codec = Codec.default()
        self._roles = {topic: role for app in ([apps] if isinstance(apps, str) else apps)
                       for role, topic in topic_names(app).items()}
        self._log = structlog.get_logger(name)
        self.consumer = client if client is not None else consumer(settings, **(conf or {}))

    @classmethod
    def reachable(cls, settings: KafkaSettings, apps: str | Sequence[str], name: str,
                  timeout: float, conf: dict[str, Any] | None = None,
                  **rules: Any) -> tuple[Reader, Any]:
        """A reader whose consumer a broker answered (``reachable_consumer``): (the reader,
        the cluster's metadata). A short command opens no second client to wait."""
        client, meta = reachable_consumer(settings, timeout, **(conf or {}))
        try:
            return cls(settings, apps, name, client=client, **rules), meta
        except BaseException:
            client.close()
            raise

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.consumer.close()

    def assign(self, partitions: list[Any]) -> None:
        """Read these ``TopicPartition``s (from their offsets)."""
        self._assigned = ", ".join(sorted({p.topic for p in partitions}))
        self.consumer.assign(partitions)

    def poll(self, max_messages: int, timeout: float) -> Batch:
        """Up to ``max_messages``, waiting at most ``timeout`` seconds for the first.

        librdkafka's ``consume(n, timeout)`` returns early only once it holds ``n``
        messages: with fewer it waits out the whole timeout, so a replica polling with
        20 ms took each record up to 20 ms after it came (its lag's median was about that).
        Here the wait ends with the first message, and what else has come is taken
        without waiting."""
        msgs = self.consumer.consume(1, timeout) if timeout > 0 else []
        if len(msgs) < max_messages:
            msgs += self.consumer.consume(max_messages - len(msgs), 0)
        self.fetched_ms = int(time.time() * 1000)
        return Batch(self, msgs)

    def decode(self, item: Item) -> bool:
        """Decode ``item`` (a RECORD) unless it is: True when it holds a record now. An
        undecodable one follows the ``undecodable`` rule: False after "log" or "skip";
        with "yield" it becomes an UNDECODABLE item, and True."""
        if item.name is not None:
            return True
        try:
            item.name, item.record = self._codec.decode_message(item.msg.value(),
                                                                item.msg.headers())
            return True
        except DecodeError as exc:
            if self.undecodable == "yield":
                item.kind, item.reason = UNDECODABLE, exc.reason
                return True
            if self.undecodable == "log":
                self._log.warning(self.undecodable_event, topic=item.topic,
                                  partition=item.partition, offset=item.offset,
                                  reason=exc.reason)
            return False

    def _items(self, msgs: list[Any]) -> Iterator[Item]:
        from confluent_kafka import KafkaError

        for msg in msgs:
            err = msg.error()
            role = self._roles.get(msg.topic(), "")
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    yield Item(END, msg, role)
                    continue
                topic = msg.topic() or self._assigned
                line = f"reading {topic}: {err.str()}"
                if self.errors == "raise":
                    raise MigError(line)
                if self.errors == "log":
                    self._log.warning(f"{self.name}.read_error", topic=topic,
                                      error=err.str())
                elif self.errors == "yield":
                    yield Item(ERROR, msg, role, reason=line)
                continue
            if self.want is not None and not self.want(msg):
                continue
            if not authentic(self.auth, role, msg, self.name):  # (said there, once)
                self.refused += 1
                if self.refused_rule == "yield":
                    yield Item(REFUSED, msg, role)
                continue
            if self.tombstones and msg.value() is None:
                yield Item(TOMBSTONE, msg, role)
                continue
            item = Item(RECORD, msg, role)
            if not self.decoding or self.decode(item):
                yield item
