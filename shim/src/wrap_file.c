/* wrap_file.c -- files whose content is the host's, not the app's: open/openat of /proc
 * and /sys (recorded like sockets: the open's result and every read), and memory shared
 * with programs outside the app (MAP_SHARED of a file, SysV and POSIX shared memory),
 * which no log can capture: the shim warns, naming the mapping.
 * Other files are opened for real on both hosts and not recorded. */
#include "mig.h"

#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <unistd.h>

static int host_path(const char *path)
{
    return path && (strncmp(path, "/proc/", 6) == 0 || strncmp(path, "/sys/", 5) == 0);
}

/* open of a host file: the primary records the fd it got; a backup puts a placeholder
 * there, so later reads and closes replay the primary's. */
static int host_open(int dirfd, const char *path, int flags, mode_t mode)
{
    struct mig_call c = {.kind = MIG_K_PROC_READ,
                         .args = {(int64_t)mig_hash(path, strlen(path), 0), flags}};
    mig_busy++;
    if (mig_mode == MIG_REPLAY && mig_replay(&c, 2)) {
        mig_replay_done();
        if (c.result >= 0)
            mig_placeholder_at(c.result, (flags & O_CLOEXEC) ? SOCK_CLOEXEC : 0);
    } else {
        c.result = mig_sys(SYS_openat, dirfd, path, flags, mode);
        c.err = c.result < 0 ? (int)-c.result : 0;
        if (c.result < 0)
            c.result = -1;
        else
            mig_fd_mark((int)c.result, 1);
        mig_record(&c);
    }
    mig_busy--;
    if (c.err)
        errno = c.err;
    return (int)c.result;
}

static int after_open(int fd)
{
    if (fd >= 0)
        mig_fd_forget(fd); /* a new file at this number: classify it afresh */
    return fd;
}

#define MIG_OPEN_MODE(flags, mode)                                                          \
    do {                                                                                    \
        if ((flags) & (O_CREAT | O_TMPFILE)) {                                              \
            va_list ap;                                                                     \
            va_start(ap, flags);                                                            \
            mode = va_arg(ap, mode_t);                                                      \
            va_end(ap);                                                                     \
        }                                                                                   \
    } while (0)

/* open, open64, openat and openat64 all end here: on 64-bit Linux they are the same
 * system call, so the real openat serves the four. */
static int open_call(int dirfd, const char *path, int flags, mode_t mode)
{
    MIG_ENTER(after_open(mig_real.openat(dirfd, path, flags, mode)));
    if (host_path(path))
        return host_open(dirfd, path, flags, mode);
    return after_open(mig_real.openat(dirfd, path, flags, mode));
}

MIG_EXPORT int open(const char *path, int flags, ...)
{
    mode_t mode = 0;
    MIG_OPEN_MODE(flags, mode);
    return open_call(AT_FDCWD, path, flags, mode);
}

MIG_EXPORT int open64(const char *path, int flags, ...)
{
    mode_t mode = 0;
    MIG_OPEN_MODE(flags, mode);
    return open_call(AT_FDCWD, path, flags, mode);
}

MIG_EXPORT int openat(int dirfd, const char *path, int flags, ...)
{
    mode_t mode = 0;
    MIG_OPEN_MODE(flags, mode);
    return open_call(dirfd, path, flags, mode);
}

MIG_EXPORT int openat64(int dirfd, const char *path, int flags, ...)
{
    mode_t mode = 0;
    MIG_OPEN_MODE(flags, mode);
    return open_call(dirfd, path, flags, mode);
}

static void warn_shared_file(int fd)
{
    char link[32] = "/proc/self/fd/", target[512];
    char *p = link + 14;
    int n = fd, digits = 1;
    while (n >= 10) {
        n /= 10;
        digits++;
    }
    for (int i = digits - 1, v = fd; i >= 0; i--, v /= 10)
        p[i] = (char)('0' + v % 10);
    p[digits] = 0;
    long len = syscall(SYS_readlink, link, target, sizeof target - 1);
    target[len > 0 ? len : 0] = 0;
    mig_warn("MAP_SHARED mapping of ", len > 0 ? target : "an unknown file");
    mig_warn("  a backup cannot replay what another program writes there", NULL);
}

MIG_EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    MIG_GATE;
    if ((flags & MAP_SHARED) && !(flags & MAP_ANONYMOUS) && fd >= 0 && !mig_busy &&
        (mig_mode == MIG_RECORD || mig_mode == MIG_REPLAY) && (prot & PROT_WRITE))
        warn_shared_file(fd);
    return mig_real.mmap(addr, len, prot, flags, fd, off);
}

MIG_EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    return mmap(addr, len, prot, flags, fd, off);
}

MIG_EXPORT int shmget(key_t key, size_t size, int flags)
{
    MIG_GATE;
    if (mig_mode == MIG_RECORD || mig_mode == MIG_REPLAY)
        mig_warn("SysV shared memory (shmget): a backup cannot replay what other programs"
                 " write there", NULL);
    return mig_real.shmget(key, size, flags);
}

MIG_EXPORT int shm_open(const char *name, int flags, mode_t mode)
{
    MIG_GATE;
    if (mig_mode == MIG_RECORD || mig_mode == MIG_REPLAY)
        mig_warn("POSIX shared memory: a backup cannot replay what other programs write to ",
                 name);
    return mig_real.shm_open(name, flags, mode);
}
