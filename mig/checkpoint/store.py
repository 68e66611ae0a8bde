"""Checkpoints in Kafka: the archive of a checkpoint (mig/checkpoint/image.py) stored in
``mig.NAME.checkpoints``, listed, fetched and trimmed.

Storing one: the archive is cut into chunks well under the topic's message size and
written with a ``CheckpointManifest`` (the calls offsets of the cut, the last sequence
number and batch number per process, sizes and SHA-256 of every chunk and of the whole,
CRIU and kernel versions, the app identity, the paths) in one Kafka transaction;
checkpoints beyond the newest ``keep`` are tombstoned (manifest and chunks, so compaction
reclaims them) and the calls records before the oldest kept checkpoint's offsets are
deleted (AdminClient ``delete_records``).

Fetching one: its chunks are read from the manifest's ``chunks_from`` on, and each and the
whole checked against their SHA-256.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any

import structlog

from mig.checkpoint.image import Archive, CheckpointError, kernel_release
from mig.deadline import Deadline
from mig.kafka.clients import KafkaSettings, quick_start
from mig.kafka.reader import END, Reader
from mig.kafka.topics import topic_names
from mig.kafka.writer import LogWriter

__all__ = ["CHUNKS", "MANIFESTS", "chunk_index", "checkpoint_partition", "fetch_checkpoint",
           "list_manifests", "store_checkpoint"]

log = structlog.get_logger("mig.checkpoint")

CHUNK_BYTES = 256 * 1024


def chunk_index(key: str) -> int | None:
    """The chunk index a checkpoints-topic key ``ID/INDEX`` names; None when it names none
    (a foreign or damaged key, which is then ignored)."""
    tail = key.rpartition("/")[2]
    if not tail.isascii() or not tail.isdigit() or len(tail) > 9:
        return None
    return int(tail)


# mig.NAME.checkpoints has two partitions: the manifests (small) in one, the chunks in the
# other, so listing the checkpoints reads only manifests and fetching one reads from its
# first chunk on (the manifest says where: ``chunks_from``). A topic made with one partition
# (before this layout) holds both; readers then read it whole.
MANIFESTS, CHUNKS = 0, 1


def checkpoint_partition(key: str, partitions: int) -> int:
    """The partition of a checkpoints-topic record (and of its tombstone) by its key."""
    if partitions < 2:
        return 0
    return MANIFESTS if key.startswith("manifest/") else CHUNKS


def _partitions(cons: Any, topic: str) -> list[int]:
    meta = cons.list_topics(topic, timeout=10)
    if topic not in meta.topics or meta.topics[topic].error is not None:
        return []
    return sorted(meta.topics[topic].partitions)


def store_checkpoint(settings: KafkaSettings, app: str, member: str, archive: Archive,
                     meta: dict[str, Any], keep: int, max_chunk: int = CHUNK_BYTES
                     ) -> dict[str, Any]:
    """Write the chunks and the manifest in one transaction; drop checkpoints beyond
    ``keep`` and the calls records before the oldest kept one. Returns the manifest."""
    from mig.checkpoint.criu import find_criu
    from mig.progress import Progress

    checkpoint_id = f"{int(time.time() * 1000):013d}-{uuid.uuid4().hex[:8]}"
    data = archive.data
    pieces = [data[i:i + max_chunk] for i in range(0, len(data), max_chunk)] or [b""]
    manifest = {
        "app": app, "checkpoint_id": checkpoint_id, "epoch": meta["epoch"],
        "created_ms": int(time.time() * 1000), "barrier_offsets": meta["barrier_offsets"],
        "lpid_seqs": meta["lpid_seqs"], "chunk_count": len(pieces), "total_size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "chunks": [{"index": i, "size": len(p), "sha256": hashlib.sha256(p).hexdigest()}
                   for i, p in enumerate(pieces)],
        "criu_version": find_criu().version, "kernel": kernel_release(),
        "identity": meta["identity"], "workdir": meta["workdir"], "run_dir": meta["run_dir"],
        "root_pid": meta["root_pid"], "batch_seqs": meta["batch_seqs"], "member": member,
        "dump_ms": archive.dump_ms, "chunks_from": None,
    }
    old, parts = _read_manifests(settings, app)
    n = len(parts)
    writer = LogWriter(settings, app, transactional_id=f"mig.{app}.checkpointer.{member}")
    progress = Progress(f"checkpoint {checkpoint_id} upload")
    for i, piece in enumerate(pieces):
        key = f"{checkpoint_id}/{i:06d}"
        writer.send("checkpoints", "mig.log.CheckpointChunk", {
            "app": app, "checkpoint_id": checkpoint_id, "index": i, "count": len(pieces),
            "data": piece, "sha256": manifest["chunks"][i]["sha256"]},
            key=key, partition=checkpoint_partition(key, n), validate=False)
        if i % 16 == 15:  # the chunks the brokers acknowledged so far (not waited for)
            progress.update(len(writer.delivered()) * max_chunk, len(data))
    if n >= 2:  # the chunks are written (not yet committed): the manifest says where
        writer.flush()
        first = min(o for t, p, o in writer.delivered() if p == CHUNKS)
        manifest["chunks_from"] = {"partition": CHUNKS, "offset": first}
    key = f"manifest/{checkpoint_id}"
    writer.send("checkpoints", "mig.log.CheckpointManifest", manifest, key=key,
                partition=checkpoint_partition(key, n))
    # superseded checkpoints: tombstones, so compaction reclaims their chunks
    kept = [manifest] + sorted(old, key=lambda m: m["created_ms"], reverse=True)
    for gone in kept[max(1, keep):]:
        keys = [f"manifest/{gone['checkpoint_id']}"] + [
            f"{gone['checkpoint_id']}/{i:06d}" for i in range(gone["chunk_count"])]
        for key in keys:
            writer.send_raw("checkpoints", None, key=key, partition=checkpoint_partition(key, n))
    writer.commit()
    progress.update(len(data), len(data))
    oldest = kept[: max(1, keep)][-1]
    _trim_calls(settings, app, oldest["barrier_offsets"])
    log.info("mig.checkpoint.stored", checkpoint_id=checkpoint_id, size=len(data),
             chunks=len(pieces), offsets=meta["barrier_offsets"],
             dropped=[m["checkpoint_id"] for m in kept[max(1, keep):]])
    return manifest


def _trim_calls(settings: KafkaSettings, app: str, offsets: list[dict[str, int]]) -> None:
    """Delete the calls records no kept checkpoint needs (best effort: logged on failure)."""
    from confluent_kafka import TopicPartition

    from mig.kafka.clients import admin_client

    topic = topic_names(app)["calls"]
    parts = [TopicPartition(topic, po["partition"], po["offset"]) for po in offsets
             if po["offset"] > 0]
    if not parts:
        return
    admin = admin_client(settings)  # kept referenced until the futures are done
    try:
        futures = admin.delete_records(parts, request_timeout=10)
        for fut in futures.values():
            fut.result(timeout=10)
    except Exception as exc:  # noqa: BLE001 - the log keeps growing, nothing breaks
        log.warning("mig.checkpoint.trim_failed", topic=topic, error=repr(exc))


def _scan(settings: KafkaSettings, app: str, start: Any, accept: Any, on_record: Any,
          timeout: float = 30.0) -> list[int]:
    """Read ``mig.NAME.checkpoints`` (committed records) to the end of the partitions that
    ``start(partitions)`` returns as {partition: offset}. Records whose key ``accept(key)``
    takes, and that are signed when the app's records are (mig/wire/auth.py), are decoded and
    given to ``on_record(key, name, record)``; a tombstone comes as ``(key, None, None)``.
    Returns the topic's partitions ([] when it does not exist)."""
    from confluent_kafka import TopicPartition

    topic = topic_names(app)["checkpoints"]

    def wanted(msg: Any) -> bool:  # (a chunk when listing manifests is not even checked)
        return bool(accept((msg.key() or b"").decode(errors="replace")))

    # consumer errors pass (the deadline below says when nothing comes); an undecodable
    # record is logged (mig.checkpoint.undecodable) and skipped
    reader = Reader(settings, app, "mig.checkpoint", errors="skip", tombstones=True,
                    want=wanted, conf={
                        "group.id": f"mig-checkpoints-{app}",
                        "isolation.level": "read_committed",
                        "fetch.message.max.bytes": 4 << 20,
                        # the end of a partition is known from a fetch the broker answers:
                        # at its default (500 ms) an empty or read-to-the-end topic held
                        # every listing (mig status) half a second
                        "fetch.wait.max.ms": 20, **quick_start(settings)})
    try:
        parts = _partitions(reader.consumer, topic)
        if not parts:
            return []
        begin = start(parts)
        reader.assign([TopicPartition(topic, p, o) for p, o in begin.items()])
        done: set[int] = set()
        deadline = Deadline(timeout)
        while len(done) < len(begin):
            if deadline.passed():
                raise CheckpointError(f"reading {topic} made no progress for {timeout:g} s")
            batch = reader.poll(500, 0.02)  # (what has come once the first has, or nothing)
            if batch:  # a large checkpoint on a busy host may take long: wait for progress
                deadline.renew(timeout)
            for item in batch:
                if item.kind == END:
                    done.add(item.partition)
                    continue
                key = (item.msg.key() or b"").decode(errors="replace")
                on_record(key, item.name, item.record)  # a tombstone: (key, None, None)
    finally:
        reader.close()
    return parts


