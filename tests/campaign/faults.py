"""The faults. Each takes the app under load and a random source, injects one fault with
randomised timing, undoes what it did to the world (a link, a broker, a pause) and returns
what it observed. Restarting members that died is the runner's job (``heal``), the same for
every fault, as an operator's supervisor would do it.

Every wait is bounded; nothing here loops without a deadline.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from mig.checkpoint.local import folder_bytes
from tests.campaign.world import App, Member, wait_for

# the Avro single-object marker: garbage that starts like a record, to reach the decoder
_AVRO_MAGIC = b"\xc3\x01"


def _sleep(rng: random.Random, low: float, high: float) -> float:
    seconds = rng.uniform(low, high)
    time.sleep(seconds)
    return round(seconds, 3)


def _mig(app: App, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mig", "--log-format", "json", *args,
                           "--config", str(app.app_toml)],
                          capture_output=True, text=True, timeout=timeout)


def _said(run: subprocess.CompletedProcess[str] | None) -> str:
    """The last line a command printed (its result or its error)."""
    if run is None:
        return "(did not end)"
    lines = (run.stdout + run.stderr).strip().splitlines()
    return f"exit {run.returncode}: {lines[-1][:200] if lines else ''}"


def kill_primary(app: App, rng: random.Random) -> dict:
    """kill -9 of the primary's whole host (mig and the app) at a random moment of the
    steady write load: mid-call, mid-barrier or between them."""
    primary = app.primary()
    after = _sleep(rng, 0.0, 1.5)
    app.kill_host(primary.host)
    return {"killed": primary.name, "after_s": after}


def pause_primary(app: App, rng: random.Random) -> dict:
    """SIGSTOP of the primary's host past the failover timeout, then SIGCONT: it must find
    itself fenced and stop its app without acknowledging anything more."""
    primary = app.primary()
    app.kill_host(primary.host, signal.SIGSTOP)
    paused = _sleep(rng, 2.5, 5.0)
    app.kill_host(primary.host, signal.SIGCONT)
    return {"paused": primary.name, "paused_s": paused}


def isolate_primary(app: App, rng: random.Random) -> dict:
    """The primary's host cut off from the brokers, not from the clients."""
    primary = app.primary()
    app.world.isolate(primary.host, cut=True)
    try:
        cut = _sleep(rng, 3.0, 6.0)
    finally:
        app.world.isolate(primary.host, cut=False)
    return {"isolated": primary.name, "cut_s": cut}


def degrade_primary_link(app: App, rng: random.Random) -> dict:
    """The primary's link throttled both ways (queueing delay and drops)."""
    primary = app.primary()
    rate = rng.choice(["100kbit", "200kbit", "400kbit"])
    app.world.shape(primary.host, on=True, rate=rate)
    try:
        held = _sleep(rng, 3.0, 8.0)
    finally:
        app.world.shape(primary.host, on=False)
    return {"degraded": primary.name, "rate": rate, "held_s": held}


def _bounce_broker(app: App, rng: random.Random, node: int) -> dict:
    cluster = app.world.cluster
    assert cluster is not None
    cluster.kill(node)
    down = _sleep(rng, 2.0, 6.0)
    cluster.restart(node)
    cluster.wait_brokers(3, timeout=90)
    return {"broker": node, "down_s": down}


def kill_broker(app: App, rng: random.Random) -> dict:
    """One of the three brokers killed (-9) and restarted (min.insync.replicas 2 holds)."""
    return _bounce_broker(app, rng, rng.randint(1, 3))


def kill_calls_leader(app: App, rng: random.Random) -> dict:
    """The broker that leads the calls partition killed and restarted."""
    cluster = app.world.cluster
    assert cluster is not None
    return _bounce_broker(app, rng, cluster.wait_leader(f"mig.{app.name}.calls"))


