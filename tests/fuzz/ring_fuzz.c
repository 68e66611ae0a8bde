/* ring_fuzz.c -- fuzzing of the C code that reads ring records, under AddressSanitizer and
 * UndefinedBehaviorSanitizer (see Makefile here and docs/fuzzing.md).
 *
 * Two readers of a ring's data area are driven over corrupt rings, and the replica's
 * decoder over what the first wrote:
 *   - mig_encode_calls (shim/src/mig_encode.c, compiled in below): record mode, ring bytes
 *     to Avro Call items. Its output is decoded again here: it must be exactly `count`
 *     well-formed Call items filling the bytes it said it wrote;
 *   - the replay side of the shim (shim/src/mig_replay.c, tail_record/take/mig_replay_done):
 *     that code lives among the interposer's globals, futexes and TLS, so `replay_walk`
 *     below repeats its steps around the same check, mig_rec_problem (mig_ring.h): check
 *     the record at the tail, skip padding, hand out args, result and payload (every
 *     payload byte is copied, so a payload outside the data area is caught), move the tail.
 * The data area is its own heap block of exactly `capacity` bytes, so any read past it
 * lands in ASan's redzone; so does any write past the encoder's output buffer.
 *
 * Usage:
 *   ring_fuzz [-n ITERATIONS] [-t SECONDS] [-s SEED]   the mutational loop (seeded)
 *   ring_fuzz FILE...                                  each file is one input
 * An input file: u64 from, u64 span (to = from + span), u32 out_cap, u32 capacity_log2
 * (clamped to 6..16), then the data area's bytes (zero-filled / cut to capacity).
 * Prints one summary line; exits 0 unless an invariant breaks (sanitizer errors abort). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mig_encode.c"
#include "mig_decode.c"

#define MAX_CAP (1u << 16)
#define IN_HDR 24

struct stats {
    unsigned long inputs, refused, encoded, replayed, pads;
};

static void fail(const char *what, unsigned long input)
{
    fprintf(stderr, "ring_fuzz: invariant broken on input %lu: %s\n", input, what);
    exit(1);
}

/* -- a reader of the encoder's output (Avro binary of mig.log.Call items) ---------------- */

static int get_long(const unsigned char **p, const unsigned char *end, int64_t *v)
{
    uint64_t n = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (*p >= end)
            return -1;
        unsigned char b = *(*p)++;
        n |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = (int64_t)(n >> 1) ^ -(int64_t)(n & 1);
            return 0;
        }
    }
    return -1;
}

static int get_bytes(const unsigned char **p, const unsigned char *end, int64_t *len)
{
    if (get_long(p, end, len) || *len < 0 || *len > end - *p)
        return -1;
    *p += *len;
    return 0;
}

/* 0 when `out[0..size)` is exactly `count` Call items. */
static int check_calls(const unsigned char *out, uint64_t size, uint64_t count)
{
    const unsigned char *p = out, *end = out + size;
    int64_t v, len;
    for (uint64_t i = 0; i < count; i++) {
        if (get_long(&p, end, &v) || v < 0 || v > 0x7fffffff) /* tid: an int */
            return -1;
        if (get_long(&p, end, &v) || get_long(&p, end, &v)) /* seq, kind */
            return -1;
        if (v < 0 || v >= 55) /* CallKind has 55 symbols */
            return -1;
        if (get_long(&p, end, &v) || v != 4) /* args: one block of 4 */
            return -1;
        for (int a = 0; a < 4; a++)
            if (get_long(&p, end, &v))
                return -1;
        if (get_long(&p, end, &v) || v != 0) /* end of the array */
            return -1;
        if (get_long(&p, end, &v) || get_long(&p, end, &v)) /* result, err */
            return -1;
        if (v < INT32_MIN || v > INT32_MAX)
            return -1;
        if (get_long(&p, end, &v) || (v != 0 && v != 1)) /* payload: null or bytes */
            return -1;
        if (v == 1 && get_bytes(&p, end, &len))
            return -1;
        if (get_long(&p, end, &v) || (v != 0 && v != 1)) /* out_len */
            return -1;
        int output = v == 1;
        if (output && get_long(&p, end, &v))
            return -1;
        if (get_long(&p, end, &v) || v != output) /* out_hash, given with out_len */
            return -1;
        if (output && (get_bytes(&p, end, &len) || len != 8))
            return -1;
        if (get_long(&p, end, &v)) /* wall_ns */
            return -1;
    }
    return p == end ? 0 : -1;
}