def _read_manifests(settings: KafkaSettings, app: str) -> tuple[list[dict[str, Any]], list[int]]:
    """(live manifests oldest first, the topic's partitions): only the manifests' partition
    is read (the whole topic in the one-partition layout)."""
    manifests: dict[str, dict[str, Any]] = {}

    def on_record(key: str, name: str | None, rec: dict[str, Any] | None) -> None:
        if name is None:  # tombstone
            manifests.pop(key.split("/", 1)[1], None)
        elif name == "mig.log.CheckpointManifest" and rec is not None:
            manifests[rec["checkpoint_id"]] = rec

    parts = _scan(settings, app, lambda ps: {p: 0 for p in ps if p == MANIFESTS
                                             or len(ps) < 2},
                  lambda key: key.startswith("manifest/"), on_record)
    return sorted(manifests.values(), key=lambda m: m["created_ms"]), parts


def _read_chunks(settings: KafkaSettings, app: str, manifest: dict[str, Any]
                 ) -> dict[int, dict[str, Any]]:
    """The chunks of ``manifest`` by index, read from where the manifest says they start
    (or, without that, from the start of the chunks' partition) to its end."""
    want = manifest["checkpoint_id"]
    chunks: dict[int, dict[str, Any]] = {}
    at = manifest.get("chunks_from")

    def start(parts: list[int]) -> dict[int, int]:
        if at is not None and at["partition"] in parts:
            return {at["partition"]: at["offset"]}
        return {p: 0 for p in parts if p == CHUNKS or len(parts) < 2}

    def on_record(key: str, name: str | None, rec: dict[str, Any] | None) -> None:
        if name is None:  # tombstone
            index = chunk_index(key)
            if index is not None:
                chunks.pop(index, None)
        elif name == "mig.log.CheckpointChunk" and rec is not None \
                and rec["checkpoint_id"] == want:
            chunks[rec["index"]] = rec

    _scan(settings, app, start, lambda key: key.startswith(f"{want}/"), on_record)
    return chunks


