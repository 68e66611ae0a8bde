/* mig_core.c -- the shim's set-up and its channel to mig's agent.
 *
 * Owns: the mode (MIG_MODE), the real-function table, this process's ring (created in
 * MIG_RUN_DIR as <lpid>.ring and mapped once), appending records (record mode), taking
 * records (replay mode), barriers and divergence reports. Everything here is reached from
 * wrappers with mig_busy set, so the libc calls it makes itself are never recorded.
 * The ring's file descriptor is closed right after mmap: the app's fd numbers stay the
 * same on the primary and on a replaying backup. */
#define MIG_CORE
#include "mig.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

struct mig_real mig_real;
enum mig_mode mig_mode;
MIG_TLS int mig_busy;
MIG_TLS uint32_t mig_tid;  /* this thread's logical id: 0 for a process's first thread */
unsigned mig_threads;       /* threads this process created (wrap_thread.c) */
MIG_TLS uint32_t mig_quiet; /* unrecorded mutex acquisitions since this thread's last record */

static enum mig_barrier_mode barrier_mode;
static struct mig_ring_hdr *ring;
static unsigned char *ring_data;
static uint64_t ring_cap;    /* bytes of ring_data as mapped (the header's copy is shared) */
static int ready;            /* 0: not yet, 1: initialising, 2: done */
static char run_dir[512];
static MIG_TLS uint64_t replay_pending; /* replay: length of this thread's record handed out,
                                         * not yet released */
static uint64_t replay_next_seq; /* replay: seq after the last record handed out */
static MIG_TLS uint64_t own_scan; /* replay: ring position up to which this thread looked for
                                   * its next record without finding it */
static MIG_TLS uint32_t arm_seen; /* the ring's arm_gen when this thread last armed */
static char my_lpid[64] = "1";
static unsigned children;    /* fork/spawn count of this process: names the next child */

/* wrap_signal.c: run the app's handler for a signal taken from the log (replay). */
void mig_run_app_handler(int sig, int code);

/* --------------------------------------------------------------- helpers (no libc I/O) */

/* "mig-shim: fatal: <what>" on stderr, written directly. */
static void fatal_line(const char *what)
{
    static const char prefix[] = "mig-shim: fatal: ";
    syscall(SYS_write, 2, prefix, sizeof prefix - 1);
    syscall(SYS_write, 2, what, strlen(what));
    syscall(SYS_write, 2, "\n", 1);
}

static void mig_die(const char *what)
{
    /* The shim cannot continue (no ring, broken channel): say why on stderr and stop. */
    fatal_line(what);
    syscall(SYS_exit_group, 86);
    __builtin_unreachable();
}

void mig_warn(const char *a, const char *b)
{
    static const char prefix[] = "mig-shim: warning: ";
    syscall(SYS_write, 2, prefix, sizeof prefix - 1);
    syscall(SYS_write, 2, a, strlen(a));
    if (b)
        syscall(SYS_write, 2, b, strlen(b));
    syscall(SYS_write, 2, "\n", 1);
}

long mig_futex(uint32_t *word, int op, uint32_t val, const struct timespec *timeout)
{
    return syscall(SYS_futex, word, op, val, timeout, NULL, 0);
}

