/* poolserver.c -- a TCP key-value server with a pool of worker threads.
 *
 * One of the programs mig's integration tests record on a primary and replay on a backup;
 * it knows nothing of mig. The main thread accepts connections (blocking accept) and puts
 * them on a queue guarded by a mutex and a condition variable; WORKERS threads take a
 * connection each and serve it until the client closes it (blocking read and write). All
 * workers share one table under one mutex, and count the requests each of them served.
 * Which worker serves which connection, and so the counts in DUMP's header, is decided by
 * how the threads met at the queue: a replay reaches the same dump only if it follows the
 * recorded interleaving.
 *
 * usage: poolserver PORT [WORKERS [BIND_ADDR]]     defaults: 4 workers, 127.0.0.1
 *
 * Protocol: SET/GET/DEL as in kvstore.h, plus
 *   DUMP path -> DUMPED <n>   writes "poolserver entries=<n> served=<w0>,<w1>,..." and the
 *                             sorted entries to path
 *   QUIT      -> BYE          then closes the connection
 */
#define _GNU_SOURCE
#include "kvstore.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_WORKERS 64
#define QUEUE 1024

static struct kv_store store;
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long served[MAX_WORKERS]; /* requests per worker, under table_lock */
static int workers = 4;

static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_cond = PTHREAD_COND_INITIALIZER;
static int queue[QUEUE];
static size_t q_head, q_tail;

static void push(int fd)
{
    pthread_mutex_lock(&q_lock);
    if (q_tail - q_head == QUEUE) {
        pthread_mutex_unlock(&q_lock);
        close(fd);
        return;
    }
    queue[q_tail++ % QUEUE] = fd;
    pthread_cond_signal(&q_cond);
    pthread_mutex_unlock(&q_lock);
}

static int pop(void)
{
    pthread_mutex_lock(&q_lock);
    while (q_head == q_tail)
        pthread_cond_wait(&q_cond, &q_lock);
    int fd = queue[q_head++ % QUEUE];
    pthread_mutex_unlock(&q_lock);
    return fd;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* One request line; returns 1 to close the connection after the reply. */
static int handle(int me, char *line, char *reply, size_t cap)
{
    char *argv[KV_MAX_ARGS];
    int argc = kv_split(line, argv, KV_MAX_ARGS);
    int quit = 0;
    pthread_mutex_lock(&table_lock);
    served[me]++;
    if (argc == 0) {
        snprintf(reply, cap, "ERR empty request");
    } else if (argc > KV_MAX_ARGS) {
        snprintf(reply, cap, "ERR too many arguments");
    } else if (kv_command(&store, argc, argv, reply, cap)) {
        /* SET, GET or DEL */
    } else if (strcmp(argv[0], "DUMP") == 0 && argc == 2) {
        char header[64 + 24 * MAX_WORKERS];
        int n = snprintf(header, 64, "poolserver entries=%zu served=", store.count);
        for (int i = 0; i < workers; i++)
            n += snprintf(header + n, sizeof header - (size_t)n, "%s%lu", i ? "," : "",
                          served[i]);
        long got = kv_dump(&store, argv[1], header);
        if (got < 0)
            snprintf(reply, cap, "ERR dump: %s", strerror(errno));
        else
            snprintf(reply, cap, "DUMPED %ld", got);
    } else if (strcmp(argv[0], "QUIT") == 0) {
        snprintf(reply, cap, "BYE");
        quit = 1;
    } else {
        snprintf(reply, cap, "ERR unknown command %s", argv[0]);
    }
    pthread_mutex_unlock(&table_lock);
    return quit;
}

static void serve(int me, int fd)
{
    char buf[KV_MAX_LINE], line[KV_MAX_LINE], reply[KV_MAX_REPLY + 2];
    size_t len = 0;
    for (;;) {
        int got;
        while ((got = kv_pop_line(buf, &len, sizeof buf, line)) == 1) {
            int quit = handle(me, line, reply, sizeof reply - 1);
            size_t n = strlen(reply);
            reply[n++] = '\n';
            if (write_all(fd, reply, n) < 0 || quit)
                goto done;
        }
        if (got < 0)
            goto done; /* a line longer than the buffer */
        ssize_t r = read(fd, buf + len, sizeof buf - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            goto done;
        len += (size_t)r;
    }
done:
    close(fd);
}

static void *worker(void *arg)
{
    int me = (int)(intptr_t)arg;
    for (;;)
        serve(me, pop());
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: poolserver PORT [WORKERS [BIND_ADDR]]\n");
        return 2;
    }
    int port = atoi(argv[1]);
    if (argc > 2)
        workers = atoi(argv[2]);
    const char *addr = argc > 3 ? argv[3] : "127.0.0.1";
    if (workers < 1 || workers > MAX_WORKERS) {
        fprintf(stderr, "poolserver: WORKERS must be 1..%d\n", MAX_WORKERS);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (kv_init(&store) < 0) {
        perror("poolserver: kv_init");
        return 1;
    }
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
        fprintf(stderr, "poolserver: bad address %s\n", addr);
        return 2;
    }
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 128) < 0) {
        perror("poolserver: listen");
        return 1;
    }
    for (int i = 0; i < workers; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, worker, (void *)(intptr_t)i) != 0) {
            fprintf(stderr, "poolserver: cannot start worker %d\n", i);
            return 1;
        }
    }
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            perror("poolserver: accept");
            return 1;
        }
        push(fd);
    }
}
