/* patched.c -- system calls libc makes inside itself, over and over, at sites the shim
 * patches (shim/src/mig_patch.c): first, alone, twelve child processes made by a raw
 * syscall() of clone, then as many raw syscall()s of getrandom as
 * there will be turns; then two threads taking turns through a mutex and a condition
 * variable (libc's futex calls), each turn a raw getrandom. Between the two, the one case
 * a patch must not break: a thread blocked in the kernel inside libc's read (the shim's
 * wrapper calls it) while another thread's call of the same read, reached through libc's
 * own handle, traps there and gets the site patched. Last, twelve threads, one after the
 * other. The child processes and threads start right after their clone's syscall, whose
 * site may have been patched meanwhile: they must start in its stub instead.
 * Arguments: the output file, the number of turns (2000), and `threads-first` to make the
 * twelve threads first, before anything is written: clone3's site is then patched when
 * the shim starts its release thread of held outputs at the first write. */
#include "common.h"
#include <dlfcn.h>
#include <pthread.h>
#include <string.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int turn, rounds;
static unsigned long mix = 1469598103934665603ul;
static int blocked[2];
static char got[16];

static void stir(void)
{
    unsigned char b[8];
    if (syscall(SYS_getrandom, b, sizeof b, 0) != (long)sizeof b)
        exit(4);
    for (int i = 0; i < 8; i++)
        mix = (mix ^ b[i]) * 1099511628211ul;
}

static void take_turns(int me)
{
    for (int i = 0; i < rounds; i++) {
        pthread_mutex_lock(&mu);
        while (turn != me)
            pthread_cond_wait(&cv, &mu);
        stir();
        turn = !me;
        pthread_cond_signal(&cv);
        pthread_mutex_unlock(&mu);
    }
}

static void *other(void *unused)
{
    (void)unused;
    take_turns(1);
    return NULL;
}

static void *stirring(void *unused)
{
    (void)unused;
    stir();
    return NULL;
}

static void *reader(void *unused)
{
    (void)unused;
    if (read(blocked[0], got, sizeof got - 1) <= 0)
        exit(5);
    return NULL;
}

static void twelve_threads(void)
{
    pthread_t t;
    for (int i = 0; i < 12; i++) { /* clone3's site traps again and again */
        pthread_create(&t, NULL, stirring, NULL);
        pthread_join(t, NULL);
    }
}

int main(int argc, char **argv)
{
    snippet_open(argc, argv);
    rounds = argc > 2 ? atoi(argv[2]) : 2000;
    int threads_first = argc > 3 && strcmp(argv[3], "threads-first") == 0;
    if (threads_first)
        twelve_threads();
    for (int i = 0; i < 12; i++) { /* raw clones of a child process: the site traps */
        long pid = syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
        if (pid == 0)
            syscall(SYS_exit_group, 0);
        int status = -1;
        if (pid < 0 || waitpid((pid_t)pid, &status, 0) != pid || status != 0)
            return 8;
    }
    for (int i = 0; i < rounds; i++) /* (a process of one thread) */
        stir();
    int ready[2];
    if (pipe(blocked) || pipe(ready))
        return 3;
    pthread_t r, t;
    pthread_create(&r, NULL, reader, NULL);
    struct timespec nap = {0, 100000000};
    nanosleep(&nap, NULL); /* the reader waits inside libc's read */
    void *libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD); /* (RTLD_NEXT: the shim's) */
    ssize_t (*libc_read)(int, void *, size_t) =
        libc ? (ssize_t(*)(int, void *, size_t))dlsym(libc, "read") : NULL;
    char c = 0;
    for (int i = 0; i < 16; i++) /* (a site is patched once it trapped a few times) */
        if (!libc_read || write(ready[1], "x", 1) != 1 || libc_read(ready[0], &c, 1) != 1)
            return 6;
    if (write(blocked[1], "through", 7) != 7)
        return 7;
    pthread_join(r, NULL);
    out("read %c, the blocked reader got '%s'\n", c, got);
    pthread_create(&t, NULL, other, NULL);
    take_turns(0);
    pthread_join(t, NULL);
    if (!threads_first)
        twelve_threads();
    out("%d turns, random mix %016lx\n", rounds, mix);
    return 0;
}
