/* sleeps.c -- nanosleep, clock_nanosleep, usleep, sleep: the backup skips the waits but
 * sees the same time passing. */
#include "common.h"
#include <time.h>
#include <unistd.h>

static long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int main(int argc, char **argv)
{
    snippet_open(argc, argv);
    long t0 = now_us();
    struct timespec req = {0, 30000000}, rem = {0, 0};
    out("nanosleep %d\n", nanosleep(&req, &rem));
    out("clock_nanosleep %d\n", clock_nanosleep(CLOCK_MONOTONIC, 0, &req, NULL));
    out("usleep %d\n", usleep(20000));
    out("sleep %u\n", sleep(0));
    out("elapsed %ld us\n", now_us() - t0);
    return 0;
}
