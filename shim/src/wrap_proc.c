/* wrap_proc.c -- processes: fork, vfork, posix_spawn(p), the exec family, waitpid, wait4,
 * wait, kill, dup2, dup3. On a backup kill() sends nothing: the target's log says when
 * its handler ran, and a child a signal killed is killed when its parent's wait replays.
 *
 * A child gets the logical id parent.N (N counts this process's children), its own ring,
 * and the shim. On a backup children are forked for real (each replays its own log) but
 * the app sees the primary's pids; waits reap the real child and return the recorded
 * status. exec keeps the process's logical id and ring, so its log simply continues. */
#include "mig.h"

#include <fcntl.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* Recorded pid -> real pid of this process's children on a backup. */
static struct { pid_t recorded, real; } kids[1024];
/* Real pid -> logical id of this process's forked children (on every host): whose ring. */
static struct { pid_t real; char lpid[64]; } forked[1024];
static unsigned forked_next;

static void forked_child(pid_t real, const char *lpid)
{
    unsigned i = forked_next++ % (sizeof forked / sizeof forked[0]);
    size_t n = strlen(lpid);
    if (n >= sizeof forked[i].lpid)
        return;
    forked[i].real = real;
    memcpy(forked[i].lpid, lpid, n + 1);
}

/* The ring file of a forked child (its lpid.ring in MIG_RUN_DIR), opened read-only: -1 when
 * the child is not one this process forked. */
