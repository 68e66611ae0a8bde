/* signals.c -- SIGALRM from setitimer every 2 ms interrupting select(), and a SIGCHLD
 * handler: when the handler ran (between which calls) is timing, so it is recorded and a
 * backup runs it at the same points. Then a SIGSTKFLT the program sends itself, the
 * signal mig's shim preempts spinning threads with: the program's handler must run and be
 * the one sigaction reports. Last a one-shot handler (SA_RESETHAND) that raises its signal
 * again, as Node.js ends at SIGTERM: the second is the default action's (SIGWINCH's: none),
 * so the handler runs once. */
#include "common.h"
#include <signal.h>
#include <sys/select.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t ticks, chld, stkflt, winch;

static void on_winch_once(int sig)
{
    if (++winch < 5)
        raise(sig);
}

static void on_stkflt(int sig)
{
    (void)sig;
    stkflt++;
}

static void on_alarm(int sig)
{
    (void)sig;
    ticks++;
}

static void on_chld(int sig)
{
    (void)sig;
    chld++;
}

int main(int argc, char **argv)
{
    snippet_open(argc, argv);
    signal(SIGALRM, on_alarm);
    struct sigaction sa = {.sa_handler = on_chld};
    sigaction(SIGCHLD, &sa, NULL);
    struct itimerval it = {{0, 2000}, {0, 2000}};
    setitimer(ITIMER_REAL, &it, NULL);
    int loops = 0, eintr = 0;
    pid_t kid = fork();
    if (kid == 0)
        _exit(5);
    while (ticks < 25 && loops < 100000) {
        struct timeval tv = {0, 500};
        int r = select(0, NULL, NULL, NULL, &tv);
        if (r < 0)
            eintr++;
        loops++;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if (loops % 7 == 0)
            out("loop %d ticks %d chld %d ns %ld\n", loops, (int)ticks, (int)chld, ts.tv_nsec);
    }
    /* no SIGALRM after the loop: a handler the primary runs at its very last calls, which
     * it does not record (the output file's write at exit), leaves a SIGNAL record no
     * recorded call follows, which a backup's process exits before taking */
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    int st;
    waitpid(kid, &st, 0);
    struct sigaction mine = {.sa_handler = on_stkflt}, seen;
    sigaction(SIGSTKFLT, &mine, NULL);
    kill(getpid(), SIGSTKFLT);
    for (int i = 0; i < 100 && !stkflt; i++)
        usleep(1000);
    sigaction(SIGSTKFLT, NULL, &seen);
    out("stkflt %d handler %s\n", (int)stkflt, seen.sa_handler == on_stkflt ? "kept" : "lost");
    struct sigaction once = {.sa_handler = on_winch_once, .sa_flags = SA_RESETHAND};
    sigaction(SIGWINCH, &once, NULL);
    raise(SIGWINCH);
    for (int i = 0; i < 20; i++)
        usleep(1000);
    sigaction(SIGWINCH, NULL, &seen);
    out("winch %d then %s\n", (int)winch, seen.sa_handler == SIG_DFL ? "default" : "handled");
    out("done loops %d eintr %d ticks %d chld %d exit %d\n", loops, eintr, (int)ticks,
        (int)chld, WEXITSTATUS(st));
    return 0;
}
