/* sleeploop.c -- ITER rounds of clock_gettime + nanosleep(SLEEP_MS) + getrandom, then exit.
 *
 * The replay-speed workload of bench/interceptor_bench.py: about ITER * SLEEP_MS of real
 * time when recorded; a replaying backup returns the recorded results and skips the sleeps.
 *
 * usage: sleeploop [ITER [SLEEP_MS]]      defaults: 200, 5 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <time.h>

int main(int argc, char **argv)
{
    int iter = argc > 1 ? atoi(argv[1]) : 200;
    int sleep_ms = argc > 2 ? atoi(argv[2]) : 5;
    struct timespec pause = {0, (long)sleep_ms * 1000000L}, ts;
    unsigned long long mix = 0;
    for (int i = 0; i < iter; i++) {
        unsigned long long r = 0;
        clock_gettime(CLOCK_REALTIME, &ts);
        nanosleep(&pause, NULL);
        if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
            return 1;
        mix ^= r ^ (unsigned long long)ts.tv_nsec;
    }
    printf("rounds=%d mix=%016llx\n", iter, mix);
    return 0;
}
