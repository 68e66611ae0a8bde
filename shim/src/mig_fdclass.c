/* mig_fdclass.c -- which fds have their I/O recorded: fd classes, cached per fd.
 *
 * A regular file or directory is the app's own state (restored with it from a checkpoint):
 * its reads and writes run for real on every host. Anything else -- a socket, a pipe, a
 * device -- is the outside world: its I/O is recorded, and replayed from the log. The
 * app's stdin pipe ([app] stdin = "topic", mig/member/stdin.py) is recorded too, and its reads
 * are counted in the ring's stdin_read. An eventfd is recorded too, but while only the
 * process that made it holds it, what is written to it is no output to the outside: only
 * that process's threads read it; so is a pipe or socketpair the process made, while it
 * holds both ends alone (a self-pipe). */
#define MIG_CORE
#include "mig.h"

#include <sys/stat.h>
#include <sys/syscall.h>

#include "mig_poison.h"

/* 0: unknown, 1: recorded (socket, pipe, device...), 2: regular file or directory,
 * 3: recorded, and the app's stdin pipe (reads are counted in the ring's stdin_read),
 * 4: recorded, an eventfd, pipe or socketpair this process made and no other process holds
 *    (mig_fd_shared). */
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
        else
            fd_class[fd] = 1;
    }
    return fd_class[fd] != 2;
}

/* A write to an eventfd, pipe or socketpair only this process holds (it made it, and no
 * other process has had the chance to take an end since) wakes one of its own threads, and
 * an output commit need not wait for it: what the reader does after the wake is recorded
 * after it, in the same ring, so the reader's outputs wait for it anyway. Once another
 * process may hold it (a fork, a spawn, fds sent), its reader's outputs would not wait for
 * this process's records: its writes are outputs again. The fd's type is checked again at
 * each write (an anonymous inode, a pipe or a socket), as a cached class could outlive its
 * file behind the shim's back. */
void mig_fd_made_wakeup(int fd)
{
    if (fd >= 0 && fd < (int)sizeof fd_class)
        fd_class[fd] = 4;
}

void mig_fd_shared(void)
{
    for (size_t fd = 0; fd < sizeof fd_class; fd++)
        if (fd_class[fd] == 4)
            fd_class[fd] = 1;
}

int mig_fd_wakeup(int fd)
{
    struct stat st;
    if (fd < 0 || fd >= (int)sizeof fd_class || fd_class[fd] != 4 ||
        syscall(SYS_fstat, fd, &st) != 0)
        return 0;
    return (st.st_mode & S_IFMT) == 0 || S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode);
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

void mig_fd_forget_range(unsigned first, unsigned last)
{
    for (unsigned fd = first; fd <= last && fd < sizeof fd_class; fd++)
        fd_class[fd] = 0;
}

void mig_fd_mark(int fd, int recorded)
{
    if (fd >= 0 && fd < (int)sizeof fd_class)
        fd_class[fd] = recorded ? 1 : 2;
}
