/* wrap_syscall.c -- the wrappers' entry for calls that reach the kernel without their
 * symbols: each system call mig_trap.c traps, by number, and the vDSO's clock entries.
 *
 * A trapped call of the app (libc's internal calls, a function reached through dlsym, a
 * raw syscall()) is
 *  - routed to the wrapper of the same call (read, close, getrandom, clock_gettime...):
 *    recorded and replayed exactly like a call through the symbol -- so this file calls
 *    the wrappers by their names, as the app would, and is a wrapper file: the core's
 *    rule that the real functions are reached only through mig_real (mig_poison.h) does
 *    not apply here;
 *  - emulated, when no wrapper has it: ioctl, fcntl and fstat on a recorded fd, futex
 *    under serialized threads, pause and sigsuspend;
 *  - run as it is from the shim's text when its result is decided by the app's own state
 *    (memory, regular files, its signal mask): the `passes` list;
 *  - or refused by name, with the library it came from, and the process stops.
 * No call falls through unclassified: a number in none of the lists is refused.
 *
 * Rules (those of mig_trap.c): runs inside the SIGSYS handler, which can interrupt libc
 * anywhere; its own system calls go through mig_sys; no allocation. */
#include "mig.h"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <linux/close_range.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include "mig_trap.h"

/* libc's convention (-1 and errno) back to the kernel's (-errno). */
static long kret_of(long r)
{
    return r == -1 ? -errno : r;
}

/* ------------------------------------------------------------ the vDSO
 *
 * Clock reads libc makes inside itself (timespec_get, clock(), its own uses of
 * clock_gettime) go through the vDSO, with no system call to trap: libc keeps the vDSO's
 * entry points in the dynamic loader's read-only data (_rtld_global_ro). The shim puts its
 * own entries there instead. Called from the app's code (the selector at BLOCK) an entry
 * runs the wrapper of the same call, which records it; called from the shim's (ALLOW:
 * the wrapper's real call comes back through libc to here) it runs the vDSO itself. */
/* The vDSO's functions, in the order of mig_divert_vdso's names. */
static void *vdso_real[4];
#define vdso_clock_gettime ((int (*)(clockid_t, struct timespec *))vdso_real[0])
#define vdso_gettimeofday ((int (*)(struct timeval *, void *))vdso_real[1])
#define vdso_time ((time_t(*)(time_t *))vdso_real[2])
#define vdso_clock_getres ((int (*)(clockid_t, struct timespec *))vdso_real[3])

/* The vDSO's convention is the kernel's: -errno on failure. */
static int on_vdso_clock_gettime(clockid_t clk, struct timespec *ts)
{
    if (mig_sel == MIG_SEL_ALLOW)
        return vdso_clock_gettime(clk, ts);
    return (int)kret_of(clock_gettime(clk, ts));
}

static int on_vdso_gettimeofday(struct timeval *tv, void *tz)
{
    if (mig_sel == MIG_SEL_ALLOW)
        return vdso_gettimeofday(tv, tz);
    return (int)kret_of(gettimeofday(tv, tz));
}

static time_t on_vdso_time(time_t *t)
{
    if (mig_sel == MIG_SEL_ALLOW)
        return vdso_time(t);
    return time(t);
}

static int on_vdso_clock_getres(clockid_t clk, struct timespec *res)
{
    if (mig_sel == MIG_SEL_ALLOW)
        return vdso_clock_getres(clk, res);
    return (int)kret_of(clock_getres(clk, res));
}

/* Put the shim's entries in place of the vDSO's in the loader's table. A libc or vDSO
 * that does not look as expected leaves it as it is, with a warning: clock reads inside
 * libc then go unrecorded (docs/interceptor.md). */
void mig_divert_vdso(void)
{
    void *vdso = dlopen("linux-vdso.so.1", RTLD_NOW | RTLD_NOLOAD);
    void *table = dlsym(RTLD_DEFAULT, "_rtld_global_ro");
    Dl_info info;
    const ElfW(Sym) *sym = NULL;
    if (!vdso || !table || !dladdr1(table, &info, (void **)&sym, RTLD_DL_SYMENT) || !sym ||
        sym->st_size < 8) {
        mig_warn("cannot reach the vDSO's entries in the loader: clock reads inside libc "
                 "are not recorded", NULL);
        return;
    }
    static const char *const names[] = {"__vdso_clock_gettime", "__vdso_gettimeofday",
                                         "__vdso_time", "__vdso_clock_getres"};
    void *const mine[] = {(void *)on_vdso_clock_gettime, (void *)on_vdso_gettimeofday,
                          (void *)on_vdso_time, (void *)on_vdso_clock_getres};
    for (int i = 0; i < 4; i++)
        vdso_real[i] = dlsym(vdso, names[i]);
    uintptr_t lo = (uintptr_t)table & ~(uintptr_t)4095;
    uintptr_t hi = ((uintptr_t)table + sym->st_size + 4095) & ~(uintptr_t)4095;
    if (mig_sys(SYS_mprotect, lo, hi - lo, PROT_READ | PROT_WRITE) != 0) {
        mig_warn("cannot divert the vDSO's entries: clock reads inside libc are not "
                 "recorded", NULL);
        return;
    }
    void **slot = table;
    for (size_t k = 0; k < sym->st_size / sizeof *slot; k++)
        for (int i = 0; i < 4; i++)
            if (vdso_real[i] && slot[k] == vdso_real[i])
                slot[k] = mine[i];
    mig_sys(SYS_mprotect, lo, hi - lo, PROT_READ);
}

