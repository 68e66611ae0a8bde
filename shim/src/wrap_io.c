/* wrap_io.c -- input and output on anything that is not a regular file: read, readv, recv,
 * recvfrom, recvmsg, write, writev, send, sendto, sendmsg, close, and the calls that move
 * bytes between two fds inside the kernel (sendfile, splice, copy_file_range).
 *
 * Input: the primary records the bytes the call returned; a backup gets them from the log.
 * Output: the primary waits at an output barrier (its causes must be in Kafka before a
 * client can see the effect), writes, and records length + hash; a backup writes nothing
 * and compares. Regular files are read and written for real on both hosts. */
#include "mig.h"

#include <fcntl.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Scatter `len` bytes into iov. */
static void scatter(const struct iovec *iov, int cnt, const unsigned char *src, uint64_t len)
{
    for (int i = 0; i < cnt && len; i++) {
        uint64_t n = iov[i].iov_len < len ? iov[i].iov_len : len;
        memcpy(iov[i].iov_base, src, n);
        src += n;
        len -= n;
    }
}

/* Input: replay copies the recorded bytes to buf (or iov), record logs what the real call
 * returned. `real` performs the call. */
static ssize_t input_call(enum mig_kind kind, int fd, int64_t a1, int64_t a2, void *buf,
                          const struct iovec *iov, int iovcnt, ssize_t (*real)(void *), void *ctx)
{
    struct mig_call c = {.kind = kind, .args = {fd, a1, a2}};
    mig_busy++;
    if (mig_mode == MIG_REPLAY && mig_replay(&c, 3)) {
        mig_replay_fits(&c, (uint64_t)a1); /* a1: the bytes asked for (all of the iovec) */
        if (buf)
            memcpy(buf, c.payload, c.payload_len);
        else
            scatter(iov, iovcnt, c.payload, c.payload_len);
        if (kind == MIG_K_READ) /* before the tail moves: the agent sums after it has */
            mig_stdin_count(fd, c.result);
        mig_replay_done();
    } else {
        mig_busy--;
        c.result = real(ctx);
        c.err = c.result < 0 ? errno : 0;
        mig_busy++;
        uint64_t got = c.result > 0 ? (uint64_t)c.result : 0;
        c.payload = buf; /* NULL for readv/recvmsg: mig_record gathers the iovec */
        c.in_iov = iov;
        c.in_iovcnt = iovcnt;
        c.payload_len = (uint32_t)got;
        if (kind == MIG_K_READ)
            mig_stdin_count(fd, c.result);
        mig_record(&c);
    }
    mig_busy--;
    if (c.err)
        errno = c.err;
    return (ssize_t)c.result;
}

/* Output: barrier, real write, record length + hash; replay compares and returns. */
static ssize_t output_call(enum mig_kind kind, int fd, int64_t a1, int64_t a2, const void *buf,
                           const struct iovec *iov, int iovcnt, uint64_t len,
                           ssize_t (*real)(void *), void *ctx, int hold_op)
{
    struct mig_call c = {.kind = kind, .args = {fd, a1, a2}, .out = buf, .iov = iov,
                         .iovcnt = iovcnt, .out_len = len, .is_output = 1};
    mig_busy++;
    if (hold_op >= 0)
        /* the release thread starts at the first output that could be held, on every host
         * alike, held or not (an eventfd's or a self-pipe's write is not): it calls the
         * app's calloc and maps memory, which must happen at the same call everywhere */
        mig_hold_mirror(&c);
    int inside = 0; /* an eventfd: only the app itself reads it, nothing to commit first */
    if (mig_mode == MIG_REPLAY && mig_replay_output(&c, 3)) {
        mig_replay_done();
    } else if (!(inside = mig_fd_wakeup(fd)) && hold_op >= 0 && mig_holding() &&
               mig_hold_output(&c, hold_op, (int)a2)) {
        /* held: recorded as written, released once committed (mig_hold.c) */
    } else {
        if (!inside)
            mig_output_barrier();
        mig_busy--;
        c.result = real(ctx);
        c.err = c.result < 0 ? errno : 0;
        mig_busy++;
        c.out_len = c.result > 0 ? (uint64_t)c.result : 0;
        mig_record(&c);
    }
    mig_busy--;
    if (c.err)
        errno = c.err;
    return (ssize_t)c.result;
}