def list_manifests(settings: KafkaSettings, app: str) -> list[dict[str, Any]]:
    """The live checkpoints of ``app``, oldest first."""
    return _read_manifests(settings, app)[0]


def fetch_checkpoint(settings: KafkaSettings, app: str, manifest: dict[str, Any],
                     progress: Any = None) -> bytes:
    """The archive of ``manifest``, every chunk and the whole checked against its SHA-256."""
    chunks = _read_chunks(settings, app, manifest)
    cid = manifest["checkpoint_id"]
    out = bytearray()
    for i, expect in enumerate(manifest["chunks"]):
        chunk = chunks.get(i)
        if chunk is None:
            raise CheckpointError(f"checkpoint {cid}: chunk {i} of {manifest['chunk_count']}"
                                  " is missing from the topic")
        got = hashlib.sha256(chunk["data"]).hexdigest()
        if got != expect["sha256"] or len(chunk["data"]) != expect["size"]:
            raise CheckpointError(f"checkpoint {cid}: chunk {i} is corrupt (sha256 {got},"
                                  f" manifest says {expect['sha256']})")
        out += chunk["data"]
        if progress is not None:
            progress(len(out), manifest["total_size"])
    if hashlib.sha256(out).hexdigest() != manifest["sha256"]:
        raise CheckpointError(f"checkpoint {cid}: the whole image does not match its sha256")
    return bytes(out)


