/* mig_replay.c -- replay mode: the consumer side of this process's ring.
 *
 * The replay worker fills the ring with the process's recorded calls in log order; each
 * thread takes only a record of its own, at the ring's tail, so the threads of a process
 * make their intercepted calls in the recorded order. A wrapper asks mig_replay() for the
 * record of the call it is making: the kind and arguments must match (else a divergence,
 * mig_diverge.c), and the recorded result, errno and input bytes come back. Owns: waiting
 * for a thread's turn, PAD records, re-arming after a restore, taking the RUN and SIGNAL
 * records that come before a thread's next call, and the switch to live when the log has
 * ended (mig_live.c does the switch itself). */
#define MIG_CORE
#include "mig.h"

#include <linux/futex.h>
#include <string.h>

#include "mig_poison.h"

static MIG_TLS uint64_t replay_pending; /* replay: length of this thread's record handed out,
                                         * not yet released */
static uint64_t replay_next_seq; /* replay: seq after the last record handed out */
static MIG_TLS uint64_t own_scan; /* replay: ring position up to which this thread looked for
                                   * its next record without finding it */
static MIG_TLS uint32_t arm_seen; /* the ring's arm_gen when this thread last armed */

/* Replay: threads waiting for their turn while the record at the tail is another
 * thread's. Each sleeps on a word of its own in a slot here, and a move of the tail wakes
 * only the thread whose record is now at it (or every one, when the ring ran empty or a
 * filler is there: they look again). A move woke every waiting thread before, each about
 * once per call taken (Redis's three background threads waiting so made its replica spend
 * half its time on the wakes), and made a system call on a shared page even with none
 * asleep. A sleeper takes a slot and counts itself before it looks at the tail a last
 * time; the mover moves the tail before it looks at the count (sequentially consistent):
 * either the mover sees the sleeper, or the sleeper sees the tail moved. A thread that
 * finds no free slot waits on the ring's turn_futex, which every move bumps. */
#define TURN_SLOTS 64
static struct turn_slot {
    uint32_t tid1; /* mig_tid + 1 of the thread asleep in it; 0: free */
    uint32_t word; /* its futex word, bumped to wake it */
} turn_slot[TURN_SLOTS];
static uint32_t turn_sleepers; /* threads in a slot or on turn_futex */
static uint32_t turn_shared;   /* ... of them on turn_futex */

