/* turnspin.c -- a worker whose every turn comes to the same state at one instruction and
 * makes one call, while the main thread spins (no call, no write) waiting for it. A loop
 * that polls with a call each turn works so (a CPython thread reads errno after each call:
 * __errno_location is met once a turn, in the same state).
 *
 * Each turn fills a buffer with zeros in one instruction (rep stosb), met once a turn with
 * the same registers and the same memory, then makes a raw fstat of a pipe: trapped and
 * recorded by mig (what a pipe's fstat says is the primary's), and no switch point. A
 * state met again only across a call is no spin: compared across it, the primary stopped
 * the worker at a turn that the replica, armed once its worker had made every call the log
 * has before the stop, could not stop it at (its next fstat found the stop in the log).
 *
 * usage: turnspin [ROUNDS]   prints "turnspin rounds=R"
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define LEN (256 * 1024)

static int ready, done, stop; /* atomics */
static char *buf;
static int pipefd[2];

/* The registers the call before it left behind are cleared first, as a loop whose state
 * does not depend on them has them (the compiler keeps nothing there across a call). */
static void fill(void)
{
    void *d = buf;
    unsigned long n = LEN;
    __asm__ volatile("xor %%edx, %%edx\n\txor %%esi, %%esi\n\t"
                     "xor %%r8d, %%r8d\n\txor %%r9d, %%r9d\n\t"
                     "xor %%r10d, %%r10d\n\txor %%r11d, %%r11d\n\t"
                     "pxor %%xmm0, %%xmm0\n\tpxor %%xmm1, %%xmm1\n\t"
                     "pxor %%xmm2, %%xmm2\n\tpxor %%xmm3, %%xmm3\n\t"
                     "pxor %%xmm4, %%xmm4\n\tpxor %%xmm5, %%xmm5\n\t"
                     "pxor %%xmm6, %%xmm6\n\tpxor %%xmm7, %%xmm7\n\t"
                     "pxor %%xmm8, %%xmm8\n\tpxor %%xmm9, %%xmm9\n\t"
                     "pxor %%xmm10, %%xmm10\n\tpxor %%xmm11, %%xmm11\n\t"
                     "pxor %%xmm12, %%xmm12\n\tpxor %%xmm13, %%xmm13\n\t"
                     "pxor %%xmm14, %%xmm14\n\tpxor %%xmm15, %%xmm15\n\t"
                     "rep stosb"
                     : "+D"(d), "+c"(n)
                     : "a"(0)
                     : "rdx", "rsi", "r8", "r9", "r10", "r11", "xmm0", "xmm1", "xmm2", "xmm3",
                       "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11",
                       "xmm12", "xmm13", "xmm14", "xmm15", "cc", "memory");
}

static void *worker(void *arg)
{
    (void)arg;
    while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
        if (__atomic_load_n(&ready, __ATOMIC_ACQUIRE)) {
            __atomic_store_n(&ready, 0, __ATOMIC_RELAXED);
            __atomic_store_n(&done, 1, __ATOMIC_RELEASE);
        }
        fill();
        struct stat st;
        syscall(SYS_fstat, pipefd[0], &st);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 100;
    buf = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED || pipe(pipefd) != 0)
        return 1;
    pthread_t t;
    if (pthread_create(&t, NULL, worker, NULL) != 0)
        return 1;
    for (int r = 0; r < rounds; r++) {
        __atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
        while (!__atomic_load_n(&done, __ATOMIC_ACQUIRE))
            ; /* a pure spin */
        __atomic_store_n(&done, 0, __ATOMIC_RELAXED);
    }
    __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
    pthread_join(t, NULL);
    printf("turnspin rounds=%d\n", rounds);
    return 0;
}
