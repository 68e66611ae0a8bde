/* loadgen.c -- a closed-loop load generator for the kvserver line protocol.
 *
 * CONNS TCP connections, each doing synchronous request/reply "SET key value" loops (one
 * request in flight per connection), driven from one epoll loop so that a single core is
 * enough to keep a C server busy. Requests completed during the WARMUP first seconds are
 * not counted; then it counts for SECONDS and prints one line:
 *   requests=N seconds=S rps=R p50_us=A p90_us=B p99_us=C max_us=D errors=E closed=K
 * where rps is N / SECONDS, errors counts replies other than "OK ..." and failed writes or
 * reads, and closed the connections the server closed (it stops early if all are).
 * Latency is from just before the request's write to the reply's newline, in microseconds
 * (exact below 100 ms, to the millisecond above).
 *
 * usage: loadgen HOST PORT CONNS SECONDS [WARMUP] */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define EXACT_US 100000          /* 1 us buckets below 100 ms */
#define COARSE_MS 120000         /* then 1 ms buckets up to 120 s */
#define MAX_CONNS 1024

struct conn {
    int fd;
    long long sent_ns;
    unsigned long long n;
    char buf[512];
    size_t len;
};

static unsigned hist[EXACT_US + COARSE_MS + 1];

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void record(long long us)
{
    if (us < 0)
        us = 0;
    if (us < EXACT_US)
        hist[us]++;
    else if (us / 1000 < COARSE_MS)
        hist[EXACT_US + us / 1000]++;
    else
        hist[EXACT_US + COARSE_MS]++;
}

static long long bucket_us(size_t b)
{
    return b < EXACT_US ? (long long)b : (long long)(b - EXACT_US) * 1000;
}

static long long percentile(unsigned long long total, double p)
{
    if (!total)
        return -1;
    unsigned long long want = (unsigned long long)(p * (double)total + 0.999999), seen = 0;
    for (size_t b = 0; b < sizeof hist / sizeof hist[0]; b++) {
        seen += hist[b];
        if (seen >= want && hist[b])
            return bucket_us(b);
    }
    return bucket_us(sizeof hist / sizeof hist[0] - 1);
}

static int send_request(struct conn *c, int id)
{
    char line[128];
    int n = snprintf(line, sizeof line, "SET c%dk%llu v%llu\n", id, c->n % 1000, c->n);
    c->sent_ns = now_ns();
    ssize_t w = write(c->fd, line, (size_t)n);
    return w == n ? 0 : -1; /* a short write of a 20-byte line does not happen on TCP */
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: loadgen HOST PORT CONNS SECONDS [WARMUP]\n");
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]), nconn = atoi(argv[3]);
    double seconds = atof(argv[4]), warmup = argc > 5 ? atof(argv[5]) : 0.5;
    if (nconn < 1 || nconn > MAX_CONNS || seconds <= 0) {
        fprintf(stderr, "loadgen: bad CONNS or SECONDS\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN); /* a server that went away: count it, do not die */
    static struct conn conns[MAX_CONNS];
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "loadgen: bad address %s\n", host);
        return 2;
    }
    int ep = epoll_create1(0);
    for (int i = 0; i < nconn; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
            fprintf(stderr, "loadgen: connect %s:%d: %s\n", host, port, strerror(errno));
            return 1;
        }
        conns[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    long long start = now_ns();
    long long count_from = start + (long long)(warmup * 1e9);
    long long end = count_from + (long long)(seconds * 1e9);
    unsigned long long done = 0, errors = 0, closed = 0;
    int alive = nconn;
    for (int i = 0; i < nconn; i++)
        if (send_request(&conns[i], i) != 0) {
            errors++;
            closed++;
            close(conns[i].fd);
            conns[i].fd = -1;
            alive--;
        }
    struct epoll_event events[64];
    while (alive > 0) {
        long long now = now_ns();
        if (now >= end)
            break;
        int timeout_ms = (int)((end - now) / 1000000) + 1;
        int n = epoll_wait(ep, events, 64, timeout_ms < 100 ? timeout_ms : 100);
        if (n < 0 && errno != EINTR)
            break;
        for (int e = 0; e < n; e++) {
            int i = (int)events[e].data.u32;
            struct conn *c = &conns[i];
            if (c->fd < 0)
                continue;
            ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
            if (r <= 0) {
                if (r < 0 && (errno == EINTR || errno == EAGAIN))
                    continue;
                errors++;
                closed++;
                close(c->fd);
                c->fd = -1;
                alive--;
                continue;
            }
            c->len += (size_t)r;
            char *nl = memchr(c->buf, '\n', c->len);
            if (!nl) {
                if (c->len == sizeof c->buf)
                    c->len = 0; /* an overlong reply: drop it, the newline will come */
                continue;
            }
            long long t = now_ns();
            if (strncmp(c->buf, "OK ", 3) != 0)
                errors++;
            if (c->sent_ns >= count_from && t <= end) {
                record((t - c->sent_ns) / 1000);
                done++;
            }
            size_t rest = c->len - (size_t)(nl + 1 - c->buf);
            memmove(c->buf, nl + 1, rest);
            c->len = rest;
            c->n++;
            if (send_request(c, i) != 0) {
                errors++;
                closed++;
                close(c->fd);
                c->fd = -1;
                alive--;
            }
        }
    }
    printf("requests=%llu seconds=%.3f rps=%.1f p50_us=%lld p90_us=%lld p99_us=%lld"
           " max_us=%lld errors=%llu closed=%llu\n",
           done, seconds, (double)done / seconds, percentile(done, 0.50),
           percentile(done, 0.90), percentile(done, 0.99), percentile(done, 1.0), errors,
           closed);
    for (int i = 0; i < nconn; i++)
        if (conns[i].fd >= 0)
            close(conns[i].fd);
    return 0;
}
