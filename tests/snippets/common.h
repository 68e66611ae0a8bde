/* common.h -- helpers of the snippets: each snippet makes one family of intercepted calls
 * and writes what it observed to the regular file argv[1]. Run natively twice, the files
 * differ (the calls are non-deterministic); recorded on a primary and replayed on a
 * backup, they must be identical byte for byte. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static FILE *snippet_out;

static void out(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(snippet_out, fmt, ap);
    va_end(ap);
}

static void snippet_open(int argc, char **argv)
{
    snippet_out = fopen(argc > 1 ? argv[1] : "out.txt", "w");
    if (!snippet_out)
        exit(2);
}
