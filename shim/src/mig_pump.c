/* mig_pump.c -- the recorder's hot path in native code: a ring's records become CallBatch
 * values produced to Kafka, and each acknowledgement releases the barriers it covers,
 * with no Python per batch (issue 18: the agent's Python per acknowledgement cycle was a
 * fifth of output mode's CPU).
 *
 * The agent's producer stays confluent_kafka's (transactions, fencing, flush, commit and
 * every other record are Python's, mig/kafka/writer.py). This file is also a librdkafka
 * plugin: the writer sets `plugin.library.paths` to this library, librdkafka calls
 * conf_init() for the producer's configuration, and on_new() hands this file the producer's
 * handle, on which it adds an on_acknowledgement interceptor. mig_pump_drain() encodes a
 * ring's records (mig_encode_calls) and produces them on that handle; librdkafka calls
 * on_ack() from its broker thread when every in-sync replica has a batch, and the batches
 * acknowledged in the order they were sent, up to the first still in flight, raise their
 * rings' committed_seq and wake the threads waiting on it (group commit, as
 * mig/member/commit.py did in Python). A batch's delivery report still reaches
 * confluent_kafka's poll, which skips it: its per-message state is NULL.
 *
 * librdkafka is the one confluent_kafka loaded (no second copy, no headers at build time):
 * mig_pump_bind() opens it by the path Python found in /proc/self/maps and takes the few
 * functions used here; their declarations below follow librdkafka's stable C API
 * (rdkafka.h). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "mig_hmac.h"
#include "mig_ring.h"

#define MIG_EXPORT __attribute__((visibility("default")))

/* -- the part of librdkafka's API used here (rdkafka.h) */
typedef struct rd_kafka_s rd_kafka_t;
typedef struct rd_kafka_conf_s rd_kafka_conf_t;
typedef struct rd_kafka_error_s rd_kafka_error_t;
typedef int rk_err_t;

typedef struct {
    rk_err_t err;
    void *rkt;
    int32_t partition;
    void *payload;
    size_t len;
    void *key;
    size_t key_len;
    int64_t offset;
    void *_private;
} rk_message_t;

enum { VT_END, VT_TOPIC, VT_RKT, VT_PARTITION, VT_VALUE, VT_KEY, VT_OPAQUE, VT_MSGFLAGS,
       VT_TIMESTAMP, VT_HEADER, VT_HEADERS };
typedef struct {
    int vtype;
    union {
        const char *cstr;
        void *ptr;
        int i;
        struct { void *ptr; size_t size; } mem;
        struct { const char *name; const void *val; ssize_t size; } header;
        char _pad[64];
    } u;
} rk_vu_t;

#define RK_MSG_F_FREE 0x1
#define RK_ERR_QUEUE_FULL (-184)
#define RK_PARTITION_UA (-1)

typedef rk_err_t (*on_new_f)(rd_kafka_t *, const rd_kafka_conf_t *, void *, char *, size_t);
typedef rk_err_t (*on_ack_f)(rd_kafka_t *, rk_message_t *, void *);
typedef rk_err_t (*on_destroy_f)(rd_kafka_t *, void *);

static struct {
    rk_err_t (*add_on_new)(rd_kafka_conf_t *, const char *, on_new_f, void *);
    rk_err_t (*add_on_ack)(rd_kafka_t *, const char *, on_ack_f, void *);
    rk_err_t (*add_on_destroy)(rd_kafka_t *, const char *, on_destroy_f, void *);
    rd_kafka_error_t *(*produceva)(rd_kafka_t *, const rk_vu_t *, size_t);
    rk_err_t (*error_code)(const rd_kafka_error_t *);
    const char *(*error_string)(const rd_kafka_error_t *);
    void (*error_destroy)(rd_kafka_error_t *);
    const char *(*err2str)(rk_err_t);
} rk;

/* -- the recorder's encoder (mig_encode.c): a batch's calls, and its fields before them */
uint64_t mig_encode_calls(const unsigned char *data, uint64_t capacity, uint64_t from,
                          uint64_t to, const unsigned char *kind_index, unsigned char *out,
                          uint64_t out_cap, uint64_t *next, uint64_t *count,
                          uint64_t *first_seq, uint64_t *last_seq);
