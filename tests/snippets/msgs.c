/* msgs.c -- what recvfrom and recvmsg return besides the data: a UDP echo through
 * recvfrom's peer address (the reply goes to the port the request came from, a random
 * one), and a file descriptor passed over a Unix socket (SCM_RIGHTS) and then read. */
#include "common.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int udp_bound(void)
{
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0)
        return -1;
    return s;
}

static int port_of(int s)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    getsockname(s, (struct sockaddr *)&a, &len);
    return ntohs(a.sin_port);
}

static void udp_echo(void)
{
    int server = udp_bound(), client = udp_bound();
    if (server < 0 || client < 0)
        exit(3);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port_of(server)),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    sendto(client, "ping", 4, 0, (struct sockaddr *)&to, sizeof to);
    char buf[64] = {0};
    struct sockaddr_in from;
    socklen_t len = sizeof from;
    ssize_t n = recvfrom(server, buf, sizeof buf - 1, 0, (struct sockaddr *)&from, &len);
    out("server got %zd '%s' from port %d (client is %d), len %u\n", n, buf,
        ntohs(from.sin_port), port_of(client), (unsigned)len);
    sendto(server, "pong", 4, 0, (struct sockaddr *)&from, len); /* back where it came from */
    memset(buf, 0, sizeof buf);
    len = sizeof from;
    n = recvfrom(client, buf, sizeof buf - 1, 0, (struct sockaddr *)&from, &len);
    out("client got %zd '%s' from the server: %s\n", n, buf,
        ntohs(from.sin_port) == port_of(server) ? "yes" : "no");
    close(server);
    close(client);
}

static void pass_fd(void)
{
    int sv[2], p[2];
    if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) != 0 || pipe(p) != 0)
        exit(4);
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    memset(&u, 0, sizeof u);
    struct iovec iov = {"fd", 2};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                       .msg_controllen = sizeof u.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &p[0], sizeof(int));
    if (sendmsg(sv[0], &m, 0) != 2)
        exit(5);
    close(p[0]);
    char data[8] = {0};
    struct iovec in = {data, sizeof data - 1};
    memset(&u, 0, sizeof u);
    struct msghdr r = {.msg_iov = &in, .msg_iovlen = 1, .msg_control = u.buf,
                       .msg_controllen = sizeof u.buf};
    ssize_t n = recvmsg(sv[1], &r, 0);
    struct cmsghdr *rc = CMSG_FIRSTHDR(&r);
    int got = -1;
    if (rc && rc->cmsg_type == SCM_RIGHTS)
        memcpy(&got, CMSG_DATA(rc), sizeof got);
    out("recvmsg %zd '%s' controllen %zu flags %d passed fd %s\n", n, data,
        (size_t)r.msg_controllen, r.msg_flags, got >= 0 ? "yes" : "no");
    if (write(p[1], "through the passed fd", 21) != 21)
        exit(6);
    char text[64] = {0};
    out("read %zd '%s'\n", got >= 0 ? read(got, text, sizeof text - 1) : -1, text);
}

int main(int argc, char **argv)
{
    snippet_open(argc, argv);
    udp_echo();
    pass_fd();
    return 0;
}
