/* workers.c -- a multi-process TCP key-value server: one parent owns the clients, NWORKERS
 * forked workers own the data, and two pipes per worker carry requests and replies.
 *
 * One of the programs mig's integration tests record on a primary and replay on a backup;
 * it knows nothing of mig. It gives mig a process tree to follow (fork, pipes, waitpid,
 * a signal that stops the parent): the parent polls the listening socket, its clients and
 * the reply pipes with poll(), routes each request to the worker FNV-1a(key) % NWORKERS
 * and relays the reply; each worker answers its requests in order with its own table (ids
 * from getrandom, timestamps from CLOCK_REALTIME). What DUMP writes depends only on the
 * requests, the clocks and the randomness the processes saw -- no pids, no addresses.
 *
 * usage: workers PORT NWORKERS [BIND_ADDR]         NWORKERS in 1..64, BIND_ADDR 127.0.0.1
 *
 * Protocol: SET/GET/DEL as in kvstore.h, plus
 *   DUMP path -> DUMPED <total>   worker i writes "workers part=<i>/<N> entries=<n>" and
 *                                 its sorted entries to path.<i>; the parent answers once
 *                                 every worker has (ERR dump failed if one could not)
 *   QUIT      -> BYE              then closes the connection
 * A client's requests are answered one at a time, in order. SIGTERM or SIGINT: the parent
 * closes the request pipes (workers exit on EOF), reaps every worker and exits 0.
 */
#define _GNU_SOURCE
#include "kvstore.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_WORKERS 64
#define OUT_LIMIT (1 << 20)

/* A client whose reply is the next one a worker will send. The fd may have been closed
 * and reused by then, so the client's serial must match too. */
struct waiter {
    int fd;
    unsigned long long serial;
};

struct worker {
    pid_t pid;
    int req_fd; /* parent's write end of the request pipe, non-blocking */
    int rep_fd; /* parent's read end of the reply pipe, non-blocking */
    struct kv_buf out;
    char in[KV_MAX_REPLY];
    size_t inlen;
    struct waiter *q; /* FIFO of whose replies come next */
    size_t qhead, qlen, qcap;
};

struct client {
    int fd;
    unsigned long long serial;
    char in[KV_MAX_LINE];
    size_t inlen;
    struct kv_buf out;
    int busy;      /* a request is out at the workers; later lines wait */
    int dump_left; /* workers yet to answer this client's DUMP */
    long dump_total;
    int dump_failed;
    int quit, eof;
};

static volatile sig_atomic_t g_stop;
static struct worker workers[MAX_WORKERS];
static int nworkers;
static struct client **clients; /* indexed by fd */
static size_t nclients;
static unsigned long long next_serial;

static void on_stop(int sig)
{
    (void)sig;
    g_stop = 1;
}

/* ---- the worker process ---- */

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void worker_handle(struct kv_store *s, int idx, char *line, char *reply, size_t cap)
{
    char *argv[KV_MAX_ARGS];
    int argc = kv_split(line, argv, KV_MAX_ARGS);
    if (argc > KV_MAX_ARGS) {
        snprintf(reply, cap, "ERR too many arguments");
    } else if (kv_command(s, argc, argv, reply, cap)) {
        /* SET, GET or DEL */
    } else if (argc == 2 && strcmp(argv[0], "DUMP") == 0) {
        char header[96];
        snprintf(header, sizeof header, "workers part=%d/%d entries=%zu", idx, nworkers,
                 s->count);
        long n = kv_dump(s, argv[1], header);
        if (n < 0)
            snprintf(reply, cap, "ERR dump: %s", strerror(errno));
        else
            snprintf(reply, cap, "DUMPED %ld", n);
    } else {
        snprintf(reply, cap, "ERR unknown command");
    }
}

