"""The campaign's world: three test hosts (network namespaces), a 3-broker KRaft cluster on
an address of its own, one app deployed on the hosts, and a client that never stops writing.

The brokers listen on an address added to the root namespace's loopback device, which every
test host reaches through its default route; so a host can be cut off from the brokers
alone (a blackhole route to that address inside its namespace) while the clients, in the
root namespace, still reach it.

Members are named ``h<host>g<generation>``: a host whose member died (or was fenced) gets a
new replica of the next generation, in a fresh folder, so no two members ever share a name
or a state folder.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from mig.broker.node import free_ports
from mig.control.read import read_control
from tests.apps.ackclient import WriteReport, run_writes
from tests.apps.client import request
from tests.cluster import LocalCluster
from tests.testnet import HostNet

APPS = Path(__file__).resolve().parents[1] / "apps"
HOSTS = 3


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def wait_for(cond, timeout: float, what: str, step: float = 0.2):  # noqa: ANN001
    """Poll ``cond`` until it returns something true; that value, or AssertionError. The
    runner's own reads of the control topic may meet a broker a fault just killed: a Kafka
    error there is "not yet", not the round's end."""
    from confluent_kafka import KafkaException

    from mig.errors import KafkaUnavailable

    deadline = time.monotonic() + timeout
    while True:
        try:
            value = cond()
        except (KafkaException, KafkaUnavailable):
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


def answers(host_ip: str, port: int, timeout: float = 1.0) -> bool:
    try:
        return request(host_ip, port, "GET probe", timeout=timeout).startswith(("NONE", "VALUE"))
    except OSError:
        return False


class World:
    """Hosts and brokers, shared by every app the campaign deploys."""

    def __init__(self, root: Path, signed: bool = True) -> None:
        self.root = root
        self.signed = signed  # the apps' records signed ([security]), as a careful user's
        subprocess.run(["make", "-s", "-C", str(APPS)], check=True)
        self.net = HostNet(hosts=HOSTS)
        second = self.net.root_ips[0].split(".")[1]
        self.broker_ip = f"10.{second}.250.1"
        self.cluster: LocalCluster | None = None
        try:
            _ip("addr", "add", f"{self.broker_ip}/32", "dev", "lo")
            self.cluster = LocalCluster(root / "kafka", size=3, host=self.broker_ip)
            self.cluster.start(timeout=120)
        except BaseException:
            self.close()
            raise

    @property
    def bootstrap(self) -> str:
        assert self.cluster is not None
        return self.cluster.bootstrap

    def isolate(self, host: int, cut: bool) -> None:
        """Cut test host ``host`` off from the brokers only (the clients still reach it)."""
        verb = "add" if cut else "del"
        subprocess.run(["ip", "-n", self.net.names[host], "route", verb, "blackhole",
                        f"{self.broker_ip}/32"], capture_output=True)

    def shape(self, host: int, on: bool, rate: str = "200kbit") -> None:
        """Degrade host ``host``'s link both ways: a token bucket at ``rate`` (queueing
        delay up to 300 ms, drops beyond). The kernel here has no netem; see
        docs/reliability.md."""
        for pre, dev in ((self.net.wrap(host, []), "eth0"), ([], self.net.veths[host])):
            if on:
                subprocess.run([*pre, "tc", "qdisc", "replace", "dev", dev, "root", "tbf",
                                "rate", rate, "burst", "8kb", "latency", "300ms"],
                               capture_output=True, check=True)
            else:
                subprocess.run([*pre, "tc", "qdisc", "del", "dev", dev, "root"],
                               capture_output=True)

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
        self.net.close()
        subprocess.run(["ip", "addr", "del", f"{self.broker_ip}/32", "dev", "lo"],
                       capture_output=True)


