/* errnokeep.c -- a call that succeeds leaves errno as it was, as natively: the shim's
 * own waits (for a commit, for its records) must not leak their errors into the
 * program's errno. 2,000 recorded calls, each made with errno set to a marker. */
#include "common.h"
#include <errno.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    snippet_open(argc, argv);
    int changed = 0, last = 0;
    for (int i = 0; i < 2000; i++) {
        struct timespec ts;
        errno = 4242;
        if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0 && errno != 4242) {
            changed++;
            last = errno;
        }
    }
    out("errno changed by a successful call %d times (last %d)\n", changed, last);
    return 0;
}
