/* mig_hold.c -- output commit without stopping the app: held outputs.
 *
 * In output mode an output may reach a client only once its causes are committed. Instead
 * of stopping the writing thread until then, the shim records the write as complete, keeps
 * the bytes here, and a release thread of this process writes them to the socket once the
 * commit covering them is done (as COLO and Remus buffer a VM's packets). One commit then
 * releases every output of a few milliseconds, and the app keeps serving meanwhile. A
 * backup starts the same thread and maps the same buffer at the same output
 * (mig_hold_mirror): both change the app's own heap and mappings.
 *
 * The bytes go out through a duplicate of the app's fd (placed high in the fd space, so the
 * app's own fd numbers stay the same as on a backup), in the order they were written; a
 * shutdown the app makes after held bytes is queued behind them, and the app's close of
 * such an fd closes the duplicate after its last bytes (the fd is also taken out of the
 * app's epoll sets, as the app's close would have done). Before exec and exit the queue is
 * flushed; a forked child drops its parent's queue. Outputs that cannot be held (datagrams
 * with an address, ancillary data, more than a quarter of the buffer) take the blocking
 * barrier instead. */
#include "mig.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "mig_poison.h"

#define HOLD_BYTES (64ull << 20)
#define HOLD_ITEMS 16384
#define MAX_FD 65536
#define EP_SLOTS 4

enum hold_op { OP_WRITE = 0, OP_SEND = 1, OP_SHUTDOWN = 2, OP_CLOSE = 3 };

struct hold_item {
    uint64_t seq;
    uint64_t off;
    uint64_t len;
    int fd; /* the duplicate */
    int op;
    int arg; /* send flags or shutdown how */
};

static struct hold_item items[HOLD_ITEMS];
static unsigned char *bytes;
static uint64_t q_head, q_tail, b_head, b_tail;
static uint32_t q_lock, q_futex;
static int dup_of[MAX_FD];
static unsigned char broken[MAX_FD]; /* by duplicate: a write to it failed (reader gone) */
static int ep_of[MAX_FD][EP_SLOTS];
static int min_dup = -1;
static int started;

static void lock(void)
{
    while (__atomic_exchange_n(&q_lock, 1, __ATOMIC_ACQUIRE))
        syscall(SYS_sched_yield);
}

static void unlock(void)
{
    __atomic_store_n(&q_lock, 0, __ATOMIC_RELEASE);
}

/* q_futex changes with every change of the queue; a thread that waits for one (the release
 * thread for an item, an app thread for room, a flush for the end) counts itself in
 * q_sleepers first, and a change makes the wake system call only when one does. Each
 * change made it before: the release thread woke nobody after nearly every item it wrote
 * (Redis in output mode: futex calls took about a tenth of the primary's CPU, and this wake
 * was the one made most often). The word is the process's own memory, so its futex is
 * private: the kernel keys it without walking the page tables. Both sides are sequentially
 * consistent: a sleeper counts itself, then looks at the word; a waker changes the word,
 * then looks at the count; one of the two sees the other's write. */
static uint32_t q_sleepers;

static void wake(void)
{
    __atomic_fetch_add(&q_futex, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&q_sleepers, __ATOMIC_SEQ_CST))
        syscall(SYS_futex, &q_futex, FUTEX_WAKE_PRIVATE, 0x7fffffff, NULL, NULL, 0);
}

static void wait_change(uint32_t seen)
{
    struct timespec slice = {0, 20000000};
    __atomic_fetch_add(&q_sleepers, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&q_futex, __ATOMIC_SEQ_CST) == seen)
        syscall(SYS_futex, &q_futex, FUTEX_WAIT_PRIVATE, seen, &slice, NULL, 0);
    __atomic_fetch_sub(&q_sleepers, 1, __ATOMIC_SEQ_CST);
}

/* -------------------------------------------------------------- the release thread */

/* The release thread makes its system calls from the shim's text (mig_sys), never from
 * libc's: it blocks every signal, so it cannot be stopped while a site of libc is patched
 * (mig_patch.c), and must never be inside one. */
pid_t mig_hold_ktid;

