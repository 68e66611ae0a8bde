"""Call kind numbers as the shim's ring carries them (mirror of shim/src/mig_kinds.h).

tests/shim/test_shim_kinds.py checks that this table, the C header and the Avro enum
``mig.log.CallKind`` agree; numbers never change once released.
"""

from __future__ import annotations

__all__ = ["KIND_NAMES", "KIND_NUMBERS"]

KIND_NUMBERS: dict[str, int] = {
    "UNKNOWN": 0, "TIME": 1, "GETTIMEOFDAY": 2, "CLOCK_GETTIME": 3, "CLOCK_GETRES": 4,
    "GETRANDOM": 5, "GETENTROPY": 6, "GETPID": 8, "GETPPID": 9, "GETTID": 10, "UNAME": 11,
    "GETHOSTNAME": 12, "SOCKET": 13, "SOCKETPAIR": 14, "PIPE": 15, "BIND": 16, "LISTEN": 17,
    "ACCEPT": 18, "CONNECT": 19, "GETSOCKNAME": 20, "GETPEERNAME": 21, "GETSOCKOPT": 22,
    "SETSOCKOPT": 23, "SHUTDOWN": 24, "CLOSE": 25, "DUP": 26, "FCNTL": 27, "READ": 28,
    "RECV": 29, "WRITE": 30, "SEND": 31, "POLL": 32, "SELECT": 33, "EPOLL_CREATE": 34,
    "EPOLL_CTL": 35, "EPOLL_WAIT": 36, "EVENTFD": 37, "TIMERFD_CREATE": 38,
    "TIMERFD_SETTIME": 39, "SIGNALFD": 40, "SLEEP": 41, "FORK": 42, "SPAWN": 43, "EXEC": 44,
    "WAIT": 45, "KILL": 46, "SIGNAL": 47, "PROC_READ": 48, "THREAD_CREATE": 49,
    "THREAD_JOIN": 50, "MUTEX_LOCK": 51, "RWLOCK": 52, "COND_WAIT": 53, "SEM_WAIT": 54,
    "FSTAT": 55, "IOCTL": 56, "FUTEX": 57, "SWITCH": 58, "LSEEK": 59, "GETDENTS": 60,
}
KIND_NAMES: dict[int, str] = {num: name for name, num in KIND_NUMBERS.items()}
