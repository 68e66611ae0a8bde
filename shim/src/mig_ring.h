/* mig_ring.h -- the shared-memory ring between one process of the app and mig's agent.
 *
 * One file per logical process, RUN_DIR/<lpid>.ring, created by the shim when the process
 * starts and mapped by both sides. In record mode the shim produces call records and the
 * recorder agent consumes them; in replay mode the replay worker produces the recorded
 * records and the shim consumes them. Positions (head, tail) only grow; the byte at
 * position p lives at data[p & (capacity - 1)]. A record never wraps: when it would, the
 * producer writes a PAD record to the end of the data area.
 *
 * Records carry the logical thread id (tid) of the thread that made the call: in replay a
 * thread takes only a record with its own tid at the tail, so the threads of a process make
 * their calls in the recorded order (mig_replay.c, tail_record).
 *
 * This layout is a contract with mig/ring/memory.py: change both, and bump MIG_RING_VERSION.
 * All integers are little-endian (x86-64 and aarch64 native order). */
#ifndef MIG_RING_H
#define MIG_RING_H

#include <stdint.h>

#define MIG_RING_MAGIC 0x31474e4952474d4dULL /* "MMGRING1" */
#define MIG_RING_VERSION 1
#define MIG_RING_HDR 4096
#define MIG_RING_DEFAULT_CAPACITY (4u << 20)

/* LIVE_FAILED: a process could not go live (a listener it cannot make real): div_text
 * says why, and the process has ended. */
enum mig_ring_state { MIG_RS_INIT = 0, MIG_RS_READY = 1, MIG_RS_EXITED = 2, MIG_RS_DIVERGED = 3,
                      MIG_RS_LIVE_FAILED = 4 };

/* Flags of a record. */
#define MIG_F_PAD 1u      /* filler up to the end of the data area: skip */
#define MIG_F_OUTPUT 2u   /* out_len/out_hash describe bytes the call wrote */

struct mig_ring_hdr {
    uint64_t magic;            /*   0 */
    uint32_t version;          /*   8 */
    uint32_t mode;             /*  12: 1 record, 2 replay */
    uint64_t capacity;         /*  16: bytes of the data area, a power of two */
    int32_t pid;               /*  24: real pid of the process */
    uint32_t state;            /*  28: enum mig_ring_state */
    char lpid[64];             /*  32: logical process id, NUL-terminated */
    uint64_t head;             /*  96: producer position */
    uint64_t tail;             /* 104: consumer position */
    uint64_t next_seq;         /* 112: record mode: the next call's sequence number */
    uint64_t committed_seq;    /* 120: record mode: every seq below this is in Kafka */
    uint32_t commit_futex;     /* 128: the agent bumps it (and wakes) after each commit */
    uint32_t data_futex;       /* 132: replay: the worker bumps it (and wakes) after writing */
    uint32_t lock;             /* 136: spinlock of producer threads (record mode) */
    uint32_t waiters;          /* 140: threads sleeping on a futex of this ring */
    uint64_t barrier_seq;      /* 144: highest seq a thread waits to see committed */
    uint64_t div_seq;          /* 152: replay: seq of the first divergence */
    char div_text[256];        /* 160: replay: what diverged, NUL-terminated */
    char parent_lpid[64];      /* 416: the forking process's lpid, "" for the first */
    uint32_t golive;           /* 480: replay: the worker wrote the log's last record; once
                                *      the shim has taken it, the process goes live and the
                                *      ring turns around (mode becomes 1) */
    uint32_t frozen;           /* 484: record: a planned handoff; appending threads stop */
    uint32_t writers;          /* 488: record: threads between the frozen check and publish */
    uint32_t turn_futex;       /* 492: replay: a thread bumps it (and wakes) after moving
                                *      the tail: the next record may be another's turn */
    uint32_t arm_gen;          /* 496: bumped in the image before a restore: CRIU does not
                                *      restore Syscall User Dispatch, so each thread arms its
                                *      trap again when it next waits for a record */
    uint32_t going_live;       /* 500: replay: set when the process starts going live (its
                                *      listeners being made real), before mode becomes 1 */
    uint64_t traps;            /* 504: system calls trapped (mig_trap.c) in this process */
    uint64_t stdin_read;       /* 512: bytes this process read from the app's stdin pipe
                                *      ([app] stdin = "topic"), recorded or replayed */
    uint64_t stdin_dev;        /* 520: that pipe's st_dev and st_ino (0: no such pipe); */
    uint64_t stdin_ino;        /* 528:   the agent rewrites them before a restore */
    uint32_t doorbell;         /* 536: record: a thread bumps it when it raises a barrier or
                                *      waits for room, and wakes the agent if it sleeps */
    uint32_t agent_sleeping;   /* 540: record: the agent waits on the doorbells (futex_waitv):
                                *      1 until a barrier or a fill mark rings, 2 (idle)
                                *      until any record is appended */
    uint64_t taken_seq;        /* 544: replay: seq + 1 of the last record this process took
                                *      (its parent waits for it: wrap_proc.c, wait_call) */
    uint64_t patched;          /* 552: calls made at patched sites, without a trap
                                *      (mig_patch.c); `traps` counts the others */
};

