/* mig_live.c -- a replaying backup becomes the primary: going live.
 *
 * While a backup replays, every socket and pipe of the app is a placeholder (an eventfd at
 * the primary's fd number, wrap_net.c). To go live the process needs real ones. So during
 * replay this file notes, per fd, what the app made of it: socket(domain, type, protocol),
 * the options it set, the address it bound, whether it listens; pipe and socketpair ends
 * and their partners; and the epoll sets each fd is registered in, with the events and
 * data. When the replay worker has written the last record of the log into the ring and
 * set the ring's `golive` word, the thread that finds the ring empty calls mig_go_live():
 *
 *  - a listening socket (or a bound datagram socket) is made for real on this host with the
 *    same options, bound to the same address (the wildcard address of the same family and
 *    port when this host does not have it) and placed at the same fd number;
 *  - a socket that was only created is made for real, unbound;
 *  - the old primary's connections (accepted or connected sockets) become dead sockets: the
 *    app reads end-of-file and closes them, so their clients reconnect to this host. Writes
 *    to one succeed and go nowhere (its peer is kept open at the top of the fd space, so a
 *    write raises no SIGPIPE); the app's close of the fd closes the peer too;
 *  - a pipe or socketpair whose two ends this process holds becomes a real pair again; an
 *    end whose partner is in another process (or closed) becomes a dead end;
 *  - every replaced fd is added back to the epoll sets it was in, with its events and data;
 *  - the ring turns around (the shim produces, the agent consumes), the sequence numbers go
 *    on from the last replayed record, and the process records from here on.
 *
 * The app keeps the pids it saw (wrap_ident.c, wrap_proc.c map them). What is not carried:
 * bytes written into a pipe and not yet read when the primary stopped, and fds created
 * before an exec (the table lives in the process image). docs/failover.md lists the limits. */
#define MIG_CORE
#include "mig.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define TRACK_FDS 16384
#define TRACK_OPTS 8
#define TRACK_EPS 4

enum track_what { T_NONE = 0, T_SOCKET = 1, T_PAIR = 2, T_CONNECTED = 3 };

struct track_opt {
    int level, name;
    socklen_t len;
    unsigned char val[16];
};

struct track {
    unsigned char what;
    unsigned char listening;
    unsigned char bound;
    unsigned char is_pipe;
    unsigned char nopts;
    unsigned char end; /* T_PAIR: 0 = sv[0] (a pipe's read end), 1 = sv[1] */
    int domain, type, protocol;
    int backlog;
    int partner;   /* T_PAIR: the other end's fd, -1 once it is closed */
    int dead_peer; /* after going live: 1 + the kept peer of a dead socket; 0: none */
    socklen_t addrlen;
    struct sockaddr_storage addr;
    struct track_opt opts[TRACK_OPTS];
};

struct ep_reg {
    int epfd; /* 0 = free slot (an epoll fd is never 0 in practice: 0 is stdin) */
    uint32_t events;
    uint64_t data;
};

static struct track fds[TRACK_FDS];
static struct ep_reg regs[TRACK_FDS][TRACK_EPS];
static int went_live;

static struct track *at(int fd)
{
    return fd >= 0 && fd < TRACK_FDS ? &fds[fd] : NULL;
}

static int tracking(void)
{
    return mig_mode == MIG_REPLAY;
}

void mig_track_socket(int fd, int domain, int type, int protocol)
{
    struct track *t = at(fd);
    if (!t || !tracking())
        return;
    memset(t, 0, sizeof *t);
    t->what = T_SOCKET;
    t->domain = domain;
    t->type = type;
    t->protocol = protocol;
    t->partner = -1;
}

void mig_track_connected(int fd)
{
    struct track *t = at(fd);
    if (!t || !tracking())
        return;
    if (t->what != T_SOCKET) {
        memset(t, 0, sizeof *t);
        t->partner = -1;
    }
    t->what = T_CONNECTED;
}

void mig_track_bind(int fd, const struct sockaddr *addr, socklen_t len)
{
    struct track *t = at(fd);
    if (!t || !tracking() || t->what != T_SOCKET || !addr || len > sizeof t->addr)
        return;
    memcpy(&t->addr, addr, len);
    t->addrlen = len;
    t->bound = 1;
}

void mig_track_listen(int fd, int backlog)
{
    struct track *t = at(fd);
    if (!t || !tracking() || t->what != T_SOCKET)
        return;
    t->listening = 1;
    t->backlog = backlog;
}