/* -- the replica's decoder (shim/src/mig_decode.c) --------------------------------------- */

#define NSYM 59 /* symbols of the CallKind enum */

static uint16_t sym_kind[NSYM]; /* symbol i -> ring kind 100 + i (set in main) */
static unsigned char kinds[256]; /* ring kind -> symbol (set in main) */
static uint64_t below(uint64_t n);

/* The same calls as a whole CallBatch value (a 10-byte prefix, the batch's own fields,
 * the calls) through mig_decode_batch: its fields and calls come back; the value damaged
 * (in its fields or its calls) or cut short is decoded or refused, never read or written
 * out of bounds. */
static void decode_batch_back(const unsigned char *arr, uint64_t alen, uint64_t cap,
                              uint64_t count, unsigned long input)
{
    unsigned char *value = malloc(alen + 64), *p = value;
    if (!value)
        abort();
    memset(p, 0xc3, 10); /* the single-object prefix, skipped */
    p += 10;
    p = put_long(p, 4);
    memcpy(p, "shop", 4);
    p += 4;
    p = put_long(p, 3);
    p = put_long(p, 3);
    memcpy(p, "1.2", 3);
    p += 3;
    p = put_long(p, 7);
    p = put_long(p, 1234);
    p = put_long(p, 12345);
    memcpy(p, arr, alen);
    uint64_t vlen = (uint64_t)(p - value) + alen;
    unsigned char *dec = malloc(cap ? cap : 1);
    int64_t f[8];
    char why[200];
    uint64_t used = 0, n = 0, last = 0;
    if (!dec)
        abort();
    if (mig_decode_batch(value, vlen, 10, sym_kind, NSYM, dec, cap, f, &used, &n, &last, why,
                         sizeof why) != 0 || n != count || used != cap || f[0] != 11
        || f[1] != 4 || f[2] != 3 || memcmp(value + f[3], "1.2", 3) || f[4] != 3 || f[5] != 7
        || f[6] != 1234 || f[7] != 12345)
        fail("mig_decode_batch does not take back the batch", input);
    uint64_t span = vlen - 10; /* the batch's own fields, or anywhere after the prefix */
    if (below(2) && span > 20)
        span = 20;
    int damage = 1 + (int)below(4);
    for (int i = 0; i < damage; i++)
        value[10 + below(span)] ^= (unsigned char)(1 + below(255));
    uint64_t cut = vlen - below(2) * below(vlen + 1);
    int rc = mig_decode_batch(value, cut, 10, sym_kind, NSYM, dec, cap, f, &used, &n, &last,
                              why, sizeof why);
    if (rc != 0 && rc != -1 && rc != -2)
        fail("mig_decode_batch returned an unknown code", input);
    if (rc == 0 && (used > cap || f[0] < 10 || f[0] + f[1] > (int64_t)cut || f[3] < 10
                    || f[3] + f[4] > (int64_t)cut))
        fail("mig_decode_batch read or wrote out of bounds", input);
    free(dec);
    free(value);
}

/* The encoder's `count` Call items, as CallBatch.calls (one block, then the end), must
 * come back from mig_decode_calls as the records the encoder read; a damaged copy is
 * decoded or refused, never read or written out of bounds (every buffer is its own heap
 * block of exactly its size). */
