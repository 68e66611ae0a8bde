/* kvserver.c -- a single-threaded TCP key-value server on an epoll event loop.
 *
 * One of the programs mig's integration tests record on a primary and replay on a backup;
 * it knows nothing of mig. It makes the calls a typical event-driven server makes:
 * epoll_create1/epoll_ctl/epoll_wait, non-blocking accept4/read/write, getrandom() for
 * ids, clock_gettime(CLOCK_REALTIME) for entry timestamps and clock_gettime(CLOCK_MONOTONIC)
 * for an idle-connection timeout, so the recorded time decides which connections survive.
 * epoll entries carry the fd, not a pointer, so recorded epoll events hold no addresses.
 * What DUMP writes depends only on the requests, the clocks and the randomness the program
 * saw -- no pids, no addresses.
 *
 * usage: kvserver PORT [BIND_ADDR [IDLE_SECONDS]]      defaults: 127.0.0.1, 60
 *
 * Protocol: SET/GET/DEL as in kvstore.h, plus
 *   DUMP path -> DUMPED <n>   writes "kvserver entries=<n>" and the sorted entries to path
 *   QUIT      -> BYE          then closes the connection
 *   BALLAST MB -> BALLAST <MB> <sum>   holds MB MiB of state made from 8 bytes of getrandom()
 *                                      (a xorshift stream): big memory from a small log;
 *                                      DUMP's header then says ballast=<MB>:<sum>, the sum
 *                                      read back from memory
 *   SETRAND key -> OK   sets key to 8 random bytes in hex, read with a raw
 *                       syscall(SYS_getrandom) (a call around libc's symbols)
 */
#define _GNU_SOURCE
#include "kvstore.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define OUT_LIMIT (1 << 20) /* stop reading requests while this many reply bytes wait */
#define MAX_EVENTS 64

struct conn {
    int fd;
    char in[KV_MAX_LINE];
    size_t inlen;
    struct kv_buf out;
    long long last_ms; /* CLOCK_MONOTONIC of the last bytes received */
    uint32_t events;   /* what epoll watches for now */
    int quit;          /* QUIT or an overlong line: no more requests */
    int eof;           /* the peer sent everything it will */
};

static struct kv_store store;
static struct conn **conns; /* indexed by fd */
static size_t nconns;       /* length of conns */
static int epfd, lfd;
static long long idle_ms = 60000;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void conn_close(struct conn *c)
{
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    conns[c->fd] = NULL;
    kv_buf_free(&c->out);
    free(c);
}

static void conn_add(int fd, long long now)
{
    if ((size_t)fd >= nconns) {
        size_t n = nconns ? nconns : 64;
        while (n <= (size_t)fd)
            n *= 2;
        struct conn **t = realloc(conns, n * sizeof *t);
        if (!t) {
            close(fd);
            return;
        }
        memset(t + nconns, 0, (n - nconns) * sizeof *t);
        conns = t;
        nconns = n;
    }
    struct conn *c = calloc(1, sizeof *c);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    if (!c || epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        free(c);
        close(fd);
        return;
    }
    c->fd = fd;
    c->last_ms = now;
    c->events = EPOLLIN;
    conns[fd] = c;
}

static uint64_t *ballast;
static size_t ballast_words;

static uint64_t ballast_sum(void)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < ballast_words; i++)
        h = (h ^ ballast[i]) * 0x100000001b3ull;
    return h;
}

static int ballast_fill(size_t mb)
{
    uint64_t x;
    if (getrandom(&x, sizeof x, 0) != (ssize_t)sizeof x)
        return -1;
    x |= 1;
    uint64_t *p = realloc(ballast, mb ? mb << 20 : 8);
    if (!p)
        return -1;
    ballast = p;
    ballast_words = (mb << 20) / sizeof *p;
    for (size_t i = 0; i < ballast_words; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ballast[i] = x;
    }
    return 0;
}

static void handle(struct conn *c, char *line)
{
    char *argv[KV_MAX_ARGS];
    char reply[KV_MAX_REPLY];
    int argc = kv_split(line, argv, KV_MAX_ARGS);

    if (argc == 0) {
        snprintf(reply, sizeof reply, "ERR empty request");
    } else if (argc > KV_MAX_ARGS) {
        snprintf(reply, sizeof reply, "ERR too many arguments");
    } else if (kv_command(&store, argc, argv, reply, sizeof reply)) {
        /* SET, GET or DEL */
    } else if (strcmp(argv[0], "SETRAND") == 0 && argc == 2) {
        unsigned char raw[8];
        char hex[17], *set[3] = {"SET", argv[1], hex};
        if (syscall(SYS_getrandom, raw, sizeof raw, 0) != (long)sizeof raw)
            snprintf(reply, sizeof reply, "ERR getrandom");
        else {
            for (int i = 0; i < 8; i++)
                snprintf(hex + 2 * i, 3, "%02x", raw[i]);
            kv_command(&store, 3, set, reply, sizeof reply);
        }
    } else if (strcmp(argv[0], "DUMP") == 0) {
        char header[128];
        long n = -1;
        if (argc == 2) {
            if (ballast_words)
                snprintf(header, sizeof header, "kvserver entries=%zu ballast=%zu:%016llx",
                         store.count, ballast_words * 8 >> 20,
                         (unsigned long long)ballast_sum());
            else
                snprintf(header, sizeof header, "kvserver entries=%zu", store.count);
            n = kv_dump(&store, argv[1], header);
        }
        if (argc != 2)
            snprintf(reply, sizeof reply, "ERR usage: DUMP path");
        else if (n < 0)
            snprintf(reply, sizeof reply, "ERR dump: %s", strerror(errno));
        else
            snprintf(reply, sizeof reply, "DUMPED %ld", n);
    } else if (strcmp(argv[0], "BALLAST") == 0 && argc == 2) {
        size_t mb = strtoul(argv[1], NULL, 10);
        if (mb > 4096 || ballast_fill(mb) < 0)
            snprintf(reply, sizeof reply, "ERR ballast: %s", strerror(errno ? errno : EINVAL));
        else
            snprintf(reply, sizeof reply, "BALLAST %zu %016llx", mb,
                     (unsigned long long)ballast_sum());
    } else if (strcmp(argv[0], "QUIT") == 0) {
        snprintf(reply, sizeof reply, "BYE");
        c->quit = 1;
    } else {
        snprintf(reply, sizeof reply, "ERR unknown command");
    }
    if (kv_buf_addline(&c->out, reply) < 0)
        c->quit = 1;
}