void mig_track_sockopt(int fd, int level, int name, const void *val, socklen_t len)
{
    struct track *t = at(fd);
    if (!t || !tracking() || t->what != T_SOCKET || !val || len > 16)
        return;
    struct track_opt *o = NULL;
    for (int i = 0; i < t->nopts; i++)
        if (t->opts[i].level == level && t->opts[i].name == name)
            o = &t->opts[i];
    if (!o && t->nopts < TRACK_OPTS)
        o = &t->opts[t->nopts++];
    if (!o)
        return;
    o->level = level;
    o->name = name;
    o->len = len;
    memcpy(o->val, val, len);
}

void mig_track_pair(const int sv[2], int is_pipe, int domain, int type, int protocol)
{
    for (int i = 0; i < 2; i++) {
        struct track *t = at(sv[i]);
        if (!t || !tracking())
            continue;
        memset(t, 0, sizeof *t);
        t->what = T_PAIR;
        t->is_pipe = (unsigned char)is_pipe;
        t->domain = domain;
        t->type = type;
        t->protocol = protocol;
        t->partner = sv[1 - i];
        t->end = (unsigned char)i;
    }
}

void mig_track_close(int fd)
{
    struct track *t = at(fd);
    if (!t)
        return;
    if (t->dead_peer > 0)
        mig_real.close(t->dead_peer - 1);
    if (t->what == T_PAIR) {
        struct track *p = at(t->partner);
        if (p && p->what == T_PAIR && p->partner == fd)
            p->partner = -1;
    }
    memset(t, 0, sizeof *t);
    t->partner = -1;
    memset(regs[fd], 0, sizeof regs[fd]);
}

void mig_track_dup(int oldfd, int newfd)
{
    struct track *o = at(oldfd), *n = at(newfd);
    if (!o || !n || oldfd == newfd)
        return;
    if (!tracking()) {
        if (n->dead_peer > 0) /* the app replaced a dead fd: its peer goes with it */
            mig_real.close(n->dead_peer - 1);
        n->dead_peer = 0;
        return;
    }
    *n = *o;
    n->dead_peer = 0;
    if (n->what == T_PAIR)
        n->partner = -1; /* a duplicated end: the original keeps the pairing */
    memset(regs[newfd], 0, sizeof regs[newfd]);
}

void mig_track_epoll(int epfd, int op, int fd, const struct epoll_event *ev)
{
    if (fd < 0 || fd >= TRACK_FDS || !tracking())
        return;
    struct ep_reg *r = regs[fd], *slot = NULL;
    for (int i = 0; i < TRACK_EPS; i++)
        if (r[i].epfd == epfd)
            slot = &r[i];
    if (op == EPOLL_CTL_DEL) {
        if (slot)
            slot->epfd = 0;
        return;
    }
    if (!slot)
        for (int i = 0; i < TRACK_EPS && !slot; i++)
            if (r[i].epfd == 0)
                slot = &r[i];
    if (!slot || !ev)
        return;
    slot->epfd = epfd;
    slot->events = ev->events;
    slot->data = ev->data.u64;
}

/* ------------------------------------------------------------------ going live */

static int high_fd_floor(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur >= 2048 && rl.rlim_cur <= 65536)
        return (int)rl.rlim_cur - 1024; /* below mig_hold.c's duplicates, far from the app */
    return 0;
}

/* Put `real` at the app's fd number with the placeholder's status and fd flags. */
static void place(int real, int fd)
{
    int fl = (int)syscall(SYS_fcntl, fd, F_GETFL);
    int fdfl = (int)syscall(SYS_fcntl, fd, F_GETFD);
    if (fl >= 0)
        syscall(SYS_fcntl, real, F_SETFL, fl & (O_NONBLOCK | O_APPEND | O_ASYNC));
    syscall(SYS_dup3, real, fd, (fdfl >= 0 && (fdfl & FD_CLOEXEC)) ? O_CLOEXEC : 0);
    syscall(SYS_close, real);
}

static void reregister(int fd)
{
    for (int i = 0; i < TRACK_EPS; i++) {
        struct ep_reg *r = &regs[fd][i];
        if (!r->epfd)
            continue;
        struct epoll_event ev = {.events = r->events, .data.u64 = r->data};
        if (mig_real.epoll_ctl(r->epfd, EPOLL_CTL_ADD, fd, &ev) != 0 && errno != EEXIST)
            mig_warn("going live: cannot add an fd back to its epoll set", NULL);
    }
}

