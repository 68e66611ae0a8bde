/* wrap_thread.c -- threads and the synchronisation between them: pthread_create,
 * pthread_join, mutexes, reader-writer locks, condition variables, semaphores.
 *
 * Thread identity. Each thread has a logical id (mig_tid): 0 for a process's first thread,
 * then 1, 2... in the order pthread_create was recorded in that process. Every record
 * carries it, and in replay a thread takes only a record of its own at the ring's tail
 * (mig_replay.c), so the threads of a process make their intercepted calls in the
 * recorded order.
 *
 * Synchronisation. Once a process has created a thread (mig_threads > 0, the same point in
 * record and replay), acquisitions are recorded after they succeeded, while the lock is
 * held: the log holds each lock's acquisitions in their real order. Mutexes are recorded
 * only when they change owner (the lock-order protocol, mig_lockorder.c, which takes every
 * mutex acquisition); reader-writer locks, semaphores and condition waits always. In replay a thread waits for its acquisition's turn, then
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
        /* the thread is registered at its clone, trapped like any other (mig_clone.c) */
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
                mig_lock_tail_waits_any();                                                  \
                (void)(surely);                                                             \
                mig_lock_tail_waits_none();                                                 \
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
 * own code, and its futex calls, trapped, are where threads switch. Its entry is a switch
 * point like any call's: a thread that loops taking a lock no one else holds (Redis's
 * idle I/O threads) lets the others run there. */
#define SYNC_ENTER(call_real)                                                               \
    MIG_GATE;                                                                               \
    if (mig_serial && !mig_busy && (mig_mode == MIG_RECORD || mig_mode == MIG_REPLAY)) {    \
        int serial_rc_;                                                                     \
        if (__builtin_expect(mig_serial_on, 0))                                             \
            mig_sched_point();                                                              \
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
    return mig_lock_mutex(m, 0, NULL, CLOCK_REALTIME);
}

MIG_EXPORT int pthread_mutex_trylock(pthread_mutex_t *m)
{
    SYNC_ENTER(mig_real.pthread_mutex_trylock(m));
    return mig_lock_mutex(m, 1, NULL, CLOCK_REALTIME);
}

MIG_EXPORT int pthread_mutex_timedlock(pthread_mutex_t *m, const struct timespec *at)
{
    SYNC_ENTER(mig_real.pthread_mutex_timedlock(m, at));
    return mig_lock_mutex(m, 2, at, CLOCK_REALTIME);
}

MIG_EXPORT int pthread_mutex_clocklock(pthread_mutex_t *m, clockid_t clk,
                                       const struct timespec *at)
{
    SYNC_ENTER(mig_real.pthread_mutex_clocklock(m, clk, at));
    return mig_lock_mutex(m, 4, at, clk);
}

MIG_EXPORT int pthread_mutex_init(pthread_mutex_t *m, const pthread_mutexattr_t *attr)
{
    MIG_ENTER(mig_real.pthread_mutex_init(m, attr));
    mig_lock_forget(m);
    return mig_real.pthread_mutex_init(m, attr);
}

MIG_EXPORT int pthread_mutex_destroy(pthread_mutex_t *m)
{
    MIG_ENTER(mig_real.pthread_mutex_destroy(m));
    mig_lock_forget(m);
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

MIG_EXPORT int pthread_cond_wait(pthread_cond_t *cv, pthread_mutex_t *m)
{
    SYNC_ENTER(mig_real.pthread_cond_wait(cv, m));
    return mig_lock_cond_wait(cv, m, NULL, -1);
}

MIG_EXPORT int pthread_cond_timedwait(pthread_cond_t *cv, pthread_mutex_t *m,
                                      const struct timespec *at)
{
    SYNC_ENTER(mig_real.pthread_cond_timedwait(cv, m, at));
    return mig_lock_cond_wait(cv, m, at, -1);
}

MIG_EXPORT int pthread_cond_clockwait(pthread_cond_t *cv, pthread_mutex_t *m, clockid_t clk,
                                      const struct timespec *at)
{
    SYNC_ENTER(mig_real.pthread_cond_clockwait(cv, m, clk, at));
    return mig_lock_cond_wait(cv, m, at, clk);
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
                mig_lock_tail_waits_any();                                                  \
                while (mig_real.sem_wait(sem) != 0 && errno == EINTR)                       \
                    ;                                                                       \
                mig_lock_tail_waits_none();                                                 \
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
