/* idlewaiters.c -- three threads wait on a condition variable while the main thread makes
 * CALLS clock readings, then the main thread wakes them and joins them, and prints the
 * readings' sum of low bits. The waiting threads make no call until the end: in replay
 * they wait for their next record while the main thread takes its own, one after the
 * other. A replica that woke every waiting thread at each record taken would switch them
 * in and out about CALLS times each (tests/member/test_threads.py counts their switches).
 *
 * usage: idlewaiters [CALLS]      default 100000
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <time.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int done;

static void *idle(void *arg)
{
    (void)arg;
    prctl(PR_SET_NAME, "idlewaiter");
    pthread_mutex_lock(&mu);
    while (!done)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    return NULL;
}

int main(int argc, char **argv)
{
    long calls = argc > 1 ? atol(argv[1]) : 100000;
    if (calls < 1) {
        fprintf(stderr, "usage: idlewaiters [CALLS]\n");
        return 2;
    }
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        if (pthread_create(&t[i], NULL, idle, NULL) != 0)
            return 1;
    unsigned long sum = 0;
    for (long i = 0; i < calls; i++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        sum += (unsigned long)ts.tv_nsec & 0xff;
    }
    pthread_mutex_lock(&mu);
    done = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    printf("idlewaiters calls=%ld sum=%lu\n", calls, sum);
    return 0;
}
