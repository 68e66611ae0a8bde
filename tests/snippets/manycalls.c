/* manycalls.c -- 20,000 clock_gettime + getrandom calls: with a small ring (MIG_RING_BYTES)
 * the records wrap around its end many times, with every kind of gap at the end. */
#include "common.h"
#include <sys/random.h>
#include <time.h>

int main(int argc, char **argv)
{
    snippet_open(argc, argv);
    unsigned long sum = 0;
    for (int i = 0; i < 20000; i++) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        unsigned char r[1 + i % 61];
        if (getrandom(r, sizeof r, 0) < 0)
            return 1;
        sum = sum * 31 + (unsigned long)ts.tv_nsec + r[0];
    }
    out("sum %lu\n", sum);
    return 0;
}
