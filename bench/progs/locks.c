/* locks.c -- what a mutex lock/unlock pair costs: natively, and under mig's shim.
 *
 * Three loops of ITERS lock/unlock pairs on one pthread mutex, each timed with
 * CLOCK_MONOTONIC read through a raw syscall (the shim does not record it, so timing adds
 * no records):
 *   single       the process has one thread (mig records no synchronisation yet);
 *   uncontended  a second thread exists (it sleeps in pthread_join's target... in a
 *                condition wait) and only the main thread takes the mutex;
 *   contended    two threads each take the mutex ITERS/2 times, incrementing a counter.
 * Prints "single_ns=A uncontended_ns=B contended_ns=C counter=N" (ns per pair) to OUT.
 *
 * usage: locks OUT ITERS */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t idle_m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t idle_c = PTHREAD_COND_INITIALIZER;
static int idle_done;
static long counter, iters;

static double now(void)
{
    struct timespec ts;
    syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double pairs(long n)
{
    double t0 = now();
    for (long i = 0; i < n; i++) {
        pthread_mutex_lock(&m);
        counter++;
        pthread_mutex_unlock(&m);
    }
    return now() - t0;
}

static void *idle(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&idle_m);
    while (!idle_done)
        pthread_cond_wait(&idle_c, &idle_m);
    pthread_mutex_unlock(&idle_m);
    return NULL;
}

static void *half(void *arg)
{
    (void)arg;
    pairs(iters / 2);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: locks OUT ITERS\n");
        return 2;
    }
    iters = atol(argv[2]);
    double single = pairs(iters) / iters * 1e9;
    pthread_t t, a, b;
    pthread_create(&t, NULL, idle, NULL);
    double uncontended = pairs(iters) / iters * 1e9;
    pthread_mutex_lock(&idle_m);
    idle_done = 1;
    pthread_cond_signal(&idle_c);
    pthread_mutex_unlock(&idle_m);
    pthread_join(t, NULL);
    double t0 = now();
    pthread_create(&a, NULL, half, NULL);
    pthread_create(&b, NULL, half, NULL);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    double contended = (now() - t0) / (iters / 2 * 2) * 1e9;
    FILE *f = fopen(argv[1], "w");
    if (!f)
        return 1;
    fprintf(f, "single_ns=%.1f uncontended_ns=%.1f contended_ns=%.1f counter=%ld\n", single,
            uncontended, contended, counter);
    return fclose(f) ? 1 : 0;
}
