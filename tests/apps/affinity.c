/* affinity.c -- what a threaded program sees of its CPUs. It starts a thread, then prints
 * how many CPUs sched_getaffinity gives it and its thread, how many /proc/self/status says
 * it may run on (Cpus_allowed_list: where it really runs), and the same for a child it
 * forks. Natively all are the machine's count; under mig with serialized threads the
 * process runs on one CPU (allowed=1) and still sees its count, and its child gets every
 * CPU back.
 *
 * usage: affinity   prints "affinity mask=N thread=N allowed=A child_allowed=C"
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
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

int main(void)
{
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
    printf("affinity mask=%d thread=%d allowed=%d child_allowed=%d\n", mask_count(),
           thread_count, allowed(), child_allowed);
    return 0;
}