uint64_t mig_monotonic_ns(void)
{
    struct timespec ts;
    mig_real.clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t now_ns(void)
{
    /* through libc (the vDSO): a raw syscall here cost ~270 ns on every record */
    struct timespec ts;
    mig_real.clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void spin_lock(uint32_t *lock)
{
    while (__atomic_exchange_n(lock, 1, __ATOMIC_ACQUIRE))
        while (__atomic_load_n(lock, __ATOMIC_RELAXED))
            __builtin_ia32_pause();
}

static void spin_unlock(uint32_t *lock)
{
    __atomic_store_n(lock, 0, __ATOMIC_RELEASE);
}

void *mig_claim(void *array, size_t size, int count)
{
    for (;;) {
        for (int i = 0; i < count; i++) {
            uint32_t *state = (uint32_t *)((char *)array + (size_t)i * size), free_ = 0;
            if (__atomic_compare_exchange_n(state, &free_, 1, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_RELAXED))
                return state;
        }
        struct timespec pause = {0, 100000};
        syscall(SYS_nanosleep, &pause, NULL);
    }
}

char *mig_put_uint(char *p, uint64_t u)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    while (n)
        *p++ = tmp[--n];
    return p;
}

uint64_t mig_hash(const void *buf, uint64_t len, uint64_t seed)
{
    const unsigned char *p = buf;
    uint64_t h = seed ? seed : 0xcbf29ce484222325ull;
    for (uint64_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

uint64_t mig_out_hash(const struct mig_call *call, uint64_t limit)
{
    if (call->out)
        return mig_hash(call->out, limit, 0);
    uint64_t h = 0, done = 0;
    for (int i = 0; i < call->iovcnt && done < limit; i++) {
        uint64_t n = call->iov[i].iov_len;
        if (n > limit - done)
            n = limit - done;
        h = mig_hash(call->iov[i].iov_base, n, h);
        done += n;
    }
    return done ? h : mig_hash("", 0, 0);
}

/* --------------------------------------------------------------- set-up */

static void *resolve(const char *name, const char *version)
{
    void *fn = version ? dlvsym(RTLD_NEXT, name, version) : NULL;
    return fn ? fn : dlsym(RTLD_NEXT, name);
}

static void resolve_all(void)
{
#define MIG_RESOLVE(ret, name, args) mig_real.name = (ret(*) args)resolve(#name, NULL);
    MIG_REAL_FIELDS(MIG_RESOLVE)
#undef MIG_RESOLVE
    /* clock_gettime lived in librt before glibc 2.17; take libc's current version. */
    mig_real.clock_gettime = (int (*)(clockid_t, struct timespec *))resolve(
        "clock_gettime", "GLIBC_2.17");
}

/* The app's stdin pipe ([app] stdin = "topic", mig/member/stdin.py): MIG_STDIN="DEV:INO" for
 * the first process, the parent's ring for a forked one (the agent rewrites the rings of a
 * checkpoint for the pipe of the host that restores it), the ring itself after exec. */
static uint64_t stdin_dev, stdin_ino;

static void open_ring(const char *lpid, const char *parent)
{
    char path[640];
    size_t dlen = strlen(run_dir), llen = strlen(lpid);
    if (dlen + llen + 7 >= sizeof path || llen >= sizeof ring->lpid)
        mig_die("MIG_RUN_DIR or logical process id too long");
    memcpy(path, run_dir, dlen);
    path[dlen] = '/';
    memcpy(path + dlen + 1, lpid, llen);
    memcpy(path + dlen + 1 + llen, ".ring", 6);

    uint64_t capacity = MIG_RING_DEFAULT_CAPACITY;
    const char *cap = getenv("MIG_RING_BYTES");
    if (cap && atoll(cap) >= 65536) {
        capacity = 65536;
        while (capacity < (uint64_t)atoll(cap))
            capacity <<= 1;
    }
    /* After exec the process keeps its lpid and its ring: positions and seq carry on. */
    const char *exec_env = getenv("MIG_EXEC");
    int reuse = exec_env && strcmp(exec_env, "1") == 0 && strcmp(lpid, my_lpid) == 0;
    int fd = (int)syscall(SYS_openat, AT_FDCWD, path,
                          O_RDWR | O_CREAT | O_CLOEXEC | (reuse ? 0 : O_TRUNC), 0600);
    if (fd < 0)
        mig_die("cannot create the ring file in MIG_RUN_DIR");
    struct stat st;
    if (reuse && syscall(SYS_fstat, fd, &st) == 0 && st.st_size > MIG_RING_HDR)
        capacity = (uint64_t)st.st_size - MIG_RING_HDR;
    else
        reuse = 0;
    if (!reuse && syscall(SYS_ftruncate, fd, (long)(MIG_RING_HDR + capacity)) != 0)
        mig_die("cannot size the ring file");
    /* straight to the kernel: `mmap` here would be the shim's own wrapper */
    long m = syscall(SYS_mmap, NULL, MIG_RING_HDR + capacity, PROT_READ | PROT_WRITE,
                     MAP_SHARED, fd, 0);
    void *map = m < 0 && m > -4096 ? MAP_FAILED : (void *)m;
    syscall(SYS_close, fd);
    if (map == MAP_FAILED)
        mig_die("cannot map the ring file");
    ring = map;
    ring_data = (unsigned char *)map + MIG_RING_HDR;
    ring_cap = capacity;
    if (reuse && ring->magic == MIG_RING_MAGIC && ring->capacity == capacity) {
        ring->pid = (int32_t)syscall(SYS_getpid);
        __atomic_store_n(&ring->state, MIG_RS_READY, __ATOMIC_RELEASE);
        return;
    }
    ring->magic = MIG_RING_MAGIC;
    ring->version = MIG_RING_VERSION;
    ring->mode = (uint32_t)mig_mode;
    ring->capacity = capacity;
    ring->pid = (int32_t)syscall(SYS_getpid);
    memcpy(ring->lpid, lpid, llen + 1);
    ring->stdin_dev = stdin_dev;
    ring->stdin_ino = stdin_ino;
    size_t plen = strlen(parent);
    if (plen < sizeof ring->parent_lpid)
        memcpy(ring->parent_lpid, parent, plen + 1);
    __atomic_store_n(&ring->state, MIG_RS_READY, __ATOMIC_RELEASE);
}

void mig_init(void)
{
    if (__builtin_expect(ready == 2, 1))
        return;
    if (ready == 1)
        return; /* a call made while initialising: mig_mode is still OFF, it passes */
    ready = 1;
    mig_busy++;
    resolve_all();
    const char *mode = getenv("MIG_MODE");
    const char *dir = getenv("MIG_RUN_DIR");
    enum mig_mode want = MIG_OFF;
    if (mode && strcmp(mode, "record") == 0)
        want = MIG_RECORD;
    else if (mode && strcmp(mode, "replay") == 0)
        want = MIG_REPLAY;
    else if (mode && strcmp(mode, "live") == 0)
        want = MIG_LIVE;
    const char *bm = getenv("MIG_BARRIER");
    barrier_mode = bm && strcmp(bm, "sync") == 0    ? MIG_B_SYNC
                   : bm && strcmp(bm, "async") == 0 ? MIG_B_ASYNC
                                                    : MIG_B_OUTPUT;
    if (want == MIG_RECORD || want == MIG_REPLAY) {
        if (!dir || strlen(dir) >= sizeof run_dir)
            mig_die("MIG_MODE is set but MIG_RUN_DIR is not");
        memcpy(run_dir, dir, strlen(dir) + 1);
        const char *lpid = getenv("MIG_LPID");
        if (lpid && *lpid && strlen(lpid) < sizeof my_lpid)
            memcpy(my_lpid, lpid, strlen(lpid) + 1);
        mig_mode = want;
        const char *parent = getenv("MIG_PARENT_LPID");
        const char *in = getenv("MIG_STDIN");
        if (in && *in) {
            char *colon;
            stdin_dev = strtoull(in, &colon, 10);
            stdin_ino = *colon == ':' ? strtoull(colon + 1, NULL, 10) : 0;
        }
        open_ring(my_lpid, parent ? parent : "");
        ready = 2;
        mig_trap_init(); /* last: from here on the app's own system calls are trapped */
        mig_sched_init();
    } else {
        mig_mode = want;
    }
    ready = 2;
    mig_busy--;
}

__attribute__((constructor)) static void mig_constructor(void)
{
    mig_init();
}

__attribute__((destructor)) static void mig_destructor(void)
{
    if (ring)
        __atomic_store_n(&ring->state, MIG_RS_EXITED, __ATOMIC_RELEASE);
}

/* "mig-shim <version> <mode>": a probe for tests and `mig doctor`. */
MIG_EXPORT const char *mig_shim_version(void)
{
    static const char *names[] = {"mig-shim 0.2.0 off", "mig-shim 0.2.0 record",
                                  "mig-shim 0.2.0 replay", "mig-shim 0.2.0 live"};
    mig_init();
    return names[mig_mode];
}

/* --------------------------------------------------------------- processes */

const char *mig_lpid(void)
{
    return my_lpid;
}

const char *mig_run_dir(void)
{
    return run_dir;
}

void mig_next_child_lpid(char *out, size_t size)
{
    char num[16];
    char *end = mig_put_uint(num, ++children);
    size_t l = strlen(my_lpid), n = (size_t)(end - num);
    if (l + 1 + n + 1 > size)
        mig_die("logical process id too long (fork depth)");
    memcpy(out, my_lpid, l);
    out[l] = '.';
    memcpy(out + l + 1, num, n);
    out[l + 1 + n] = 0;
}

void mig_child_after_fork(const char *child_lpid)
{
    /* The parent's ring stays the parent's: unmap it untouched, make our own. */
    char parent[64];
    memcpy(parent, my_lpid, sizeof parent);
    stdin_dev = ring->stdin_dev;
    stdin_ino = ring->stdin_ino;
    syscall(SYS_munmap, ring, MIG_RING_HDR + ring->capacity);
    ring = NULL;
    children = 0;
    replay_pending = 0;
    mig_tid = 0;     /* the forking thread is the child's first thread */
    mig_threads = 0;
    mig_quiet = 0;
    own_scan = 0;
    mig_thread_ids_after_fork();
    mig_sched_after_fork();
    memcpy(my_lpid, child_lpid, strlen(child_lpid) + 1);
    mig_hold_after_fork();
    open_ring(my_lpid, parent);
    mig_trap_arm(); /* arming is not inherited */
}

/* Environment for exec/spawn: the app's envp with mig's variables set (static storage:
 * exec replaces the process; spawn copies it before returning). */
static char *env_slots[4096];
static char env_text[5][640];

/* The variables that name a process: replaced, never inherited. */
static int is_mig_var(const char *entry)
{
    static const char *const names[] = {"MIG_LPID=", "MIG_EXEC=", "MIG_PARENT_LPID=",
                                        "MIG_MODE=", NULL};
    for (int i = 0; names[i]; i++)
        if (strncmp(entry, names[i], strlen(names[i])) == 0)
            return 1;
    return 0;
}

static char *env_entry(int slot, const char *name, const char *value)
{
    size_t n = strlen(name), v = strlen(value);
    if (n + v + 2 > sizeof env_text[slot])
        mig_die("environment entry too long");
    memcpy(env_text[slot], name, n);
    env_text[slot][n] = '=';
    memcpy(env_text[slot] + n + 1, value, v + 1);
    return env_text[slot];
}

char *const *mig_exec_env(char *const envp[], const char *lpid, int same_process)
{
    size_t k = 0;
    for (size_t i = 0; envp && envp[i] && k < 4096 - 16; i++)
        if (!is_mig_var(envp[i]))
            env_slots[k++] = envp[i];
    /* the app may have dropped mig's variables: put the essential ones back */
    static char preload[700], dir[600], barrier[32];
    const char *keep[][2] = {{"LD_PRELOAD", preload}, {"MIG_RUN_DIR", dir},
                             {"MIG_BARRIER", barrier}};
    for (int j = 0; j < 3; j++) {
        size_t n = strlen(keep[j][0]);
        int found = 0;
        for (size_t i = 0; i < k; i++)
            if (strncmp(env_slots[i], keep[j][0], n) == 0 && env_slots[i][n] == '=')
                found = 1;
        const char *value = getenv(keep[j][0]);
        if (!found && value && strlen(value) + n + 2 < 600) {
            char *dst = (char *)keep[j][1];
            memcpy(dst, keep[j][0], n);
            dst[n] = '=';
            memcpy(dst + n + 1, value, strlen(value) + 1);
            env_slots[k++] = dst;
        }
    }
    /* a process that went live records: what it execs or spawns records too */
    static const char *const modes[] = {"off", "record", "replay", "live"};
    env_slots[k++] = env_entry(3, "MIG_MODE", modes[mig_mode]);
    env_slots[k++] = env_entry(0, "MIG_LPID", lpid);
    env_slots[k++] = env_entry(1, "MIG_EXEC", same_process ? "1" : "0");
    env_slots[k++] = env_entry(2, "MIG_PARENT_LPID", same_process ? "" : my_lpid);
    env_slots[k] = NULL;
    return env_slots;
}

/* --------------------------------------------------------------- record mode */

static void wait_space(uint64_t need)
{
    /* The agent drains the ring; when it falls behind the app waits (back-pressure). */
    struct timespec pause = {0, 50000};
    __atomic_fetch_add(&mig_agent_waits, 1, __ATOMIC_RELAXED);
    while (__atomic_load_n(&ring->head, __ATOMIC_RELAXED) + need -
               __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE) > ring->capacity)
        syscall(SYS_nanosleep, &pause, NULL);
    __atomic_fetch_sub(&mig_agent_waits, 1, __ATOMIC_RELAXED);
}

/* A planned handoff freezes the ring: the agent sets `frozen`, then waits until no thread
 * is between this check and publishing its record (`writers`), so every record appended
 * is in the log it hands over and nothing comes after. A frozen thread sleeps here until
 * the agent ends the process (or thaws the ring if the handoff is called off). */
static void enter_writer(void)
{
    for (;;) {
        __atomic_fetch_add(&ring->writers, 1, __ATOMIC_SEQ_CST);
        if (!__atomic_load_n(&ring->frozen, __ATOMIC_SEQ_CST))
            return;
        __atomic_fetch_sub(&ring->writers, 1, __ATOMIC_SEQ_CST);
        struct timespec slice = {0, 50000000};
        while (__atomic_load_n(&ring->frozen, __ATOMIC_ACQUIRE))
            mig_futex(&ring->frozen, FUTEX_WAIT, 1, &slice);
    }
}

static uint64_t append(struct mig_call *call)
{
    uint32_t len = (uint32_t)((sizeof(struct mig_rec) + call->payload_len + 7) & ~7u);
    if (len > ring->capacity / 4)
        mig_die("a single call record does not fit the ring (raise MIG_RING_BYTES)");
    enter_writer();
    spin_lock(&ring->lock);
    uint64_t head = ring->head;
    uint64_t room = ring->capacity - (head & (ring->capacity - 1));
    if (room < len) {
        wait_space(room);
        struct mig_rec *pad = (struct mig_rec *)(ring_data + (head & (ring->capacity - 1)));
        pad->len = (uint32_t)room;
        pad->flags = MIG_F_PAD;
        head += room;
        __atomic_store_n(&ring->head, head, __ATOMIC_RELEASE);
    }
    wait_space(len);
    struct mig_rec *rec = (struct mig_rec *)(ring_data + (head & (ring->capacity - 1)));
    uint64_t seq = ring->next_seq++;
    rec->len = len;
    rec->kind = (uint16_t)call->kind;
    rec->flags = call->is_output ? MIG_F_OUTPUT : 0;
    rec->tid = mig_tid;
    rec->err = call->err;
    rec->seq = seq;
    rec->result = call->result;
    memcpy(rec->args, call->args, sizeof rec->args);
    rec->wall_ns = now_ns();
    rec->out_len = call->is_output ? call->out_len : 0;
    rec->out_hash = call->is_output ? mig_out_hash(call, call->out_len) : 0;
    rec->payload_len = call->payload_len;
    rec->reserved = 0;
    if (call->payload_len && call->payload) {
        memcpy(rec + 1, call->payload, call->payload_len);
    } else if (call->payload_len) { /* gather an input iovec straight into the ring */
        unsigned char *dst = (unsigned char *)(rec + 1);
        uint32_t done = 0;
        for (int i = 0; i < call->in_iovcnt && done < call->payload_len; i++) {
            uint32_t n = call->in_iov[i].iov_len < call->payload_len - done
                             ? (uint32_t)call->in_iov[i].iov_len : call->payload_len - done;
            memcpy(dst + done, call->in_iov[i].iov_base, n);
            done += n;
        }
    }
    __atomic_store_n(&ring->head, head + len, __ATOMIC_RELEASE);
    spin_unlock(&ring->lock);
    __atomic_fetch_sub(&ring->writers, 1, __ATOMIC_RELEASE);
    return seq;
}

/* The thread's unrecorded acquisitions since its last record, as a RUN record: a replay
 * makes as many before it takes the thread's next record (wrap_thread.c). */
static void append_run(void)
{
    struct mig_call run = {.kind = MIG_K_MUTEX_LOCK, .args = {MIG_LOCK_RUN, 0, mig_quiet}};
    mig_quiet = 0;
    append(&run);
}

uint64_t mig_append(struct mig_call *call)
{
    return append(call);
}

uint64_t mig_record(struct mig_call *call)
{
    if (__builtin_expect(mig_token_out, 0))
        mig_sched_resume(); /* serialized threads: records are made holding the token */
    if (mig_quiet)
        append_run();
    uint64_t seq = append(call);
    if (barrier_mode == MIG_B_SYNC)
        mig_barrier(seq);
    return seq;
}

void mig_barrier(uint64_t seq)
{
    /* Ask for seq to be committed, then sleep on commit_futex until it is. */
    uint64_t want = seq + 1;
    uint64_t cur = __atomic_load_n(&ring->barrier_seq, __ATOMIC_RELAXED);
    while (cur < want &&
           !__atomic_compare_exchange_n(&ring->barrier_seq, &cur, want, 0, __ATOMIC_RELEASE,
                                        __ATOMIC_RELAXED))
        ;
    struct timespec slice = {0, 20000000};
    __atomic_fetch_add(&mig_agent_waits, 1, __ATOMIC_RELAXED);
    for (;;) {
        uint32_t gen = __atomic_load_n(&ring->commit_futex, __ATOMIC_ACQUIRE);
        if (__atomic_load_n(&ring->committed_seq, __ATOMIC_ACQUIRE) >= want)
            break;
        __atomic_fetch_add(&ring->waiters, 1, __ATOMIC_RELAXED);
        mig_futex(&ring->commit_futex, FUTEX_WAIT, gen, &slice);
        __atomic_fetch_sub(&ring->waiters, 1, __ATOMIC_RELAXED);
    }
    __atomic_fetch_sub(&mig_agent_waits, 1, __ATOMIC_RELAXED);
}

int mig_holding(void)
{
    return mig_mode == MIG_RECORD && barrier_mode == MIG_B_OUTPUT;
}

void mig_output_barrier(void)
{
    if (barrier_mode == MIG_B_ASYNC || mig_mode != MIG_RECORD)
        return;
    uint64_t next = __atomic_load_n(&ring->next_seq, __ATOMIC_ACQUIRE);
    if (next > 0)
        mig_barrier(next - 1);
}

/* --------------------------------------------------------------- replay mode */

/* The log has ended here: become the primary's process (mig_live.c), turn the ring
 * around and go on recording with the next sequence number. The first thread to find the
 * log's end does it; the others find the mode changed. */
static uint32_t golive_lock;

static void go_live(void)
{
    spin_lock(&golive_lock);
    if (mig_mode == MIG_REPLAY) {
        __atomic_store_n(&ring->going_live, 1, __ATOMIC_RELEASE);
        mig_go_live();
        uint64_t next = replay_next_seq;
        ring->next_seq = next;
        ring->committed_seq = next;
        ring->barrier_seq = next;
        mig_sched_went_live();
        mig_mode = MIG_RECORD;
        __atomic_store_n(&ring->mode, (uint32_t)MIG_RECORD, __ATOMIC_RELEASE);
    }
    spin_unlock(&golive_lock);
}

/* Replay: the tail moved; let the threads waiting for their turn look at the record there. */
static void turn_moved(void)
{
    if (mig_threads) {
        __atomic_fetch_add(&ring->turn_futex, 1, __ATOMIC_RELEASE);
        mig_futex(&ring->turn_futex, FUTEX_WAKE, 0x7fffffff, NULL);
    }
}

/* Replay: move the tail past the record at it (`tail` is where it starts) and let the
 * threads waiting for their turn look at the next one. */
static void advance_tail(uint64_t tail, uint64_t len)
{
    __atomic_store_n(&ring->tail, tail + len, __ATOMIC_RELEASE);
    turn_moved();
}

/* How long a thread waits for its turn while the record at the tail, another thread's,
 * is not taken, before the replay is called diverged (threads out of step). */
#define MIG_TURN_TIMEOUT_NS (30ull * 1000000000ull)

static void out_of_step(const struct mig_rec *rec);
static void corrupt(uint64_t pos, const char *why);

/* A process restored from a checkpoint has lost its threads' traps (CRIU does not restore
 * them): the worker bumps arm_gen in the image, and each thread arms again here, where it
 * waits for its next record -- as every thread of a checkpointed replay does. */
static void rearm_if_restored(void)
{
    uint32_t gen = __atomic_load_n(&ring->arm_gen, __ATOMIC_ACQUIRE);
    if (gen != arm_seen) {
        arm_seen = gen;
        mig_fileid_restored(gen);
        if (mig_trapping)
            mig_trap_arm();
    }
}

/* The next record for this thread, or NULL when the process has just gone live. Records
 * are taken in log order: a thread whose record is not at the tail waits for its turn.
 * any: the record at the tail, whichever thread's (serialized threads look at it). */
static struct mig_rec *tail_record(int any)
{
    struct timespec slice = {0, 20000000};
    uint64_t stuck_at = ~0ull, stuck_since = 0;
    for (;;) {
        uint32_t gen = __atomic_load_n(&ring->data_futex, __ATOMIC_ACQUIRE);
        uint32_t turn = __atomic_load_n(&ring->turn_futex, __ATOMIC_ACQUIRE);
        uint32_t live = __atomic_load_n(&ring->golive, __ATOMIC_ACQUIRE);
        rearm_if_restored();
        if (mig_mode != MIG_REPLAY)
            return NULL; /* another thread took the process live */
        uint64_t tail = __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE);
        uint64_t head = __atomic_load_n(&ring->head, __ATOMIC_ACQUIRE);
        if (head > tail) {
            const char *bad = mig_rec_problem(ring_data, ring_cap, tail, head);
            if (bad) {
                /* another thread may have taken the record meanwhile, and the worker
                 * reused its space: only a record still at the tail is corrupt */
                if (__atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE) != tail)
                    continue;
                corrupt(tail, bad);
            }
            struct mig_rec *rec = (struct mig_rec *)(ring_data + (tail & (ring_cap - 1)));
            uint16_t flags = rec->flags;
            uint32_t tid = rec->tid;
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
            if (__atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE) != tail)
                continue; /* taken meanwhile: once the ring has gone round, the bytes read
                           * there can be a later record, this thread's own included */
            if (flags & MIG_F_PAD) {
                uint64_t want = tail;
                /* whoever wins moves the tail; storing it again afterwards could move it
                 * back over a record another thread has taken meanwhile */
                if (__atomic_compare_exchange_n(&ring->tail, &want, tail + rec->len, 0,
                                                __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
                    turn_moved();
                continue;
            }
            if (tid == mig_tid || any) {
                if (tid == mig_tid)
                    replay_next_seq = rec->seq + 1;
                return rec;
            }
            /* another thread's turn: wait until the tail moves */
            uint64_t now = now_ns();
            if (tail != stuck_at) {
                stuck_at = tail;
                stuck_since = now;
            } else if (now - stuck_since > MIG_TURN_TIMEOUT_NS) {
                out_of_step(rec);
            }
            __atomic_fetch_add(&ring->waiters, 1, __ATOMIC_RELAXED);
            mig_futex(&ring->turn_futex, FUTEX_WAIT, turn, &slice);
            __atomic_fetch_sub(&ring->waiters, 1, __ATOMIC_RELAXED);
            continue;
        }
        if (live) { /* set after the worker's last record: the ring is empty for good */
            go_live();
            return NULL;
        }
        __atomic_fetch_add(&ring->waiters, 1, __ATOMIC_RELAXED);
        mig_futex(&ring->data_futex, FUTEX_WAIT, gen, &slice);
        __atomic_fetch_sub(&ring->waiters, 1, __ATOMIC_RELAXED);
    }
}

static struct mig_rec *next_record(void)
{
    return tail_record(0);
}

char *mig_put_str(char *p, char *end, const char *s)
{
    while (*s && p < end)
        *p++ = *s++;
    return p;
}

static char *put_int(char *p, char *end, int64_t v)
{
    char tmp[24];
    int n = 0;
    uint64_t u = v < 0 ? (uint64_t)(-(v + 1)) + 1 : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0 && p < end)
        *p++ = '-';
    while (n && p < end)
        *p++ = tmp[--n];
    return p;
}

