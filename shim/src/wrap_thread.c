/* wrap_thread.c -- threads and the synchronisation between them: pthread_create,
 * pthread_join, mutexes, reader-writer locks, condition variables, semaphores.
 *
 * Thread identity. Each thread has a logical id (mig_tid): 0 for a process's first thread,
 * then 1, 2... in the order pthread_create was recorded in that process. Every record
 * carries it, and in replay a thread takes only a record of its own at the ring's tail
 * (mig_core.c, next_record), so the threads of a process make their intercepted calls in
 * the recorded order.
 *
 * Synchronisation. Once a process has created a thread (mig_threads > 0, the same point in
 * record and replay), acquisitions are recorded after they succeeded, while the lock is
 * held: the log holds each lock's acquisitions in their real order. Mutexes are recorded
 * only when they change owner (below, "mutex ownership"); reader-writer locks, semaphores
 * and condition waits always. In replay a thread waits for its acquisition's turn, then
 * takes the lock for real (whoever held it before releases it without needing a turn: its
 * release came before this acquisition on the primary), then lets the next record go.
 * Releases (unlock, post, signal, broadcast) are not recorded and run for real. A
 * condition wait replays as: release the mutex, wait for the turn of the recorded
 * wake-up, take the mutex again; it never sleeps on the condition variable itself, whose
 * wake-ups on the primary are already ordered in the log.
 *
 * What this cannot order: memory shared without these primitives (data races, lock-free
 * atomics, raw futex calls). Such a program can take another path in replay; that shows
 * as a divergence (a different call, a different output, or threads out of step), never
 * as a silent drift. docs/threads.md. */
#include "mig.h"

#include <pthread.h>
#include <semaphore.h>
#include <string.h>
#include <sys/syscall.h>
#include <linux/futex.h>
#include <unistd.h>

/* Start arguments of threads being created (no malloc in the shim). */
#define SLOTS 256
static struct slot {
    uint32_t state; /* 0 free, 1 taken by a creator, 2 the creator recorded: go */
    uint32_t tid;
    void *(*fn)(void *);
    void *arg;
} slots[SLOTS];
_Static_assert(offsetof(struct slot, state) == 0, "mig_claim takes the state first");

static uint32_t next_tid; /* record: the last logical tid given out in this process */

void mig_thread_ids_after_fork(void)
{
    next_tid = 0;
}

uint32_t mig_thread_new_id(void)
{
    return __atomic_add_fetch(&next_tid, 1, __ATOMIC_ACQ_REL);
}

