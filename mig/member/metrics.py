"""A member's Prometheus metrics: ``[metrics] address`` in app.toml (or ``--metrics``).

One ``Metrics`` per member process, kept across a promotion (the replica's object goes on
as the primary's). Served over HTTP at ``/metrics`` by prometheus-client's own server
thread; nothing is served when no address is set, and updating the metrics then costs a
few attribute writes. Every series has the labels ``app`` and ``member``.

- ``mig_role{role}`` (gauge): 1 for this member's role now (primary, replica), else 0;
- ``mig_epoch`` (gauge): the epoch this member is in;
- ``mig_calls_total{direction}`` (counter): calls recorded (primary) or replayed (replica);
- ``mig_log_bytes_total{direction}`` (counter): bytes of call batches written or read;
- ``mig_commit_seconds`` (histogram): a commit or acknowledgement of recorded calls, what a
  held output waits for;
- ``mig_replica_lag_records``, ``mig_replica_lag_seconds`` (gauges): calls read and not
  yet replayed, and the age of the oldest of them;
- ``mig_checkpoint_age_seconds`` (gauge): since the last checkpoint this member stored
  (NaN before one); ``mig_checkpoint_duration_seconds``: that one, from the cut to stored;
- ``mig_failover_detection_seconds``, ``mig_promotion_seconds`` (gauges): of this member's
  last promotion;
- ``mig_divergences_total`` (counter): divergences this replica stopped at.
"""

from __future__ import annotations

import time
from typing import Any

from mig.errors import MigError

__all__ = ["Metrics", "parse_address"]


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:port`` for IPv6) -> (host, port); raises ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"'{text}' is not host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


class Metrics:
    def __init__(self, app: str, member: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.labels = {"app": app, "member": member}
        names = ["app", "member"]
        reg = self.registry
        self._role = Gauge("mig_role", "1 for this member's current role.", [*names, "role"],
                           registry=reg)
        self._epoch = Gauge("mig_epoch", "The epoch this member is in.", names, registry=reg)
        self._calls = Counter("mig_calls_total", "Calls recorded or replayed.",
                              [*names, "direction"], registry=reg)
        self._bytes = Counter("mig_log_bytes_total", "Bytes of call batches written or read.",
                              [*names, "direction"], registry=reg)
        self._commit = Histogram("mig_commit_seconds", "Commit or acknowledgement of recorded"
                                 " calls (what a held output waits for).", names,
                                 # (from 50 us: an acknowledgement on a near broker takes
                                 # 0.1 to 0.3 ms, docs/benchmarks.md)
                                 buckets=(0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005,
                                          0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
                                 registry=reg)
        self._lag_records = Gauge("mig_replica_lag_records", "Calls read, not yet replayed.",
                                  names, registry=reg)
        self._lag_seconds = Gauge("mig_replica_lag_seconds", "Age of the oldest call read and"
                                  " not yet replayed.", names, registry=reg)
        self._ckpt_age = Gauge("mig_checkpoint_age_seconds", "Since the last checkpoint this"
                               " member stored.", names, registry=reg)
        self._ckpt_duration = Gauge("mig_checkpoint_duration_seconds", "The last checkpoint,"
                                    " from the cut to stored.", names, registry=reg)
        self._detection = Gauge("mig_failover_detection_seconds", "Detection time of this"
                                " member's last promotion.", names, registry=reg)
        self._promotion = Gauge("mig_promotion_seconds", "Duration of this member's last"
                                " promotion.", names, registry=reg)
        self._divergences = Counter("mig_divergences_total", "Divergences this replica stopped"
                                    " at.", names, registry=reg)
        self._ckpt_at: float | None = None
        self._ckpt_age.labels(**self.labels).set_function(self._age)
        self.server: Any = None
        self.port = 0

    def serve(self, address: str) -> int:
        """Start the HTTP endpoint; returns the port (``host:0`` picks one)."""
        from prometheus_client import start_http_server

        try:
            host, port = parse_address(address)
        except ValueError as exc:
            raise MigError(f"metrics address: {exc}") from None
        try:
            self.server, _thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise MigError(f"cannot serve metrics on {address}: {exc.strerror}") from exc
        self.port = self.server.server_port
        return self.port

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    # -- updates
    def role(self, role: str, epoch: int) -> None:
        for r in ("primary", "replica"):
            self._role.labels(**self.labels, role=r).set(1 if r == role else 0)
        self._epoch.labels(**self.labels).set(epoch)

    def calls(self, direction: str, n: int) -> None:
        self._calls.labels(**self.labels, direction=direction).inc(n)

    def log_bytes(self, direction: str, n: int) -> None:
        self._bytes.labels(**self.labels, direction=direction).inc(n)

    def commit(self, seconds: float) -> None:
        self._commit.labels(**self.labels).observe(seconds)

    def lag(self, records: int, seconds: float) -> None:
        self._lag_records.labels(**self.labels).set(records)
        self._lag_seconds.labels(**self.labels).set(seconds)

    def checkpoint(self, duration_s: float) -> None:
        self._ckpt_at = time.monotonic()
        self._ckpt_duration.labels(**self.labels).set(duration_s)

    def promoted(self, detection_s: float | None, promotion_s: float, epoch: int) -> None:
        if detection_s is not None:
            self._detection.labels(**self.labels).set(detection_s)
        self._promotion.labels(**self.labels).set(promotion_s)
        self.role("primary", epoch)

    def diverged(self) -> None:
        self._divergences.labels(**self.labels).inc()

    def _age(self) -> float:
        return float("nan") if self._ckpt_at is None else time.monotonic() - self._ckpt_at
