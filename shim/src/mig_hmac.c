/* mig_hmac.c -- HMAC-SHA256 (FIPS 180-4, RFC 2104) for the native pump's signed batches.
 *
 * A primary with `[security]` keys signs every record it writes (mig/wire/auth.py: the
 * `mig.auth` header, `KID:HEX` over "mig1\0ROLE\0KEY\0V" + value). The Python path signs
 * with hashlib; the pump (mig_pump.c) signs its CallBatch values here, so that signed
 * records no longer fall back to the Python path. The digest is checked against Python's
 * hmac for every length around the block boundaries and for keys longer than a block
 * (tests/kafka/test_pump.py). Written out rather than bound to a crypto library: the
 * agent's process has no stable C crypto API to bind to, and 150 lines are enough. */
#include <stdint.h>
#include <string.h>

#include "mig_hmac.h"

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

static uint32_t ror(uint32_t x, int n)
{
    return (x >> n) | (x << (32 - n));
}

static void block(uint32_t h[8], const unsigned char *p)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = k + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + K[i] +
                      w[i];
        uint32_t t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += k;
}

void mig_sha256_init(struct mig_sha256 *s)
{
    static const uint32_t start[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                      0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, start, sizeof start);
    s->len = 0;
    s->used = 0;
}

void mig_sha256_add(struct mig_sha256 *s, const void *data, size_t n)
{
    const unsigned char *p = data;
    s->len += n;
    if (s->used) {
        size_t take = 64 - s->used < n ? 64 - s->used : n;
        memcpy(s->buf + s->used, p, take);
        s->used += take;
        p += take;
        n -= take;
        if (s->used < 64)
            return;
        block(s->h, s->buf);
        s->used = 0;
    }
    for (; n >= 64; p += 64, n -= 64)
        block(s->h, p);
    memcpy(s->buf, p, n);
    s->used = n;
}

void mig_sha256_end(struct mig_sha256 *s, unsigned char out[32])
{
    uint64_t bits = s->len * 8;
    unsigned char pad[72] = {0x80};
    size_t n = (s->used < 56 ? 56 : 120) - s->used;
    for (int i = 0; i < 8; i++)
        pad[n + (size_t)i] = (unsigned char)(bits >> (56 - 8 * i));
    mig_sha256_add(s, pad, n + 8);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)(s->h[i] >> 24);
        out[4 * i + 1] = (unsigned char)(s->h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(s->h[i] >> 8);
        out[4 * i + 3] = (unsigned char)s->h[i];
    }
}

void mig_hmac_key(struct mig_hmac *m, const void *key, size_t len)
{
    unsigned char k[64] = {0};
    if (len > 64) { /* a key longer than a block is its digest */
        struct mig_sha256 s;
        mig_sha256_init(&s);
        mig_sha256_add(&s, key, len);
        mig_sha256_end(&s, k);
    } else {
        memcpy(k, key, len);
    }
    unsigned char ipad[64], opad[64];
    for (int i = 0; i < 64; i++) {
        ipad[i] = k[i] ^ 0x36;
        opad[i] = k[i] ^ 0x5c;
    }
    mig_sha256_init(&m->inner);
    mig_sha256_add(&m->inner, ipad, 64);
    mig_sha256_init(&m->outer);
    mig_sha256_add(&m->outer, opad, 64);
}

void mig_hmac_start(const struct mig_hmac *m, struct mig_sha256 *s)
{
    *s = m->inner;
}

void mig_hmac_end(const struct mig_hmac *m, struct mig_sha256 *s, unsigned char out[32])
{
    unsigned char inner[32];
    mig_sha256_end(s, inner);
    struct mig_sha256 o = m->outer;
    mig_sha256_add(&o, inner, 32);
    mig_sha256_end(&o, out);
}

/* HMAC-SHA256 of one message, as lowercase hex (65 bytes with its NUL): what the pump
 * signs with, exported so that the tests compare it with Python's hmac. */
__attribute__((visibility("default"))) void mig_hmac_hex(const void *key, size_t klen,
                                                         const void *msg, size_t len,
                                                         char out[65])
{
    struct mig_hmac m;
    struct mig_sha256 s;
    unsigned char d[32];
    mig_hmac_key(&m, key, klen);
    mig_hmac_start(&m, &s);
    mig_sha256_add(&s, msg, len);
    mig_hmac_end(&m, &s, d);
    mig_hex(d, 32, out);
}

void mig_hex(const unsigned char *d, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[2 * n] = 0;
}
