"""Test hosts: network namespaces joined to the root namespace by veth pairs.

``HostNet`` makes one namespace per backup host, each with a veth pair on its own /30
network (root side .1, namespace side .2), and runs commands inside with ``ip netns exec``.
A broker that must be reachable from the test hosts listens on a root-side address.
Everything is removed on ``close()``; names carry a random suffix so a crashed run cannot
collide with the next one."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class HostNet:
    def __init__(self, hosts: int = 1, subnet: int = 0) -> None:
        tag = uuid.uuid4().hex[:6]
        self.names: list[str] = []
        self.veths: list[str] = []
        self.root_ips: list[str] = []
        self.host_ips: list[str] = []
        second = _free_second_octet(subnet)
        try:
            for i in range(hosts):
                ns, veth = f"migt{tag}{i}", f"mv{tag}{i}"
                root_ip, host_ip = f"10.{second}.{i}.1", f"10.{second}.{i}.2"
                _ip("netns", "add", ns)
                self.names.append(ns)
                _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
                self.veths.append(veth)
                _ip("addr", "add", f"{root_ip}/30", "dev", veth)
                _ip("link", "set", veth, "up")
                _ip("-n", ns, "addr", "add", f"{host_ip}/30", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                # every host reaches the root side of every other host (a broker there)
                _ip("-n", ns, "route", "add", "default", "via", root_ip)
                self.root_ips.append(root_ip)
                self.host_ips.append(host_ip)
        except BaseException:
            self.close()
            raise

    def wrap(self, host: int, command: list[str]) -> list[str]:
        """``command`` run inside test host ``host``."""
        return ["ip", "netns", "exec", self.names[host], *command]

    def pids(self, host: int) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.names[host]], capture_output=True,
                             text=True).stdout
        return [int(p) for p in out.split()]

    def signal(self, host: int, sig: int) -> None:
        """Send ``sig`` to every process of test host ``host`` (a host-wide crash or pause)."""
        for pid in self.pids(host):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def link(self, host: int, up: bool) -> None:
        """Cut test host ``host`` off from everything (or reconnect it)."""
        _ip("-n", self.names[host], "link", "set", "eth0", "up" if up else "down")
        if up:
            subprocess.run(["ip", "-n", self.names[host], "route", "replace", "default", "via",
                            self.root_ips[host]], capture_output=True)

    def close(self) -> None:
        """Kill what still runs inside the hosts, then remove them and their veths (a
        namespace with a process left in it would outlive `ip netns del`, veth and all)."""
        for ns in self.names:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            for pid in pids.stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        for veth in self.veths:
            subprocess.run(["ip", "link", "del", veth], capture_output=True)
        self.names.clear()
        self.veths.clear()


def _free_second_octet(start: int) -> int:
    """A 10.N.0.0/16 no interface on this host uses yet (another run may be going on)."""
    used = subprocess.run(["ip", "-br", "addr"], capture_output=True, text=True).stdout
    for i in range(100):
        second = 100 + (os.getpid() + start + i) % 100
        if f" 10.{second}." not in used:
            return second
    raise RuntimeError("no free 10.N.0.0/16 network for a test host")


@contextmanager
def hosts_and_broker(home: Path, hosts: int) -> Iterator[tuple[HostNet, object]]:
    """``hosts`` test hosts and an embedded broker on the root side that all of them reach
    (the test apps built first). Everything is stopped and removed at the end."""
    from mig.broker.embedded import EmbeddedBroker
    from mig.broker.node import free_ports

    apps = Path(__file__).resolve().parent / "apps"
    subprocess.run(["make", "-s", "-C", str(apps)], check=True)
    net = HostNet(hosts=hosts)
    try:
        port, cport = free_ports(2)
        broker = EmbeddedBroker(home=home, port=port, controller_port=cport,
                                host=net.root_ips[0])
        try:
            broker.up(timeout=120)
            yield net, broker
        finally:
            broker.down()
    finally:
        net.close()
