"""One app deployed on test hosts: a primary on host 0 and replicas on others, each a real
`mig` process inside its network namespace, for the failover and checkpoint tests."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from mig.broker.embedded import EmbeddedBroker
from mig.broker.node import free_ports
from mig.control.read import read_control
from tests.apps.client import request
from tests.testnet import HostNet

APPS = Path(__file__).resolve().parent / "apps"


def need(program: str, package: str) -> str:
    """The path of an installed program; a test that needs a missing one fails, naming the
    package that installs it (.ci/run installs them)."""
    path = shutil.which(program)
    assert path, f"{program} is not installed: apt-get install -y {package}"
    return path


def debian_python() -> str:
    """Debian's python3: not the interpreter running the tests, nor the first python3 on
    PATH (a pyenv shim is a shell script that looks for a version file from its folder up:
    another program on each host)."""
    python = "/usr/bin/python3"
    assert Path(python).is_file(), "python3 is not installed: apt-get install -y python3"
    return python


# nginx as Debian's nginx-light runs it: a master and 2 workers, and `sendfile on` as in
# Debian's own nginx.conf (nginx's built-in default is off), so the static file leaves
# through sendfile, which the shim does as a read and a recorded write (docs/interceptor.md).
# Every host starts it with the same argv; `-p ./` makes the relative paths below (error
# log, pid file, temp folders) resolve in each host's own working folder, so the primary's
# and a replica's do not collide. The document root is absolute: one folder every host reads.
NGINX_CONF = """\
worker_processes 2;
daemon off;
master_process on;
user root;
error_log error.log info;
pid nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    client_body_temp_path body;
    proxy_temp_path proxy;
    fastcgi_temp_path fastcgi;
    uwsgi_temp_path uwsgi;
    scgi_temp_path scgi;
    server {{
        listen {port};
        root {root};
        location /ok {{ return 200 "ok\\n"; }}
    }}
}}
"""
NGINX_INDEX = "<html><body>mig serves nginx</body></html>\n"


def _write_app_files(app: str, folder: Path, tmp: Path, port: int) -> None:
    """The files an app needs beside its command line: nginx's configuration in the app's
    folder and its document root (with index.html) in the deployment's folder, which is
    also what CPython's http.server serves."""
    if app in ("pyhttp", "node"):
        root = tmp / "www"
        root.mkdir()
        (root / "index.html").write_text(NGINX_INDEX)
        return
    if app == "nginx":
        root = tmp / "www"
        root.mkdir()
        (root / "index.html").write_text(NGINX_INDEX)
        (folder / "nginx.conf").write_text(NGINX_CONF.format(port=port, root=root))


