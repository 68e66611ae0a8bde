/* kvstore.h -- the key-value table, dump file and line protocol the C test apps share.
 *
 * kvserver (epoll), workers (fork + pipes + poll) and sigselect (select + signals) are the
 * programs mig's integration tests record on a primary and replay on a backup; they know
 * nothing of mig. They differ in how they wait and how many processes they are, and share
 * this module for what they store.
 *
 * The rule every function here keeps: what a DUMP writes follows only from the requests,
 * the clocks and the randomness the program saw -- ids from getrandom(), timestamps from
 * clock_gettime(CLOCK_REALTIME), order from a sort by key. Never a pid, a pointer or the
 * hash table's layout, so a faithful replay writes the same bytes.
 *
 * Protocol (one request line in, one reply line out; tokens split on spaces and tabs):
 *   SET key value  -> OK <id>               id: 16 hex chars from getrandom()
 *   GET key        -> VALUE <value> <id> | NONE
 *   DEL key        -> DELETED | NONE
 *   anything wrong -> ERR <reason>
 * The apps add DUMP path, QUIT and their own verbs on top (see each file's first comment).
 *
 * Dump file: a header line "<app> entries=<n> [name=value ...]", then one line per entry
 * sorted by key (strcmp): "key value id sec.nsec seq" where sec.nsec is the CLOCK_REALTIME
 * of the SET and seq counts the SETs this table has performed.
 */
#ifndef KVSTORE_H
#define KVSTORE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define KV_MAX_LINE 4096               /* longest request, newline included */
#define KV_MAX_REPLY (KV_MAX_LINE + 64) /* VALUE <value> <id> of the longest value */
#define KV_MAX_ARGS 8

struct kv_entry {
    struct kv_entry *next; /* hash chain */
    char *key;
    char *value;
    char id[17];
    struct timespec ts;     /* CLOCK_REALTIME at the last SET */
    unsigned long long seq; /* the table's SET counter at the last SET */
};

struct kv_store {
    struct kv_entry **buckets;
    size_t nbuckets; /* a power of two */
    size_t count;
    unsigned long long seq; /* SETs performed so far */
};

/* Pending output: bytes data[off..len) are still to be written. */
struct kv_buf {
    char *data;
    size_t off, len, cap;
};

/* The table. kv_set returns NULL with errno set when memory, getrandom or the clock fail. */
int kv_init(struct kv_store *s);
void kv_free(struct kv_store *s);
struct kv_entry *kv_get(const struct kv_store *s, const char *key);
struct kv_entry *kv_set(struct kv_store *s, const char *key, const char *value);
int kv_del(struct kv_store *s, const char *key);

/* Writes header and the sorted entries to path; the entry count, or -1 with errno set. */
long kv_dump(const struct kv_store *s, const char *path, const char *header);

/* FNV-1a: the same on every host, so the workers' key-to-worker routing is too. */
uint32_t kv_hash(const char *key);

/* Splits line in place; returns the token count, or max + 1 when there are more. */
int kv_split(char *line, char **argv, int max);

/* Runs SET/GET/DEL into reply (no newline). Returns 0 when argv[0] is none of them. */
int kv_command(struct kv_store *s, int argc, char **argv, char *reply, size_t cap);

/* Pops the first complete line of buf[0..*len) (capacity cap) into line (cap bytes, NUL
 * terminated, CR/LF stripped). Returns 1 when it popped one, 0 when no line is complete
 * yet, -1 when the buffer is full and holds no newline (a line longer than cap). */
int kv_pop_line(char *buf, size_t *len, size_t cap, char *line);
int kv_has_line(const char *buf, size_t len);

int kv_buf_add(struct kv_buf *b, const char *p, size_t n);
int kv_buf_addline(struct kv_buf *b, const char *line); /* line + "\n" */
size_t kv_buf_pending(const struct kv_buf *b);
/* Writes what the non-blocking fd takes now (send with MSG_NOSIGNAL when is_socket).
 * Returns 0, possibly with bytes left, or -1 on an error other than EAGAIN. */
int kv_buf_flush(struct kv_buf *b, int fd, int is_socket);
void kv_buf_free(struct kv_buf *b);

/* A non-blocking, close-on-exec IPv4 listening socket, or -1 with errno set. */
int kv_listen(const char *addr, int port);
/* Parses a decimal in [0, max]; -1 when s is not one. */
long kv_parse_num(const char *s, long max);

#endif