static void decode_back(const unsigned char *data, uint64_t capacity, uint64_t from,
                        uint64_t next, const unsigned char *out, uint64_t size, uint64_t count,
                        unsigned long input)
{
    unsigned char *arr = malloc(size + 12);
    if (!arr)
        abort();
    unsigned char *p = put_long(arr, (int64_t)count);
    memcpy(p, out, size);
    p += size;
    *p++ = 0;
    uint64_t alen = (uint64_t)(p - arr), cap = 0;
    for (uint64_t pos = from; pos < next;) { /* the records' own lengths, padded to 8 */
        const struct mig_rec *rec = (const struct mig_rec *)(data + (pos & (capacity - 1)));
        if (!(rec->flags & MIG_F_PAD))
            cap += (sizeof *rec + rec->payload_len + 7) & ~7ull;
        pos += rec->len;
    }
    unsigned char *dec = malloc(cap ? cap : 1);
    char why[200];
    uint64_t used = 0, n = 0, last = 0;
    if (!dec)
        abort();
    if (mig_decode_calls(arr, alen, sym_kind, NSYM, dec, cap, &used, &n, &last, why,
                         sizeof why) != 0 || n != count || used != cap)
        fail("the decoder does not take back what the encoder wrote", input);
    uint64_t at = 0;
    for (uint64_t pos = from; pos < next;) {
        const struct mig_rec *rec = (const struct mig_rec *)(data + (pos & (capacity - 1)));
        pos += rec->len;
        if (rec->flags & MIG_F_PAD)
            continue;
        const struct mig_rec *got = (const struct mig_rec *)(dec + at);
        int output = (rec->flags & MIG_F_OUTPUT) != 0;
        if (got->kind != sym_kind[kinds[rec->kind < 256 ? rec->kind : 0]] || got->tid != rec->tid
            || got->seq != rec->seq || got->result != rec->result || got->err != rec->err
            || memcmp(got->args, rec->args, sizeof rec->args) || got->wall_ns != rec->wall_ns
            || got->flags != (output ? MIG_F_OUTPUT : 0)
            || (output && (got->out_len != rec->out_len || got->out_hash != rec->out_hash))
            || got->payload_len != rec->payload_len
            || memcmp(got + 1, rec + 1, rec->payload_len))
            fail("a decoded record differs from the one encoded", input);
        at += got->len;
    }
    decode_batch_back(arr, alen, cap, count, input);
    int damage = 1 + (int)below(4);
    for (int i = 0; i < damage; i++)
        arr[below(alen)] ^= (unsigned char)(1 + below(255));
    uint64_t small = below(2) ? cap : below(cap + 1);
    unsigned char *dec2 = malloc(small ? small : 1);
    if (!dec2)
        abort();
    int rc = mig_decode_calls(arr, alen - below(2), sym_kind, NSYM, dec2, small, &used, &n,
                              &last, why, sizeof why);
    if (rc != 0 && rc != -1 && rc != -2)
        fail("the decoder returned an unknown code", input);
    if (rc == 0 && used > small)
        fail("the decoder wrote more than its output holds", input);
    free(dec2);
    free(dec);
    free(arr);
}

/* -- the replay side's steps (mig_replay.c) ---------------------------------------------- */

static volatile uint64_t sink;

/* Returns the records handed out; *refused is set when a corrupt record stopped it. */
static uint64_t replay_walk(const unsigned char *data, uint64_t capacity, uint64_t tail,
                            uint64_t head, int *refused, unsigned long *pads)
{
    uint64_t taken = 0;
    *refused = 0;
    while (head > tail) {
        if (mig_rec_problem(data, capacity, tail, head)) {
            *refused = 1; /* the shim reports it as a divergence and exits */
            break;
        }
        const struct mig_rec *rec = (const struct mig_rec *)(data + (tail & (capacity - 1)));
        if (rec->flags & MIG_F_PAD) {
            tail += rec->len;
            (*pads)++;
            continue;
        }
        /* take(): kind, args, result, err, the payload handed to the wrapper */
        uint64_t acc = rec->kind + rec->tid + rec->seq + (uint64_t)rec->result + rec->out_len
                       + rec->out_hash + (uint64_t)rec->err;
        for (int i = 0; i < 4; i++)
            acc += (uint64_t)rec->args[i];
        unsigned char *copy = malloc(rec->payload_len ? rec->payload_len : 1);
        if (!copy)
            abort();
        memcpy(copy, rec + 1, rec->payload_len); /* what input_call() gives the app */
        for (uint32_t i = 0; i < rec->payload_len; i++)
            acc += copy[i];
        free(copy);
        sink = acc;
        tail += rec->len; /* mig_replay_done() */
        taken++;
    }
    return taken;
}

/* -- one input ------------------------------------------------------------------------- */

struct input {
    uint64_t from, span;
    uint32_t out_cap, cap_log2;
    unsigned char data[MAX_CAP];
};