static long on_rt_sigaction(const long *a)
{
    const struct k_sigaction *k = (const struct k_sigaction *)a[1];
    struct k_sigaction *ko = (struct k_sigaction *)a[2];
    if (a[3] != 8)
        return -EINVAL;
    struct sigaction act, old;
    if (k) {
        memset(&act, 0, sizeof act);
        act.sa_handler = (void (*)(int))k->handler;
        act.sa_flags = (int)(k->flags & ~(unsigned long)SA_RESTORER);
        memcpy(&act.sa_mask, &k->mask, sizeof k->mask);
    }
    if (sigaction((int)a[0], k ? &act : NULL, ko ? &old : NULL) != 0)
        return -errno;
    if (ko) {
        ko->handler = (void *)old.sa_handler;
        ko->flags = (unsigned long)old.sa_flags | SA_RESTORER;
        ko->restorer = mig_restore_rt;
        memcpy(&ko->mask, &old.sa_mask, sizeof ko->mask);
    }
    return 0;
}

/* ------------------------------------------------------------ serialized threads */

/* A call that may wait long for something outside the log (a yield, a file lock, a
 * signal): the token goes for its duration (mig_sched.c). */
static long without_token(long nr, const long *a)
{
    mig_sched_point();
    mig_sched_block();
    long r = mig_trap_raw(nr, a);
    mig_sched_resume();
    return r;
}

/* pause, sigsuspend and sigtimedwait: a wait for a signal, recorded as a SLEEP (args[0] 4:
 * pause, 5: sigsuspend, 6: rt_sigtimedwait) with its result: EINTR, or the signal taken
 * (sigwait, sigwaitinfo, sigtimedwait; EAGAIN at the timeout), with its siginfo as the
 * payload. A replica waits for that record in the shim -- so a checkpoint finds the
 * process at rest, as an nginx master waits between its signals -- and returns it (no
 * signal is pending there: the primary's came from outside or from a kill the replica
 * does not send); the handlers of the signals that ended a pause or sigsuspend run at the
 * process's next call, where the primary's ran too (wrap_signal.c defers them there).
 * SIGSYS stays deliverable during the wait, and neither it nor the preemption's signal
 * can be taken by sigtimedwait. */
static long on_sigwait(long nr, const long *a)
{
    struct mig_call c = {.kind = MIG_K_SLEEP,
                         .args = {nr == SYS_pause ? 4 : nr == SYS_rt_sigsuspend ? 5 : 6}};
    siginfo_t *info = nr == SYS_rt_sigtimedwait ? (siginfo_t *)a[1] : NULL;
    mig_sched_point();
    mig_busy++;
    if (mig_mode == MIG_REPLAY && mig_replay(&c, 1)) {
        long r = c.result < 0 ? -c.err : c.result;
        if (info && r > 0 && c.payload_len == sizeof *info)
            memcpy(info, c.payload, sizeof *info);
        mig_replay_done();
        mig_busy--;
        return r;
    }
    mig_sched_block();
    mig_busy--;
    long r;
    siginfo_t got;
    if (nr == SYS_rt_sigsuspend || nr == SYS_rt_sigtimedwait) {
        const long *set = (const long *)a[0];
        size_t size = (size_t)a[nr == SYS_rt_sigsuspend ? 1 : 3];
        uint64_t mask = set && size == 8 ? *(const uint64_t *)set & ~NEVER_BLOCKED : 0;
        if (size != 8)
            r = -EINVAL;
        else if (nr == SYS_rt_sigsuspend)
            r = mig_sys(SYS_rt_sigsuspend, set ? &mask : NULL, 8);
        else
            r = mig_sys(SYS_rt_sigtimedwait, set ? &mask : NULL, &got, a[2], 8);
    } else {
        r = mig_trap_raw(nr, a);
    }
    mig_busy++;
    c.result = r < 0 ? -1 : r;
    c.err = r < 0 ? (int)-r : 0;
    if (nr == SYS_rt_sigtimedwait && r > 0) {
        c.payload = &got;
        c.payload_len = sizeof got;
    }
    mig_record(&c);
    mig_busy--;
    if (info && r > 0)
        memcpy(info, &got, sizeof got);
    return r;
}

/* futex under serialized threads. A wait is a switch point: it waits without the token and
 * is recorded (FUTEX {op}) with its result once it has the token again; a replica takes
 * the result from the log at its turn and never waits in the kernel. Wakes and requeues
 * act for real on both hosts (a requeue moves waiters, WAKE_OP changes a word) and return
 * the recorded count. Priority-inheritance futexes are refused: the kernel hands their
 * ownership to a waiter of its choosing. */
