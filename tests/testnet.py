"""Test hosts: network namespaces joined to the root namespace by veth pairs.

``HostNet`` makes one namespace per backup host, each with a veth pair on its own /30
network (root side .1, namespace side .2), and runs commands inside with ``ip netns exec``.
A broker that must be reachable from the test hosts listens on a root-side address.
Everything is removed on ``close()``; names carry a random suffix so a crashed run cannot
collide with the next one."""

from __future__ import annotations

import os
import subprocess
import uuid


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class HostNet:
    def __init__(self, hosts: int = 1, subnet: int = 0) -> None:
        tag = uuid.uuid4().hex[:6]
        self.names: list[str] = []
        self.root_ips: list[str] = []
        self.host_ips: list[str] = []
        second = 100 + (os.getpid() + subnet) % 100
        try:
            for i in range(hosts):
                ns, veth = f"migt{tag}{i}", f"mv{tag}{i}"
                root_ip, host_ip = f"10.{second}.{i}.1", f"10.{second}.{i}.2"
                _ip("netns", "add", ns)
                self.names.append(ns)
                _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
                _ip("addr", "add", f"{root_ip}/30", "dev", veth)
                _ip("link", "set", veth, "up")
                _ip("-n", ns, "addr", "add", f"{host_ip}/30", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                self.root_ips.append(root_ip)
                self.host_ips.append(host_ip)
        except BaseException:
            self.close()
            raise

    def wrap(self, host: int, command: list[str]) -> list[str]:
        """``command`` run inside test host ``host``."""
        return ["ip", "netns", "exec", self.names[host], *command]

    def close(self) -> None:
        for ns in self.names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.names.clear()
