/* mig_decode.c -- the replica's hot path: Avro Call items straight into ring records.
 *
 * Built into libmigenc.so with mig_encode.c (its mirror image) and loaded by the replica
 * with ctypes (mig/ring/decode.py). mig_decode_calls() turns the body of CallBatch.calls
 * (the last field of mig.log.CallBatch, avro/mig.log.CallBatch.avsc) into the records the
 * shim's ring holds, with no Python object per call; mig_ring_fill() copies as many of
 * them as fit into a ring. The checks are those of the Python path (mig/wire/codec.py's
 * int ranges, mig/ring/calls.py from_avro): every length within the input, int fields in
 * 32 bits, longs the ring keeps unsigned not negative, at most 4 arguments, out_len and
 * out_hash given together and out_hash 8 bytes, no byte after the array. One thing is
 * stricter: a varint longer than 10 bytes is refused (fastavro reads it on). Nothing here
 * writes outside `out`; tests/ring/test_decode.py compares it with the Python path on
 * mutated batches; tests/fuzz/ring_fuzz.c runs it under AddressSanitizer. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "mig_ring.h"

#define MIG_EXPORT __attribute__((visibility("default")))

/* The largest payload a ring record carries: its 32-bit length, less the header and the
 * padding to 8 (MIG_MAX_PAYLOAD in mig/ring/calls.py). */
#define MIG_MAX_PAYLOAD (0xffffffffull - sizeof(struct mig_rec) - 8)

struct dec_cursor {
    const unsigned char *p, *end;
    char *why;
    uint64_t why_cap;
    int failed;
};

static void dec_fail(struct dec_cursor *c, const char *fmt, ...)
{
    if (c->failed)
        return;
    c->failed = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->why, c->why_cap, fmt, ap);
    va_end(ap);
}

static int64_t dec_long(struct dec_cursor *c)
{
    uint64_t n = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (c->p >= c->end) {
            dec_fail(c, "the body ends inside a number");
            return 0;
        }
        unsigned char b = *c->p++;
        if (shift == 63 && b > 1) {
            dec_fail(c, "a number longer than 64 bits");
            return 0;
        }
        n |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return (int64_t)(n >> 1) ^ -(int64_t)(n & 1); /* zig-zag */
    }
    dec_fail(c, "a number longer than 64 bits");
    return 0;
}

static int32_t dec_int(struct dec_cursor *c, const char *field, uint64_t seq)
{
    int64_t v = dec_long(c);
    if (!c->failed && (v < INT32_MIN || v > INT32_MAX))
        dec_fail(c, "call seq %llu: %s %lld is out of the int range", (unsigned long long)seq,
             field, (long long)v);
    return (int32_t)v;
}

static int dec_branch(struct dec_cursor *c, const char *field, uint64_t seq)
{
    int64_t v = dec_long(c);
    if (!c->failed && v != 0 && v != 1)
        dec_fail(c, "call seq %llu: %s has union branch %lld", (unsigned long long)seq, field,
             (long long)v);
    return (int)v;
}

/* The length of a bytes value; the cursor then points at its first byte. */
static uint64_t dec_len(struct dec_cursor *c, const char *field, uint64_t seq)
{
    int64_t n = dec_long(c);
    if (c->failed)
        return 0;
    if (n < 0 || (uint64_t)n > (uint64_t)(c->end - c->p)) {
        dec_fail(c, "call seq %llu: %s of %lld bytes overruns the body", (unsigned long long)seq,
             field, (long long)n);
        return 0;
    }
    return (uint64_t)n;
}

/* The item count of an Avro array's next block (0: the array's end), or -1 when the body is
 * malformed there. A negative count is followed by the block's size in bytes, skipped. */
static int64_t dec_block(struct dec_cursor *c, const char *what)
{
    int64_t n = dec_long(c);
    if (!c->failed && n == INT64_MIN)
        dec_fail(c, "%s: a block of impossible size", what);
    if (!c->failed && n < 0) {
        n = -n;
        dec_long(c);
    }
    return c->failed ? -1 : n;
}

/* Decode Call items from in[0..len) into ring records at out (at most out_cap bytes).
 * `kind_of_symbol[i]` is the ring kind of the CallKind enum's symbol i (nsym of them).
 * Returns 0 and sets *used (bytes of out written), *count and *last_seq (of the last call,
 * untouched when there is none); on a malformed body returns
 * -1 with the reason in why; with -2 out is too small (*used: the bytes it needs at least
 * so far). */