static long on_futex(long nr, const long *a, const greg_t *g)
{
    if (!mig_serial_on)
        return mig_trap_raw(nr, a);
    int cmd = (int)a[1] & FUTEX_CMD_MASK;
    struct mig_call c = {.kind = MIG_K_FUTEX, .args = {cmd}};
    long r;
    switch (cmd) {
    case FUTEX_WAIT: case FUTEX_WAIT_BITSET:
        mig_sched_point();
        mig_busy++;
        if (mig_mode == MIG_REPLAY && mig_replay(&c, 1)) {
            /* the word is what it was when the primary's thread resumed: every write to it
             * was made under the token, in the log's order (a thread's id word, which the
             * kernel clears at its exit, is waited for by the next holder: mig_sched.c) */
            r = c.result < 0 ? -c.err : c.result;
            mig_replay_done();
            mig_busy--;
            return r;
        }
        mig_sched_block(); /* (in replay: the log ended just now, this thread is live) */
        r = mig_trap_raw(nr, a);
        break;
    case FUTEX_WAKE: case FUTEX_WAKE_BITSET: case FUTEX_REQUEUE: case FUTEX_CMP_REQUEUE:
    case FUTEX_WAKE_OP:
        mig_sched_point(); /* a recorded call, as a wrapper's (MIG_CHECK) */
        mig_busy++;
        r = mig_trap_raw(nr, a);
        if (mig_mode == MIG_REPLAY && mig_replay(&c, 1)) {
            r = c.result < 0 ? -c.err : c.result;
            mig_replay_done();
            mig_busy--;
            return r;
        }
        break;
    default:
        REFUSE("a priority-inheritance futex under serialized threads (docs/threads.md)");
    }
    c.result = r < 0 ? -1 : r;
    c.err = r < 0 ? (int)-r : 0;
    mig_record(&c);
    mig_busy--;
    return r;
}

/* ioctl on an fd whose I/O is recorded: performed on the primary and recorded with the
 * bytes it wrote back (FIONREAD's count, a terminal's settings and size...); a backup
 * returns those and performs nothing (its placeholder could not: an eventfd takes no
 * FIOASYNC), except FIONBIO, which it applies to the placeholder too, so the socket that
 * replaces it when the backup goes live is as the program set it. */
static uint32_t ioctl_out_size(unsigned long req)
{
    switch (req) {
    case FIONREAD: case TIOCOUTQ: case TIOCGPGRP: case TIOCGSID: case TIOCGETD:
    case TIOCMGET: case TIOCGSOFTCAR: case TIOCGPTN:
        return sizeof(int);
    case TCGETS:
        return 36; /* the kernel's struct termios */
    case TIOCGWINSZ:
        return sizeof(struct winsize);
    case FIONBIO: case FIOASYNC: case FIOCLEX: case FIONCLEX: case TCSETS: case TCSETSW:
    case TCSETSF: case TIOCSWINSZ: case TIOCSPGRP: case TIOCSCTTY: case TIOCNOTTY:
    case TCFLSH: case TCXONC: case TCSBRK: case TIOCMSET: case TIOCMBIS: case TIOCMBIC:
        return 0;
    }
    if (_IOC_TYPE(req) != 'T' && (_IOC_DIR(req) & _IOC_READ))
        return _IOC_SIZE(req);
    return 0;
}

/* A call on a recorded fd (args {a0, a1}) that writes at most `size` bytes to `buf`:
 * performed and recorded with those bytes (`size` of them, or as many as it returned when
 * `by_result`) on the primary, returned from the log on a backup, which performs nothing.
 * `made`, if not NULL: the call's result, made already (file_stat must see what it says). */
static long fd_call_made(enum mig_kind kind, long nr, const long *a, int64_t a0, int64_t a1,
                         void *buf, uint32_t size, int by_result, const long *made)
{
    struct mig_call c = {.kind = kind, .args = {a0, a1}};
    if (__builtin_expect(mig_serial_on, 0))
        mig_sched_point(); /* a recorded call, as a wrapper's (MIG_CHECK) */
    mig_busy++;
    if (mig_mode == MIG_REPLAY && mig_replay(&c, 2)) {
        mig_replay_fits(&c, size);
        if (c.result >= 0 && c.payload_len && buf)
            memcpy(buf, c.payload, c.payload_len);
        mig_replay_done();
    } else {
        long r = made ? *made : mig_trap_raw(nr, a);
        c.result = r < 0 ? -1 : r;
        c.err = r < 0 ? (int)-r : 0;
        c.payload = buf;
        c.payload_len = r < 0 || !buf ? 0 : by_result ? (uint32_t)r : size;
        mig_record(&c);
    }
    mig_busy--;
    return c.result < 0 ? -c.err : c.result;
}

static long fd_call(enum mig_kind kind, long nr, const long *a, int64_t a0, int64_t a1,
                    void *buf, uint32_t size, int by_result)
{
    return fd_call_made(kind, nr, a, a0, a1, buf, size, by_result, NULL);
}

