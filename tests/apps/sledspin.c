/* sledspin.c -- a worker runs a long stretch of straight code (no loop: each instruction
 * once a round) and then spins waiting for the main thread, which spins waiting for the
 * worker; neither makes a call. Serialized, a request to preempt the worker almost always
 * finds it in the straight stretch, and the breakpoint armed there is passed once and
 * never again: the worker goes on to spin somewhere else. A primary that kept such a
 * silent breakpoint armed never asked again, the main thread could not run, and after
 * serial_stall_ms the primary stopped serializing (errnospin met it when a request came
 * just after a count, at an instruction the worker passes once a round).
 *
 * usage: sledspin [ROUNDS]   prints "sledspin rounds=R seen=S"
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>

static int turn; /* atomics: 1 the worker's, 0 main's, 2 the end */
static volatile long made; /* written by the worker, read by main, no lock */

static void *worker(void *arg)
{
    (void)arg;
    for (long r = 1;; r++) {
        int t;
        while ((t = __atomic_load_n(&turn, __ATOMIC_ACQUIRE)) == 0)
            ;
        if (t == 2)
            return NULL;
        /* about a hundred thousand pause instructions, each passed once a round */
        __asm__ volatile(".rept 100000\n\tpause\n\t.endr" ::: "memory");
        made = r;
        __atomic_store_n(&turn, 0, __ATOMIC_RELEASE);
    }
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 5;
    pthread_t t;
    if (pthread_create(&t, NULL, worker, NULL) != 0)
        return 1;
    long seen = 0;
    for (int r = 0; r < rounds; r++) {
        __atomic_store_n(&turn, 1, __ATOMIC_RELEASE);
        while (__atomic_load_n(&turn, __ATOMIC_ACQUIRE) != 0)
            ;
        seen += made;
    }
    __atomic_store_n(&turn, 2, __ATOMIC_RELEASE);
    pthread_join(t, NULL);
    printf("sledspin rounds=%d seen=%ld\n", rounds, seen);
    return 0;
}
