"""One realistic, hand-written record for every top-level schema in ``avro/``.

``sample(full_name)`` returns a fresh copy each call, so tests may change it. ``ALL_TYPES``
lists the record types written to Kafka as messages; ``PART_TYPES`` the record types that
have their own schema file but only appear inside others. Together they are
``Codec.default().names`` (a test keeps them in step).
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

__all__ = ["ALL_TYPES", "PART_TYPES", "sample"]

_APP = "shop"
_T_MS = 1_764_000_000_000
_T_NS = _T_MS * 1_000_000
_IMAGE = b"CRIU image bytes " * 8


def _hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_IDENTITY: dict[str, Any] = {
    "app": _APP,
    "argv": ["/usr/bin/python3", "-m", "shop.server", "--port", "8080"],
    "cwd": "/srv/shop",
    "env_digest": _hex(b"HOME=/srv/shop\nLANG=C.UTF-8\nPATH=/usr/bin:/bin\n"),
    "binary_path": "/usr/bin/python3.11",
    "binary_sha256": _hex(b"python3.11 binary"),
    "kernel": "6.1.0-18-amd64",
    "libc": "glibc 2.36",
    "mig_version": "0.1.0",
    "hostname": "shop-a.example.net",
    "created_ms": _T_MS,
}

_CALLS: list[dict[str, Any]] = [
    {
        "tid": 1, "seq": 41, "kind": "CLOCK_GETTIME", "args": [1], "result": 0, "err": 0,
        "payload": (1_764_000_000).to_bytes(8, "little") + (123_456_789).to_bytes(8, "little"),
        "out_len": None, "out_hash": None, "wall_ns": _T_NS + 1_000,
    },
    {
        "tid": 1, "seq": 42, "kind": "ACCEPT", "args": [3, 0], "result": 7, "err": 0,
        "payload": bytes([2, 0, 0xD4, 0x31, 10, 0, 0, 5]) + bytes(8),
        "out_len": None, "out_hash": None, "wall_ns": _T_NS + 2_000,
    },
    {
        "tid": 2, "seq": 43, "kind": "READ", "args": [7, 4096], "result": 18, "err": 0,
        "payload": b"GET /cart HTTP/1.1",
        "out_len": None, "out_hash": None, "wall_ns": _T_NS + 3_000,
    },
    {
        "tid": 2, "seq": 44, "kind": "READ", "args": [7, 4096], "result": -1, "err": 11,
        "payload": None, "out_len": None, "out_hash": None, "wall_ns": _T_NS + 4_000,
    },
    {
        "tid": 2, "seq": 45, "kind": "WRITE", "args": [7, 19], "result": 19, "err": 0,
        "payload": None, "out_len": 19,
        "out_hash": hashlib.sha256(b"HTTP/1.1 200 OK\r\n\r\n").digest()[:16],
        "wall_ns": _T_NS + 5_000,
    },
]

_SAMPLES: dict[str, dict[str, Any]] = {
    "mig.log.AppIdentity": _IDENTITY,
    "mig.log.PartitionOffset": {"partition": 0, "offset": 1_204},
    "mig.log.CallBatch": {
        "app": _APP, "epoch": 3, "lpid": "1.2", "batch_seq": 17, "first_seq": 41,
        "sent_ns": _T_NS + 6_000, "calls": _CALLS,
    },
    "mig.log.Barrier": {
        "app": _APP, "epoch": 3, "lpid": "1.2", "seq": 45, "reason": "OUTPUT",
        "ts_ns": _T_NS + 5_500,
    },
    "mig.log.InputChunk": {
        "app": _APP, "data": b"insert into t values(1);\n", "end": False,
        "ts_ns": _T_NS + 5_700,
    },
    "mig.log.Heartbeat": {
        "app": _APP, "member": "shop-b", "role": "REPLICA", "epoch": 3,
        "ts_ms": _T_MS + 250, "calls_offset": 1_204, "host": "shop-b.example",
    },
    "mig.log.MemberStatus": {
        "app": _APP, "member": "shop-b", "role": "REPLICA", "epoch": 3,
        "lag_records": 12, "lag_ms": 40, "health": "ok", "ts_ms": _T_MS + 300,
        "host": "shop-b.example", "calls_offset": 1_192,
    },
    "mig.log.Migrate": {
        "app": _APP, "event_id": "mig-7f3a2c", "to_member": "shop-b",
        "reason": "kernel upgrade on shop-a", "requested_by": "ops@shop-a", "ts_ms": _T_MS,
    },
    "mig.log.CheckpointRequest": {
        "app": _APP, "event_id": "ckpt-19b0e4", "reason": "log retention",
        "requested_by": "mig.recorder", "ts_ms": _T_MS,
    },
    "mig.log.RequestFailed": {
        "app": _APP, "event_id": "mig-7f3a2c", "request": "migrate", "member": "shop-a",
        "reason": "no hot replica (replicas: shop-b catching-up)", "ts_ms": _T_MS + 20,
    },
    "mig.log.Promotion": {
        "app": _APP, "member": "shop-b", "new_epoch": 4, "previous_epoch": 3,
        "calls_offsets": [{"partition": 0, "offset": 1_205}, {"partition": 1, "offset": 877}],
        "ts_ms": _T_MS + 1_100, "detection_ms": 1_004, "promotion_ms": 612,
        "reason": "failover",
    },
    "mig.log.Claim": {
        "app": _APP, "member": "shop-b", "epoch": 4, "reason": "failover",
        "lag_records": 3, "ts_ms": _T_MS + 1_010,
    },
    "mig.log.Handoff": {
        "app": _APP, "event_id": "mig-7f3a2c", "from_member": "shop-a",
        "to_member": "shop-b", "epoch": 3,
        "calls_offsets": [{"partition": 0, "offset": 1_205}, {"partition": 1, "offset": 877}],
        "frozen_ts_ms": _T_MS + 20, "ts_ms": _T_MS + 35,
    },
    "mig.log.CheckpointManifest": {
        "app": _APP, "checkpoint_id": "ckpt-0003-0007", "epoch": 3, "created_ms": _T_MS,
        "barrier_offsets": [{"partition": 0, "offset": 1_100}, {"partition": 1, "offset": 800}],
        "lpid_seqs": {"1": 812, "1.1": 40, "1.2": 45},
        "chunk_count": 2, "total_size": len(_IMAGE), "sha256": _hex(_IMAGE),
        "chunks": [
            {"index": 0, "size": 64, "sha256": _hex(_IMAGE[:64])},
            {"index": 1, "size": len(_IMAGE) - 64, "sha256": _hex(_IMAGE[64:])},
        ],
        "criu_version": "3.17.1", "kernel": "6.1.0-18-amd64", "identity": _IDENTITY,
        "workdir": "/srv/shop", "run_dir": "/dev/shm/mig-0/shop-replica-4242", "root_pid": 4243,
        "batch_seqs": {"1": 90, "1.1": 7, "1.2": 9}, "member": "shop-b", "dump_ms": 38,
        "chunks_from": {"partition": 1, "offset": 5_120},
    },
    "mig.log.CheckpointChunk": {
        "app": _APP, "checkpoint_id": "ckpt-0003-0007", "index": 1, "count": 2,
        "data": _IMAGE[64:], "sha256": _hex(_IMAGE[64:]),
    },
}

PART_TYPES: tuple[str, ...] = ("mig.log.PartitionOffset",)
ALL_TYPES: tuple[str, ...] = tuple(sorted(set(_SAMPLES) - set(PART_TYPES)))


def sample(full_name: str) -> dict[str, Any]:
    """A fresh copy of the sample record of ``full_name`` (KeyError if there is none)."""
    return copy.deepcopy(_SAMPLES[full_name])
