/* mig_record.c -- record mode: the producer side of this process's ring.
 *
 * A wrapper hands its completed call to mig_record(), which writes it in place into the
 * ring (mapped at start: nothing is allocated here) for the recorder agent to drain, then
 * waits for the commit when the app's barrier mode asks for it. Owns the ring's writer
 * side: back-pressure when the agent falls behind, the writers count a planned handoff
 * freezes, PAD records at the ring's wrap, barriers, and the doorbell that tells the agent
 * of a barrier, a full ring or one past its fill mark. */
#define MIG_CORE
#include "mig.h"

#include <linux/futex.h>
#include <string.h>
#include <sys/syscall.h>

#include "mig_poison.h"

/* Tell the agent there is work that cannot wait for its next turn (a barrier, a full
 * ring). The bump alone is enough when the agent is awake: it reads the doorbell before it
 * looks at the rings and waits only while the doorbell still holds what it read, so a bump
 * between the two ends its wait at once; the wake is for an agent already asleep. */
static void ring_doorbell(void)
{
    __atomic_fetch_add(&mig_ring->doorbell, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&mig_ring->agent_sleeping, __ATOMIC_SEQ_CST))
        mig_futex(&mig_ring->doorbell, FUTEX_WAKE, 0x7fffffff, NULL);
}

static int no_room(uint64_t need)
{
    return __atomic_load_n(&mig_ring->head, __ATOMIC_RELAXED) + need -
               __atomic_load_n(&mig_ring->tail, __ATOMIC_ACQUIRE) > mig_ring->capacity;
}

static void wait_space(uint64_t need)
{
    /* The agent drains the ring; when it falls behind the app waits (back-pressure). The
     * pause grows from 50 us to 400 us while the wait lasts: a long wait (an agent far
     * behind) costs each waiting thread a few thousand wake-ups a second, not 20,000. */
    __atomic_fetch_add(&mig_agent_waits, 1, __ATOMIC_RELAXED);
    if (no_room(need))
        ring_doorbell();
    long ns = 50000;
    while (no_room(need)) {
        struct timespec pause = {0, ns};
        syscall(SYS_nanosleep, &pause, NULL);
        if (ns < 400000)
            ns *= 2;
    }
    __atomic_fetch_sub(&mig_agent_waits, 1, __ATOMIC_RELAXED);
}

/* A planned handoff freezes the ring: the agent sets `frozen`, then waits until no thread
 * is between this check and publishing its record (`writers`), so every record appended
 * is in the log it hands over and nothing comes after. A frozen thread sleeps here until
 * the agent ends the process (or thaws the ring if the handoff is called off). */
static void enter_writer(void)
{
    for (;;) {
        __atomic_fetch_add(&mig_ring->writers, 1, __ATOMIC_SEQ_CST);
        if (!__atomic_load_n(&mig_ring->frozen, __ATOMIC_SEQ_CST))
            return;
        __atomic_fetch_sub(&mig_ring->writers, 1, __ATOMIC_SEQ_CST);
        struct timespec slice = {0, 50000000};
        while (__atomic_load_n(&mig_ring->frozen, __ATOMIC_ACQUIRE))
            mig_futex(&mig_ring->frozen, FUTEX_WAIT, 1, &slice);
    }
}