struct io_ctx {
    int fd;
    void *buf;
    const void *cbuf;
    size_t n;
    int flags;
    const struct iovec *iov;
    int iovcnt;
    struct sockaddr *addr;
    const struct sockaddr *caddr;
    socklen_t *alen;
    socklen_t clen;
    struct msghdr *msg;
    const struct msghdr *cmsg;
};

static ssize_t r_read(void *p) { struct io_ctx *x = p; mig_sched_block(); return mig_real.read(x->fd, x->buf, x->n); }
static ssize_t r_readv(void *p) { struct io_ctx *x = p; mig_sched_block(); return mig_real.readv(x->fd, x->iov, x->iovcnt); }
static ssize_t r_recv(void *p) { struct io_ctx *x = p; mig_sched_block(); return mig_real.recv(x->fd, x->buf, x->n, x->flags); }
static ssize_t r_write(void *p) { struct io_ctx *x = p; mig_sched_block(); return mig_real.write(x->fd, x->cbuf, x->n); }
static ssize_t r_writev(void *p) { struct io_ctx *x = p; mig_sched_block(); return mig_real.writev(x->fd, x->iov, x->iovcnt); }
static ssize_t r_send(void *p) { struct io_ctx *x = p; mig_sched_block(); return mig_real.send(x->fd, x->cbuf, x->n, x->flags); }
static ssize_t r_sendto(void *p)
{
    struct io_ctx *x = p;
    mig_sched_block();
    return mig_real.sendto(x->fd, x->cbuf, x->n, x->flags, x->caddr, x->clen);
}
static ssize_t r_sendmsg(void *p) { struct io_ctx *x = p; mig_sched_block(); return mig_real.sendmsg(x->fd, x->cmsg, x->flags); }

static uint64_t iov_total(const struct iovec *iov, int cnt)
{
    uint64_t total = 0;
    for (int i = 0; i < cnt; i++)
        total += iov[i].iov_len;
    return total;
}

/* At most MIG_MAX_INPUT bytes per recorded input call (a short read). */
static size_t cap(size_t n)
{
    return n < MIG_MAX_INPUT ? n : MIG_MAX_INPUT;
}

/* The first iovcnt (at most 64) pieces of iov, cut at MIG_MAX_INPUT bytes, into out. */
static int cap_iov(const struct iovec *iov, int iovcnt, struct iovec out[64])
{
    size_t total = 0;
    int n = 0;
    for (; n < iovcnt && n < 64 && total < MIG_MAX_INPUT; n++) {
        out[n] = iov[n];
        if (out[n].iov_len > MIG_MAX_INPUT - total)
            out[n].iov_len = MIG_MAX_INPUT - total;
        total += out[n].iov_len;
    }
    return n;
}

MIG_EXPORT ssize_t read(int fd, void *buf, size_t n)
{
    MIG_ENTER(mig_real.read(fd, buf, n));
    if (!mig_fd_recorded(fd))
        return mig_real.read(fd, buf, n);
    struct io_ctx x = {.fd = fd, .buf = buf, .n = cap(n)};
    return input_call(MIG_K_READ, fd, (int64_t)n, 0, buf, NULL, 0, r_read, &x);
}

MIG_EXPORT ssize_t readv(int fd, const struct iovec *iov, int iovcnt)
{
    MIG_ENTER(mig_real.readv(fd, iov, iovcnt));
    if (!mig_fd_recorded(fd))
        return mig_real.readv(fd, iov, iovcnt);
    struct iovec capped[64];
    int cnt = cap_iov(iov, iovcnt, capped);
    struct io_ctx x = {.fd = fd, .iov = capped, .iovcnt = cnt};
    return input_call(MIG_K_READ, fd, (int64_t)iov_total(iov, iovcnt), 1, NULL, capped, cnt,
                      r_readv, &x);
}

