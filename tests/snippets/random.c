/* random.c -- getrandom, getentropy and reads of /dev/urandom. */
#include "common.h"
#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

static void hex(const char *what, const unsigned char *b, int n)
{
    out("%s", what);
    for (int i = 0; i < n; i++)
        out("%02x", b[i]);
    out("\n");
}

int main(int argc, char **argv)
{
    snippet_open(argc, argv);
    unsigned char buf[64];
    out("getrandom %zd\n", getrandom(buf, 32, 0));
    hex("  ", buf, 32);
    out("getrandom nonblock %zd\n", getrandom(buf, 16, GRND_NONBLOCK));
    hex("  ", buf, 16);
    out("getentropy %d\n", getentropy(buf, 48));
    hex("  ", buf, 48);
    int fd = open("/dev/urandom", O_RDONLY);
    out("urandom read %zd\n", read(fd, buf, 24));
    hex("  ", buf, 24);
    close(fd);
    return 0;
}
