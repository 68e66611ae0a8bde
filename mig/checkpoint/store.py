"""Checkpoints: CRIU images of a replica's app, stored in ``mig.NAME.checkpoints``.

Taking one (on a hot replica, so the primary never stalls; ``Replayer._checkpoint``):

1. the replay worker stops feeding at a cut: every record it has read is in the rings and
   every process has taken its last one and sleeps in the shim waiting for the next (its
   ring is empty and it counts as a waiter). Nothing the app does then changes its state;
2. ``criu dump --leave-running`` of the app's process tree (the shim's channel is a mapped
   file, which CRIU keeps as a file mapping: nothing to close);
3. the images, the ring files and the app's working folder (its ``state_dir`` lives there)
   go into one gzip'd tar; then feeding resumes;
4. the archive is cut into chunks well under the topic's message size and written with a
   ``CheckpointManifest`` (the calls offsets of the cut, the last sequence number and batch
   number per process, sizes and SHA-256 of every chunk and of the whole, CRIU and kernel
   versions, the app identity, the paths) in one Kafka transaction;
5. checkpoints beyond the newest ``keep`` are tombstoned (manifest and chunks, so
   compaction reclaims them) and the calls records before the oldest kept checkpoint's
   offsets are deleted (AdminClient ``delete_records``).

Restoring one (a replica that starts late, ``restore``): pick the newest manifest this host
can restore (CRIU not older than the image's, same major; same kernel release series),
fetch and verify its chunks, unpack, and run ``criu restore`` under the app's holder
(mig/member/holder.py), in a new pid and mount namespace where this member's folders are mounted
at the paths the image names, so it can run beside other members on one machine. The
worker then attaches to the rings and replays from the manifest's offsets.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import platform
import shutil
import subprocess
import tarfile
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from mig.errors import MigError
from mig.kafka.clients import KafkaSettings, consumer, quick_start
from mig.kafka.topics import topic_names
from mig.kafka.writer import LogWriter
from mig.member.holder import HeldApp
from mig.wire.auth import authentic

__all__ = ["Archive", "CheckpointError", "compatible", "dump_app", "fetch_checkpoint",
           "list_manifests", "pack", "request_checkpoint", "restore_app", "stage",
           "store_checkpoint", "unpack"]

log = structlog.get_logger("mig.checkpoint")

CHUNK_BYTES = 256 * 1024


class CheckpointError(MigError):
    """A checkpoint cannot be taken, stored, fetched or restored."""


@dataclass
class Archive:
    data: bytes
    dump_ms: int


def dump_app(pid: int, images: Path, holder: int) -> None:
    """``criu dump --leave-running`` of the process tree rooted at ``pid``.

    Every app runs in its holder's pid and mount namespaces (mig/member/holder.py; a restored one
    under the pids it had when it was dumped); CRIU dumps a subtree only from inside its pid
    namespace, so CRIU runs there (``nsenter``: ``holder`` is the host pid of the
    namespace's init) and ``pid`` is the app's pid in that namespace. The image of a
    restored app then names the same pids and paths as the one it was restored from."""
    from mig.checkpoint.criu import find_criu

    criu = find_criu()
    images.mkdir(parents=True, exist_ok=True)
    cmd = criu.argv("dump", "-t", str(pid), "-D", str(images), "--leave-running",
                    "-o", "dump.log", "-v2")
    cmd = ["nsenter", "-t", str(holder), "--pid", "--mount", *cmd]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if run.returncode != 0:
        tail = _log_tail(images / "dump.log")
        raise CheckpointError(f"criu dump of pid {pid} failed (exit {run.returncode}): {tail}")


def pack(images: Path, workdir: Path, run_dir: Path) -> bytes:
    """One gzip'd tar: ``images/``, ``work/`` (the app's folder), ``run/`` (the rings)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=3, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        tar.add(images, arcname="images")
        tar.add(workdir, arcname="work")
        for ring in sorted(run_dir.glob("*.ring")):
            tar.add(ring, arcname=f"run/{ring.name}")
    return buf.getvalue()


