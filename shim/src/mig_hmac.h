/* mig_hmac.h -- HMAC-SHA256 for the native pump's signed batches (mig_hmac.c). */
#ifndef MIG_HMAC_H
#define MIG_HMAC_H

#include <stddef.h>
#include <stdint.h>

struct mig_sha256 {
    uint32_t h[8];
    uint64_t len;
    unsigned char buf[64];
    size_t used;
};

/* A key's inner and outer states, made once (mig_hmac_key), copied per message. */
struct mig_hmac {
    struct mig_sha256 inner, outer;
};

void mig_sha256_init(struct mig_sha256 *s);
void mig_sha256_add(struct mig_sha256 *s, const void *data, size_t n);
void mig_sha256_end(struct mig_sha256 *s, unsigned char out[32]);

void mig_hmac_key(struct mig_hmac *m, const void *key, size_t len);
void mig_hmac_start(const struct mig_hmac *m, struct mig_sha256 *s);
void mig_hmac_end(const struct mig_hmac *m, struct mig_sha256 *s, unsigned char out[32]);

void mig_hex(const unsigned char *d, size_t n, char *out);

#endif