static void write_all(const struct hold_item *it)
{
    const unsigned char *p = bytes + (it->off % HOLD_BYTES);
    uint64_t left = it->len;
    while (left) {
        long n = it->op == OP_SEND
                     ? mig_sys(SYS_sendto, it->fd, p, left, it->arg & ~MSG_DONTWAIT, NULL, 0)
                     : mig_sys(SYS_write, it->fd, p, left);
        if (n > 0) {
            p += n;
            left -= (uint64_t)n;
        } else if (n == -EAGAIN || n == -EINTR) {
            struct pollfd pfd = {it->fd, POLLOUT, 0};
            mig_sys(SYS_poll, &pfd, 1, 100);
        } else {
            /* the peer is gone: the app learns it from its next read, or from its next
             * write, which is no longer held (mig_hold_output) */
            __atomic_store_n(&broken[it->fd], 1, __ATOMIC_RELEASE);
            return;
        }
    }
}

static void *release_main(void *unused)
{
    (void)unused;
    mig_busy = 1; /* this thread's own calls are never recorded */
    mig_preempt_exclude(&unused, 1); /* its stack is the shim's, not the app's */
    mig_sched_shim_thread();
    /* every signal but libc's own two (a thread cancelled, setuid across threads: libc's
     * pthread_sigmask leaves them out too) */
    uint64_t all = ~0ull & ~(1ull << (32 - 1)) & ~(1ull << (33 - 1));
    mig_sys(SYS_rt_sigprocmask, SIG_BLOCK, &all, NULL, 8);
    __atomic_store_n(&mig_hold_ktid, (pid_t)mig_sys(SYS_gettid), __ATOMIC_RELEASE);
    for (;;) {
        uint32_t seen = __atomic_load_n(&q_futex, __ATOMIC_ACQUIRE);
        if (__atomic_load_n(&q_tail, __ATOMIC_ACQUIRE) ==
            __atomic_load_n(&q_head, __ATOMIC_ACQUIRE)) {
            wait_change(seen);
            continue;
        }
        struct hold_item it = items[q_tail % HOLD_ITEMS];
        if (it.op != OP_CLOSE)
            mig_barrier(it.seq); /* returns at once when a commit already covers it */
        if (it.op == OP_WRITE || it.op == OP_SEND)
            write_all(&it);
        else if (it.op == OP_SHUTDOWN)
            mig_sys(SYS_shutdown, it.fd, it.arg);
        else
            syscall(SYS_close, it.fd);
        lock();
        q_tail++;
        if (it.len)
            b_tail = it.off + it.len;
        unlock();
        wake();
    }
    return NULL;
}

/* -------------------------------------------------------------- the app's side */

/* Set up once per process: the buffer and the release thread. Threads of the app may get
 * here together with their first outputs: one sets up, the others wait for it. */
static uint32_t init_lock;
static int usable = -1; /* -1: not set up yet, 0: cannot hold here, 1: ready */

static int set_up(void)
{
    struct rlimit rl;
    /* duplicates live at the top of the fd space, far from the app's own numbers */
    min_dup = (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur >= 512 &&
               rl.rlim_cur <= MAX_FD) ? (int)rl.rlim_cur - 128 : 0;
    if (min_dup == 0)
        return 0;
    if (!bytes) {
        void *m = (void *)syscall(SYS_mmap, NULL, HOLD_BYTES, PROT_READ | PROT_WRITE,
                                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if ((uintptr_t)m >= (uintptr_t)-4095) /* -errno: a raw system call */
            return 0;
        bytes = m;
        mig_preempt_exclude(m, HOLD_BYTES);
    }
    if (!started) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 256 * 1024); /* room for the static TLS too */
        if (mig_real.pthread_create(&t, &attr, release_main, NULL) != 0)
            return 0;
        started = 1;
    }
    return 1;
}

