/* wrap_net.c -- creating and configuring sockets and pipes: socket, socketpair, pipe,
 * pipe2, bind, listen, accept, accept4, connect, getsockname, getpeername, getsockopt,
 * setsockopt, shutdown.
 *
 * On a backup nothing is bound or connected: every fd the primary got from these calls is
 * a placeholder (an eventfd) at the same number, so the app's fd table, fcntl calls and
 * epoll registrations stay real while every result comes from the log. */
#include "mig.h"

#include <fcntl.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

void mig_placeholder_at(int64_t fd, int sock_flags)
{
    if (fd < 0)
        return;
    int flags = EFD_CLOEXEC;
    if (sock_flags & SOCK_NONBLOCK)
        flags |= EFD_NONBLOCK;
    int got = (int)syscall(SYS_eventfd2, 0, flags);
    if (got >= 0 && got != fd) {
        syscall(SYS_dup3, got, (int)fd, (sock_flags & SOCK_CLOEXEC) ? O_CLOEXEC : 0);
        syscall(SYS_close, got);
    }
    mig_fd_mark((int)fd, 1);
}

/* A call whose effect on the app is its result (and errno). */
static int simple_call(enum mig_kind kind, int64_t a0, int64_t a1, int64_t a2, int nargs,
                       int (*real)(void *), void *ctx)
{
    struct mig_call c = {.kind = kind, .args = {a0, a1, a2}};
    mig_busy++;
    if (mig_mode == MIG_REPLAY && mig_replay(&c, nargs)) {
        mig_replay_done();
    } else {
        mig_busy--;
        c.result = real(ctx);
        c.err = c.result < 0 ? errno : 0;
        mig_busy++;
        mig_record(&c);
    }
    mig_busy--;
    if (c.err)
        errno = c.err;
    return (int)c.result;
}

/* A call that fills an address-like buffer (addr, *len): payload = u32 len + bytes. */
static int addr_call(enum mig_kind kind, int64_t a0, int64_t a1, int64_t a2, void *buf,
                     socklen_t *len, int (*real)(void *), void *ctx)
{
    struct mig_call c = {.kind = kind, .args = {a0, a1, a2}};
    unsigned char payload[4 + 512];
    mig_busy++;
    if (mig_mode == MIG_REPLAY && mig_replay(&c, 3)) {
        if (buf && len && c.payload_len >= 4) {
            uint32_t n;
            memcpy(&n, c.payload, 4);
            uint32_t copy = n < *len ? n : *len;
            if (copy > c.payload_len - 4)
                copy = c.payload_len - 4;
            memcpy(buf, (const unsigned char *)c.payload + 4, copy);
            *len = n;
        }
        mig_replay_done();
    } else {
        mig_busy--;
        c.result = real(ctx);
        c.err = c.result < 0 ? errno : 0;
        mig_busy++;
        if (c.result >= 0 && buf && len) {
            uint32_t n = *len;
            uint32_t keep = n < 512 ? n : 512;
            memcpy(payload, &n, 4);
            memcpy(payload + 4, buf, keep);
            c.payload = payload;
            c.payload_len = 4 + keep;
        }
        mig_record(&c);
    }
    mig_busy--;
    if (c.err)
        errno = c.err;
    return (int)c.result;
}

struct net_ctx {
    int fd, a, b, c;
    int *sv;
    const struct sockaddr *caddr;
    struct sockaddr *addr;
    socklen_t clen;
    socklen_t *alen;
    void *val;
    const void *cval;
};

