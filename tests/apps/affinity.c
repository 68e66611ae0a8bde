/* affinity.c -- what a threaded program sees of its CPUs. It starts a thread, then counts
 * how many CPUs sched_getaffinity gives it and its thread, how many /proc/self/status says
 * it may run on (Cpus_allowed_list: where it really runs), and the same for a child it
 * forks, a program it starts by fork and exec, and one it starts by posix_spawn; then it
 * execs itself, and the new program prints it all with where it runs itself. Natively all
 * are the machine's count; under mig with serialized threads the process runs on one CPU
 * (allowed=1) and still sees its count, and the programs it starts, its forked child and
 * the program it becomes get every CPU back.
 *
 * usage: affinity   prints "affinity mask=N thread=N allowed=A child_allowed=C
 *                   exec_allowed=E spawn_allowed=S after_exec=X"
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

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

static int thread_count;

static void *worker(void *arg)
{
    (void)arg;
    thread_count = mask_count();
    return NULL;
}

extern char **environ;

/* Runs this program again as "affinity allowed" with its stdout on a pipe, started by fork
 * and execv (spawn 0) or by posix_spawn (spawn 1): how many CPUs it may run on. */
static int started_allowed(const char *self, int spawn)
{
    int fds[2];
    char *args[] = {(char *)"affinity", (char *)"allowed", NULL};
    pid_t pid = -1;
    if (pipe(fds) != 0)
        return -1;
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
    return n > 0 ? atoi(buf) : -1;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "allowed") == 0) {
        printf("%d\n", allowed());
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "exec") == 0) {
        printf("%s after_exec=%d\n", argv[2], allowed());
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
        int n = allowed();
        if (write(fds[1], &n, sizeof n) != (ssize_t)sizeof n)
            _exit(1);
        _exit(0);
    }
    int child_allowed = -1;
    if (child < 0 || read(fds[0], &child_allowed, sizeof child_allowed) != sizeof child_allowed)
        return 1;
    waitpid(child, NULL, 0);
    char line[256];
    snprintf(line, sizeof line, "affinity mask=%d thread=%d allowed=%d child_allowed=%d"
             " exec_allowed=%d spawn_allowed=%d", mask_count(), thread_count, allowed(),
             child_allowed, started_allowed("/proc/self/exe", 0),
             started_allowed("/proc/self/exe", 1));
    char *args[] = {(char *)"affinity", (char *)"exec", line, NULL};
    execv("/proc/self/exe", args);
    return 1;
}
