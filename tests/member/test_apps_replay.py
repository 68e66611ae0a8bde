"""The four test applications (tests/apps) recorded on a primary and replayed by a replica
on another test host (a network namespace): after a few thousand random client operations
the replica's state equals the primary's. Each app writes its state to a regular file when
the client asks (DUMP); the replica performs the same write while replaying, in its own
folder, and the two files must be identical."""

from __future__ import annotations

import sys
import time
import zlib
from pathlib import Path

import pytest

from mig.broker.node import free_ports
from tests.apps.client import dump, run_ops, wait_port
from tests.harness import start_mig, stop_mig, write_app
from tests.testnet import hosts_and_broker

APPS = Path(__file__).resolve().parents[1] / "apps"


@pytest.fixture(scope="module")
def net_broker(tmp_path_factory):
    """A test host (netns) and a broker the root namespace and the host both reach."""
    with hosts_and_broker(tmp_path_factory.mktemp("netbroker"), hosts=1) as pair:
        yield pair


def _wait_same(primary: list[Path], replica: list[Path], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pairs = zip(primary, replica, strict=True)
        if all(r.exists() and r.read_bytes() == p.read_bytes() for p, r in pairs):
            return
        time.sleep(0.2)
    for p, r in zip(primary, replica, strict=True):
        assert r.exists(), f"the replica never wrote {r.name}"
        assert r.read_text() == p.read_text()


CASES = {
    "kvserver": (lambda port: [str(APPS / "build" / "kvserver"), str(port)], ["dump.txt"]),
    "kv-asyncio": (lambda port: [sys.executable, str(APPS / "kv_asyncio.py"), str(port)],
                   ["dump.txt"]),
    "workers": (lambda port: [str(APPS / "build" / "workers"), str(port), "3"],
                ["dump.txt.0", "dump.txt.1", "dump.txt.2"]),
    "sigselect": (lambda port: [str(APPS / "build" / "sigselect"), str(port)], ["dump.txt"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_replica_on_another_host_reaches_the_primarys_state(case, net_broker, tmp_path,
                                                           app_name):
    net, broker = net_broker
    command, files = CASES[case]
    (port,) = free_ports(1)
    app = write_app(tmp_path / "primary", app_name, command(port),
                    broker.settings.bootstrap_servers)
    primary = start_mig(["primary", "start", str(app)], tmp_path / "home-p")
    replica = None
    try:
        wait_port("127.0.0.1", port, 30)
        replica = start_mig(["replica", "follow", str(app), "--workdir", str(tmp_path / "backup")],
                       tmp_path / "home-r", wrap=lambda cmd: net.wrap(0, cmd))
        log = run_ops("127.0.0.1", port, 2000, seed=zlib.crc32(case.encode()) % 1000)
        assert len(log) == 2000
        assert dump("127.0.0.1", port, "dump.txt") > 0
        _wait_same([tmp_path / "primary" / f for f in files],
                   [tmp_path / "backup" / f for f in files])
        assert replica.poll() is None, "the replica stopped (divergence?)"
    finally:
        if replica is not None:  # first: with a hot replica, SIGTERM would hand over
            stop_mig(replica)
        stop_mig(primary)
