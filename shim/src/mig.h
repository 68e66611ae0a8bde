/* mig.h -- the shim's table of contents: one section per file, in the order of the data
 * path, saying what each file exports to the others. Included first by every file of
 * shim/src (mig_encode.c, the agent's batch encoder, is a library of its own).
 *
 * The path of a call: the app calls a wrapper (wrap_*.c, or wrap_syscall.c for a system
 * call trapped by mig_trap.c); the wrapper prologue (MIG_ENTER, at the end of this file)
 * runs mig_init (mig_start.c) and decides whether the call is the shim's business; in
 * record mode the wrapper makes the real call and hands the result to mig_record
 * (mig_record.c), which writes it into this process's ring for the agent; in replay mode
 * it asks mig_replay (mig_replay.c) for the recorded result instead, and any mismatch
 * stops the process as diverged (mig_diverge.c). Around that: which fds are recorded
 * (mig_fdclass.c), held outputs (mig_hold.c), mutexes in recorded order
 * (mig_lockorder.c), serialized threads (mig_sched.c), complete capture (mig_trap.c,
 * mig_clone.c, wrap_syscall.c), file identity across a restore (mig_fileid.c), processes
 * (mig_proc.c) and going live (mig_live.c).
 *
 * Rules of every file in shim/src:
 *  - a wrapper calls MIG_ENTER first: it runs mig_init() (a call can arrive before the
 *    constructor) and lets the shim's own calls and calls made while mig is off pass
 *    straight to the real function;
 *  - real functions are reached only through mig_real, resolved once in mig_init(); the
 *    core files (mig_*.c) include mig_poison.h last, which makes a direct call to an
 *    interposed function a compile error;
 *  - nothing on the hot path allocates or uses stdio: records are written in place into
 *    the shared ring, mapped at start. malloc and printf are poisoned at the end of this
 *    file for every file but those that define MIG_CORE;
 *  - every wrapper has the same shape: replay -> take the recorded result; record -> real
 *    call, then mig_record(); off -> real call. */
#ifndef MIG_H
#define MIG_H

#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <time.h>

#include "mig_kinds.h"
#include "mig_ring.h"

#define MIG_EXPORT __attribute__((visibility("default")))
#define MIG_TLS __thread __attribute__((tls_model("initial-exec")))

struct mig_call;

/* ============================================================ mig_start.c: set-up, state */

enum mig_mode { MIG_OFF = 0, MIG_RECORD = 1, MIG_REPLAY = 2, MIG_LIVE = 3 };
enum mig_barrier_mode { MIG_B_OUTPUT = 0, MIG_B_SYNC = 1, MIG_B_ASYNC = 2 };

