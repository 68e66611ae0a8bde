/* clockloop.c -- N intercepted calls, then exit: the recorder-throughput workload of
 * bench/interceptor_bench.py.
 *
 * mode "clock" (default): N clock_gettime(CLOCK_MONOTONIC) calls. Each is a 112-byte record
 *   in the shim's ring.
 * mode "tiled": N calls alternating getrandom(48 bytes) and clock_gettime, whose records
 *   are 144 and 112 bytes. After the 112-byte record of the loop's first clock reading,
 *   each getrandom completes a 256-byte block: records tile the power-of-two ring exactly
 *   and the shim never writes a PAD record shorter than a record header (which mig's
 *   recorder cannot parse; see docs/benchmarks.md, "Interceptor").
 * mode "syscall": N raw syscall(SYS_clock_gettime) calls, bypassing the vDSO (not
 *   intercepted): the price of the syscall the shim makes per record to stamp wall_ns.
 * Prints the loop's own duration (two more clock_gettime calls) so the benchmark can
 * separate the loop from start-up.
 *
 * usage: clockloop N [clock|tiled|syscall] */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long long ns(const struct timespec *ts)
{
    return (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: clockloop N [clock|tiled|syscall]\n");
        return 2;
    }
    long long n = atoll(argv[1]);
    const char *mode = argc == 3 ? argv[2] : "clock";
    int tiled = strcmp(mode, "tiled") == 0, raw = strcmp(mode, "syscall") == 0;
    if (!tiled && !raw && strcmp(mode, "clock") != 0) {
        fprintf(stderr, "clockloop: unknown mode %s\n", mode);
        return 2;
    }
    struct timespec start, ts, end;
    unsigned char rnd[48];
    long long sum = 0;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (long long i = 0; i < n; i++) {
        if (tiled && !(i & 1)) {
            if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
                return 1;
            sum += rnd[0] & 1;
        } else if (raw) {
            syscall(SYS_clock_gettime, CLOCK_REALTIME, &ts);
            sum += ts.tv_nsec & 1;
        } else {
            clock_gettime(CLOCK_MONOTONIC, &ts);
            sum += ts.tv_nsec & 1;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    printf("calls=%lld mode=%s loop_ns=%lld odd=%lld\n", n, mode, ns(&end) - ns(&start), sum);
    return 0;
}
