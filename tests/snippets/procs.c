/* procs.c -- fork, waitpid, kill of a child that handles SIGTERM, posix_spawn, and exec of
 * this program itself after an exec of a path that does not exist (as execvp and CPython's
 * subprocess try each folder of PATH): children get logical ids 1.1, 1.2 ... and their own logs. Each child
 * reports what it saw through a pipe; the parent writes it all to the output file. */
#include "common.h"
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;
static volatile sig_atomic_t stop;

static void on_term(int sig)
{
    (void)sig;
    stop = 1;
}

static void report(int fd, const char *who)
{
    char buf[160];
    struct timespec ts;
    unsigned long r = 0;
    clock_gettime(CLOCK_REALTIME, &ts);
    getrandom(&r, sizeof r, 0);
    int n = snprintf(buf, sizeof buf, "%s pid %d ppid %d ns %ld rnd %lu\n", who, getpid(),
                     getppid(), ts.tv_nsec, r);
    if (write(fd, buf, n) != n)
        _exit(9);
}

int main(int argc, char **argv)
{
    if (argc > 3 && strcmp(argv[1], "exec-child") == 0) { /* the exec'd image */
        char who[64];
        snprintf(who, sizeof who, "exec'd after errno %s", argv[3]);
        report(atoi(argv[2]), who);
        return 7;
    }
    snippet_open(argc, argv);
    int p[2];
    if (pipe(p) != 0)
        return 1;
    pid_t a = fork();
    if (a == 0) {
        report(p[1], "child-a");
        _exit(3);
    }
    pid_t b = fork();
    if (b == 0) {
        struct sigaction sa = {.sa_handler = on_term};
        sigaction(SIGTERM, &sa, NULL);
        report(p[1], "child-b");
        while (!stop) {
            struct timespec t = {0, 1000000};
            nanosleep(&t, NULL);
        }
        report(p[1], "child-b-after-term");
        _exit(4);
    }
    pid_t c = fork();
    if (c == 0) {
        char fd[16], err[16];
        snprintf(fd, sizeof fd, "%d", p[1]);
        char *none[] = {"none", NULL};
        execve("/nonexistent/mig-procs", none, environ);
        snprintf(err, sizeof err, "%d", errno);
        execl(argv[0], argv[0], "exec-child", fd, err, (char *)NULL);
        _exit(99);
    }
    char buf[4096];
    int got = 0, lines = 0;
    while (lines < 3) { /* a, b, exec'd: then stop b */
        ssize_t n = read(p[0], buf + got, sizeof buf - 1 - got);
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            lines += buf[got + i] == '\n';
        got += (int)n;
    }
    int st;
    out("kill b %d\n", kill(b, SIGTERM));
    while (lines < 4) {
        ssize_t n = read(p[0], buf + got, sizeof buf - 1 - got);
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            lines += buf[got + i] == '\n';
        got += (int)n;
    }
    buf[got] = 0;
    pid_t wa = waitpid(a, &st, 0);
    out("wait a %d exit %d\n", wa == a, WEXITSTATUS(st));
    pid_t wb = waitpid(b, &st, 0);
    out("wait b %d exit %d\n", wb == b, WEXITSTATUS(st));
    pid_t wc = waitpid(c, &st, 0);
    out("wait c %d exit %d\n", wc == c, WEXITSTATUS(st));
    pid_t s;
    char *sargv[] = {"/bin/true", NULL};
    int sr = posix_spawn(&s, "/bin/true", NULL, NULL, sargv, environ);
    pid_t ws = waitpid(s, &st, 0);
    out("spawn %d wait %d exit %d\n", sr, ws == s, WEXITSTATUS(st));
    out("pids %d %d %d %d\n%s", a, b, c, s, buf);
    return 0;
}