MIG_EXPORT ssize_t recv(int fd, void *buf, size_t n, int flags)
{
    MIG_ENTER(mig_real.recv(fd, buf, n, flags));
    struct io_ctx x = {.fd = fd, .buf = buf, .n = cap(n), .flags = flags};
    return input_call(MIG_K_RECV, fd, (int64_t)n, flags, buf, NULL, 0, r_recv, &x);
}

/* recvfrom and recvmsg: the data, then the peer's address and the ancillary data, all as
 * the program would get them natively (on the primary the real call fills the program's
 * own buffers). The record's payload is the data, then the address bytes, then the control
 * bytes; args[3] holds the address length the kernel reported, the control length and
 * msg_flags (namelen | controllen << 16 | msg_flags << 32). A log without them (args[3]
 * 0) replays as a plain receive. File descriptors received (SCM_RIGHTS) get a placeholder
 * at the same number on a backup, as accepted sockets do. */
#define MIG_MSG_ARG3(namelen, ctllen, mflags)                                              \
    ((int64_t)((uint64_t)(namelen) | (uint64_t)(ctllen) << 16 |                              \
               (uint64_t)(uint32_t)(mflags) << 32))

struct msg_parts {
    const struct iovec *iov; /* the data pieces (capped) */
    int iovcnt;
    void *name;              /* address buffer, and its capacity (in) */
    socklen_t name_cap;
    socklen_t namelen;       /* out: the length the kernel reported */
    void *control;
    size_t control_cap;
    size_t controllen;       /* out */
    int mflags;              /* out: msg_flags */
};

static void for_each_fd(const void *control, size_t len, int cloexec, int replay)
{
    struct msghdr m = {.msg_control = (void *)control, .msg_controllen = len};
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const int *fds = (const int *)CMSG_DATA(c);
        for (size_t i = 0; i < n; i++) {
            int fd;
            memcpy(&fd, fds + i, sizeof fd);
            if (replay)
                mig_placeholder_at(fd, cloexec ? SOCK_CLOEXEC : 0);
            else
                mig_fd_forget(fd); /* a new file at this number: classify it afresh */
        }
    }
}

static ssize_t msg_call(int fd, int64_t asked, int64_t a2, int flags, struct msg_parts *p,
                        ssize_t (*real)(void *), void *ctx)
{
    struct mig_call c = {.kind = MIG_K_RECV, .args = {fd, asked, a2}};
    mig_busy++;
    if (mig_mode == MIG_REPLAY && mig_replay(&c, 3)) {
        uint64_t extra = (uint64_t)c.rec_args[3];
        uint64_t data = c.result > 0 ? (uint64_t)c.result : 0;
        size_t ctl = (size_t)((extra >> 16) & 0xffff);
        mig_replay_fits(&c, (uint64_t)asked + p->name_cap + p->control_cap);
        if (data + ctl > c.payload_len)
            mig_replay_fits(&c, 0); /* lengths that do not add up: a damaged log */
        const unsigned char *src = c.payload;
        scatter(p->iov, p->iovcnt, src, data);
        size_t name_bytes = c.payload_len - data - ctl;
        if (p->name && name_bytes)
            memcpy(p->name, src + data, name_bytes < p->name_cap ? name_bytes : p->name_cap);
        p->namelen = (socklen_t)(extra & 0xffff);
        if (p->control && ctl) {
            size_t n = ctl < p->control_cap ? ctl : p->control_cap;
            memcpy(p->control, src + data + name_bytes, n);
            for_each_fd(p->control, n, flags & MSG_CMSG_CLOEXEC, 1);
        }
        p->controllen = ctl;
        p->mflags = (int)(extra >> 32);
        mig_replay_done();
    } else {
        mig_busy--;
        c.result = real(ctx);
        c.err = c.result < 0 ? errno : 0;
        mig_busy++;
        uint64_t got = c.result > 0 ? (uint64_t)c.result : 0;
        struct iovec parts[66];
        int n = 0;
        uint64_t left = got;
        for (int i = 0; i < p->iovcnt && left; i++, n++) {
            parts[n] = p->iov[i];
            if (parts[n].iov_len > left)
                parts[n].iov_len = left;
            left -= parts[n].iov_len;
        }
        socklen_t name_bytes = 0;
        if (c.result >= 0 && p->name)
            name_bytes = p->namelen < p->name_cap ? p->namelen : p->name_cap;
        if (name_bytes)
            parts[n++] = (struct iovec){p->name, name_bytes};
        size_t ctl = c.result >= 0 && p->control ? p->controllen : 0;
        if (ctl)
            parts[n++] = (struct iovec){p->control, ctl};
        if (ctl)
            for_each_fd(p->control, ctl, 0, 0);
        c.args[3] = c.result >= 0 ? MIG_MSG_ARG3(p->namelen, ctl, p->mflags) : 0;
        c.in_iov = parts;
        c.in_iovcnt = n;
        c.payload_len = (uint32_t)(got + name_bytes + ctl);
        mig_record(&c);
    }
    mig_busy--;
    if (c.err)
        errno = c.err;
    return (ssize_t)c.result;
}