static const char *kind_name(unsigned kind)
{
    switch (kind) {
#define MIG_KIND_NAME(name, num)                                                            \
    case num:                                                                               \
        return #name;
        MIG_KINDS(MIG_KIND_NAME)
#undef MIG_KIND_NAME
    }
    return "?";
}

static char *put_hex(char *p, char *end, uint64_t v)
{
    char tmp[16];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    p = mig_put_str(p, end, "0x");
    while (n && p < end)
        *p++ = tmp[--n];
    return p;
}

/* The call the replay made instead of the recorded one: its kind by name and what tells
 * it apart (a mutex: which acquisition of which mutex, where the numbers alone said
 * MUTEX_LOCK(3, ...); other calls: their first two arguments). */
static char *put_call(char *p, char *end, const struct mig_call *call)
{
    static const char *const variant[] = {"lock", "trylock", "timedlock"};
    p = mig_put_str(p, end, kind_name((unsigned)call->kind));
    p = mig_put_str(p, end, "(");
    if (call->kind == MIG_K_MUTEX_LOCK && call->args[0] == MIG_LOCK_RUN) {
        p = mig_put_str(p, end, "mutex acquisitions without a record");
    } else if (call->kind == MIG_K_MUTEX_LOCK && call->args[0] >= 0 && call->args[0] < 3) {
        p = mig_put_str(p, end, variant[call->args[0]]);
        p = mig_put_str(p, end, " of mutex ");
        p = put_hex(p, end, (uint64_t)call->args[1]);
    } else {
        p = put_int(p, end, call->args[0]);
        p = mig_put_str(p, end, ", ");
        p = put_int(p, end, call->args[1]);
    }
    return mig_put_str(p, end, ")");
}

