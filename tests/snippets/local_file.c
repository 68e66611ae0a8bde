/* local_file.c -- sends the content of the regular file local.txt through a pipe.
 * Regular files are read for real on each host, so a backup whose local.txt differs
 * produces a different output: a divergence mig must report, not accept. */
#include "common.h"
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    snippet_open(argc, argv);
    char text[128] = {0};
    FILE *f = fopen("local.txt", "r");
    if (f) {
        if (!fgets(text, sizeof text, f))
            text[0] = 0;
        fclose(f);
    }
    int p[2];
    if (pipe(p) != 0)
        return 1;
    for (int i = 0; i < 5; i++) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        char buf[256];
        int n = snprintf(buf, sizeof buf, "%d %ld %s", i, ts.tv_nsec, i == 3 ? text : "-");
        if (write(p[1], buf, n) != n || read(p[0], buf, sizeof buf) <= 0)
            return 2;
        out("%.*s\n", n, buf);
    }
    return 0;
}
