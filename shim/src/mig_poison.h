/* mig_poison.h -- the core's rule, made a compile error: a file that is not a wrapper reaches
 * the real functions only through mig_real (or the kernel through mig_sys).
 *
 * Inside libmigshim.so every interposed name (read, mmap, clock_gettime...) is the shim's
 * own wrapper: a core file that called one directly would record its own call, or take a
 * record meant for the app, or trap itself. So every mig_*.c file of the shim includes this
 * header last, after every system header, and each interposed function is declared again
 * with GCC's error attribute: a direct call fails to compile, naming the rule. A call
 * through the table (mig_real.read(...)) is a call through a pointer and is untouched
 * (`#pragma GCC poison` would reject the member name mig_real.read as well, and a macro
 * named like the function would rewrite it).
 *
 * The wrapper files (wrap_*.c) define the wrappers, and wrap_syscall.c routes trapped
 * calls to them by name: they do not include this header. The list is the version script's
 * (libmigshim.map), and tests/shim/test_shim_build.py checks that the two agree and that no
 * core object refers to an interposed symbol (which also covers a call that a
 * _FORTIFY_SOURCE inline wrapper would hide from the attribute). */
#ifndef MIG_POISON_H
#define MIG_POISON_H

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Every function libmigshim.map exports but mig_shim_version, in its order. */
#define MIG_INTERPOSED(X)                                                                   \
    X(time) X(gettimeofday) X(clock_gettime) X(clock_getres)                                \
    X(nanosleep) X(clock_nanosleep) X(usleep) X(sleep)                                      \
    X(getrandom) X(getentropy) X(getpid) X(getppid) X(gettid) X(uname) X(gethostname)       \
    X(read) X(readv) X(recv) X(recvfrom) X(recvmsg) X(write) X(writev) X(send) X(sendto)    \
    X(sendmsg) X(close)                                                                     \
    X(sendfile) X(sendfile64) X(splice) X(copy_file_range)                                  \
    X(socket) X(socketpair) X(pipe) X(pipe2) X(bind) X(listen) X(accept) X(accept4)         \
    X(connect)                                                                              \
    X(getsockname) X(getpeername) X(getsockopt) X(setsockopt) X(shutdown)                   \
    X(poll) X(ppoll) X(select) X(epoll_wait) X(epoll_pwait)                                 \
    X(fork) X(vfork) X(posix_spawn) X(posix_spawnp) X(execve) X(execv) X(execvp)            \
    X(execvpe) X(execl) X(execlp) X(execle)                                                 \
    X(waitpid) X(wait4) X(wait) X(kill) X(dup2) X(dup3) X(sigaction) X(signal)              \
    X(open) X(open64) X(openat) X(openat64) X(mmap) X(mmap64) X(shmget) X(shm_open)         \
    X(epoll_ctl) X(_exit) X(_Exit)                                                          \
    X(pthread_create) X(pthread_join) X(pthread_mutex_lock) X(pthread_mutex_trylock)        \
    X(pthread_mutex_init) X(pthread_mutex_destroy)                                          \
    X(pthread_mutex_timedlock) X(pthread_rwlock_rdlock) X(pthread_rwlock_wrlock)            \
    X(pthread_rwlock_tryrdlock) X(pthread_rwlock_trywrlock) X(pthread_rwlock_timedrdlock)   \
    X(pthread_rwlock_timedwrlock) X(pthread_cond_wait) X(pthread_cond_timedwait)            \
    X(sem_wait) X(sem_trywait) X(sem_timedwait) X(sem_clockwait)                            \
    X(pthread_cond_clockwait) X(pthread_mutex_clocklock)

#define MIG_POISON(name)                                                                    \
    extern __typeof__(name) name __attribute__((                                            \
        error("a core file of the shim calls " #name " only through mig_real (or the "      \
              "kernel through mig_sys): this symbol is the shim's own wrapper")));
MIG_INTERPOSED(MIG_POISON)
#undef MIG_POISON

#endif
