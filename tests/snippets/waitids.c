/* waitids.c -- children waited for with waitid (as Python's os.waitid and the JVM wait):
 * one that exits with 7, looked at with WNOWAIT and then reaped by P_ALL; one that a
 * signal ends (SIGTERM, its default action), waited for by P_PID; then a wait with no
 * child left (ECHILD). Writes the child pids and what each siginfo says: the pids differ
 * between runs natively. */
#include "common.h"
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>

static void said(const char *what, int r, const siginfo_t *si)
{
    out("%s=%d pid=%d code=%d status=%d\n", what, r, si->si_pid, si->si_code, si->si_status);
}

int main(int argc, char **argv)
{
    snippet_open(argc, argv);
    fflush(snippet_out);
    pid_t a = fork();
    if (a == 0)
        _exit(7);
    siginfo_t si;
    memset(&si, 0, sizeof si);
    int r = waitid(P_PID, (id_t)a, &si, WEXITED | WNOWAIT);
    out("child a=%d\n", a);
    said("nowait", r, &si);
    memset(&si, 0, sizeof si);
    r = waitid(P_ALL, 0, &si, WEXITED);
    said("reaped", r, &si);
    fflush(snippet_out);
    pid_t b = fork();
    if (b == 0) {
        kill(getpid(), SIGTERM);
        pause();
        _exit(1);
    }
    memset(&si, 0, sizeof si);
    r = waitid(P_PID, (id_t)b, &si, WEXITED);
    out("child b=%d\n", b);
    said("killed", r, &si);
    memset(&si, 0, sizeof si);
    r = waitid(P_ALL, 0, &si, WEXITED | WNOHANG);
    out("none=%d %s\n", r, r < 0 && errno == ECHILD ? "ECHILD" : strerror(errno));
    return 0;
}
