/* runcount.c -- a run of unrecorded mutex acquisitions whose length the log cannot know.
 *
 * Reads N from COUNTFILE, a regular file (mig does not record regular files: a host must
 * have the same ones), starts a second thread, takes a mutex N times in a row, joins the
 * thread, reads the clock and writes N to OUT. A replay that finds another N in its COUNTFILE makes another
 * number of acquisitions than the RUN record counts: mig must report it as a divergence.
 *
 * usage: runcount COUNTFILE OUT */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static long total;

static void *other(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&m);
    total++;
    pthread_mutex_unlock(&m);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: runcount COUNTFILE OUT\n");
        return 2;
    }
    FILE *in = fopen(argv[1], "r");
    long n = 0;
    if (!in || fscanf(in, "%ld", &n) != 1 || n < 1) {
        fprintf(stderr, "runcount: %s: expected a count >= 1\n", argv[1]);
        return 2;
    }
    fclose(in);
    pthread_t t;
    if (pthread_create(&t, NULL, other, NULL) != 0)
        return 1;
    pthread_join(t, NULL); /* the other thread took the mutex last: main's first is a record */
    for (long i = 0; i < n; i++) {
        pthread_mutex_lock(&m);
        total++;
        pthread_mutex_unlock(&m);
    }
    (void)time(NULL); /* a record: the RUN record of the loop goes before it */
    FILE *out = fopen(argv[2], "w");
    if (!out)
        return 1;
    fprintf(out, "runcount n=%ld total=%ld\n", n, total);
    return fclose(out) == 0 ? 0 : 1;
}
