/* sigselect.c -- a TCP key-value server on select() that lives with signals: a 10 ms
 * SIGALRM interval timer and a SIGCHLD for every short-lived child it forks.
 *
 * One of the programs mig's integration tests record on a primary and replay on a backup;
 * it knows nothing of mig. It is the test of asynchronous events: signal handlers that
 * bump volatile sig_atomic_t counters, select() calls cut short with EINTR, children that
 * nanosleep and exit with a code taken from the request, reaping with
 * waitpid(-1, ..., WNOHANG). The tick and SIGCHLD counts depend on timing, and DUMP writes
 * them anyway: a replay delivers the recorded signals at the recorded points, so the
 * backup must reach the same counts. Nothing else in a DUMP depends on anything but the
 * requests, the clocks and the randomness the program saw -- no pids, no addresses.
 *
 * usage: sigselect PORT [BIND_ADDR]                 BIND_ADDR defaults to 127.0.0.1
 *
 * Protocol: SET/GET/DEL as in kvstore.h, plus
 *   SPAWN n   -> SPAWNED <k>    forks a child that sleeps 1 ms and exits with n % 256;
 *                               k counts the children spawned so far (never a pid)
 *   TICKS     -> TICKS <t>      SIGALRMs received so far
 *   STATS     -> STATS spawned=<k> reaped=<r> exitsum=<s> killed=<x> sigchld=<c> ticks=<t>
 *   DUMP path -> DUMPED <n>     writes "sigselect entries=<n> spawned=.. reaped=..
 *                               exitsum=.. killed=.. sigchld=.. ticks=.." and the entries
 *   QUIT      -> BYE            then closes the connection
 */
#define _GNU_SOURCE
#include "kvstore.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#define OUT_LIMIT (1 << 20)

struct conn {
    int fd;
    char in[KV_MAX_LINE];
    size_t inlen;
    struct kv_buf out;
    int quit, eof;
};

static volatile sig_atomic_t g_ticks;   /* SIGALRMs */
static volatile sig_atomic_t g_sigchld; /* SIGCHLDs (several exits may share one) */

static struct kv_store store;
static struct conn *conns[FD_SETSIZE]; /* select() cannot watch higher fds anyway */
static unsigned long spawned, reaped, exitsum, killed;

static void on_alarm(int sig)
{
    (void)sig;
    g_ticks++;
}

static void on_child(int sig)
{
    (void)sig;
    g_sigchld++;
}

static void reap(void)
{
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        reaped++;
        if (WIFEXITED(st))
            exitsum += (unsigned long)WEXITSTATUS(st);
        else
            killed++;
    }
}

static _Noreturn void child_main(long n)
{
    struct timespec d = {0, 1000000};
    while (nanosleep(&d, &d) < 0 && errno == EINTR)
        ;
    _exit((int)(n % 256));
}

static void spawn(long n, char *reply, size_t cap)
{
    pid_t pid = fork();
    if (pid == 0)
        child_main(n);
    if (pid < 0)
        snprintf(reply, cap, "ERR fork: %s", strerror(errno));
    else
        snprintf(reply, cap, "SPAWNED %lu", ++spawned);
}

static void stats(char *out, size_t cap, long ticks)
{
    snprintf(out, cap, "spawned=%lu reaped=%lu exitsum=%lu killed=%lu sigchld=%ld ticks=%ld",
             spawned, reaped, exitsum, killed, (long)g_sigchld, ticks);
}

static void handle(struct conn *c, char *line)
{
    char *argv[KV_MAX_ARGS];
    char reply[KV_MAX_REPLY];
    int argc = kv_split(line, argv, KV_MAX_ARGS);
    long ticks = g_ticks; /* read once: a line states one count */

    if (argc == 0) {
        snprintf(reply, sizeof reply, "ERR empty request");
    } else if (argc > KV_MAX_ARGS) {
        snprintf(reply, sizeof reply, "ERR too many arguments");
    } else if (kv_command(&store, argc, argv, reply, sizeof reply)) {
        /* SET, GET or DEL */
    } else if (strcmp(argv[0], "SPAWN") == 0) {
        long n = argc == 2 ? kv_parse_num(argv[1], 1000000000L) : -1;
        if (n < 0)
            snprintf(reply, sizeof reply, "ERR usage: SPAWN n");
        else
            spawn(n, reply, sizeof reply);
    } else if (strcmp(argv[0], "TICKS") == 0 && argc == 1) {
        snprintf(reply, sizeof reply, "TICKS %ld", ticks);
    } else if (strcmp(argv[0], "STATS") == 0 && argc == 1) {
        char s[160];
        stats(s, sizeof s, ticks);
        snprintf(reply, sizeof reply, "STATS %s", s);
    } else if (strcmp(argv[0], "DUMP") == 0) {
        char header[200], s[160];
        long n = -1;
        if (argc == 2) {
            stats(s, sizeof s, ticks);
            snprintf(header, sizeof header, "sigselect entries=%zu %s", store.count, s);
            n = kv_dump(&store, argv[1], header);
        }
        if (argc != 2)
            snprintf(reply, sizeof reply, "ERR usage: DUMP path");
        else if (n < 0)
            snprintf(reply, sizeof reply, "ERR dump: %s", strerror(errno));
        else
            snprintf(reply, sizeof reply, "DUMPED %ld", n);
    } else if (strcmp(argv[0], "QUIT") == 0) {
        snprintf(reply, sizeof reply, "BYE");
        c->quit = 1;
    } else {
        snprintf(reply, sizeof reply, "ERR unknown command");
    }
    if (kv_buf_addline(&c->out, reply) < 0)
        c->quit = 1;
}