MIG_EXPORT int mig_decode_calls(const unsigned char *in, uint64_t len,
                                const uint16_t *kind_of_symbol, uint32_t nsym,
                                unsigned char *out, uint64_t out_cap, uint64_t *used,
                                uint64_t *count, uint64_t *last_seq, char *why,
                                uint64_t why_cap)
{
    struct dec_cursor c = {in, in + len, why, why_cap, 0};
    uint64_t at = 0, n = 0;
    for (;;) {
        int64_t block = dec_block(&c, "calls");
        if (block < 0)
            return -1;
        if (block == 0)
            break;
        for (int64_t i = 0; i < block; i++) {
            struct mig_rec rec;
            memset(&rec, 0, sizeof rec);
            int32_t tid = dec_int(&c, "tid", 0);
            int64_t seq = dec_long(&c);
            if (c.failed)
                return -1;
            if (tid < 0) {
                dec_fail(&c, "call seq %lld: tid %d is out of range", (long long)seq, tid);
                return -1;
            }
            if (seq < 0) {
                dec_fail(&c, "call seq %lld: seq %lld is out of range", (long long)seq,
                     (long long)seq);
                return -1;
            }
            int64_t kind = dec_long(&c);
            if (!c.failed && (kind < 0 || kind >= nsym))
                dec_fail(&c, "call seq %lld: kind symbol %lld is not in CallKind", (long long)seq,
                     (long long)kind);
            if (c.failed)
                return -1;
            uint32_t nargs = 0;
            for (;;) {
                int64_t items = dec_block(&c, "arguments");
                if (items < 0)
                    return -1;
                if (items == 0)
                    break;
                if (items > 4 || nargs + (uint32_t)items > 4) {
                    dec_fail(&c, "call seq %lld: %lld arguments, at most 4 are recorded",
                         (long long)seq, (long long)(nargs + (uint64_t)items));
                    return -1;
                }
                for (int64_t k = 0; k < items; k++)
                    rec.args[nargs++] = dec_long(&c);
                if (c.failed)
                    return -1;
            }
            rec.result = dec_long(&c);
            rec.err = dec_int(&c, "err", (uint64_t)seq);
            uint64_t plen = 0;
            const unsigned char *payload = NULL;
            if (dec_branch(&c, "payload", (uint64_t)seq) == 1) {
                plen = dec_len(&c, "payload", (uint64_t)seq);
                payload = c.p;
                c.p += plen;
                if (!c.failed && plen > MIG_MAX_PAYLOAD)
                    dec_fail(&c, "call seq %lld: payload of %llu bytes is too large",
                         (long long)seq, (unsigned long long)plen);
            }
            int has_len = dec_branch(&c, "out_len", (uint64_t)seq) == 1;
            int64_t out_len = has_len ? dec_long(&c) : 0;
            if (!c.failed && out_len < 0)
                dec_fail(&c, "call seq %lld: out_len %lld is out of range", (long long)seq,
                     (long long)out_len);
            int has_hash = dec_branch(&c, "out_hash", (uint64_t)seq) == 1;
            if (has_hash) {
                uint64_t hlen = dec_len(&c, "out_hash", (uint64_t)seq);
                if (!c.failed && has_len && hlen != 8)
                    dec_fail(&c, "call seq %lld: out_hash is %llu bytes, expected 8",
                         (long long)seq, (unsigned long long)hlen);
                if (!c.failed && hlen == 8)
                    memcpy(&rec.out_hash, c.p, 8);
                c.p += hlen;
            }
            if (!c.failed && has_len != has_hash)
                dec_fail(&c, "call seq %lld: out_len and out_hash must be given together",
                     (long long)seq);
            int64_t wall = dec_long(&c);
            if (!c.failed && wall < 0)
                dec_fail(&c, "call seq %lld: wall_ns %lld is out of range", (long long)seq,
                     (long long)wall);
            if (c.failed)
                return -1;
            uint64_t size = (sizeof rec + plen + 7) & ~7ull;
            if (at + size > out_cap) {
                *used = at + size;
                return -2;
            }
            rec.len = (uint32_t)size;
            rec.kind = kind_of_symbol[kind];
            rec.flags = has_len ? MIG_F_OUTPUT : 0;
            rec.tid = (uint32_t)tid;
            rec.seq = (uint64_t)seq;
            rec.wall_ns = (uint64_t)wall;
            rec.out_len = (uint64_t)out_len;
            rec.payload_len = (uint32_t)plen;
            memcpy(out + at, &rec, sizeof rec);
            if (plen)
                memcpy(out + at + sizeof rec, payload, plen);
            memset(out + at + sizeof rec + plen, 0, size - sizeof rec - plen);
            at += size;
            n++;
            *last_seq = (uint64_t)seq;
        }
    }
    if (c.p != c.end) {
        dec_fail(&c, "%llu trailing bytes after the calls", (unsigned long long)(c.end - c.p));
        return -1;
    }
    *used = at;
    *count = n;
    return 0;
}

