/* evpingpong.c [fork] OUT -- two threads hand a count back and forth through two
 * eventfds, as a thread pool wakes its event loop (libuv, glib, tokio): each side adds
 * what it read and writes it to the other, for 500 rounds (tests/member/
 * test_record_replay.py, outputs that are not held). With "fork" the other side is a
 * child process instead of a thread (its writes wake another process: outputs). Writes
 * the final count, whether the main thread saw the wakes in order, and how many
 * milliseconds the rounds took. */
#include "common.h"
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <time.h>

#define ROUNDS 500

static int to_worker, to_main;

static void *worker(void *arg)
{
    (void)arg;
    for (int i = 0; i < ROUNDS; i++) {
        uint64_t v;
        if (read(to_worker, &v, sizeof v) != sizeof v)
            return NULL;
        v += 1;
        if (write(to_main, &v, sizeof v) != sizeof v)
            return NULL;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int forked = argc > 2 && strcmp(argv[1], "fork") == 0;
    snippet_open(argc - forked, argv + forked);
    to_worker = eventfd(0, 0);
    to_main = eventfd(0, 0);
    pthread_t t;
    pid_t child = -1;
    if (to_worker < 0 || to_main < 0)
        return 1;
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