/* getdents: the primary's entries, as many bytes as it returned (at most MIG_MAX_INPUT a
 * call: the kernel then gives fewer entries, as a smaller buffer gets), on a backup that
 * reads nothing -- of a directory of /proc, whose open was recorded (a backup has a
 * placeholder there), and of any other directory, which is an input (file_stat): a
 * replica's folder has other entries beside the app's files (a log of the operator's on
 * the primary), and a program that lists it makes a call per entry (CPython releases its
 * lock around each readdir). Not kept: where a backup's own fd of the directory stands,
 * so a listing the primary left half read when the backup goes live starts over. */
static long fd_getdents(long nr, const long *args)
{
    long a[6] = {args[0], args[1], args[2], args[3], args[4], args[5]};
    if ((unsigned long)a[2] > MIG_MAX_INPUT)
        a[2] = MIG_MAX_INPUT;
    return fd_call(MIG_K_GETDENTS, nr, a, a[0], a[2], (void *)a[1], (uint32_t)a[2], 1);
}

/* ioctl and fcntl: the buffer is their third argument. */
static long fd_control(enum mig_kind kind, long nr, const long *a, uint32_t size)
{
    return fd_call(kind, nr, a, a[0], a[1], (void *)a[2], size, 0);
}

/* fstat (or fstatat/statx with AT_EMPTY_PATH) of an fd whose I/O is recorded -- a socket,
 * a pipe, a host file: what it says is the primary's (a backup has a placeholder there,
 * whose size and block size differ, and stdio sizes its buffers by them). */
static long fd_stat(long nr, const long *a, int fd, void *buf, uint32_t size)
{
    return fd_call(MIG_K_FSTAT, nr, a, fd, nr, buf, size, 0);
}

/* stat of anything else, for real on every host; a regular file keeps the identity the
 * program first saw across a restore (mig_fileid.c).
 *
 * A directory is an input, though: what a stat says of it is the primary's, recorded as
 * FSTAT {the fd or dirfd, the call's number} with the bytes. Its contents are the app's
 * files, the same on every host, but not its mtime, size and inode: a replica's folder is
 * another (a copy, a restore), and on the primary other programs add files beside the
 * app's (an operator's log). A program that keeps a folder's mtime and lists the folder
 * again when it moved -- CPython's import system does, at each import it has not seen --
 * then made its calls on one host only, and a replica's threads went out of step. Each
 * host makes the stat for real first; only one that finds a directory takes the record,
 * so a folder that is a directory on one host and not on the other is a divergence at
 * the next record. */
static int stat_is_dir(long nr, const long *a)
{
    if (nr == SYS_statx) {
        const struct statx *sx = (const struct statx *)a[4];
        return (sx->stx_mask & STATX_TYPE) && S_ISDIR(sx->stx_mode);
    }
    const struct stat *st = (const struct stat *)(nr == SYS_newfstatat ? a[2] : a[1]);
    return S_ISDIR(st->st_mode);
}

static long file_stat(long nr, const long *a)
{
    long r = mig_trap_raw(nr, a);
    if (r != 0)
        return r;
    if (!stat_is_dir(nr, a)) {
        mig_fileid_fix(nr, a);
        return r;
    }
    int64_t at = nr == SYS_stat || nr == SYS_lstat ? AT_FDCWD : a[0];
    void *buf = (void *)(nr == SYS_statx ? a[4] : nr == SYS_newfstatat ? a[2] : a[1]);
    uint32_t size = nr == SYS_statx ? sizeof(struct statx) : sizeof(struct stat);
    return fd_call_made(MIG_K_FSTAT, nr, a, at, nr, buf, size, 0, &r);
}

static long fd_ioctl(long nr, const long *a)
{
    int replaying = mig_mode == MIG_REPLAY;
    long r = fd_control(MIG_K_IOCTL, nr, a, ioctl_out_size((unsigned long)a[1]));
    if (replaying && mig_mode == MIG_REPLAY && (unsigned long)a[1] == FIONBIO && r == 0)
        mig_trap_raw(nr, a);
    return r;
}

/* fcntl's signal-driven I/O commands on a recorded fd (F_SETOWN names a pid the program
 * took from getpid(), the primary's: a backup must not apply it) are recorded like an
 * ioctl, with the owner structure F_GETOWN_EX fills. Every other command acts for real on
 * both hosts (flags, duplicates, locks of the fd table the program shapes itself). */
static long fd_fcntl(long nr, const long *a)
{
    int cmd = (int)a[1];
    if (cmd != F_SETOWN && cmd != F_GETOWN && cmd != F_SETSIG && cmd != F_GETSIG &&
        cmd != F_SETOWN_EX && cmd != F_GETOWN_EX)
        return mig_trap_raw(nr, a);
    return fd_control(MIG_K_FCNTL, nr, a, cmd == F_GETOWN_EX ? sizeof(struct f_owner_ex) : 0);
}