uint64_t mig_encode_batch_head(unsigned char *out, const unsigned char *prefix,
                               uint64_t prefix_len, const char *app, int64_t epoch,
                               const char *lpid, int64_t batch_seq, int64_t first_seq,
                               int64_t sent_ns, int64_t count);

#define PARTITIONS 256 /* the acknowledged offsets kept, by partition of the calls topic */

struct batch {          /* one CallBatch sent, not yet released */
    void *payload;      /* identifies it in on_ack (librdkafka frees it after) */
    struct mig_ring_hdr *ring;
    uint64_t upto;      /* seq after its last call */
    int64_t sent_ns;    /* CLOCK_MONOTONIC, for the commit latency */
    int state;          /* 0 in flight, 1 acknowledged */
};

struct mig_pump {
    pthread_mutex_t lock;
    rd_kafka_t *rk;            /* set by on_new, cleared by on_destroy */
    char topic[256];
    char app[256];
    char header_name[64];
    unsigned char header_val[256];
    size_t header_len;
    unsigned char prefix[16];  /* single-object encoding: magic and fingerprint */
    size_t prefix_len;
    unsigned char kinds[256];  /* ring kind -> CallKind symbol index */
    unsigned char *scratch;    /* the calls of one batch, encoded */
    uint64_t limit;
    struct batch *fifo;        /* circular, in send order */
    size_t cap, first, n;
    int64_t acked_offset[PARTITIONS]; /* the highest acknowledged, -1 for none */
    rk_err_t err;              /* the first refusal, 0 while none */
    char err_text[512];
    uint32_t lat_us[1024];     /* commit latencies of released batches, for the metrics */
    uint64_t lat_n;            /* written so far (the agent reads what it has not) */
    /* signed records (mig_pump_sign): the mig.auth header, KID:HEX, mig/wire/auth.py */
    int signing;
    struct mig_hmac key;
    char auth_name[64];
    char kid[72];
    char role[32];
};

static pthread_mutex_t new_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mig_pump *pending; /* the pump the next producer made belongs to */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void wake_all(uint32_t *word)
{
    __atomic_fetch_add(word, 1, __ATOMIC_RELEASE);
    syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* Open the librdkafka mapped at `path` (already loaded: RTLD_NOLOAD) and take the
 * functions used here. 0, or -1 with `why` said. */
MIG_EXPORT int mig_pump_bind(const char *path, char *why, size_t why_len)
{
    void *lib = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (!lib) {
        snprintf(why, why_len, "%s is not loaded: %s", path, dlerror());
        return -1;
    }
    static const char *const names[] = {
        "rd_kafka_conf_interceptor_add_on_new", "rd_kafka_interceptor_add_on_acknowledgement",
        "rd_kafka_interceptor_add_on_destroy", "rd_kafka_produceva", "rd_kafka_error_code",
        "rd_kafka_error_string", "rd_kafka_error_destroy", "rd_kafka_err2str"};
    void *fns[sizeof(names) / sizeof(names[0])];
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        fns[i] = dlsym(lib, names[i]);
        if (!fns[i]) {
            snprintf(why, why_len, "%s has no %s", path, names[i]);
            return -1;
        }
    }
    memcpy(&rk, fns, sizeof(rk));
    return 0;
}

MIG_EXPORT struct mig_pump *mig_pump_new(const char *topic, const char *app,
                                         const char *header_name,
                                         const unsigned char *header_val, size_t header_len,
                                         const unsigned char *prefix, size_t prefix_len,
                                         const unsigned char *kinds, uint64_t limit)
{
    struct mig_pump *p = calloc(1, sizeof(*p));
    if (!p || strlen(topic) >= sizeof(p->topic) || strlen(app) >= sizeof(p->app)
        || strlen(header_name) >= sizeof(p->header_name) || header_len > sizeof(p->header_val)
        || prefix_len > sizeof(p->prefix) || limit < 1024)
        goto fail;
    pthread_mutex_init(&p->lock, NULL);
    strcpy(p->topic, topic);
    strcpy(p->app, app);
    strcpy(p->header_name, header_name);
    memcpy(p->header_val, header_val, header_len);
    p->header_len = header_len;
    memcpy(p->prefix, prefix, prefix_len);
    p->prefix_len = prefix_len;
    memcpy(p->kinds, kinds, 256);
    p->limit = limit;
    p->scratch = malloc(limit);
    p->cap = 1024;
    p->fifo = calloc(p->cap, sizeof(*p->fifo));
    if (!p->scratch || !p->fifo)
        goto fail;
    for (int i = 0; i < PARTITIONS; i++)
        p->acked_offset[i] = -1;
    return p;
fail:
    if (p) {
        free(p->scratch);
        free(p->fifo);
        free(p);
    }
    return NULL;
}