def stage(workdir: Path, run_dir: Path, dest: Path) -> None:
    """Copy the app's folder and the rings as they are at the dump (``dest/work``,
    ``dest/run``), so compressing them can wait until the app runs again."""
    shutil.copytree(workdir, dest / "work", symlinks=True)
    (dest / "run").mkdir(parents=True)
    for ring in run_dir.glob("*.ring"):
        shutil.copy2(ring, dest / "run" / ring.name)


def unpack(data: bytes, images: Path, workdir: Path, run_dir: Path) -> None:
    for folder in (images, workdir, run_dir):
        folder.mkdir(parents=True, exist_ok=True)
    try:
        raw = gzip.decompress(data)
        tar = tarfile.open(fileobj=io.BytesIO(raw), mode="r")
        members = tar.getmembers()  # reads every header: a damaged one raises here
    except (OSError, EOFError, tarfile.TarError, zlib.error) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"the archive is truncated or not a checkpoint ({first})") from exc
    with tar:
        for member in members:
            top, _, rest = member.name.partition("/")
            dest = {"images": images, "work": workdir, "run": run_dir}.get(top)
            if dest is None or ".." in Path(rest).parts:
                raise CheckpointError(f"unexpected entry in the checkpoint: {member.name}")
            if not rest:
                continue
            member.name = rest
            try:
                tar.extract(member, dest, filter="tar")
            except (OSError, EOFError, tarfile.TarError) as exc:
                raise CheckpointError(f"the archive is truncated or damaged at {rest}"
                                      f" ({exc})") from exc


def _kernel() -> str:
    return platform.release()


def compatible(manifest: dict[str, Any], criu_version: str, kernel: str) -> str | None:
    """Why this host cannot restore ``manifest`` (None: it can). CRIU must be the same major
    version and not older than the one that dumped; the kernel the same release series."""
    def nums(text: str) -> tuple[int, ...]:
        out = []
        for part in text.split("."):
            digits = "".join(ch for ch in part if ch.isascii() and ch.isdigit())
            if not digits or len(digits) > 9:  # not a version number (int() refuses 4300)
                break
            out.append(int(digits))
        return tuple(out)

    theirs, ours = nums(manifest["criu_version"]), nums(criu_version)
    if not theirs or not ours or theirs[0] != ours[0] or ours < theirs:
        return (f"the image was dumped by CRIU {_shown(manifest['criu_version'])}, this host"
                f" has CRIU {_shown(criu_version) or 'unknown'}")
    if nums(manifest["kernel"])[:2] != nums(kernel)[:2]:
        return (f"the image was dumped on kernel {_shown(manifest['kernel'])}, this host runs"
                f" {_shown(kernel)}")
    return None


def _shown(text: str, limit: int = 60) -> str:
    """A manifest's text in a message: one line, at most ``limit`` characters."""
    text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        "criu_version": find_criu().version, "kernel": _kernel(),
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
    from confluent_kafka import KafkaError, TopicPartition

    from mig.errors import DecodeError
    from mig.wire.codec import Codec

    codec = Codec.default()
    topic = topic_names(app)["checkpoints"]
    cons = consumer(settings, **{"group.id": f"mig-checkpoints-{app}",
                                 "isolation.level": "read_committed",
                                 "fetch.message.max.bytes": 4 << 20,
                                 # the end of a partition is known from a fetch the broker
                                 # answers: at its default (500 ms) an empty or read-to-the-end
                                 # topic held every listing (mig status) half a second
                                 "fetch.wait.max.ms": 20, **quick_start(settings)})
    try:
        parts = _partitions(cons, topic)
        if not parts:
            return []
        begin = start(parts)
        cons.assign([TopicPartition(topic, p, o) for p, o in begin.items()])
        done: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(done) < len(begin):
            if time.monotonic() > deadline:
                raise CheckpointError(f"reading {topic} made no progress for {timeout:g} s")
            msgs = cons.consume(500, 0.02)  # (a batch waits its whole timeout unless full)
            if msgs:  # a large checkpoint on a busy host may take long: wait for progress
                deadline = time.monotonic() + timeout
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        done.add(msg.partition())
                    continue
                key = (msg.key() or b"").decode(errors="replace")
                if not accept(key) or not authentic(settings.auth, "checkpoints", msg,
                                                    "mig.checkpoint"):
                    continue  # (a chunk when listing manifests is not even decoded)
                if msg.value() is None:
                    on_record(key, None, None)
                    continue
                try:
                    name, rec = codec.decode_message(msg.value(), msg.headers())
                except DecodeError as exc:
                    log.warning("mig.checkpoint.undecodable", offset=msg.offset(),
                                reason=exc.reason)
                    continue
                on_record(key, name, rec)
    finally:
        cons.close()
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


