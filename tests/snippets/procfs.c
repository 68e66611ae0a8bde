/* procfs.c -- reads of /proc and /sys, which describe the host, not the app, a listing of
 * /proc/self/fd (as GNU xargs makes at its start), and a MAP_SHARED mapping of a file,
 * which mig cannot replay and must warn about. */
#include "common.h"
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

static void dump_file(const char *path)
{
    char buf[512] = {0};
    int fd = open(path, O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    out("%s fd %d read %zd: %.60s\n", path, fd, n, n > 0 ? buf : "");
    if (fd >= 0)
        close(fd);
}

int main(int argc, char **argv)
{
    snippet_open(argc, argv);
    dump_file("/proc/uptime");
    dump_file("/proc/self/stat");
    dump_file("/proc/sys/kernel/random/boot_id");
    dump_file("/sys/kernel/mm/transparent_hugepage/enabled");
    DIR *d = opendir("/proc/self/fd");
    int entries = 0;
    for (struct dirent *e; d && (e = readdir(d)) != NULL;)
        entries += e->d_name[0] != '.';
    out("/proc/self/fd: %s, %d fds\n", d ? "listed" : "not opened", entries);
    if (d)
        closedir(d);
    int fd = open("shared.dat", O_RDWR | O_CREAT, 0600);
    if (fd >= 0 && ftruncate(fd, 4096) == 0) {
        char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        out("mapped %d\n", p != MAP_FAILED);
    }
    return 0;
}