/* Sign every batch from here on as mig/wire/auth.py's Auth.sign does: a `header` (mig.auth)
 * of `kid`:HEX, the HMAC-SHA256 under `secret` of "mig1\0ROLE\0KEY\0V" and the value.
 * 0, or -1 when a name does not fit. */
MIG_EXPORT int mig_pump_sign(struct mig_pump *p, const char *header, const char *role,
                             const char *kid, const unsigned char *secret, size_t len)
{
    if (strlen(header) >= sizeof(p->auth_name) || strlen(role) >= sizeof(p->role) ||
        strlen(kid) >= sizeof(p->kid))
        return -1;
    strcpy(p->auth_name, header);
    strcpy(p->role, role);
    strcpy(p->kid, kid);
    mig_hmac_key(&p->key, secret, len);
    p->signing = 1;
    return 0;
}

/* The signature header's value of one batch, "KID:HEX" (its length). */
static size_t sign(const struct mig_pump *p, const char *lpid, const unsigned char *value,
                   size_t len, char *out)
{
    struct mig_sha256 s;
    unsigned char d[32];
    mig_hmac_start(&p->key, &s);
    mig_sha256_add(&s, "mig1", 5); /* (with its NUL) */
    mig_sha256_add(&s, p->role, strlen(p->role) + 1);
    mig_sha256_add(&s, lpid, strlen(lpid) + 1);
    mig_sha256_add(&s, "V", 1);
    mig_sha256_add(&s, value, len);
    mig_hmac_end(&p->key, &s, d);
    size_t k = strlen(p->kid);
    memcpy(out, p->kid, k);
    out[k] = ':';
    mig_hex(d, 32, out + k + 1);
    return k + 1 + 64;
}

/* The producer made next (by this thread, in confluent_kafka's Producer()) is this pump's. */
MIG_EXPORT void mig_pump_expect(struct mig_pump *p)
{
    pthread_mutex_lock(&new_lock);
    pending = p;
    pthread_mutex_unlock(&new_lock);
}

/* 1 when the producer made since mig_pump_expect() came to this pump. */
MIG_EXPORT int mig_pump_bound(struct mig_pump *p)
{
    pthread_mutex_lock(&p->lock);
    int bound = p->rk != NULL;
    pthread_mutex_unlock(&p->lock);
    return bound;
}

/* Release, in send order, the acknowledged batches up to the first still in flight:
 * their rings' committed_seq rises and the threads waiting on it wake. Holds p->lock. */
static void settle(struct mig_pump *p)
{
    struct mig_ring_hdr *woken[8];
    int nwoken = 0;
    int64_t now = now_ns();
    while (p->n && p->fifo[p->first].state == 1) {
        struct batch *b = &p->fifo[p->first];
        if (b->ring) {
            uint64_t was = __atomic_load_n(&b->ring->committed_seq, __ATOMIC_ACQUIRE);
            if (b->upto > was) {
                __atomic_store_n(&b->ring->committed_seq, b->upto, __ATOMIC_RELEASE);
                int seen = 0;
                for (int i = 0; i < nwoken; i++)
                    seen |= woken[i] == b->ring;
                if (!seen) {
                    if (nwoken == 8) { /* more rings than that in one settle: wake now */
                        wake_all(&woken[7]->commit_futex);
                        nwoken--;
                    }
                    woken[nwoken++] = b->ring;
                }
            }
        }
        int64_t us = (now - b->sent_ns) / 1000;
        p->lat_us[p->lat_n++ % 1024] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
        p->first = (p->first + 1) % p->cap;
        p->n--;
    }
    for (int i = 0; i < nwoken; i++)
        wake_all(&woken[i]->commit_futex);
}

