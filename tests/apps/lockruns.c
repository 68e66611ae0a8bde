/* lockruns.c -- threads that take mutexes many times in a row, and hand them over.
 *
 * mig records a mutex acquisition only when the mutex changes owner; a thread's runs of
 * acquisitions in between are counted, not recorded (docs/threads.md). This program's
 * result depends on the exact order of every acquisition, so a replay that let one slip
 * ends with another result:
 *  - a shared mutex guards a state that every acquisition mixes with the thread's id; how
 *    many times a thread then takes its own private mutex (a heap mutex made with
 *    pthread_mutex_init) depends on that state;
 *  - every 7th round a trylock on the shared mutex; every 16th a clock read (a record);
 *  - a heap mutex destroyed and made again at the same address halfway;
 *  - one long run: thread 0 takes the shared mutex LONG times in a row (more than a RUN
 *    record counts) while the others read the clock;
 *  - a baton passed round the threads with a condition variable.
 * The main thread joins them and writes the state and the number of acquisitions to OUT
 * (a regular file: the test compares the primary's and the replay's).
 *
 * usage: lockruns OUT [THREADS [ROUNDS [LONG]]]      defaults: 4, 3000, 5000 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define MAX_THREADS 16

static pthread_mutex_t shared = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t *heap; /* made, destroyed and made again at the same address */
static pthread_mutex_t baton_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t baton_moved = PTHREAD_COND_INITIALIZER;
static uint64_t state = 0x9e3779b97f4a7c15ull, heap_count, baton;
static long trylocks, clocks;
static int threads = 4, rounds = 3000, long_run = 5000;

/* A barrier of our own, from the primitives mig orders (pthread_barrier_t is not one). */
static pthread_mutex_t phase_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t phase_moved = PTHREAD_COND_INITIALIZER;
static int phase_in;
static unsigned long phase_gen;

static void phase_wait(void)
{
    pthread_mutex_lock(&phase_lock);
    unsigned long gen = phase_gen;
    if (++phase_in == threads) {
        phase_in = 0;
        phase_gen++;
        pthread_cond_broadcast(&phase_moved);
    } else {
        while (gen == phase_gen)
            pthread_cond_wait(&phase_moved, &phase_lock);
    }
    pthread_mutex_unlock(&phase_lock);
}

struct worker {
    int id;
    pthread_mutex_t *own;
    long own_count;
    long taken; /* mutex acquisitions it made (condition waits not counted) */
};

static void take(struct worker *w, pthread_mutex_t *m)
{
    pthread_mutex_lock(m);
    w->taken++;
}

static uint64_t mix(uint64_t s, uint64_t v)
{
    s ^= v + 0x9e3779b97f4a7c15ull + (s << 6) + (s >> 2);
    return s * 0x100000001b3ull;
}

static void *work(void *arg)
{
    struct worker *w = arg;
    struct timespec ts;
    for (int r = 0; r < rounds; r++) {
        take(w, &shared);
        state = mix(state, (uint64_t)w->id);
        int burst = (int)(state >> 59); /* 0..31, as the order of the threads made it */
        pthread_mutex_unlock(&shared);
        for (int i = 0; i < burst; i++) {
            take(w, w->own);
            w->own_count += i;
            pthread_mutex_unlock(w->own);
        }
        if (r % 7 == 0 && pthread_mutex_trylock(&shared) == 0) {
            w->taken++;
            state = mix(state, 1000u + (uint64_t)w->id);
            trylocks++;
            pthread_mutex_unlock(&shared);
        }
        if (r % 16 == 0) {
            clock_gettime(CLOCK_REALTIME, &ts);
            take(w, &shared);
            clocks++;
            pthread_mutex_unlock(&shared);
        }
        if (r == rounds / 2) {
            phase_wait();
            if (w->id == 0) { /* nobody else is between the two barriers */
                pthread_mutex_destroy(heap);
                pthread_mutex_init(heap, NULL);
            }
            phase_wait();
        }
        take(w, heap);
        heap_count = mix(heap_count, (uint64_t)w->id);
        pthread_mutex_unlock(heap);
    }
    /* the long run: thread 0 alone on the shared mutex, the others make records */
    phase_wait();
    if (w->id == 0) {
        for (int i = 0; i < long_run; i++) {
            take(w, &shared);
            state = mix(state, (uint64_t)i);
            pthread_mutex_unlock(&shared);
        }
    } else {
        for (int i = 0; i < long_run / 4; i++)
            clock_gettime(CLOCK_MONOTONIC, &ts);
    }
    phase_wait();
    /* the baton: each thread in turn, three times round */
    for (int k = 0; k < 3; k++) {
        take(w, &baton_lock);
        while (baton % (uint64_t)threads != (uint64_t)w->id)
            pthread_cond_wait(&baton_moved, &baton_lock);
        baton++;
        state = mix(state, baton);
        pthread_cond_broadcast(&baton_moved);
        pthread_mutex_unlock(&baton_lock);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: lockruns OUT [THREADS [ROUNDS [LONG]]]\n");
        return 2;
    }
    if (argc > 2)
        threads = atoi(argv[2]);
    if (argc > 3)
        rounds = atoi(argv[3]);
    if (argc > 4)
        long_run = atoi(argv[4]);
    if (threads < 2 || threads > MAX_THREADS || rounds < 2 || long_run < 0) {
        fprintf(stderr, "lockruns: THREADS must be 2..%d, ROUNDS >= 2, LONG >= 0\n",
                MAX_THREADS);
        return 2;
    }
    heap = malloc(sizeof *heap);
    pthread_mutex_init(heap, NULL);
    pthread_t t[MAX_THREADS];
    struct worker w[MAX_THREADS];
    for (int i = 0; i < threads; i++) {
        w[i].id = i;
        w[i].own = malloc(sizeof *w[i].own);
        w[i].own_count = 0;
        w[i].taken = 0;
        pthread_mutex_init(w[i].own, NULL);
        if (pthread_create(&t[i], NULL, work, &w[i]) != 0) {
            perror("lockruns: pthread_create");
            return 1;
        }
    }
    long own = 0, taken = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        own += w[i].own_count;
        taken += w[i].taken;
    }
    FILE *out = fopen(argv[1], "w");
    if (!out) {
        perror(argv[1]);
        return 1;
    }
    fprintf(out, "lockruns state=%016llx heap=%016llx own=%ld trylocks=%ld clocks=%ld"
            " baton=%llu acquisitions=%ld\n", (unsigned long long)state,
            (unsigned long long)heap_count, own, trylocks, clocks, (unsigned long long)baton,
            taken);
    fclose(out);
    return 0;
}
