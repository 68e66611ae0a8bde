/* held.c -- outputs the shim holds until their causes are committed must still arrive,
 * in order, when the app closes the fd right after writing, shuts it down, writes from a
 * forked child that leaves with _exit(), or points the fd elsewhere with dup2 (as a shell
 * does around `echo hi >&$fd`: the pipe's last write end goes, its reader must see EOF).
 * The reader is this same program. */
#include "common.h"
#include <poll.h>
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

    int p[2];
    if (pipe(p) != 0)
        return 4;
    pid_t reader = fork();
    if (reader == 0) { /* exits 0 at EOF, 1 if none comes within 3 s */
        close(p[1]);
        char buf[64];
        size_t got = 0;
        for (;;) {
            struct pollfd pf = {p[0], POLLIN, 0};
            if (poll(&pf, 1, 3000) != 1)
                _exit(1);
            ssize_t n = read(p[0], buf + got, sizeof buf - got);
            if (n <= 0)
                _exit(n == 0 && got == 10 ? 0 : 2);
            got += (size_t)n;
        }
    }
    close(p[0]);
    int saved = dup(1);
    dup2(p[1], 1); /* the shell's `>&fd` */
    close(p[1]);
    if (write(1, "via stdout", 10) != 10)
        return 5;
    dup2(saved, 1); /* and back: the pipe's last write end goes with it */
    close(saved);
    waitpid(reader, &st, 0);
    out("dup2 over a held fd: the reader %s\n", WEXITSTATUS(st) == 0 ? "saw its bytes, then EOF"
                                                : WEXITSTATUS(st) == 1 ? "waited for EOF in vain"
                                                                       : "read something else");
    return 0;
}
