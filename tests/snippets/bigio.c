/* bigio.c -- 12 MiB through a socketpair in 1 MiB writes and reads: a process can produce
 * far more input between two drains of its ring than one Kafka message holds (the recorder
 * cuts its batches), and a single read may ask for more than one record may carry (the
 * shim makes it a short read). */
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
    /* room for a whole 1 MiB write (root may exceed wmem_max), else 64 KiB pieces */
    int size = 4 << 20;
    int forced = setsockopt(s[0], SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) == 0;
    size_t piece = forced ? (1 << 20) : 65536;
    static unsigned char buf[1 << 20], got[1 << 20];
    unsigned long sum = 0;
    for (int i = 0; i < 12; i++) {
        for (size_t k = 0; k < sizeof buf; k += 4096) /* getrandom may return short */
            if (getrandom(buf + k, 4096, 0) != 4096)
                return 2;
        size_t done = 0;
        while (done < sizeof buf) {
            ssize_t w = write(s[0], buf + done, piece);
            if (w <= 0)
                return 3;
            size_t r = 0;
            while (r < (size_t)w) {
                ssize_t n = read(s[1], got + r, sizeof got - r); /* asks for up to 1 MiB */
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
