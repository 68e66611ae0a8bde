/* held.c -- outputs the shim holds until their causes are committed must still arrive,
 * in order, when the app closes the fd right after writing, shuts it down, or writes from a
 * forked child that leaves with _exit(). The reader is this same program. */
#include "common.h"
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    snippet_open(argc, argv);
    int s[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, s);
    if (write(s[0], "first ", 6) != 6 || send(s[0], "second", 6, 0) != 6)
        return 1;
    close(s[0]); /* held bytes must still leave, then the EOF */
    drain(s[1], "after close");
    close(s[1]);

    socketpair(AF_UNIX, SOCK_STREAM, 0, s);
    if (write(s[0], "before shutdown", 15) != 15)
        return 2;
    shutdown(s[0], SHUT_WR); /* the FIN must not overtake the held bytes */
    drain(s[1], "after shutdown");
    close(s[0]);
    close(s[1]);

    socketpair(AF_UNIX, SOCK_STREAM, 0, s);
    pid_t kid = fork();
    if (kid == 0) {
        close(s[1]);
        if (write(s[0], "from the child", 14) != 14)
            _exit(3);
        _exit(0); /* no destructors: the shim must flush first */
    }
    close(s[0]);
    drain(s[1], "from child");
    int st;
    waitpid(kid, &st, 0);
    out("child exit %d\n", WEXITSTATUS(st));
    return 0;
}