/* Answers requests from req_fd on rep_fd, in order, until the parent closes req_fd. */
static int worker_main(int idx, int req_fd, int rep_fd)
{
    struct kv_store store;
    char in[KV_MAX_REPLY], line[KV_MAX_REPLY], reply[KV_MAX_REPLY + 1];
    size_t inlen = 0;
    if (kv_init(&store) < 0)
        return 1;
    for (;;) {
        int r;
        while ((r = kv_pop_line(in, &inlen, sizeof in, line)) > 0) {
            worker_handle(&store, idx, line, reply, sizeof reply - 1);
            size_t n = strlen(reply);
            reply[n++] = '\n';
            if (write_all(rep_fd, reply, n) < 0)
                return 1;
        }
        if (r < 0)
            return 2; /* the parent forwards only lines it read whole */
        ssize_t n = read(req_fd, in + inlen, sizeof in - inlen);
        if (n == 0)
            return 0;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return 1;
        }
        inlen += (size_t)n;
    }
}

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Forks the workers before the listening socket exists, so they hold only their pipes. */
static int start_workers(void)
{
    for (int i = 0; i < nworkers; i++) {
        int req[2], rep[2];
        if (pipe2(req, O_CLOEXEC) < 0 || pipe2(rep, O_CLOEXEC) < 0)
            return -1;
        pid_t pid = fork();
        if (pid < 0)
            return -1;
        if (pid == 0) {
            for (int j = 0; j < i; j++) {
                close(workers[j].req_fd);
                close(workers[j].rep_fd);
            }
            close(req[1]);
            close(rep[0]);
            _exit(worker_main(i, req[0], rep[1]));
        }
        close(req[0]);
        close(rep[1]);
        workers[i].pid = pid;
        workers[i].req_fd = req[1];
        workers[i].rep_fd = rep[0];
        if (set_nonblock(req[1]) < 0 || set_nonblock(rep[0]) < 0)
            return -1;
    }
    return 0;
}

/* ---- the parent: clients ---- */

static void client_close(struct client *c)
{
    close(c->fd);
    clients[c->fd] = NULL;
    kv_buf_free(&c->out);
    free(c);
}

static void client_add(int fd)
{
    if ((size_t)fd >= nclients) {
        size_t n = nclients ? nclients : 64;
        while (n <= (size_t)fd)
            n *= 2;
        struct client **t = realloc(clients, n * sizeof *t);
        if (!t) {
            close(fd);
            return;
        }
        memset(t + nclients, 0, (n - nclients) * sizeof *t);
        clients = t;
        nclients = n;
    }
    struct client *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    c->fd = fd;
    c->serial = ++next_serial;
    clients[fd] = c;
}

static int worker_send(struct worker *w, const char *text, const struct client *c)
{
    if (w->qlen == w->qcap) {
        size_t cap = w->qcap ? w->qcap * 2 : 16;
        struct waiter *q = malloc(cap * sizeof *q);
        if (!q)
            return -1;
        for (size_t i = 0; i < w->qlen; i++)
            q[i] = w->q[(w->qhead + i) % w->qcap];
        free(w->q);
        w->q = q;
        w->qcap = cap;
        w->qhead = 0;
    }
    if (kv_buf_add(&w->out, text, strlen(text)) < 0)
        return -1;
    w->q[(w->qhead + w->qlen++) % w->qcap] = (struct waiter){c->fd, c->serial};
    return kv_buf_flush(&w->out, w->req_fd, 0);
}

static void reply(struct client *c, const char *line)
{
    if (kv_buf_addline(&c->out, line) < 0)
        c->quit = 1;
}

/* Decides what one client line becomes: a local reply, one worker request, or a DUMP
 * request to every worker. Returns -1 when a request pipe broke. */