/* System calls whose result the app's own state decides (its memory, its regular files,
 * its own ids and limits), or which only wait: run as they are. Waiting calls the app
 * makes through libc's symbols (futex aside) are wrapped; these come from inside libc. */
static int passes(long nr)
{
    switch (nr) {
    case SYS_mprotect: case SYS_munmap: case SYS_brk: case SYS_mremap: case SYS_msync:
    case SYS_mincore: case SYS_madvise: case SYS_mlock: case SYS_munlock: case SYS_mlockall:
    case SYS_munlockall: case SYS_mlock2: case SYS_membarrier: case SYS_pkey_mprotect:
    case SYS_statfs: case SYS_fstatfs:
    case SYS_pread64: case SYS_pwrite64:
    case SYS_preadv: case SYS_pwritev: case SYS_preadv2: case SYS_pwritev2:
    case SYS_access: case SYS_faccessat: case SYS_faccessat2: case SYS_readlink:
    case SYS_readlinkat: case SYS_getcwd: case SYS_chdir: case SYS_fchdir: case SYS_mkdir:
    case SYS_mkdirat: case SYS_rmdir: case SYS_rename: case SYS_renameat: case SYS_renameat2:
    case SYS_unlink: case SYS_unlinkat: case SYS_link: case SYS_linkat: case SYS_symlink:
    case SYS_symlinkat: case SYS_chmod: case SYS_fchmod: case SYS_fchmodat: case SYS_chown:
    case SYS_fchown: case SYS_lchown: case SYS_fchownat: case SYS_truncate:
    case SYS_ftruncate: case SYS_fsync: case SYS_fdatasync: case SYS_sync_file_range:
    case SYS_fallocate: case SYS_flock: case SYS_utimensat: case SYS_utimes: case SYS_umask:
    case SYS_getxattr: case SYS_lgetxattr:
    case SYS_fgetxattr: case SYS_listxattr: case SYS_flistxattr: case SYS_llistxattr:
    case SYS_setxattr: case SYS_lsetxattr: case SYS_fsetxattr: case SYS_removexattr:
    case SYS_lremovexattr: case SYS_fremovexattr: case SYS_utime: case SYS_futimesat:
    case SYS_fadvise64: case SYS_readahead: case SYS_sync: case SYS_syncfs:
    case SYS_dup: case SYS_memfd_create:
    case SYS_eventfd2: case SYS_eventfd: case SYS_epoll_create: case SYS_epoll_create1:
    case SYS_timerfd_create: case SYS_timerfd_settime: case SYS_timerfd_gettime:
    case SYS_signalfd: case SYS_signalfd4: case SYS_inotify_init: case SYS_inotify_init1:
    case SYS_inotify_add_watch: case SYS_inotify_rm_watch:
    case SYS_futex: case SYS_set_robust_list: case SYS_get_robust_list: case SYS_rseq:
    case SYS_set_tid_address: case SYS_arch_prctl: case SYS_sched_yield:
    case SYS_sched_getaffinity: case SYS_sched_setaffinity: case SYS_sched_getparam:
    case SYS_sched_setparam: case SYS_sched_getscheduler: case SYS_sched_setscheduler:
    case SYS_sched_getattr: case SYS_sched_setattr: case SYS_sched_get_priority_max:
    case SYS_sched_get_priority_min: case SYS_getpriority:
    case SYS_setpriority: case SYS_sigaltstack: case SYS_rt_sigpending:
    case SYS_rt_sigsuspend: case SYS_tgkill: case SYS_tkill: case SYS_rt_tgsigqueueinfo:
    case SYS_getuid: case SYS_geteuid: case SYS_getgid: case SYS_getegid: case SYS_getgroups:
    case SYS_getresuid: case SYS_getresgid: case SYS_setuid: case SYS_setgid:
    case SYS_setreuid: case SYS_setregid: case SYS_setresuid: case SYS_setresgid:
    case SYS_setgroups: case SYS_setfsuid: case SYS_setfsgid: case SYS_getpgid:
    case SYS_getpgrp: case SYS_getsid: case SYS_setsid: case SYS_setpgid: case SYS_capget:
    case SYS_capset: case SYS_prlimit64: case SYS_getrlimit: case SYS_setrlimit:
    case SYS_personality: case SYS_pipe: case SYS_pipe2:
    /* timers: their signals are recorded where they ran (wrap_signal.c) */
    case SYS_setitimer: case SYS_getitimer: case SYS_alarm: case SYS_timer_create:
    case SYS_timer_settime: case SYS_timer_gettime: case SYS_timer_getoverrun:
    case SYS_timer_delete: case SYS_pause: case SYS_restart_syscall: case SYS_mknod:
    case SYS_mknodat: case SYS_sched_rr_get_interval: case SYS_ioprio_get:
    case SYS_ioprio_set:
        return 1;
    }
    return 0;
}

MIG_TLS long mig_trap_nr;

static long dispatch(long nr, const long *a, ucontext_t *uc);

/* sendmmsg: each message a sendmsg of its own, recorded (and held, in output mode) as one:
 * the count sent, or the first message's error (glibc's resolver sends its A and AAAA
 * queries so). */