/* The real functions, resolved once (dlvsym for versioned ones). */
struct mig_real {
#define MIG_REAL_FIELDS(X)                                                                 \
    X(time_t, time, (time_t *))                                                            \
    X(int, gettimeofday, (struct timeval *, void *))                                       \
    X(int, clock_gettime, (clockid_t, struct timespec *))                                  \
    X(int, clock_getres, (clockid_t, struct timespec *))                                   \
    X(ssize_t, getrandom, (void *, size_t, unsigned int))                                  \
    X(int, getentropy, (void *, size_t))                                                   \
    X(pid_t, getpid, (void))                                                               \
    X(pid_t, getppid, (void))                                                              \
    X(pid_t, gettid, (void))                                                               \
    X(int, uname, (struct utsname *))                                                      \
    X(int, gethostname, (char *, size_t))                                                  \
    X(ssize_t, read, (int, void *, size_t))                                                \
    X(ssize_t, readv, (int, const struct iovec *, int))                                    \
    X(ssize_t, recv, (int, void *, size_t, int))                                           \
    X(ssize_t, recvfrom, (int, void *, size_t, int, struct sockaddr *, socklen_t *))       \
    X(ssize_t, recvmsg, (int, struct msghdr *, int))                                       \
    X(ssize_t, write, (int, const void *, size_t))                                         \
    X(ssize_t, writev, (int, const struct iovec *, int))                                   \
    X(ssize_t, send, (int, const void *, size_t, int))                                     \
    X(ssize_t, sendto, (int, const void *, size_t, int, const struct sockaddr *, socklen_t)) \
    X(ssize_t, sendmsg, (int, const struct msghdr *, int))                                 \
    X(ssize_t, sendfile, (int, int, off_t *, size_t))                                      \
    X(ssize_t, splice, (int, loff_t *, int, loff_t *, size_t, unsigned int))               \
    X(ssize_t, copy_file_range, (int, loff_t *, int, loff_t *, size_t, unsigned int))      \
    X(int, socket, (int, int, int))                                                        \
    X(int, socketpair, (int, int, int, int *))                                             \
    X(int, pipe, (int *))                                                                  \
    X(int, pipe2, (int *, int))                                                            \
    X(int, bind, (int, const struct sockaddr *, socklen_t))                                \
    X(int, listen, (int, int))                                                             \
    X(int, accept, (int, struct sockaddr *, socklen_t *))                                  \
    X(int, accept4, (int, struct sockaddr *, socklen_t *, int))                            \
    X(int, connect, (int, const struct sockaddr *, socklen_t))                             \
    X(int, getsockname, (int, struct sockaddr *, socklen_t *))                             \
    X(int, getpeername, (int, struct sockaddr *, socklen_t *))                             \
    X(int, getsockopt, (int, int, int, void *, socklen_t *))                               \
    X(int, setsockopt, (int, int, int, const void *, socklen_t))                           \
    X(int, shutdown, (int, int))                                                           \
    X(int, close, (int))                                                                   \
    X(int, poll, (struct pollfd *, nfds_t, int))                                           \
    X(int, ppoll, (struct pollfd *, nfds_t, const struct timespec *, const sigset_t *))    \
    X(int, select, (int, fd_set *, fd_set *, fd_set *, struct timeval *))                  \
    X(int, epoll_wait, (int, struct epoll_event *, int, int))                              \
    X(int, epoll_pwait, (int, struct epoll_event *, int, int, const sigset_t *))           \
    X(int, nanosleep, (const struct timespec *, struct timespec *))                        \
    X(int, clock_nanosleep, (clockid_t, int, const struct timespec *, struct timespec *))  \
    X(int, usleep, (useconds_t))                                                           \
    X(unsigned int, sleep, (unsigned int))                                                 \
    X(pid_t, fork, (void))                                                                 \
    X(int, execve, (const char *, char *const[], char *const[]))                           \
    X(int, posix_spawn, (pid_t *, const char *, const void *, const void *, char *const[], \
                         char *const[]))                                                   \
    X(int, posix_spawnp, (pid_t *, const char *, const void *, const void *,               \
                          char *const[], char *const[]))                                   \
    X(pid_t, waitpid, (pid_t, int *, int))                                                 \
    X(pid_t, wait4, (pid_t, int *, int, struct rusage *))                                  \
    X(int, kill, (pid_t, int))                                                             \
    X(int, sigaction, (int, const struct sigaction *, struct sigaction *))                 \
    X(int, dup2, (int, int))                                                               \
    X(int, dup3, (int, int, int))                                                          \
    X(int, openat, (int, const char *, int, ...))                                          \
    X(void *, mmap, (void *, size_t, int, int, int, off_t))                                \
    X(void *, mmap64, (void *, size_t, int, int, int, off_t))                              \
    X(int, shmget, (key_t, size_t, int))                                                   \
    X(int, shm_open, (const char *, int, mode_t))                                          \
    X(int, epoll_ctl, (int, int, int, struct epoll_event *))                               \
    X(void, _exit, (int))                                                                  \
    X(int, pthread_create, (pthread_t *, const pthread_attr_t *, void *(*)(void *), void *)) \
    X(int, pthread_join, (pthread_t, void **))                                             \
    X(int, pthread_mutex_lock, (pthread_mutex_t *))                                        \
    X(int, pthread_mutex_trylock, (pthread_mutex_t *))                                     \
    X(int, pthread_mutex_timedlock, (pthread_mutex_t *, const struct timespec *))          \
    X(int, pthread_mutex_unlock, (pthread_mutex_t *))                                      \
    X(int, pthread_mutex_init, (pthread_mutex_t *, const pthread_mutexattr_t *))           \
    X(int, pthread_mutex_destroy, (pthread_mutex_t *))                                     \
    X(int, pthread_rwlock_rdlock, (pthread_rwlock_t *))                                    \
    X(int, pthread_rwlock_wrlock, (pthread_rwlock_t *))                                    \
    X(int, pthread_rwlock_tryrdlock, (pthread_rwlock_t *))                                 \
    X(int, pthread_rwlock_trywrlock, (pthread_rwlock_t *))                                 \
    X(int, pthread_rwlock_timedrdlock, (pthread_rwlock_t *, const struct timespec *))      \
    X(int, pthread_rwlock_timedwrlock, (pthread_rwlock_t *, const struct timespec *))      \
    X(int, pthread_cond_wait, (pthread_cond_t *, pthread_mutex_t *))                       \
    X(int, pthread_cond_timedwait, (pthread_cond_t *, pthread_mutex_t *,                   \
                                    const struct timespec *))                              \
    X(int, sem_wait, (sem_t *))                                                            \
    X(int, sem_trywait, (sem_t *))                                                         \
    X(int, sem_timedwait, (sem_t *, const struct timespec *))                              \
    X(int, sem_clockwait, (sem_t *, clockid_t, const struct timespec *))                   \
    X(int, pthread_cond_clockwait, (pthread_cond_t *, pthread_mutex_t *, clockid_t,        \
                                    const struct timespec *))                              \
    X(int, pthread_mutex_clocklock, (pthread_mutex_t *, clockid_t, const struct timespec *))
#define MIG_REAL_FIELD(ret, name, args) ret(*name) args;
    MIG_REAL_FIELDS(MIG_REAL_FIELD)
#undef MIG_REAL_FIELD
};

