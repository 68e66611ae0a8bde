"""mig/kafka/reader.py: the rules every reader of mig's topics follows, against the real
embedded broker (signed and unsigned records, undecodable ones, tombstones, partition ends)
and, for consumer errors (which a healthy broker does not give), a stand-in consumer."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, TopicPartition
from structlog.testing import capture_logs

from mig.errors import MigError
from mig.kafka.reader import END, ERROR, RECORD, REFUSED, TOMBSTONE, UNDECODABLE, Reader
from mig.kafka.topics import ensure_topics, topic_names
from mig.kafka.writer import LogWriter
from mig.wire.auth import load_keys
from tests.samples import sample

KEY = "k1 " + "5a" * 32 + "\n"


@pytest.fixture
def signed(settings):
    return dataclasses.replace(settings, auth=load_keys(KEY, "test keys"))


@pytest.fixture
def control(settings, signed, app_name):
    """The app's control topic holding, at offsets 0 to 4: a signed heartbeat, an unsigned
    (forged) one, signed bytes that do not decode, a signed tombstone, a signed status."""
    ensure_topics(settings, app_name)
    good, forger = LogWriter(signed, app_name), LogWriter(settings, app_name)
    good.send("control", "mig.log.Heartbeat", sample("mig.log.Heartbeat"), key="m1")
    good.commit()
    forger.send("control", "mig.log.Heartbeat", sample("mig.log.Heartbeat"), key="evil")
    forger.commit()
    good.send_raw("control", b"\xc3\x01" + b"\xab" * 8 + b"\x00", key="m1")
    good.send_raw("control", None, key="m1")
    good.send("control", "mig.log.MemberStatus", sample("mig.log.MemberStatus"), key="m1")
    good.commit()
    return topic_names(app_name)["control"]


def _read(reader: Reader, topic: str) -> list[Any]:
    """Every item of ``topic`` up to its end (the first END)."""
    reader.assign([TopicPartition(topic, 0, 0)])
    items: list[Any] = []
    for _ in range(200):
        for item in reader.poll(100, 0.1):
            items.append(item)
            if item.kind == END:
                return items
    raise AssertionError(f"no end of {topic}: {items}")


def test_every_kind_is_handed_over_when_asked(signed, app_name, control):
    reader = Reader(signed, app_name, "mig.test", refused="yield", undecodable="yield",
                    tombstones=True)
    with reader, capture_logs() as logs:
        items = _read(reader, control)
    assert [(i.kind, i.offset) for i in items if i.kind != END] == [
        (RECORD, 0), (REFUSED, 1), (UNDECODABLE, 2), (TOMBSTONE, 3), (RECORD, 4)]
    assert all(i.role == "control" for i in items)
    assert (items[0].name, items[0].record["member"]) == (
        "mig.log.Heartbeat", sample("mig.log.Heartbeat")["member"])
    assert items[4].name == "mig.log.MemberStatus"
    assert items[1].name is None  # a refused record is not decoded
    assert "unknown schema fingerprint" in items[2].reason
    assert reader.refused == 1
    # the refusal said once, by the reader's name; an undecodable one handed over unsaid
    assert [(e["event"], e["offset"]) for e in logs] == [("mig.test.unauthenticated", 1)]


def test_by_default_refused_and_undecodable_records_are_said_and_skipped(signed, app_name,
                                                                        control):
    reader = Reader(signed, app_name, "mig.test",
                    undecodable_event="mig.test.control_undecodable")
    with reader, capture_logs() as logs:
        items = _read(reader, control)
    assert [(i.kind, i.offset) for i in items if i.kind != END] == [(RECORD, 0), (RECORD, 4)]
    # without tombstones=True an empty value is undecodable like any other
    assert [(e["event"], e["offset"]) for e in logs] == [
        ("mig.test.unauthenticated", 1), ("mig.test.control_undecodable", 2),
        ("mig.test.control_undecodable", 3)]
    assert all(e["topic"] == control and "reason" in e for e in logs)


def test_unwanted_records_are_not_even_checked(signed, app_name, control):
    reader = Reader(signed, app_name, "mig.test", undecodable="skip",
                    want=lambda msg: msg.offset() != 1)
    with reader, capture_logs() as logs:
        items = _read(reader, control)
    assert [i.offset for i in items if i.kind == RECORD] == [0, 4]
    assert reader.refused == 0 and logs == []


def test_unsigned_reading_shows_every_record_as_it_is(signed, app_name, control):
    reader = Reader(signed, app_name, "mig.log", signed=False, undecodable="yield",
                    tombstones=True)
    with reader, capture_logs() as logs:
        items = _read(reader, control)
    assert [i.kind for i in items] == [RECORD, RECORD, UNDECODABLE, TOMBSTONE, RECORD, END]
    assert items[1].record is not None and items[1].msg.key() == b"evil"
    assert logs == []


def test_decoding_can_wait_for_the_caller(signed, app_name, control):
    reader = Reader(signed, app_name, "mig.test", refused="yield", decode=False)
    with reader, capture_logs() as logs:
        items = [i for i in _read(reader, control) if i.kind == RECORD]
        assert [i.name for i in items] == [None, None, None, None]  # 0, 2, 3, 4
        assert [reader.decode(i) for i in items] == [True, False, False, True]
    assert items[3].name == "mig.log.MemberStatus"
    assert [e["event"] for e in logs] == ["mig.test.unauthenticated",
                                          "mig.test.undecodable", "mig.test.undecodable"]


class _Error:
    def __init__(self, code: int, text: str) -> None:
        self._code, self._text = code, text

    def code(self) -> int:
        return self._code

    def str(self) -> str:
        return self._text


class _Message:
    def __init__(self, topic: str | None, error: _Error) -> None:
        self._topic, self._error = topic, error

    def error(self) -> _Error:
        return self._error

    def topic(self) -> str | None:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 7


class _Consumer:
    """Stands in for a consumer whose broker is lost: every batch is one error."""

    def __init__(self, msg: _Message) -> None:
        self.msg = msg

    def assign(self, partitions: list[Any]) -> None:
        pass

    def consume(self, n: int, timeout: float) -> list[Any]:
        return [self.msg]

    def close(self) -> None:
        pass


@pytest.mark.parametrize("topic", ["mig.a.control", None])
def test_consumer_errors_by_rule(settings, topic):
    lost = _Message(topic, _Error(KafkaError._TRANSPORT, "broker transport failure"))

    def reader(rule: str) -> Reader:
        r = Reader(settings, "a", "mig.test", errors=rule, client=_Consumer(lost))
        r.assign([TopicPartition("mig.a.control", 0, 0)])  # names the topic when it has none
        return r

    with pytest.raises(MigError, match="^reading mig.a.control: broker transport failure$"):
        list(reader("raise").poll(1, 0))
    with capture_logs() as logs:
        assert list(reader("skip").poll(1, 0)) == []
        assert list(reader("log").poll(1, 0)) == []
    assert logs == [{"event": "mig.test.read_error", "topic": "mig.a.control",
                     "error": "broker transport failure", "log_level": "warning"}]
    [item] = list(reader("yield").poll(1, 0))
    assert (item.kind, item.reason) == (ERROR, "reading mig.a.control: broker transport failure")
    eof = _Message("mig.a.control", _Error(KafkaError._PARTITION_EOF, "end"))
    [end] = Reader(settings, "a", "mig.test", client=_Consumer(eof)).poll(1, 0)
    assert (end.kind, end.offset) == (END, 7)


def test_a_rule_that_does_not_exist_is_refused(settings):
    with pytest.raises(ValueError, match="undecodable='drop'"):
        Reader(settings, "a", "mig.test", undecodable="drop", client=_Consumer(None))


def test_a_poll_returns_when_a_record_comes_not_at_its_timeout(settings, app_name):
    """librdkafka's consume(500, timeout) waits out its whole timeout unless 500 messages
    come: a replica read each record up to its poll's 20 ms late. Reader.poll returns with
    the first (and whatever else has come by then)."""
    ensure_topics(settings, app_name)
    topic = topic_names(app_name)["control"]
    writer = LogWriter(settings, app_name)

    def later() -> None:
        time.sleep(0.5)
        writer.send("control", "mig.log.Heartbeat", sample("mig.log.Heartbeat"), key="m1")
        writer.commit()

    with Reader(settings, app_name, "mig.test",
                conf={"isolation.level": "read_uncommitted"}) as reader:
        reader.assign([TopicPartition(topic, 0, 0)])
        reader.poll(10, 1.0)  # connected, assigned
        sender = threading.Thread(target=later)
        sender.start()
        items: list[Any] = []
        deadline = time.monotonic() + 30
        while not items and time.monotonic() < deadline:  # (a partition's end may come first)
            started = time.monotonic()
            items = [i for i in reader.poll(500, 20.0) if i.kind == RECORD]
            took = time.monotonic() - started  # of the poll that brought the record
        sender.join()
    assert [i.name for i in items] == ["mig.log.Heartbeat"]
    assert took < 10.0, f"{took:.1f} s: the poll waited out its timeout"
