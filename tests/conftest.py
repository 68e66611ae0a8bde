"""Fixtures: one real embedded Kafka broker per test session (private home, free ports),
a fresh app name per test (so each test has its own topics), and a runner for the real
``mig`` command."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mig.broker import EmbeddedBroker
from mig.broker.node import free_ports
from mig.kafka.clients import KafkaSettings


@pytest.fixture(scope="session")
def broker_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mighome")


@pytest.fixture(scope="session")
def broker(broker_home: Path) -> Iterator[EmbeddedBroker]:
    port, cport = free_ports(2)
    b = EmbeddedBroker(home=broker_home, port=port, controller_port=cport)
    b.up(timeout=120)
    yield b
    b.down()


@pytest.fixture(scope="session")
def settings(broker: EmbeddedBroker) -> KafkaSettings:
    return broker.settings


@pytest.fixture
def app_name() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def run_mig(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
            check: bool = False, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real ``mig`` command (``python -m mig``) and capture its output. Its stdin
    is ``input``, or /dev/null (a recorded app reads mig's stdin)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "mig", "--log-format", "json", *args],
                          capture_output=True, text=True, env=full_env, timeout=timeout,
                          input=input, stdin=subprocess.DEVNULL if input is None else None)
    if check and proc.returncode != 0:
        raise AssertionError(f"mig {' '.join(args)} failed ({proc.returncode}):"
                             f" {proc.stdout}\n{proc.stderr}")
    return proc
