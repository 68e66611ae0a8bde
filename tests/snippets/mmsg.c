/* mmsg.c -- datagrams sent and received several at a time, as glibc's resolver sends its
 * A and AAAA queries (sendmmsg, from inside libc) and as UDP servers read (recvmmsg). A
 * socket sends three datagrams to another with one sendmmsg, which takes them with
 * recvmmsg and MSG_WAITFORONE (until it has the three), then with one more that finds
 * none waiting (EAGAIN); each datagram carries a random number read from getrandom.
 * Writes what was sent and taken: "mmsg sent=3 got=N lens=A,B,C data=X,Y,Z again=R/ERR". */
#include "common.h"
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    snippet_open(argc, argv);
    int rx = socket(AF_INET, SOCK_DGRAM, 0), tx = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in at = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof at;
    if (rx < 0 || tx < 0 || bind(rx, (struct sockaddr *)&at, sizeof at) != 0 ||
        getsockname(rx, (struct sockaddr *)&at, &len) != 0 ||
        connect(tx, (struct sockaddr *)&at, sizeof at) != 0)
        return 1;
    char sent_text[3][32], in[4][32];
    struct iovec oiov[3], iiov[4];
    struct mmsghdr omsg[3], imsg[4];
    memset(omsg, 0, sizeof omsg);
    memset(imsg, 0, sizeof imsg);
    for (int i = 0; i < 3; i++) {
        unsigned r = 0;
        if (getrandom(&r, sizeof r, 0) != sizeof r)
            return 1;
        int n = snprintf(sent_text[i], sizeof sent_text[i], "%d:%u", i, r % 100000);
        oiov[i] = (struct iovec){sent_text[i], (size_t)n};
        omsg[i].msg_hdr.msg_iov = &oiov[i];
        omsg[i].msg_hdr.msg_iovlen = 1;
    }
    for (int i = 0; i < 4; i++) {
        memset(in[i], 0, sizeof in[i]);
        iiov[i] = (struct iovec){in[i], sizeof in[i] - 1};
        imsg[i].msg_hdr.msg_iov = &iiov[i];
        imsg[i].msg_hdr.msg_iovlen = 1;
    }
    int sent = sendmmsg(tx, omsg, 3, 0);
    /* (in output mode a datagram leaves once its causes are committed: they may come
     * over several calls, each taking at least one) */
    int got = 0, r;
    while (got < sent && (r = recvmmsg(rx, imsg + got, 4 - got, MSG_WAITFORONE, NULL)) > 0)
        got += r;
    int again = recvmmsg(rx, imsg, 1, MSG_DONTWAIT, NULL);
    int again_err = again < 0 ? errno : 0;
    out("mmsg sent=%d got=%d lens=%u,%u,%u data=%s,%s,%s again=%d/%s\n", sent, got,
           imsg[0].msg_len, imsg[1].msg_len, imsg[2].msg_len, in[0], in[1], in[2], again,
           again_err == EAGAIN ? "EAGAIN" : strerror(again_err));
    return sent == 3 && got == 3 ? 0 : 2;
}
