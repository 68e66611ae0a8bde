/* clockstream.c -- a steady stream of clock_gettime calls for one second, a little work
 * between two (tests/member/test_record_replay.py, async batches): writes how many calls
 * it made and over how many milliseconds. */
#include "common.h"
#include <time.h>

int main(int argc, char **argv)
{
    snippet_open(argc, argv);
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    long calls = 1, ms = 0;
    volatile unsigned long work = 0;
    while (ms < 1000) {
        for (int i = 0; i < 1000; i++)
            work = work * 31 + (unsigned long)i;
        clock_gettime(CLOCK_MONOTONIC, &now);
        calls++;
        ms = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
    }
    out("calls %ld ms %ld\n", calls, ms);
    return 0;
}
