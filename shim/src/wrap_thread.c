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
 * record and replay), every acquisition is recorded after it succeeded, while the lock is
 * held: the log holds each lock's acquisitions in their real order. In replay a thread
 * waits for its acquisition's turn, then takes the lock for real (whoever held it before
 * releases it without needing a turn: its release came before this acquisition on the
 * primary), then lets the next record go. Releases (unlock, post, signal, broadcast) are
 * not recorded and run for real. A condition wait replays as: release the mutex, wait for
 * the turn of the recorded wake-up, take the mutex again; it never sleeps on the condition
 * variable itself, whose wake-ups on the primary are already ordered in the log.
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

static uint32_t next_tid; /* record: the last logical tid given out in this process */

void mig_thread_ids_after_fork(void)
{
    next_tid = 0;
}

static struct slot *claim(void)
{
    for (;;) {
        for (int i = 0; i < SLOTS; i++) {
            uint32_t free_ = 0;
            if (__atomic_compare_exchange_n(&slots[i].state, &free_, 1, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_RELAXED))
                return &slots[i];
        }
        struct timespec pause = {0, 100000};
        syscall(SYS_nanosleep, &pause, NULL);
    }
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
    return fn(arg);
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
    struct mig_call c = {.kind = MIG_K_THREAD_CREATE};
    mig_busy++;
    struct slot *s = claim();
    s->fn = fn;
    s->arg = arg;
    int rc;
    if (mig_mode == MIG_REPLAY && mig_replay(&c, 0)) {
        rc = c.err;
        if (rc == 0) {
            s->tid = (uint32_t)c.result;
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

/* Every acquisition below: `now` performs it for real as the app asked and returns the
 * pthread-style result (0 or an error number). Record: `now`, then record it (with the lock
 * held). Replay: wait for the recorded acquisition's turn; if it succeeded there, take the
 * lock for real with `surely`, the blocking form (it waits at most for the holder to
 * release it, which needs no turn), else return the recorded error. */
#define ACQUIRE(kind_, variant, lockaddr, now, surely)                                      \
    do {                                                                                    \
        struct mig_call c = {.kind = (kind_), .args = {(variant), (int64_t)(lockaddr)}};    \
        mig_busy++;                                                                         \
        int rc_;                                                                            \
        if (mig_mode == MIG_REPLAY && mig_replay(&c, 1)) {                                  \
            rc_ = c.err;                                                                    \
            if (rc_ == 0)                                                                   \
                (void)(surely);                                                             \
            mig_replay_done();                                                              \
        } else {                                                                            \
            rc_ = (now);                                                                    \
            c.err = rc_;                                                                    \
            mig_record(&c);                                                                 \
        }                                                                                   \
        mig_busy--;                                                                         \
        return rc_;                                                                         \
    } while (0)

/* Only once the process has threads: before that, order is the program's own. */
#define SYNC_ENTER(call_real)                                                               \
    do {                                                                                    \
        MIG_ENTER(call_real);                                                               \
        if (!__atomic_load_n(&mig_threads, __ATOMIC_ACQUIRE))                               \
            return call_real;                                                               \
    } while (0)

MIG_EXPORT int pthread_join(pthread_t t, void **ret)
{
    SYNC_ENTER(mig_real.pthread_join(t, ret));
    ACQUIRE(MIG_K_THREAD_JOIN, 0, 0, mig_real.pthread_join(t, ret),
            mig_real.pthread_join(t, ret));
}

MIG_EXPORT int pthread_mutex_lock(pthread_mutex_t *m)
{
    SYNC_ENTER(mig_real.pthread_mutex_lock(m));
    ACQUIRE(MIG_K_MUTEX_LOCK, 0, m, mig_real.pthread_mutex_lock(m),
            mig_real.pthread_mutex_lock(m));
}

MIG_EXPORT int pthread_mutex_trylock(pthread_mutex_t *m)
{
    SYNC_ENTER(mig_real.pthread_mutex_trylock(m));
    ACQUIRE(MIG_K_MUTEX_LOCK, 1, m, mig_real.pthread_mutex_trylock(m),
            mig_real.pthread_mutex_lock(m));
}

MIG_EXPORT int pthread_mutex_timedlock(pthread_mutex_t *m, const struct timespec *at)
{
    SYNC_ENTER(mig_real.pthread_mutex_timedlock(m, at));
    ACQUIRE(MIG_K_MUTEX_LOCK, 2, m, mig_real.pthread_mutex_timedlock(m, at),
            mig_real.pthread_mutex_lock(m));
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

/* A condition wait: recorded when it returns (the mutex held again), with its result. */
static int cond_wait(pthread_cond_t *cv, pthread_mutex_t *m, const struct timespec *at)
{
    struct mig_call c = {.kind = MIG_K_COND_WAIT, .args = {at != NULL, (int64_t)cv}};
    mig_busy++;
    int rc;
    if (mig_mode == MIG_REPLAY) {
        mig_real.pthread_mutex_unlock(m);
        if (mig_replay(&c, 1)) {
            mig_real.pthread_mutex_lock(m);
            rc = c.err;
            mig_replay_done();
            mig_busy--;
            return rc;
        }
        /* the log ended while this thread waited: wait for real from here */
        mig_real.pthread_mutex_lock(m);
    }
    rc = at ? mig_real.pthread_cond_timedwait(cv, m, at) : mig_real.pthread_cond_wait(cv, m);
    c.err = rc;
    mig_record(&c);
    mig_busy--;
    return rc;
}

MIG_EXPORT int pthread_cond_wait(pthread_cond_t *cv, pthread_mutex_t *m)
{
    SYNC_ENTER(mig_real.pthread_cond_wait(cv, m));
    return cond_wait(cv, m, NULL);
}

MIG_EXPORT int pthread_cond_timedwait(pthread_cond_t *cv, pthread_mutex_t *m,
                                      const struct timespec *at)
{
    SYNC_ENTER(mig_real.pthread_cond_timedwait(cv, m, at));
    return cond_wait(cv, m, at);
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
            if (err_ == 0)                                                                  \
                while (mig_real.sem_wait(sem) != 0 && errno == EINTR)                       \
                    ;                                                                       \
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