void mig_thread_seen_id(uint32_t id)
{
    uint32_t cur = __atomic_load_n(&next_tid, __ATOMIC_ACQUIRE);
    while (cur < id &&
           !__atomic_compare_exchange_n(&next_tid, &cur, id, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
        ;
}

static void *start(void *p)
{
    struct slot *s = p;
    /* record mode: wait until the creator's THREAD_CREATE record is in the ring, so that
     * none of this thread's records comes before it */
    while (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) != 2)
        syscall(SYS_futex, &s->state, FUTEX_WAIT, 1, NULL, NULL, 0);
    mig_tid = s->tid;
    void *(*fn)(void *) = s->fn;
    void *arg = s->arg;
    __atomic_store_n(&s->state, 0, __ATOMIC_RELEASE);
    void *ret;
    MIG_APP_CODE(ret = fn(arg));
    if (mig_mode == MIG_RECORD || mig_mode == MIG_REPLAY) {
        mig_busy++;
        mig_quiet_flush();
        mig_busy--;
    }
    return ret;
}

static void go(struct slot *s)
{
    __atomic_store_n(&s->state, 2, __ATOMIC_RELEASE);
    syscall(SYS_futex, &s->state, FUTEX_WAKE, 1, NULL, NULL, 0);
}

MIG_EXPORT int pthread_create(pthread_t *thread, const pthread_attr_t *attr,
                              void *(*fn)(void *), void *arg)
{
    MIG_ENTER(mig_real.pthread_create(thread, attr, fn, arg));
    if (mig_trapping) {
        /* the thread is registered at its clone, trapped like any other (mig_trap.c) */
        int rc;
        MIG_APP_CODE(rc = mig_real.pthread_create(thread, attr, fn, arg));
        return rc;
    }
    struct mig_call c = {.kind = MIG_K_THREAD_CREATE};
    mig_busy++;
    struct slot *s = mig_claim(slots, sizeof *slots, SLOTS);
    s->fn = fn;
    s->arg = arg;
    int rc;
    if (mig_mode == MIG_REPLAY && mig_replay(&c, 0)) {
        rc = c.err;
        if (rc == 0) {
            s->tid = (uint32_t)c.result;
            mig_thread_seen_id(s->tid);
            __atomic_add_fetch(&mig_threads, 1, __ATOMIC_ACQ_REL);
            go(s);
            rc = mig_real.pthread_create(thread, attr, start, s);
            if (rc != 0)
                mig_warn("pthread_create failed in replay where it succeeded on the primary",
                         NULL);
        }
        mig_replay_done();
    } else {
        s->tid = __atomic_add_fetch(&next_tid, 1, __ATOMIC_ACQ_REL);
        __atomic_add_fetch(&mig_threads, 1, __ATOMIC_ACQ_REL); /* before the thread runs */
        rc = mig_real.pthread_create(thread, attr, start, s);
        if (rc != 0) /* as in replay, where a recorded failure counts no thread */
            __atomic_sub_fetch(&mig_threads, 1, __ATOMIC_ACQ_REL);
        c.result = rc == 0 ? (int64_t)s->tid : -1;
        c.err = rc;
        mig_record(&c);
        if (rc == 0)
            go(s); /* the thread's own records may follow now */
    }
    if (rc != 0)
        __atomic_store_n(&s->state, 0, __ATOMIC_RELEASE);
    mig_busy--;
    return rc;
}

/* ------------------------------------------------------------------ mutex ownership
 *
 * A mutex acquisition is recorded only when it changes the mutex's owner (the thread that
 * took it last), so a thread that takes the same mutex again and again, while no other
 * thread does, makes no records for it. Each mutex has a count of its acquisitions; a
 * recorded acquisition carries the count (args[2]), and each thread counts its unrecorded
 * ones (mig_quiet) and says how many it made in a RUN record before its next record
 * (mig_core.c, mig_record), or after MIG_QUIET_MAX of them.
 *
 * Replay. A thread that was a mutex's last owner asks its own next record: when it is a
 * RUN record still counting more than this thread has made, this acquisition was an
 * unrecorded one: the thread takes the mutex with no turn. Otherwise it is the next
 * record, taken at its turn. A recorded acquisition, at its turn, waits until the mutex's
 * count reaches the one before its own: the previous owner's unrecorded acquisitions come
 * first, as they did on the primary. No other thread can take the mutex in between: any
 * other acquisition is a record, and waits for the count too.
 *
 * The next record of a thread may not be in the ring yet (the ring holds a window of the
 * log). Then it waits, unless the thread holding the log's tail waits for it (can_pass):
 * for a count this thread has yet to make, a mutex this thread holds, or a semaphore,
 * thread join or reader-writer lock (anyone's progress): on the primary this thread's
 * acquisition came before that record, so no other thread's record can take it first.
 *
 * The table is keyed by the mutex's address here (heap addresses differ between hosts,
 * counts do not); pthread_mutex_init and _destroy start a mutex's count again, so memory
 * reused for another mutex must go through one of them (docs/threads.md). A mutex the
 * table has no room for is recorded at every acquisition, with no count. */

/* The clock of this thread's pthread_mutex_clocklock in progress (variant 4). */
static MIG_TLS clockid_t lock_clock;

#define LOCKS (1u << 20)
static struct lock {
    uintptr_t addr;
    uint32_t owner;  /* logical tid + 1 of the last thread to take it, 0: none yet */
    uint32_t pad;
    uint64_t count;  /* acquisitions since pthread_mutex_init (or the first one seen) */
} locks[LOCKS];

/* The table entry of the mutex at addr, made at first sight. NULL when the table has no
 * room near its hash: that mutex is then recorded at every acquisition, as it would be
 * without the table (count 0: nothing to wait for in replay). */
static struct lock *lock_of(const void *addr)
{
    uintptr_t a = (uintptr_t)addr;
    uint32_t h = (uint32_t)(((uint64_t)a * 0x9E3779B97F4A7C15ull) >> 44);
    for (uint32_t i = 0; i < 128; i++) {
        struct lock *l = &locks[(h + i) & (LOCKS - 1)];
        uintptr_t key = __atomic_load_n(&l->addr, __ATOMIC_ACQUIRE);
        if (key == a)
            return l;
        if (key == 0) {
            if (__atomic_compare_exchange_n(&l->addr, &key, a, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE) || key == a)
                return l;
        }
    }
    static int said;
    if (!__atomic_exchange_n(&said, 1, __ATOMIC_ACQ_REL))
        mig_warn("too many mutexes to track: some are recorded at every acquisition", NULL);
    return NULL;
}

/* Replay: what the thread holding the log's tail waits for (set only by that thread). */
enum { TW_NONE, TW_COUNT, TW_HELD, TW_ANY };
static struct {
    uint32_t gen; /* odd while being written */
    uint32_t kind;
    struct lock *lock;
    uint64_t count; /* TW_COUNT: the count it waits for */
    pthread_mutex_t *m;
} tail_wait;
static uint32_t lock_moves;   /* replay: bumped when a count moves, for count waiters */
static uint32_t count_waiters;
static MIG_TLS pid_t my_ktid;

static void set_tail_wait(uint32_t kind, struct lock *l, uint64_t count, pthread_mutex_t *m)
{
    __atomic_add_fetch(&tail_wait.gen, 1, __ATOMIC_ACQ_REL);
    __atomic_store_n(&tail_wait.kind, kind, __ATOMIC_RELAXED);
    __atomic_store_n(&tail_wait.lock, l, __ATOMIC_RELAXED);
    __atomic_store_n(&tail_wait.count, count, __ATOMIC_RELAXED);
    __atomic_store_n(&tail_wait.m, m, __ATOMIC_RELAXED);
    __atomic_add_fetch(&tail_wait.gen, 1, __ATOMIC_ACQ_REL);
    if (kind != TW_NONE)
        mig_replay_nudge();
}

static int can_pass(void)
{
    uint32_t g1, kind;
    struct lock *l;
    uint64_t count;
    pthread_mutex_t *m;
    do {
        g1 = __atomic_load_n(&tail_wait.gen, __ATOMIC_ACQUIRE);
        kind = __atomic_load_n(&tail_wait.kind, __ATOMIC_RELAXED);
        l = __atomic_load_n(&tail_wait.lock, __ATOMIC_RELAXED);
        count = __atomic_load_n(&tail_wait.count, __ATOMIC_RELAXED);
        m = __atomic_load_n(&tail_wait.m, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
    } while ((g1 & 1) || g1 != __atomic_load_n(&tail_wait.gen, __ATOMIC_ACQUIRE));
    switch (kind) {
    case TW_ANY:
        return 1;
    case TW_COUNT: /* it waits for acquisitions only this thread, its last owner, makes */
        return __atomic_load_n(&l->owner, __ATOMIC_ACQUIRE) == mig_tid + 1 &&
               __atomic_load_n(&l->count, __ATOMIC_ACQUIRE) + 1 < count;
    case TW_HELD: /* it waits for a mutex this thread holds (glibc's owner field) */
        if (!my_ktid)
            my_ktid = (pid_t)syscall(SYS_gettid);
        return __atomic_load_n(&m->__data.__owner, __ATOMIC_ACQUIRE) == my_ktid;
    }
    return 0;
}

/* Replay, at its turn: wait until the mutex's count is the one before `want` (0: a log
 * from before counts, nothing to wait for). */
static void wait_count(struct lock *l, uint64_t want)
{
    if (want == 0 || !l)
        return;
    struct timespec slice = {0, 20000000};
    uint64_t seen = ~0ull, since = 0;
    set_tail_wait(TW_COUNT, l, want, NULL);
    for (;;) {
        uint32_t gen = __atomic_load_n(&lock_moves, __ATOMIC_ACQUIRE);
        uint64_t now = __atomic_load_n(&l->count, __ATOMIC_ACQUIRE);
        if (now + 1 == want)
            break;
        if (now + 1 > want)
            mig_lock_diverged("mutex taken out of order", (int64_t)want, (int64_t)now + 1);
        if (now != seen) {
            seen = now;
            since = mig_monotonic_ns();
        } else if (mig_monotonic_ns() - since > 30000000000ull) {
            /* 30 s without its previous owner taking it once more */
            mig_lock_diverged("threads out of step at a mutex", (int64_t)want,
                              (int64_t)now + 1);
        }
        __atomic_fetch_add(&count_waiters, 1, __ATOMIC_ACQ_REL);
        syscall(SYS_futex, &lock_moves, FUTEX_WAIT, gen, &slice, NULL, 0);
        __atomic_fetch_sub(&count_waiters, 1, __ATOMIC_ACQ_REL);
    }
}

/* The mutex is ours now (count: the recorded one, or 0 to count on; l NULL: untracked). */
static void owned(struct lock *l, uint64_t count)
{
    if (!l)
        return;
    __atomic_store_n(&l->owner, mig_tid + 1, __ATOMIC_RELEASE);
    __atomic_store_n(&l->count, count ? count : l->count + 1, __ATOMIC_RELEASE);
    if (mig_mode == MIG_REPLAY && __atomic_load_n(&count_waiters, __ATOMIC_ACQUIRE)) {
        __atomic_add_fetch(&lock_moves, 1, __ATOMIC_ACQ_REL);
        syscall(SYS_futex, &lock_moves, FUTEX_WAKE, 0x7fffffff, NULL, NULL, 0);
    }
}

/* Replay, at its turn: take the mutex for real as its `count`th acquisition, telling
 * others what we wait for. */
static void take_held(struct lock *l, pthread_mutex_t *m, uint64_t count)
{
    wait_count(l, count);
    set_tail_wait(TW_HELD, l, 0, m);
    mig_real.pthread_mutex_lock(m);
    set_tail_wait(TW_NONE, NULL, 0, NULL);
    owned(l, count);
}

/* variant 0 lock, 1 trylock, 2 timedlock */
static int mutex_acquire(pthread_mutex_t *m, int variant, const struct timespec *at)
{
    mig_busy++;
    struct lock *l = lock_of(m);
    int rc;
    if (mig_mode == MIG_REPLAY) {
        int quiet = 0;
        if (l && __atomic_load_n(&l->owner, __ATOMIC_ACQUIRE) == mig_tid + 1)
            quiet = mig_replay_quiet(can_pass);
        if (quiet == 1) {
            mig_real.pthread_mutex_lock(m);
            mig_quiet++;
            owned(l, 0);
            mig_busy--;
            return 0;
        }
        struct mig_call c = {.kind = MIG_K_MUTEX_LOCK, .args = {variant, (int64_t)m}};
        if (quiet == 0 && mig_replay(&c, 1)) {
            rc = c.err;
            if (rc == 0)
                take_held(l, m, (uint64_t)c.rec_args[2]);
            mig_replay_done();
            mig_busy--;
            return rc;
        }
        /* the process went live: the acquisition is made and recorded for real */
    }
    rc = variant == 0   ? mig_real.pthread_mutex_lock(m)
         : variant == 1 ? mig_real.pthread_mutex_trylock(m)
         : variant == 2 ? mig_real.pthread_mutex_timedlock(m, at)
                        : mig_real.pthread_mutex_clocklock(m, lock_clock, at);
    if (rc == 0 && l && l->owner == mig_tid + 1 && mig_quiet < MIG_QUIET_MAX) {
        l->count++;
        mig_quiet++;
        mig_busy--;
        return 0;
    }
    struct mig_call c = {.kind = MIG_K_MUTEX_LOCK, .args = {variant, (int64_t)m}, .err = rc};
    if (rc == 0 && l) {
        owned(l, 0);
        c.args[2] = (int64_t)l->count;
    }
    mig_record(&c);
    mig_busy--;
    return rc;
}

/* Every other acquisition below: `now` performs it for real as the app asked and returns
 * the pthread-style result (0 or an error number). Record: `now`, then record it (with the
 * lock held). Replay: wait for the recorded acquisition's turn; if it succeeded there, take
 * the lock for real with `surely`, the blocking form (it waits at most for the holder to
 * release it, which needs no turn), else return the recorded error. */
#define ACQUIRE(kind_, variant, lockaddr, now, surely)                                      \
    do {                                                                                    \
        struct mig_call c = {.kind = (kind_), .args = {(variant), (int64_t)(lockaddr)}};    \
        mig_busy++;                                                                         \
        int rc_;                                                                            \
        if (mig_mode == MIG_REPLAY && mig_replay(&c, 1)) {                                  \
            rc_ = c.err;                                                                    \
            if (rc_ == 0) {                                                                 \
                set_tail_wait(TW_ANY, NULL, 0, NULL);                                       \
                (void)(surely);                                                             \
                set_tail_wait(TW_NONE, NULL, 0, NULL);                                      \
            }                                                                               \
            mig_replay_done();                                                              \
        } else {                                                                            \
            rc_ = (now);                                                                    \
            c.err = rc_;                                                                    \
            mig_record(&c);                                                                 \
        }                                                                                   \
        mig_busy--;                                                                         \
        return rc_;                                                                         \
    } while (0)

/* Only once the process has threads: before that, order is the program's own. Not a
 * do-while block: MIG_ENTER's gate must stay open until the wrapper returns.
 * Serialized threads (mig_sched.c) record none of this: the primitive runs as the app's
 * own code, and its futex calls, trapped, are where threads switch. */
#define SYNC_ENTER(call_real)                                                               \
    MIG_GATE;                                                                               \
    if (mig_serial && !mig_busy && (mig_mode == MIG_RECORD || mig_mode == MIG_REPLAY)) {    \
        int serial_rc_;                                                                     \
        MIG_APP_CODE(serial_rc_ = (call_real));                                             \
        return serial_rc_;                                                                  \
    }                                                                                       \
    MIG_CHECK(call_real);                                                                   \
    if (!__atomic_load_n(&mig_threads, __ATOMIC_ACQUIRE))                                   \
    return call_real

MIG_EXPORT int pthread_join(pthread_t t, void **ret)
{
    SYNC_ENTER(mig_real.pthread_join(t, ret));
    ACQUIRE(MIG_K_THREAD_JOIN, 0, 0, mig_real.pthread_join(t, ret),
            mig_real.pthread_join(t, ret));
}

MIG_EXPORT int pthread_mutex_lock(pthread_mutex_t *m)
{
    SYNC_ENTER(mig_real.pthread_mutex_lock(m));
    return mutex_acquire(m, 0, NULL);
}

MIG_EXPORT int pthread_mutex_trylock(pthread_mutex_t *m)
{
    SYNC_ENTER(mig_real.pthread_mutex_trylock(m));
    return mutex_acquire(m, 1, NULL);
}

MIG_EXPORT int pthread_mutex_timedlock(pthread_mutex_t *m, const struct timespec *at)
{
    SYNC_ENTER(mig_real.pthread_mutex_timedlock(m, at));
    return mutex_acquire(m, 2, at);
}

MIG_EXPORT int pthread_mutex_clocklock(pthread_mutex_t *m, clockid_t clk,
                                       const struct timespec *at)
{
    SYNC_ENTER(mig_real.pthread_mutex_clocklock(m, clk, at));
    lock_clock = clk;
    return mutex_acquire(m, 4, at);
}

/* A new mutex at an address counts from 0, whichever mutex lived there before. */
static void forget(pthread_mutex_t *m)
{
    if (mig_mode != MIG_RECORD && mig_mode != MIG_REPLAY)
        return;
    struct lock *l = lock_of(m);
    if (!l)
        return;
    __atomic_store_n(&l->owner, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&l->count, 0, __ATOMIC_RELEASE);
}

MIG_EXPORT int pthread_mutex_init(pthread_mutex_t *m, const pthread_mutexattr_t *attr)
{
    MIG_ENTER(mig_real.pthread_mutex_init(m, attr));
    forget(m);
    return mig_real.pthread_mutex_init(m, attr);
}

MIG_EXPORT int pthread_mutex_destroy(pthread_mutex_t *m)
{
    MIG_ENTER(mig_real.pthread_mutex_destroy(m));
    forget(m);
    return mig_real.pthread_mutex_destroy(m);
}

MIG_EXPORT int pthread_rwlock_rdlock(pthread_rwlock_t *l)

{
    SYNC_ENTER(mig_real.pthread_rwlock_rdlock(l));
    ACQUIRE(MIG_K_RWLOCK, 0, l, mig_real.pthread_rwlock_rdlock(l),
            mig_real.pthread_rwlock_rdlock(l));
}

MIG_EXPORT int pthread_rwlock_wrlock(pthread_rwlock_t *l)
{
    SYNC_ENTER(mig_real.pthread_rwlock_wrlock(l));
    ACQUIRE(MIG_K_RWLOCK, 1, l, mig_real.pthread_rwlock_wrlock(l),
            mig_real.pthread_rwlock_wrlock(l));
}

MIG_EXPORT int pthread_rwlock_tryrdlock(pthread_rwlock_t *l)
{
    SYNC_ENTER(mig_real.pthread_rwlock_tryrdlock(l));
    ACQUIRE(MIG_K_RWLOCK, 2, l, mig_real.pthread_rwlock_tryrdlock(l),
            mig_real.pthread_rwlock_rdlock(l));
}

MIG_EXPORT int pthread_rwlock_trywrlock(pthread_rwlock_t *l)
{
    SYNC_ENTER(mig_real.pthread_rwlock_trywrlock(l));
    ACQUIRE(MIG_K_RWLOCK, 3, l, mig_real.pthread_rwlock_trywrlock(l),
            mig_real.pthread_rwlock_wrlock(l));
}

MIG_EXPORT int pthread_rwlock_timedrdlock(pthread_rwlock_t *l, const struct timespec *at)
{
    SYNC_ENTER(mig_real.pthread_rwlock_timedrdlock(l, at));
    ACQUIRE(MIG_K_RWLOCK, 4, l, mig_real.pthread_rwlock_timedrdlock(l, at),
            mig_real.pthread_rwlock_rdlock(l));
}

MIG_EXPORT int pthread_rwlock_timedwrlock(pthread_rwlock_t *l, const struct timespec *at)
{
    SYNC_ENTER(mig_real.pthread_rwlock_timedwrlock(l, at));
    ACQUIRE(MIG_K_RWLOCK, 5, l, mig_real.pthread_rwlock_timedwrlock(l, at),
            mig_real.pthread_rwlock_wrlock(l));
}

/* A condition wait: recorded when it returns (the mutex held again), with its result and
 * the mutex's count, like any acquisition that changes the mutex's owner. `clk` is the
 * clock of pthread_cond_clockwait (args[0] 2), or -1 for the other two (0 and 1). */
static int cond_wait(pthread_cond_t *cv, pthread_mutex_t *m, const struct timespec *at,
                     clockid_t clk)
{
    struct mig_call c = {.kind = MIG_K_COND_WAIT,
                         .args = {clk >= 0 ? 2 : at != NULL, (int64_t)cv}};
    mig_busy++;
    struct lock *l = lock_of(m);
    int rc;
    if (mig_mode == MIG_REPLAY) {
        mig_real.pthread_mutex_unlock(m);
        if (mig_replay(&c, 1)) {
            take_held(l, m, (uint64_t)c.rec_args[2]);
            rc = c.err;
            mig_replay_done();
            mig_busy--;
            return rc;
        }
        /* the log ended while this thread waited: wait for real from here */
        mig_real.pthread_mutex_lock(m);
    }
    rc = clk >= 0 ? mig_real.pthread_cond_clockwait(cv, m, clk, at)
         : at     ? mig_real.pthread_cond_timedwait(cv, m, at)
                  : mig_real.pthread_cond_wait(cv, m);
    if (l) {
        owned(l, 0);
        c.args[2] = (int64_t)l->count;
    }
    c.err = rc;
    mig_record(&c);
    mig_busy--;
    return rc;
}

MIG_EXPORT int pthread_cond_wait(pthread_cond_t *cv, pthread_mutex_t *m)
{
    SYNC_ENTER(mig_real.pthread_cond_wait(cv, m));
    return cond_wait(cv, m, NULL, -1);
}

MIG_EXPORT int pthread_cond_timedwait(pthread_cond_t *cv, pthread_mutex_t *m,
                                      const struct timespec *at)
{
    SYNC_ENTER(mig_real.pthread_cond_timedwait(cv, m, at));
    return cond_wait(cv, m, at, -1);
}

MIG_EXPORT int pthread_cond_clockwait(pthread_cond_t *cv, pthread_mutex_t *m, clockid_t clk,
                                      const struct timespec *at)
{
    SYNC_ENTER(mig_real.pthread_cond_clockwait(cv, m, clk, at));
    return cond_wait(cv, m, at, clk);
}

/* Semaphores return -1 with errno; recorded as the error number (0: acquired). */
static int sem_result(int rc)
{
    return rc == 0 ? 0 : errno;
}

#define SEM_ACQUIRE(variant, sem, acquire)                                                  \
    do {                                                                                    \
        struct mig_call c = {.kind = MIG_K_SEM_WAIT, .args = {(variant), (int64_t)(sem)}};  \
        mig_busy++;                                                                         \
        int err_;                                                                           \
        if (mig_mode == MIG_REPLAY && mig_replay(&c, 1)) {                                  \
            err_ = c.err;                                                                   \
            if (err_ == 0) {                                                                \
                set_tail_wait(TW_ANY, NULL, 0, NULL);                                       \
                while (mig_real.sem_wait(sem) != 0 && errno == EINTR)                       \
                    ;                                                                       \
                set_tail_wait(TW_NONE, NULL, 0, NULL);                                      \
            }                                                                               \
            mig_replay_done();                                                              \
        } else {                                                                            \
            err_ = sem_result(acquire);                                                     \
            c.err = err_;                                                                   \
            mig_record(&c);                                                                 \
        }                                                                                   \
        mig_busy--;                                                                         \
        if (err_) {                                                                         \
            errno = err_;                                                                   \
            return -1;                                                                      \
        }                                                                                   \
        return 0;                                                                           \
    } while (0)

MIG_EXPORT int sem_wait(sem_t *sem)
{
    SYNC_ENTER(mig_real.sem_wait(sem));
    SEM_ACQUIRE(0, sem, mig_real.sem_wait(sem));
}

MIG_EXPORT int sem_trywait(sem_t *sem)
{
    SYNC_ENTER(mig_real.sem_trywait(sem));
    SEM_ACQUIRE(1, sem, mig_real.sem_trywait(sem));
}

MIG_EXPORT int sem_timedwait(sem_t *sem, const struct timespec *at)
{
    SYNC_ENTER(mig_real.sem_timedwait(sem, at));
    SEM_ACQUIRE(2, sem, mig_real.sem_timedwait(sem, at));
}

MIG_EXPORT int sem_clockwait(sem_t *sem, clockid_t clk, const struct timespec *at)
{
    SYNC_ENTER(mig_real.sem_clockwait(sem, clk, at));
    SEM_ACQUIRE(3, sem, mig_real.sem_clockwait(sem, clk, at));
}
