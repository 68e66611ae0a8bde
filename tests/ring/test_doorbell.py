"""mig/ring/doorbell.py and the shim's side of it (shim/src/mig_record.c ring_doorbell):
the agent sleeps until a doorbell rings, and no ring is missed."""

from __future__ import annotations

import ctypes
import os
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from mig.paths import shim_library
from mig.ring.doorbell import Doorbells
from mig.ring.memory import Ring, futex_wake
from tests.ring.support import drain, new_ring


def bump(ring: Ring, wake: bool) -> None:
    """What a thread of the app does (mig_record.c ring_doorbell)."""
    address, value = ring.doorbell
    ctypes.c_uint32.from_address(address).value = (value + 1) & 0xFFFFFFFF
    if wake:
        futex_wake(address)


def timed_wait(bells: Doorbells, seen: Any, rings: list[Ring],
               timeout: float) -> float:
    started = time.monotonic()
    bells.wait(seen, rings, timeout)
    return time.monotonic() - started


def test_a_bump_after_the_snapshot_ends_the_wait_at_once(tmp_path: Path) -> None:
    ring = new_ring(tmp_path / "1.ring")
    bells = Doorbells()
    seen = bells.snapshot([ring])
    bump(ring, wake=False)  # rung while the agent was busy: no wake-up call
    assert timed_wait(bells, seen, [ring], 5.0) < 1.0
    ring.close()


def test_a_sleeping_agent_is_woken_by_the_app_and_by_its_own_thread(tmp_path: Path) -> None:
    ring = new_ring(tmp_path / "1.ring")
    bells = Doorbells()
    flags: list[int] = []

    def app() -> None:
        time.sleep(0.3)
        flags.append(struct.unpack_from("<I", ring.mm, 540)[0])  # agent_sleeping
        bump(ring, wake=True)

    threading.Thread(target=app).start()
    assert 0.2 < timed_wait(bells, bells.snapshot([ring]), [ring], 5.0) < 2.0
    assert flags == [1] and struct.unpack_from("<I", ring.mm, 540)[0] == 0
    threading.Timer(0.3, bells.ring).start()  # the acknowledgement thread
    assert 0.2 < timed_wait(bells, bells.snapshot([ring]), [ring], 5.0) < 2.0
    ring.close()


def test_nothing_rings_the_wait_ends_at_its_timeout(tmp_path: Path) -> None:
    ring = new_ring(tmp_path / "1.ring")
    bells = Doorbells()
    assert 0.25 <= timed_wait(bells, bells.snapshot([ring]), [ring], 0.3) < 2.0
    ring.close()


def test_the_shim_rings_at_every_barrier(tmp_path: Path) -> None:
    """A program under the shim alone in sync mode (a barrier after every call), this test
    playing the agent: it commits what each barrier waits for. The shim rang the doorbell
    for those barriers."""
    env = dict(os.environ, LD_PRELOAD=str(shim_library()), MIG_MODE="record",
               MIG_BARRIER="sync", MIG_RUN_DIR=str(tmp_path), MIG_LPID="1")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.time(); time.time()"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    ring = None
    barriers = 0
    while proc.poll() is None and time.monotonic() < deadline:
        if ring is None and (tmp_path / "1.ring").exists():
            time.sleep(0.05)  # (its header written)
            ring = Ring(tmp_path / "1.ring")
        if ring is not None and ring.barrier_seq > ring.committed_seq:
            barriers += 1
            ring.release(ring.head)
            ring.commit(ring.barrier_seq)
        time.sleep(0.001)
    assert proc.wait(10) == 0, proc.stderr.read() if proc.stderr else ""
    assert ring is not None and barriers > 0
    rung = ring.doorbell[1]
    assert rung >= barriers, (rung, barriers)
    ring.close()