struct from_ctx {
    int fd;
    void *buf;
    size_t n;
    int flags;
    struct msg_parts *p;
};

static ssize_t r_recvfrom(void *q)
{
    struct from_ctx *x = q;
    socklen_t len = x->p->name_cap;
    mig_sched_block();
    ssize_t r = mig_real.recvfrom(x->fd, x->buf, x->n, x->flags,
                                  x->p->name ? (struct sockaddr *)x->p->name : NULL,
                                  x->p->name ? &len : NULL);
    x->p->namelen = x->p->name ? len : 0;
    return r;
}

MIG_EXPORT ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *addr,
                            socklen_t *alen)
{
    MIG_ENTER(mig_real.recvfrom(fd, buf, n, flags, addr, alen));
    struct iovec data = {buf, cap(n)};
    struct msg_parts p = {.iov = &data, .iovcnt = 1, .name = addr && alen ? addr : NULL,
                          .name_cap = addr && alen ? *alen : 0};
    struct from_ctx x = {.fd = fd, .buf = buf, .n = cap(n), .flags = flags, .p = &p};
    ssize_t r = msg_call(fd, (int64_t)n, flags, flags, &p, r_recvfrom, &x);
    if (r >= 0 && addr && alen)
        *alen = p.namelen;
    return r;
}

struct msg_ctx {
    int fd;
    struct msghdr *m;
    int flags;
    struct msg_parts *p;
};

static ssize_t r_recvmsg(void *q)
{
    struct msg_ctx *x = q;
    ssize_t r;
    if (x->m->msg_control && x->m->msg_controllen) {
        /* it may receive fds (SCM_RIGHTS): they are made holding the token */
        do {
            mig_sched_wait_readable(x->fd, x->flags & MSG_DONTWAIT);
            r = mig_real.recvmsg(x->fd, x->m, x->flags | (mig_serial_on ? MSG_DONTWAIT : 0));
        } while (r < 0 && errno == EAGAIN && mig_serial_on && !(x->flags & MSG_DONTWAIT) &&
                 !(syscall(SYS_fcntl, x->fd, F_GETFL) & O_NONBLOCK));
    } else {
        mig_sched_block();
        r = mig_real.recvmsg(x->fd, x->m, x->flags);
    }
    x->p->namelen = x->m->msg_name ? x->m->msg_namelen : 0;
    x->p->controllen = x->m->msg_control ? x->m->msg_controllen : 0;
    x->p->mflags = x->m->msg_flags;
    return r;
}

MIG_EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
    MIG_ENTER(mig_real.recvmsg(fd, msg, flags));
    struct iovec capped[64];
    struct msghdr m = *msg;
    m.msg_iovlen = (size_t)cap_iov(msg->msg_iov, (int)msg->msg_iovlen, capped);
    m.msg_iov = capped;
    struct msg_parts p = {.iov = capped, .iovcnt = (int)m.msg_iovlen,
                          .name = msg->msg_name, .name_cap = msg->msg_name ? msg->msg_namelen : 0,
                          .control = msg->msg_control,
                          .control_cap = msg->msg_control ? msg->msg_controllen : 0};
    struct msg_ctx x = {.fd = fd, .m = &m, .flags = flags, .p = &p};
    ssize_t r = msg_call(fd, (int64_t)iov_total(msg->msg_iov, (int)msg->msg_iovlen),
                         flags | 0x40000000, flags, &p, r_recvmsg, &x);
    if (r >= 0) {
        msg->msg_namelen = msg->msg_name ? p.namelen : 0;
        msg->msg_controllen = msg->msg_control ? p.controllen : 0;
        msg->msg_flags = p.mflags;
    }
    return r;
}