static uint64_t append(struct mig_call *call)
{
    uint32_t len = (uint32_t)((sizeof(struct mig_rec) + call->payload_len + 7) & ~7u);
    if (len > mig_ring->capacity / 4)
        mig_die("a single call record does not fit the ring (raise MIG_RING_BYTES)");
    if (__builtin_expect(__atomic_load_n(&mig_preempt_armed, __ATOMIC_RELAXED) != 0, 0) &&
        call->kind != MIG_K_SWITCH)
        mig_preempt_called(); /* an armed holder's record: its stop is moot */
    enter_writer();
    /* Room is waited for without the lock: a thread that waits for the agent sleeps, and
     * the others find no room either and sleep too, instead of spinning on the lock
     * (a spinning thread took the CPU the agent needed to make room). */
    uint64_t head, room;
    for (;;) {
        mig_spin_lock(&mig_ring->lock);
        head = mig_ring->head;
        room = mig_ring->capacity - (head & (mig_ring->capacity - 1));
        uint64_t need = len + (room < len ? room : 0); /* a PAD to the end first */
        if (head + need - __atomic_load_n(&mig_ring->tail, __ATOMIC_ACQUIRE)
            <= mig_ring->capacity)
            break;
        mig_spin_unlock(&mig_ring->lock);
        wait_space(need);
    }
    if (room < len) {
        struct mig_rec *pad =
            (struct mig_rec *)(mig_ring_data + (head & (mig_ring->capacity - 1)));
        pad->len = (uint32_t)room;
        pad->flags = MIG_F_PAD;
        head += room;
        __atomic_store_n(&mig_ring->head, head, __ATOMIC_RELEASE);
    }
    struct mig_rec *rec =
        (struct mig_rec *)(mig_ring_data + (head & (mig_ring->capacity - 1)));
    uint64_t seq = mig_ring->next_seq++;
    rec->len = len;
    rec->kind = (uint16_t)call->kind;
    rec->flags = call->is_output ? MIG_F_OUTPUT : 0;
    rec->tid = mig_tid;
    rec->err = call->err;
    rec->seq = seq;
    rec->result = call->result;
    memcpy(rec->args, call->args, sizeof rec->args);
    rec->wall_ns = mig_now_ns();
    rec->out_len = call->is_output ? call->out_len : 0;
    rec->out_hash = call->is_output ? mig_out_hash(call, call->out_len) : 0;
    rec->payload_len = call->payload_len;
    rec->reserved = 0;
    if (call->payload_len && call->payload) {
        memcpy(rec + 1, call->payload, call->payload_len);
    } else if (call->payload_len) { /* gather an input iovec straight into the ring */
        unsigned char *dst = (unsigned char *)(rec + 1);
        uint32_t done = 0;
        for (int i = 0; i < call->in_iovcnt && done < call->payload_len; i++) {
            uint32_t n = call->in_iov[i].iov_len < call->payload_len - done
                             ? (uint32_t)call->in_iov[i].iov_len : call->payload_len - done;
            memcpy(dst + done, call->in_iov[i].iov_base, n);
            done += n;
        }
    }
    __atomic_store_n(&mig_ring->head, head + len, __ATOMIC_RELEASE);
    mig_spin_unlock(&mig_ring->lock);
    /* (sequentially consistent: the published head is seen by all before the flag below
     * is read, which a deep-sleeping agent relies on: mig_bells.c mig_bells_wait) */
    __atomic_fetch_sub(&mig_ring->writers, 1, __ATOMIC_SEQ_CST);
    /* An idle agent sleeps until its next timer (a deep sleep, flag 2): the first record
     * after it wakes it, so records do not wait for that timer. */
    if (__builtin_expect(__atomic_load_n(&mig_ring->agent_sleeping, __ATOMIC_SEQ_CST) == 2, 0))
        ring_doorbell();
    /* The fill mark: an agent that lets records gather (async mode) is told when the ring
     * passes half full, so it drains before the app has to wait for room. */
    uint64_t half = mig_ring->capacity / 2,
             used = head + len - __atomic_load_n(&mig_ring->tail, __ATOMIC_ACQUIRE);
    if (used >= half && used - len < half)
        ring_doorbell();
    return seq;
}

uint64_t mig_append(struct mig_call *call)
{
    return append(call);
}

uint64_t mig_record(struct mig_call *call)
{
    if (__builtin_expect(mig_token_out, 0))
        mig_sched_resume(); /* serialized threads: records are made holding the token */
    if (mig_quiet)
        mig_quiet_record(); /* this thread's unrecorded mutex acquisitions (mig_lockorder.c) */
    uint64_t seq = append(call);
    if (mig_barrier_mode == MIG_B_SYNC)
        mig_barrier(seq);
    return seq;
}

void mig_barrier(uint64_t seq)
{
    /* Ask for seq to be committed, then sleep on commit_futex until it is. A barrier a
     * commit already covers asks nothing, and one that another thread already asked for
     * (barrier_seq at or past it: that thread rings) does not ring again. Each rang the
     * agent's doorbell before: the release thread of held outputs, coming to item after
     * item of one commit, woke the agent for nothing at most of them (Redis in output
     * mode: about 1,200 wake-ups a second of an agent that then found nothing to send, or
     * sent the few records since, a Kafka request more). */
    uint64_t want = seq + 1;
    if (__atomic_load_n(&mig_ring->committed_seq, __ATOMIC_ACQUIRE) >= want)
        return;
    uint64_t cur = __atomic_load_n(&mig_ring->barrier_seq, __ATOMIC_RELAXED);
    int raised = 0;
    while (cur < want && !(raised = __atomic_compare_exchange_n(
                               &mig_ring->barrier_seq, &cur, want, 0, __ATOMIC_RELEASE,
                               __ATOMIC_RELAXED)))
        ;
    if (raised)
        ring_doorbell();
    struct timespec slice = {0, 20000000};
    __atomic_fetch_add(&mig_agent_waits, 1, __ATOMIC_RELAXED);
    for (;;) {
        uint32_t gen = __atomic_load_n(&mig_ring->commit_futex, __ATOMIC_ACQUIRE);
        if (__atomic_load_n(&mig_ring->committed_seq, __ATOMIC_ACQUIRE) >= want)
            break;
        __atomic_fetch_add(&mig_ring->waiters, 1, __ATOMIC_RELAXED);
        mig_futex(&mig_ring->commit_futex, FUTEX_WAIT, gen, &slice);
        __atomic_fetch_sub(&mig_ring->waiters, 1, __ATOMIC_RELAXED);
    }
    __atomic_fetch_sub(&mig_agent_waits, 1, __ATOMIC_RELAXED);
}

int mig_holding(void)
{
    return mig_mode == MIG_RECORD && mig_barrier_mode == MIG_B_OUTPUT;
}

void mig_output_barrier(void)
{
    if (mig_barrier_mode == MIG_B_ASYNC || mig_mode != MIG_RECORD)
        return;
    uint64_t next = __atomic_load_n(&mig_ring->next_seq, __ATOMIC_ACQUIRE);
    if (next > 0)
        mig_barrier(next - 1);
}
