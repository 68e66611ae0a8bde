/* pipes.c -- pipe2, socketpair, read/write, readv/writev, send/recv, sendmsg/recvmsg,
 * poll and select, lseek of a pipe, with data that depends on the clock so the test can fail. */
#include "common.h"
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    snippet_open(argc, argv);
    int p[2], s[2];
    out("pipe2 %d\n", pipe2(p, O_CLOEXEC));
    out("socketpair %d\n", socketpair(AF_UNIX, SOCK_STREAM, 0, s));
    char msg[64], got[64] = {0};
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int n = snprintf(msg, sizeof msg, "stamp %ld", ts.tv_nsec);
    ssize_t w = write(p[1], msg, n);
    ssize_t r = read(p[0], got, sizeof got - 1);
    out("write %zd read %zd\n", w, r);
    out("  %s\n", got);
    struct iovec wv[2] = {{msg, 3}, {msg + 3, (size_t)n - 3}};
    char a[4] = {0}, b[64] = {0};
    struct iovec rv[2] = {{a, 3}, {b, sizeof b - 1}};
    w = writev(p[1], wv, 2);
    r = readv(p[0], rv, 2);
    out("writev %zd readv %zd %s|%s\n", w, r, a, b);
    struct pollfd pf[2] = {{p[0], POLLIN, 0}, {s[1], POLLIN, 0}};
    out("send %zd\n", send(s[0], msg, n, 0));
    int np = poll(pf, 2, 100);
    out("poll %d %d %d\n", np, pf[0].revents, pf[1].revents);
    memset(got, 0, sizeof got);
    r = recv(s[1], got, sizeof got - 1, 0);
    out("recv %zd %s\n", r, got);
    struct msghdr mh = {.msg_iov = wv, .msg_iovlen = 2};
    out("sendmsg %zd\n", sendmsg(s[1], &mh, 0));
    memset(b, 0, sizeof b);
    struct msghdr rh = {.msg_iov = rv, .msg_iovlen = 2};
    fd_set rs;
    FD_ZERO(&rs);
    FD_SET(s[0], &rs);
    struct timeval tv = {0, 100000};
    int ns = select(s[0] + 1, &rs, NULL, NULL, &tv);
    out("select %d %d\n", ns, FD_ISSET(s[0], &rs));
    r = recvmsg(s[0], &rh, 0);
    out("recvmsg %zd %s|%s\n", r, a, b);
    errno = 0;
    off_t at = lseek(p[0], 0, SEEK_CUR); /* a pipe cannot seek: ESPIPE on every host */
    out("lseek %ld errno %d\n", (long)at, errno);
    int c0 = close(p[0]), c1 = close(p[1]), c2 = close(s[0]);
    out("close %d %d %d\n", c0, c1, c2);
    out("read closed %zd\n", read(s[1], got, 8));
    return 0;
}
