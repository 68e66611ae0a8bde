/* spinhandoff.c -- two threads hand work to each other through an atomic flag and wait
 * for it by spinning on it, with no system call and no write while they wait (Redis's
 * main thread and its I/O threads work so). Serialized, the spinning thread holds the
 * token and the other cannot run until mig preempts the spin (docs/threads.md,
 * "Preempting a spin"). After each hand-back the worker goes on counting `tail` without
 * a lock while the main thread reads it: in parallel the value read is a race, and the
 * output shows it.
 *
 * With "syscall", each turn of a wait makes a raw getuid system call (trapped by mig, no
 * switch point): a request to preempt the spinner then often finds it entering the shim's
 * SIGSYS handler. With "timer", the program makes a POSIX timer at its end and prints the
 * number the kernel gave it (a process's timers are numbered in the order made).
 *
 * usage: spinhandoff [ROUNDS [syscall|timer]]
 *        prints "spinhandoff rounds=R result=X seen=Y" (and " timer=N")
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int pending;                 /* 1: work for the worker; 0: done */
static unsigned long work, result;
static volatile unsigned long tail; /* written by the worker, read by main, no lock */
static int rounds = 200;
static int trapped; /* waits make a raw system call each turn */

static void wait_turn(void)
{
    if (trapped)
        syscall(SYS_getuid);
}

static void *worker(void *arg)
{
    (void)arg;
    for (int r = 0; r < rounds; r++) {
        while (__atomic_load_n(&pending, __ATOMIC_ACQUIRE) == 0)
            if (trapped)
                wait_turn(); /* else a pure spin: no call, no write */
        result = result * 31 + work;
        __atomic_store_n(&pending, 0, __ATOMIC_RELEASE);
        for (int i = 0; i < 20000; i++)
            tail++;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        rounds = atoi(argv[1]);
    trapped = argc > 2 && strcmp(argv[2], "syscall") == 0;
    pthread_t t;
    if (pthread_create(&t, NULL, worker, NULL) != 0)
        return 1;
    unsigned long seen = 0;
    for (int r = 0; r < rounds; r++) {
        work = (unsigned long)r * 7 + 1;
        __atomic_store_n(&pending, 1, __ATOMIC_RELEASE);
        while (__atomic_load_n(&pending, __ATOMIC_ACQUIRE) != 0)
            if (trapped)
                wait_turn();
        seen += tail;
    }
    pthread_join(t, NULL);
    printf("spinhandoff rounds=%d result=%lu seen=%lu", rounds, result, seen);
    if (argc > 2 && strcmp(argv[2], "timer") == 0) {
        struct sigevent none = {.sigev_notify = SIGEV_NONE};
        timer_t id;
        if (timer_create(CLOCK_MONOTONIC, &none, &id) != 0)
            return 1;
        printf(" timer=%ld", (long)(intptr_t)id);
    }
    printf("\n");
    return 0;
}