/* Decode a whole CallBatch value `in` (len bytes) after its single-object prefix (`skip`
 * bytes): the batch's own fields into fields[0..8) (app's offset in `in` and length,
 * epoch, lpid's offset and length, batch_seq, first_seq, sent_ns), then its calls, the
 * last field, as mig_decode_calls() does (same results). The replica makes one call per
 * batch, where it read the batch's fields in Python before. */
MIG_EXPORT int mig_decode_batch(const unsigned char *in, uint64_t len, uint64_t skip,
                                const uint16_t *kind_of_symbol, uint32_t nsym,
                                unsigned char *out, uint64_t out_cap, int64_t *fields,
                                uint64_t *used, uint64_t *count, uint64_t *last_seq, char *why,
                                uint64_t why_cap)
{
    if (skip > len) {
        snprintf(why, why_cap, "the body is shorter than its prefix");
        return -1;
    }
    struct dec_cursor c = {in + skip, in + len, why, why_cap, 0};
    static const int is_string[6] = {1, 0, 1, 0, 0, 0}; /* app epoch lpid seqs.. sent_ns */
    int k = 0;
    for (int i = 0; i < 6; i++) {
        int64_t v = dec_long(&c);
        if (c.failed)
            return -1;
        if (!is_string[i]) {
            fields[k++] = v;
            continue;
        }
        if (v < 0 || (uint64_t)v > (uint64_t)(c.end - c.p)) {
            dec_fail(&c, "a string of %lld bytes overruns the body", (long long)v);
            return -1;
        }
        fields[k++] = c.p - in;
        fields[k++] = v;
        c.p += v;
    }
    return mig_decode_calls(c.p, (uint64_t)(c.end - c.p), kind_of_symbol, nsym, out, out_cap,
                            used, count, last_seq, why, why_cap);
}

/* Copy the records of recs[from..len) (made by mig_decode_calls) into a ring's data area
 * (`capacity` bytes, a power of two) at position `head`, while they fit beside the
 * `tail` the app has reached; a record that would cross the end of the data area is put
 * after a PAD filler. Returns the records copied; *next is the position in recs after
 * them, *new_head the ring's head to publish, *last_seq the seq of the last one copied.
 * Returns -1 when the first record could never fit the ring. */
MIG_EXPORT int64_t mig_ring_fill(unsigned char *data, uint64_t capacity, uint64_t head,
                                 uint64_t tail, const unsigned char *recs, uint64_t len,
                                 uint64_t from, uint64_t *next, uint64_t *new_head,
                                 uint64_t *last_seq)
{
    int64_t n = 0;
    uint64_t at = from;
    while (at + sizeof(struct mig_rec) <= len) {
        const struct mig_rec *rec = (const struct mig_rec *)(recs + at);
        uint64_t size = rec->len;
        if (size < sizeof(struct mig_rec) || at + size > len)
            break; /* (not a record of mig_decode_calls: nothing more to copy) */
        if (size > capacity)
            return n ? n : -1;
        uint64_t pos = head & (capacity - 1), room = capacity - pos;
        uint64_t need = size + (room < size ? room : 0);
        if (need > capacity - (head - tail))
            break;
        if (room < size) {
            struct mig_rec pad;
            memset(&pad, 0, 8);
            pad.len = (uint32_t)room;
            pad.flags = MIG_F_PAD;
            memcpy(data + pos, &pad, 8);
            head += room;
            pos = 0;
        }
        memcpy(data + pos, rec, size);
        head += size;
        *last_seq = rec->seq;
        at += size;
        n++;
    }
    *next = at;
    *new_head = head;
    return n;
}