static int route(struct client *c, const char *line)
{
    char copy[KV_MAX_LINE], text[KV_MAX_REPLY];
    char *argv[KV_MAX_ARGS];
    snprintf(copy, sizeof copy, "%s", line);
    int argc = kv_split(copy, argv, KV_MAX_ARGS);

    if (argc == 0) {
        reply(c, "ERR empty request");
    } else if (argc > KV_MAX_ARGS) {
        reply(c, "ERR too many arguments");
    } else if (strcmp(argv[0], "QUIT") == 0) {
        reply(c, "BYE");
        c->quit = 1;
    } else if (strcmp(argv[0], "DUMP") == 0) {
        if (argc != 2) {
            reply(c, "ERR usage: DUMP path");
            return 0;
        }
        c->busy = 1;
        c->dump_left = nworkers;
        c->dump_total = 0;
        c->dump_failed = 0;
        for (int i = 0; i < nworkers; i++) {
            snprintf(text, sizeof text, "DUMP %s.%d\n", argv[1], i);
            if (worker_send(&workers[i], text, c) < 0)
                return -1;
        }
    } else if (strcmp(argv[0], "SET") == 0 || strcmp(argv[0], "GET") == 0 ||
               strcmp(argv[0], "DEL") == 0) {
        /* a request without a key still goes to a worker, which answers its usage */
        int i = argc > 1 ? (int)(kv_hash(argv[1]) % (uint32_t)nworkers) : 0;
        snprintf(text, sizeof text, "%s\n", line);
        c->busy = 1;
        if (worker_send(&workers[i], text, c) < 0)
            return -1;
    } else {
        reply(c, "ERR unknown command");
    }
    return 0;
}

/* Routes the client's waiting lines until one goes to the workers, sends what the socket
 * takes, and closes the client once it is done. Returns -1 when a request pipe broke. */
static int client_service(struct client *c)
{
    char line[KV_MAX_LINE];
    while (!c->busy && !c->quit && kv_buf_pending(&c->out) < OUT_LIMIT) {
        int r = kv_pop_line(c->in, &c->inlen, sizeof c->in, line);
        if (r == 0)
            break;
        if (r < 0) {
            reply(c, "ERR line too long");
            c->quit = 1;
            break;
        }
        if (route(c, line) < 0)
            return -1;
    }
    if (kv_buf_flush(&c->out, c->fd, 1) < 0) {
        client_close(c); /* its pending worker replies will find no client and be dropped */
        return 0;
    }
    int done = c->quit || (c->eof && !kv_has_line(c->in, c->inlen));
    if (done && !c->busy && kv_buf_pending(&c->out) == 0)
        client_close(c);
    return 0;
}

static void client_readable(struct client *c)
{
    while (!c->eof && c->inlen < sizeof c->in) {
        ssize_t n = recv(c->fd, c->in + c->inlen, sizeof c->in - c->inlen, 0);
        if (n > 0) {
            c->inlen += (size_t)n;
        } else if (n == 0) {
            c->eof = 1;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            break;
        } else if (errno != EINTR) {
            c->eof = 1;
            c->quit = 1;
        }
    }
}

/* ---- the parent: worker replies ---- */

static int deliver(struct worker *w, const char *line)
{
    if (w->qlen == 0) {
        fprintf(stderr, "workers: worker %ld replied unasked\n", (long)(w - workers));
        return -1;
    }
    struct waiter who = w->q[w->qhead];
    w->qhead = (w->qhead + 1) % w->qcap;
    w->qlen--;
    struct client *c = (size_t)who.fd < nclients ? clients[who.fd] : NULL;
    if (!c || c->serial != who.serial)
        return 0;
    if (c->dump_left > 0) {
        long n;
        if (sscanf(line, "DUMPED %ld", &n) == 1)
            c->dump_total += n;
        else
            c->dump_failed = 1;
        if (--c->dump_left > 0)
            return 0;
        char text[64];
        if (c->dump_failed)
            snprintf(text, sizeof text, "ERR dump failed");
        else
            snprintf(text, sizeof text, "DUMPED %ld", c->dump_total);
        reply(c, text);
    } else {
        reply(c, line);
    }
    c->busy = 0;
    return client_service(c);
}

/* Reads what the reply pipe holds and delivers the complete lines. -1: the worker is gone. */
static int worker_readable(struct worker *w)
{
    char line[KV_MAX_REPLY];
    for (;;) {
        ssize_t n = read(w->rep_fd, w->in + w->inlen, sizeof w->in - w->inlen);
        if (n == 0) {
            fprintf(stderr, "workers: worker %ld closed its reply pipe\n", (long)(w - workers));
            return -1;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return -1;
        }
        w->inlen += (size_t)n;
        int r;
        while ((r = kv_pop_line(w->in, &w->inlen, sizeof w->in, line)) > 0)
            if (deliver(w, line) < 0)
                return -1;
        if (r < 0)
            return -1;
    }
}