@dataclass
class Member:
    host: int
    gen: int
    proc: subprocess.Popen
    workdir: Path
    log: Path
    started: float = field(default_factory=time.time)
    wrapped: bool = False  # started under a wrapper that forks (unshare --fork)

    @property
    def name(self) -> str:
        return f"h{self.host}g{self.gen}"

    def agent_pid(self) -> int:
        """The pid of the member's mig agent: a wrapper that forks (the clock-offset
        fault's `unshare --time --fork`) is its parent, and a kill -9 of the wrapper left
        the agent, its holder and its app running (two campaign runs took that for mig's
        fault)."""
        if not self.wrapped:
            return self.proc.pid
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        assert children.split(), f"{self.name}'s wrapper {self.proc.pid} has no agent"
        return int(children.split()[0])

    def alive(self) -> bool:
        return self.proc.poll() is None


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class App:
    """kvserver deployed on the world's hosts, primary first on host 0, with signed
    records (unless the world says not) and checkpoints, and a writer that runs for the
    app's whole life."""

    def __init__(self, world: World, folder: Path, tag: str) -> None:
        self.world, self.folder = world, folder
        self.name = f"c{tag}{uuid.uuid4().hex[:6]}"
        (self.port,) = free_ports(1)
        self.members: dict[int, Member] = {}
        self.gens = dict.fromkeys(range(HOSTS), 0)
        folder.mkdir(parents=True)
        self.app_toml = folder / "app.toml"
        keys = folder / "keys.txt"
        keys.write_text(f"k1 {secrets.token_hex(32)}\n")
        os.chmod(keys, 0o600)
        command = [str(APPS / "build" / "kvserver"), str(self.port), "0.0.0.0"]
        self.app_toml.write_text(
            "[app]\n"
            f'name = "{self.name}"\n'
            f"command = {json.dumps(command)}\n"
            "[kafka]\n"
            f'bootstrap_servers = "{world.bootstrap}"\n'
            "[replica]\nheartbeat_ms = 200\nfailover_timeout_ms = 1000\n"
            "[checkpoints]\nevery_seconds = 20\nkeep = 2\n"
            + ("[security]\nhmac_keys_file = \"keys.txt\"\n" if world.signed else ""))
        self.writers: list[tuple[threading.Thread, Path, dict]] = []
        self.stop_file = folder / "stop-writers"
        self.mounts: list[Path] = []  # small file systems of the disk-full fault

    # -- members

    def _mig(self, host: int, args: list[str], log: Path, wrap: list[str] | None = None
             ) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "mig", "--log-format", "json", *args]
        env = dict(os.environ, MIG_HOME=str(self.folder / f"home{host}"))
        out = open(log, "ab")  # noqa: SIM115 - lives with the process
        return subprocess.Popen(self.world.net.wrap(host, [*(wrap or []), *cmd]), env=env,
                                stdout=out, stderr=out, preexec_fn=_ignore_sigint)

    def start(self) -> None:
        self.gens[0] = 1
        workdir = self.folder  # the primary's app runs in the app.toml's folder
        log = self.folder / "h0g1.log"
        proc = self._mig(0, ["primary", "start", str(self.app_toml), "--member", "h0g1",
                             "--run-dir", str(self.folder / "run-h0g1")], log)
        self.members[0] = Member(0, 1, proc, workdir, log)
        wait_for(lambda: answers(self.world.net.host_ips[0], self.port), 60, "the primary app")
        for host in range(1, HOSTS):
            self.start_replica(host)
        self.wait_hot(120)

    def start_replica(self, host: int, wrap: list[str] | None = None,
                      workdir: Path | None = None) -> Member:
        self.gens[host] += 1
        name = f"h{host}g{self.gens[host]}"
        workdir = workdir or self.folder / name
        workdir.mkdir(parents=True, exist_ok=True)
        log = self.folder / f"{name}.log"
        proc = self._mig(host, ["replica", "follow", str(self.app_toml), "--workdir",
                                str(workdir), "--member", name,
                                "--run-dir", str(self.folder / f"run-{name}")], log, wrap)
        member = Member(host, self.gens[host], proc, workdir, log, wrapped=bool(wrap))
        self.members[host] = member
        return member

    def kill_host(self, host: int, sig: int = signal.SIGKILL) -> None:
        self.world.net.signal(host, sig)

    def control(self) -> list[tuple[str, dict]]:
        """The control topic's records. The runner's own reads may meet a broker a fault
        has just killed: asked again for up to 60 s (a fault is not the runner's end)."""
        assert self.world.cluster is not None
        settings = self.world.cluster.settings
        return wait_for(lambda: (read_control(settings, self.name),), 60,
                        "the control topic to be read")[0]

    def promotions(self) -> list[dict]:
        return [rec for kind, rec in self.control() if kind == "mig.log.Promotion"]

    def statuses(self) -> dict[str, dict]:
        latest: dict[str, dict] = {}
        for kind, rec in self.control():
            if kind == "mig.log.MemberStatus":
                latest[rec["member"]] = rec
        return latest

    def primary(self) -> Member:
        """The member the control topic names primary (the last promotion's, else h0g1)."""
        # the newest epoch's (a copy of an old promotion, written again by the hostile
        # fault, may come later in the topic)
        promos = sorted(self.promotions(), key=lambda p: p["new_epoch"])
        name = promos[-1]["member"] if promos else "h0g1"
        for m in self.members.values():
            if m.name == name:
                return m
        raise AssertionError(f"the primary {name} is not a member this campaign started")

    def replicas(self) -> list[Member]:
        primary = self.primary()
        return [m for m in self.members.values() if m is not primary]

    def all_hot(self) -> bool:
        st = self.statuses()
        return all(st.get(m.name, {}).get("health") == "replaying" for m in self.replicas())

    def wait_hot(self, timeout: float) -> None:
        wait_for(self.all_hot, timeout, "the replicas to be hot", step=0.5)

    # -- the client

    def start_writer(self, prefix: str, interval_s: float, deadline_s: float) -> None:
        log = self.folder / f"acks-{prefix}.jsonl"
        out: dict = {}
        addrs = [(ip, self.port) for ip in self.world.net.host_ips]

        def run() -> None:
            out["report"] = run_writes(addrs, 10**9, log, prefix=prefix, deadline_s=deadline_s,
                                       per_op_timeout_s=1.0, stop_file=self.stop_file,
                                       interval_s=interval_s)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.writers.append((thread, log, out))

    def stop_writers(self, timeout: float = 30) -> list[WriteReport]:
        self.stop_file.touch()
        reports = []
        for thread, _, out in self.writers:
            thread.join(timeout)
            if "report" in out:
                reports.append(out["report"])
        return reports

    def ack_logs(self) -> list[Path]:
        return [log for _, log, _ in self.writers]

    def stop(self) -> None:
        self.stop_writers(5)
        for m in self.members.values():
            if m.alive():
                m.proc.kill()
                m.proc.wait(10)
        for host in range(HOSTS):
            self.kill_host(host)
        time.sleep(0.5)
        for mnt in self.mounts:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