static void conn_close(struct conn *c)
{
    close(c->fd);
    conns[c->fd] = NULL;
    kv_buf_free(&c->out);
    free(c);
}

/* Runs complete requests while the reply backlog is small, sends what the socket takes,
 * and closes the connection once it has nothing left to say and will hear nothing more. */
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
        if (kv_buf_pending(&c->out) == 0 && !c->quit && kv_has_line(c->in, c->inlen))
            continue;
        break;
    }
    if ((c->quit || c->eof) && kv_buf_pending(&c->out) == 0)
        conn_close(c);
}

static void conn_readable(struct conn *c)
{
    while (!c->eof && c->inlen < sizeof c->in) {
        ssize_t n = read(c->fd, c->in + c->inlen, sizeof c->in - c->inlen);
        if (n > 0) {
            c->inlen += (size_t)n;
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

static void accept_all(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                perror("sigselect: accept4");
            return;
        }
        struct conn *c = fd < FD_SETSIZE ? calloc(1, sizeof *c) : NULL;
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        conns[fd] = c;
    }
}

static int install(int sig, void (*fn)(int), int flags)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sa.sa_flags = flags; /* SA_RESTART: only select() should see EINTR, and it always does */
    sigemptyset(&sa.sa_mask);
    return sigaction(sig, &sa, NULL);
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: sigselect PORT [BIND_ADDR]\n");
        return 2;
    }
    long port = kv_parse_num(argv[1], 65535);
    if (port < 0) {
        fprintf(stderr, "sigselect: bad PORT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (kv_init(&store) < 0) {
        perror("sigselect: kv_init");
        return 1;
    }
    int lfd = kv_listen(argc > 2 ? argv[2] : "127.0.0.1", (int)port);
    if (lfd < 0 || lfd >= FD_SETSIZE) {
        perror("sigselect: listen");
        return 1;
    }
    struct itimerval every10ms = {{0, 10000}, {0, 10000}};
    if (install(SIGALRM, on_alarm, SA_RESTART) < 0 ||
        install(SIGCHLD, on_child, SA_RESTART | SA_NOCLDSTOP) < 0 ||
        setitimer(ITIMER_REAL, &every10ms, NULL) < 0) {
        perror("sigselect: signals");
        return 1;
    }

    for (;;) {
        reap();
        fd_set rd, wr;
        FD_ZERO(&rd);
        FD_ZERO(&wr);
        FD_SET(lfd, &rd);
        int maxfd = lfd;
        for (int fd = 0; fd < FD_SETSIZE; fd++) {
            struct conn *c = conns[fd];
            if (!c)
                continue;
            if (!c->eof && !c->quit && c->inlen < sizeof c->in &&
                kv_buf_pending(&c->out) < OUT_LIMIT)
                FD_SET(fd, &rd);
            if (kv_buf_pending(&c->out))
                FD_SET(fd, &wr);
            if (fd > maxfd)
                maxfd = fd;
        }
        if (select(maxfd + 1, &rd, &wr, NULL, NULL) < 0) {
            if (errno == EINTR)
                continue; /* a tick or a child: reap and wait again */
            perror("sigselect: select");
            return 1;
        }
        if (FD_ISSET(lfd, &rd))
            accept_all(lfd);
        for (int fd = 0; fd <= maxfd; fd++) {
            struct conn *c = conns[fd];
            if (!c || fd == lfd)
                continue;
            if (FD_ISSET(fd, &rd))
                conn_readable(c);
            else if (FD_ISSET(fd, &wr))
                conn_service(c);
        }
    }
}
