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
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "mig_poison.h"

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
            if (t->listening) /* the app's service: a promotion that cannot serve failed */
                mig_live_failed("going live: cannot bind the listening socket at the"
                                " primary's address", errno);
            mig_warn("going live: cannot bind a socket at the primary's address", NULL);
            syscall(SYS_close, s);
            return -1;
        }
        mig_warn("going live: this host lacks the bound address; listening on every"
                 " address, same port", NULL);
    }
    if (t->listening && mig_real.listen(s, t->backlog) != 0)
        mig_live_failed("going live: listen failed", errno);
    return s;
}

/* ------------------------------------------------------------------ shared listeners
 *
 * A listener several processes share (a master's socket that its workers inherited) has
 * one placeholder in all of them, inherited as the socket was on the primary: one eventfd,
 * which the kernel's eventfd-id (/proc/self/fdinfo) names in every process. The first
 * process to go live makes the real socket; the others take that same socket from it
 * (pidfd_getfd), so the program shares one listener as it did on the primary, instead of
 * each process binding its own, of which only one could listen. The table is a file of
 * the run folder (RUN_DIR/listeners), mapped by every process of the app. Taking another
 * process's fd needs the right to ptrace it: the same user, and a process that stayed
 * dumpable (or CAP_SYS_PTRACE). */
struct shared_listener {
    int64_t id;      /* 1 + the placeholder's eventfd-id; 0: a free entry */
    int32_t pid, fd; /* the process that made the real socket, and its fd there */
    uint32_t state;  /* 1: being made, 2: ready, 3: failed */
    uint32_t pad;
};
#define SHARED_LISTENERS 256

static int64_t placeholder_id(int fd)
{
    char path[48] = "/proc/self/fdinfo/", buf[512];
    *mig_put_uint(path + strlen(path), (uint64_t)fd) = 0;
    int f = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
    if (f < 0)
        return 0;
    long got = syscall(SYS_read, f, buf, sizeof buf - 1);
    syscall(SYS_close, f);
    if (got <= 0)
        return 0;
    buf[got] = 0;
    const char *at = strstr(buf, "eventfd-id:");
    if (!at)
        return 0;
    at += 11;
    while (*at == ' ' || *at == '\t')
        at++;
    int64_t id = 0;
    while (*at >= '0' && *at <= '9')
        id = id * 10 + (*at++ - '0');
    return id + 1;
}

static struct shared_listener *shared_table(void)
{
    static struct shared_listener *table;
    static int tried;
    if (tried)
        return table;
    tried = 1;
    const char *dir = mig_run_dir();
    char path[640];
    size_t n = strlen(dir);
    if (n + sizeof "/listeners" > sizeof path)
        return NULL;
    memcpy(path, dir, n);
    memcpy(path + n, "/listeners", sizeof "/listeners");
    size_t size = SHARED_LISTENERS * sizeof *table;
    int f = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (f < 0)
        return NULL;
    long m = -1;
    if (syscall(SYS_ftruncate, f, (long)size) == 0)
        m = syscall(SYS_mmap, NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
    syscall(SYS_close, f);
    if (m < 0 && m > -4096)
        return NULL;
    table = (struct shared_listener *)m;
    return table;
}

/* The table's entry for placeholder `id`; *mine says this process claimed it (and makes
 * the socket). NULL: the table is full or missing. */
static struct shared_listener *shared_entry(int64_t id, int *mine)
{
    struct shared_listener *table = shared_table();
    for (int i = 0; table && i < SHARED_LISTENERS; i++) {
        int64_t cur = __atomic_load_n(&table[i].id, __ATOMIC_ACQUIRE);
        if (cur == 0 && __atomic_compare_exchange_n(&table[i].id, &cur, id, 0,
                                                    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            __atomic_store_n(&table[i].state, 1, __ATOMIC_RELEASE);
            *mine = 1;
            return &table[i];
        }
        if (cur == id) {
            *mine = 0;
            return &table[i];
        }
    }
    return NULL;
}

/* Another process of the app made the listener: take it (-1: it could not be taken). */
static int take_listener(struct shared_listener *e)
{
    for (int waited = 0; __atomic_load_n(&e->state, __ATOMIC_ACQUIRE) == 1; waited++) {
        if (waited >= 15000) /* its maker's bind may wait 10 s for an old primary */
            return -1;
        struct timespec pause = {0, 1000000};
        syscall(SYS_nanosleep, &pause, NULL);
    }
    if (__atomic_load_n(&e->state, __ATOMIC_ACQUIRE) != 2)
        return -1;
    int pidfd = (int)syscall(SYS_pidfd_open, e->pid, 0);
    if (pidfd < 0)
        return -1;
    int s = (int)syscall(SYS_pidfd_getfd, pidfd, e->fd, 0);
    syscall(SYS_close, pidfd);
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
        /* never connected: made for real (bound, listening as before), once for all the
         * processes that share it; else dead */
        struct shared_listener *shared = NULL;
        int mine = 0, s = -1;
        if (t->what == T_SOCKET && t->listening) {
            int64_t id = placeholder_id(fd);
            shared = id ? shared_entry(id, &mine) : NULL;
        }
        if (shared && !mine) {
            s = take_listener(shared);
            if (s < 0)
                mig_live_failed("going live: cannot take the listener another process of the"
                                " app made (pidfd_getfd)", 0);
        } else if (t->what == T_SOCKET) {
            s = live_socket(t);
        }
        int real = s >= 0;
        if (s < 0)
            s = dead_socket(t, floor);
        if (s >= 0) {
            place(s, fd);
            reregister(fd);
        }
        if (shared && mine) {
            shared->pid = (int32_t)syscall(SYS_getpid);
            shared->fd = fd;
            __atomic_store_n(&shared->state, real ? 2 : 3, __ATOMIC_RELEASE);
        }
        t->what = T_NONE;
    }
    went_live = 1;
    /* No PR_SET_PDEATHSIG here: the app's pid namespace ends with its agent (mig/member/holder.py),
     * and a death signal would kill this process when the *thread* that forked it exits. */
}

int mig_went_live(void)
{
    return went_live;
}
