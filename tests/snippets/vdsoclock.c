/* vdsoclock.c -- clock reads libc makes inside itself, through the vDSO and not through
 * the clock_gettime symbol: timespec_get (C11) and clock() (the process's CPU time). */
#include "common.h"
#include <time.h>

int main(int argc, char **argv)
{
    snippet_open(argc, argv);
    for (int i = 0; i < 3; i++) {
        struct timespec ts;
        int base = timespec_get(&ts, TIME_UTC);
        out("timespec_get %d %ld.%09ld\n", base, (long)ts.tv_sec, ts.tv_nsec);
    }
    volatile unsigned long spin = 0;
    for (unsigned long i = 0; i < 2000000; i++)
        spin += i;
    out("clock %ld\n", (long)clock());
    return 0;
}