extern struct mig_real mig_real;
extern enum mig_mode mig_mode;
extern enum mig_barrier_mode mig_barrier_mode; /* MIG_BARRIER */
/* The shim's own calls run with mig_busy set: they pass straight to the real function. */
extern MIG_TLS int mig_busy;
/* This thread's logical id (creation order in its process, 0 first) and how many threads
 * the process created: synchronisation is recorded once there is more than one. */
extern MIG_TLS uint32_t mig_tid;
extern unsigned mig_threads;

/* Read MIG_MODE and the rest of the environment, resolve mig_real, attach the ring, arm
 * complete capture. Once; every wrapper calls it first. */
void mig_init(void);
/* MIG_RUN_DIR, where the rings are. */
const char *mig_run_dir(void);
/* MIG_RUN_DIR/<lpid>.ring into path (size bytes); -1 when it does not fit. */
int mig_ring_path(const char *lpid, char *path, size_t size);

#ifdef MIG_CORE
/* This process's ring (mig_ring.h), mapped once; mig_ring_cap: bytes of mig_ring_data. */
extern struct mig_ring_hdr *mig_ring;
extern unsigned char *mig_ring_data;
extern uint64_t mig_ring_cap;
/* The record at ring position pos. */
static inline struct mig_rec *mig_rec_at(uint64_t pos)
{
    return (struct mig_rec *)(mig_ring_data + (pos & (mig_ring_cap - 1)));
}
/* A forked child: unmap the parent's ring untouched; then make the child's own
 * (<lpid>.ring for mig_lpid(), naming its parent). */
void mig_ring_detach(void);
void mig_ring_attach(const char *parent);
#endif

/* ============================================================ mig_util.c: small tools */

/* One line on stderr, written directly (no stdio): "mig-shim: warning: <a><b>". */
void mig_warn(const char *a, const char *b);
/* "mig-shim: fatal: <what>" on stderr; mig_die then ends the process with code 86. */
void mig_fatal_line(const char *what);
__attribute__((noreturn)) void mig_die(const char *what);
/* The shim's own futex call (never trapped, never recorded; -errno on failure) and
 * CLOCK_MONOTONIC in ns, read through the vDSO. */
long mig_futex(uint32_t *word, int op, uint32_t val, const struct timespec *timeout);
uint64_t mig_monotonic_ns(void);
/* FNV-1a of buf, continuing from seed (0: start). */
uint64_t mig_hash(const void *buf, uint64_t len, uint64_t seed);
/* Hash of the first `limit` bytes of an output (contiguous or iovec). */
uint64_t mig_out_hash(const struct mig_call *call, uint64_t limit);
/* u in decimal at p, no terminator; returns the end (no stdio in the shim). */
char *mig_put_uint(char *p, uint64_t u);
/* s, or v in decimal, at p, at most up to end; returns the end. */
char *mig_put_str(char *p, char *end, const char *s);
char *mig_put_int(char *p, char *end, int64_t v);
/* The first free entry of an array of `count` entries of `size` bytes whose first field is
 * a uint32_t state (0: free), taken (state 1); waits while all are taken. */
void *mig_claim(void *array, size_t size, int count);

/* On the hot path, inline: CLOCK_REALTIME in ns through libc (the vDSO: a raw syscall here
 * cost ~270 ns on every record), and a spin lock. */
