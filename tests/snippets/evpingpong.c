/* evpingpong.c [fork] [pipe|socketpair] OUT -- two threads hand a count back and forth
 * through two eventfds, as a thread pool wakes its event loop (libuv, glib, tokio): each
 * side adds what it read and writes it to the other, for 500 rounds (tests/member/
 * test_record_replay.py, outputs that are not held). With "pipe", through two pipes
 * instead, and with "socketpair" through the two ends of one (the self-pipe of CPython's
 * asyncio and of libevent without eventfd). With "fork" the other side is a child process
 * instead of a thread (its writes wake another process: outputs). Writes the final count,
 * whether the main thread saw the wakes in order, and how many milliseconds the rounds
 * took. */
#include "common.h"
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>

#define ROUNDS 500

static int to_worker, to_main;       /* the main thread writes and reads these */
static int worker_in, worker_out;    /* ... and the other side these */

static void *worker(void *arg)
{
    (void)arg;
    for (int i = 0; i < ROUNDS; i++) {
        uint64_t v;
        if (read(worker_in, &v, sizeof v) != sizeof v)
            return NULL;
        v += 1;
        if (write(worker_out, &v, sizeof v) != sizeof v)
            return NULL;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int forked = 0, opts = 0;
    const char *through = "eventfd";
    for (; opts + 2 < argc; opts++) {
        if (strcmp(argv[1 + opts], "fork") == 0)
            forked = 1;
        else
            through = argv[1 + opts];
    }
    snippet_open(argc - opts, argv + opts);
    if (strcmp(through, "pipe") == 0) {
        int a[2], b[2];
        if (pipe(a) != 0 || pipe(b) != 0)
            return 1;
        to_worker = a[1], worker_in = a[0], worker_out = b[1], to_main = b[0];
    } else if (strcmp(through, "socketpair") == 0) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
            return 1;
        to_worker = to_main = sv[0], worker_in = worker_out = sv[1];
    } else {
        to_worker = worker_in = eventfd(0, 0);
        to_main = worker_out = eventfd(0, 0);
        if (to_worker < 0 || to_main < 0)
            return 1;
    }
    pthread_t t;
    pid_t child = -1;
    if (forked) {
        if ((child = fork()) == 0) {
            worker(NULL);
            _exit(0);
        }
    } else if (pthread_create(&t, NULL, worker, NULL) != 0) {
        return 1;
    }
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    uint64_t v = 1;
    int in_order = 1;
    for (int i = 0; i < ROUNDS; i++) {
        if (write(to_worker, &v, sizeof v) != sizeof v || read(to_main, &v, sizeof v) != sizeof v)
            return 1;
        in_order &= v == (uint64_t)(2 * i + 2);
        v += 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    if (forked)
        waitpid(child, NULL, 0);
    else
        pthread_join(t, NULL);
    long ms = (end.tv_sec - start.tv_sec) * 1000 + (end.tv_nsec - start.tv_nsec) / 1000000;
    out("count %llu in_order %d ms %ld\n", (unsigned long long)v, in_order, ms);
    return 0;
}
