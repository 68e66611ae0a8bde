/* wrap_time.c -- clocks and waits: time, gettimeofday, clock_gettime, clock_getres,
 * nanosleep, clock_nanosleep, usleep, sleep.
 *
 * Clocks return the recorded values in replay. Waits are performed on the primary and
 * skipped in replay (the recorded result, EINTR included, is returned at once): this is
 * what lets a backup that fell behind catch up faster than real time. */
#include "mig.h"

#include <string.h>
#include <sys/time.h>
#include <unistd.h>

static void copy_out(void *dst, const struct mig_call *c, size_t size)
{
    if (dst && c->payload_len == size)
        memcpy(dst, c->payload, size);
}

MIG_EXPORT int clock_gettime(clockid_t clk, struct timespec *ts)
{
    MIG_ENTER(mig_real.clock_gettime(clk, ts));
    struct mig_call c = {.kind = MIG_K_CLOCK_GETTIME, .args = {clk}};
    mig_busy++;
    if (mig_mode == MIG_REPLAY && mig_replay(&c, 1)) {
        copy_out(ts, &c, sizeof *ts);
        mig_replay_done();
    } else {
        c.result = mig_real.clock_gettime(clk, ts);
        c.err = c.result ? errno : 0;
        c.payload = ts;
        c.payload_len = c.result == 0 ? sizeof *ts : 0;
        mig_record(&c);
    }
    mig_busy--;
    errno = c.err ? c.err : errno;
    return (int)c.result;
}

MIG_EXPORT int clock_getres(clockid_t clk, struct timespec *res)
{
    MIG_ENTER(mig_real.clock_getres(clk, res));
    struct mig_call c = {.kind = MIG_K_CLOCK_GETRES, .args = {clk}};
    mig_busy++;
    if (mig_mode == MIG_REPLAY && mig_replay(&c, 1)) {
        copy_out(res, &c, sizeof *res);
        mig_replay_done();
    } else {
        c.result = mig_real.clock_getres(clk, res);
        c.err = c.result ? errno : 0;
        c.payload = res;
        c.payload_len = c.result == 0 && res ? sizeof *res : 0;
        mig_record(&c);
    }
    mig_busy--;
    errno = c.err ? c.err : errno;
    return (int)c.result;
}

/* glibc declares tv nonnull, yet callers pass NULL: never test tv itself, test a copy the
 * compiler cannot reason about. */
static int is_set(const void *p)
{
    const void *volatile copy = p;
    return copy != NULL;
}

MIG_EXPORT int gettimeofday(struct timeval *tv, void *tz)
{
    MIG_ENTER(mig_real.gettimeofday(tv, tz));
    struct mig_call c = {.kind = MIG_K_GETTIMEOFDAY};
    mig_busy++;
    if (mig_mode == MIG_REPLAY && mig_replay(&c, 0)) {
        if (is_set(tv))
            copy_out(tv, &c, sizeof(struct timeval));
        mig_replay_done();
    } else {
        struct timeval mine;
        c.result = mig_real.gettimeofday(&mine, tz);
        c.err = c.result ? errno : 0;
        c.payload = &mine;
        c.payload_len = c.result == 0 ? sizeof mine : 0;
        if (c.result == 0 && is_set(tv))
            memcpy(tv, &mine, sizeof mine);
        mig_record(&c);
    }
    mig_busy--;
    errno = c.err ? c.err : errno;
    return (int)c.result;
}

MIG_EXPORT time_t time(time_t *out)
{
    MIG_ENTER(mig_real.time(out));
    struct mig_call c = {.kind = MIG_K_TIME};
    mig_busy++;
    if (mig_mode == MIG_REPLAY && mig_replay(&c, 0)) {
        mig_replay_done();
    } else {
        c.result = mig_real.time(NULL);
        mig_record(&c);
    }
    mig_busy--;
    if (out)
        *out = (time_t)c.result;
    return (time_t)c.result;
}

/* One shape for the four waits: args[0] says which, args[1..2] the requested time. */
static int wait_call(int which, int64_t a, int64_t b, struct timespec *rem, int (*real)(void *),
                     void *ctx)
{
    struct mig_call c = {.kind = MIG_K_SLEEP, .args = {which, a, b}};
    mig_busy++;
    if (mig_mode == MIG_REPLAY && mig_replay(&c, 3)) {
        copy_out(rem, &c, sizeof *rem);
        mig_replay_done();
    } else {
        mig_busy--; /* the wait itself may run signal handlers that make recorded calls */
        c.result = real(ctx);
        c.err = c.result < 0 || (which == 1 && c.result > 0) ? errno : 0;
        mig_busy++;
        c.payload = rem;
        c.payload_len = c.err == EINTR && rem ? sizeof *rem : 0;
        mig_record(&c);
    }
    mig_busy--;
    errno = c.err ? c.err : errno;
    return (int)c.result;
}

struct ns_ctx { const struct timespec *req; struct timespec *rem; clockid_t clk; int flags; };

static int real_nanosleep(void *p)
{
    struct ns_ctx *x = p;
    mig_sched_block();
    return mig_real.nanosleep(x->req, x->rem);
}

static int real_clock_nanosleep(void *p)
{
    struct ns_ctx *x = p;
    mig_sched_block();
    return mig_real.clock_nanosleep(x->clk, x->flags, x->req, x->rem);
}

static int real_usleep(void *p)
{
    mig_sched_block();
    return mig_real.usleep(*(useconds_t *)p);
}

static int real_sleep(void *p)
{
    mig_sched_block();
    return (int)mig_real.sleep(*(unsigned *)p);
}

MIG_EXPORT int nanosleep(const struct timespec *req, struct timespec *rem)
{
    MIG_ENTER(mig_real.nanosleep(req, rem));
    struct ns_ctx x = {req, rem, CLOCK_REALTIME, 0};
    return wait_call(0, req ? req->tv_sec : -1, req ? req->tv_nsec : -1, rem, real_nanosleep, &x);
}

MIG_EXPORT int clock_nanosleep(clockid_t clk, int flags, const struct timespec *req,
                               struct timespec *rem)
{
    MIG_ENTER(mig_real.clock_nanosleep(clk, flags, req, rem));
    struct ns_ctx x = {req, rem, clk, flags};
    /* clock_nanosleep returns the error number instead of setting errno */
    return wait_call(2, req ? req->tv_sec : -1, req ? req->tv_nsec : -1, rem,
                     real_clock_nanosleep, &x);
}

MIG_EXPORT int usleep(useconds_t usec)
{
    MIG_ENTER(mig_real.usleep(usec));
    return wait_call(3, usec, 0, NULL, real_usleep, &usec);
}

MIG_EXPORT unsigned int sleep(unsigned int seconds)
{
    MIG_ENTER(mig_real.sleep(seconds));
    return (unsigned)wait_call(1, seconds, 0, NULL, real_sleep, &seconds);
}