/* Keep the first refusal: its code and "what: why". Holds p->lock. */
static void refused(struct mig_pump *p, rk_err_t code, const char *what, const char *why)
{
    if (p->err)
        return;
    snprintf(p->err_text, sizeof(p->err_text), "%s: %s", what, why);
    __atomic_store_n(&p->err, code, __ATOMIC_RELEASE);
}

static rk_err_t on_ack(rd_kafka_t *rkh, rk_message_t *m, void *opaque)
{
    (void)rkh;
    struct mig_pump *p = opaque;
    pthread_mutex_lock(&p->lock);
    for (size_t i = 0; i < p->n; i++) {
        struct batch *b = &p->fifo[(p->first + i) % p->cap];
        if (b->state != 0 || b->payload != m->payload)
            continue; /* (an acknowledged batch's payload was freed: its address reused) */
        b->payload = NULL;
        if (m->err) { /* never released: the agent raises (mig_pump_error) */
            refused(p, m->err, p->topic, rk.err2str(m->err));
        } else {
            b->state = 1;
            if (m->partition >= 0 && m->partition < PARTITIONS
                && m->offset > p->acked_offset[m->partition])
                p->acked_offset[m->partition] = m->offset;
            settle(p);
        }
        break;
    }
    pthread_mutex_unlock(&p->lock);
    return 0;
}

static rk_err_t on_destroy(rd_kafka_t *rkh, void *opaque)
{
    (void)rkh;
    struct mig_pump *p = opaque;
    pthread_mutex_lock(&p->lock);
    p->rk = NULL;
    pthread_mutex_unlock(&p->lock);
    return 0;
}

static rk_err_t on_new(rd_kafka_t *rkh, const rd_kafka_conf_t *conf, void *opaque, char *errstr,
                       size_t errstr_size)
{
    (void)conf;
    (void)opaque;
    pthread_mutex_lock(&new_lock);
    struct mig_pump *p = pending;
    pending = NULL;
    pthread_mutex_unlock(&new_lock);
    if (!p)
        return 0; /* a producer nobody pumps through */
    if (rk.add_on_ack(rkh, "mig.pump", on_ack, p) || rk.add_on_destroy(rkh, "mig.pump",
                                                                         on_destroy, p)) {
        snprintf(errstr, errstr_size, "mig: cannot add the pump's interceptors");
        return -1;
    }
    pthread_mutex_lock(&p->lock);
    p->rk = rkh;
    pthread_mutex_unlock(&p->lock);
    return 0;
}

/* librdkafka's plugin entry point (plugin.library.paths). */
MIG_EXPORT rk_err_t conf_init(rd_kafka_conf_t *conf, void **plug_opaquep, char *errstr,
                              size_t errstr_size)
{
    (void)plug_opaquep;
    if (!rk.add_on_new) {
        snprintf(errstr, errstr_size, "mig: the pump's library was not bound to librdkafka");
        return -1;
    }
    return rk.add_on_new(conf, "mig.pump", on_new, NULL);
}

/* Encode the records of one ring (its header at `hdr`, `data` its data area of `capacity`
 * bytes, as the agent checked it when it mapped the ring) from position `from` towards `to`, at most `budget` bytes of ring, into CallBatch values and
 * produce them. `*batch_seq` is the process's next batch number (advanced per batch).
 * Returns 0, or: -1 a record that cannot be encoded (at *next), -2 the producer refused a
 * batch (mig_pump_error says why), -3 the producer's queue is full (go on next turn).
 * Whatever the result, *next is the position after the last record sent, and *calls,
 * *batches, *bytes and *last_seq say what was sent. */
