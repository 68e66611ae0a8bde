/* rwtable.c -- readers and writers of a shared table under a reader-writer lock.
 *
 * One of the programs mig's integration tests record on a primary and replay on a backup;
 * it knows nothing of mig. WRITERS threads each make ROUNDS updates: 8 bytes from
 * getrandom() decide a slot and a value, and the update happens under the write lock.
 * READERS threads each take ROUNDS snapshots under the read lock and fold what they saw
 * (the table's version and the sum of its slots) into a running hash. A semaphore counts
 * the updates; the main thread waits for all of them (sem_wait), joins every thread and
 * writes the final table and each reader's hash to OUT. What the readers saw depends on
 * how the threads interleaved: a replay writes the same OUT only if it follows the
 * recorded order.
 *
 * usage: rwtable OUT [READERS [WRITERS [ROUNDS]]]      defaults: 3, 2, 2000
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <time.h>

#define SLOTS 64

static pthread_rwlock_t lock = PTHREAD_RWLOCK_INITIALIZER;
static uint64_t table[SLOTS];
static uint64_t version;
static sem_t updates;
static int rounds = 2000;

static void *writer(void *arg)
{
    (void)arg;
    for (int i = 0; i < rounds; i++) {
        uint64_t r;
        if (getrandom(&r, sizeof r, 0) != sizeof r)
            abort();
        pthread_rwlock_wrlock(&lock);
        table[r % SLOTS] = r;
        version++;
        pthread_rwlock_unlock(&lock);
        sem_post(&updates);
        if (i % 100 == 0) {
            struct timespec pause = {0, 200000};
            nanosleep(&pause, NULL);
        }
    }
    return NULL;
}

static void *reader(void *arg)
{
    uint64_t *hash = arg;
    *hash = 0xcbf29ce484222325ull;
    for (int i = 0; i < rounds; i++) {
        pthread_rwlock_rdlock(&lock);
        uint64_t sum = version;
        for (int s = 0; s < SLOTS; s++)
            sum += table[s];
        pthread_rwlock_unlock(&lock);
        *hash = (*hash ^ sum) * 0x100000001b3ull;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: rwtable OUT [READERS [WRITERS [ROUNDS]]]\n");
        return 2;
    }
    int readers = argc > 2 ? atoi(argv[2]) : 3, writers = argc > 3 ? atoi(argv[3]) : 2;
    if (argc > 4)
        rounds = atoi(argv[4]);
    if (readers < 1 || readers > 32 || writers < 1 || writers > 32 || rounds < 1) {
        fprintf(stderr, "rwtable: 1..32 readers and writers, at least one round\n");
        return 2;
    }
    sem_init(&updates, 0, 0);
    pthread_t t[64];
    uint64_t hashes[32];
    int n = 0;
    for (int i = 0; i < writers; i++)
        pthread_create(&t[n++], NULL, writer, NULL);
    for (int i = 0; i < readers; i++)
        pthread_create(&t[n++], NULL, reader, &hashes[i]);
    for (int i = 0; i < writers * rounds; i++)
        sem_wait(&updates);
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    FILE *f = fopen(argv[1], "w");
    if (!f) {
        perror("rwtable");
        return 1;
    }
    fprintf(f, "rwtable version=%llu\n", (unsigned long long)version);
    for (int i = 0; i < readers; i++)
        fprintf(f, "reader %d %016llx\n", i, (unsigned long long)hashes[i]);
    for (int s = 0; s < SLOTS; s++)
        fprintf(f, "slot %d %016llx\n", s, (unsigned long long)table[s]);
    return fclose(f) == 0 ? 0 : 1;
}
