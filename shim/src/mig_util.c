/* mig_util.c -- the shim's own small tools: lines on stderr written directly (no stdio),
 * numbers and strings into text, the output hash, the shim's futex call, the monotonic
 * clock, and claiming a slot of a static array (no malloc).
 *
 * Rules: no allocation, no stdio, no lock libc could hold -- mig_warn and the text helpers
 * run inside the SIGSYS handler too. System calls go through mig_sys (`syscall` here). */
#define MIG_CORE
#include "mig.h"

#include <string.h>
#include <sys/syscall.h>

#include "mig_poison.h"

/* "mig-shim: fatal: <what>" on stderr, written directly. */
void mig_fatal_line(const char *what)
{
    static const char prefix[] = "mig-shim: fatal: ";
    syscall(SYS_write, 2, prefix, sizeof prefix - 1);
    syscall(SYS_write, 2, what, strlen(what));
    syscall(SYS_write, 2, "\n", 1);
}

void mig_die(const char *what)
{
    /* The shim cannot continue (no ring, broken channel): say why on stderr and stop. */
    mig_fatal_line(what);
    syscall(SYS_exit_group, 86);
    __builtin_unreachable();
}

void mig_warn(const char *a, const char *b)
{
    static const char prefix[] = "mig-shim: warning: ";
    syscall(SYS_write, 2, prefix, sizeof prefix - 1);
    syscall(SYS_write, 2, a, strlen(a));
    if (b)
        syscall(SYS_write, 2, b, strlen(b));
    syscall(SYS_write, 2, "\n", 1);
}

long mig_futex(uint32_t *word, int op, uint32_t val, const struct timespec *timeout)
{
    return syscall(SYS_futex, word, op, val, timeout, NULL, 0);
}

uint64_t mig_monotonic_ns(void)
{
    struct timespec ts;
    mig_real.clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void *mig_claim(void *array, size_t size, int count)
{
    for (;;) {
        for (int i = 0; i < count; i++) {
            uint32_t *state = (uint32_t *)((char *)array + (size_t)i * size), free_ = 0;
            if (__atomic_compare_exchange_n(state, &free_, 1, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_RELAXED))
                return state;
        }
        struct timespec pause = {0, 100000};
        syscall(SYS_nanosleep, &pause, NULL);
    }
}

char *mig_put_uint(char *p, uint64_t u)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    while (n)
        *p++ = tmp[--n];
    return p;
}

uint64_t mig_hash(const void *buf, uint64_t len, uint64_t seed)
{
    const unsigned char *p = buf;
    uint64_t h = seed ? seed : 0xcbf29ce484222325ull;
    for (uint64_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

uint64_t mig_out_hash(const struct mig_call *call, uint64_t limit)
{
    if (call->out)
        return mig_hash(call->out, limit, 0);
    uint64_t h = 0, done = 0;
    for (int i = 0; i < call->iovcnt && done < limit; i++) {
        uint64_t n = call->iov[i].iov_len;
        if (n > limit - done)
            n = limit - done;
        h = mig_hash(call->iov[i].iov_base, n, h);
        done += n;
    }
    return done ? h : mig_hash("", 0, 0);
}

char *mig_put_str(char *p, char *end, const char *s)
{
    while (*s && p < end)
        *p++ = *s++;
    return p;
}

char *mig_put_int(char *p, char *end, int64_t v)
{
    char tmp[24];
    int n = 0;
    uint64_t u = v < 0 ? (uint64_t)(-(v + 1)) + 1 : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0 && p < end)
        *p++ = '-';
    while (n && p < end)
        *p++ = tmp[--n];
    return p;
}
