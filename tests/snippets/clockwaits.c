/* clockwaits.c -- the clock-taking waits glibc added in 2.30 (CPython's locks use
 * sem_clockwait): sem_clockwait, pthread_cond_clockwait and pthread_mutex_clocklock, with
 * timeouts short enough that which ones expire, and the order threads get through, differ
 * from run to run. The mixed result depends on both. */
#include "common.h"
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>
#include <time.h>

static sem_t sem;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static uint64_t mixed = 7, timeouts;
static int turn;

static struct timespec soon(long ns)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_nsec += ns;
    t.tv_sec += t.tv_nsec / 1000000000;
    t.tv_nsec %= 1000000000;
    return t;
}

static void *work(void *arg)
{
    uint64_t me = (uint64_t)(uintptr_t)arg;
    for (int i = 0; i < 200; i++) {
        struct timespec t = soon(20000);
        int got = sem_clockwait(&sem, CLOCK_MONOTONIC, &t) == 0;
        t = soon(50000);
        if (pthread_mutex_clocklock(&lock, CLOCK_MONOTONIC, &t) != 0)
            continue;
        mixed = mixed * 131 + me * 2 + (uint64_t)got;
        if (!got)
            timeouts++;
        t = soon(10000);
        while (turn % 3 != (int)me &&
               pthread_cond_clockwait(&cond, &lock, CLOCK_MONOTONIC, &t) == 0)
            ;
        turn++;
        pthread_cond_broadcast(&cond);
        pthread_mutex_unlock(&lock);
        sem_post(&sem);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    snippet_open(argc, argv);
    sem_init(&sem, 0, 1);
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, work, (void *)(uintptr_t)(i + 1));
    work((void *)0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    out("mixed %llu turns %d\n", (unsigned long long)mixed, turn);
    (void)timeouts;
    return 0;
}
