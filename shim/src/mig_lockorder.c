/* mig_lockorder.c -- the lock-order protocol: mutex acquisitions in the recorded order,
 * with as few records as possible.
 *
 * Once a process has threads, wrap_thread.c hands every mutex acquisition (lock, trylock,
 * timedlock, clocklock, and the re-acquisition at the end of a condition wait) to this
 * file, which decides whether it is recorded, and in replay when it may happen. All of the
 * protocol is here: the table of mutexes, RUN records (made before a thread's next record,
 * taken and checked before it in replay), the look-ahead of a thread for its own next
 * record, and what the thread holding the log's tail waits for.
 *
 * A mutex acquisition is recorded only when it changes the mutex's owner (the thread that
 * took it last), so a thread that takes the same mutex again and again, while no other
 * thread does, makes no records for it. Each mutex has a count of its acquisitions; a
 * recorded acquisition carries the count (args[2]), and each thread counts its unrecorded
 * ones (mig_quiet) and says how many it made in a RUN record before its next record
 * (mig_quiet_record, called by mig_record), or after MIG_QUIET_MAX of them.
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
#define MIG_CORE
#include "mig.h"

#include <linux/futex.h>
#include <pthread.h>
#include <sys/syscall.h>

#include "mig_poison.h"

MIG_TLS uint32_t mig_quiet; /* unrecorded mutex acquisitions since this thread's last record */

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

void mig_lock_tail_waits_any(void)
{
    set_tail_wait(TW_ANY, NULL, 0, NULL);
}

void mig_lock_tail_waits_none(void)
{
    set_tail_wait(TW_NONE, NULL, 0, NULL);
}

/* ------------------------------------------------------------------ RUN records */

/* The thread's unrecorded acquisitions since its last record, as a RUN record: a replay
 * makes as many before it takes the thread's next record. */
void mig_quiet_record(void)
{
    struct mig_call run = {.kind = MIG_K_MUTEX_LOCK, .args = {MIG_LOCK_RUN, 0, mig_quiet}};
    mig_quiet = 0;
    mig_append(&run);
}

/* A RUN record must count exactly the acquisitions this thread made without a record
 * since its last one. */
void mig_quiet_take_run(const struct mig_rec *rec)
{
    if ((int64_t)mig_quiet != rec->args[2])
        mig_diverge_run(rec, rec->args[2], mig_quiet);
    mig_quiet = 0;
}

void mig_quiet_expect_none(const struct mig_rec *rec)
{
    if (mig_quiet)
        mig_diverge_run(rec, 0, mig_quiet);
}

void mig_quiet_flush(void)
{
    if (!mig_quiet)
        return;
    if (mig_mode == MIG_RECORD) {
        mig_quiet_record();
    } else if (mig_mode == MIG_REPLAY) {
        struct mig_call front = {.kind = MIG_K_MUTEX_LOCK, .args = {MIG_LOCK_RUN}};
        struct mig_rec *rec = mig_replay_next();
        if (rec && !mig_is_run(rec))
            mig_diverge(rec, &front, "call kind differs at a thread's end", rec->kind,
                        front.kind);
        if (rec)
            mig_replay_take_front(rec);
    }
}

/* Replay mode, at a mutex acquisition by its last owner: was it one the primary did not
 * record (1: this thread's RUN record, somewhere ahead in the ring, counts it), or this
 * thread's next record (0)? -1: the process went live meanwhile, record it. While the
 * ring does not show this thread's next record yet, can_pass may say 1: the thread at the
 * log's tail waits for this one, so this acquisition came first. */
static int replay_quiet(void)
{
    for (;;) {
        uint32_t gen;
        if (!mig_replay_look(&gen))
            return -1;
        const struct mig_rec *rec = mig_replay_own_next();
        if (rec && mig_is_run(rec) && (int64_t)mig_quiet < rec->args[2])
            return 1;
        if (rec && (mig_is_run(rec) || rec->kind == MIG_K_SIGNAL)) {
            /* before this acquisition: take it at its turn, then look again */
            struct mig_rec *at = mig_replay_next();
            if (!at)
                return -1;
            mig_replay_take_front(at);
            continue;
        }
        if (rec)
            return 0;
        if (can_pass())
            return 1;
        if (!mig_replay_wait_more(gen))
            return -1;
    }
}

/* ------------------------------------------------------------------ acquisitions */

int mig_lock_mutex(pthread_mutex_t *m, int variant, const struct timespec *at, clockid_t clk)
{
    mig_busy++;
    struct lock *l = lock_of(m);
    int rc;
    if (mig_mode == MIG_REPLAY) {
        int quiet = 0;
        if (l && __atomic_load_n(&l->owner, __ATOMIC_ACQUIRE) == mig_tid + 1)
            quiet = replay_quiet();
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
                        : mig_real.pthread_mutex_clocklock(m, clk, at);
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

void mig_lock_forget(pthread_mutex_t *m)
{
    if (mig_mode != MIG_RECORD && mig_mode != MIG_REPLAY)
        return;
    struct lock *l = lock_of(m);
    if (!l)
        return;
    __atomic_store_n(&l->owner, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&l->count, 0, __ATOMIC_RELEASE);
}

int mig_lock_cond_wait(pthread_cond_t *cv, pthread_mutex_t *m, const struct timespec *at,
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
