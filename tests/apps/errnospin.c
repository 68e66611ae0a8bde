/* errnospin.c -- a worker counts in a loop that reads errno each turn (a call of
 * __errno_location, a function the shim's own signal handler calls too), while the main
 * thread spins (no call, no write) waiting for it to finish, reading how far it got. A
 * counting loop is never in the same state twice, so it is never preempted: the main
 * thread runs only before and after a count, and sees a whole one. A breakpoint stop the
 * handler made itself (its own errno read at the watched address) looked like the same
 * state three times, and the worker was stopped mid-count: the main thread then saw a
 * part of a count, not the same part on the primary and on a replica.
 *
 * usage: errnospin [ROUNDS [COUNT]]   prints "errnospin rounds=R seen=S"
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static int go, done, stop;     /* atomics */
static volatile long progress; /* written by the worker, read by main, no lock */
static long count = 200000;
static long errors;
/* called each turn (errno itself is read once: __errno_location is declared const) */
static int *(*volatile errno_at)(void) = __errno_location;

static void *worker(void *arg)
{
    (void)arg;
    for (;;) {
        while (!__atomic_load_n(&go, __ATOMIC_ACQUIRE))
            if (__atomic_load_n(&stop, __ATOMIC_ACQUIRE))
                return NULL;
        __atomic_store_n(&go, 0, __ATOMIC_RELAXED);
        for (long i = 0; i < count; i++) {
            progress = i;
            errors += *errno_at();
        }
        __atomic_store_n(&done, 1, __ATOMIC_RELEASE);
    }
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 50;
    if (argc > 2)
        count = atol(argv[2]);
    pthread_t t;
    if (pthread_create(&t, NULL, worker, NULL) != 0)
        return 1;
    long seen = 0;
    for (int r = 0; r < rounds; r++) {
        __atomic_store_n(&go, 1, __ATOMIC_RELEASE);
        long last = -1;
        while (!__atomic_load_n(&done, __ATOMIC_ACQUIRE))
            last = progress; /* a spin: nothing written, the same state while it waits */
        __atomic_store_n(&done, 0, __ATOMIC_RELAXED);
        seen += last;
    }
    __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
    pthread_join(t, NULL);
    printf("errnospin rounds=%d seen=%ld errors=%ld\n", rounds, seen, errors);
    return 0;
}
