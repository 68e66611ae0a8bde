/* dlthread.c -- threads started by libc's pthread_create reached through dlopen/dlsym, as
 * jemalloc starts its background thread: each must get its own logical id, and the order
 * of their lock acquisitions and clock reads must replay. The result depends on both. */
#include "common.h"
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t mixed = 1;

static void *work(void *arg)
{
    uint64_t mine = (uint64_t)(uintptr_t)arg;
    for (int i = 0; i < 3000; i++) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        pthread_mutex_lock(&lock);
        mixed = mixed * 31 + mine + ((uint64_t)ts.tv_nsec & 0xff);
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    snippet_open(argc, argv);
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    int (*create)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *) =
        libc ? (int (*)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *))
                   dlsym(libc, "pthread_create")
             : NULL;
    if (!create)
        return 3;
    pthread_t a, b;
    if (create(&a, NULL, work, (void *)2) != 0 || create(&b, NULL, work, (void *)3) != 0)
        return 4;
    work((void *)1);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    out("mixed %llu\n", (unsigned long long)mixed);
    return 0;
}
