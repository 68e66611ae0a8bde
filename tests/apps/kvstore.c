/* kvstore.c -- the key-value table, dump file and line protocol of the C test apps.
 *
 * See kvstore.h for the protocol and the dump format. These apps are what mig's
 * integration tests record on a primary and replay on a backup, so nothing here may let a
 * pid, a pointer or the hash layout leak into a reply or a dump: ids come from getrandom(),
 * timestamps from clock_gettime(CLOCK_REALTIME) and dump order from a sort by key.
 */
#define _GNU_SOURCE
#include "kvstore.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#define KV_INITIAL_BUCKETS 1024

uint32_t kv_hash(const char *key)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        h ^= *p;
        h *= 16777619u;
    }
    return h;
}

int kv_init(struct kv_store *s)
{
    s->buckets = calloc(KV_INITIAL_BUCKETS, sizeof *s->buckets);
    if (!s->buckets)
        return -1;
    s->nbuckets = KV_INITIAL_BUCKETS;
    s->count = 0;
    s->seq = 0;
    return 0;
}

static void kv_entry_free(struct kv_entry *e)
{
    free(e->key);
    free(e->value);
    free(e);
}

void kv_free(struct kv_store *s)
{
    for (size_t i = 0; i < s->nbuckets; i++) {
        struct kv_entry *e = s->buckets[i], *next;
        for (; e; e = next) {
            next = e->next;
            kv_entry_free(e);
        }
    }
    free(s->buckets);
    s->buckets = NULL;
    s->nbuckets = s->count = 0;
}

/* The link that points at key's entry, or the NULL link at the end of its chain. */
static struct kv_entry **kv_slot(const struct kv_store *s, const char *key)
{
    struct kv_entry **pp = &s->buckets[kv_hash(key) & (s->nbuckets - 1)];
    while (*pp && strcmp((*pp)->key, key) != 0)
        pp = &(*pp)->next;
    return pp;
}

struct kv_entry *kv_get(const struct kv_store *s, const char *key)
{
    return *kv_slot(s, key);
}

/* Doubling keeps chains short up to the ~100k keys the tests use; a failed grow only
 * leaves the chains longer. Entries do not move, so pointers to them stay valid. */
static void kv_grow(struct kv_store *s)
{
    size_t n = s->nbuckets * 2;
    struct kv_entry **b = calloc(n, sizeof *b);
    if (!b)
        return;
    for (size_t i = 0; i < s->nbuckets; i++) {
        struct kv_entry *e = s->buckets[i], *next;
        for (; e; e = next) {
            next = e->next;
            size_t j = kv_hash(e->key) & (n - 1);
            e->next = b[j];
            b[j] = e;
        }
    }
    free(s->buckets);
    s->buckets = b;
    s->nbuckets = n;
}

static int kv_random_id(char out[17])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[8];
    size_t got = 0;
    while (got < sizeof raw) {
        ssize_t n = getrandom(raw + got, sizeof raw - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        got += (size_t)n;
    }
    for (size_t i = 0; i < sizeof raw; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[16] = '\0';
    return 0;
}

struct kv_entry *kv_set(struct kv_store *s, const char *key, const char *value)
{
    char id[17];
    struct timespec ts;
    if (kv_random_id(id) < 0 || clock_gettime(CLOCK_REALTIME, &ts) < 0)
        return NULL;
    char *v = strdup(value);
    if (!v)
        return NULL;
    struct kv_entry **pp = kv_slot(s, key);
    struct kv_entry *e = *pp;
    if (e) {
        free(e->value);
    } else {
        e = calloc(1, sizeof *e);
        if (!e || !(e->key = strdup(key))) {
            free(e);
            free(v);
            errno = ENOMEM;
            return NULL;
        }
        *pp = e;
        s->count++;
    }
    e->value = v;
    memcpy(e->id, id, sizeof e->id);
    e->ts = ts;
    e->seq = ++s->seq;
    if (s->count > s->nbuckets)
        kv_grow(s);
    return e;
}

int kv_del(struct kv_store *s, const char *key)
{
    struct kv_entry **pp = kv_slot(s, key);
    struct kv_entry *e = *pp;
    if (!e)
        return 0;
    *pp = e->next;
    kv_entry_free(e);
    s->count--;
    return 1;
}

static int kv_cmp(const void *a, const void *b)
{
    const struct kv_entry *x = *(struct kv_entry *const *)a;
    const struct kv_entry *y = *(struct kv_entry *const *)b;
    return strcmp(x->key, y->key);
}

long kv_dump(const struct kv_store *s, const char *path, const char *header)
{
    struct kv_entry **all = malloc((s->count ? s->count : 1) * sizeof *all);
    if (!all)
        return -1;
    size_t n = 0;
    for (size_t i = 0; i < s->nbuckets; i++)
        for (struct kv_entry *e = s->buckets[i]; e; e = e->next)
            all[n++] = e;
    qsort(all, n, sizeof *all, kv_cmp);

    FILE *f = fopen(path, "w");
    if (!f) {
        int err = errno;
        free(all);
        errno = err;
        return -1;
    }
    fprintf(f, "%s\n", header);
    for (size_t i = 0; i < n; i++) {
        const struct kv_entry *e = all[i];
        fprintf(f, "%s %s %s %lld.%09ld %llu\n", e->key, e->value, e->id,
                (long long)e->ts.tv_sec, e->ts.tv_nsec, e->seq);
    }
    free(all);
    int failed = ferror(f);
    if (fclose(f) != 0 || failed) {
        if (!errno)
            errno = EIO;
        return -1;
    }
    return (long)n;
}

int kv_split(char *line, char **argv, int max)
{
    int argc = 0;
    char *p = line;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            return argc;
        if (argc == max)
            return max + 1;
        argv[argc++] = p;
        while (*p && *p != ' ' && *p != '\t')
            p++;
        if (*p)
            *p++ = '\0';
    }
}

