/* mig_bells.c -- the recorder agent's wait on its doorbells, in native code
 * (mig/ring/doorbell.py says what the words are and why no ring is missed).
 *
 * The agent reads every word at the start of a turn (mig_bells_snapshot) and, when the
 * turn found nothing to do, sleeps until one of them holds another value or its timeout
 * passes (mig_bells_wait: futex_waitv, Linux 5.16), with each ring's agent_sleeping flag
 * set meanwhile so the app's threads know to wake it. Built into libmigenc.so and called
 * through ctypes: the same steps in Python were a third of the agent's Python time per
 * turn under load (docs/benchmarks.md, "The native pump"). */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "mig_ring.h"

#define MIG_EXPORT __attribute__((visibility("default")))

/* Bump the futex word at `word` by one, atomically, and wake every thread waiting on it
 * (a replica's agent, after it put records into a ring: mig/ring/memory.py wake_reader).
 * The app's threads bump the same word (mig_replay.c, mig_replay_nudge): a read and a
 * write from Python could lose their bump, and a thread that had read the word between
 * them would then sleep through both. */
MIG_EXPORT void mig_bells_ring(uint32_t *word)
{
    __atomic_fetch_add(word, 1, __ATOMIC_SEQ_CST);
    syscall(SYS_futex, word, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
}

/* Read the `n` words at words[i] into seen[i]. */
MIG_EXPORT void mig_bells_snapshot(uint32_t *const *words, uint32_t *seen, int n)
{
    for (int i = 0; i < n; i++)
        seen[i] = __atomic_load_n(words[i], __ATOMIC_ACQUIRE);
}

/* Sleep until a word holds another value than seen[i], or `timeout_ns`, with the
 * agent_sleeping flag of each of the `nrings` rings set meanwhile so the app's threads
 * know to wake it: to 1 (a light sleep: a barrier, a full ring or one past its fill mark
 * wakes the agent) or, with `deep`, to 2 (an idle agent: any record appended wakes it,
 * mig_record.c append). A deep sleep is not begun while a ring holds a record the agent
 * has not taken: an app thread publishes its record, then reads the flag; the agent sets
 * the flag, then reads each ring's head and tail; each side's store comes before its load
 * (a locked instruction on x86, sequentially consistent in C), so one of them sees the
 * other and no record waits for the agent's next timer. 0, or -ENOSYS (no futex_waitv: the
 * caller sleeps instead), -E2BIG (more words than one wait takes). */
MIG_EXPORT int mig_bells_wait(uint32_t *const *words, const uint32_t *seen, int n,
                              struct mig_ring_hdr *const *rings, int nrings,
                              int64_t timeout_ns, int deep)
{
    struct futex_waitv w[FUTEX_WAITV_MAX];
    if (n > FUTEX_WAITV_MAX)
        return -E2BIG;
    for (int i = 0; i < n; i++)
        w[i] = (struct futex_waitv){.val = seen[i], .uaddr = (uintptr_t)words[i],
                                    .flags = FUTEX_32};
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ns / 1000000000;
    until.tv_nsec += timeout_ns % 1000000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    int waiting = 1;
    for (int i = 0; i < nrings; i++)
        __atomic_store_n(&rings[i]->agent_sleeping, deep ? 2 : 1, __ATOMIC_SEQ_CST);
    for (int i = 0; deep && i < nrings; i++)
        if (__atomic_load_n(&rings[i]->mode, __ATOMIC_ACQUIRE) == 1 && /* record */
            __atomic_load_n(&rings[i]->head, __ATOMIC_SEQ_CST) !=
                __atomic_load_n(&rings[i]->tail, __ATOMIC_SEQ_CST))
            waiting = 0; /* appended after the turn looked: take it now (a replaying
                          * process's ring, whose records go the other way, says nothing) */
    long rc = waiting ? syscall(SYS_futex_waitv, w, n, 0, &until, CLOCK_MONOTONIC) : 0;
    int err = rc < 0 ? errno : 0;
    for (int i = 0; i < nrings; i++)
        __atomic_store_n(&rings[i]->agent_sleeping, 0, __ATOMIC_RELEASE);
    return err == ENOSYS ? -ENOSYS : 0;
}
