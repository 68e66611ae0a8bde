"""py_late_import.py -- a threaded Python program that imports a module late, from its
working folder, after another program has written a file there.

CPython's import system keeps each folder of sys.path listed, with the folder's mtime,
and lists the folder again at an import it has not seen when that mtime moved. The
working folder comes first on sys.path here, as `python3 -m` puts it. The program
imports a module (CPython lists the folder), prints "ready", and waits for a line on
stdin; meanwhile the test writes a file into the primary's folder (an operator's log).
Then it imports another module: the primary lists its folder again, with one more entry,
releasing the GIL around each readdir, while a second thread takes turns with the main
one. The main thread notes how far the second had got at each step, so the file written
at the end, OUT, depends on the interleaving: a replica writes the same only if it
followed the primary's.

usage: py_late_import.py OUT
"""

import os
import sys
import threading
import time

sys.path.insert(0, os.getcwd())
import colorsys  # noqa: E402  the first search: the folder is listed, its mtime kept


def main() -> int:
    stop = threading.Event()
    turns = [0]

    def churn() -> None:
        while not stop.is_set():
            turns[0] += 1
            time.sleep(0.0002)

    helper = threading.Thread(target=churn)
    helper.start()
    print("ready", flush=True)
    seen = [turns[0]]
    sys.stdin.readline()
    seen.append(turns[0])
    import fractions  # noqa: PLC0415  the late import: the folder is looked at again
    seen.append(turns[0])
    half = fractions.Fraction(1, 2) + fractions.Fraction(colorsys.ONE_THIRD)
    for _ in range(20):
        time.sleep(0.0005)
        seen.append(turns[0])
    stop.set()
    helper.join()
    with open(sys.argv[1], "w") as f:
        f.write(f"py_late_import {half} turns={' '.join(map(str, seen))}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
