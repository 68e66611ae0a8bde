/* mig_fileid.c -- a regular file keeps its identity (st_dev, st_ino) across a restore.
 *
 * A program may remember which file it has open by device and inode and compare later:
 * sqlite checks, before each write transaction, that the path of its database still
 * names the file it has open, and turns read-only ("attempt to write a readonly
 * database") when it does not. A checkpoint restores the app's files as copies, on
 * another host: the same paths, other inode numbers. So the stat family (stat, lstat,
 * fstat, newfstatat, statx: all trapped, mig_trap.c) reports a regular file by the
 * identity it had when the program first saw it:
 *  - the first time a (device, inode) is seen, it is its own identity, and the table
 *    notes it with a path that names the file (the fd's /proc link, or the path asked
 *    for, made absolute);
 *  - after a restore (mig_fileid_restored, once per process), each noted path is looked
 *    at again, and the new (device, inode) found there answers with the old identity.
 * A fresh run therefore sees the kernel's own numbers. Not kept: a file not stat'ed
 * before the checkpoint (it gets its new numbers), one whose path was removed or renamed
 * before the restore, and more than MIG_FILEIDS files.
 *
 * Rules: called from the SIGSYS handler; system calls only through mig_sys, no libc
 * function that could hold a lock, no allocation. */
#define MIG_CORE
#include "mig.h"

#include <fcntl.h>
#include <linux/stat.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>

#include "mig_poison.h"

#define MIG_FILEIDS 512
#define FILEID_PATH 256

struct fileid {
    uint64_t dev, ino;         /* as the kernel reports the file now (0, 0: free) */
    uint64_t vdev, vino;       /* as the program first saw it */
    char path[FILEID_PATH];    /* "" when none fits */
};

static struct fileid ids[MIG_FILEIDS];
static int nids;
static int ids_lock;
static uint32_t remapped_gen;

/* Bounded: a signal handler of the app that stats while its thread holds the lock must
 * not spin forever; that stat then shows the kernel's numbers. */
static int lock_ids(void)
{
    for (int i = 0; i < 1000; i++) {
        if (!__atomic_exchange_n(&ids_lock, 1, __ATOMIC_ACQUIRE))
            return 1;
        mig_sys(SYS_sched_yield);
    }
    return 0;
}

static void unlock_ids(void)
{
    __atomic_store_n(&ids_lock, 0, __ATOMIC_RELEASE);
}

static size_t slen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

/* What /proc says fd names, into out (FILEID_PATH bytes); 0 when it does not fit. */
static int fd_path(int fd, char *out)
{
    char link[32] = "/proc/self/fd/";
    char *p = link + 14;
    char digits[12];
    int n = 0;
    unsigned v = (unsigned)fd;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v && n < 11);
    while (n)
        *p++ = digits[--n];
    *p = 0;
    long r = mig_sys(SYS_readlinkat, AT_FDCWD, link, out, FILEID_PATH - 1);
    if (r <= 0 || r >= FILEID_PATH - 1 || out[0] != '/')
        return 0;
    out[r] = 0;
    return 1;
}

/* A path naming the file `path` relative to dirfd names, made absolute, into out. */
static int full_path(int dirfd, const char *path, char *out)
{
    size_t plen = slen(path);
    if (path[0] == '/') {
        if (plen >= FILEID_PATH)
            return 0;
        memcpy(out, path, plen + 1);
        return 1;
    }
    if (dirfd == AT_FDCWD) {
        long r = mig_sys(SYS_getcwd, out, FILEID_PATH);
        if (r <= 0)
            return 0;
    } else if (!fd_path(dirfd, out)) {
        return 0;
    }
    size_t blen = slen(out);
    if (blen + 1 + plen >= FILEID_PATH)
        return 0;
    out[blen] = '/';
    memcpy(out + blen + 1, path, plen + 1);
    return 1;
}

/* The program's identity of the file the kernel calls (dev, ino), noting it (and a path
 * to it: fd >= 0, or dirfd + path) the first time. */
static void identity(uint64_t *dev, uint64_t *ino, int fd, int dirfd, const char *path)
{
    if (!lock_ids())
        return;
    for (int i = 0; i < nids; i++) {
        if (ids[i].dev == *dev && ids[i].ino == *ino) {
            *dev = ids[i].vdev;
            *ino = ids[i].vino;
            unlock_ids();
            return;
        }
    }
    if (nids < MIG_FILEIDS) {
        struct fileid *e = &ids[nids];
        int named = fd >= 0 ? fd_path(fd, e->path) : full_path(dirfd, path, e->path);
        if (!named)
            e->path[0] = 0;
        e->dev = e->vdev = *dev;
        e->ino = e->vino = *ino;
        nids++;
    }
    unlock_ids();
}

void mig_fileid_fix(long nr, const long *a)
{
    if (nr == SYS_statx) {
        struct statx *sx = (struct statx *)a[4];
        if (!sx || !(sx->stx_mask & STATX_INO) || !S_ISREG(sx->stx_mode))
            return;
        uint64_t dev = makedev(sx->stx_dev_major, sx->stx_dev_minor), ino = sx->stx_ino;
        const char *path = (const char *)a[1];
        int by_fd = (a[2] & AT_EMPTY_PATH) && path && !*path;
        identity(&dev, &ino, by_fd ? (int)a[0] : -1, (int)a[0], path);
        sx->stx_dev_major = major(dev);
        sx->stx_dev_minor = minor(dev);
        sx->stx_ino = ino;
        return;
    }
    struct stat *st;
    int fd = -1, dirfd = AT_FDCWD;
    const char *path = NULL;
    if (nr == SYS_stat || nr == SYS_lstat) {
        path = (const char *)a[0];
        st = (struct stat *)a[1];
    } else if (nr == SYS_fstat) {
        fd = (int)a[0];
        st = (struct stat *)a[1];
    } else if (nr == SYS_newfstatat) {
        dirfd = (int)a[0];
        path = (const char *)a[1];
        st = (struct stat *)a[2];
        if ((a[3] & AT_EMPTY_PATH) && path && !*path)
            fd = dirfd;
    } else {
        return;
    }
    if (!st || !S_ISREG(st->st_mode) || (fd < 0 && !path))
        return;
    uint64_t dev = st->st_dev, ino = st->st_ino;
    identity(&dev, &ino, fd, dirfd, path);
    st->st_dev = dev;
    st->st_ino = ino;
}

void mig_fileid_restored(uint32_t gen)
{
    if (__atomic_load_n(&remapped_gen, __ATOMIC_ACQUIRE) == gen || !lock_ids())
        return;
    if (remapped_gen != gen) {
        for (int i = 0; i < nids; i++) {
            struct stat st;
            if (ids[i].path[0] && mig_sys(SYS_newfstatat, AT_FDCWD, ids[i].path, &st, 0) == 0
                && S_ISREG(st.st_mode)) {
                ids[i].dev = st.st_dev;
                ids[i].ino = st.st_ino;
            } else {
                ids[i].dev = ids[i].ino = ~0ull; /* gone: matches no file */
            }
        }
        __atomic_store_n(&remapped_gen, gen, __ATOMIC_RELEASE);
    }
    unlock_ids();
}