/* End the text being written at p into the ring's div_text, mark the ring diverged at
 * `seq` and stop the process: a backup that has diverged must not go on. */
__attribute__((noreturn)) static void stop_diverged(char *p, uint64_t seq)
{
    *p = 0;
    ring->div_seq = seq;
    __atomic_store_n(&ring->state, MIG_RS_DIVERGED, __ATOMIC_RELEASE);
    syscall(SYS_exit_group, 87);
    __builtin_unreachable();
}

/* Report the first divergence in the ring header and stop the process: a backup that
 * has diverged must not go on as if its state were the primary's. */
static void diverge(const struct mig_rec *rec, const struct mig_call *call, const char *what,
                    int64_t expected, int64_t actual)
{
    char *p = ring->div_text, *end = ring->div_text + sizeof ring->div_text - 1;
    p = mig_put_str(p, end, what);
    p = mig_put_str(p, end, ": recorded ");
    p = mig_put_str(p, end, kind_name(rec->kind));
    if (rec->kind != (uint16_t)call->kind) {
        /* the kinds are the values: name them, and the call the replay made instead */
        p = mig_put_str(p, end, ", replay made ");
        p = put_call(p, end, call);
    } else {
        p = mig_put_str(p, end, " ");
        p = put_int(p, end, expected);
        p = mig_put_str(p, end, ", replay made ");
        p = mig_put_str(p, end, kind_name((unsigned)call->kind));
        p = mig_put_str(p, end, " ");
        p = put_int(p, end, actual);
    }
    p = mig_put_str(p, end, " in thread ");
    p = put_int(p, end, mig_tid);
    stop_diverged(p, rec->seq);
}