static int ready_to_hold(void)
{
    int state = __atomic_load_n(&usable, __ATOMIC_ACQUIRE);
    if (state >= 0)
        return state;
    while (__atomic_exchange_n(&init_lock, 1, __ATOMIC_ACQUIRE))
        syscall(SYS_sched_yield);
    if (__atomic_load_n(&usable, __ATOMIC_ACQUIRE) < 0)
        __atomic_store_n(&usable, set_up(), __ATOMIC_RELEASE);
    __atomic_store_n(&init_lock, 0, __ATOMIC_RELEASE);
    return __atomic_load_n(&usable, __ATOMIC_ACQUIRE);
}

/* Room for `len` more bytes and one item; the caller holds the lock, which this may drop
 * while the release thread makes room (back-pressure on an app that outruns commits). */
static uint64_t reserve(uint64_t len)
{
    for (;;) {
        uint64_t start = b_head;
        if (start % HOLD_BYTES + len > HOLD_BYTES) /* keep each item contiguous */
            start += HOLD_BYTES - start % HOLD_BYTES;
        if (q_head - q_tail < HOLD_ITEMS && start + len - b_tail <= HOLD_BYTES)
            return start;
        uint32_t seen = __atomic_load_n(&q_futex, __ATOMIC_ACQUIRE);
        unlock();
        wait_change(seen);
        lock();
    }
}

static int dup_for(int fd)
{
    if (dup_of[fd] == 0) {
        int d = (int)syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, min_dup);
        if (d < 0)
            return -1;
        __atomic_store_n(&broken[d], 0, __ATOMIC_RELEASE);
        dup_of[fd] = d;
    }
    return dup_of[fd];
}

/* An output of a size and fd this file can hold (before it knows whether it is set up). */
static int holdable(const struct mig_call *c)
{
    int fd = (int)c->args[0];
    return fd >= 0 && fd < MAX_FD && c->out_len <= HOLD_BYTES / 4;
}

int mig_hold_output(struct mig_call *c, int op, int arg)
{
    int fd = (int)c->args[0];
    if (!holdable(c) || !ready_to_hold())
        return 0;
    mig_sched_resume(); /* the record below is made under the lock: take the token first */
    lock();
    int d = dup_for(fd);
    /* A write that failed behind the app's back (a pipe whose reader is gone: `yes | head`)
     * makes its next one go for real, after a commit of what came before: it fails with
     * EPIPE and SIGPIPE as it would have without mig, and the result is recorded. */
    if (d < 0 || __atomic_load_n(&broken[d], __ATOMIC_ACQUIRE)) {
        unlock();
        return 0;
    }
    uint64_t start = reserve(c->out_len);
    unsigned char *dst = bytes + start % HOLD_BYTES;
    if (c->out) {
        memcpy(dst, c->out, c->out_len);
    } else {
        uint64_t done = 0;
        for (int i = 0; i < c->iovcnt && done < c->out_len; i++) {
            uint64_t n = c->iov[i].iov_len;
            if (n > c->out_len - done)
                n = c->out_len - done;
            memcpy(dst + done, c->iov[i].iov_base, n);
            done += n;
        }
    }
    c->result = (int64_t)c->out_len; /* the app is told everything was written */
    c->err = 0;
    c->out = dst; /* hash what is kept, exactly the bytes that will be sent */
    c->iov = NULL;
    uint64_t seq = mig_record(c);
    items[q_head % HOLD_ITEMS] = (struct hold_item){seq, start, c->out_len, d, op, arg};
    b_head = start + c->out_len;
    __atomic_store_n(&q_head, q_head + 1, __ATOMIC_RELEASE);
    unlock();
    wake();
    return 1;
}

/* The primary's first held output runs set_up, and that changes the app's process, not
 * only the shim's: pthread_create takes the release thread's TLS vector from the app's
 * own calloc (jemalloc's, in Redis: its first malloc too, if the app has made none yet)
 * and maps the thread's stack, and the buffer is a mapping. An allocator whose next steps
 * depend on its earlier calls (jemalloc's decay ticks, which read a clock) or on where the
 * kernel put earlier mappings then takes another path on a backup that skipped them. So
 * every host sets it up at the same output, the first that could be held, whether it is
 * (an eventfd's or a self-pipe's write is not: output_call): a backup's release thread
 * waits idle, and is there when the backup goes live. */
