/* affinity.c -- what a threaded program sees of its CPUs and its scheduling policy. It
 * starts a thread, then counts how many CPUs sched_getaffinity gives it and its thread,
 * and says which policy sched_getscheduler gives it, and sched_getattr (a raw system call,
 * as chrt makes it); sets its policy to SCHED_OTHER with sched_setattr and says the
 * result; then, as "A/P", how many CPUs
 * /proc/self/status says it may run on (Cpus_allowed_list: where it really runs) and the
 * kernel's policy of the thread (/proc/thread-self/stat: what it really runs under), for
 * itself, a child it forks, a program it starts by fork and exec, and one it starts by
 * posix_spawn; then it execs itself, and the new program prints it all with its own.
 * Natively all are the machine's count and SCHED_OTHER (0); under mig with serialized
 * threads the process runs on one CPU under SCHED_BATCH (allowed=1/3) and still sees its
 * count and SCHED_OTHER, and the programs it starts, its forked child and the program it
 * becomes get every CPU and SCHED_OTHER back.
 *
 * usage: affinity   prints "affinity mask=N thread=N policy=P attr_policy=P setattr=R
 *                   allowed=A/P
 *                   child_allowed=C/P exec_allowed=E/P spawn_allowed=S/P after_exec=X/P"
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* the kernel's struct sched_attr (glibc 2.36 declares no wrapper) */
struct attr {
    uint32_t size, policy;
    uint64_t flags;
    int32_t nice;
    uint32_t priority;
    uint64_t runtime, deadline, period;
};

static int attr_policy(void)
{
    struct attr a = {0};
    return syscall(SYS_sched_getattr, 0, &a, sizeof a, 0) == 0 ? (int)a.policy : -1;
}

/* SCHED_OTHER at nice 0, as sched_setattr sets it */
static long set_other(void)
{
    struct attr a = {.size = sizeof a, .policy = SCHED_OTHER};
    return syscall(SYS_sched_setattr, 0, &a, 0);
}

static int mask_count(void)
{
    cpu_set_t set;
    return sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : -1;
}

/* CPUs in Cpus_allowed_list ("0-1", "0,2-3", "1") */
static int allowed(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[512];
    int n = -1;
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "Cpus_allowed_list:", 18) != 0)
            continue;
        n = 0;
        for (char *p = line + 18; *p && *p != '\n';) {
            while (*p == ' ' || *p == '\t' || *p == ',')
                p++;
            if (!*p || *p == '\n')
                break;
            long lo = strtol(p, &p, 10), hi = lo;
            if (*p == '-')
                hi = strtol(p + 1, &p, 10);
            n += (int)(hi - lo + 1);
        }
    }
    if (f)
        fclose(f);
    return n;
}

/* The kernel's policy of this thread: field 41 of its stat. */
static int kernel_policy(void)
{
    FILE *f = fopen("/proc/thread-self/stat", "r");
    char line[1024];
    int policy = -1;
    if (f && fgets(line, sizeof line, f)) {
        char *p = strrchr(line, ')');
        for (int field = 2; p && field < 41; field++)
            p = strchr(p + 1, ' ');
        if (p)
            policy = atoi(p + 1);
    }
    if (f)
        fclose(f);
    return policy;
}

/* "allowed/policy" */
static void where(char *out, size_t size)
{
    snprintf(out, size, "%d/%d", allowed(), kernel_policy());
}

static int thread_count;

static void *worker(void *arg)
{
    (void)arg;
    thread_count = mask_count();
    return NULL;
}

extern char **environ;

/* Runs this program again as "affinity allowed" with its stdout on a pipe, started by fork
 * and execv (spawn 0) or by posix_spawn (spawn 1): how many CPUs it may run on, and its
 * policy ("A/P", in out). */
static void started_where(const char *self, int spawn, char *out, size_t size)
{
    snprintf(out, size, "-1");
    int fds[2];
    char *args[] = {(char *)"affinity", (char *)"allowed", NULL};
    pid_t pid = -1;
    if (pipe(fds) != 0)
        return;
    if (spawn) {
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
        if (posix_spawn(&pid, self, &fa, NULL, args, environ) != 0)
            pid = -1;
        posix_spawn_file_actions_destroy(&fa);
    } else if ((pid = fork()) == 0) {
        dup2(fds[1], 1);
        execv(self, args);
        _exit(127);
    }
    close(fds[1]);
    char buf[32] = {0};
    ssize_t n = pid > 0 ? read(fds[0], buf, sizeof buf - 1) : -1;
    close(fds[0]);
    if (pid > 0)
        waitpid(pid, NULL, 0);
    if (n > 0)
        snprintf(out, size, "%.*s", (int)strcspn(buf, "\n"), buf);
}

int main(int argc, char **argv)
{
    char here[32], child_at[32] = "-1", exec_at[32], spawn_at[32];
    if (argc == 2 && strcmp(argv[1], "allowed") == 0) {
        where(here, sizeof here);
        printf("%s\n", here);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "exec") == 0) {
        where(here, sizeof here);
        printf("%s after_exec=%s\n", argv[2], here);
        return 0;
    }
    pthread_t t;
    if (pthread_create(&t, NULL, worker, NULL) != 0 || pthread_join(t, NULL) != 0)
        return 1;
    int fds[2];
    if (pipe(fds) != 0)
        return 1;
    pid_t child = fork();
    if (child == 0) {
        where(child_at, sizeof child_at);
        if (write(fds[1], child_at, sizeof child_at) != (ssize_t)sizeof child_at)
            _exit(1);
        _exit(0);
    }
    if (child < 0 || read(fds[0], child_at, sizeof child_at) != sizeof child_at)
        return 1;
    waitpid(child, NULL, 0);
    where(here, sizeof here);
    started_where("/proc/self/exe", 0, exec_at, sizeof exec_at);
    started_where("/proc/self/exe", 1, spawn_at, sizeof spawn_at);
    int policy = sched_getscheduler(0), by_attr = attr_policy();
    long set = set_other();
    char line[256];
    snprintf(line, sizeof line, "affinity mask=%d thread=%d policy=%d attr_policy=%d"
             " setattr=%ld allowed=%s child_allowed=%s exec_allowed=%s spawn_allowed=%s",
             mask_count(), thread_count, policy, by_attr, set, here, child_at, exec_at,
             spawn_at);
    char *args[] = {(char *)"affinity", (char *)"exec", line, NULL};
    execv("/proc/self/exe", args);
    return 1;
}