def kill_replica(app: App, rng: random.Random) -> dict:
    """A hot replica killed (-9) in the middle of replaying."""
    victim = rng.choice(app.replicas())
    after = _sleep(rng, 0.0, 1.0)
    app.kill_host(victim.host)
    return {"killed": victim.name, "after_s": after}


def kill_replica_checkpointing(app: App, rng: random.Random) -> dict:
    """A checkpoint requested, and the replicas killed at a random moment of it (the dump,
    the upload of its chunks, or the manifest); the next checkpoint must still work."""
    out: dict = {}
    thread = threading.Thread(target=lambda: out.update(run=_mig(app, "checkpoint", app.name)))
    thread.start()
    after = _sleep(rng, 0.05, 1.0)  # a checkpoint of this app takes about a second
    victims = app.replicas()
    for m in victims:
        app.kill_host(m.host)
    thread.join(120)
    return {"killed": [m.name for m in victims], "after_s": after,
            "checkpoint": _said(out.get("run"))}


def kill_replica_restoring(app: App, rng: random.Random) -> dict:
    """A replica restarted (it restores the newest checkpoint) and killed while starting."""
    victim = rng.choice(app.replicas())
    app.kill_host(victim.host)
    victim.proc.wait(30)
    fresh = app.start_replica(victim.host)
    after = _sleep(rng, 0.2, 3.0)
    app.kill_host(fresh.host)
    restored = "mig.replayer.restored" in fresh.log.read_text(errors="replace")
    return {"killed": fresh.name, "after_s": after, "had_restored": restored}


def clock_offset_replica(app: App, rng: random.Random) -> dict:
    """A replica restarted in a time namespace whose monotonic and boot clocks are days
    ahead, then the primary killed: whoever takes over, nothing is lost. (A time namespace
    cannot move the wall clock, and the machine's own clock is never changed.)"""
    victim = rng.choice(app.replicas())
    app.kill_host(victim.host)
    victim.proc.wait(30)
    offset = rng.randint(3_600, 3_000_000)
    fresh = app.start_replica(victim.host, wrap=["unshare", "--time", "--fork", "--monotonic",
                                                 str(offset), "--boottime", str(offset)])
    app.wait_hot(120)
    primary = app.primary()
    _sleep(rng, 0.0, 1.0)
    app.kill_host(primary.host)
    return {"offset_s": offset, "offset_member": fresh.name, "killed": primary.name}


def disk_full_replica(app: App, rng: random.Random) -> dict:
    """A replica whose state folder is a small file system, filled up under load."""
    victim = rng.choice(app.replicas())
    app.kill_host(victim.host)
    victim.proc.wait(30)
    mnt = app.folder / f"small-h{victim.host}g{app.gens[victim.host] + 1}"
    mnt.mkdir()
    # room for the app's folder as it has grown (a replica restored into a file system it
    # nearly fills cannot write its next DUMP once the filler is gone, and diverges rounds
    # later, "ERR dump: No space left on device"), filled up whole below
    others = [m.workdir for m in app.members.values() if m is not victim
              and m.workdir != app.folder]  # (the first primary's is the whole app's)
    size_mb = 64 + 3 * (max((folder_bytes(w) for w in others), default=0) >> 20)
    # (mode 0755 like the folders it replaces: CRIU refuses to restore a process whose
    # working directory changed its mode)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs",
                    str(mnt)], check=True)
    app.mounts.append(mnt)
    fresh = app.start_replica(victim.host, workdir=mnt)
    app.wait_hot(120)
    filler = mnt / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M", f"count={size_mb}"],
                   capture_output=True)
    held = _sleep(rng, 2.0, 5.0)
    status = app.statuses().get(fresh.name, {}).get("health")
    filler.unlink()
    return {"member": fresh.name, "full_s": held, "health_when_full": status,
            "alive_when_freed": fresh.alive()}