/* A thread waited MIG_TURN_TIMEOUT_NS for the thread whose record is at the tail: that
 * thread does not exist here or is blocked outside the shim (a data race, or a
 * synchronisation the shim does not see, took the replay elsewhere). */
static void out_of_step(const struct mig_rec *rec)
{
    char *p = ring->div_text, *end = ring->div_text + sizeof ring->div_text - 1;
    p = mig_put_str(p, end, "threads out of step: the log's next call (");
    p = mig_put_str(p, end, kind_name(rec->kind));
    p = mig_put_str(p, end, ") is thread ");
    p = put_int(p, end, rec->tid);
    p = mig_put_str(p, end, "'s, which has not made it for 30 s; thread ");
    p = put_int(p, end, mig_tid);
    p = mig_put_str(p, end, " waits for its own");
    stop_diverged(p, rec->seq);
}

/* The record at the tail is malformed (mig_rec_problem): the log or the ring is damaged,
 * and reading it would go out of bounds. Stop as at a divergence, saying where and why. */
static void corrupt(uint64_t pos, const char *why)
{
    char *p = ring->div_text, *end = ring->div_text + sizeof ring->div_text - 1;
    p = mig_put_str(p, end, "corrupt ring record at position ");
    p = put_int(p, end, (int64_t)pos);
    p = mig_put_str(p, end, ": ");
    p = mig_put_str(p, end, why);
    stop_diverged(p, replay_next_seq);
}