TWO_WRITERS = r"""
#include <pthread.h>
#include <time.h>
static void *run(void *arg)
{
    struct timespec ts;
    for (int i = 0; i < 20000; i++)
        clock_gettime(CLOCK_MONOTONIC, &ts);
    return arg;
}
int main(void)
{
    pthread_t t;
    pthread_create(&t, 0, run, 0);
    run(0);
    pthread_join(t, 0);
    return 0;
}
"""


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_threads_waiting_for_room_sleep_instead_of_spinning(tmp_path: Path) -> None:
    """Two threads record into a 64 KiB ring that the agent (this test) leaves full for a
    second: both wait for room, neither spins on the ring's lock while the other waits (the
    CPU the app burns meanwhile is a fraction of a core), and every call is recorded once
    the agent drains again."""
    source = tmp_path / "two.c"
    source.write_text(TWO_WRITERS)
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(tmp_path / "two"), str(source)],
                   check=True)
    env = dict(os.environ, LD_PRELOAD=str(shim_library()), MIG_MODE="record",
               MIG_BARRIER="async", MIG_RUN_DIR=str(tmp_path), MIG_LPID="1",
               MIG_THREADS="parallel", MIG_RING_BYTES="65536")
    proc = subprocess.Popen([str(tmp_path / "two")], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "1.ring").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # the ring is full by now: both threads wait for room
        ring = Ring(tmp_path / "1.ring")
        assert ring.head - ring.tail > ring.capacity - 4096
        before = _cpu_s(proc.pid)
        time.sleep(1.0)
        stalled = _cpu_s(proc.pid) - before
        calls = 0
        while proc.poll() is None and time.monotonic() < deadline:
            calls += len(drain(ring))
            time.sleep(0.001)
        calls += len(drain(ring))
        assert proc.wait(10) == 0, proc.stderr.read() if proc.stderr else ""
        assert stalled < 0.3, f"{stalled:.2f} s of CPU while waiting for room"
        assert calls >= 40000
        ring.close()
    finally:
        proc.kill()
        proc.wait()


HALF_THEN_SLEEP = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv)
{
    struct timespec ts;
    int n = atoi(argv[1]);
    for (int i = 0; i < n; i++)
        clock_gettime(CLOCK_MONOTONIC, &ts);
    printf("done\n");
    fflush(stdout);
    sleep(30);
    return 0;
}
"""


def test_the_shim_rings_when_a_ring_passes_half_full(tmp_path: Path) -> None:
    """In async mode no barrier rings, and an agent that lets records gather (it waits
    ASYNC_PACE_S after a turn that sent some) must still hear of a ring filling up before
    the app has to wait for room: the shim rings once the ring passes half full. A program
    fills a 64 KiB ring (nobody drains it) to between half and full, then sleeps."""
    source = tmp_path / "half.c"
    source.write_text(HALF_THEN_SLEEP)
    subprocess.run(["gcc", "-O2", "-o", str(tmp_path / "half"), str(source)], check=True)
    env = dict(os.environ, LD_PRELOAD=str(shim_library()), MIG_MODE="record",
               MIG_BARRIER="async", MIG_RUN_DIR=str(tmp_path), MIG_LPID="1",
               MIG_RING_BYTES="65536")
    record = 0
    for calls in (10, 0):  # the size of one record first, then calls to reach 3/4 full
        if calls == 0:
            calls = (65536 * 3 // 4) // record
        proc = subprocess.Popen([str(tmp_path / "half"), str(calls)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "done\n"
            ring = Ring(tmp_path / "1.ring")
            used, rung = ring.head - ring.tail, ring.doorbell[1]
            ring.close()
        finally:
            proc.kill()
            proc.wait()
        if record == 0:
            record = used // calls  # (the program's own start-up calls make it larger)
            assert rung == 0, "rung below half full"
    assert 65536 // 2 < used < 65536, used
    assert rung >= 1, "not rung past half full"


SLEEP_THEN_CALL = r"""
#include <time.h>
#include <unistd.h>
int main(void)
{
    struct timespec ts;
    sleep(2);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    sleep(30);
    return 0;
}
"""


def test_an_idle_agent_is_woken_by_the_first_record_appended(tmp_path: Path) -> None:
    """An idle agent sleeps deep, until its next timer (mig/member/primary.py): the app's
    first record after it wakes it, though it raises no barrier (async mode). A program
    sleeps 2 s, then makes one call; the agent's deep wait of 20 s ends with that call."""
    source = tmp_path / "late.c"
    source.write_text(SLEEP_THEN_CALL)
    subprocess.run(["gcc", "-O2", "-o", str(tmp_path / "late"), str(source)], check=True)
    env = dict(os.environ, LD_PRELOAD=str(shim_library()), MIG_MODE="record",
               MIG_BARRIER="async", MIG_RUN_DIR=str(tmp_path), MIG_LPID="1")
    started = time.monotonic()
    proc = subprocess.Popen([str(tmp_path / "late")], env=env, stderr=subprocess.PIPE)
    try:
        while not (tmp_path / "1.ring").exists() and time.monotonic() < started + 30:
            time.sleep(0.01)
        time.sleep(0.5)  # (its header written, the program in its first sleep)
        ring = Ring(tmp_path / "1.ring")
        bells = Doorbells()
        seen = bells.snapshot([ring])
        ring.release(ring.head)  # everything taken: the turn found nothing more
        waited = timed_wait_deep(bells, seen, [ring], 20.0)
        assert ring.head > ring.tail, "woken before the call"
        assert waited < 10.0, f"the deep wait lasted {waited:.1f} s: the record did not wake it"
        assert struct.unpack_from("<I", ring.mm, 540)[0] == 0  # agent_sleeping cleared
        ring.close()
    finally:
        proc.kill()
        proc.wait()