def migrate_race(app: App, rng: random.Random) -> dict:
    """Two `mig migrate` commands to different replicas at once."""
    targets = [m.name for m in app.replicas()]
    runs: dict[str, subprocess.CompletedProcess[str]] = {}

    def go(target: str) -> None:
        runs[target] = _mig(app, "migrate", app.name, "--to", target, "--timeout", "30")

    threads = [threading.Thread(target=go, args=(t,)) for t in targets]
    for t in threads:
        t.start()
        time.sleep(rng.uniform(0, 0.05))
    for t in threads:
        t.join(120)
    return {"targets": targets, "said": {t: _said(r) for t, r in runs.items()}}


def failover_during_migrate(app: App, rng: random.Random) -> dict:
    """`mig migrate` started, and the primary's host killed during the handoff."""
    primary = app.primary()
    target = rng.choice(app.replicas()).name
    out: dict = {}
    thread = threading.Thread(
        target=lambda: out.update(run=_mig(app, "migrate", app.name, "--to", target,
                                           "--timeout", "30")))
    thread.start()
    after = _sleep(rng, 0.0, 0.4)
    app.kill_host(primary.host)
    thread.join(120)
    return {"target": target, "killed": primary.name, "after_s": after,
            "migrate": _said(out.get("run"))}


def _rss_kb(pid: int) -> tuple[str, int]:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return cmd, int(line.split()[1])
    except (OSError, ValueError):
        pass
    return "", 0


def overload(app: App, rng: random.Random) -> dict:
    """A flood of writers beyond what the primary commits: barriers slow the clients down,
    memory stays bounded (peak RSS of mig and of the app, on the primary's host and on the
    replicas'), and every acknowledged write is kept (the runner checks the flood's acks
    like the others)."""
    primary = app.primary()
    writers = rng.randint(6, 12)
    seconds = rng.uniform(6, 10)
    base = len(app.writers)
    for i in range(writers):
        app.start_writer(f"f{base}x{i}", interval_s=0.0, deadline_s=seconds)
    peak = {"primary_mig": 0, "primary_app": 0, "replica_mig": 0, "replica_app": 0}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for m in app.members.values():
            side = "primary" if m is primary else "replica"
            for pid in app.world.net.pids(m.host):
                cmd, rss = _rss_kb(pid)
                kind = "mig" if " -m mig " in cmd else "app" if "kvserver" in cmd else ""
                if kind:
                    peak[f"{side}_{kind}"] = max(peak[f"{side}_{kind}"], rss)
        time.sleep(0.2)
    for thread, _, _ in app.writers[base:]:
        thread.join(30)
    acked = sum(o["report"].acked for _, _, o in app.writers[base:] if "report" in o)
    return {"writers": writers, "seconds": round(seconds, 1), "flood_acked": acked,
            "peak_rss_mib": {k: round(v / 1024, 1) for k, v in peak.items()}}


def _topic_records(app: App, role: str, limit: int = 50) -> list:
    assert app.world.cluster is not None
    consumer = Consumer({**app.world.cluster.settings.as_librdkafka_dict(),
                         "group.id": f"campaign-{os.getpid()}", "enable.auto.commit": False,
                         "isolation.level": "read_committed"})
    try:
        topic = f"mig.{app.name}.{role}"
        consumer.assign([TopicPartition(topic, 0, 0)])
        out = []
        deadline = time.monotonic() + 10
        while len(out) < limit and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                if out:
                    break
                continue
            if msg.error() is None:
                out.append(msg)
        return out
    finally:
        consumer.close()


def _newest_checkpoint(app: App) -> str:
    ids = [m.key().decode().split("/", 1)[1] for m in _topic_records(app, "checkpoints")
           if (m.key() or b"").startswith(b"manifest/") and m.value() is not None]
    return max(ids, default="0000000000000-00000000")