void mig_replay_fits(const struct mig_call *call, uint64_t cap)
{
    if (call->payload_len > cap)
        diverge((const struct mig_rec *)call->payload - 1, call,
                "recorded input longer than the app's buffer", (int64_t)call->payload_len,
                (int64_t)cap);
}

static int is_run(const struct mig_rec *rec)
{
    return rec->kind == MIG_K_MUTEX_LOCK && rec->args[0] == MIG_LOCK_RUN;
}

/* The thread made `made` mutex acquisitions without a record where the primary's made
 * `recorded` (the RUN record `rec`, or 0 before another record): a divergence. */
static void run_differs(const struct mig_rec *rec, int64_t recorded, int64_t made)
{
    char *p = ring->div_text, *end = ring->div_text + sizeof ring->div_text - 1;
    p = mig_put_str(p, end, "unrecorded mutex acquisitions differ: thread ");
    p = put_int(p, end, mig_tid);
    p = mig_put_str(p, end, " made ");
    p = put_int(p, end, recorded);
    p = mig_put_str(p, end, " on the primary before its next record, ");
    p = put_int(p, end, made);
    p = mig_put_str(p, end, " in replay");
    stop_diverged(p, rec->seq);
}

/* Replay: the record at the tail is this thread's RUN or SIGNAL record, which comes before
 * whatever call the thread makes next: take it. A RUN record must count exactly the
 * acquisitions this thread made without a record since its last one; a SIGNAL record runs
 * the app's handler here, as the primary did. */
