/* brokenpipe.c -- a writer whose reader goes away, as `yes | head -3` in a shell: a child
 * writes to a pipe until the parent, having read a little, closes its end. Natively the
 * child's next write fails with EPIPE and SIGPIPE ends it (and with SIGPIPE ignored, the
 * write fails with EPIPE). The writes are bounded, so a writer that is never told ends by
 * itself and says so instead of hanging. */
#include "common.h"
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#define WRITES 200000

static void writer(int fd, int ignore)
{
    if (ignore)
        signal(SIGPIPE, SIG_IGN);
    char line[64];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int n = snprintf(line, sizeof line, "line %ld\n", ts.tv_nsec);
    for (int i = 0; i < WRITES; i++)
        if (write(fd, line, (size_t)n) < 0)
            _exit(errno == EPIPE ? 32 : 1);
    _exit(3); /* never told the reader was gone */
}

static void one(int ignore)
{
    int p[2];
    if (pipe(p) != 0)
        exit(1);
    pid_t c = fork();
    if (c == 0) {
        close(p[0]);
        writer(p[1], ignore);
    }
    close(p[1]);
    char buf[64] = {0};
    ssize_t got = read(p[0], buf, 5); /* "line " */
    close(p[0]);
    int st = 0;
    waitpid(c, &st, 0);
    out("%s: read %zd '%s'; the writer ", ignore ? "SIGPIPE ignored" : "SIGPIPE default", got,
        buf);
    if (WIFSIGNALED(st))
        out("was killed by signal %d\n", WTERMSIG(st));
    else
        out("exited %d\n", WEXITSTATUS(st));
}

int main(int argc, char **argv)
{
    snippet_open(argc, argv);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    out("start %ld\n", ts.tv_nsec);
    one(0);
    one(1);
    return 0;
}