/* Runs complete requests while the reply backlog is small, sends what the socket takes,
 * then re-arms epoll for what the connection still needs -- or closes it once it has
 * nothing left to say and will hear nothing more. */
static void conn_service(struct conn *c)
{
    char line[KV_MAX_LINE];
    for (;;) {
        while (!c->quit && kv_buf_pending(&c->out) < OUT_LIMIT) {
            int r = kv_pop_line(c->in, &c->inlen, sizeof c->in, line);
            if (r == 0)
                break;
            if (r < 0) {
                kv_buf_addline(&c->out, "ERR line too long");
                c->quit = 1;
                break;
            }
            handle(c, line);
        }
        if (kv_buf_flush(&c->out, c->fd, 0) < 0) {
            conn_close(c);
            return;
        }
        /* a full backlog that drained at once: go on with the waiting requests */
        if (kv_buf_pending(&c->out) == 0 && !c->quit && kv_has_line(c->in, c->inlen))
            continue;
        break;
    }
    size_t pending = kv_buf_pending(&c->out);
    if ((c->quit || c->eof) && pending == 0) {
        conn_close(c);
        return;
    }
    uint32_t want = 0;
    if (!c->quit && !c->eof && pending < OUT_LIMIT && c->inlen < sizeof c->in)
        want |= EPOLLIN;
    if (pending)
        want |= EPOLLOUT;
    if (want != c->events) {
        struct epoll_event ev = {.events = want, .data.fd = c->fd};
        if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) {
            conn_close(c);
            return;
        }
        c->events = want;
    }
}

static void conn_readable(struct conn *c, long long now)
{
    while (!c->eof && c->inlen < sizeof c->in) {
        ssize_t n = read(c->fd, c->in + c->inlen, sizeof c->in - c->inlen);
        if (n > 0) {
            c->inlen += (size_t)n;
            c->last_ms = now;
        } else if (n == 0) {
            c->eof = 1;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            break;
        } else if (errno != EINTR) {
            conn_close(c);
            return;
        }
    }
    conn_service(c);
}

static void accept_all(long long now)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            conn_add(fd, now);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            perror("kvserver: accept4");
        return;
    }
}

/* Closes connections idle for idle_ms; returns the epoll_wait timeout until the next
 * one would expire (-1: no connections). */
static int sweep_idle(long long now)
{
    long long next = -1;
    for (size_t fd = 0; fd < nconns; fd++) {
        struct conn *c = conns[fd];
        if (!c)
            continue;
        long long left = c->last_ms + idle_ms - now;
        if (left <= 0) {
            conn_close(c);
            continue;
        }
        if (next < 0 || left < next)
            next = left;
    }
    return next > INT_MAX ? INT_MAX : (int)next;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: kvserver PORT [BIND_ADDR [IDLE_SECONDS]]\n");
        return 2;
    }
    long port = kv_parse_num(argv[1], 65535);
    const char *addr = argc > 2 ? argv[2] : "127.0.0.1";
    long idle_s = argc > 3 ? kv_parse_num(argv[3], 86400) : 60;
    if (port < 0 || idle_s <= 0) {
        fprintf(stderr, "kvserver: bad PORT or IDLE_SECONDS\n");
        return 2;
    }
    idle_ms = idle_s * 1000;
    signal(SIGPIPE, SIG_IGN);

    if (kv_init(&store) < 0) {
        perror("kvserver: kv_init");
        return 1;
    }
    lfd = kv_listen(addr, (int)port);
    if (lfd < 0) {
        perror("kvserver: listen");
        return 1;
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.fd = lfd};
    if (epfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev) < 0) {
        perror("kvserver: epoll");
        return 1;
    }

    struct epoll_event ev[MAX_EVENTS];
    int timeout = -1;
    for (;;) {
        int n = epoll_wait(epfd, ev, MAX_EVENTS, timeout);
        if (n < 0 && errno != EINTR) {
            perror("kvserver: epoll_wait");
            return 1;
        }
        long long now = now_ms();
        for (int i = 0; i < n; i++) {
            int fd = ev[i].data.fd;
            if (fd == lfd) {
                accept_all(now);
                continue;
            }
            struct conn *c = (size_t)fd < nconns ? conns[fd] : NULL;
            if (!c)
                continue;
            if (ev[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                conn_readable(c, now);
            else if (ev[i].events & EPOLLOUT)
                conn_service(c);
        }
        timeout = sweep_idle(now);
    }
}
