/* refused.c -- a system call mig cannot record (io_uring_setup, made raw): the program is
 * stopped at that call with one line naming it, never left to run unrecorded. */
#include "common.h"
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    snippet_open(argc, argv);
    out("before\n");
    fflush(snippet_out);
    long r = syscall(SYS_io_uring_setup, 4, NULL);
    out("after %ld\n", r);
    return 0;
}