static int r_socket(void *p) { struct net_ctx *x = p; return mig_real.socket(x->a, x->b, x->c); }
static int r_bind(void *p) { struct net_ctx *x = p; return mig_real.bind(x->fd, x->caddr, x->clen); }
static int r_listen(void *p) { struct net_ctx *x = p; return mig_real.listen(x->fd, x->a); }
static int r_connect(void *p) { struct net_ctx *x = p; mig_sched_block(); return mig_real.connect(x->fd, x->caddr, x->clen); }
static int r_shutdown(void *p) { struct net_ctx *x = p; return mig_real.shutdown(x->fd, x->a); }
static int r_setsockopt(void *p)
{
    struct net_ctx *x = p;
    return mig_real.setsockopt(x->fd, x->a, x->b, x->cval, x->clen);
}
static int r_accept4(void *p)
{
    struct net_ctx *x = p;
    mig_sched_wait_readable(x->fd, 0); /* the new fd is made holding the token */
    return mig_real.accept4(x->fd, x->addr, x->alen, x->a);
}
static int r_getsockname(void *p) { struct net_ctx *x = p; return mig_real.getsockname(x->fd, x->addr, x->alen); }
static int r_getpeername(void *p) { struct net_ctx *x = p; return mig_real.getpeername(x->fd, x->addr, x->alen); }
static int r_getsockopt(void *p)
{
    struct net_ctx *x = p;
    return mig_real.getsockopt(x->fd, x->a, x->b, x->val, x->alen);
}

MIG_EXPORT int socket(int domain, int type, int protocol)
{
    MIG_ENTER(mig_real.socket(domain, type, protocol));
    struct net_ctx x = {.a = domain, .b = type, .c = protocol};
    int fd = simple_call(MIG_K_SOCKET, domain, type, protocol, 3, r_socket, &x);
    mig_busy++;
    if (mig_mode == MIG_REPLAY) {
        mig_placeholder_at(fd, type);
        mig_track_socket(fd, domain, type, protocol);
    } else
        mig_fd_mark(fd, 1);
    mig_busy--;
    return fd;
}

/* socketpair, pipe, pipe2: two fds; payload = the two ints. */
static int pair_call(enum mig_kind kind, int64_t a0, int64_t a1, int64_t a2, int sv[2],
                     int sock_flags, int (*real)(void *), void *ctx)
{
    struct mig_call c = {.kind = kind, .args = {a0, a1, a2}};
    mig_busy++;
    if (mig_mode == MIG_REPLAY && mig_replay(&c, 3)) {
        if (c.result == 0 && c.payload_len == 2 * sizeof(int)) {
            memcpy(sv, c.payload, 2 * sizeof(int));
            mig_placeholder_at(sv[0], sock_flags);
            mig_placeholder_at(sv[1], sock_flags);
            mig_track_pair(sv, kind == MIG_K_PIPE, (int)a0, (int)a1, (int)a2);
        }
        mig_replay_done();
    } else {
        c.result = real(ctx);
        c.err = c.result < 0 ? errno : 0;
        if (c.result == 0) {
            c.payload = sv;
            c.payload_len = 2 * sizeof(int);
            /* both ends are this process's alone: a wake of its own threads (a self-pipe),
             * until a fork, a program started or fds sent share them (mig_fdclass.c) */
            mig_fd_made_wakeup(sv[0]);
            mig_fd_made_wakeup(sv[1]);
        }
        mig_record(&c);
    }
    mig_busy--;
    if (c.err)
        errno = c.err;
    return (int)c.result;
}

static int r_socketpair(void *p) { struct net_ctx *x = p; return mig_real.socketpair(x->a, x->b, x->c, x->sv); }
static int r_pipe2(void *p) { struct net_ctx *x = p; return mig_real.pipe2(x->sv, x->a); }

MIG_EXPORT int socketpair(int domain, int type, int protocol, int sv[2])
{
    MIG_ENTER(mig_real.socketpair(domain, type, protocol, sv));
    struct net_ctx x = {.a = domain, .b = type, .c = protocol, .sv = sv};
    return pair_call(MIG_K_SOCKETPAIR, domain, type, protocol, sv, type, r_socketpair, &x);
}

static int pipe_flags_as_sock(int flags)
{
    return ((flags & O_NONBLOCK) ? SOCK_NONBLOCK : 0) | ((flags & O_CLOEXEC) ? SOCK_CLOEXEC : 0);
}

MIG_EXPORT int pipe2(int fds[2], int flags)
{
    MIG_ENTER(mig_real.pipe2(fds, flags));
    struct net_ctx x = {.a = flags, .sv = fds};
    return pair_call(MIG_K_PIPE, flags, 0, 0, fds, pipe_flags_as_sock(flags), r_pipe2, &x);
}