static void run_one(const struct input *in, struct stats *st)
{
    uint32_t log2 = in->cap_log2 < 6 ? 6 : in->cap_log2 > 16 ? 16 : in->cap_log2;
    uint64_t capacity = 1ull << log2;
    unsigned char *data = malloc(capacity); /* exactly the area: past it is a redzone */
    uint64_t out_cap = in->out_cap % (1u << 17);
    unsigned char *out = malloc(out_cap ? out_cap : 1);
    if (!data || !out)
        abort();
    memcpy(data, in->data, capacity);
    uint64_t from = in->from, to = in->from + in->span;
    st->inputs++;

    uint64_t next = ~0ull, count = ~0ull, first = 0, last = 0;
    uint64_t size = mig_encode_calls(data, capacity, from, to, kinds, out, out_cap, &next,
                                     &count, &first, &last);
    if (size > out_cap)
        fail("encoder wrote more than out_cap", st->inputs);
    if (from < to && (next < from || next > to))
        fail("encoder's next position outside [from, to]", st->inputs);
    if (count && next == from)
        fail("encoder took records without moving", st->inputs);
    if (check_calls(out, size, count))
        fail("encoder's output is not `count` well-formed Call items", st->inputs);
    /* every record it stepped over passes the check; where it stopped short, a malformed
     * record, a full output, or the end */
    uint64_t seen = 0;
    for (uint64_t pos = from; pos < next;) {
        if (mig_rec_problem(data, capacity, pos, to))
            fail("encoder took a record the check refuses", st->inputs);
        const struct mig_rec *rec = (const struct mig_rec *)(data + (pos & (capacity - 1)));
        seen += !(rec->flags & MIG_F_PAD);
        pos += rec->len;
    }
    if (seen != count)
        fail("encoder's count differs from the records it stepped over", st->inputs);
    st->encoded += count;
    if (count)
        decode_back(data, capacity, from, next, out, size, count, st->inputs);

    int refused;
    st->replayed += replay_walk(data, capacity, from, to, &refused, &st->pads);
    st->refused += refused;
    free(out);
    free(data);
}

/* -- the mutational loop ----------------------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
    uint64_t x = rng_state; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static uint64_t below(uint64_t n)
{
    return n ? rnd() % n : 0;
}

/* A valid ring: records of random sizes from a random position, padding at the wrap. */
static void seed_input(struct input *in)
{
    in->cap_log2 = 8 + (uint32_t)below(5); /* 256 .. 4096 */
    uint64_t cap = 1ull << in->cap_log2;
    memset(in->data, 0, sizeof in->data);
    uint64_t base = below(4) == 0 ? (~0ull - cap * 4) & ~7ull : below(1ull << 40) * 8;
    uint64_t pos = base, used = 0;
    int n = (int)below(8);
    for (int i = 0; i < n; i++) {
        uint32_t plen = (uint32_t)(below(3) ? below(40) : below(cap / 2));
        uint32_t len = (uint32_t)((sizeof(struct mig_rec) + plen + 7) & ~7u);
        uint64_t room = cap - (pos & (cap - 1));
        uint64_t need = len + (room < len ? room : 0);
        if (used + need > cap)
            break;
        if (room < len) {
            struct mig_rec *pad = (struct mig_rec *)(in->data + (pos & (cap - 1)));
            pad->len = (uint32_t)room;
            pad->flags = MIG_F_PAD;
            pos += room;
            used += room;
        }
        struct mig_rec *rec = (struct mig_rec *)(in->data + (pos & (cap - 1)));
        rec->len = len;
        rec->kind = (uint16_t)below(60);
        rec->flags = below(2) ? MIG_F_OUTPUT : 0;
        rec->tid = (uint32_t)below(4);
        rec->err = (int32_t)below(200) - 100;
        rec->seq = (uint64_t)i + below(1ull << 40);
        rec->result = (int64_t)rnd();
        for (int a = 0; a < 4; a++)
            rec->args[a] = (int64_t)rnd() >> below(64);
        rec->wall_ns = rnd() >> 1;
        rec->out_len = below(1 << 20);
        rec->out_hash = rnd();
        rec->payload_len = plen;
        for (uint32_t b = 0; b < plen; b++)
            ((unsigned char *)(rec + 1))[b] = (unsigned char)rnd();
        pos += len;
        used += len;
    }
    in->from = base;
    in->span = pos - base;
    in->out_cap = below(4) ? 1u << 16 : (uint32_t)below(1024);
}