/* A socket that reads end-of-file and swallows writes. */
static int dead_socket(struct track *t, int floor)
{
    int sp[2];
    if (mig_real.socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) != 0)
        return -1;
    mig_real.shutdown(sp[1], SHUT_WR);
    int peer = floor ? (int)syscall(SYS_fcntl, sp[1], F_DUPFD_CLOEXEC, floor) : -1;
    if (peer >= 0)
        syscall(SYS_close, sp[1]);
    else
        peer = sp[1];
    t->dead_peer = peer + 1;
    return sp[0];
}

/* The old primary may still hold the address on this host (a planned migration between
 * two members of one machine): it lets go once it sees the promotion. Up to 10 s. */
static int bind_retrying(int s, const struct sockaddr *addr, socklen_t len)
{
    for (int tries = 0;; tries++) {
        if (mig_real.bind(s, addr, len) == 0)
            return 0;
        if (errno != EADDRINUSE || tries >= 1000)
            return -1;
        struct timespec pause = {0, 10000000};
        syscall(SYS_nanosleep, &pause, NULL);
    }
}

static int live_socket(struct track *t)
{
    int s = mig_real.socket(t->domain, (t->type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)) | SOCK_CLOEXEC,
                            t->protocol);
    if (s < 0)
        return -1;
    for (int i = 0; i < t->nopts; i++)
        mig_real.setsockopt(s, t->opts[i].level, t->opts[i].name, t->opts[i].val,
                            t->opts[i].len);
    if (t->bound && bind_retrying(s, (struct sockaddr *)&t->addr, t->addrlen) != 0) {
        /* this host lacks the primary's address: same port on every address */
        struct sockaddr_storage any = t->addr;
        if (any.ss_family == AF_INET)
            memset(&((struct sockaddr_in *)&any)->sin_addr, 0, sizeof(struct in_addr));
        else if (any.ss_family == AF_INET6)
            memset(&((struct sockaddr_in6 *)&any)->sin6_addr, 0, sizeof(struct in6_addr));
        if (errno != EADDRNOTAVAIL || bind_retrying(s, (struct sockaddr *)&any, t->addrlen) != 0) {
            mig_warn("going live: cannot bind a socket at the primary's address", NULL);
            syscall(SYS_close, s);
            return -1;
        }
        mig_warn("going live: this host lacks the bound address; listening on every"
                 " address, same port", NULL);
    }
    if (t->listening && mig_real.listen(s, t->backlog) != 0) {
        mig_warn("going live: listen failed", NULL);
        syscall(SYS_close, s);
        return -1;
    }
    return s;
}

static void live_pair(int fd, struct track *t, int floor)
{
    struct track *p = at(t->partner);
    int both = p && p->what == T_PAIR && p->partner == fd;
    int sv[2] = {-1, -1};
    if (both) {
        int ok = t->is_pipe ? mig_real.pipe2(sv, O_CLOEXEC)
                            : mig_real.socketpair(t->domain, (t->type & ~(SOCK_NONBLOCK |
                                                  SOCK_CLOEXEC)) | SOCK_CLOEXEC,
                                                  t->protocol, sv);
        if (ok == 0) {
            int mine = sv[t->end], theirs = sv[1 - t->end];
            int pfd = t->partner;
            place(mine, fd);
            place(theirs, pfd);
            reregister(fd);
            reregister(pfd);
            p->what = T_NONE; /* done */
            t->what = T_NONE;
            return;
        }
    }
    int s = dead_socket(t, floor);
    if (s >= 0) {
        place(s, fd);
        reregister(fd);
    }
    t->what = T_NONE;
}

void mig_go_live(void)
{
    int floor = high_fd_floor();
    for (int fd = 0; fd < TRACK_FDS; fd++) {
        struct track *t = &fds[fd];
        if (t->what == T_NONE)
            continue;
        if (t->what == T_PAIR) {
            live_pair(fd, t, floor);
            continue;
        }
        /* never connected: made for real (bound, listening as before); else dead */
        int s = t->what == T_SOCKET ? live_socket(t) : -1;
        if (s < 0)
            s = dead_socket(t, floor);
        if (s >= 0) {
            place(s, fd);
            reregister(fd);
        }
        t->what = T_NONE;
    }
    went_live = 1;
    /* from now on a primary's process: it dies with its agent (mig/launch.py sets this for
     * a recorded app; a replaying one gets it here, as a CRIU image must not carry it) */
    syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
}

int mig_went_live(void)
{
    return went_live;
}
