"""py_snippet.py -- a Python program's non-determinism: the hash seed, random, time, os,
socket and select all go through intercepted libc calls; subprocess runs a program by its
name, which CPython's child looks for with an exec on each folder of PATH in turn (the
first ones fail), one that does not exist, and a shell pipeline into GNU head (which seeks
back on its input, a pipe)."""

import os
import random
import select
import socket
import subprocess
import sys
import time

with open(sys.argv[1] if len(sys.argv) > 1 else "out.txt", "w") as out:
    out.write(f"hash {hash('mig')} set-order {list({'a', 'b', 'c', 'd', 'e'})}\n")
    out.write(f"random {random.random()} {random.getrandbits(64)}\n")
    out.write(f"urandom {os.urandom(8).hex()}\n")
    out.write(f"time {time.time()} {time.monotonic()} {time.perf_counter_ns()}\n")
    out.write(f"pid {os.getpid()} host {socket.gethostname()}\n")
    a, b = socket.socketpair()
    a.sendall(f"{time.time_ns()}".encode())
    ready, _, _ = select.select([b], [], [], 1.0)
    out.write(f"select {len(ready)} recv {b.recv(64).decode()}\n")
    time.sleep(0.05)
    out.write(f"after sleep {time.monotonic()}\n")
    path = "/nonexistent-a:/nonexistent-b:" + os.environ.get("PATH", "/usr/bin:/bin")
    date = subprocess.run(["date", "+%s.%N"], capture_output=True, text=True,
                          env={**os.environ, "PATH": path})
    out.write(f"date {date.returncode} {date.stdout.strip()}\n")
    try:
        subprocess.run(["/nonexistent/program"])
    except OSError as exc:
        out.write(f"missing program: errno {exc.errno}\n")
    head = subprocess.run("seq 1000 | head -3", shell=True, capture_output=True, text=True)
    out.write(f"head {head.returncode} {head.stdout.split()}\n")