static void take_front(struct mig_rec *rec)
{
    if (is_run(rec)) {
        if ((int64_t)mig_quiet != rec->args[2])
            run_differs(rec, rec->args[2], mig_quiet);
        mig_quiet = 0;
        advance_tail(ring->tail, rec->len);
        return;
    }
    if (mig_quiet)
        run_differs(rec, 0, mig_quiet);
    int sig = (int)rec->args[0], code = (int)rec->args[1];
    advance_tail(ring->tail, rec->len);
    int busy = mig_busy;
    mig_busy = 0;
    mig_run_app_handler(sig, code);
    mig_busy = busy;
}

static struct mig_rec *take(struct mig_call *call, int nargs)
{
    if (__builtin_expect(mig_token_out, 0))
        mig_sched_resume(); /* serialized threads: wait for this thread's turn to run */
    struct mig_rec *rec = next_record();
    while (rec && (is_run(rec) || (rec->kind == MIG_K_SIGNAL && call->kind != MIG_K_SIGNAL))) {
        /* a RUN record, or the primary ran a handler here: run it now, its calls replay
         * in turn */
        take_front(rec);
        rec = next_record();
    }
    if (!rec)
        return NULL;
    if (rec->kind != (uint16_t)call->kind)
        diverge(rec, call, "call kind differs", rec->kind, call->kind);
    for (int i = 0; i < nargs; i++)
        if (rec->args[i] != call->args[i])
            diverge(rec, call, "argument differs", rec->args[i], call->args[i]);
    if (mig_quiet) /* the primary made a RUN record before this one, had it made these */
        run_differs(rec, 0, mig_quiet);
    call->result = rec->result;
    call->err = rec->err;
    call->payload = rec + 1;
    call->payload_len = rec->payload_len;
    call->rec_args = rec->args;
    replay_pending = rec->len;
    return rec;
}

/* Replay: this thread's next record, if the ring shows it yet (NULL if not). Only this
 * thread takes it, so once found it stays put; the records before it may be taken and
 * their space written again meanwhile, so every read of one is checked against the tail. */
static const struct mig_rec *own_next(void)
{
    uint64_t tail = __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE);
    uint64_t head = __atomic_load_n(&ring->head, __ATOMIC_ACQUIRE);
    uint64_t pos = own_scan > tail ? own_scan : tail;
    while (pos < head) {
        if (mig_rec_problem(ring_data, ring_cap, pos, head)) {
            if (__atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE) > pos)
                goto moved;
            return NULL; /* whoever reaches it at the tail reports it */
        }
        const struct mig_rec *rec = (const struct mig_rec *)(ring_data + (pos & (ring_cap - 1)));
        uint32_t len = rec->len;
        int mine = !(rec->flags & MIG_F_PAD) && rec->tid == mig_tid;
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE) > pos)
            goto moved; /* taken meanwhile: what was read may be another record's bytes */
        if (mine) {
            own_scan = pos;
            return rec;
        }
        pos += len;
        continue;
    moved:
        tail = __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE);
        pos = tail > pos ? tail : pos;
    }
    own_scan = pos;
    return NULL;
}

int mig_replay_quiet(int (*can_pass)(void))
{
    struct timespec slice = {0, 2000000};
    for (;;) {
        if (mig_mode != MIG_REPLAY)
            return -1;
        rearm_if_restored();
        uint32_t gen = __atomic_load_n(&ring->data_futex, __ATOMIC_ACQUIRE);
        const struct mig_rec *rec = own_next();
        if (rec && is_run(rec) && (int64_t)mig_quiet < rec->args[2])
            return 1;
        if (rec && (is_run(rec) || rec->kind == MIG_K_SIGNAL)) {
            /* before this acquisition: take it at its turn, then look again */
            struct mig_rec *at = next_record();
            if (!at)
                return -1;
            take_front(at);
            continue;
        }
        if (rec)
            return 0;
        if (can_pass())
            return 1;
        if (__atomic_load_n(&ring->golive, __ATOMIC_ACQUIRE) &&
            __atomic_load_n(&ring->head, __ATOMIC_ACQUIRE) ==
                __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE)) {
            go_live(); /* the log ended before this thread's next record */
            return -1;
        }
        __atomic_fetch_add(&ring->waiters, 1, __ATOMIC_RELAXED);
        mig_futex(&ring->data_futex, FUTEX_WAIT, gen, &slice);
        __atomic_fetch_sub(&ring->waiters, 1, __ATOMIC_RELAXED);
    }
}

void mig_quiet_flush(void)
{
    if (!mig_quiet)
        return;
    if (mig_mode == MIG_RECORD) {
        append_run();
    } else if (mig_mode == MIG_REPLAY) {
        struct mig_call front = {.kind = MIG_K_MUTEX_LOCK, .args = {MIG_LOCK_RUN}};
        struct mig_rec *rec = next_record();
        if (rec && !is_run(rec))
            diverge(rec, &front, "call kind differs at a thread's end", rec->kind,
                    front.kind);
        if (rec)
            take_front(rec);
    }
}

void mig_replay_nudge(void)
{
    __atomic_fetch_add(&ring->data_futex, 1, __ATOMIC_RELEASE);
    mig_futex(&ring->data_futex, FUTEX_WAKE, 0x7fffffff, NULL);
}

/* A system call the shim cannot handle (mig_trap.c): a replaying process stops as at a
 * divergence, naming it; a recording one says it on stderr and ends with code 86. */
void mig_count_trap(void)
{
    if (ring)
        __atomic_fetch_add(&ring->traps, 1, __ATOMIC_RELAXED);
}

void mig_stop_refused(const char *text)
{
    if (ring && mig_mode == MIG_REPLAY) {
        fatal_line(text);
        char *p = ring->div_text, *end = ring->div_text + sizeof ring->div_text - 1;
        p = mig_put_str(p, end, text);
        stop_diverged(p, replay_next_seq);
    }
    mig_die(text);
}