static long send_many(int fd, struct mmsghdr *v, unsigned n, int flags)
{
    unsigned i = 0;
    for (; i < n && i < UIO_MAXIOV; i++) {
        ssize_t r = sendmsg(fd, &v[i].msg_hdr, flags);
        if (r < 0)
            return i ? (long)i : -errno;
        v[i].msg_len = (unsigned)r;
    }
    return (long)i;
}

/* recvmmsg without a timeout: each message a recvmsg of its own, recorded as one; with
 * MSG_WAITFORONE those after the first do not wait. The count received, or the first
 * one's error (an error after that ends the count, as the kernel's does). */
static long recv_many(int fd, struct mmsghdr *v, unsigned n, int flags)
{
    unsigned i = 0;
    int one = flags & MSG_WAITFORONE;
    flags &= ~MSG_WAITFORONE;
    for (; i < n && i < UIO_MAXIOV; i++) {
        ssize_t r = recvmsg(fd, &v[i].msg_hdr, flags | (one && i ? MSG_DONTWAIT : 0));
        if (r < 0)
            return i ? (long)i : -errno;
        v[i].msg_len = (unsigned)r;
    }
    return (long)i;
}

long mig_trap_dispatch(long nr, const long *a, ucontext_t *uc)
{
    long outer = mig_trap_nr; /* (a call of a handler the shim runs inside one) */
    mig_trap_nr = nr;
    long r = dispatch(nr, a, uc);
    mig_trap_nr = outer;
    return r;
}

