/* wrap_ident.c -- randomness and identity: getrandom, getentropy, getpid, getppid, gettid,
 * uname, gethostname. A backup host has other pids, another name and other entropy; the
 * app sees the primary's. Reads of /dev/urandom go through read() (a character device is
 * recorded like any non-regular fd). */
#include "mig.h"

#include <string.h>
#include <sys/random.h>
#include <sys/utsname.h>
#include <unistd.h>

/* Record or replay a call whose only output is `size` bytes at `buf` (when it succeeds). */
static int64_t bytes_call(enum mig_kind kind, int64_t a0, int64_t a1, void *buf, size_t cap,
                          int64_t (*real)(void *, size_t, int64_t), int64_t arg)
{
    struct mig_call c = {.kind = kind, .args = {a0, a1}};
    mig_busy++;
    if (mig_mode == MIG_REPLAY && mig_replay(&c, 2)) {
        if (buf && c.payload_len <= cap)
            memcpy(buf, c.payload, c.payload_len);
        mig_replay_done();
    } else {
        c.result = real(buf, cap, arg);
        c.err = c.result < 0 ? errno : 0;
        c.payload = buf;
        c.payload_len = (uint32_t)(kind == MIG_K_GETRANDOM ? (c.result > 0 ? c.result : 0)
                                   : (c.result == 0 ? (int64_t)cap : 0));
        mig_record(&c);
    }
    mig_busy--;
    if (c.err)
        errno = c.err;
    return c.result;
}

static int64_t real_getrandom(void *buf, size_t n, int64_t flags)
{
    return mig_real.getrandom(buf, n, (unsigned)flags);
}

static int64_t real_getentropy(void *buf, size_t n, int64_t unused)
{
    (void)unused;
    return mig_real.getentropy(buf, n);
}

static int64_t real_uname(void *buf, size_t n, int64_t unused)
{
    (void)n, (void)unused;
    return mig_real.uname(buf);
}

static int64_t real_gethostname(void *buf, size_t n, int64_t unused)
{
    (void)unused;
    return mig_real.gethostname(buf, n);
}

MIG_EXPORT ssize_t getrandom(void *buf, size_t n, unsigned int flags)
{
    MIG_ENTER(mig_real.getrandom(buf, n, flags));
    /* getrandom may return fewer bytes than asked: recorded calls return at most
     * MIG_MAX_INPUT */
    size_t want = n < MIG_MAX_INPUT ? n : MIG_MAX_INPUT;
    return (ssize_t)bytes_call(MIG_K_GETRANDOM, (int64_t)n, flags, buf, want, real_getrandom,
                               flags);
}

MIG_EXPORT int getentropy(void *buf, size_t n)
{
    MIG_ENTER(mig_real.getentropy(buf, n));
    return (int)bytes_call(MIG_K_GETENTROPY, (int64_t)n, 0, buf, n, real_getentropy, 0);
}

MIG_EXPORT int uname(struct utsname *buf)
{
    MIG_ENTER(mig_real.uname(buf));
    return (int)bytes_call(MIG_K_UNAME, 0, 0, buf, sizeof *buf, real_uname, 0);
}

MIG_EXPORT int gethostname(char *name, size_t len)
{
    MIG_ENTER(mig_real.gethostname(name, len));
    return (int)bytes_call(MIG_K_GETHOSTNAME, (int64_t)len, 0, name, len, real_gethostname, 0);
}

/* The ids the app saw while replaying (the primary's): after going live it keeps seeing
 * them, so pids it stored stay true. Index: 0 getpid, 1 getppid, 2 gettid. */
static pid_t seen_id[3];

void mig_child_identity(pid_t recorded_pid)
{
    seen_id[1] = seen_id[0];
    seen_id[0] = recorded_pid;
    seen_id[2] = recorded_pid;
}

static pid_t id_call(enum mig_kind kind, pid_t (*real)(void))
{
    struct mig_call c = {.kind = kind};
    int slot = kind == MIG_K_GETPID ? 0 : kind == MIG_K_GETPPID ? 1 : 2;
    mig_busy++;
    if (mig_mode == MIG_REPLAY && mig_replay(&c, 0)) {
        mig_replay_done();
        seen_id[slot] = (pid_t)c.result;
    } else {
        c.result = mig_went_live() && seen_id[slot] ? seen_id[slot] : real();
        mig_record(&c);
    }
    mig_busy--;
    return (pid_t)c.result;
}

MIG_EXPORT pid_t getpid(void)
{
    MIG_ENTER(mig_real.getpid());
    return id_call(MIG_K_GETPID, mig_real.getpid);
}

MIG_EXPORT pid_t getppid(void)
{
    MIG_ENTER(mig_real.getppid());
    return id_call(MIG_K_GETPPID, mig_real.getppid);
}

MIG_EXPORT pid_t gettid(void)
{
    MIG_ENTER(mig_real.gettid());
    return id_call(MIG_K_GETTID, mig_real.gettid);
}