def _command(app: str, port: int, folder: Path) -> list[str]:
    """The app's command line; `folder` is the app's folder (where app.toml is)."""
    if app == "nginx":
        # its configuration in its folder, read relative to it (`-c nginx.conf` under `-p
        # ./`), as a deployment copies an app's folder to every host (start_replica)
        return [need("nginx", "nginx-light"), "-p", "./", "-c", "nginx.conf"]
    if app == "sqlite3":  # the shell, fed its SQL through its stdin ([app] stdin = "topic")
        return [need("sqlite3", "sqlite3"), "db.sqlite"]
    if app in ("redis", "redis-iothreads"):
        # Debian's Redis with its own defaults (RDB snapshots, the bio threads, jemalloc's
        # background thread, whose flags the main thread reads without a lock: threads
        # serialized, mig's default, replay it); redis-iothreads adds I/O threads, which
        # it and the main thread wait for by spinning on memory (mig preempts the spins)
        io = (["--io-threads", "2", "--io-threads-do-reads", "yes"]
              if app == "redis-iothreads" else [])
        return [need("redis-server", "redis-server"), "--port", str(port),
                "--protected-mode", "no", "--enable-debug-command", "yes", *io]
    if app == "pyhttp":
        # Debian's python3: `-m http.server` is a ThreadingHTTPServer, a thread per
        # connection, handing the GIL between them
        return [debian_python(), "-m", "http.server", str(port), "--bind", "0.0.0.0",
                "--directory", str(folder.parent / "www")]
    if app == "node":
        # Debian's Node.js on tests/apps/node_http.js: V8's platform workers and libuv's
        # thread pool (which reads the page on every request) beside the event loop
        return [need("node", "nodejs"), str(APPS / "node_http.js"), str(port), "0.0.0.0",
                str(folder.parent / "www")]
    if app == "memcached":
        # Debian's memcached with 4 worker threads beside its maintenance threads (the LRU
        # maintainer and crawler, the hash table's expander), which read the clock the main
        # thread's timer writes every second without a lock (threads serialized replay it)
        root = ["-u", "root"] if os.geteuid() == 0 else []  # it refuses root without it
        return [need("memcached", "memcached"), "-p", str(port), "-U", "0", "-l", "0.0.0.0",
                "-t", "4", *root]
    if app == "kv-asyncio":
        return [sys.executable, str(APPS / "kv_asyncio.py"), str(port), "0.0.0.0"]
    if app == "poolserver":  # threads: an accept thread and 4 workers (tests/member/)
        return [str(APPS / "build" / "poolserver"), str(port), "4", "0.0.0.0"]
    return [str(APPS / "build" / "kvserver"), str(port), "0.0.0.0"]


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Deployment:
    """One app: a primary on host 0 and replicas on the given hosts."""

    def __init__(self, net: HostNet, broker: EmbeddedBroker, tmp: Path,
                 replicas: tuple[int, ...] = (1,), extra_toml: str = "",
                 app: str = "kvserver", kafka_toml: str = "", app_keys: str = "",
                 app_args: tuple[str, ...] = ()) -> None:
        """``app_args``: more arguments for the app's command."""
        self.net, self.broker, self.tmp = net, broker, tmp
        self.app = app
        self.name = "fo" + uuid.uuid4().hex[:8]
        (self.port,) = free_ports(1)
        self.replica_hosts = replicas
        self.procs: dict[int, subprocess.Popen] = {}
        folder = tmp / "host0"
        folder.mkdir(parents=True)
        self.app_toml = folder / "app.toml"
        _write_app_files(app, folder, tmp, self.port)
        self.app_toml.write_text(
            "[app]\n"
            f'name = "{self.name}"\n'
            f"command = {json.dumps([*_command(app, self.port, folder), *app_args])}\n"
            + ('stdin = "topic"\n' if app == "sqlite3" else "") + app_keys +
            "[kafka]\n"
            + (kafka_toml or f'bootstrap_servers = "{broker.settings.bootstrap_servers}"\n') +
            "[replica]\nheartbeat_ms = 200\nfailover_timeout_ms = 1000\n"
            "[failover]\n"
            'on_promote = "echo $MIG_EPOCH $MIG_MEMBER > promoted-by-hook.txt"\n'
            'maintenance_file = "maintenance"\n' + extra_toml)

    def addresses(self) -> list[tuple[str, int]]:
        return [(self.net.host_ips[h], self.port) for h in (0, *self.replica_hosts)]

    def _mig(self, host: int, args: list[str]) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "mig", "--log-format", "json", *args]
        env = dict(os.environ, MIG_HOME=str(self.tmp / f"home{host}"))
        log = open(self.tmp / f"host{host}.log", "ab")  # noqa: SIM115 - lives with the process
        # members start as a shell starts background jobs: SIGINT ignored (mig must give
        # the app the same signal dispositions on every host whatever it inherited)
        return subprocess.Popen(self.net.wrap(host, cmd), env=env, stdout=log, stderr=log,
                                preexec_fn=_ignore_sigint)

    def start(self) -> None:
        # rings under the test's folder: a killed member leaves them behind
        self.procs[0] = self._mig(0, ["primary", "start", str(self.app_toml),
                                      "--member", "host0", "--run-dir", str(self.tmp / "run0")])
        if self.app == "sqlite3":  # serves no port: it runs once its ring is there
            _wait_for(lambda: (self.tmp / "run0" / "1.ring").exists(), 30, "the primary app")
        else:
            _wait_for(lambda: _answers(self.net.host_ips[0], self.port, self.app), 30,
                      "the primary app")
        for h in self.replica_hosts:
            self.start_replica(h)
        _wait_for(lambda: self.hot() >= {f"host{h}" for h in self.replica_hosts}, 60,
                  "the replicas to be hot")

    def start_replica(self, host: int, *extra: str, workdir: bool = True) -> subprocess.Popen:
        """A replica on test host ``host``, in ``host<N>`` of the test's folder (without
        ``workdir``: mig's default folder under that host's MIG_HOME)."""
        folder = self.tmp / f"host{host}"
        if self.app == "nginx" and not (folder / "nginx.conf").exists():
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.tmp / "host0" / "nginx.conf", folder / "nginx.conf")
        where = ["--workdir", str(folder)] if workdir else []
        self.procs[host] = self._mig(host, ["replica", "follow", str(self.app_toml), *where,
                                            "--member", f"host{host}",
                                            "--run-dir", str(self.tmp / f"run{host}"),
                                            *extra])
        return self.procs[host]

    def control(self) -> list[tuple[str, dict]]:
        return read_control(self.broker.settings, self.name)

    def hot(self) -> set[str]:
        latest: dict[str, dict] = {}
        for name, rec in self.control():
            if name == "mig.log.MemberStatus":
                latest[rec["member"]] = rec
        return {m for m, r in latest.items() if r["health"] == "replaying"}

    def promotions(self) -> list[dict]:
        return [rec for name, rec in self.control() if name == "mig.log.Promotion"]

    def log_text(self, host: int) -> str:
        return (self.tmp / f"host{host}.log").read_text(errors="replace")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)


def _answers(host: str, port: int, app: str = "kvserver") -> bool:
    """Whether the app serves on host:port, in its own protocol (RESP for Redis, HTTP for
    nginx, the test apps' line protocol otherwise)."""
    try:
        if app in ("nginx", "pyhttp", "node"):
            conn = http.client.HTTPConnection(host, port, timeout=1.0)
            path, body = ("/ok", b"ok\n") if app == "nginx" else ("/", NGINX_INDEX.encode())
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                return resp.status == 200 and resp.read() == body
            finally:
                conn.close()
        if app == "memcached":
            with socket.create_connection((host, port), timeout=1.0) as sock:
                sock.sendall(b"version\r\n")
                return sock.recv(64).startswith(b"VERSION ")
        if app.startswith("redis"):
            with socket.create_connection((host, port), timeout=1.0) as sock:
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        return request(host, port, "GET probe", timeout=1.0).startswith(("NONE", "VALUE"))
    except (OSError, http.client.HTTPException):
        return False


def port_free(net: HostNet, host: int, port: int) -> bool:
    """Whether a new process on test host ``host`` can listen on ``port``."""
    probe = ("import socket; s = socket.socket();"
             " s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1);"
             f" s.bind(('0.0.0.0', {port})); s.listen()")
    return subprocess.run(net.wrap(host, [sys.executable, "-c", probe]),
                          capture_output=True).returncode == 0


def _wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


