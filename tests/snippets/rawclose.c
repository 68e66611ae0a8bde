/* rawclose.c -- a socket closed with a raw syscall(SYS_close) while a reply to it is held
 * (output mode): the held reply must reach its own peer, never the connection that gets
 * the same fd number next. The readers are this same program. */
#include "common.h"
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    snippet_open(argc, argv);
    int a[2], b[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, a) != 0)
        return 1;
    if (write(a[0], "reply for a", 11) != 11)
        return 2;
    syscall(SYS_close, a[0]);
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, b) != 0)
        return 3;
    out("same number again: %s\n", b[0] == a[0] ? "yes" : "no");
    if (write(b[0], "reply for b", 11) != 11)
        return 4;
    syscall(SYS_close, b[0]);
    drain(a[1], "peer a");
    drain(b[1], "peer b");
    return 0;
}
