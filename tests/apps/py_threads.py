"""py_threads.py -- a threaded Python program: what mig does with CPython's threads.

Four threads share a list under a threading.Lock; each of 300 rounds appends
(thread, counter, 2 random bytes) and sometimes sleeps 1 ms, so the GIL passes between
them on the interpreter's own schedule. The main thread joins them and writes the list to
OUT. Its content depends on the interleaving: a replay writes the same file only if it
followed the recorded one.

usage: py_threads.py OUT [THREADS [ROUNDS]]
"""

import os
import sys
import threading
import time


def main() -> int:
    out = sys.argv[1]
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 300
    lock = threading.Lock()
    seen: list[str] = []
    counter = 0

    def work(name: int) -> None:
        nonlocal counter
        for i in range(rounds):
            with lock:
                counter += 1
                seen.append(f"{name} {counter} {os.urandom(2).hex()}")
            if i % 50 == 0:
                time.sleep(0.001)

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    with open(out, "w") as f:
        f.write(f"py_threads count={counter}\n")
        f.write("\n".join(seen) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