static void accept_all(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            client_add(fd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            perror("workers: accept4");
        return;
    }
}

/* One poll() over the listening socket, the reply pipes, request pipes with bytes waiting
 * and the clients. Returns -1 on a fatal error (a worker gone). */
static int poll_once(int lfd, struct pollfd **pfds, size_t *cap)
{
    size_t need = 1 + 2 * (size_t)nworkers + nclients;
    if (need > *cap) {
        struct pollfd *p = realloc(*pfds, need * sizeof *p);
        if (!p)
            return -1;
        *pfds = p;
        *cap = need;
    }
    struct pollfd *p = *pfds;
    size_t n = 0;
    p[n++] = (struct pollfd){.fd = lfd, .events = POLLIN};
    for (int i = 0; i < nworkers; i++) {
        p[n++] = (struct pollfd){.fd = workers[i].rep_fd, .events = POLLIN};
        short ev = kv_buf_pending(&workers[i].out) ? POLLOUT : 0;
        p[n++] = (struct pollfd){.fd = ev ? workers[i].req_fd : -1, .events = ev};
    }
    for (size_t fd = 0; fd < nclients; fd++) {
        struct client *c = clients[fd];
        if (!c)
            continue;
        short ev = 0;
        if (!c->eof && !c->quit && c->inlen < sizeof c->in)
            ev |= POLLIN;
        if (kv_buf_pending(&c->out))
            ev |= POLLOUT;
        p[n++] = (struct pollfd){.fd = c->fd, .events = ev};
    }

    if (poll(p, n, -1) < 0)
        return errno == EINTR ? 0 : -1;

    if (p[0].revents & POLLIN)
        accept_all(lfd);
    for (int i = 0; i < nworkers; i++) {
        struct worker *w = &workers[i];
        if (p[1 + 2 * i].revents && worker_readable(w) < 0)
            return -1;
        if (p[2 + 2 * i].revents && kv_buf_flush(&w->out, w->req_fd, 0) < 0)
            return -1;
    }
    for (size_t k = 1 + 2 * (size_t)nworkers; k < n; k++) {
        /* accepting came first, so a client closed above cannot have a new fd owner */
        struct client *c = (size_t)p[k].fd < nclients ? clients[p[k].fd] : NULL;
        if (!c || !p[k].revents)
            continue;
        if (p[k].revents & (POLLIN | POLLHUP | POLLERR))
            client_readable(c);
        if (client_service(c) < 0)
            return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: workers PORT NWORKERS [BIND_ADDR]\n");
        return 2;
    }
    long port = kv_parse_num(argv[1], 65535);
    long n = kv_parse_num(argv[2], MAX_WORKERS);
    if (port < 0 || n < 1) {
        fprintf(stderr, "workers: bad PORT or NWORKERS (1..%d)\n", MAX_WORKERS);
        return 2;
    }
    nworkers = (int)n;
    if (start_workers() < 0) {
        perror("workers: starting workers");
        return 1;
    }
    /* installed after the forks: workers keep the default, die-on-SIGTERM dispositions */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop; /* no SA_RESTART: poll() must return to see the flag */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int status = 0;
    int lfd = kv_listen(argc > 3 ? argv[3] : "127.0.0.1", (int)port);
    if (lfd < 0) {
        perror("workers: listen");
        status = 1;
    }
    struct pollfd *pfds = NULL;
    size_t cap = 0;
    while (lfd >= 0 && !g_stop) {
        if (poll_once(lfd, &pfds, &cap) < 0) {
            perror("workers: poll loop");
            status = 1;
            break;
        }
    }

    free(pfds);
    for (size_t fd = 0; fd < nclients; fd++)
        if (clients[fd])
            client_close(clients[fd]);
    if (lfd >= 0)
        close(lfd);
    for (int i = 0; i < nworkers; i++)
        close(workers[i].req_fd); /* EOF: the worker exits */
    for (int i = 0; i < nworkers; i++) {
        int st;
        while (waitpid(workers[i].pid, &st, 0) < 0 && errno == EINTR)
            ;
        close(workers[i].rep_fd);
    }
    return status;
}