def hostile(app: App, rng: random.Random) -> dict:
    """A foreign producer (no keys) writes into one of the app's topics: garbage, a record
    that starts like Avro, an oversized record, or a signed record copied from the log
    (a replayed batch, an old epoch's control record). Members must refuse or ignore it,
    say so, and go on."""
    assert app.world.cluster is not None
    # every (topic, kind) pair in turn, so a dozen rounds cover them all
    role, kind = _HOSTILE[hostile.rounds % len(_HOSTILE)]  # type: ignore[attr-defined]
    hostile.rounds += 1  # type: ignore[attr-defined]
    topic = f"mig.{app.name}.{role}"
    producer = Producer(app.world.cluster.settings.as_librdkafka_dict())
    sent = 0
    if kind == "replayed":
        old = _topic_records(app, role)
        for msg in rng.sample(old, min(3, len(old))):
            producer.produce(topic, value=msg.value(), key=msg.key(),
                             headers=msg.headers() or [], partition=msg.partition())
            sent += 1
    else:
        for _ in range(rng.randint(1, 5)):
            size = 900_000 if kind == "oversized" else rng.randint(1, 300)
            body = os.urandom(size)
            if kind == "avro-like":
                body = _AVRO_MAGIC + os.urandom(8) + body
            key = os.urandom(rng.randint(0, 16))
            if role == "checkpoints":  # keys of real checkpoints: a forged manifest, or a
                # chunk of the newest checkpoint written again with other bytes
                key = rng.choice([f"manifest/9999999999999-{os.urandom(4).hex()}",
                                  f"{_newest_checkpoint(app)}/000000"]).encode()
            producer.produce(topic, value=body, key=key,
                             partition=1 if key.startswith(b"1") else 0)
            sent += 1
    left = producer.flush(30)
    time.sleep(rng.uniform(1.0, 3.0))
    alive = {m.name: m.alive() for m in app.members.values()}
    return {"topic": role, "kind": kind, "sent": sent - left, "alive_after": alive}


_HOSTILE = [(role, kind) for kind in ("replayed", "garbage", "avro-like", "oversized")
            for role in ("calls", "control", "checkpoints")]
hostile.rounds = 0  # type: ignore[attr-defined]

# -- members that live and die together (docs/failover.md, "Who ends the app")


def _left_on(app: App, host: int, timeout: float = 15.0) -> list[str]:
    """What still runs on ``host`` ``timeout`` seconds after its member's agent ended: one
    member per host, so nothing may (its app, restored or not, ends with it)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = app.world.net.pids(host)
        if not pids or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    left = []
    for pid in pids:
        try:
            left.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                        .decode(errors="replace").strip()[:120])
        except OSError:
            pass
    return [c for c in left if c]


def _restored_primary(app: App, rng: random.Random) -> tuple[Member, dict]:
    """A replica restarted from the newest checkpoint (one is taken first), then made the
    primary by `mig migrate`: the member the issue found outliving its agent."""
    ck = _mig(app, "checkpoint", app.name)
    victim = rng.choice(app.replicas())
    app.kill_host(victim.host)
    victim.proc.wait(30)
    fresh = app.start_replica(victim.host)
    wait_for(lambda: "mig.replayer.restored" in fresh.log.read_text(errors="replace"), 90,
             f"{fresh.name} to restore the checkpoint")
    app.wait_hot(120)
    run = _mig(app, "migrate", app.name, "--to", fresh.name, "--timeout", "30")
    wait_for(lambda: app.primary() is fresh, 30, f"{fresh.name} to be the primary")
    return fresh, {"checkpoint": _said(ck), "migrate": _said(run), "primary": fresh.name}


def kill_restored_primary(app: App, rng: random.Random) -> dict:
    """kill -9 of the agent alone of a primary restored from a checkpoint: its app (under
    CRIU's restore, in the holder's namespace) must end with it, and a replica take over."""
    primary, facts = _restored_primary(app, rng)
    after = _sleep(rng, 0.0, 1.0)
    os.kill(primary.agent_pid(), signal.SIGKILL)
    left = _left_on(app, primary.host)
    facts.update(after_s=after, problems=[f"{primary.name}'s agent was killed and this still"
                                          f" runs on its host: {c}" for c in left])
    return facts


def term_restored_primary(app: App, rng: random.Random) -> dict:
    """SIGTERM to a primary restored from a checkpoint: it hands the app to a hot replica
    (or stops it) and ends, and nothing of it stays behind."""
    primary, facts = _restored_primary(app, rng)
    after = _sleep(rng, 0.0, 1.0)
    os.kill(primary.agent_pid(), signal.SIGTERM)
    try:
        primary.proc.wait(60)
    except subprocess.TimeoutExpired:
        facts["problems"] = [f"{primary.name} still runs 60 s after SIGTERM"]
        return facts
    left = _left_on(app, primary.host)
    facts.update(after_s=after, exit=primary.proc.returncode,
                 problems=[f"{primary.name} ended on SIGTERM and this still runs on its"
                           f" host: {c}" for c in left])
    return facts


def kill_replica_agent(app: App, rng: random.Random) -> dict:
    """kill -9 of a replica's agent alone: its replaying app must go too."""
    victim = rng.choice(app.replicas())
    after = _sleep(rng, 0.0, 1.0)
    os.kill(victim.agent_pid(), signal.SIGKILL)
    left = _left_on(app, victim.host)
    return {"killed": victim.name, "after_s": after,
            "problems": [f"{victim.name}'s agent was killed and this still runs on its"
                         f" host: {c}" for c in left]}


