/* sigwaits.c -- signals taken by waiting for them (sigwait, sigwaitinfo, sigtimedwait:
 * rt_sigtimedwait inside libc), as a daemon's signal thread takes them: SIGUSR1 and
 * SIGUSR2 blocked, each sent to the process by itself, then taken; a wait with a timeout
 * that finds none (EAGAIN). Writes the signal numbers and what the siginfo says (the
 * sender's pid and uid, the code): the pid differs between runs natively. */
#include "common.h"
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <time.h>

int main(int argc, char **argv)
{
    snippet_open(argc, argv);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0)
        return 1;
    kill(getpid(), SIGUSR1);
    int sig = 0;
    int r = sigwait(&set, &sig);
    out("sigwait=%d sig=%d\n", r, sig);
    kill(getpid(), SIGUSR2);
    siginfo_t info;
    memset(&info, 0, sizeof info);
    r = sigwaitinfo(&set, &info);
    out("sigwaitinfo=%d signo=%d pid=%d uid=%d code=%d\n", r, info.si_signo, info.si_pid,
        info.si_uid, info.si_code);
    struct timespec wait = {0, 20000000};
    r = sigtimedwait(&set, &info, &wait);
    out("sigtimedwait=%d %s\n", r, r < 0 && errno == EAGAIN ? "EAGAIN" : strerror(errno));
    return 0;
}
