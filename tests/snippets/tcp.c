/* tcp.c -- a TCP server and client in one process: socket, setsockopt, bind to an
 * ephemeral port, listen, getsockname, connect, accept4, getpeername, getsockopt, epoll,
 * send/recv, shutdown, close. The port differs on every run. */
#include "common.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    snippet_open(argc, argv);
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    out("socket %d setsockopt %d\n", ls, setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int b = bind(ls, (struct sockaddr *)&sa, sizeof sa);
    out("bind %d listen %d\n", b, listen(ls, 4));
    socklen_t len = sizeof sa;
    int gs = getsockname(ls, (struct sockaddr *)&sa, &len);
    out("getsockname %d port %d\n", gs, ntohs(sa.sin_port));
    int c = socket(AF_INET, SOCK_STREAM, 0);
    out("connect %d\n", connect(c, (struct sockaddr *)&sa, sizeof sa));
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls}, evs[4];
    out("epoll_ctl %d\n", epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev));
    int nev = epoll_wait(ep, evs, 4, 1000);
    out("epoll_wait %d fd %d\n", nev, evs[0].data.fd);
    struct sockaddr_in peer;
    len = sizeof peer;
    int a = accept4(ls, (struct sockaddr *)&peer, &len, SOCK_CLOEXEC);
    out("accept4 %d peer port %d\n", a, ntohs(peer.sin_port));
    len = sizeof peer;
    int gp = getpeername(c, (struct sockaddr *)&peer, &len);
    out("getpeername %d %d\n", gp, ntohs(peer.sin_port));
    int val = 0;
    len = sizeof val;
    int go = getsockopt(a, SOL_SOCKET, SO_TYPE, &val, &len);
    out("getsockopt %d type %d\n", go, val);
    char buf[32] = {0};
    ssize_t sent = send(c, "hello", 5, 0);
    ssize_t got = recv(a, buf, sizeof buf, 0);
    out("send %zd recv %zd %s\n", sent, got, buf);
    int sh = shutdown(c, SHUT_WR);
    out("shutdown %d recv-eof %zd\n", sh, recv(a, buf, sizeof buf, 0));
    int c0 = close(a), c1 = close(c), c2 = close(ls);
    out("close %d %d %d\n", c0, c1, c2);
    return 0;
}
