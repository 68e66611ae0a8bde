/* mig_fdclass.c -- which fds have their I/O recorded: fd classes, cached per fd.
 *
 * A regular file or directory is the app's own state (restored with it from a checkpoint):
 * its reads and writes run for real on every host. Anything else -- a socket, a pipe, a
 * device -- is the outside world: its I/O is recorded, and replayed from the log. The
 * app's stdin pipe ([app] stdin = "topic", mig/member/stdin.py) is recorded too, and its reads
 * are counted in the ring's stdin_read. An eventfd is recorded too, but what is written to
 * it is no output to the outside: only the app's own threads and processes read it. */
#define MIG_CORE
#include "mig.h"

#include <sys/stat.h>
#include <sys/syscall.h>

#include "mig_poison.h"

/* 0: unknown, 1: recorded (socket, pipe, device...), 2: regular file or directory,
 * 3: recorded, and the app's stdin pipe (reads are counted in the ring's stdin_read),
 * 4: recorded, an anonymous inode (eventfd, timerfd, signalfd, epoll...). */
static unsigned char fd_class[65536];

int mig_fd_recorded(int fd)
{
    if (fd < 0 || fd >= (int)sizeof fd_class)
        return 1;
    if (fd_class[fd] == 0) {
        struct stat st;
        if (syscall(SYS_fstat, fd, &st) != 0)
            return 1; /* a bad fd: record the EBADF like any other result */
        if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))
            fd_class[fd] = 2;
        else if (S_ISFIFO(st.st_mode) && mig_ring && mig_ring->stdin_ino
                 && (uint64_t)st.st_ino == mig_ring->stdin_ino
                 && (uint64_t)st.st_dev == mig_ring->stdin_dev)
            fd_class[fd] = 3;
        else if ((st.st_mode & S_IFMT) == 0)
            fd_class[fd] = 4;
        else
            fd_class[fd] = 1;
    }
    return fd_class[fd] != 2;
}

/* Of the anonymous inodes only an eventfd takes writes: a write to one wakes a thread or
 * process of the app, and an output commit need not wait for it (the outputs its reader
 * makes after it wait for it, being later records). Checked again at each write, as the
 * class is cached and an fd number can be reused behind the shim's back (close_range). */
int mig_fd_wakeup(int fd)
{
    struct stat st;
    return fd >= 0 && fd < (int)sizeof fd_class && fd_class[fd] == 4 &&
           syscall(SYS_fstat, fd, &st) == 0 && (st.st_mode & S_IFMT) == 0;
}

void mig_stdin_count(int fd, int64_t result)
{
    if (result > 0 && fd >= 0 && fd < (int)sizeof fd_class && fd_class[fd] == 3 && mig_ring)
        __atomic_fetch_add(&mig_ring->stdin_read, (uint64_t)result, __ATOMIC_RELAXED);
}

void mig_fd_forget(int fd)
{
    if (fd >= 0 && fd < (int)sizeof fd_class)
        fd_class[fd] = 0;
}

void mig_fd_mark(int fd, int recorded)
{
    if (fd >= 0 && fd < (int)sizeof fd_class)
        fd_class[fd] = recorded ? 1 : 2;
}
