/* httpload.c -- a closed-loop HTTP/1.1 load generator (keep-alive GETs of one path).
 *
 * CONNS connections, each with one request in flight, driven from one epoll loop. A
 * response is complete when its headers and Content-Length bytes of body have arrived;
 * anything but "HTTP/1.1 200" counts as an error, and a connection the server ends between
 * responses is opened again. Requests completed during the WARMUP
 * first seconds are not counted; then it counts for SECONDS and prints one line:
 *   requests=N seconds=S rps=R p50_us=A p99_us=B errors=E closed=K
 *
 * usage: httpload HOST PORT PATH CONNS SECONDS [WARMUP] */
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

#define MAX_CONNS 256
#define BUCKETS 200000 /* 1 us buckets up to 200 ms, then the last one */

struct conn {
    int fd;
    long long sent_ns;
    char buf[8192];
    size_t len;
};

static unsigned hist[BUCKETS + 1];
static char request[512];
static size_t request_len;

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long percentile(unsigned long long total, double p)
{
    unsigned long long want = (unsigned long long)(p * (double)total + 0.999999), seen = 0;
    for (size_t b = 0; total && b <= BUCKETS; b++) {
        seen += hist[b];
        if (seen >= want && hist[b])
            return (long long)b;
    }
    return -1;
}

/* Bytes of a complete response at the start of buf (0: not complete yet, -1: malformed). */
static long complete(const char *buf, size_t len)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end)
        return len >= 4096 ? -1 : 0;
    size_t head = (size_t)(end - buf) + 4;
    long body = 0;
    const char *cl = memmem(buf, head, "Content-Length:", 15);
    if (!cl)
        cl = memmem(buf, head, "content-length:", 15);
    if (cl)
        body = strtol(cl + 15, NULL, 10);
    return head + (size_t)body <= len ? (long)(head + (size_t)body) : 0;
}

static int connect_to(const struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (fd >= 0 && connect(fd, (const struct sockaddr *)addr, sizeof *addr) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: httpload HOST PORT PATH CONNS SECONDS [WARMUP]\n");
        return 2;
    }
    int port = atoi(argv[2]), nconn = atoi(argv[4]);
    double seconds = atof(argv[5]), warmup = argc > 6 ? atof(argv[6]) : 0.5;
    if (nconn < 1 || nconn > MAX_CONNS || seconds <= 0) {
        fprintf(stderr, "httpload: bad CONNS or SECONDS\n");
        return 2;
    }
    request_len = (size_t)snprintf(request, sizeof request,
                                   "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", argv[3], argv[1]);
    signal(SIGPIPE, SIG_IGN);
    static struct conn conns[MAX_CONNS];
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) {
        fprintf(stderr, "httpload: bad address %s\n", argv[1]);
        return 2;
    }
    int ep = epoll_create1(0);
    for (int i = 0; i < nconn; i++) {
        int fd = connect_to(&addr);
        if (fd < 0) {
            fprintf(stderr, "httpload: connect %s:%d: %s\n", argv[1], port, strerror(errno));
            return 1;
        }
        conns[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    long long start = now_ns(), count_from = start + (long long)(warmup * 1e9);
    long long end = count_from + (long long)(seconds * 1e9);
    unsigned long long done = 0, errors = 0, closed = 0;
    int alive = nconn;
    for (int i = 0; i < nconn; i++) {
        conns[i].sent_ns = now_ns();
        if (write(conns[i].fd, request, request_len) != (ssize_t)request_len)
            errors++;
    }
    struct epoll_event events[64];
    while (alive > 0 && now_ns() < end) {
        int n = epoll_wait(ep, events, 64, 100);
        for (int e = 0; e < n; e++) {
            struct conn *c = &conns[events[e].data.u32];
            if (c->fd < 0)
                continue;
            ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
            /* acknowledge at once: a server that writes headers and body apart (CPython's
             * http.server) would otherwise wait out the delayed ACK (40 ms) for its body */
            int quick = 1;
            setsockopt(c->fd, IPPROTO_TCP, TCP_QUICKACK, &quick, sizeof quick);
            if ((r == 0 || (r < 0 && errno == ECONNRESET)) && c->len == 0) {
                /* the server ended this keep-alive connection (nginx: after 1,000
                 * requests): open another and send the request again */
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = connect_to(&addr);
                struct epoll_event ev = {.events = EPOLLIN, .data.u32 = events[e].data.u32};
                if (c->fd >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) == 0 &&
                    write(c->fd, request, request_len) == (ssize_t)request_len) {
                    c->sent_ns = now_ns();
                    continue;
                }
                r = -1;
            }
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
            long got = complete(c->buf, c->len);
            if (got == 0)
                continue;
            long long t = now_ns();
            if (got < 0 || strncmp(c->buf, "HTTP/1.1 200", 12) != 0)
                errors++;
            if (c->sent_ns >= count_from && t <= end) {
                long long us = (t - c->sent_ns) / 1000;
                hist[us < BUCKETS ? us : BUCKETS]++;
                done++;
            }
            size_t used = got < 0 ? c->len : (size_t)got;
            memmove(c->buf, c->buf + used, c->len - used);
            c->len -= used;
            c->sent_ns = now_ns();
            if (write(c->fd, request, request_len) != (ssize_t)request_len) {
                errors++;
                closed++;
                close(c->fd);
                c->fd = -1;
                alive--;
            }
        }
    }
    printf("requests=%llu seconds=%.3f rps=%.1f p50_us=%lld p99_us=%lld errors=%llu"
           " closed=%llu\n", done, seconds, (double)done / seconds, percentile(done, 0.5),
           percentile(done, 0.99), errors, closed);
    return 0;
}
