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

#define MIG_EXPORT __attribute__((visibility("default")))

/* Read the `n` words at words[i] into seen[i]. */
MIG_EXPORT void mig_bells_snapshot(uint32_t *const *words, uint32_t *seen, int n)
{
    for (int i = 0; i < n; i++)
        seen[i] = __atomic_load_n(words[i], __ATOMIC_ACQUIRE);
}

/* Sleep until a word holds another value than seen[i], or `timeout_ns`, with the
 * `nsleeping` words at sleeping[i] set to 1 meanwhile. 0, or -ENOSYS (no futex_waitv:
 * the caller sleeps instead), -E2BIG (more words than one wait takes). */
MIG_EXPORT int mig_bells_wait(uint32_t *const *words, const uint32_t *seen, int n,
                              uint32_t *const *sleeping, int nsleeping, int64_t timeout_ns)
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
    for (int i = 0; i < nsleeping; i++)
        __atomic_store_n(sleeping[i], 1, __ATOMIC_SEQ_CST);
    long rc = syscall(SYS_futex_waitv, w, n, 0, &until, CLOCK_MONOTONIC);
    int err = rc < 0 ? errno : 0;
    for (int i = 0; i < nsleeping; i++)
        __atomic_store_n(sleeping[i], 0, __ATOMIC_RELEASE);
    return err == ENOSYS ? -ENOSYS : 0;
}