static void turn_sleep(uint64_t tail, uint32_t turn, const struct timespec *slice)
{
    struct turn_slot *slot = NULL;
    for (int i = 0; i < TURN_SLOTS && !slot; i++) {
        uint32_t free_ = 0;
        if (__atomic_load_n(&turn_slot[i].tid1, __ATOMIC_RELAXED) == 0 &&
            __atomic_compare_exchange_n(&turn_slot[i].tid1, &free_, mig_tid + 1, 0,
                                        __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
            slot = &turn_slot[i];
    }
    __atomic_fetch_add(&mig_ring->waiters, 1, __ATOMIC_RELAXED);
    if (!slot)
        __atomic_fetch_add(&turn_shared, 1, __ATOMIC_SEQ_CST);
    uint32_t word = slot ? __atomic_load_n(&slot->word, __ATOMIC_SEQ_CST) : 0;
    __atomic_fetch_add(&turn_sleepers, 1, __ATOMIC_SEQ_CST);
    if (!slot)
        mig_futex(&mig_ring->turn_futex, FUTEX_WAIT, turn, slice);
    else if (__atomic_load_n(&mig_ring->tail, __ATOMIC_SEQ_CST) == tail)
        mig_futex(&slot->word, FUTEX_WAIT_PRIVATE, word, slice);
    __atomic_fetch_sub(&turn_sleepers, 1, __ATOMIC_SEQ_CST);
    if (slot)
        __atomic_store_n(&slot->tid1, 0, __ATOMIC_RELEASE);
    else
        __atomic_fetch_sub(&turn_shared, 1, __ATOMIC_SEQ_CST);
    __atomic_fetch_sub(&mig_ring->waiters, 1, __ATOMIC_RELAXED);
}

/* The tail moved: wake the sleeper whose record is at it, or every one. The record read
 * is only a hint: if its thread took it meanwhile (and its space was written again), that
 * thread moves the tail again and wakes the next. */
static void turn_wake(void)
{
    uint64_t tail = __atomic_load_n(&mig_ring->tail, __ATOMIC_ACQUIRE);
    uint64_t head = __atomic_load_n(&mig_ring->head, __ATOMIC_ACQUIRE);
    uint32_t want = 0; /* every one */
    if (head > tail && !mig_rec_problem(mig_ring_data, mig_ring_cap, tail, head)) {
        const struct mig_rec *rec = mig_rec_at(tail);
        if (!(rec->flags & MIG_F_PAD))
            want = rec->tid + 1;
    }
    for (int i = 0; i < TURN_SLOTS; i++) {
        uint32_t t = __atomic_load_n(&turn_slot[i].tid1, __ATOMIC_ACQUIRE);
        if (t && (!want || t == want)) {
            __atomic_fetch_add(&turn_slot[i].word, 1, __ATOMIC_SEQ_CST);
            mig_futex(&turn_slot[i].word, FUTEX_WAKE_PRIVATE, 1, NULL);
        }
    }
    if (__atomic_load_n(&turn_shared, __ATOMIC_SEQ_CST))
        mig_futex(&mig_ring->turn_futex, FUTEX_WAKE, 0x7fffffff, NULL);
}

void mig_replay_after_fork(void)
{
    replay_pending = 0;
    memset(turn_slot, 0, sizeof turn_slot); /* the child has one thread */
    turn_sleepers = turn_shared = 0;
    own_scan = 0;
}

uint64_t mig_replay_next_seq(void)
{
    return replay_next_seq;
}

/* The log has ended here: become the primary's process (mig_live.c), turn the ring
 * around and go on recording with the next sequence number. The first thread to find the
 * log's end does it; the others find the mode changed. */
static uint32_t golive_lock;

static void go_live(void)
{
    mig_spin_lock(&golive_lock);
    if (mig_mode == MIG_REPLAY) {
        __atomic_store_n(&mig_ring->going_live, 1, __ATOMIC_RELEASE);
        mig_go_live();
        uint64_t next = replay_next_seq;
        mig_ring->next_seq = next;
        mig_ring->committed_seq = next;
        mig_ring->barrier_seq = next;
        mig_sched_went_live();
        mig_mode = MIG_RECORD;
        __atomic_store_n(&mig_ring->mode, (uint32_t)MIG_RECORD, __ATOMIC_RELEASE);
        mig_replay_nudge(); /* serialized threads waiting for the token: wait as the live */
    }
    mig_spin_unlock(&golive_lock);
}

/* Replay: the tail moved; let the threads waiting for their turn look at the record there. */
static void turn_moved(void)
{
    if (mig_threads) {
        __atomic_fetch_add(&mig_ring->turn_futex, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&turn_sleepers, __ATOMIC_SEQ_CST))
            turn_wake();
        mig_sched_tail_moved();
    }
}

/* Replay: move the tail past the record at it (`tail` is where it starts) and let the
 * threads waiting for their turn look at the next one. */
static void advance_tail(uint64_t tail, uint64_t len)
{
    const struct mig_rec *rec = mig_rec_at(tail);
    if (!(rec->flags & MIG_F_PAD))
        __atomic_store_n(&mig_ring->taken_seq, rec->seq + 1, __ATOMIC_RELEASE);
    __atomic_store_n(&mig_ring->tail, tail + len, __ATOMIC_SEQ_CST);
    turn_moved();
}

/* How long a thread waits for its turn while the record at the tail, another thread's,
 * is not taken, before the replay is called diverged (threads out of step). */
#define MIG_TURN_TIMEOUT_NS (30ull * 1000000000ull)

/* A process restored from a checkpoint has lost its threads' traps (CRIU does not restore
 * them): the worker bumps arm_gen in the image, and each thread arms again here, where it
 * waits for its next record -- as every thread of a checkpointed replay does. */
static void rearm_if_restored(void)
{
    uint32_t gen = __atomic_load_n(&mig_ring->arm_gen, __ATOMIC_ACQUIRE);
    if (gen != arm_seen) {
        arm_seen = gen;
        mig_fileid_restored(gen);
        if (mig_trapping)
            mig_trap_arm();
    }
}

/* The next record for this thread, or NULL when the process has just gone live. Records
 * are taken in log order: a thread whose record is not at the tail waits for its turn.
 * any: the record at the tail, whichever thread's (serialized threads look at it). */
static struct mig_rec *tail_record(int any)
{
    struct timespec slice = {0, 20000000};
    uint64_t stuck_at = ~0ull, stuck_since = 0;
    for (;;) {
        uint32_t gen = __atomic_load_n(&mig_ring->data_futex, __ATOMIC_ACQUIRE);
        uint32_t turn = __atomic_load_n(&mig_ring->turn_futex, __ATOMIC_ACQUIRE);
        uint32_t live = __atomic_load_n(&mig_ring->golive, __ATOMIC_ACQUIRE);
        rearm_if_restored();
        if (mig_mode != MIG_REPLAY)
            return NULL; /* another thread took the process live */
        uint64_t tail = __atomic_load_n(&mig_ring->tail, __ATOMIC_ACQUIRE);
        uint64_t head = __atomic_load_n(&mig_ring->head, __ATOMIC_ACQUIRE);
        if (head > tail) {
            const char *bad = mig_rec_problem(mig_ring_data, mig_ring_cap, tail, head);
            if (bad) {
                /* another thread may have taken the record meanwhile, and the worker
                 * reused its space: only a record still at the tail is corrupt */
                if (__atomic_load_n(&mig_ring->tail, __ATOMIC_ACQUIRE) != tail)
                    continue;
                mig_corrupt(tail, bad);
            }
            struct mig_rec *rec = mig_rec_at(tail);
            uint16_t flags = rec->flags;
            uint32_t tid = rec->tid;
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
            if (__atomic_load_n(&mig_ring->tail, __ATOMIC_ACQUIRE) != tail)
                continue; /* taken meanwhile: once the ring has gone round, the bytes read
                           * there can be a later record, this thread's own included */
            if (flags & MIG_F_PAD) {
                uint64_t want = tail;
                /* whoever wins moves the tail; storing it again afterwards could move it
                 * back over a record another thread has taken meanwhile */
                if (__atomic_compare_exchange_n(&mig_ring->tail, &want, tail + rec->len, 0,
                                                __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE))
                    turn_moved();
                continue;
            }
            if (tid == mig_tid || any) {
                if (tid == mig_tid)
                    replay_next_seq = rec->seq + 1;
                return rec;
            }
            /* another thread's turn: wait until the tail moves */
            uint64_t now = mig_now_ns();
            if (tail != stuck_at) {
                stuck_at = tail;
                stuck_since = now;
            } else if (now - stuck_since > MIG_TURN_TIMEOUT_NS) {
                mig_out_of_step(rec);
            }
            turn_sleep(tail, turn, &slice);
            continue;
        }
        if (live) { /* set after the worker's last record: the ring is empty for good */
            go_live();
            return NULL;
        }
        __atomic_fetch_add(&mig_ring->waiters, 1, __ATOMIC_RELAXED);
        mig_futex(&mig_ring->data_futex, FUTEX_WAIT, gen, &slice);
        __atomic_fetch_sub(&mig_ring->waiters, 1, __ATOMIC_RELAXED);
    }
}

struct mig_rec *mig_replay_next(void)
{
    return tail_record(0);
}

void mig_replay_fits(const struct mig_call *call, uint64_t cap)
{
    if (call->payload_len > cap)
        mig_diverge((const struct mig_rec *)call->payload - 1, call,
                    "recorded input longer than the app's buffer", (int64_t)call->payload_len,
                    (int64_t)cap);
}

/* Replay: the record at the tail is this thread's RUN or SIGNAL record, which comes before
 * whatever call the thread makes next: take it. A RUN record is checked by the lock-order
 * protocol (mig_lockorder.c); a SIGNAL record runs the app's handler here, as the primary
 * did. */
void mig_replay_take_front(struct mig_rec *rec)
{
    if (mig_is_run(rec)) {
        mig_quiet_take_run(rec);
        advance_tail(mig_ring->tail, rec->len);
        return;
    }
    mig_quiet_expect_none(rec);
    int sig = (int)rec->args[0], code = (int)rec->args[1];
    advance_tail(mig_ring->tail, rec->len);
    int busy = mig_busy;
    mig_busy = 0;
    mig_run_app_handler(sig, code);
    mig_busy = busy;
}

static struct mig_rec *take(struct mig_call *call, int nargs)
{
    if (__builtin_expect(mig_token_out, 0))
        mig_sched_resume(); /* serialized threads: wait for this thread's turn to run */
    struct mig_rec *rec = mig_replay_next();
    while (rec &&
           (mig_is_run(rec) || (rec->kind == MIG_K_SIGNAL && call->kind != MIG_K_SIGNAL))) {
        /* a RUN record, or the primary ran a handler here: run it now, its calls replay
         * in turn */
        mig_replay_take_front(rec);
        rec = mig_replay_next();
    }
    if (!rec)
        return NULL;
    if (rec->kind != (uint16_t)call->kind)
        mig_diverge(rec, call, "call kind differs", rec->kind, call->kind);
    for (int i = 0; i < nargs; i++)
        if (rec->args[i] != call->args[i])
            mig_diverge(rec, call, "argument differs", rec->args[i], call->args[i]);
    mig_quiet_expect_none(rec); /* had the primary made some, a RUN record came first */
    call->result = rec->result;
    call->err = rec->err;
    call->payload = rec + 1;
    call->payload_len = rec->payload_len;
    call->rec_args = rec->args;
    replay_pending = rec->len;
    return rec;
}

/* Replay: this thread's next record, if the ring shows it yet (NULL if not). Only this
 * thread takes it, so once found it stays put; the records before it may be taken and
 * their space written again meanwhile, so every read of one is checked against the tail. */
const struct mig_rec *mig_replay_own_next(void)
{
    uint64_t tail = __atomic_load_n(&mig_ring->tail, __ATOMIC_ACQUIRE);
    uint64_t head = __atomic_load_n(&mig_ring->head, __ATOMIC_ACQUIRE);
    uint64_t pos = own_scan > tail ? own_scan : tail;
    while (pos < head) {
        if (mig_rec_problem(mig_ring_data, mig_ring_cap, pos, head)) {
            if (__atomic_load_n(&mig_ring->tail, __ATOMIC_ACQUIRE) > pos)
                goto moved;
            return NULL; /* whoever reaches it at the tail reports it */
        }
        const struct mig_rec *rec = mig_rec_at(pos);
        uint32_t len = rec->len;
        int mine = !(rec->flags & MIG_F_PAD) && rec->tid == mig_tid;
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&mig_ring->tail, __ATOMIC_ACQUIRE) > pos)
            goto moved; /* taken meanwhile: what was read may be another record's bytes */
        if (mine) {
            own_scan = pos;
            return rec;
        }
        pos += len;
        continue;
    moved:
        tail = __atomic_load_n(&mig_ring->tail, __ATOMIC_ACQUIRE);
        pos = tail > pos ? tail : pos;
    }
    own_scan = pos;
    return NULL;
}