int kv_command(struct kv_store *s, int argc, char **argv, char *reply, size_t cap)
{
    if (argc < 1)
        return 0;
    if (strcmp(argv[0], "SET") == 0) {
        struct kv_entry *e;
        if (argc != 3)
            snprintf(reply, cap, "ERR usage: SET key value");
        else if (!(e = kv_set(s, argv[1], argv[2])))
            snprintf(reply, cap, "ERR set: %s", strerror(errno));
        else
            snprintf(reply, cap, "OK %s", e->id);
    } else if (strcmp(argv[0], "GET") == 0) {
        const struct kv_entry *e;
        if (argc != 2)
            snprintf(reply, cap, "ERR usage: GET key");
        else if ((e = kv_get(s, argv[1])))
            snprintf(reply, cap, "VALUE %s %s", e->value, e->id);
        else
            snprintf(reply, cap, "NONE");
    } else if (strcmp(argv[0], "DEL") == 0) {
        if (argc != 2)
            snprintf(reply, cap, "ERR usage: DEL key");
        else
            snprintf(reply, cap, "%s", kv_del(s, argv[1]) ? "DELETED" : "NONE");
    } else {
        return 0;
    }
    return 1;
}

int kv_has_line(const char *buf, size_t len)
{
    return memchr(buf, '\n', len) != NULL;
}

int kv_pop_line(char *buf, size_t *len, size_t cap, char *line)
{
    char *nl = memchr(buf, '\n', *len);
    if (!nl)
        return *len >= cap ? -1 : 0;
    size_t n = (size_t)(nl - buf); /* n < *len <= cap, so the NUL fits */
    memcpy(line, buf, n);
    line[n] = '\0';
    if (n > 0 && line[n - 1] == '\r')
        line[n - 1] = '\0';
    memmove(buf, nl + 1, *len - n - 1);
    *len -= n + 1;
    return 1;
}

int kv_buf_add(struct kv_buf *b, const char *p, size_t n)
{
    if (b->off > 0 && b->len + n > b->cap) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d)
            return -1;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int kv_buf_addline(struct kv_buf *b, const char *line)
{
    if (kv_buf_add(b, line, strlen(line)) < 0)
        return -1;
    return kv_buf_add(b, "\n", 1);
}

size_t kv_buf_pending(const struct kv_buf *b)
{
    return b->len - b->off;
}

int kv_buf_flush(struct kv_buf *b, int fd, int is_socket)
{
    while (b->off < b->len) {
        const char *p = b->data + b->off;
        size_t n = b->len - b->off;
        ssize_t w = is_socket ? send(fd, p, n, MSG_NOSIGNAL) : write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return -1;
        }
        b->off += (size_t)w;
    }
    b->off = b->len = 0;
    return 0;
}

void kv_buf_free(struct kv_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->off = b->len = b->cap = 0;
}

int kv_listen(const char *addr, int port)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
        errno = EINVAL;
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 128) < 0) {
        int err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    return fd;
}

long kv_parse_num(const char *s, long max)
{
    if (!*s)
        return -1;
    long v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (*s - '0');
        if (v > max)
            return -1;
    }
    return v;
}
