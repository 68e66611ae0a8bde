/* rawcalls.c -- non-deterministic calls that go around libc's exported symbols: raw
 * syscall() of getrandom, clock_gettime, gettimeofday, time and getpid, and stdio reading
 * /dev/urandom through libc's internal open and read (how Redis seeds its hash). */
#include "common.h"
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static void hex(const char *what, const unsigned char *b, long n)
{
    out("%s %ld ", what, n);
    for (long i = 0; i < n; i++)
        out("%02x", b[i]);
    out("\n");
}

int main(int argc, char **argv)
{
    snippet_open(argc, argv);
    unsigned char buf[32];
    hex("raw getrandom", buf, syscall(SYS_getrandom, buf, 16, 0));
    struct timespec ts;
    long r = syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &ts);
    out("raw clock_gettime %ld %ld.%09ld\n", r, (long)ts.tv_sec, ts.tv_nsec);
    struct timeval tv;
    r = syscall(SYS_gettimeofday, &tv, NULL);
    out("raw gettimeofday %ld %ld.%06ld\n", r, (long)tv.tv_sec, (long)tv.tv_usec);
    out("raw time %ld\n", syscall(SYS_time, NULL));
    out("raw getpid %ld\n", syscall(SYS_getpid));
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f)
        return 3;
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    hex("stdio /dev/urandom", buf, (long)n);
    return 0;
}