def timed_wait_deep(bells: Doorbells, seen: Any, rings: list[Ring], timeout: float) -> float:
    started = time.monotonic()
    bells.wait(seen, rings, timeout, deep=True)
    return time.monotonic() - started


def test_a_deep_wait_is_not_begun_while_a_ring_holds_a_record(tmp_path: Path) -> None:
    """A record appended after the turn looked at the rings, by a thread that read the
    agent's flag before the agent set it (so it did not ring): the deep wait sees the ring's
    head past its tail and does not sleep."""
    ring = new_ring(tmp_path / "1.ring")
    bells = Doorbells()
    seen = bells.snapshot([ring])
    struct.pack_into("<Q", ring.mm, 96, ring.head + 96)  # (head: a record published)
    assert timed_wait_deep(bells, seen, [ring], 5.0) < 1.0
    ring.release(ring.head)
    assert 0.25 <= timed_wait_deep(bells, bells.snapshot([ring]), [ring], 0.3) < 2.0
    # a replaying process's ring (after a promotion): its records go from the agent to the
    # app, and those the app has not taken yet are no reason to stay awake
    struct.pack_into("<I", ring.mm, 12, 2)  # (mode: replay)
    struct.pack_into("<Q", ring.mm, 96, ring.head + 96)
    assert 0.25 <= timed_wait_deep(bells, bells.snapshot([ring]), [ring], 0.3) < 2.0
    ring.close()


def test_each_new_process_rings_the_agents_bell(tmp_path: Path) -> None:
    """The shim of each process rings ``RUN_DIR/agent.bell`` once its ring is made, so the
    agent finds new processes without looking at the run folder on a timer: a shell that
    forks three children rings it four times (an exec keeps its ring: no more), and an
    agent asleep on it wakes."""
    bells = Doorbells()
    bells.attach(tmp_path)
    seen = bells.snapshot([])
    assert not bells.new_process(seen)
    env = dict(os.environ, LD_PRELOAD=str(shim_library()), MIG_MODE="record",
               MIG_BARRIER="async", MIG_RUN_DIR=str(tmp_path), MIG_LPID="1")
    proc = subprocess.Popen(["sh", "-c", "sleep 0.5; /bin/true; /bin/true"], env=env,
                            stderr=subprocess.PIPE)
    try:
        assert timed_wait(bells, seen, [], 20.0) < 10.0, "the first process did not ring"
        assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        proc.kill()
        proc.wait()
    seen = bells.snapshot([])
    assert seen[1] == len(list(tmp_path.glob("*.ring"))) == 4
    assert bells.new_process(seen) and not bells.new_process(bells.snapshot([]))


def test_a_bell_attached_after_a_snapshot_is_the_one_waited_on(tmp_path: Path) -> None:
    """``attach`` after a snapshot (no rings either time): the next snapshot reads the
    file's word, not the word the agent had before (whose address the first snapshot
    took)."""
    bells = Doorbells()
    bells.snapshot([])
    bells.attach(tmp_path)
    with open(tmp_path / "agent.bell", "r+b") as f:
        f.write(struct.pack("<I", 1))  # what a new process's shim does
    assert bells.new_process(bells.snapshot([]))
