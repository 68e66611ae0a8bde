/* common.h -- helpers of the snippets: each snippet makes one family of intercepted calls
 * and writes what it observed to the regular file argv[1]. Run natively twice, the files
 * differ (the calls are non-deterministic); recorded on a primary and replayed on a
 * backup, they must be identical byte for byte. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static FILE *snippet_out;

static void out(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(snippet_out, fmt, ap);
    va_end(ap);
}

/* Read fd to its end and say what came, then how it ended (the held-output snippets). */
__attribute__((unused)) static void drain(int fd, const char *what)
{
    char buf[256] = {0};
    size_t got = 0;
    long n;
    while ((n = (long)read(fd, buf + got, sizeof buf - 1 - got)) > 0)
        got += (size_t)n;
    out("%s: '%s' then %s\n", what, buf, n == 0 ? "EOF" : "error");
}

static void snippet_open(int argc, char **argv)
{
    snippet_out = fopen(argc > 1 ? argv[1] : "out.txt", "w");
    if (!snippet_out)
        exit(2);
}