MIG_EXPORT int mig_pump_drain(struct mig_pump *p, struct mig_ring_hdr *hdr,
                              const unsigned char *data, uint64_t capacity, uint64_t from,
                              uint64_t to,
                              uint64_t budget, int64_t epoch, const char *lpid,
                              uint64_t *batch_seq, int64_t sent_wall_ns, uint64_t *next,
                              uint64_t *calls, uint64_t *batches, uint64_t *bytes,
                              uint64_t *last_seq)
{
    uint64_t pos = from;
    int rc = 0;
    *calls = *batches = *bytes = 0;
    *next = from;
    if (strlen(lpid) >= sizeof(((struct mig_ring_hdr *)0)->lpid)) {
        pthread_mutex_lock(&p->lock);
        refused(p, -1, p->topic, "a process id longer than a ring's");
        pthread_mutex_unlock(&p->lock);
        return -2;
    }
    while (pos < to && pos - from < budget) {
        uint64_t nxt, count, first, last;
        uint64_t size = mig_encode_calls(data, capacity, pos, to, p->kinds, p->scratch,
                                         p->limit, &nxt, &count, &first, &last);
        if (count == 0) {
            if (nxt == pos) {
                rc = -1; /* malformed or too large: the agent says which */
                break;
            }
            pos = nxt; /* padding only */
            continue;
        }
        unsigned char head[16 + 2 * (10 + 255) + 6 * 10]; /* mig_encode_batch_head's most */
        size_t hlen = mig_encode_batch_head(head, p->prefix, p->prefix_len, p->app, epoch,
                                            lpid, (int64_t)*batch_seq, (int64_t)first,
                                            sent_wall_ns, (int64_t)count);
        size_t total = hlen + size + 1;
        unsigned char *value = malloc(total);
        if (!value) {
            pthread_mutex_lock(&p->lock);
            refused(p, -1, p->topic, "out of memory for a batch");
            pthread_mutex_unlock(&p->lock);
            rc = -2;
            break;
        }
        memcpy(value, head, hlen);
        memcpy(value + hlen, p->scratch, size);
        value[total - 1] = 0; /* the calls array's end */
        rk_vu_t vu[7];
        memset(vu, 0, sizeof(vu));
        vu[0].vtype = VT_TOPIC;
        vu[0].u.cstr = p->topic;
        vu[1].vtype = VT_KEY;
        vu[1].u.mem.ptr = (void *)lpid;
        vu[1].u.mem.size = strlen(lpid);
        vu[2].vtype = VT_VALUE;
        vu[2].u.mem.ptr = value;
        vu[2].u.mem.size = total;
        vu[3].vtype = VT_HEADER;
        vu[3].u.header.name = p->header_name;
        vu[3].u.header.val = p->header_val;
        vu[3].u.header.size = (ssize_t)p->header_len;
        size_t nvu = 5;
        char sig[sizeof(p->kid) + 1 + 64 + 1];
        if (p->signing) {
            vu[nvu].vtype = VT_HEADER;
            vu[nvu].u.header.name = p->auth_name;
            vu[nvu].u.header.val = sig; /* (librdkafka copies a header) */
            vu[nvu++].u.header.size = (ssize_t)sign(p, lpid, value, total, sig);
        }
        vu[4].vtype = VT_MSGFLAGS;
        vu[4].u.i = RK_MSG_F_FREE;
        pthread_mutex_lock(&p->lock);
        if (p->n == p->cap) { /* more in flight than the table holds: make it larger */
            struct batch *bigger = calloc(2 * p->cap, sizeof(*bigger));
            if (!bigger) {
                refused(p, -1, p->topic, "out of memory for a batch");
                pthread_mutex_unlock(&p->lock);
                free(value);
                rc = -2;
                break;
            }
            for (size_t i = 0; i < p->n; i++)
                bigger[i] = p->fifo[(p->first + i) % p->cap];
            free(p->fifo);
            p->fifo = bigger;
            p->first = 0;
            p->cap *= 2;
        }
        struct batch *b = &p->fifo[(p->first + p->n) % p->cap];
        *b = (struct batch){value, hdr, last + 1, now_ns(), 0};
        p->n++; /* before the produce: its acknowledgement finds it */
        rd_kafka_t *producer = p->rk;
        pthread_mutex_unlock(&p->lock);
        /* (not under the lock: librdkafka's broker thread takes it in on_ack) */
        rd_kafka_error_t *error = producer ? rk.produceva(producer, vu, nvu) : NULL;
        pthread_mutex_lock(&p->lock);
        if (error || !producer) {
            p->n--; /* not sent; still the last entry: only this thread adds */
            rk_err_t code = error ? rk.error_code(error) : -1;
            if (code != RK_ERR_QUEUE_FULL)
                refused(p, code, p->topic, error ? rk.error_string(error)
                                                 : "the producer is gone");
            if (error)
                rk.error_destroy(error);
            pthread_mutex_unlock(&p->lock);
            free(value);
            rc = code == RK_ERR_QUEUE_FULL ? -3 : -2;
            break;
        }
        pthread_mutex_unlock(&p->lock);
        (*batch_seq)++;
        *calls += count;
        *batches += 1;
        *bytes += total;
        *last_seq = last;
        pos = nxt;
    }
    *next = pos;
    return rc;
}

