"""mig/kafka/topics.py against the real broker: creation, configs, refusal of a wrong policy."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from mig.config import Topics
from mig.errors import TopicConfigError
from mig.kafka.clients import KafkaSettings
from mig.kafka.topics import ensure_topics, topic_names
from tests.conftest import run_mig


def _configs(settings: KafkaSettings, topic: str) -> dict[str, str]:
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = admin.describe_configs([res])[res].result(timeout=10)
    return {k: v.value for k, v in entries.items()}


def test_ensure_creates_three_topics_with_their_configs(settings, app_name):
    result = ensure_topics(settings, app_name)
    names = topic_names(app_name)
    assert result == {names["calls"]: "created", names["checkpoints"]: "created",
                      names["control"]: "created"}
    calls = _configs(settings, names["calls"])
    assert calls["cleanup.policy"] == "delete"
    assert calls["retention.ms"] == "-1"
    ckpt = _configs(settings, names["checkpoints"])
    assert ckpt["cleanup.policy"] == "compact"
    assert ckpt["segment.ms"] == "60000"
    control = _configs(settings, names["control"])
    assert control["cleanup.policy"] == "delete"
    assert int(control["retention.ms"]) == 7 * 24 * 3600 * 1000
    # idempotent: a second call finds and accepts them
    again = ensure_topics(settings, app_name)
    assert set(again.values()) == {"exists"}


def test_custom_partitions_and_segment(settings, app_name):
    ensure_topics(settings, app_name, Topics(partitions=3, checkpoint_segment_ms=5000))
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    meta = admin.list_topics(timeout=10)
    assert len(meta.topics[f"mig.{app_name}.calls"].partitions) == 3
    assert _configs(settings, f"mig.{app_name}.checkpoints")["segment.ms"] == "5000"


def test_wrong_cleanup_policy_is_refused_naming_topic_key_and_values(settings, app_name):
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    bad = f"mig.{app_name}.checkpoints"
    admin.create_topics([NewTopic(bad, 1, 1, config={"cleanup.policy": "delete"})])[bad].result(10)
    with pytest.raises(TopicConfigError) as info:
        ensure_topics(settings, app_name)
    msg = str(info.value)
    assert bad in msg and "cleanup.policy" in msg and "'delete'" in msg and "'compact'" in msg


def test_cli_refuses_wrong_policy_with_one_line(settings, app_name, tmp_path):
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    bad = f"mig.{app_name}.calls"
    admin.create_topics([NewTopic(bad, 1, 1, config={"cleanup.policy": "compact"})])[bad].result(10)
    cfg = tmp_path / "app.toml"
    cfg.write_text(f'[app]\nname = "{app_name}"\ncommand = ["true"]\n'
                   f'[kafka]\nbootstrap_servers = "{settings.bootstrap_servers}"\n')
    proc = run_mig("topics", "ensure", str(cfg))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == (f"mig: error: topic {bad}: cleanup.policy is 'compact' but mig needs"
                         " 'delete' (delete the topic or fix its config)")
    assert "Traceback" not in proc.stderr