int mig_replay_look(uint32_t *gen)
{
    if (mig_mode != MIG_REPLAY)
        return 0;
    rearm_if_restored();
    *gen = __atomic_load_n(&mig_ring->data_futex, __ATOMIC_ACQUIRE);
    return 1;
}

int mig_replay_wait_more(uint32_t gen)
{
    struct timespec slice = {0, 2000000};
    if (__atomic_load_n(&mig_ring->golive, __ATOMIC_ACQUIRE) &&
        __atomic_load_n(&mig_ring->head, __ATOMIC_ACQUIRE) ==
            __atomic_load_n(&mig_ring->tail, __ATOMIC_ACQUIRE)) {
        go_live(); /* the log ended before this thread's next record */
        return 0;
    }
    __atomic_fetch_add(&mig_ring->waiters, 1, __ATOMIC_RELAXED);
    mig_futex(&mig_ring->data_futex, FUTEX_WAIT, gen, &slice);
    __atomic_fetch_sub(&mig_ring->waiters, 1, __ATOMIC_RELAXED);
    return 1;
}

/* Serialized threads waiting for the token (mig_sched.c, rep_wait) sleep on the ring's
 * data word: its value, whether a record (or a filler) is at the tail, and the sleep. */
uint32_t mig_replay_word(void)
{
    return __atomic_load_n(&mig_ring->data_futex, __ATOMIC_SEQ_CST);
}

