/* sendfile.c -- a TCP server answering each request with a file, as nginx does with
 * `sendfile on`: sendfile with an offset pointer and with the file's own position, splice
 * from the file into a pipe and from the pipe to the socket, sendfile at the file's end,
 * copy_file_range from a pipe (refused by the kernel), a signal handler's own sendfile
 * just before the program's, and sendfile to a nonblocking socket whose buffers fill up
 * (the file's position must count exactly the bytes that left). The client is this same
 * program; only the port differs between two runs. */
#include "common.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define SIZE 200000
static unsigned char page[SIZE], got[SIZE];

static void make_file(void)
{
    for (int i = 0; i < SIZE; i++)
        page[i] = (unsigned char)(i * 7 + i / 251);
    int fd = open("page.bin", O_CREAT | O_TRUNC | O_WRONLY, 0644);
    if (fd < 0 || write(fd, page, SIZE) != SIZE || close(fd) != 0)
        exit(3);
}

/* Read exactly n bytes into got at `at`. */
static void recv_exact(int fd, size_t at, size_t n)
{
    while (n) {
        ssize_t r = read(fd, got + at, n);
        if (r <= 0)
            exit(4);
        at += (size_t)r;
        n -= (size_t)r;
    }
}

/* The server reads one request from the client. */
static void request(int client, int server, const char *what)
{
    char buf[32] = {0};
    if (write(client, what, strlen(what)) != (ssize_t)strlen(what) ||
        read(server, buf, sizeof buf - 1) != (ssize_t)strlen(what))
        exit(5);
}

/* A signal handler that sends the file's first 5 bytes with sendfile of its own. */
static int sig_sock = -1, sig_file = -1;

static void on_usr1(int sig)
{
    (void)sig;
    off_t at = 0;
    if (sendfile(sig_sock, sig_file, &at, 5) != 5)
        _exit(12);
}

static const char *same(size_t n)
{
    return memcmp(got, page, n) == 0 ? "yes" : "no";
}

static long position(int fd)
{
    return (long)lseek(fd, 0, SEEK_CUR);
}

static void connect_pair(int ls, const struct sockaddr_in *sa, int small, int *c, int *a)
{
    *c = socket(AF_INET, SOCK_STREAM, 0);
    int n = 4096;
    if (small && setsockopt(*c, SOL_SOCKET, SO_RCVBUF, &n, sizeof n) != 0)
        exit(6);
    if (connect(*c, (const struct sockaddr *)sa, sizeof *sa) != 0)
        exit(7);
    *a = accept(ls, NULL, NULL);
    if (*a < 0 || (small && setsockopt(*a, SOL_SOCKET, SO_SNDBUF, &n, sizeof n) != 0))
        exit(8);
}

/* Nonblocking sendfile until the socket takes no more (or the file ends); offp NULL uses
 * the file's position. The client then reads what was sent. */
static void fill(int c, int a, int fd, off_t *offp, const char *what)
{
    lseek(fd, 0, SEEK_SET);
    size_t sent = 0;
    ssize_t r;
    while (sent < SIZE && (r = sendfile(a, fd, offp, SIZE - sent)) > 0)
        sent += (size_t)r;
    long at = offp ? (long)*offp : position(fd);
    out("%s: offset equals bytes sent %s, file position %s\n", what,
        at == (long)sent ? "yes" : "no", offp && position(fd) == 0 ? "untouched" : "moved");
    recv_exact(c, 0, sent);
    out("%s: client got the file's first bytes %s\n", what, same(sent));
}

int main(int argc, char **argv)
{
    snippet_open(argc, argv);
    make_file();
    int fd = open("page.bin", O_RDONLY);
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    if (fd < 0 || bind(ls, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(ls, 4) != 0 ||
        getsockname(ls, (struct sockaddr *)&sa, &len) != 0)
        return 2;
    out("port %d\n", ntohs(sa.sin_port));
    int c, a;
    connect_pair(ls, &sa, 0, &c, &a);

    /* sendfile with an offset, as a raw system call (the trap's way in; the calls below
     * go through libc's symbols): the file's position stays */
    request(c, a, "GET offset");
    off_t off = 0;
    ssize_t r;
    while (off < SIZE && (r = syscall(SYS_sendfile, a, fd, &off, SIZE - (size_t)off)) > 0)
        recv_exact(c, (size_t)off - (size_t)r, (size_t)r);
    out("sendfile with an offset: offset %ld, file position %ld, client got the file %s\n",
        (long)off, position(fd), same(SIZE));
    r = sendfile(a, fd, &off, 100);
    out("sendfile at the end: %zd\n", r);

    /* sendfile from the file's position */
    request(c, a, "GET position");
    memset(got, 0, sizeof got);
    size_t sent = 0;
    while (sent < SIZE && (r = sendfile(a, fd, NULL, SIZE - sent)) > 0) {
        recv_exact(c, sent, (size_t)r);
        sent += (size_t)r;
    }
    out("sendfile from the position: sent %zu, file position %ld, client got the file %s\n",
        sent, position(fd), same(SIZE));

    /* splice: file -> pipe (with an offset, then from the position), pipe -> socket */
    request(c, a, "GET splice");
    memset(got, 0, sizeof got);
    int p[2];
    if (pipe(p) != 0)
        return 9;
    loff_t at = 0;
    lseek(fd, SIZE / 2, SEEK_SET);
    sent = 0;
    while (sent < SIZE) {
        loff_t *offp = sent < SIZE / 2 ? &at : NULL;
        size_t want = sent < SIZE / 2 ? SIZE / 2 - sent : SIZE - sent;
        ssize_t in = splice(fd, offp, p[1], NULL, want < 32768 ? want : 32768, 0);
        if (in <= 0)
            return 10;
        while (in > 0) {
            r = splice(p[0], NULL, a, NULL, (size_t)in, 0);
            if (r <= 0)
                return 11;
            recv_exact(c, sent, (size_t)r);
            sent += (size_t)r;
            in -= r;
        }
    }
    out("splice: sent %zu, offset %ld, file position %ld, client got the file %s\n", sent,
        (long)at, position(fd), same(SIZE));

    /* copy_file_range takes regular files only */
    errno = 0;
    r = copy_file_range(p[0], NULL, fd, NULL, 10, 0);
    out("copy_file_range from a pipe: %zd %s\n", r, errno == EINVAL ? "EINVAL" : "other");

    /* a handler's sendfile runs just before the program's (its signal is taken at the
     * program's next call): the program's bytes must not be the handler's */
    request(c, a, "GET signal");
    memset(got, 0, sizeof got);
    sig_sock = a;
    sig_file = fd;
    signal(SIGUSR1, on_usr1);
    lseek(fd, 100, SEEK_SET);
    kill(getpid(), SIGUSR1);
    r = sendfile(a, fd, NULL, 50);
    recv_exact(c, 0, 55);
    out("a handler's sendfile, then the program's: %zd, client got both %s\n", r,
        r == 50 && memcmp(got, page, 5) == 0 && memcmp(got + 5, page + 100, 50) == 0 ? "yes"
                                                                                 : "no");

    /* a nonblocking socket that fills up */
    int c2, a2;
    connect_pair(ls, &sa, 1, &c2, &a2);
    fcntl(a2, F_SETFL, O_NONBLOCK);
    fill(c2, a2, fd, NULL, "full socket, file position");
    off = 0;
    fill(c2, a2, fd, &off, "full socket, offset");
    close(c2);
    close(a2);
    close(c);
    close(a);
    close(ls);
    return 0;
}
