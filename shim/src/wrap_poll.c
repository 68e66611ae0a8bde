/* wrap_poll.c -- readiness: poll, ppoll, select, epoll_wait, epoll_pwait.
 *
 * The primary records which fds were ready; a backup returns that without waiting, so its
 * event loop takes the same path. epoll_create1 and epoll_ctl are not recorded: they act
 * on the app's own fd table, identical on both hosts (placeholders stand for sockets). */
#include "mig.h"

#include <sys/syscall.h>

#include <string.h>

struct poll_ctx {
    struct pollfd *fds;
    nfds_t n;
    int timeout;
    const struct timespec *ts;
    const sigset_t *mask;
    int epfd;
    struct epoll_event *events;
    int maxevents;
    int nfds;
    fd_set *sets[3];
    struct timeval *tv;
    const long *raw; /* a trapped pselect6's arguments */
};

static int r_poll(void *p) { struct poll_ctx *x = p; mig_sched_block(); return mig_real.poll(x->fds, x->n, x->timeout); }
static int r_ppoll(void *p) { struct poll_ctx *x = p; mig_sched_block(); return mig_real.ppoll(x->fds, x->n, x->ts, x->mask); }
static int r_epoll_wait(void *p)
{
    struct poll_ctx *x = p;
    mig_sched_block();
    return mig_real.epoll_wait(x->epfd, x->events, x->maxevents, x->timeout);
}
static int r_epoll_pwait(void *p)
{
    struct poll_ctx *x = p;
    mig_sched_block();
    return mig_real.epoll_pwait(x->epfd, x->events, x->maxevents, x->timeout, x->mask);
}
static int r_select(void *p)
{
    struct poll_ctx *x = p;
    mig_sched_block();
    return mig_real.select(x->nfds, x->sets[0], x->sets[1], x->sets[2], x->tv);
}

/* Record or replay a readiness call whose output is `size` bytes at `buf` (computed from the
 * result by `out_size`). The wait itself runs without mig_busy: signal handlers may run. */
static int ready_call(enum mig_kind kind, int64_t a0, int64_t a1, void *buf,
                      size_t (*out_size)(int64_t, void *), int (*real)(void *), void *ctx,
                      unsigned char *scratch, size_t scratch_len)
{
    struct mig_call c = {.kind = kind, .args = {a0, a1}};
    mig_busy++;
    if (mig_mode == MIG_REPLAY && mig_replay(&c, 2)) {
        /* room: the scratch area, every pollfd, or maxevents (a1) events */
        mig_replay_fits(&c, scratch ? scratch_len
                                    : out_size(kind == MIG_K_EPOLL_WAIT ? a1 : 0, ctx));
        if (c.payload_len)
            memcpy(scratch ? (void *)scratch : buf, c.payload, c.payload_len);
        mig_replay_done();
    } else {
        mig_busy--;
        c.result = real(ctx);
        c.err = c.result < 0 ? errno : 0;
        mig_busy++;
        size_t n = out_size(c.result, ctx);
        c.payload = scratch ? (void *)scratch : buf;
        if (scratch && n > scratch_len)
            n = scratch_len;
        c.payload_len = (uint32_t)n;
        if (scratch)
            out_size(-2, ctx); /* gather into scratch */
        mig_record(&c);
    }
    mig_busy--;
    if (c.err)
        errno = c.err;
    return (int)c.result;
}

static size_t poll_size(int64_t result, void *p)
{
    struct poll_ctx *x = p;
    return result < 0 ? 0 : x->n * sizeof(struct pollfd);
}

static size_t epoll_size(int64_t result, void *p)
{
    (void)p;
    return result <= 0 ? 0 : (size_t)result * sizeof(struct epoll_event);
}

MIG_EXPORT int poll(struct pollfd *fds, nfds_t n, int timeout)
{
    MIG_ENTER(mig_real.poll(fds, n, timeout));
    struct poll_ctx x = {.fds = fds, .n = n, .timeout = timeout};
    return ready_call(MIG_K_POLL, (int64_t)n, timeout, fds, poll_size, r_poll, &x, NULL, 0);
}

MIG_EXPORT int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *mask)
{
    MIG_ENTER(mig_real.ppoll(fds, n, ts, mask));
    struct poll_ctx x = {.fds = fds, .n = n, .ts = ts, .mask = mask};
    return ready_call(MIG_K_POLL, (int64_t)n, ts ? ts->tv_sec : -1, fds, poll_size, r_ppoll, &x,
                      NULL, 0);
}