MIG_EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
    MIG_ENTER(mig_real.write(fd, buf, n));
    if (!mig_fd_recorded(fd))
        return mig_real.write(fd, buf, n);
    struct io_ctx x = {.fd = fd, .cbuf = buf, .n = n};
    return output_call(MIG_K_WRITE, fd, (int64_t)n, 0, buf, NULL, 0, n, r_write, &x, 0);
}

MIG_EXPORT ssize_t writev(int fd, const struct iovec *iov, int iovcnt)
{
    MIG_ENTER(mig_real.writev(fd, iov, iovcnt));
    if (!mig_fd_recorded(fd))
        return mig_real.writev(fd, iov, iovcnt);
    struct io_ctx x = {.fd = fd, .iov = iov, .iovcnt = iovcnt};
    uint64_t total = iov_total(iov, iovcnt);
    return output_call(MIG_K_WRITE, fd, (int64_t)total, 1, NULL, iov, iovcnt, total, r_writev, &x,
                       0);
}

MIG_EXPORT ssize_t send(int fd, const void *buf, size_t n, int flags)
{
    MIG_ENTER(mig_real.send(fd, buf, n, flags));
    struct io_ctx x = {.fd = fd, .cbuf = buf, .n = n, .flags = flags};
    return output_call(MIG_K_SEND, fd, (int64_t)n, flags, buf, NULL, 0, n, r_send, &x, 1);
}

MIG_EXPORT ssize_t sendto(int fd, const void *buf, size_t n, int flags,
                          const struct sockaddr *addr, socklen_t alen)
{
    MIG_ENTER(mig_real.sendto(fd, buf, n, flags, addr, alen));
    struct io_ctx x = {.fd = fd, .cbuf = buf, .n = n, .flags = flags, .caddr = addr, .clen = alen};
    return output_call(MIG_K_SEND, fd, (int64_t)n, flags, buf, NULL, 0, n, r_sendto, &x,
                       addr ? -1 : 1);
}

MIG_EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    MIG_ENTER(mig_real.sendmsg(fd, msg, flags));
    struct io_ctx x = {.fd = fd, .cmsg = msg, .flags = flags};
    uint64_t total = iov_total(msg->msg_iov, (int)msg->msg_iovlen);
    int holdable = msg->msg_name == NULL && msg->msg_controllen == 0;
    if (msg->msg_controllen)
        mig_fd_shared(); /* fds sent (SCM_RIGHTS): an eventfd among them has another holder */
    return output_call(MIG_K_SEND, fd, (int64_t)total, flags, NULL, msg->msg_iov,
                       (int)msg->msg_iovlen, total, r_sendmsg, &x, holdable ? 1 : -1);
}

MIG_EXPORT int close(int fd)
{
    MIG_ENTER(mig_real.close(fd));
    if (!mig_fd_recorded(fd)) {
        mig_fd_forget(fd);
        return mig_real.close(fd);
    }
    /* Recorded fds are closed for real on both hosts (a backup closes its placeholder), so
     * the fd table evolves the same way; the result is the primary's. */
    struct mig_call c = {.kind = MIG_K_CLOSE, .args = {fd}};
    mig_busy++;
    mig_hold_close(fd); /* held bytes still leave, through the duplicate */
    mig_track_close(fd);
    int r = mig_real.close(fd);
    int e = errno;
    mig_fd_forget(fd);
    if (mig_mode == MIG_REPLAY && mig_replay(&c, 1)) {
        mig_replay_done();
    } else {
        c.result = r;
        c.err = r < 0 ? e : 0;
        mig_record(&c);
    }
    mig_busy--;
    if (c.err)
        errno = c.err;
    return (int)c.result;
}