/* One call record: this header, then payload_len bytes, padded to a multiple of 8. */
struct mig_rec {
    uint32_t len;         /*  0: whole record, padded */
    uint16_t kind;        /*  4: enum mig_kind */
    uint16_t flags;       /*  6: MIG_F_* */
    uint32_t tid;         /*  8: logical thread id */
    int32_t err;          /* 12: errno after the call (0 if none) */
    uint64_t seq;         /* 16: per-process sequence number */
    int64_t result;       /* 24 */
    int64_t args[4];      /* 32: the arguments that matter, per kind */
    uint64_t wall_ns;     /* 64: CLOCK_REALTIME when recorded */
    uint64_t out_len;     /* 72: bytes written, with MIG_F_OUTPUT */
    uint64_t out_hash;    /* 80: FNV-1a 64 of those bytes */
    uint32_t payload_len; /* 88: bytes of input returned to the app */
    uint32_t reserved;    /* 92 */
};                        /* 96 bytes */

_Static_assert(sizeof(struct mig_ring_hdr) <= MIG_RING_HDR, "ring header too large");
_Static_assert(sizeof(struct mig_rec) == 96, "record header layout changed");

/* Why the record at position `pos` of a data area of `capacity` bytes (a power of two)
 * cannot be read when the producer has published up to position `end` (> pos); NULL when
 * it can: its header and payload then lie inside both the published bytes and the data
 * area. Every reader of records checks this first, whatever the ring says (mig_encode.c,
 * mig_replay.c tail_record; tests/ring/support.py parse_record says the same in Python), so a
 * corrupt ring stops the reader with a reason instead of sending it out of bounds.
 * tests/fuzz/ring_fuzz.c fuzzes it under AddressSanitizer. */
static inline const char *mig_rec_problem(const unsigned char *data, uint64_t capacity,
                                          uint64_t pos, uint64_t end)
{
    if (capacity < 8 || (capacity & (capacity - 1)))
        return "the ring's capacity is not a power of two";
    if (end <= pos)
        return "no record published there";
    if (end - pos > capacity)
        return "more bytes published than the ring holds";
    if (pos % 8)
        return "position is not a multiple of 8";
    uint64_t off = pos & (capacity - 1);
    uint64_t avail = capacity - off; /* a record never wraps */
    if (end - pos < avail)
        avail = end - pos;
    if (avail < 8)
        return "record cut short";
    const struct mig_rec *rec = (const struct mig_rec *)(data + off);
    if (rec->len < 8 || rec->len % 8)
        return "record length is not a multiple of 8";
    if (rec->len > avail)
        return "record length overruns the published bytes or the data area";
    if (rec->flags & MIG_F_PAD)
        return NULL; /* filler: only its length is read */
    if (rec->len < sizeof *rec)
        return "record length is below the record header's";
    if (sizeof *rec + (uint64_t)rec->payload_len > rec->len)
        return "payload overruns the record";
    if (rec->tid > 0x7fffffffu)
        return "thread id out of range";
    /* Avro longs are signed: a shim never writes these at 2^63 or more */
    if (rec->seq >> 63 || rec->wall_ns >> 63
        || ((rec->flags & MIG_F_OUTPUT) && rec->out_len >> 63))
        return "seq, wall_ns or out_len out of range";
    return NULL;
}

#endif