static int child_ring(pid_t real)
{
    char path[640];
    for (unsigned i = 0; i < sizeof forked / sizeof forked[0]; i++)
        if (forked[i].real == real && forked[i].lpid[0])
            return mig_ring_path(forked[i].lpid, path, sizeof path) != 0
                       ? -1 : (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
    return -1;
}

static uint64_t ring_word(int fd, size_t offset)
{
    uint64_t v = 0;
    if (syscall(SYS_pread64, fd, &v, sizeof v, offset) != (long)sizeof v)
        return 0;
    return v;
}

/* A child a signal killed on the primary made records until then, and its log just stops
 * there. Its parent's wait says how many (the child ring's next_seq): a backup lets its
 * child take them all (what it does with regular files, its held outputs) before it ends
 * it the same way, instead of ending it wherever its replay had got to. */
#define TAKEN_SEQ_AT offsetof(struct mig_ring_hdr, taken_seq)
#define NEXT_SEQ_AT offsetof(struct mig_ring_hdr, next_seq)
#define COMMITTED_SEQ_AT offsetof(struct mig_ring_hdr, committed_seq)
#define PID_AT offsetof(struct mig_ring_hdr, pid) /* (and state, above it) */

/* How many of its records a dead child's log holds for sure: the agent drains its ring
 * after its death, so the parent waits (at most 2 s) until all it made are committed, and
 * says only what is (a backup must never wait for records that will not come: the primary
 * may die before the agent drained the rest). */
static uint64_t final_seq_of(pid_t real)
{
    int fd = child_ring(real);
    if (fd < 0)
        return 0;
    uint64_t made = ring_word(fd, NEXT_SEQ_AT), sure = ring_word(fd, COMMITTED_SEQ_AT);
    for (int ms = 0; sure < made && ms < 2000; ms++) {
        struct timespec pause = {0, 1000000};
        syscall(SYS_nanosleep, &pause, NULL);
        sure = ring_word(fd, COMMITTED_SEQ_AT);
    }
    syscall(SYS_close, fd);
    return sure < made ? sure : made;
}

static void await_child_records(pid_t real, uint64_t final)
{
    int fd = -1, st;
    uint64_t seen = 0;
    long idle_ms = 0;
    while (idle_ms < 10000) { /* a child that takes nothing for 10 s is ended as it is */
        if (fd < 0) { /* the child makes its ring when it starts, maybe not yet */
            fd = child_ring(real);
            if (fd >= 0 && (pid_t)(ring_word(fd, PID_AT) & 0xffffffffu) != real) {
                syscall(SYS_close, fd); /* an older process's ring of that lpid */
                fd = -1;
            }
        }
        uint64_t taken = fd >= 0 ? ring_word(fd, TAKEN_SEQ_AT) : 0;
        if (taken >= final || mig_real.waitpid(real, &st, WNOHANG) != 0)
            break;
        idle_ms = taken == seen ? idle_ms + 1 : 0;
        seen = taken;
        struct timespec ms = {0, 1000000};
        syscall(SYS_nanosleep, &ms, NULL);
    }
    if (fd >= 0)
        syscall(SYS_close, fd);
}

static void remember(pid_t recorded, pid_t real)
{
    for (int i = 0; i < 1024; i++)
        if (kids[i].recorded == 0 || kids[i].recorded == recorded) {
            kids[i].recorded = recorded;
            kids[i].real = real;
            return;
        }
}

static pid_t real_pid_of(pid_t recorded)
{
    for (int i = 0; i < 1024; i++)
        if (kids[i].recorded == recorded)
            return kids[i].real;
    return recorded;
}

static pid_t recorded_pid_of(pid_t real)
{
    for (int i = 0; i < 1024 && kids[i].recorded; i++)
        if (kids[i].real == real)
            return kids[i].recorded;
    return real;
}

static long real_fork(void *unused)
{
    (void)unused;
    return mig_real.fork();
}

void mig_remember_child(pid_t recorded, pid_t real)
{
    remember(recorded, real);
}

/* A fork, recorded; `make` makes it (libc's fork, or the trapped clone: mig_clone.c) and
 * returns -1 with errno on failure. */
pid_t mig_fork_call(long (*make)(void *), void *ctx);
pid_t mig_fork_call(long (*make)(void *), void *ctx)
{
    char child[64];
    struct mig_call c = {.kind = MIG_K_FORK};
    mig_busy++;
    mig_fd_shared(); /* the child holds this process's eventfds too */
    mig_next_child_lpid(child, sizeof child);
    if (mig_mode == MIG_REPLAY && mig_replay(&c, 0)) {
        mig_replay_done();
        if (c.result > 0) {
            pid_t real = (pid_t)make(ctx);
            if (real == 0) {
                mig_child_identity((pid_t)c.result);
                mig_child_after_fork(child);
                mig_busy--;
                return 0;
            }
            remember((pid_t)c.result, real);
            if (real > 0)
                forked_child(real, child);
        }
    } else {
        pid_t r = (pid_t)make(ctx);
        if (r == 0) {
            mig_child_after_fork(child);
            mig_busy--;
            return 0;
        }
        if (r > 0)
            forked_child(r, child);
        c.result = r;
        c.err = r < 0 ? errno : 0;
        mig_record(&c);
    }
    mig_busy--;
    if (c.err)
        errno = c.err;
    return (pid_t)c.result;
}

MIG_EXPORT pid_t fork(void)
{
    MIG_ENTER(mig_real.fork());
    return mig_fork_call(real_fork, NULL);
}

MIG_EXPORT pid_t vfork(void)
{
    return fork(); /* a fork is a valid vfork, and the child needs its own shim state */
}

static int spawn_call(int search, pid_t *pid, const char *file, const void *actions,
                      const void *attr, char *const argv[], char *const envp[])
{
    int (*real)(pid_t *, const char *, const void *, const void *, char *const[],
                char *const[]) = search ? mig_real.posix_spawnp : mig_real.posix_spawn;
    char child[64];
    struct mig_call c = {.kind = MIG_K_SPAWN};
    mig_busy++;
    mig_fd_shared(); /* the program started may hold this process's eventfds */
    mig_next_child_lpid(child, sizeof child);
    char *const *env = mig_exec_env(envp, child, 0);
    pid_t real_pid = 0;
    if (mig_mode == MIG_REPLAY && mig_replay(&c, 0)) {
        mig_replay_done();
        if (c.result == 0 && c.payload_len == sizeof(pid_t)) {
            pid_t recorded;
            memcpy(&recorded, c.payload, sizeof recorded);
            mig_sched_unpin(); /* the child inherits the calling thread's mask */
            if (real(&real_pid, file, actions, attr, argv, env) == 0)
                remember(recorded, real_pid);
            mig_sched_repin();
            if (pid)
                *pid = recorded;
        }
    } else {
        mig_sched_unpin();
        c.result = real(&real_pid, file, actions, attr, argv, env);
        mig_sched_repin();
        c.payload = &real_pid;
        c.payload_len = c.result == 0 ? sizeof real_pid : 0;
        mig_record(&c);
        if (pid && c.result == 0)
            *pid = real_pid;
    }
    mig_busy--;
    return (int)c.result; /* posix_spawn returns an error number, errno untouched */
}

MIG_EXPORT int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                           const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    MIG_ENTER(mig_real.posix_spawn(pid, path, fa, attr, argv, envp));
    return spawn_call(0, pid, path, fa, attr, argv, envp);
}

