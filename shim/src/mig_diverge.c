/* mig_diverge.c -- how a process stops when it cannot go on: divergences and their texts.
 *
 * A replaying process that finds the app doing something other than the log says (another
 * call, other arguments, other output bytes, threads out of step, a mutex taken out of
 * order) writes one line into the ring header's div_text, marks the ring DIVERGED at the
 * record's seq and exits with code 87: a backup that has diverged must not go on as if its
 * state were the primary's. The agent reports the text. Also here: a corrupt ring record,
 * a system call the shim refuses (exit 86 when recording) and a failed switch to live
 * (exit 88). Texts are built in place with mig_put_str and mig_put_int (no stdio). */
#define MIG_CORE
#include "mig.h"

#include <string.h>
#include <sys/syscall.h>

#include "mig_poison.h"

static const char *kind_name(unsigned kind)
{
    switch (kind) {
#define MIG_KIND_NAME(name, num)                                                            \
    case num:                                                                               \
        return #name;
        MIG_KINDS(MIG_KIND_NAME)
#undef MIG_KIND_NAME
    }
    return "?";
}

static char *put_hex(char *p, char *end, uint64_t v)
{
    char tmp[16];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    p = mig_put_str(p, end, "0x");
    while (n && p < end)
        *p++ = tmp[--n];
    return p;
}

/* The call the replay made instead of the recorded one: its kind by name and what tells
 * it apart (a mutex: which acquisition of which mutex, where the numbers alone said
 * MUTEX_LOCK(3, ...); other calls: their first two arguments). */
static char *put_call(char *p, char *end, const struct mig_call *call)
{
    static const char *const variant[] = {"lock", "trylock", "timedlock"};
    p = mig_put_str(p, end, kind_name((unsigned)call->kind));
    p = mig_put_str(p, end, "(");
    if (call->kind == MIG_K_MUTEX_LOCK && call->args[0] == MIG_LOCK_RUN) {
        p = mig_put_str(p, end, "mutex acquisitions without a record");
    } else if (call->kind == MIG_K_MUTEX_LOCK && call->args[0] >= 0 && call->args[0] < 3) {
        p = mig_put_str(p, end, variant[call->args[0]]);
        p = mig_put_str(p, end, " of mutex ");
        p = put_hex(p, end, (uint64_t)call->args[1]);
    } else {
        p = mig_put_int(p, end, call->args[0]);
        p = mig_put_str(p, end, ", ");
        p = mig_put_int(p, end, call->args[1]);
    }
    return mig_put_str(p, end, ")");
}

/* End the text being written at p into the ring's div_text, mark the ring diverged at
 * `seq` and stop the process: a backup that has diverged must not go on. */
__attribute__((noreturn)) static void stop_diverged(char *p, uint64_t seq)
{
    *p = 0;
    mig_ring->div_seq = seq;
    __atomic_store_n(&mig_ring->state, MIG_RS_DIVERGED, __ATOMIC_RELEASE);
    syscall(SYS_exit_group, 87);
    __builtin_unreachable();
}

/* Report the first divergence in the ring header and stop the process: a backup that
 * has diverged must not go on as if its state were the primary's. */
void mig_diverge(const struct mig_rec *rec, const struct mig_call *call, const char *what,
                 int64_t expected, int64_t actual)
{
    char *p = mig_ring->div_text, *end = mig_ring->div_text + sizeof mig_ring->div_text - 1;
    p = mig_put_str(p, end, what);
    p = mig_put_str(p, end, ": recorded ");
    p = mig_put_str(p, end, kind_name(rec->kind));
    if (rec->kind != (uint16_t)call->kind) {
        /* the kinds are the values: name them, and the call the replay made instead */
        p = mig_put_str(p, end, ", replay made ");
        p = put_call(p, end, call);
    } else {
        p = mig_put_str(p, end, " ");
        p = mig_put_int(p, end, expected);
        p = mig_put_str(p, end, ", replay made ");
        p = mig_put_str(p, end, kind_name((unsigned)call->kind));
        p = mig_put_str(p, end, " ");
        p = mig_put_int(p, end, actual);
    }
    p = mig_put_str(p, end, " in thread ");
    p = mig_put_int(p, end, mig_tid);
    stop_diverged(p, rec->seq);
}

/* A thread waited MIG_TURN_TIMEOUT_NS for the thread whose record is at the tail: that
 * thread does not exist here or is blocked outside the shim (a data race, or a
 * synchronisation the shim does not see, took the replay elsewhere). */
void mig_out_of_step(const struct mig_rec *rec)
{
    char *p = mig_ring->div_text, *end = mig_ring->div_text + sizeof mig_ring->div_text - 1;
    p = mig_put_str(p, end, "threads out of step: the log's next call (");
    p = mig_put_str(p, end, kind_name(rec->kind));
    p = mig_put_str(p, end, ") is thread ");
    p = mig_put_int(p, end, rec->tid);
    p = mig_put_str(p, end, "'s, which has not made it for 30 s; thread ");
    p = mig_put_int(p, end, mig_tid);
    p = mig_put_str(p, end, " waits for its own");
    stop_diverged(p, rec->seq);
}