void mig_hold_mirror(const struct mig_call *c)
{
    if (mig_barrier_mode == MIG_B_OUTPUT && holdable(c))
        ready_to_hold();
}

static int pending_for(int d)
{
    for (uint64_t i = q_tail; i < q_head; i++)
        if (items[i % HOLD_ITEMS].fd == d)
            return 1;
    return 0;
}

int mig_hold_shutdown(struct mig_call *c)
{
    int fd = (int)c->args[0];
    if (fd < 0 || fd >= MAX_FD || !dup_of[fd])
        return 0;
    mig_sched_resume();
    lock();
    int queued = pending_for(dup_of[fd]);
    if (queued) {
        reserve(0);
        c->result = 0; /* the FIN leaves after the held bytes, like they do */
        c->err = 0;
        uint64_t seq = mig_record(c);
        items[q_head % HOLD_ITEMS] = (struct hold_item){seq, b_head, 0, dup_of[fd],
                                                        OP_SHUTDOWN, (int)c->args[1]};
        __atomic_store_n(&q_head, q_head + 1, __ATOMIC_RELEASE);
    }
    unlock();
    if (queued)
        wake();
    return queued;
}

void mig_hold_close(int fd)
{
    if (fd < 0 || fd >= MAX_FD)
        return;
    for (int i = 0; i < EP_SLOTS; i++) /* the app's close would drop fd from its epolls */
        if (ep_of[fd][i]) {
            if (dup_of[fd])
                syscall(SYS_epoll_ctl, ep_of[fd][i] - 1, EPOLL_CTL_DEL, fd, NULL);
            ep_of[fd][i] = 0;
        }
    if (!dup_of[fd])
        return;
    lock();
    reserve(0);
    items[q_head % HOLD_ITEMS] = (struct hold_item){0, b_head, 0, dup_of[fd], OP_CLOSE, 0};
    __atomic_store_n(&q_head, q_head + 1, __ATOMIC_RELEASE);
    dup_of[fd] = 0;
    unlock();
    wake();
}

void mig_hold_epoll(int epfd, int op, int fd)
{
    if (fd < 0 || fd >= MAX_FD || epfd < 0)
        return;
    for (int i = 0; i < EP_SLOTS; i++) {
        if (op == EPOLL_CTL_DEL && ep_of[fd][i] == epfd + 1)
            ep_of[fd][i] = 0;
        if (op == EPOLL_CTL_ADD && ep_of[fd][i] == 0) {
            ep_of[fd][i] = epfd + 1;
            return;
        }
    }
}

void mig_hold_flush(void)
{
    while (__atomic_load_n(&q_tail, __ATOMIC_ACQUIRE) != __atomic_load_n(&q_head, __ATOMIC_ACQUIRE)) {
        uint32_t seen = __atomic_load_n(&q_futex, __ATOMIC_ACQUIRE);
        if (__atomic_load_n(&q_tail, __ATOMIC_ACQUIRE) == __atomic_load_n(&q_head, __ATOMIC_ACQUIRE))
            break;
        wait_change(seen);
    }
}

void mig_hold_after_fork(void)
{
    /* the parent's thread releases the parent's bytes; this child only drops its copies */
    for (int fd = 0; fd < MAX_FD; fd++)
        if (dup_of[fd]) {
            syscall(SYS_close, dup_of[fd]);
            dup_of[fd] = 0;
        }
    for (uint64_t i = q_tail; i < q_head; i++) /* duplicates already closed by the app */
        if (items[i % HOLD_ITEMS].op == OP_CLOSE)
            syscall(SYS_close, items[i % HOLD_ITEMS].fd);
    q_head = q_tail = b_head = b_tail = 0;
    q_lock = 0;
    q_sleepers = 0; /* the parent's threads that waited are not here */
    mig_hold_ktid = 0;
    started = 0;
    init_lock = 0;
    usable = -1; /* the child sets up its own release thread at its first output */
}

__attribute__((destructor)) static void flush_at_exit(void)
{
    if (mig_mode == MIG_RECORD)
        mig_hold_flush();
}
