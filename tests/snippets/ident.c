/* ident.c -- getpid, getppid, gettid, uname, gethostname: the backup host differs. */
#include "common.h"
#include <sys/utsname.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    snippet_open(argc, argv);
    struct utsname u;
    char host[128] = {0};
    int pid = getpid(), ppid = getppid(), tid = gettid();
    out("pid %d ppid %d tid %d\n", pid, ppid, tid);
    int ur = uname(&u);
    out("uname %d %s %s %s\n", ur, u.nodename, u.release, u.machine);
    int hr = gethostname(host, sizeof host);
    out("hostname %d %s\n", hr, host);
    return 0;
}
