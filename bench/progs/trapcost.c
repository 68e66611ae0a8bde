/* trapcost.c -- ns per call of a system call that goes around the shim's symbols (libc's
 * getuid(): under complete capture each one is trapped and run by the shim) and of one
 * the shim wraps (getpid(): the fast path, a record, no trap). Prints one JSON line. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double ns_per_call(int n, int which)
{
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    volatile long sink = 0;
    for (int i = 0; i < n; i++)
        sink += which ? (long)getpid() : (long)getuid();
    clock_gettime(CLOCK_MONOTONIC, &b);
    (void)sink;
    return ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 200000;
    double trapped = ns_per_call(n, 0), wrapped = ns_per_call(n, 1);
    printf("{\"getuid_ns\": %.1f, \"getpid_ns\": %.1f, \"n\": %d}\n", trapped, wrapped, n);
    return 0;
}