int mig_replay_ahead(void)
{
    return __atomic_load_n(&mig_ring->head, __ATOMIC_ACQUIRE) !=
           __atomic_load_n(&mig_ring->tail, __ATOMIC_ACQUIRE);
}

void mig_replay_doze(uint32_t gen, const struct timespec *timeout)
{
    mig_futex(&mig_ring->data_futex, FUTEX_WAIT, gen, timeout);
}

void mig_replay_nudge(void)
{
    __atomic_fetch_add(&mig_ring->data_futex, 1, __ATOMIC_RELEASE);
    mig_futex(&mig_ring->data_futex, FUTEX_WAKE, 0x7fffffff, NULL);
}

int mig_replay(struct mig_call *call, int nargs)
{
    return take(call, nargs) != NULL;
}

int mig_replay_output(struct mig_call *call, int nargs)
{
    struct mig_rec *rec = take(call, nargs);
    if (!rec)
        return 0;
    /* Compare exactly the bytes the primary's call wrote. */
    uint64_t n = rec->out_len <= call->out_len ? rec->out_len : call->out_len;
    uint64_t h = mig_out_hash(call, n);
    if (n != rec->out_len)
        mig_diverge(rec, call, "output length differs", (int64_t)rec->out_len, (int64_t)n);
    if (h != rec->out_hash)
        mig_diverge(rec, call, "output bytes differ (hash)", (int64_t)rec->out_hash,
                    (int64_t)h);
    return 1;
}