void mig_lock_diverged(const char *what, int64_t expected, int64_t actual)
{
    char *p = ring->div_text, *end = ring->div_text + sizeof ring->div_text - 1;
    p = mig_put_str(p, end, what);
    p = mig_put_str(p, end, ": recorded acquisition ");
    p = put_int(p, end, expected);
    p = mig_put_str(p, end, ", replay found ");
    p = put_int(p, end, actual);
    stop_diverged(p, replay_next_seq ? replay_next_seq - 1 : 0);
}

int mig_replay(struct mig_call *call, int nargs)
{
    return take(call, nargs) != NULL;
}

int mig_replay_output(struct mig_call *call, int nargs)
{
    struct mig_rec *rec = take(call, nargs);
    if (!rec)
        return 0;
    /* Compare exactly the bytes the primary's call wrote. */
    uint64_t n = rec->out_len <= call->out_len ? rec->out_len : call->out_len;
    uint64_t h = mig_out_hash(call, n);
    if (n != rec->out_len)
        diverge(rec, call, "output length differs", (int64_t)rec->out_len, (int64_t)n);
    if (h != rec->out_hash)
        diverge(rec, call, "output bytes differ (hash)", (int64_t)rec->out_hash, (int64_t)h);
    return 1;
}

void mig_replay_done(void)
{
    advance_tail(ring->tail, replay_pending);
    replay_pending = 0;
}

/* Serialized threads (mig_sched.c), replay. */
const struct mig_rec *mig_peek_tail(void)
{
    return tail_record(1);
}

/* The record at the tail as it is now (NULL: none yet, filler or being taken), for a
 * thread that is not the token's holder: it only looks. */
const struct mig_rec *mig_tail_now(void)
{
    uint64_t tail = __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE);
    uint64_t head = __atomic_load_n(&ring->head, __ATOMIC_ACQUIRE);
    if (head <= tail || mig_rec_problem(ring_data, ring_cap, tail, head))
        return NULL;
    const struct mig_rec *rec = (const struct mig_rec *)(ring_data + (tail & (ring_cap - 1)));
    if (rec->flags & MIG_F_PAD)
        return NULL;
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE) == tail ? rec : NULL;
}

int mig_take_switch(void)
{
    struct mig_call sw = {.kind = MIG_K_SWITCH};
    struct mig_rec *rec = next_record();
    if (!rec)
        return 0;
    if (rec->kind != MIG_K_SWITCH)
        diverge(rec, &sw, "call kind differs where a thread resumes", rec->kind, sw.kind);
    advance_tail(ring->tail, rec->len);
    return 1;
}

void mig_sched_diverged(const struct mig_rec *rec, const char *what, int64_t recorded,
                        int64_t made)
{
    char *p = ring->div_text, *end = ring->div_text + sizeof ring->div_text - 1;
    p = mig_put_str(p, end, what);
    p = mig_put_str(p, end, ": thread ");
    p = put_int(p, end, mig_tid);
    p = mig_put_str(p, end, " let the others run at its switch point ");
    p = put_int(p, end, recorded);
    p = mig_put_str(p, end, " on the primary, replay is at ");
    p = put_int(p, end, made);
    stop_diverged(p, rec->seq);
}

/* Going live failed (mig_live.c): the promotion cannot serve. Say why in the ring (the
 * agent reports a failed promotion) and on stderr, and end the process. */
void mig_live_failed(const char *what, int err)
{
    char *p = ring->div_text, *end = ring->div_text + sizeof ring->div_text - 1;
    p = mig_put_str(p, end, what);
    if (err) {
        p = mig_put_str(p, end, ": ");
        p = mig_put_str(p, end, strerror(err));
    }
    *p = 0;
    fatal_line(ring->div_text);
    __atomic_store_n(&ring->state, MIG_RS_LIVE_FAILED, __ATOMIC_RELEASE);
    syscall(SYS_exit_group, 88);
    __builtin_unreachable();
}

void mig_sched_stop(const struct mig_rec *rec, const char *text)
{
    char *p = ring->div_text, *end = ring->div_text + sizeof ring->div_text - 1;
    p = mig_put_str(p, end, text);
    fatal_line(text);
    stop_diverged(p, rec->seq);
}

/* --------------------------------------------------------------- fd classes */

/* 0: unknown, 1: recorded (socket, pipe, device...), 2: regular file or directory,
 * 3: recorded, and the app's stdin pipe (reads are counted in the ring's stdin_read). */
static unsigned char fd_class[65536];

int mig_fd_recorded(int fd)
{
    if (fd < 0 || fd >= (int)sizeof fd_class)
        return 1;
    if (fd_class[fd] == 0) {
        struct stat st;
        if (syscall(SYS_fstat, fd, &st) != 0)
            return 1; /* a bad fd: record the EBADF like any other result */
        if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))
            fd_class[fd] = 2;
        else if (S_ISFIFO(st.st_mode) && ring && ring->stdin_ino
                 && (uint64_t)st.st_ino == ring->stdin_ino
                 && (uint64_t)st.st_dev == ring->stdin_dev)
            fd_class[fd] = 3;
        else
            fd_class[fd] = 1;
    }
    return fd_class[fd] != 2;
}

void mig_stdin_count(int fd, int64_t result)
{
    if (result > 0 && fd >= 0 && fd < (int)sizeof fd_class && fd_class[fd] == 3 && ring)
        __atomic_fetch_add(&ring->stdin_read, (uint64_t)result, __ATOMIC_RELAXED);
}

void mig_fd_forget(int fd)
{
    if (fd >= 0 && fd < (int)sizeof fd_class)
        fd_class[fd] = 0;
}

void mig_fd_mark(int fd, int recorded)
{
    if (fd >= 0 && fd < (int)sizeof fd_class)
        fd_class[fd] = recorded ? 1 : 2;
}