MIG_EXPORT int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
                            const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    MIG_ENTER(mig_real.posix_spawnp(pid, file, fa, attr, argv, envp));
    return spawn_call(1, pid, file, fa, attr, argv, envp);
}

/* exec: record it (a backup compares the program's argv[0] hash), then exec for real on
 * both hosts with mig kept in the environment. The record is made before the exec (which
 * replaces the process when it succeeds) and says "exec'd"; an exec that fails makes a
 * second EXEC record with its error, which a backup, whose exec of the same path failed
 * too, returns: a program that tries exec on each folder of PATH in turn (CPython's
 * subprocess, execvp) fails the same way on every host. */
static int exec_call(const char *path, char *const argv[], char *const envp[])
{
    struct mig_call c = {.kind = MIG_K_EXEC,
                         .args = {(int64_t)mig_hash(path, strlen(path), 0)}};
    mig_busy++;
    char *const *env = mig_exec_env(envp, mig_lpid(), 1);
    if (mig_mode == MIG_REPLAY && mig_replay(&c, 1)) {
        mig_replay_done();
        if (c.result != 0) { /* (the first record says 0; any other is returned as it is) */
            mig_busy--;
            errno = c.err;
            return -1;
        }
    } else {
        c.result = 0;
        mig_record(&c);
        mig_hold_flush();
        mig_output_barrier();
    }
    mig_busy--;
    mig_sched_unpin();
    int r = mig_real.execve(path, argv, env);
    int e = errno;
    mig_sched_repin();
    mig_busy++;
    struct mig_call fail = {.kind = MIG_K_EXEC, .args = {c.args[0]}};
    if (mig_mode == MIG_REPLAY && mig_replay(&fail, 1)) {
        mig_replay_done();
    } else {
        fail.result = r;
        fail.err = e;
        mig_record(&fail);
    }
    mig_busy--;
    errno = fail.err;
    return -1;
}

MIG_EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
    MIG_ENTER(mig_real.execve(path, argv, envp));
    return exec_call(path, argv, envp);
}

MIG_EXPORT int execv(const char *path, char *const argv[])
{
    return execve(path, argv, environ);
}

/* Resolve `file` on PATH like execvp, then exec it with envp. */
static int exec_search(const char *file, char *const argv[], char *const envp[])
{
    if (strchr(file, '/'))
        return execve(file, argv, envp);
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/local/bin:/usr/bin:/bin";
    char full[1024];
    int saved = ENOENT;
    while (*path) {
        const char *end = strchr(path, ':');
        size_t n = end ? (size_t)(end - path) : strlen(path);
        size_t f = strlen(file);
        if (n + 1 + f + 1 <= sizeof full) {
            memcpy(full, path, n);
            full[n] = '/';
            memcpy(full + n + 1, file, f + 1);
            if (access(full, X_OK) == 0) {
                execve(full, argv, envp);
                saved = errno;
            }
        }
        path += n + (end ? 1 : 0);
    }
    errno = saved;
    return -1;
}

MIG_EXPORT int execvp(const char *file, char *const argv[])
{
    return exec_search(file, argv, environ);
}

MIG_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
    return exec_search(file, argv, envp);
}

#define MIG_MAX_ARGS 1024
static char *collect_args(const char *first, va_list ap, char **argv, char ***envp_out)
{
    int n = 0;
    argv[n++] = (char *)first;
    char *a;
    while ((a = va_arg(ap, char *)) != NULL && n < MIG_MAX_ARGS - 1)
        argv[n++] = a;
    argv[n] = NULL;
    if (envp_out)
        *envp_out = va_arg(ap, char **);
    return argv[0];
}

MIG_EXPORT int execl(const char *path, const char *arg, ...)
{
    static char *argv[MIG_MAX_ARGS];
    va_list ap;
    va_start(ap, arg);
    collect_args(arg, ap, argv, NULL);
    va_end(ap);
    return execve(path, argv, environ);
}