def promotion_cannot_bind(app: App, rng: random.Random) -> dict:
    """One replica's host has the app's port taken by another program; the primary's host
    is killed. Whichever replica wins: one that cannot listen fails its promotion (exit 5,
    no Promotion) and another takes over; the app must end up served."""
    blocked = rng.choice(app.replicas())
    # SO_REUSEADDR: the host may have been the primary, its clients' connections still in
    # TIME_WAIT; a second listener on the port is refused all the same
    probe = ("import socket, time; s = socket.socket();"
             " s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1);"
             f" s.bind(('0.0.0.0', {app.port})); s.listen(); print('bound', flush=True);"
             " time.sleep(120)")
    blocker = subprocess.Popen(app.world.net.wrap(blocked.host, [sys.executable, "-c", probe]),
                               stdout=subprocess.PIPE, text=True)
    try:
        said = blocker.stdout.readline().strip() if blocker.stdout is not None else ""
        assert said == "bound", f"the port could not be taken on {blocked.name}'s host"
        primary = app.primary()
        after = _sleep(rng, 0.0, 1.0)
        app.kill_host(primary.host)

        def served() -> Member | None:
            p = app.primary()
            return p if p is not primary and p.alive() else None

        winner = wait_for(served, 60, "a new primary")
        failed = not blocked.alive() and blocked.proc.returncode == 5
    finally:
        blocker.kill()
        blocker.wait(10)
    return {"blocked": blocked.name, "killed": primary.name, "after_s": after,
            "promoted": winner.name, "blocked_failed_promotion": failed,
            "problems": [] if winner is not blocked else
            [f"{blocked.name} was announced primary though its port was taken"]}


FAULTS = {
    "kill-primary": kill_primary,
    "pause-primary": pause_primary,
    "isolate-primary": isolate_primary,
    "degrade-primary-link": degrade_primary_link,
    "kill-broker": kill_broker,
    "kill-calls-leader": kill_calls_leader,
    "kill-replica": kill_replica,
    "kill-replica-checkpointing": kill_replica_checkpointing,
    "kill-replica-restoring": kill_replica_restoring,
    "clock-offset-replica": clock_offset_replica,
    "disk-full-replica": disk_full_replica,
    "migrate-race": migrate_race,
    "failover-during-migrate": failover_during_migrate,
    "overload": overload,
    "hostile": hostile,
    "kill-restored-primary": kill_restored_primary,
    "term-restored-primary": term_restored_primary,
    "kill-replica-agent": kill_replica_agent,
    "promotion-cannot-bind": promotion_cannot_bind,
}

__all__ = ["FAULTS", "wait_for"]