MIG_EXPORT int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout)
{
    MIG_ENTER(mig_real.epoll_wait(epfd, events, maxevents, timeout));
    struct poll_ctx x = {.epfd = epfd, .events = events, .maxevents = maxevents, .timeout = timeout};
    return ready_call(MIG_K_EPOLL_WAIT, epfd, maxevents, events, epoll_size, r_epoll_wait, &x,
                      NULL, 0);
}

MIG_EXPORT int epoll_pwait(int epfd, struct epoll_event *events, int maxevents, int timeout,
                           const sigset_t *mask)
{
    MIG_ENTER(mig_real.epoll_pwait(epfd, events, maxevents, timeout, mask));
    struct poll_ctx x = {.epfd = epfd, .events = events, .maxevents = maxevents,
                         .timeout = timeout, .mask = mask};
    return ready_call(MIG_K_EPOLL_WAIT, epfd, maxevents, events, epoll_size, r_epoll_pwait, &x,
                      NULL, 0);
}

/* select: payload = the three sets as returned (zeros for NULL sets) + the timeval. */
static MIG_TLS unsigned char select_scratch[3 * sizeof(fd_set) + sizeof(struct timeval)];

static size_t select_size(int64_t result, void *p)
{
    struct poll_ctx *x = p;
    if (result == -2) {
        for (int i = 0; i < 3; i++) {
            if (x->sets[i])
                memcpy(select_scratch + i * sizeof(fd_set), x->sets[i], sizeof(fd_set));
            else
                memset(select_scratch + i * sizeof(fd_set), 0, sizeof(fd_set));
        }
        if (x->tv)
            memcpy(select_scratch + 3 * sizeof(fd_set), x->tv, sizeof(struct timeval));
        return 0;
    }
    return result < 0 ? 0 : sizeof select_scratch;
}

/* Replay: the sets (and the timeval, if any) of a select as the log has them. */
static void select_replayed(const struct poll_ctx *x)
{
    for (int i = 0; i < 3; i++)
        if (x->sets[i])
            memcpy(x->sets[i], select_scratch + i * sizeof(fd_set), sizeof(fd_set));
    if (x->tv)
        memcpy(x->tv, select_scratch + 3 * sizeof(fd_set), sizeof *x->tv);
}

MIG_EXPORT int select(int nfds, fd_set *r, fd_set *w, fd_set *e, struct timeval *tv)
{
    MIG_ENTER(mig_real.select(nfds, r, w, e, tv));
    struct poll_ctx x = {.nfds = nfds, .sets = {r, w, e}, .tv = tv};
    int res = ready_call(MIG_K_SELECT, nfds, 0, NULL, select_size, r_select, &x, select_scratch,
                         sizeof select_scratch);
    if (mig_mode == MIG_REPLAY && res >= 0)
        select_replayed(&x);
    return res;
}

/* pselect6, the system call (libc's pselect, and bash's `read -t`): recorded as a select
 * (its sets; the timeout, which libc's pselect copies, is not given back), waited for real
 * from the shim's own text with the program's signal mask. */
static int r_pselect6(void *p)
{
    struct poll_ctx *x = p;
    mig_sched_block();
    const long *a = x->raw;
    long r = mig_sys(SYS_pselect6, a[0], a[1], a[2], a[3], a[4], a[5]);
    if (r < 0) {
        errno = (int)-r;
        return -1;
    }
    return (int)r;
}

long mig_trap_pselect6(const long *a)
{
    MIG_ENTER(mig_sys(SYS_pselect6, a[0], a[1], a[2], a[3], a[4], a[5]));
    struct poll_ctx x = {.nfds = (int)a[0],
                         .sets = {(fd_set *)a[1], (fd_set *)a[2], (fd_set *)a[3]},
                         .raw = a};
    int res = ready_call(MIG_K_SELECT, x.nfds, 0, NULL, select_size, r_pselect6, &x,
                         select_scratch, sizeof select_scratch);
    if (mig_mode == MIG_REPLAY && res >= 0)
        select_replayed(&x); /* (no timeval: .tv is NULL) */
    return res < 0 ? -errno : res;
}

/* epoll_ctl acts for real on both hosts; the shim only notes which epoll sets an fd is in
 * (mig_hold.c needs it when the app closes an fd whose held bytes keep it open; mig_live.c
 * when a placeholder is replaced by a real socket). */
MIG_EXPORT int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    MIG_GATE;
    int r = mig_real.epoll_ctl(epfd, op, fd, ev);
    if (r == 0 && (op == EPOLL_CTL_ADD || op == EPOLL_CTL_DEL))
        mig_hold_epoll(epfd, op, fd);
    if (r == 0 && mig_mode == MIG_REPLAY)
        mig_track_epoll(epfd, op, fd, ev); /* to add a replaced fd back when going live */
    return r;
}
