/* lostupdates.c -- two threads add to one counter without a lock: each reads it, works a
 * little (yielding the CPU every fourth time), writes it back plus one, and sleeps briefly
 * every ten rounds. Where their read-work-write sequences overlap, updates are lost; how
 * many depends only on how the threads interleaved. The main thread joins them and sends
 * the counter over a socketpair (an output mig checks). With threads in parallel a
 * replica loses another number; with threads serialized it loses exactly the primary's.
 *
 * usage: lostupdates [ROUNDS]      default 300 per thread
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static volatile long counter;
static int rounds = 300;

static void *bump(void *arg)
{
    (void)arg;
    for (int i = 0; i < rounds; i++) {
        long v = counter;
        for (volatile int work = 0; work < 20000; work++)
            ;
        if (i % 4 == 1)
            sched_yield(); /* a call inside the window: serialized, the other runs here */
        counter = v + 1;
        if (i % 10 == 9)
            usleep(100);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        rounds = atoi(argv[1]);
    if (rounds < 1) {
        fprintf(stderr, "usage: lostupdates [ROUNDS]\n");
        return 2;
    }
    pthread_t a, b;
    if (pthread_create(&a, NULL, bump, NULL) != 0 || pthread_create(&b, NULL, bump, NULL) != 0)
        return 1;
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        return 1;
    char line[96];
    int n = snprintf(line, sizeof line, "lostupdates counter=%ld of %d\n", counter, 2 * rounds);
    if (write(sv[0], line, (size_t)n) != n)
        return 1;
    fputs(line, stdout);
    return 0;
}
