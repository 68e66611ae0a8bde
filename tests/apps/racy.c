/* racy.c -- a deliberate data race: the program mig cannot replay faithfully.
 *
 * THREADS threads each add 1 to a shared counter ROUNDS times with a read, a short spin
 * and a write, no lock: updates get lost, how many depends on how the threads ran on the
 * CPUs, which nothing intercepted decides. The main thread joins them and sends the
 * counter, and a hash of the values each thread read along the way, over a socketpair (an output mig checks in replay). A replay almost surely
 * counts differently: mig must report the divergence, not let the backup drift.
 *
 * usage: racy [THREADS [ROUNDS]]      defaults: 2, 1000000
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static volatile long counter;
static volatile int started; /* the threads begin together, so that they overlap */
static int rounds = 1000000;

static void *bump(void *arg)
{
    unsigned long *seen = arg; /* what this thread saw, every 1000 rounds, hashed */
    *seen = 0xcbf29ce484222325ul;
    while (!started)
        ;
    for (int i = 0; i < rounds; i++) {
        long v = counter;
        for (volatile int spin = 0; spin < 50; spin++)
            ;
        counter = v + 1;
        if (i % 1000 == 0)
            *seen = (*seen ^ (unsigned long)v) * 0x100000001b3ul;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    if (argc > 2)
        rounds = atoi(argv[2]);
    if (threads < 2 || threads > 64 || rounds < 1) {
        fprintf(stderr, "usage: racy [THREADS (2..64) [ROUNDS]]\n");
        return 2;
    }
    pthread_t t[64];
    unsigned long seen[64];
    for (int i = 0; i < threads; i++)
        pthread_create(&t[i], NULL, bump, &seen[i]);
    started = 1;
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
        perror("racy");
        return 1;
    }
    unsigned long all = 0;
    for (int i = 0; i < threads; i++)
        all = (all ^ seen[i]) * 0x100000001b3ul;
    char line[96];
    int n = snprintf(line, sizeof line, "counter=%ld of %ld seen=%016lx\n", counter,
                     (long)threads * rounds, all);
    if (write(sv[0], line, (size_t)n) != n)
        return 1;
    fputs(line, stdout);
    return 0;
}