MIG_EXPORT int execlp(const char *file, const char *arg, ...)
{
    static char *argv[MIG_MAX_ARGS];
    va_list ap;
    va_start(ap, arg);
    collect_args(arg, ap, argv, NULL);
    va_end(ap);
    return exec_search(file, argv, environ);
}

MIG_EXPORT int execle(const char *path, const char *arg, ...)
{
    static char *argv[MIG_MAX_ARGS];
    char **envp;
    va_list ap;
    va_start(ap, arg);
    collect_args(arg, ap, argv, &envp);
    va_end(ap);
    return execve(path, argv, envp);
}

/* Replay: the wait of a child the primary's reaped. The child replays its own log to its
 * end; if the primary's child was killed by a signal, its log just stops: end the
 * replaying child the same way, once it took every record the primary's made
 * (final_seq_of, 0: not known), then reap it. */
static void reap_replayed(pid_t recorded, int killed, uint64_t final_seq)
{
    pid_t real = real_pid_of(recorded);
    int real_st;
    if (killed) {
        if (final_seq)
            await_child_records(real, final_seq);
        mig_real.kill(real, SIGKILL);
    }
    mig_real.waitpid(real, &real_st, 0);
}

/* waits: payload = the status int. A backup reaps the real child, returns the record. */
static pid_t wait_call(pid_t pid, int *status, int options, struct rusage *ru)
{
    struct mig_call c = {.kind = MIG_K_WAIT, .args = {pid, options}};
    int st = 0;
    struct { int32_t status, pad; uint64_t final_seq; } ended = {0, 0, 0};
    mig_busy++;
    if (mig_mode == MIG_REPLAY && mig_replay(&c, 2)) {
        if (c.payload_len >= sizeof st && c.payload_len <= sizeof ended)
            memcpy(&ended, c.payload, c.payload_len);
        st = ended.status;
        mig_replay_done();
        if (c.result > 0)
            reap_replayed((pid_t)c.result, WIFSIGNALED(st), ended.final_seq);
        if (ru)
            memset(ru, 0, sizeof *ru);
    } else {
        mig_busy--;
        pid_t want = pid > 0 ? real_pid_of(pid) : pid; /* see kill() */
        mig_sched_block();
        c.result = ru ? mig_real.wait4(want, &st, options, ru) : mig_real.waitpid(want, &st, options);
        c.err = c.result < 0 ? errno : 0;
        ended.status = st;
        if (c.result > 0 && WIFSIGNALED(st))
            ended.final_seq = final_seq_of((pid_t)c.result);
        if (c.result > 0)
            c.result = recorded_pid_of((pid_t)c.result);
        mig_busy++;
        c.payload = &ended;
        c.payload_len = c.result <= 0 ? 0 : ended.final_seq ? sizeof ended : sizeof st;
        mig_record(&c);
    }
    mig_busy--;
    if (status && c.result > 0)
        *status = st;
    if (c.err)
        errno = c.err;
    return (pid_t)c.result;
}

/* waitid (trapped: glibc's waitid, Python's os.waitid, the JVM's wait for a process):
 * WAIT {id, options, 1 + idtype}, its payload the siginfo (the primary's pid of the child
 * in it) and, for a child a signal killed, the count of its records, as wait_call's. A
 * backup copies it out and reaps its real child (reap_replayed), unless WNOWAIT left it
 * waitable (a later wait reaps it). The kernel's convention: 0 or -errno. */
