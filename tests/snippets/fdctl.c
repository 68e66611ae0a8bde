/* fdctl.c -- ioctl and fcntl on a socket, as nginx sets up its channels: FIOASYNC and
 * FIONBIO, FIONREAD's count of waiting bytes, and F_SETOWN with the pid getpid() gave
 * (a backup's is the primary's, which does not exist there). */
#include "common.h"
#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    snippet_open(argc, argv);
    signal(SIGIO, SIG_IGN); /* FIOASYNC with an owner: the write below raises SIGIO */
    int sv[2], on = 1, waiting = -1;
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        return 3;
    out("pid %d\n", (int)getpid());
    out("ioctl FIOASYNC %d\n", ioctl(sv[0], FIOASYNC, &on));
    out("ioctl FIONBIO %d\n", ioctl(sv[0], FIONBIO, &on));
    out("fcntl F_SETOWN %d\n", fcntl(sv[0], F_SETOWN, getpid()));
    out("fcntl F_GETOWN is me %d\n", fcntl(sv[0], F_GETOWN) == getpid());
    if (write(sv[1], "twelve bytes", 12) != 12)
        return 4;
    int r = ioctl(sv[0], FIONREAD, &waiting);
    out("ioctl FIONREAD %d waiting %d\n", r, waiting);
    out("nonblocking %d\n", (fcntl(sv[0], F_GETFL) & O_NONBLOCK) != 0);
    return 0;
}
