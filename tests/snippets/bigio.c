/* bigio.c -- 6 MiB through a socketpair in 64 KiB reads: a process can produce far more
 * input between two drains of its ring than one Kafka message holds, so the recorder must
 * cut its batches. */
#include "common.h"
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    snippet_open(argc, argv);
    int s[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, s) != 0)
        return 1;
    static unsigned char buf[65536], got[65536];
    unsigned long sum = 0;
    for (int i = 0; i < 96; i++) {
        if (getrandom(buf, sizeof buf, 0) != (ssize_t)sizeof buf)
            return 2;
        size_t done = 0;
        while (done < sizeof buf) {
            ssize_t w = write(s[0], buf + done, sizeof buf - done);
            if (w <= 0)
                return 3;
            size_t r = 0;
            while (r < (size_t)w) {
                ssize_t n = read(s[1], got + r, (size_t)w - r);
                if (n <= 0)
                    return 4;
                r += (size_t)n;
            }
            for (size_t k = 0; k < (size_t)w; k++)
                sum = sum * 31 + got[k];
            done += (size_t)w;
        }
    }
    out("checksum %lu\n", sum);
    return 0;
}