/* The first refusal (0 while none) and its text. */
MIG_EXPORT int mig_pump_error(struct mig_pump *p, char *text, size_t len)
{
    pthread_mutex_lock(&p->lock);
    int err = p->err;
    snprintf(text, len, "%s", p->err_text);
    pthread_mutex_unlock(&p->lock);
    return err;
}

/* The first refusal's code, 0 while none (a load, no lock: the agent asks every turn). */
MIG_EXPORT int mig_pump_failed(struct mig_pump *p)
{
    return __atomic_load_n(&p->err, __ATOMIC_ACQUIRE);
}

/* Batches sent and not released (acknowledged ones behind one in flight included). */
MIG_EXPORT uint64_t mig_pump_in_flight(struct mig_pump *p)
{
    pthread_mutex_lock(&p->lock);
    uint64_t n = p->n;
    pthread_mutex_unlock(&p->lock);
    return n;
}

/* The highest acknowledged offset of partitions 0 to max - 1 (-1 for none) into `out`. */
MIG_EXPORT void mig_pump_acked_offsets(struct mig_pump *p, int64_t *out, int max)
{
    pthread_mutex_lock(&p->lock);
    for (int i = 0; i < max; i++)
        out[i] = i < PARTITIONS ? p->acked_offset[i] : -1;
    pthread_mutex_unlock(&p->lock);
}

/* Copy the commit latencies (us) of batches released since `*seen` (at most `max`, the
 * latest ones); returns how many were copied and advances *seen. */
MIG_EXPORT uint64_t mig_pump_latencies(struct mig_pump *p, uint64_t *seen, uint32_t *out,
                                       uint64_t max)
{
    pthread_mutex_lock(&p->lock);
    uint64_t from = *seen, to = p->lat_n;
    if (to - from > 1024)
        from = to - 1024;
    if (to - from > max)
        from = to - max;
    uint64_t n = 0;
    for (uint64_t i = from; i < to; i++)
        out[n++] = p->lat_us[i % 1024];
    *seen = to;
    pthread_mutex_unlock(&p->lock);
    return n;
}

/* Forget every batch in flight (the rings are about to be unmapped, or the producer was
 * replaced): an acknowledgement that comes later touches nothing. */
MIG_EXPORT void mig_pump_forget(struct mig_pump *p)
{
    pthread_mutex_lock(&p->lock);
    for (size_t i = 0; i < p->n; i++)
        p->fifo[(p->first + i) % p->cap].ring = NULL;
    pthread_mutex_unlock(&p->lock);
}

/* Free a pump whose producer is gone (on_destroy ran, or it was never made). 0, or -1
 * while a producer still uses it (then it is kept: a leak, never a use after free). */
MIG_EXPORT int mig_pump_free(struct mig_pump *p)
{
    pthread_mutex_lock(&new_lock);
    if (pending == p)
        pending = NULL;
    pthread_mutex_unlock(&new_lock);
    pthread_mutex_lock(&p->lock);
    int busy = p->rk != NULL;
    pthread_mutex_unlock(&p->lock);
    if (busy)
        return -1;
    free(p->scratch);
    free(p->fifo);
    free(p);
    return 0;
}
