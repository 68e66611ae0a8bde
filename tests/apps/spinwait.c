/* spinwait.c -- a thread that spins on a flag, with no system call, until another thread
 * sets it: under serialized threads the spinning thread holds the token and the setter
 * waits for it. mig must not hang the program: after serial_stall_ms the primary stops
 * serializing it and goes on, and a replica stops at that point with a report.
 *
 * usage: spinwait      prints "spinwait spins=N" (how long the thread spun varies)
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static volatile int flag;
static volatile unsigned long spins;

static void *spinner(void *arg)
{
    (void)arg;
    while (!flag)
        spins++;
    return NULL;
}

int main(void)
{
    pthread_t t;
    if (pthread_create(&t, NULL, spinner, NULL) != 0)
        return 1;
    usleep(20000); /* the spinner runs meanwhile (with the token, when serialized) */
    flag = 1;
    pthread_join(t, NULL);
    printf("spinwait spins=%lu\n", spins);
    return 0;
}
