/* clockcache.c -- the shape of a common cache server: a clock thread keeps a global
 * "current time" that it writes every millisecond without a lock, and a maintenance
 * thread reads it, also without a lock, between short sleeps, expiring entries whose time
 * has come. Which value the maintenance thread sees at each pass depends only on how the
 * two threads interleaved: nothing intercepted orders these reads and writes. With
 * threads in parallel a replica, whose recorded sleeps return at once, sees other values;
 * with threads serialized it must see exactly the primary's.
 *
 * The main thread joins both and sends what maintenance saw (the passes at which the
 * clock moved, hashed, how often it caught an update half done, and the entries
 * expired) over a socketpair: an output mig checks.
 *
 * usage: clockcache [PASSES]      default 400
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static volatile uint64_t now_ms;  /* written by the clock thread only, read without a lock */
#define UPDATING (1ull << 62)
static volatile int done;
static int passes = 400;
static uint64_t seen_hash = 0xcbf29ce484222325ull, moves, expired, updating;

static uint64_t clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void *clock_thread(void *arg)
{
    (void)arg;
    struct timespec tick = {0, 1000000};
    while (!done) {
        /* the new time is published in two steps, as a cache server's clock update may
         * be (a struct of seconds and milliseconds): a read between them sees a value
         * marked "being updated", which the maintenance pass counts too */
        now_ms = clock_ms() | UPDATING;
        for (volatile int spin = 0; spin < 20000; spin++)
            ;
        now_ms &= ~UPDATING;
        nanosleep(&tick, NULL);
    }
    return NULL;
}

static void *maintenance(void *arg)
{
    (void)arg;
    uint64_t expiry[64] = {0}, last = 0;
    struct timespec pause = {0, 150000};
    for (int i = 0; i < passes; i++) {
        uint64_t t = now_ms; /* the racy read */
        if (t & UPDATING) {
            updating++;
            t &= ~UPDATING;
        }
        if (t != last) {
            moves++;
            seen_hash = (seen_hash ^ (uint64_t)i) * 0x100000001b3ull;
            last = t;
        }
        for (int e = 0; e < 64; e++) {
            if (expiry[e] && expiry[e] <= t) {
                expired++;
                expiry[e] = 0;
            } else if (!expiry[e]) {
                expiry[e] = t + (uint64_t)(e % 7) + 1;
            }
        }
        nanosleep(&pause, NULL);
    }
    done = 1;
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        passes = atoi(argv[1]);
    if (passes < 1) {
        fprintf(stderr, "usage: clockcache [PASSES]\n");
        return 2;
    }
    now_ms = clock_ms();
    pthread_t c, m;
    if (pthread_create(&c, NULL, clock_thread, NULL) != 0 ||
        pthread_create(&m, NULL, maintenance, NULL) != 0)
        return 1;
    pthread_join(m, NULL);
    pthread_join(c, NULL);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        return 1;
    char line[128];
    int n = snprintf(line, sizeof line,
                     "clockcache moves=%llu updating=%llu expired=%llu seen=%016llx\n",
                     (unsigned long long)moves, (unsigned long long)updating,
                     (unsigned long long)expired, (unsigned long long)seen_hash);
    if (write(sv[0], line, (size_t)n) != n)
        return 1;
    fputs(line, stdout);
    return 0;
}