/* The record at the tail is malformed (mig_rec_problem): the log or the ring is damaged,
 * and reading it would go out of bounds. Stop as at a divergence, saying where and why. */
void mig_corrupt(uint64_t pos, const char *why)
{
    char *p = mig_ring->div_text, *end = mig_ring->div_text + sizeof mig_ring->div_text - 1;
    p = mig_put_str(p, end, "corrupt ring record at position ");
    p = mig_put_int(p, end, (int64_t)pos);
    p = mig_put_str(p, end, ": ");
    p = mig_put_str(p, end, why);
    stop_diverged(p, mig_replay_next_seq());
}

/* The thread made `made` mutex acquisitions without a record where the primary's made
 * `recorded` (the RUN record `rec`, or 0 before another record): a divergence. */
void mig_diverge_run(const struct mig_rec *rec, int64_t recorded, int64_t made)
{
    char *p = mig_ring->div_text, *end = mig_ring->div_text + sizeof mig_ring->div_text - 1;
    p = mig_put_str(p, end, "unrecorded mutex acquisitions differ: thread ");
    p = mig_put_int(p, end, mig_tid);
    p = mig_put_str(p, end, " made ");
    p = mig_put_int(p, end, recorded);
    p = mig_put_str(p, end, " on the primary before its next record, ");
    p = mig_put_int(p, end, made);
    p = mig_put_str(p, end, " in replay");
    stop_diverged(p, rec->seq);
}

/* A system call the shim cannot handle (mig_trap.c): a replaying process stops as at a
 * divergence, naming it; a recording one says it on stderr and ends with code 86. */
void mig_stop_refused(const char *text)
{
    if (mig_ring && mig_mode == MIG_REPLAY) {
        mig_fatal_line(text);
        char *p = mig_ring->div_text, *end = mig_ring->div_text + sizeof mig_ring->div_text - 1;
        p = mig_put_str(p, end, text);
        stop_diverged(p, mig_replay_next_seq());
    }
    mig_die(text);
}

void mig_lock_diverged(const char *what, int64_t expected, int64_t actual)
{
    char *p = mig_ring->div_text, *end = mig_ring->div_text + sizeof mig_ring->div_text - 1;
    p = mig_put_str(p, end, what);
    p = mig_put_str(p, end, ": recorded acquisition ");
    p = mig_put_int(p, end, expected);
    p = mig_put_str(p, end, ", replay found ");
    p = mig_put_int(p, end, actual);
    stop_diverged(p, mig_replay_next_seq() ? mig_replay_next_seq() - 1 : 0);
}

void mig_sched_diverged(const struct mig_rec *rec, const char *what, int64_t recorded,
                        int64_t made)
{
    char *p = mig_ring->div_text, *end = mig_ring->div_text + sizeof mig_ring->div_text - 1;
    p = mig_put_str(p, end, what);
    p = mig_put_str(p, end, ": thread ");
    p = mig_put_int(p, end, mig_tid);
    p = mig_put_str(p, end, " let the others run at its switch point ");
    p = mig_put_int(p, end, recorded);
    p = mig_put_str(p, end, " on the primary, replay is at ");
    p = mig_put_int(p, end, made);
    stop_diverged(p, rec->seq);
}

/* Replay: the holder, asked to stop where the primary preempted it (SWITCH with args[2]
 * PREEMPTED), did not come to that state; `seen` says what its stops at the address
 * showed (mig_preempt.c). */
void mig_preempt_diverged(const struct mig_rec *rec, const char *seen)
{
    char *p = mig_ring->div_text, *end = mig_ring->div_text + sizeof mig_ring->div_text - 1;
    p = mig_put_str(p, end, "a spinning thread never came to the state the primary preempted"
                            " it in: thread ");
    p = mig_put_int(p, end, (int64_t)rec->tid);
    p = mig_put_str(p, end, " at ");
    p = put_hex(p, end, (uint64_t)rec->args[3]);
    p = mig_put_str(p, end, ", 30 s: ");
    stop_diverged(mig_put_str(p, end, seen), rec->seq);
}

/* Going live failed (mig_live.c): the promotion cannot serve. Say why in the ring (the
 * agent reports a failed promotion) and on stderr, and end the process. */
void mig_live_failed(const char *what, int err)
{
    char *p = mig_ring->div_text, *end = mig_ring->div_text + sizeof mig_ring->div_text - 1;
    p = mig_put_str(p, end, what);
    if (err) {
        p = mig_put_str(p, end, ": ");
        p = mig_put_str(p, end, strerror(err));
    }
    *p = 0;
    mig_fatal_line(mig_ring->div_text);
    __atomic_store_n(&mig_ring->state, MIG_RS_LIVE_FAILED, __ATOMIC_RELEASE);
    syscall(SYS_exit_group, 88);
    __builtin_unreachable();
}

void mig_sched_stop(const struct mig_rec *rec, const char *text)
{
    char *p = mig_ring->div_text, *end = mig_ring->div_text + sizeof mig_ring->div_text - 1;
    p = mig_put_str(p, end, text);
    mig_fatal_line(text);
    stop_diverged(p, rec->seq);
}