static inline uint64_t mig_now_ns(void)
{
    struct timespec ts;
    mig_real.clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline void mig_spin_lock(uint32_t *lock)
{
    while (__atomic_exchange_n(lock, 1, __ATOMIC_ACQUIRE))
        while (__atomic_load_n(lock, __ATOMIC_RELAXED))
            __builtin_ia32_pause();
}

static inline void mig_spin_unlock(uint32_t *lock)
{
    __atomic_store_n(lock, 0, __ATOMIC_RELEASE);
}

/* ============================================================ mig_fdclass.c: fd classes */

/* Is fd one whose I/O is recorded (anything but a regular file)? Cached per fd. */
int mig_fd_recorded(int fd);
void mig_fd_forget(int fd);
/* close_range closed [first, last]: every class there is forgotten. */
void mig_fd_forget_range(unsigned first, unsigned last);
/* A recorded fd whose writes are no output to the outside: an eventfd, pipe or socketpair
 * this process made (mig_fd_made_wakeup) while no other process may hold it
 * (mig_fd_shared: a fork, a spawn, fds sent). */
int mig_fd_wakeup(int fd);
void mig_fd_made_wakeup(int fd);
void mig_fd_shared(void);
void mig_fd_mark(int fd, int recorded);
/* After a read of fd that returned `result` (recorded or replayed): count the bytes in the
 * ring's stdin_read when fd is the app's stdin pipe (mig/member/stdin.py). */
void mig_stdin_count(int fd, int64_t result);

/* ============================================================ mig_record.c: record mode */

/* A recorded call on its way in (record) or out (replay). */
struct mig_call {
    enum mig_kind kind;
    int64_t args[4];
    int64_t result;
    int err;
    const void *payload;  /* record: input bytes to log; replay: points into the ring */
    uint32_t payload_len;
    const struct iovec *in_iov; /* record: when payload is NULL, the input is these pieces */
    int in_iovcnt;
    const void *out;      /* bytes the call writes (outputs), hashed ... */
    const struct iovec *iov; /* ... or, when out is NULL, these iovcnt pieces */
    int iovcnt;
    uint64_t out_len;
    int is_output;
    const int64_t *rec_args; /* replay: the record's own args, until mig_replay_done() */
};

/* The most input one recorded call may return (read, recv, getrandom...): callers asking
 * for more get a short read, which sockets, pipes and getrandom allow. It keeps every
 * record well inside the ring and a Kafka batch. */
#define MIG_MAX_INPUT (256u * 1024u)

/* Record mode: append the completed call (after this thread's RUN record, if it made
 * unrecorded mutex acquisitions). Returns its seq. */
uint64_t mig_record(struct mig_call *call);
/* Append a record as it is (mig_sched.c: the token is held or given up; mig_lockorder.c:
 * a RUN record). */
uint64_t mig_append(struct mig_call *call);
/* Record mode: wait until every record of this process up to seq is committed. */
void mig_barrier(uint64_t seq);
/* Record mode: the barrier an output needs under the app's barrier mode. */
void mig_output_barrier(void);
/* Does this process hold its outputs (record mode, barrier mode output: mig_hold.c)? */
int mig_holding(void);

/* ============================================================ mig_hold.c: held outputs */

/* In output mode an output is recorded as done and released by this process's release
 * thread once committed. Each returns 0 when it cannot hold. */
int mig_hold_output(struct mig_call *call, int op, int arg);
/* Replay, output mode: at an output the primary could hold, set up what its first held
 * output set up there (the buffer and the release thread), so the app's process has the
 * same heap, mappings and threads on every host. */
void mig_hold_mirror(const struct mig_call *call);
int mig_hold_shutdown(struct mig_call *call);
void mig_hold_close(int fd);
void mig_hold_epoll(int epfd, int op, int fd);
void mig_hold_flush(void);
void mig_hold_after_fork(void);
/* The release thread's kernel id (0: none), which blocks every signal. */
extern pid_t mig_hold_ktid;

/* ============================================================ mig_patch.c: patched sites */

/* Trapped system calls of libc made without a signal: a site that trapped a few times is
 * patched into a jmp to a stub that runs the call as the SIGSYS handler would. */
extern int mig_patch_enabled;
extern uint32_t mig_vforks; /* vfork children on this memory: no patching meanwhile */
void mig_patch_init(void);
/* In the SIGSYS handler, for a call trapped from the app's code (at: after its syscall):
 * count the trap at its site, and patch the site when it can. */
void mig_patch_try(uintptr_t at);
/* Where a thread about to resume the app's code at rip must resume (a stub, when rip is in
 * bytes a patch replaced). */
uintptr_t mig_patch_resume(uintptr_t rip);
/* In the preemption signal's handler: 1 when it was a request to stop while a site is
 * patched (and the patch is done). */
int mig_patch_stopped(const siginfo_t *si);
/* A forked child: its one thread, none of the parent's patching under way. */
void mig_patch_after_fork(void);

/* ============================================================ mig_replay.c: replay mode */

/* Replay mode: the next record, which must be of `kind` with the same args[0..nargs).
 * Fills call->result/err/payload and returns 1; on a mismatch reports a divergence and
 * stops. Returns 0 when the log has ended and the process went live instead (mig_live.c):
 * mig_mode is now MIG_RECORD and the caller performs and records the call for real. */
int mig_replay(struct mig_call *call, int nargs);
/* Replay mode: compare the output the app makes now with the recorded one (1), or 0 as
 * mig_replay when the process went live. */
int mig_replay_output(struct mig_call *call, int nargs);
/* Replay mode: the payload of the last mig_replay() must fit the `cap` bytes the app gave
 * for it; a longer one (a damaged log) is reported as a divergence and stops the process
 * before anything is copied. */
void mig_replay_fits(const struct mig_call *call, uint64_t cap);
/* Replay mode: done with the payload of the last mig_replay(): release its ring space. */
void mig_replay_done(void);
/* The seq after the last record handed out (divergences name it). */
uint64_t mig_replay_next_seq(void);
void mig_replay_after_fork(void);
/* For mig_lockorder.c. This thread's next record at the tail, waiting for its turn (NULL:
 * the process went live). Take the RUN or SIGNAL record at the tail, which comes before
 * the thread's next call. Look ahead: 0 when no longer replaying, else *gen is the ring's
 * data generation (read before looking, for mig_replay_wait_more); this thread's next
 * record if the ring shows it yet (NULL if not); wait a little for more records (0: the
 * log has ended and the process went live). Wake the threads waiting for more. */
struct mig_rec *mig_replay_next(void);
void mig_replay_take_front(struct mig_rec *rec);
int mig_replay_look(uint32_t *gen);
const struct mig_rec *mig_replay_own_next(void);
int mig_replay_wait_more(uint32_t gen);
void mig_replay_nudge(void);
uint32_t mig_replay_word(void);
int mig_replay_ahead(void);
void mig_replay_doze(uint32_t gen, const struct timespec *timeout);
/* For mig_sched.c: the record at the ring's tail, whoever's (NULL: gone live); the same as
 * it is now, only looking (NULL: none yet); take this thread's SWITCH. */
const struct mig_rec *mig_peek_tail(void);
const struct mig_rec *mig_tail_now(void);
int mig_take_switch(void);

/* ============================================================ mig_lockorder.c: mutexes */

/* Mutex acquisitions this thread made since its last record without recording them (it
 * was the mutex's last owner). The next record of the thread is preceded by a RUN record
 * carrying the number (record), or must find it in one (replay). */
extern MIG_TLS uint32_t mig_quiet;
/* MUTEX_LOCK records: args[0] is the variant; this one is a RUN record (args[2]: count). */
#define MIG_LOCK_RUN 3
/* At most this many acquisitions in a row go unrecorded: the next one is recorded anyway,
 * which bounds how far a replaying thread looks ahead for its RUN record. */
#ifndef MIG_QUIET_MAX
#define MIG_QUIET_MAX 1024u
#endif

static inline int mig_is_run(const struct mig_rec *rec)
{
    return rec->kind == MIG_K_MUTEX_LOCK && rec->args[0] == MIG_LOCK_RUN;
}

/* A mutex acquisition once the process has threads (variant 0 lock, 1 trylock,
 * 2 timedlock, 4 clocklock on clock `clk`): recorded, replayed in order, or neither
 * (a quiet one). Returns the pthread result. */
int mig_lock_mutex(pthread_mutex_t *m, int variant, const struct timespec *at, clockid_t clk);
/* A condition wait, recorded when it returns with the mutex held again (clk: the clock of
 * pthread_cond_clockwait, or -1). */
int mig_lock_cond_wait(pthread_cond_t *cv, pthread_mutex_t *m, const struct timespec *at,
                       clockid_t clk);
/* pthread_mutex_init and _destroy: a new mutex at an address counts from 0. */
void mig_lock_forget(pthread_mutex_t *m);
/* Replay, around taking a semaphore, reader-writer lock or join for real at its turn:
 * meanwhile a thread whose next record is not in the ring yet may pass. */
void mig_lock_tail_waits_any(void);
void mig_lock_tail_waits_none(void);
/* RUN records: written before this thread's next record (record); checked where replay
 * takes one, or finds none before a record (replay); written or taken when the thread
 * ends, rather than never. */
void mig_quiet_record(void);
void mig_quiet_take_run(const struct mig_rec *rec);
void mig_quiet_expect_none(const struct mig_rec *rec);
void mig_quiet_flush(void);

/* ============================================================ mig_diverge.c: stopping */

/* Each writes its text into the ring's div_text and stops the process (exit 87, the ring
 * DIVERGED), but mig_stop_refused when recording (exit 86) and mig_live_failed (88). */
/* The record `rec` is not what the replay made (`call`): "WHAT: recorded ... replay made". */
__attribute__((noreturn)) void mig_diverge(const struct mig_rec *rec,
                                           const struct mig_call *call, const char *what,
                                           int64_t expected, int64_t actual);
/* A thread waited 30 s for the thread whose record `rec` is at the tail. */
__attribute__((noreturn)) void mig_out_of_step(const struct mig_rec *rec);
/* The record at ring position pos is malformed (mig_rec_problem says why). */
__attribute__((noreturn)) void mig_corrupt(uint64_t pos, const char *why);
/* The thread made `made` unrecorded mutex acquisitions where the primary's made
 * `recorded` (the RUN record `rec`, or 0 before another record). */
__attribute__((noreturn)) void mig_diverge_run(const struct mig_rec *rec, int64_t recorded,
                                               int64_t made);
/* "WHAT: recorded acquisition EXPECTED, replay found ACTUAL" (a mutex's counts). */
__attribute__((noreturn)) void mig_lock_diverged(const char *what, int64_t expected,
                                                 int64_t actual);
/* Serialized threads: the token passed elsewhere than the log says; or stop, saying text. */
__attribute__((noreturn)) void mig_sched_diverged(const struct mig_rec *rec, const char *what,
                                                  int64_t recorded, int64_t made);
__attribute__((noreturn)) void mig_sched_stop(const struct mig_rec *rec, const char *text);
/* A system call the shim refuses (mig_trap.c), `text` naming it. */
__attribute__((noreturn)) void mig_stop_refused(const char *text);
/* Going live cannot complete (a listener cannot be made real): report and end. */
__attribute__((noreturn)) void mig_live_failed(const char *what, int err);

/* ============================================================ mig_sched.c: serialized */

/* Serialized threads: one thread of a process runs app code at a time. */
extern int mig_serial;            /* [app] threads = "serialized" */
extern int mig_serial_on;         /* ... and on in this process (it has threads) */
extern MIG_TLS int mig_token_out; /* this thread let the token go: take it before app code */
extern uint32_t mig_agent_waits;  /* threads waiting on the agent, not on the app */
void mig_sched_init(void);
/* The first thread is being created: its creator holds the token. */
void mig_sched_start(void);
void mig_sched_after_fork(void);
/* A switch point: the thread lets the token go (record) or hands it on where the log says
 * (replay). Every intercepted call is one (MIG_ENTER). `what` names the call in the
 * switch points' trace (MIG_TRACE_POINTS); mig_sched_point() names the calling function. */
void mig_sched_point_at(const char *what);
#define mig_sched_point() mig_sched_point_at(__func__)
/* The number of the trapped system call this thread is handling (wrap_syscall.c), else 0:
 * for the switch points' trace. */
extern MIG_TLS long mig_trap_nr;
/* Record: the call about to be made may block; it runs without the token. */
void mig_sched_block(void);
/* Record: wait without the token until fd is readable, for a call that makes fds. */
int mig_sched_wait_readable(int fd, int nonblocking);
/* Take the token back (before app code or a record). */
void mig_sched_resume(void);
/* A new thread's first step: wait for the token. */
void mig_sched_child(void);
/* Its id word, which the kernel clears when it is gone (before mig_sched_child). */
void mig_sched_exit_word(uint32_t *word);
/* The thread ends: the token goes for good. */
void mig_sched_exit(void);
/* The process ends: no switch comes after this point. */
void mig_sched_end(void);
void mig_sched_went_live(void);
/* sched_getaffinity / sched_setaffinity, trapped: 1 and *ret when answered here. */
int mig_sched_affinity(long nr, const long *a, long *ret);
/* A thread of the shim's own starts: not under the app's SCHED_BATCH. */
void mig_sched_shim_thread(void);
/* sched_getscheduler / sched_setscheduler, trapped: 1 and *ret when answered here. */
int mig_sched_policy(long nr, const long *a, long *ret);
/* Around starting or becoming another program: the calling thread off and back on the one
 * CPU a serialized process is pinned to. */
void mig_sched_unpin(void);
void mig_sched_repin(void);
/* mig_preempt.c: taking the token from a holder that spins (docs/threads.md). */
#ifndef SYS_USER_DISPATCH
#define SYS_USER_DISPATCH 2 /* si_code of a call trapped by Syscall User Dispatch */
#endif
#define MIG_PREEMPT_NS 100000ull /* a holder passing no switch point this long is asked */
/* The signal of a request to a holder and of its breakpoint's stops. Not SIGSYS: a signal
 * of that number still pending when the thread makes a trapped system call makes the
 * kernel drop the trap's own SIGSYS (a standard signal is pending once), and the call would
 * be skipped. SIGSTKFLT is unused by Linux on x86 (rr takes it for its time slices); the
 * app's handler of it is kept, not installed, and a SIGSTKFLT that is not the shim's runs
 * it at the next intercepted call, as any recorded signal (wrap_signal.c). */
#define MIG_PREEMPT_SIG SIGSTKFLT
int mig_sched_holding(void);              /* this thread holds the token */
/* Is this thread the only one running the app's code: a serialized process's holder, or
 * one that has made no thread yet (not in parallel mode, where it cannot tell)? */
int mig_serial_alone(void);
uintptr_t mig_sched_recorded_stop(void);  /* replay: A of this thread's next stop, or 0 */
/* The holder stopped in the recurring state; by_timer: what asked it (0 a waiting thread,
 * 1 the timer, 2 itself: replay), for MIG_TRACE_POINTS */
void mig_sched_preempted(uintptr_t at, int by_timer);
void mig_sched_poke(void);                /* wake the threads waiting for the token */
void mig_sched_tail_moved(void);          /* replay: wake them if the new tail concerns them */
void mig_preempt_ask(uint32_t ktid, const char *sel, uint64_t now_ns);
void mig_preempt_ask_at(uint32_t ktid, const char *sel, int timer, uint64_t when_ns);
void mig_preempt_ask_self(int timer, uint64_t when_ns);
int mig_preempt_new_timer(uint32_t ktid);   /* a thread's timer for requests to it */
void mig_preempt_delete_timer(int id);
void mig_preempt_arm_here(uintptr_t at);  /* replay: the holder's own stop is next */
int mig_preempt_lately(uint64_t now_ns);  /* a holder was asked to stop lately */
int mig_sched_others_wait(void);          /* record: a thread waits for the token */
void mig_preempt_quiet(void);
void mig_preempt_moot(void);
/* Record: the holder armed at A, as mig_tid + 1 (0: none). Its next call (a switch point
 * where it keeps the token, a record) makes the stop moot: mig_preempt_called. */
extern uint32_t mig_preempt_armed;
void mig_preempt_called(void);
void mig_preempt_rearm(uint64_t now_ns);
/* This thread waits for the token from this stack address down (0: it runs again). */
void mig_preempt_park(uintptr_t frame);
/* Append what preemption tried since it last stopped a spin (a primary that gives up). */
char *mig_preempt_report(char *p, char *end);
int mig_preempt_busy(void);
void mig_preempt_after_fork(void);
/* Memory of the shim's own (a buffer, its thread's stack): the mapping that holds it is
 * not part of the app's state a preemption checks. */
void mig_preempt_exclude(const void *at, size_t len);
/* mig_diverge.c: replay stops, the holder never stopped where the log says */
__attribute__((noreturn)) void mig_preempt_diverged(const struct mig_rec *rec,
                                                    const char *seen);
void mig_preempt_give_up(const struct mig_rec *rec); /* ...with its counts */
struct ucontext_t;
int mig_preempt_signal(const siginfo_t *si, struct ucontext_t *uc, int in_app);
/* This thread's errno, for the preemption's handler, which must not call libc's
 * __errno_location (mig_preempt.c): taken when the thread takes the token. */
extern MIG_TLS int *mig_errno_at;
/* wrap_signal.c: a MIG_PREEMPT_SIG that was not the shim's, to the app's handler if any. */
void mig_signal_foreign(int sig, siginfo_t *si, void *ctx);

/* ============================================================ mig_trap.c, mig_clone.c,
 * wrap_syscall.c: complete capture (what they share among themselves: mig_trap.h).
 * Every system call made outside the shim's text while this thread's selector says BLOCK
 * arrives as SIGSYS and is handled there. The selector says BLOCK while the app's code
 * runs and ALLOW while the shim's does: the shim reaches the kernel through libc too. */
#define MIG_SEL_ALLOW 0
#define MIG_SEL_BLOCK 1
extern MIG_TLS char mig_sel;
/* Is complete capture on in this process (record or replay, capture = "trap")? */
extern int mig_trapping;
/* A raw system call from the shim's own text (never trapped): returns -errno on failure
 * and never touches errno, so the shim's own waits (a futex that timed out...) cannot
 * change what the program sees in errno. It is what `syscall` means in the shim. */
long mig_sys(long nr, ...);
/* wrap_poll.c: a trapped pselect6 (its six arguments), recorded as a select. */
long mig_trap_pselect6(const long *a);
#define syscall(...) mig_sys(__VA_ARGS__)
/* Set up trapping for this process (mig_init) and arm the calling thread. */
void mig_trap_init(void);
/* Arm the calling thread (a forked child's first thread: arming is not inherited). */
void mig_trap_arm(void);
/* sigaction with the shim's restorer and SIGSYS kept out of the mask (trapping only). */
int mig_trap_sigaction(int sig, const struct sigaction *act, struct sigaction *old);
/* Run app code (a handler, a thread's function) with the selector at BLOCK. */
#define MIG_APP_CODE(stmt)                                                                  \
    do {                                                                                    \
        char mig_saved_sel_ = mig_sel;                                                      \
        if (__builtin_expect(mig_token_out, 0))                                             \
            mig_sched_resume();                                                             \
        if (mig_trapping)                                                                   \
            mig_sel = MIG_SEL_BLOCK;                                                        \
        __asm__ volatile("" ::: "memory");                                                  \
        stmt;                                                                               \
        __asm__ volatile("" ::: "memory");                                                  \
        mig_sel = mig_saved_sel_;                                                           \
    } while (0)

/* ============================================================ mig_fileid.c: file identity */

/* A regular file's (st_dev, st_ino) as the program first saw them, across a restore: after
 * a successful trapped stat-family call `nr` with arguments a; and once per process after
 * a restore (gen: the ring's arm_gen). */
void mig_fileid_fix(long nr, const long *a);
void mig_fileid_restored(uint32_t gen);

/* ============================================================ mig_proc.c: processes */

/* This process's logical id ("1", "1.2"...), and setting it from MIG_LPID at start. */
const char *mig_lpid(void);
void mig_set_lpid(const char *lpid);
/* A forked child: its own logical id, ring and fresh per-process state. */
void mig_child_after_fork(const char *child_lpid);
/* The next child's logical id (parent lpid + "." + n), counted per process. */
void mig_next_child_lpid(char *out, size_t size);
/* An environment for exec/spawn that keeps mig loaded as `lpid` (static storage). */
char *const *mig_exec_env(char *const envp[], const char *lpid, int same_process);

/* ============================================================ mig_live.c: going live */

/* What replay notes about fds, and the switch itself. */
void mig_track_socket(int fd, int domain, int type, int protocol);
void mig_track_connected(int fd);
void mig_track_bind(int fd, const struct sockaddr *addr, socklen_t len);
void mig_track_listen(int fd, int backlog);
void mig_track_sockopt(int fd, int level, int name, const void *val, socklen_t len);
void mig_track_pair(const int sv[2], int is_pipe, int domain, int type, int protocol);
void mig_track_close(int fd);
void mig_track_dup(int oldfd, int newfd);
void mig_track_epoll(int epfd, int op, int fd, const struct epoll_event *ev);
void mig_go_live(void);
int mig_went_live(void);

/* ============================================================ wrap_*.c, for the core */

/* wrap_signal.c. The shim's handler defers an app handler's run to the next intercepted
 * call (record mode), where it is recorded as a SIGNAL call; replay runs it where the log
 * has it (mig_run_app_handler). */
extern volatile int mig_signals_pending;
void mig_deliver_signals(void);
void mig_run_app_handler(int sig, int code);
/* wrap_thread.c: the next logical thread id of this process (record mode); in replay, ids
 * up to `id` are given (the next one, once live, comes after); a forked child gives out
 * ids from 1 again. */
uint32_t mig_thread_new_id(void);
void mig_thread_seen_id(uint32_t id);
void mig_thread_ids_after_fork(void);
/* wrap_proc.c: a fork, recorded (`make` makes it: libc's fork, or a trapped clone); a
 * replayed child's recorded pid, for the pids the app sees. */
pid_t mig_fork_call(long (*make)(void *), void *ctx);
void mig_remember_child(pid_t recorded, pid_t real);
/* wrap_proc.c: waitid (trapped; a[0..4] as the system call's), recorded as a WAIT: 0 or
 * -errno. */
long mig_waitid(const long *a);
/* wrap_ident.c, replay: a forked child's ids as the primary's child had them. */
void mig_child_identity(pid_t recorded_pid);
/* wrap_io.c: a thread ends: the buffer sendfile and splice copy through is unmapped. */
void mig_copy_thread_exit(void);
/* wrap_net.c, replay: an eventfd standing at fd's number for a file the primary had open
 * there. */
void mig_placeholder_at(int64_t fd, int sock_flags);

/* ============================================================ the wrapper prologue */

static inline char mig_gate_open(void)
{
    char prev = mig_sel;
    mig_sel = MIG_SEL_ALLOW;
    __asm__ volatile("" ::: "memory");
    return prev;
}

static inline void mig_gate_close(char *prev)
{
    __asm__ volatile("" ::: "memory");
    if (__builtin_expect(mig_token_out, 0))
        mig_sched_resume(); /* back to app code: with the token */
    mig_sel = *prev;
}

/* The shim's code runs from here to the end of the enclosing function with the selector
 * at ALLOW; the caller's value comes back on return. mig_init runs first: it arms the
 * first thread, so the value restored is BLOCK. */
#define MIG_GATE                                                                            \
    __attribute__((cleanup(mig_gate_close))) char mig_gate_ = (mig_init(), mig_gate_open())

/* The wrapper prologue. `call_real` is the expression returning the real result. Every
 * call that gets past it is a switch point of serialized threads. */
#define MIG_CHECK(call_real)                                                                \
    do {                                                                                    \
        if (mig_busy || mig_mode == MIG_OFF || mig_mode == MIG_LIVE)                        \
            return call_real;                                                               \
        if (__builtin_expect(mig_serial_on, 0))                                             \
            mig_sched_point();                                                              \
        if (__builtin_expect(mig_signals_pending, 0))                                       \
            mig_deliver_signals();                                                          \
    } while (0)
#define MIG_ENTER(call_real)                                                                \
    MIG_GATE;                                                                               \
    MIG_CHECK(call_real)

/* Poison what the hot path must not use (rr's habit): a wrapper file that calls malloc
 * or printf fails to compile. The files that own the shim's state (mig_start.c and the
 * other mig_*.c files that read the ring) define MIG_CORE before including this. */
#ifndef MIG_CORE
#pragma GCC poison malloc calloc realloc printf fprintf sprintf snprintf
#endif

#endif