void mig_replay_done(void)
{
    advance_tail(mig_ring->tail, replay_pending);
    replay_pending = 0;
}

/* Serialized threads (mig_sched.c), replay. */
const struct mig_rec *mig_peek_tail(void)
{
    return tail_record(1);
}

/* The record at the tail as it is now (NULL: none yet, filler or being taken), for a
 * thread that is not the token's holder: it only looks. */
const struct mig_rec *mig_tail_now(void)
{
    uint64_t tail = __atomic_load_n(&mig_ring->tail, __ATOMIC_ACQUIRE);
    uint64_t head = __atomic_load_n(&mig_ring->head, __ATOMIC_ACQUIRE);
    if (head <= tail || mig_rec_problem(mig_ring_data, mig_ring_cap, tail, head))
        return NULL;
    const struct mig_rec *rec = mig_rec_at(tail);
    if (rec->flags & MIG_F_PAD)
        return NULL;
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return __atomic_load_n(&mig_ring->tail, __ATOMIC_ACQUIRE) == tail ? rec : NULL;
}

int mig_take_switch(void)
{
    struct mig_call sw = {.kind = MIG_K_SWITCH};
    struct mig_rec *rec = mig_replay_next();
    if (!rec)
        return 0;
    if (rec->kind != MIG_K_SWITCH)
        mig_diverge(rec, &sw, "call kind differs where a thread resumes", rec->kind, sw.kind);
    advance_tail(mig_ring->tail, rec->len);
    return 1;
}
