/* mig_encode.c -- Avro encoding of call records, for the recorder agent (not the app).
 *
 * Built alone as libmigenc.so (the shim itself uses initial-exec TLS, which a running
 * Python cannot dlopen); the agent loads it with ctypes and calls mig_encode_calls() on a
 * ring it has mapped: the records between two positions
 * become the Avro binary encoding of mig.log.Call items (the body of CallBatch.calls), with
 * no Python object per call. The field order below is the schema's
 * (avro/mig.log.CallBatch.avsc); tests/ring/test_fastbatch.py checks the bytes against fastavro. */
#include <stdint.h>
#include <string.h>

#include "mig_ring.h"

#define MIG_EXPORT __attribute__((visibility("default")))

static unsigned char *put_long(unsigned char *p, int64_t v)
{
    uint64_t n = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); /* zig-zag */
    while (n & ~0x7Full) {
        *p++ = (unsigned char)((n & 0x7F) | 0x80);
        n >>= 7;
    }
    *p++ = (unsigned char)n;
    return p;
}

static unsigned char *put_bytes(unsigned char *p, const void *src, uint64_t len)
{
    p = put_long(p, (int64_t)len);
    memcpy(p, src, len);
    return p + len;
}

/* The fields of a CallBatch before its calls, and the calls array's item count, after
 * the single-object `prefix` (the Python path builds the same in mig/ring/batch.py):
 * written at `out`, which holds at least prefix_len + 2 * (10 + 255) + 6 * 10 bytes for
 * an app and lpid of up to 255 bytes each. Returns the bytes written. Called by the
 * recorder's pump (mig_pump.c); not exported from the library. */
uint64_t mig_encode_batch_head(unsigned char *out, const unsigned char *prefix,
                               uint64_t prefix_len, const char *app, int64_t epoch,
                               const char *lpid, int64_t batch_seq, int64_t first_seq,
                               int64_t sent_ns, int64_t count)
{
    unsigned char *p = out;
    memcpy(p, prefix, prefix_len);
    p += prefix_len;
    p = put_bytes(p, app, strlen(app));
    p = put_long(p, epoch);
    p = put_bytes(p, lpid, strlen(lpid));
    p = put_long(p, batch_seq);
    p = put_long(p, first_seq);
    p = put_long(p, sent_ns);
    p = put_long(p, count);
    return (uint64_t)(p - out);
}

/* Worst-case encoded size of one record (varints take at most 10 bytes). */
static uint64_t worst_case(const struct mig_rec *rec)
{
    return 16 * 10 + 8 + rec->payload_len + 16;
}

/* Why the record at position `pos` cannot be encoded (see mig_rec_problem), NULL if it can:
 * the agent asks when mig_encode_calls() stopped at a record without taking it. */
MIG_EXPORT const char *mig_ring_problem(const unsigned char *data, uint64_t capacity,
                                        uint64_t pos, uint64_t end)
{
    return mig_rec_problem(data, capacity, pos, end);
}

/* Encode the records of `data` (a ring's data area of `capacity` bytes) from position
 * `from` up to `to`, into `out` (at most `out_cap` bytes), as Avro Call items. `kind_index`
 * maps a ring kind number to the CallKind enum's symbol index. Stops early when `out` is
 * full (at least one record is always taken when it fits) and at a malformed record.
 * Returns the bytes written; *next is the position after the last record taken, *count
 * the records encoded, *first_seq and *last_seq their sequence numbers. */
MIG_EXPORT uint64_t mig_encode_calls(const unsigned char *data, uint64_t capacity, uint64_t from,
                                     uint64_t to, const unsigned char *kind_index,
                                     unsigned char *out, uint64_t out_cap, uint64_t *next,
                                     uint64_t *count, uint64_t *first_seq, uint64_t *last_seq)
{
    unsigned char *p = out;
    uint64_t pos = from, n = 0;
    while (pos < to) {
        if (mig_rec_problem(data, capacity, pos, to))
            break; /* malformed: mig_ring_problem() says why */
        const struct mig_rec *rec = (const struct mig_rec *)(data + (pos & (capacity - 1)));
        if (rec->flags & MIG_F_PAD) {
            pos += rec->len;
            continue;
        }
        if ((uint64_t)(p - out) + worst_case(rec) > out_cap && n > 0)
            break;
        if ((uint64_t)(p - out) + worst_case(rec) > out_cap)
            break; /* out is too small even for one record */
        p = put_long(p, rec->tid);
        p = put_long(p, (int64_t)rec->seq);
        p = put_long(p, kind_index[rec->kind < 256 ? rec->kind : 0]);
        p = put_long(p, 4); /* args: one block of 4 longs */
        for (int i = 0; i < 4; i++)
            p = put_long(p, rec->args[i]);
        p = put_long(p, 0);
        p = put_long(p, rec->result);
        p = put_long(p, rec->err);
        if (rec->payload_len) { /* union [null, bytes] */
            p = put_long(p, 1);
            p = put_bytes(p, rec + 1, rec->payload_len);
        } else {
            p = put_long(p, 0);
        }
        if (rec->flags & MIG_F_OUTPUT) { /* out_len [null, long], out_hash [null, bytes] */
            p = put_long(p, 1);
            p = put_long(p, (int64_t)rec->out_len);
            p = put_long(p, 1);
            p = put_bytes(p, &rec->out_hash, 8);
        } else {
            p = put_long(p, 0);
            p = put_long(p, 0);
        }
        p = put_long(p, (int64_t)rec->wall_ns);
        if (n == 0)
            *first_seq = rec->seq;
        *last_seq = rec->seq;
        n++;
        pos += rec->len;
    }
    *next = pos;
    *count = n;
    return (uint64_t)(p - out);
}
