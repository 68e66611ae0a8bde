/* mig_kinds.h -- the call kinds the shim records, as an X-macro list.
 *
 * X(NAME, number): NAME is the symbol of the Avro enum mig.log.CallKind, number is what the
 * ring carries. Numbers never change once released; mig/ring/kinds.py mirrors this list and
 * tests/shim/test_shim_kinds.py checks that both agree with the Avro schema. */
#ifndef MIG_KINDS_H
#define MIG_KINDS_H

#define MIG_KINDS(X)                                                                        \
    X(UNKNOWN, 0)                                                                           \
    X(TIME, 1) X(GETTIMEOFDAY, 2) X(CLOCK_GETTIME, 3) X(CLOCK_GETRES, 4)                    \
    X(GETRANDOM, 5) X(GETENTROPY, 6)                                                        \
    X(GETPID, 8) X(GETPPID, 9) X(GETTID, 10) X(UNAME, 11) X(GETHOSTNAME, 12)                \
    X(SOCKET, 13) X(SOCKETPAIR, 14) X(PIPE, 15) X(BIND, 16) X(LISTEN, 17) X(ACCEPT, 18)    \
    X(CONNECT, 19) X(GETSOCKNAME, 20) X(GETPEERNAME, 21) X(GETSOCKOPT, 22)                  \
    X(SETSOCKOPT, 23) X(SHUTDOWN, 24) X(CLOSE, 25) X(DUP, 26) X(FCNTL, 27)                  \
    X(READ, 28) X(RECV, 29) X(WRITE, 30) X(SEND, 31)                                        \
    X(POLL, 32) X(SELECT, 33) X(EPOLL_CREATE, 34) X(EPOLL_CTL, 35) X(EPOLL_WAIT, 36)        \
    X(EVENTFD, 37) X(TIMERFD_CREATE, 38) X(TIMERFD_SETTIME, 39) X(SIGNALFD, 40)             \
    X(SLEEP, 41) X(FORK, 42) X(SPAWN, 43) X(EXEC, 44) X(WAIT, 45) X(KILL, 46)               \
    X(SIGNAL, 47) X(PROC_READ, 48)                                                          \
    X(THREAD_CREATE, 49) X(THREAD_JOIN, 50) X(MUTEX_LOCK, 51) X(RWLOCK, 52)                 \
    X(COND_WAIT, 53) X(SEM_WAIT, 54) X(FSTAT, 55) X(IOCTL, 56) X(FUTEX, 57)       \
    X(SWITCH, 58) X(LSEEK, 59) X(GETDENTS, 60)

enum mig_kind {
#define MIG_KIND_ENUM(name, num) MIG_K_##name = num,
    MIG_KINDS(MIG_KIND_ENUM)
#undef MIG_KIND_ENUM
};

#endif
