/* mig_proc.c -- processes: this process's logical id, its children's, what a forked child
 * starts again, and the environment exec and spawn pass on so that mig stays loaded.
 *
 * A logical id is stable across hosts: the first process is "1", its children "1.1",
 * "1.2" in fork order, theirs "1.1.1". It names the process's ring (mig_start.c) and keys
 * its records in the log. */
#define MIG_CORE
#include "mig.h"

#include <stdlib.h>
#include <string.h>

#include "mig_poison.h"

static char my_lpid[64] = "1";
static unsigned children;    /* fork/spawn count of this process: names the next child */

const char *mig_lpid(void)
{
    return my_lpid;
}

void mig_set_lpid(const char *lpid)
{
    if (lpid && *lpid && strlen(lpid) < sizeof my_lpid)
        memcpy(my_lpid, lpid, strlen(lpid) + 1);
}

void mig_next_child_lpid(char *out, size_t size)
{
    char num[16];
    char *end = mig_put_uint(num, ++children);
    size_t l = strlen(my_lpid), n = (size_t)(end - num);
    if (l + 1 + n + 1 > size)
        mig_die("logical process id too long (fork depth)");
    memcpy(out, my_lpid, l);
    out[l] = '.';
    memcpy(out + l + 1, num, n);
    out[l + 1 + n] = 0;
}

void mig_child_after_fork(const char *child_lpid)
{
    /* The parent's ring stays the parent's: unmap it untouched, make our own. */
    char parent[64];
    memcpy(parent, my_lpid, sizeof parent);
    mig_ring_detach();
    children = 0;
    mig_replay_after_fork();
    mig_tid = 0;     /* the forking thread is the child's first thread */
    mig_threads = 0;
    mig_quiet = 0;
    mig_thread_ids_after_fork();
    mig_sched_after_fork();
    mig_patch_after_fork();
    memcpy(my_lpid, child_lpid, strlen(child_lpid) + 1);
    mig_hold_after_fork();
    mig_ring_attach(parent);
    mig_trap_arm(); /* arming is not inherited */
}

/* Environment for exec/spawn: the app's envp with mig's variables set (static storage:
 * exec replaces the process; spawn copies it before returning). */
static char *env_slots[4096];
static char env_text[5][640];

/* The variables that name a process: replaced, never inherited. */
static int is_mig_var(const char *entry)
{
    static const char *const names[] = {"MIG_LPID=", "MIG_EXEC=", "MIG_PARENT_LPID=",
                                        "MIG_MODE=", NULL};
    for (int i = 0; names[i]; i++)
        if (strncmp(entry, names[i], strlen(names[i])) == 0)
            return 1;
    return 0;
}

static char *env_entry(int slot, const char *name, const char *value)
{
    size_t n = strlen(name), v = strlen(value);
    if (n + v + 2 > sizeof env_text[slot])
        mig_die("environment entry too long");
    memcpy(env_text[slot], name, n);
    env_text[slot][n] = '=';
    memcpy(env_text[slot] + n + 1, value, v + 1);
    return env_text[slot];
}

char *const *mig_exec_env(char *const envp[], const char *lpid, int same_process)
{
    size_t k = 0;
    for (size_t i = 0; envp && envp[i] && k < 4096 - 16; i++)
        if (!is_mig_var(envp[i]))
            env_slots[k++] = envp[i];
    /* the app may have dropped mig's variables: put the essential ones back */
    static char preload[700], dir[600], barrier[32];
    const char *keep[][2] = {{"LD_PRELOAD", preload}, {"MIG_RUN_DIR", dir},
                             {"MIG_BARRIER", barrier}};
    for (int j = 0; j < 3; j++) {
        size_t n = strlen(keep[j][0]);
        int found = 0;
        for (size_t i = 0; i < k; i++)
            if (strncmp(env_slots[i], keep[j][0], n) == 0 && env_slots[i][n] == '=')
                found = 1;
        const char *value = getenv(keep[j][0]);
        if (!found && value && strlen(value) + n + 2 < 600) {
            char *dst = (char *)keep[j][1];
            memcpy(dst, keep[j][0], n);
            dst[n] = '=';
            memcpy(dst + n + 1, value, strlen(value) + 1);
            env_slots[k++] = dst;
        }
    }
    /* a process that went live records: what it execs or spawns records too */
    static const char *const modes[] = {"off", "record", "replay", "live"};
    env_slots[k++] = env_entry(3, "MIG_MODE", modes[mig_mode]);
    env_slots[k++] = env_entry(0, "MIG_LPID", lpid);
    env_slots[k++] = env_entry(1, "MIG_EXEC", same_process ? "1" : "0");
    env_slots[k++] = env_entry(2, "MIG_PARENT_LPID", same_process ? "" : my_lpid);
    env_slots[k] = NULL;
    return env_slots;
}