MIG_EXPORT int pipe(int fds[2])
{
    MIG_ENTER(mig_real.pipe(fds));
    struct net_ctx x = {.a = 0, .sv = fds};
    return pair_call(MIG_K_PIPE, 0, 0, 0, fds, 0, r_pipe2, &x);
}

MIG_EXPORT int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
    MIG_ENTER(mig_real.bind(fd, addr, len));
    struct net_ctx x = {.fd = fd, .caddr = addr, .clen = len};
    int r = simple_call(MIG_K_BIND, fd, len, 0, 2, r_bind, &x);
    if (r == 0)
        mig_track_bind(fd, addr, len);
    return r;
}

MIG_EXPORT int listen(int fd, int backlog)
{
    MIG_ENTER(mig_real.listen(fd, backlog));
    struct net_ctx x = {.fd = fd, .a = backlog};
    int r = simple_call(MIG_K_LISTEN, fd, backlog, 0, 1, r_listen, &x);
    if (r == 0)
        mig_track_listen(fd, backlog);
    return r;
}

MIG_EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    MIG_ENTER(mig_real.connect(fd, addr, len));
    struct net_ctx x = {.fd = fd, .caddr = addr, .clen = len};
    int r = simple_call(MIG_K_CONNECT, fd, len, 0, 2, r_connect, &x);
    if (r == 0 || errno == EINPROGRESS)
        mig_track_connected(fd);
    return r;
}

MIG_EXPORT int shutdown(int fd, int how)
{
    MIG_ENTER(mig_real.shutdown(fd, how));
    if (mig_holding()) {
        struct mig_call c = {.kind = MIG_K_SHUTDOWN, .args = {fd, how}};
        mig_busy++;
        int queued = mig_hold_shutdown(&c); /* behind held bytes of this fd */
        mig_busy--;
        if (queued)
            return 0;
    }
    struct net_ctx x = {.fd = fd, .a = how};
    return simple_call(MIG_K_SHUTDOWN, fd, how, 0, 2, r_shutdown, &x);
}

MIG_EXPORT int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
    MIG_ENTER(mig_real.setsockopt(fd, level, name, val, len));
    struct net_ctx x = {.fd = fd, .a = level, .b = name, .cval = val, .clen = len};
    int r = simple_call(MIG_K_SETSOCKOPT, fd, level, name, 3, r_setsockopt, &x);
    if (r == 0)
        mig_track_sockopt(fd, level, name, val, len);
    return r;
}

MIG_EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    MIG_ENTER(mig_real.accept4(fd, addr, len, flags));
    struct net_ctx x = {.fd = fd, .addr = addr, .alen = len, .a = flags};
    int got = addr_call(MIG_K_ACCEPT, fd, flags, 0, addr, len, r_accept4, &x);
    mig_busy++;
    if (mig_mode == MIG_REPLAY) {
        mig_placeholder_at(got, flags);
        mig_track_connected(got);
    } else
        mig_fd_mark(got, 1);
    mig_busy--;
    return got;
}

MIG_EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
    return accept4(fd, addr, len, 0);
}

MIG_EXPORT int getsockname(int fd, struct sockaddr *addr, socklen_t *len)
{
    MIG_ENTER(mig_real.getsockname(fd, addr, len));
    struct net_ctx x = {.fd = fd, .addr = addr, .alen = len};
    return addr_call(MIG_K_GETSOCKNAME, fd, 0, 0, addr, len, r_getsockname, &x);
}

MIG_EXPORT int getpeername(int fd, struct sockaddr *addr, socklen_t *len)
{
    MIG_ENTER(mig_real.getpeername(fd, addr, len));
    struct net_ctx x = {.fd = fd, .addr = addr, .alen = len};
    return addr_call(MIG_K_GETPEERNAME, fd, 0, 0, addr, len, r_getpeername, &x);
}

MIG_EXPORT int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
    MIG_ENTER(mig_real.getsockopt(fd, level, name, val, len));
    struct net_ctx x = {.fd = fd, .a = level, .b = name, .val = val, .alen = len};
    return addr_call(MIG_K_GETSOCKOPT, fd, level, name, val, len, r_getsockopt, &x);
}