long mig_waitid(const long *a)
{
    int idtype = (int)a[0], options = (int)a[3];
    siginfo_t *infop = (siginfo_t *)a[2];
    struct mig_call c = {.kind = MIG_K_WAIT, .args = {a[1], options, 1 + idtype}};
    struct { siginfo_t si; uint64_t final_seq; } got;
    memset(&got, 0, sizeof got);
    mig_busy++;
    if (mig_mode == MIG_REPLAY && mig_replay(&c, 3)) {
        if (c.payload_len >= sizeof got.si && c.payload_len <= sizeof got)
            memcpy(&got, c.payload, c.payload_len);
        mig_replay_done();
        int code = got.si.si_code;
        if (c.result == 0 && got.si.si_pid > 0 && !(options & WNOWAIT) &&
            (code == CLD_EXITED || code == CLD_KILLED || code == CLD_DUMPED))
            reap_replayed(got.si.si_pid, code != CLD_EXITED, got.final_seq);
        if (a[4])
            memset((void *)a[4], 0, sizeof(struct rusage));
    } else {
        mig_busy--;
        long id = a[1];
        if ((idtype == P_PID || idtype == P_PGID) && id > 0)
            id = real_pid_of((pid_t)id); /* see kill() */
        mig_sched_block();
        long r = syscall(SYS_waitid, idtype, id, &got.si, options, a[4]);
        c.result = r < 0 ? -1 : 0;
        c.err = r < 0 ? errno : 0;
        if (r == 0 && got.si.si_pid > 0) {
            pid_t real = got.si.si_pid;
            if (got.si.si_code == CLD_KILLED || got.si.si_code == CLD_DUMPED)
                got.final_seq = final_seq_of(real);
            got.si.si_pid = recorded_pid_of(real);
        }
        mig_busy++;
        c.payload = &got;
        c.payload_len = r != 0 || got.si.si_pid <= 0 ? 0
                        : got.final_seq ? sizeof got : sizeof got.si;
        mig_record(&c);
    }
    mig_busy--;
    if (infop && c.result == 0)
        memcpy(infop, &got.si, sizeof got.si);
    return c.result < 0 ? -c.err : 0;
}

MIG_EXPORT pid_t waitpid(pid_t pid, int *status, int options)
{
    MIG_ENTER(mig_real.waitpid(pid, status, options));
    return wait_call(pid, status, options, NULL);
}

MIG_EXPORT pid_t wait4(pid_t pid, int *status, int options, struct rusage *ru)
{
    MIG_ENTER(mig_real.wait4(pid, status, options, ru));
    return wait_call(pid, status, options, ru);
}

MIG_EXPORT pid_t wait(int *status)
{
    return waitpid(-1, status, 0);
}

MIG_EXPORT int kill(pid_t pid, int sig)
{
    MIG_ENTER(mig_real.kill(pid, sig));
    struct mig_call c = {.kind = MIG_K_KILL, .args = {pid, sig}};
    mig_busy++;
    if (mig_mode == MIG_REPLAY && mig_replay(&c, 2)) {
        /* nothing is sent for real: a replaying target runs its handler where its own log
         * says, and a target the signal killed is ended when its parent's wait replays */
        mig_replay_done();
    } else {
        /* after going live the app still names its children by the primary's pids */
        c.result = mig_real.kill(pid > 0 ? real_pid_of(pid) : pid, sig);
        c.err = c.result < 0 ? errno : 0;
        mig_record(&c);
    }
    mig_busy--;
    if (c.err)
        errno = c.err;
    return (int)c.result;
}

/* dup2 and dup3 close newfd first: held bytes of what it was still leave, through the
 * duplicate, which is then closed (else the file stays open behind the app's back: a
 * pipe's reader waited for an EOF after a shell's `echo hi >&$fd`). */
MIG_EXPORT int dup2(int oldfd, int newfd)
{
    MIG_GATE;
    if (oldfd != newfd && syscall(SYS_fcntl, oldfd, F_GETFD) >= 0)
        mig_hold_close(newfd);
    int r = mig_real.dup2(oldfd, newfd);
    if (r >= 0) {
        mig_fd_forget(newfd);
        mig_track_dup(oldfd, newfd);
    } /* newfd may have been another kind of file */
    return r;
}

MIG_EXPORT int dup3(int oldfd, int newfd, int flags)
{
    MIG_GATE;
    if (oldfd != newfd && syscall(SYS_fcntl, oldfd, F_GETFD) >= 0)
        mig_hold_close(newfd);
    int r = mig_real.dup3(oldfd, newfd, flags);
    if (r >= 0) {
        mig_fd_forget(newfd);
        mig_track_dup(oldfd, newfd);
    }
    return r;
}

/* _exit skips destructors: release held outputs first (the app's last replies). */
MIG_EXPORT void _exit(int status)
{
    MIG_GATE;
    if (mig_mode == MIG_RECORD)
        mig_hold_flush();
    if (mig_mode == MIG_RECORD || mig_mode == MIG_REPLAY)
        mig_sched_end();
    mig_real._exit(status);
    __builtin_unreachable();
}

MIG_EXPORT void _Exit(int status)
{
    _exit(status);
}