def request_checkpoint(settings: KafkaSettings, app: str, timeout: float = 60.0
                       ) -> dict[str, Any]:
    """Ask for a checkpoint now (a CheckpointRequest in mig.NAME.control) and wait for its
    manifest, which is returned. A member that cannot take it answers with a RequestFailed:
    raises MigError with its reason at once; with no answer, after ``timeout`` seconds."""
    import getpass
    import socket

    from mig.ops.migrate import answers, request_reader

    cons = request_reader(settings, app, "checkpoint", primary=False, committed=True)
    try:
        asked = int(time.time() * 1000)
        event = str(uuid.uuid4())
        writer = LogWriter(settings, app)
        writer.send("control", "mig.log.CheckpointRequest", {
            "app": app, "event_id": event, "reason": "mig checkpoint",
            "requested_by": f"{getpass.getuser()}@{socket.gethostname()}", "ts_ms": asked},
            key=event)
        writer.commit()
        deadline = time.monotonic() + timeout
        next_look = 0.0
        while time.monotonic() < deadline:
            for _ in answers(cons, settings, app, event, "mig.checkpoint"):
                pass  # only a RequestFailed for this request matters here (it raises)
            if time.monotonic() >= next_look:
                fresh = [m for m in list_manifests(settings, app) if m["created_ms"] >= asked]
                if fresh:
                    return fresh[-1]
                next_look = time.monotonic() + 0.5
    finally:
        cons.close()
    raise MigError(f"no checkpoint of {app} within {timeout:g} s: does a replica follow it,"
                   " or its primary run, with [checkpoints] enabled (and when_alone) and CRIU"
                   " (see mig status and mig doctor)?")


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


def restore_app(images: Path, root_pid: int, binds: list[tuple[Path, Path]],
                log_file: Path, stdin: tuple[Any, int] | None = None) -> HeldApp:
    """Restore the image under its holder (mig/member/holder.py): in a new pid and mount
    namespace, bind ``binds`` (here -> image's path), ``criu restore``; the holder's init
    stays until the app's first process ends, and the whole namespace ends with this
    agent. Returns the holder (its signals reach the app, its exit is the app's).

    ``stdin``: (this host's stdin pipe, the inode of the pipe the image's app had as its
    stdin): CRIU gives every fd of the app that was that pipe this host's pipe instead
    (``--inherit-fd``; the pipe is criu's own stdin, passed down by the holder)."""
    from mig.checkpoint.criu import find_criu
    from mig.member.holder import HolderError
    from mig.member.holder import start as start_held

    criu = find_criu().argv()
    held_stdin: Any = subprocess.DEVNULL
    if stdin is not None and stdin[1]:
        criu += ["--inherit-fd", f"fd[0]:pipe:[{stdin[1]}]"]
        held_stdin = stdin[0].read_fd
    # at this agent's priority, not the one dumped (a primary's checkpointer runs niced)
    spec = {"mode": "restore", "images": str(images), "root_pid": root_pid,
            "criu": criu, "binds": [[str(a), str(b)] for a, b in binds],
            "nice": os.getpriority(os.PRIO_PROCESS, 0)}
    try:
        return start_held(spec, images / "restored", log_file, held_stdin)
    except HolderError as exc:
        raise CheckpointError(f"criu restore failed: {_log_tail(images / 'restore.log')}"
                              f" ({exc})") from exc


def _log_tail(path: Path, lines: int = 4) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    # (CRIU's complaint about RLIMIT_NOFILE is harmless and would hide the cause)
    errors = [line.strip() for line in text if ("Error" in line or "error" in line)
              and "RLIMIT_NOFILE" not in line]
    return " | ".join((errors or text)[-lines:])
