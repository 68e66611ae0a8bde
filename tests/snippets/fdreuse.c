/* fdreuse.c -- close_range frees fd numbers behind the shim's wrappers: a regular file
 * (whose reads run for real on every host, unrecorded) closed by close_range, then a pipe
 * made by a raw pipe2 at the same number. The pipe's reads are the outside world's
 * kind: they must be recorded, not taken for the file's. 1000 rounds through the pipe. */
#include "common.h"
#include <fcntl.h>
#include <sys/syscall.h>
#include <time.h>

int main(int argc, char **argv)
{
    snippet_open(argc, argv);
    int file = open(argv[0], O_RDONLY);
    char head[16];
    if (file < 0 || read(file, head, sizeof head) != (ssize_t)sizeof head)
        return 3;
    if (syscall(SYS_close_range, file, file, 0) != 0)
        return 4;
    int fds[2];
    if (syscall(SYS_pipe2, fds, 0) != 0)
        return 5;
    long sum = 0;
    for (int i = 0; i < 1000; i++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int v = (int)(ts.tv_nsec % 1000), got = -1;
        if (write(fds[1], &v, sizeof v) != (ssize_t)sizeof v
            || read(fds[0], &got, sizeof got) != (ssize_t)sizeof got || got != v)
            return 6;
        sum += got;
    }
    out("pipe at the file's number: %s, sum %ld\n", fds[0] == file ? "yes" : "no", sum);
    return 0;
}
