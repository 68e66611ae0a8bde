/* clocks.c -- time, gettimeofday, clock_gettime on every common clock, clock_getres. */
#include "common.h"
#include <sys/time.h>
#include <time.h>

int main(int argc, char **argv)
{
    snippet_open(argc, argv);
    clockid_t clocks[] = {CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_BOOTTIME, CLOCK_MONOTONIC_RAW,
                          CLOCK_REALTIME_COARSE, CLOCK_MONOTONIC_COARSE,
                          CLOCK_PROCESS_CPUTIME_ID, CLOCK_THREAD_CPUTIME_ID};
    for (int round = 0; round < 3; round++) {
        for (unsigned i = 0; i < sizeof clocks / sizeof clocks[0]; i++) {
            struct timespec ts, res;
            int r = clock_gettime(clocks[i], &ts);
            int g = clock_getres(clocks[i], &res); /* sequenced: the order is recorded */
            out("clock %d: %d %ld.%09ld res %d %ld\n", clocks[i], r, (long)ts.tv_sec,
                ts.tv_nsec, g, res.tv_nsec);
        }
        struct timeval tv;
        gettimeofday(&tv, NULL);
        long t = (long)time(NULL);
        out("gettimeofday %ld.%06ld time %ld\n", (long)tv.tv_sec, (long)tv.tv_usec, t);
        out("bad clock %d\n", clock_gettime((clockid_t)12345, &(struct timespec){0}));
    }
    return 0;
}