static long dispatch(long nr, const long *a, ucontext_t *uc)
{
    greg_t *g = uc->uc_mcontext.gregs;
    switch (nr) {
    /* input and output */
    case SYS_read: return kret_of(read((int)a[0], (void *)a[1], (size_t)a[2]));
    case SYS_write: return kret_of(write((int)a[0], (const void *)a[1], (size_t)a[2]));
    case SYS_readv: return kret_of(readv((int)a[0], (const struct iovec *)a[1], (int)a[2]));
    case SYS_writev: return kret_of(writev((int)a[0], (const struct iovec *)a[1], (int)a[2]));
    case SYS_close: return kret_of(close((int)a[0]));
    case SYS_recvfrom:
        return kret_of(recvfrom((int)a[0], (void *)a[1], (size_t)a[2], (int)a[3],
                             (struct sockaddr *)a[4], (socklen_t *)a[5]));
    case SYS_sendto:
        return kret_of(sendto((int)a[0], (const void *)a[1], (size_t)a[2], (int)a[3],
                           (const struct sockaddr *)a[4], (socklen_t)a[5]));
    case SYS_recvmsg: return kret_of(recvmsg((int)a[0], (struct msghdr *)a[1], (int)a[2]));
    case SYS_sendmsg: return kret_of(sendmsg((int)a[0], (const struct msghdr *)a[1], (int)a[2]));
    case SYS_sendmmsg:
        return send_many((int)a[0], (struct mmsghdr *)a[1], (unsigned)a[2], (int)a[3]);
    case SYS_recvmmsg:
        if (a[4])
            REFUSE("recvmmsg with a timeout, whose end is checked only between messages,"
                   " is not replayed (docs/interceptor.md)");
        return recv_many((int)a[0], (struct mmsghdr *)a[1], (unsigned)a[2], (int)a[3]);
    /* sockets */
    case SYS_socket: return kret_of(socket((int)a[0], (int)a[1], (int)a[2]));
    case SYS_socketpair: return kret_of(socketpair((int)a[0], (int)a[1], (int)a[2], (int *)a[3]));
    case SYS_bind:
        return kret_of(bind((int)a[0], (const struct sockaddr *)a[1], (socklen_t)a[2]));
    case SYS_listen: return kret_of(listen((int)a[0], (int)a[1]));
    case SYS_accept:
        return kret_of(accept((int)a[0], (struct sockaddr *)a[1], (socklen_t *)a[2]));
    case SYS_accept4:
        return kret_of(accept4((int)a[0], (struct sockaddr *)a[1], (socklen_t *)a[2], (int)a[3]));
    case SYS_connect:
        return kret_of(connect((int)a[0], (const struct sockaddr *)a[1], (socklen_t)a[2]));
    case SYS_getsockname:
        return kret_of(getsockname((int)a[0], (struct sockaddr *)a[1], (socklen_t *)a[2]));
    case SYS_getpeername:
        return kret_of(getpeername((int)a[0], (struct sockaddr *)a[1], (socklen_t *)a[2]));
    case SYS_getsockopt:
        return kret_of(getsockopt((int)a[0], (int)a[1], (int)a[2], (void *)a[3],
                               (socklen_t *)a[4]));
    case SYS_setsockopt:
        return kret_of(setsockopt((int)a[0], (int)a[1], (int)a[2], (const void *)a[3],
                               (socklen_t)a[4]));
    case SYS_shutdown: return kret_of(shutdown((int)a[0], (int)a[1]));
    /* readiness */
    case SYS_poll: return kret_of(poll((struct pollfd *)a[0], (nfds_t)a[1], (int)a[2]));
    case SYS_ppoll:
        return kret_of(ppoll((struct pollfd *)a[0], (nfds_t)a[1], (const struct timespec *)a[2],
                          (const sigset_t *)a[3]));
    case SYS_pselect6:
        return mig_trap_pselect6(a);
    case SYS_select:
        return kret_of(select((int)a[0], (fd_set *)a[1], (fd_set *)a[2], (fd_set *)a[3],
                           (struct timeval *)a[4]));
    case SYS_epoll_wait:
        return kret_of(epoll_wait((int)a[0], (struct epoll_event *)a[1], (int)a[2], (int)a[3]));
    case SYS_epoll_pwait:
        return kret_of(epoll_pwait((int)a[0], (struct epoll_event *)a[1], (int)a[2], (int)a[3],
                                (const sigset_t *)a[4]));
    case SYS_epoll_ctl:
        return kret_of(epoll_ctl((int)a[0], (int)a[1], (int)a[2], (struct epoll_event *)a[3]));
    /* clocks, waits, identity, randomness */
    case SYS_clock_gettime: return kret_of(clock_gettime((clockid_t)a[0], (struct timespec *)a[1]));
    case SYS_clock_getres: return kret_of(clock_getres((clockid_t)a[0], (struct timespec *)a[1]));
    case SYS_gettimeofday: return kret_of(gettimeofday((struct timeval *)a[0], (void *)a[1]));
    case SYS_time: return time((time_t *)a[0]);
    case SYS_nanosleep:
        return kret_of(nanosleep((const struct timespec *)a[0], (struct timespec *)a[1]));
    case SYS_clock_nanosleep:
        return -clock_nanosleep((clockid_t)a[0], (int)a[1], (const struct timespec *)a[2],
                                (struct timespec *)a[3]);
    case SYS_getrandom:
        return kret_of(getrandom((void *)a[0], (size_t)a[1], (unsigned)a[2]));
    case SYS_getpid: return getpid();
    case SYS_getppid: return getppid();
    case SYS_gettid: return gettid();
    case SYS_uname: return kret_of(uname((struct utsname *)a[0]));
    /* files */
    case SYS_open: return kret_of(open((const char *)a[0], (int)a[1], (mode_t)a[2]));
    case SYS_openat:
        return kret_of(openat((int)a[0], (const char *)a[1], (int)a[2], (mode_t)a[3]));
    case SYS_creat:
        return kret_of(open((const char *)a[0], O_CREAT | O_WRONLY | O_TRUNC, (mode_t)a[1]));
    case SYS_ioctl:
        return mig_fd_recorded((int)a[0]) ? fd_ioctl(nr, a) : mig_trap_raw(nr, a);
    case SYS_fcntl:
        return mig_fd_recorded((int)a[0]) ? fd_fcntl(nr, a) : mig_trap_raw(nr, a);
    case SYS_getdents64: case SYS_getdents: /* a directory is an input: file_stat */
        return fd_getdents(nr, a);
    case SYS_lseek: /* of a pipe, socket or device: the primary's answer (ESPIPE, mostly); a
                     * backup's placeholder, an eventfd, would say 0 (GNU head, which seeks
                     * back over what it read, then thinks its input a file) */
        return mig_fd_recorded((int)a[0]) ? fd_call(MIG_K_LSEEK, nr, a, a[0], a[2], NULL, 0, 0)
                                          : mig_trap_raw(nr, a);
    case SYS_stat: case SYS_lstat:
        return file_stat(nr, a);
    case SYS_fstat:
        if (mig_fd_recorded((int)a[0]))
            return fd_stat(nr, a, (int)a[0], (void *)a[1], sizeof(struct stat));
        return file_stat(nr, a);
    case SYS_newfstatat:
        if ((a[3] & AT_EMPTY_PATH) && a[1] && !*(const char *)a[1] &&
            mig_fd_recorded((int)a[0]))
            return fd_stat(nr, a, (int)a[0], (void *)a[2], sizeof(struct stat));
        return file_stat(nr, a);
    case SYS_statx:
        if ((a[2] & AT_EMPTY_PATH) && a[1] && !*(const char *)a[1] &&
            mig_fd_recorded((int)a[0]))
            return fd_stat(nr, a, (int)a[0], (void *)a[4], sizeof(struct statx));
        return file_stat(nr, a);
    case SYS_eventfd: case SYS_eventfd2: { /* made for real on every host */
        long fd = mig_trap_raw(nr, a);
        if (fd >= 0)
            mig_fd_made_wakeup((int)fd);
        return fd;
    }
    case SYS_close_range: { /* closed on every host: what the shim knew of them goes */
        long r = mig_trap_raw(nr, a);
        if (r == 0 && !((unsigned long)a[2] & CLOSE_RANGE_CLOEXEC))
            mig_fd_forget_range((unsigned)a[0], (unsigned)a[1]);
        return r;
    }
    case SYS_dup2: return kret_of(dup2((int)a[0], (int)a[1]));
    case SYS_dup3: return kret_of(dup3((int)a[0], (int)a[1], (int)a[2]));
    case SYS_mmap:
        if (((int)a[3] & MAP_SHARED) && !((int)a[3] & MAP_ANONYMOUS))
            return kret_of((long)mmap((void *)a[0], (size_t)a[1], (int)a[2], (int)a[3], (int)a[4],
                                   (off_t)a[5]));
        return mig_trap_raw(nr, a);
    /* processes and signals */
    case SYS_clone: case SYS_clone3: case SYS_fork: case SYS_vfork:
        return mig_trap_clone(nr, a, g);
    case SYS_execve:
        return kret_of(execve((const char *)a[0], (char *const *)a[1], (char *const *)a[2]));
    case SYS_waitid: return mig_waitid(a);
    case SYS_wait4:
        return kret_of(wait4((pid_t)a[0], (int *)a[1], (int)a[2], (struct rusage *)a[3]));
    case SYS_kill: return kret_of(kill((pid_t)a[0], (int)a[1]));
    case SYS_rt_sigaction: return on_rt_sigaction(a);
    case SYS_rt_sigprocmask: return mig_trap_sigprocmask(a, uc);
    case SYS_exit:
        /* a thread ends: its last unrecorded mutex acquisitions are said now, and the
         * token goes for good */
        mig_busy++;
        mig_quiet_flush();
        mig_copy_thread_exit();
        mig_busy--;
        mig_sched_exit();
        return mig_trap_raw(nr, a);
    case SYS_futex:
        return on_futex(nr, a, g);
    case SYS_futex_waitv:
        if (mig_serial_on)
            REFUSE("futex_waitv under serialized threads (docs/threads.md)");
        return mig_trap_raw(nr, a);
    case SYS_sched_yield: case SYS_flock:
        return mig_serial_on ? without_token(nr, a) : mig_trap_raw(nr, a);
    case SYS_pause: case SYS_rt_sigsuspend: case SYS_rt_sigtimedwait:
        return on_sigwait(nr, a);
    case SYS_exit_group:
        if (mig_mode == MIG_RECORD)
            mig_hold_flush();
        mig_sched_end();
        return mig_trap_raw(nr, a);
    case SYS_rt_sigreturn:
        REFUSE("a signal handler returned through a restorer "
                                          "the shim did not install");
    case SYS_prctl:
        if (a[0] == PR_SET_SYSCALL_USER_DISPATCH || a[0] == PR_SET_SECCOMP)
            REFUSE("the app cannot take system call dispatch "
                                              "over from the shim");
        return mig_trap_raw(nr, a);
    /* bytes moved between fds inside the kernel: a read and a write when a side is
     * recorded (wrap_io.c) */
    case SYS_sendfile:
        return kret_of(sendfile((int)a[0], (int)a[1], (off_t *)a[2], (size_t)a[3]));
    case SYS_splice:
        return kret_of(splice((int)a[0], (loff_t *)a[1], (int)a[2], (loff_t *)a[3],
                              (size_t)a[4], (unsigned)a[5]));
    case SYS_copy_file_range:
        return kret_of(copy_file_range((int)a[0], (loff_t *)a[1], (int)a[2], (loff_t *)a[3],
                                       (size_t)a[4], (unsigned)a[5]));
    case SYS_tee:
        /* tee takes two pipes: without one, the kernel says EINVAL */
        if (!mig_fd_recorded((int)a[0]) && !mig_fd_recorded((int)a[1]))
            return mig_trap_raw(nr, a);
        REFUSE("tee copies a pipe's bytes without consuming them, which no recorded read "
               "and write can do (docs/interceptor.md)");
    case SYS_pkey_alloc:
        /* memory protection keys depend on the CPU, which may differ between members: every
         * member answers as a host without them (ENOSPC), so a program that would use them
         * (V8 hardening its JIT code) takes the same path everywhere */
        return -ENOSPC;
    case SYS_pkey_free:
        return -EINVAL; /* no key was ever allocated */
    case SYS_sched_getaffinity: case SYS_sched_setaffinity: {
        long r; /* a serialized process's threads run on one CPU (mig_sched.c) */
        return mig_sched_affinity(nr, a, &r) ? r : mig_trap_raw(nr, a);
    }
    case SYS_sched_getscheduler: case SYS_sched_setscheduler: case SYS_sched_getattr:
    case SYS_sched_setattr: {
        long r; /* ... under SCHED_BATCH, which the app does not see (mig_sched.c) */
        return mig_sched_policy(nr, a, &r) ? r : mig_trap_raw(nr, a);
    }
    case SYS_getrusage: case SYS_sysinfo: case SYS_times: case SYS_getcpu:
        /* host facts the app may only report: passed, not recorded (docs/interceptor.md) */
        return mig_trap_raw(nr, a);
    }
    if (passes(nr))
        return mig_trap_raw(nr, a);
    REFUSE("not supported under mig (docs/interceptor.md)");
}