static const uint64_t interesting[] = {0, 1, 7, 8, 16, 88, 92, 95, 96, 97, 104, 248, 256,
                                       4088, 4096, 65536, 0x7fffffff, 0x80000000, 0xfffffff8,
                                       0xffffffff};
#define N_INTERESTING (sizeof interesting / sizeof interesting[0])

static void mutate(struct input *in)
{
    uint64_t cap = 1ull << in->cap_log2;
    int ops = 1 + (int)below(4);
    for (int i = 0; i < ops; i++) {
        /* a record-like spot: a multiple of 8 near the records, often one's header */
        uint64_t at = ((in->from + below(in->span + 8)) & (cap - 1)) & ~7ull;
        if (at > MAX_CAP - sizeof(struct mig_rec)) /* a header's fields stay inside in->data */
            at = MAX_CAP - sizeof(struct mig_rec);
        struct mig_rec *rec = (struct mig_rec *)(in->data + at);
        uint64_t v = below(2) ? interesting[below(N_INTERESTING)] : rnd();
        switch (below(12)) {
        case 0: in->data[below(cap)] ^= (unsigned char)(1u << below(8)); break;
        case 1: rec->len = (uint32_t)v; break;
        case 2: rec->len = (uint32_t)(rec->len + 8 * (below(5) - 2)); break;
        case 3: rec->flags ^= (uint16_t)(below(2) ? MIG_F_PAD : v); break;
        case 4: rec->kind = (uint16_t)v; break;
        case 5: rec->tid = (uint32_t)v; break;
        case 6: rec->payload_len = (uint32_t)v; break;
        case 7: rec->payload_len = (uint32_t)(rec->payload_len + below(17) - 8); break;
        case 8: in->from += below(3) ? 8 * (below(5) - 2) : below(8); break;
        case 9: in->span = below(2) ? in->span + 8 * (below(9) - 4) : v; break;
        case 10: in->out_cap = (uint32_t)(below(2) ? v : below(400)); break;
        default: in->cap_log2 = (uint32_t)(6 + below(11)); break;
        }
    }
}

static int read_file(const char *path, struct input *in)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    unsigned char head[IN_HDR] = {0};
    size_t got = fread(head, 1, sizeof head, f);
    memset(in, 0, sizeof *in);
    if (got == sizeof head) {
        memcpy(&in->from, head, 8);
        memcpy(&in->span, head + 8, 8);
        memcpy(&in->out_cap, head + 16, 4);
        memcpy(&in->cap_log2, head + 20, 4);
        size_t n = fread(in->data, 1, sizeof in->data, f);
        (void)n;
    }
    fclose(f);
    return 0;
}

int main(int argc, char **argv)
{
    unsigned long iterations = 100000;
    double seconds = 0;
    uint64_t seed = 1;
    int files = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-n") && i + 1 < argc)
            iterations = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "-t") && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "-s") && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 10);
        else
            files = 1;
    }
    for (int k = 0; k < 256; k++)
        kinds[k] = (unsigned char)(k % 55);
    for (int i = 0; i < NSYM; i++)
        sym_kind[i] = (uint16_t)(100 + i);
    static struct input in;
    struct stats st = {0};
    if (files) {
        for (int i = 1; i < argc; i++) {
            if (read_file(argv[i], &in)) {
                fprintf(stderr, "ring_fuzz: cannot read %s\n", argv[i]);
                return 2;
            }
            run_one(&in, &st);
        }
    } else {
        rng_state = seed * 0x9E3779B97F4A7C15ull | 1;
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (unsigned long i = 0; seconds > 0 || i < iterations; i++) {
            if (seconds > 0 && i % 1024 == 0) {
                clock_gettime(CLOCK_MONOTONIC, &t);
                if ((double)(t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 > seconds)
                    break;
            }
            if (i % 16 == 0 || below(8) == 0)
                seed_input(&in); /* start again from a valid ring now and then */
            if (i % 16)
                mutate(&in);
            run_one(&in, &st);
        }
    }
    printf("ring_fuzz: %lu inputs, %lu refused as corrupt, %lu records encoded, %lu replayed,"
           " %lu pads skipped\n", st.inputs, st.refused, st.encoded, st.replayed, st.pads);
    return 0;
}