/* ------------------------------------------------- sendfile, splice, copy_file_range
 *
 * The kernel moves these bytes itself: no read or write wrapper would see them. With a
 * socket or a pipe on a side, the call is done as a read and a write instead: at most
 * COPY_CHUNK bytes read from the source (recorded when it is a recorded fd, for real from
 * a regular file), then written to the target through the write path (recorded, held in
 * output mode, compared on a backup, performed once live) -- the READ and WRITE records
 * the program's own read and write would make. The result and the offsets are the
 * kernel's: a short write puts the unwritten part back (*offset moves by what was written,
 * or the file's position is set back). Bytes read from a socket or a pipe cannot be put
 * back: the target is written until it has them all, waiting for room when it is
 * nonblocking and full. */
#define COPY_CHUNK (64u * 1024u)

static MIG_TLS unsigned char *copy_buf; /* this thread's, mapped at its first copy */
static MIG_TLS int copying;             /* copy_buf holds bytes on their way */

static unsigned char *map_chunk(void)
{
    long m = syscall(SYS_mmap, NULL, COPY_CHUNK, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return m < 0 ? NULL : (unsigned char *)m; /* -errno: a raw system call */
}

/* This thread's buffer, or a fresh one while it is in use: a backup runs a signal
 * handler at the record the primary ran it before, which can be a copy's write, after
 * its read -- and the handler may copy too. */
static unsigned char *copy_buffer(void)
{
    if (copying)
        return map_chunk();
    if (!copy_buf)
        copy_buf = map_chunk();
    return copy_buf;
}

void mig_copy_thread_exit(void)
{
    if (copy_buf)
        syscall(SYS_munmap, copy_buf, COPY_CHUNK);
    copy_buf = NULL;
}

/* A raw system call's -errno back to libc's convention. */
static ssize_t sys_result(long r)
{
    if (r < 0) {
        errno = (int)-r;
        return -1;
    }
    return r;
}

/* Read from the source: at *off (pread) or its position when off is NULL. */
static ssize_t copy_read(int fd, const loff_t *off, unsigned char *buf, size_t n)
{
    if (mig_fd_recorded(fd)) {
        struct io_ctx x = {.fd = fd, .buf = buf, .n = n};
        return input_call(MIG_K_READ, fd, (int64_t)n, 0, buf, NULL, 0, r_read, &x);
    }
    return sys_result(off ? syscall(SYS_pread64, fd, buf, n, *off)
                          : syscall(SYS_read, fd, buf, n));
}

/* Write to the target, at `at` when off is given: what write(fd, buf, n) would do. */
static ssize_t copy_write(int fd, const loff_t *off, loff_t at, const unsigned char *buf,
                          size_t n)
{
    if (mig_fd_recorded(fd)) {
        struct io_ctx x = {.fd = fd, .cbuf = buf, .n = n};
        return output_call(MIG_K_WRITE, fd, (int64_t)n, 0, buf, NULL, 0, n, r_write, &x, 0);
    }
    return sys_result(off ? syscall(SYS_pwrite64, fd, buf, n, at)
                          : syscall(SYS_write, fd, buf, n));
}

/* Until fd takes bytes again. A backup writes nothing: the log's next result follows. */
static void wait_for_room(int fd)
{
    if (mig_mode == MIG_REPLAY)
        return;
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    mig_sched_block(); /* serialized threads: the reader may be another of ours */
    syscall(SYS_poll, &p, 1, -1);
    mig_sched_resume();
}

/* At most n bytes (n <= COPY_CHUNK) from in to out through buf: one read, then writes. */
static ssize_t copy_bytes(int in, loff_t *off_in, int out, loff_t *off_out,
                          unsigned char *buf, size_t n, int in_recorded)
{
    ssize_t got = copy_read(in, off_in, buf, n);
    if (got <= 0)
        return got;
    size_t done = 0;
    int err = 0;
    while (done < (size_t)got) {
        ssize_t w = copy_write(out, off_out, off_out ? *off_out + (loff_t)done : 0,
                               buf + done, (size_t)got - done);
        if (w > 0) {
            done += (size_t)w;
            if (!in_recorded)
                break; /* a short write: the rest goes back to the file */
            continue;
        }
        err = w < 0 ? errno : EIO;
        if (!in_recorded || (err != EAGAIN && err != EWOULDBLOCK && err != EINTR))
            break;
        wait_for_room(out);
    }
    if (off_in)
        *off_in += (loff_t)done;
    else if (!in_recorded && done < (size_t)got)
        syscall(SYS_lseek, in, -(off_t)((size_t)got - done), SEEK_CUR);
    if (off_out)
        *off_out += (loff_t)done;
    if (!done) {
        errno = err;
        return -1;
    }
    return (ssize_t)done;
}

/* At most n bytes from in to out, one of them a recorded fd; off_in and off_out as
 * splice takes them (NULL: the fd's position). An offset on a recorded fd is ESPIPE, as
 * for a pipe or a socket (a backup cannot tell a /proc file from them: it has a
 * placeholder there). */
static ssize_t copy_call(int in, loff_t *off_in, int out, loff_t *off_out, size_t n)
{
    int in_recorded = mig_fd_recorded(in);
    if ((off_in && in_recorded) || (off_out && mig_fd_recorded(out))) {
        errno = ESPIPE;
        return -1;
    }
    if ((off_in && *off_in < 0) || (off_out && *off_out < 0)) {
        errno = EINVAL;
        return -1;
    }
    if (n == 0)
        return 0;
    unsigned char *buf = copy_buffer();
    if (!buf) {
        errno = ENOMEM;
        return -1;
    }
    copying++;
    ssize_t r = copy_bytes(in, off_in, out, off_out, buf, n < COPY_CHUNK ? n : COPY_CHUNK,
                           in_recorded);
    if (--copying)
        syscall(SYS_munmap, buf, COPY_CHUNK); /* a raw call: errno stays */
    return r;
}

/* sendfile and sendfile64 (the same call on 64-bit Linux; nginx, built with 64-bit file
 * offsets, calls the second). */
MIG_EXPORT ssize_t sendfile(int out, int in, off_t *off, size_t n)
{
    MIG_ENTER(mig_real.sendfile(out, in, off, n));
    if (!mig_fd_recorded(out) && !mig_fd_recorded(in))
        return mig_real.sendfile(out, in, off, n);
    return copy_call(in, (loff_t *)off, out, NULL, n);
}

MIG_EXPORT ssize_t sendfile64(int out, int in, off64_t *off, size_t n)
{
    MIG_ENTER(mig_real.sendfile(out, in, (off_t *)off, n));
    if (!mig_fd_recorded(out) && !mig_fd_recorded(in))
        return mig_real.sendfile(out, in, (off_t *)off, n);
    return copy_call(in, (loff_t *)off, out, NULL, n);
}

/* splice's flags (SPLICE_F_NONBLOCK, _MORE, _MOVE) are not applied when it is emulated:
 * the fds' own O_NONBLOCK decides whether it waits (docs/interceptor.md). */
MIG_EXPORT ssize_t splice(int in, loff_t *off_in, int out, loff_t *off_out, size_t n,
                          unsigned int flags)
{
    MIG_ENTER(mig_real.splice(in, off_in, out, off_out, n, flags));
    if (!mig_fd_recorded(out) && !mig_fd_recorded(in))
        return mig_real.splice(in, off_in, out, off_out, n, flags);
    return copy_call(in, off_in, out, off_out, n);
}

/* copy_file_range takes regular files only: a socket, a pipe or a device on a side is
 * EINVAL from the kernel, and so is a /proc or /sys file here (recorded like a socket: a
 * backup has a placeholder there, which the kernel would refuse). */
MIG_EXPORT ssize_t copy_file_range(int in, loff_t *off_in, int out, loff_t *off_out, size_t n,
                                   unsigned int flags)
{
    MIG_ENTER(mig_real.copy_file_range(in, off_in, out, off_out, n, flags));
    if (mig_fd_recorded(out) || mig_fd_recorded(in)) {
        errno = EINVAL;
        return -1;
    }
    return mig_real.copy_file_range(in, off_in, out, off_out, n, flags);
}
