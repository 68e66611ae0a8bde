/* ownalloc.c -- a program with its own allocator, as one linked with jemalloc is: malloc,
 * calloc, realloc and free are defined here, so every allocation made in the process
 * comes through them, libc's own included (stdio's buffers; the TLS vector of a new
 * thread, which pthread_create takes with calloc). Like jemalloc's decay ticks, the
 * allocator does some housekeeping every few calls, and that reads a clock
 * (CLOCK_MONOTONIC_COARSE, as jemalloc does). Its state is the program's own: whatever
 * else calls it, or maps memory, in this process on one host and not on another moves
 * those clock reads and the addresses the program is given.
 *
 * ROUNDS times: map a page, send a line over a socketpair (an output: in output mode the
 * shim starts its release thread at the first, on every host, though a write to a
 * socketpair the process holds alone is not held) with the number of allocator calls so
 * far and the page's address, then allocate and free a few blocks. A replica must send
 * the same lines.
 *
 * usage: ownalloc [ROUNDS]      default 20
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);

static unsigned long calls;
static int running; /* housekeeping once main runs: not inside the loader's start-up */
static long coarse_sum;

static void tick(void)
{
    calls++;
    if (running && calls % 8 == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
        coarse_sum += ts.tv_nsec & 1;
    }
}

void *malloc(size_t n) { tick(); return __libc_malloc(n); }
void *calloc(size_t k, size_t n) { tick(); return __libc_calloc(k, n); }
void *realloc(void *p, size_t n) { tick(); return __libc_realloc(p, n); }
void free(void *p) { tick(); __libc_free(p); }
void *memalign(size_t a, size_t n) { tick(); return __libc_memalign(a, n); }
void *aligned_alloc(size_t a, size_t n) { tick(); return __libc_memalign(a, n); }

int posix_memalign(void **out, size_t a, size_t n)
{
    tick();
    void *p = __libc_memalign(a, n);
    if (!p)
        return 12; /* ENOMEM */
    *out = p;
    return 0;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 20;
    if (rounds < 1) {
        fprintf(stderr, "usage: ownalloc [ROUNDS]\n");
        return 2;
    }
    running = 1;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        return 1;
    char line[160];
    for (int r = 0; r < rounds; r++) {
        void *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                          -1, 0);
        if (page == MAP_FAILED)
            return 1;
        int n = snprintf(line, sizeof line, "ownalloc round=%d allocs=%lu page=%p\n", r,
                         calls, page);
        if (write(sv[0], line, (size_t)n) != n)
            return 1;
        char buf[64];
        if (read(sv[1], buf, sizeof buf) <= 0) /* keep the pair's buffer empty */
            return 1;
        for (int i = 0; i < 5; i++)
            free(malloc(64 + (size_t)(r * 8 + i) * 16));
    }
    printf("ownalloc rounds=%d allocs=%lu coarse=%ld\n", rounds, calls, coarse_sum);
    return 0;
}
