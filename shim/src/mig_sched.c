/* mig_sched.c -- serialized threads ([app] threads = "serialized"): one thread of a
 * process runs the app's code at a time, and where the run token passes between threads
 * is part of the log, so memory the threads share without locks (flags read with atomics,
 * counters, a clock global) sees the same interleaving on every host.
 *
 * The token. Once a process has created a thread, a thread runs app code only while it
 * holds the process's token. It lets the token go at a switch point -- the entry of every
 * intercepted call (MIG_ENTER), a trapped futex wait or sched_yield, a thread's exit --
 * and takes it again before it runs app code or makes a record (mig_sched_resume). The
 * call itself (a read that blocks, a futex wait) runs without the token, so a thread
 * that waits never holds up the others. On the primary the token is a ticket lock: the
 * threads that wait for it get it in the order they asked, so a thread that makes calls
 * in a loop cannot starve the others.
 *
 * The log. Each thread counts its switch points. When a thread takes the token and the
 * previous holder was another thread, it records SWITCH {previous holder, the switch
 * point at which it let go}. In replay the holder, at each switch point, looks at the
 * next record of the process: a SWITCH naming it and this switch point hands the token to
 * the thread the SWITCH belongs to; any other record means the holder goes on. Records
 * are made only holding the token, so the ring's order is the order in which the threads
 * ran. A futex wait replays from its record without waiting in the kernel (the recorded
 * wake-up comes at the thread's turn); wakes run for real and return the recorded count.
 *
 * No preemption. This machine has no hardware counters to replay a preemption by
 * instruction count (rr's method), so a switch happens only at calls. A thread that waits
 * for the token longer than MIG_STALL_MS (serial_stall_ms in app.toml, 2 s by default)
 * while its holder makes no call -- a spin on a flag that only the waiting thread will set
 * -- gives up serialization for the process rather than hang the app: the primary goes
 * on unserialized and records a forced SWITCH, and a replica stops there, saying so
 * (docs/threads.md). Availability of the service comes first; a replica never follows a
 * log it cannot reproduce: the app has no hot standby until it is restarted. */
#include "mig.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <string.h>
#include <sys/syscall.h>

#include "mig_poison.h"

int mig_serial;              /* chosen for this app (record and replay agree) */
int mig_serial_on;           /* on in this process: chosen, it has threads, not given up */
MIG_TLS int mig_token_out;   /* this thread let the token go and must take it back */
uint32_t mig_agent_waits;    /* threads waiting on the agent (a barrier, a full ring) */
static MIG_TLS uint64_t points; /* switch points this thread passed */
static uint64_t stall_ns = 2000000000ull;

/* SWITCH records: args {the thread that let go, its switch point, how, where (PREEMPTED:
 * the address of the stop, mig_preempt.c)} */
enum { PASSED = 0, FORCED = 1, END = 2, PREEMPTED = 3 };

static struct {
    uint32_t next;    /* record: the next ticket */
    uint32_t serving; /* record: the ticket that may run (a futex word) */
    uint32_t owner;   /* logical tid + 1 of the holder, 0 while free (replay's futex word) */
    uint32_t last;    /* logical tid + 1 of the thread that held it last */
    uint64_t last_sp; /* ... and the switch point at which it let go */
    uint32_t waiting; /* threads waiting for it (record) */
    uint64_t owner_id;   /* the kernel's id of the holder (to ask it to stop, mig_preempt.c)
                          * and its timer for requests sent ahead, one word: timer << 32 |
                          * kernel id (0 while free): owner_ktid() */
    char *owner_sel;     /* ... and its selector (MIG_SEL_BLOCK: it runs the app's code) */
    uint32_t passes;     /* switch points passed by holders (a waiter sees progress) */
    uint32_t spinners;   /* record: preempted spinners among the waiters */
    uint64_t spin_since; /* ... waiting since */
    uint32_t broken;  /* the primary gave up serializing this process */
    uint32_t *exited; /* the thread id word of a thread that let go at its exit */
    uint64_t since;   /* record: when the holder took it */
    uint32_t sleepers; /* replay: waiters asleep on the ring's data word (rep_wait) */
} tok;

/* The word the kernel clears when this thread is gone (CLONE_CHILD_CLEARTID), if any. */
static MIG_TLS uint32_t *exit_word;
static MIG_TLS uint32_t my_ktid;
/* This thread's timer for requests to stop (mig_preempt.c), made when it first takes the
 * token: at the same point of the log on both hosts, so that the app's own timers are
 * numbered alike on each. */
static MIG_TLS int my_timer = -1;
static MIG_TLS int timer_made;

static void took_token(void)
{
    if (!my_ktid)
        my_ktid = (uint32_t)syscall(SYS_gettid);
    if (!timer_made) {
        timer_made = 1;
        my_timer = mig_preempt_new_timer(my_ktid);
    }
    if (!mig_errno_at)
        mig_errno_at = &errno; /* for the preemption's handler (mig_trap.c) */
    __atomic_store_n(&tok.owner_sel, &mig_sel, __ATOMIC_RELEASE);
    __atomic_store_n(&tok.owner_id, (uint64_t)(uint32_t)my_timer << 32 | my_ktid,
                     __ATOMIC_RELEASE); /* (after the selector: a waiter reads them so) */
    tok.since = mig_monotonic_ns();
}

/* The kernel's id of the holder, 0 while the token is free. */
static uint32_t owner_ktid(void)
{
    return (uint32_t)__atomic_load_n(&tok.owner_id, __ATOMIC_ACQUIRE);
}

int mig_sched_holding(void)
{
    return __atomic_load_n(&tok.owner, __ATOMIC_ACQUIRE) == mig_tid + 1;
}

/* Does a thread wait for the token (record)? */
int mig_sched_others_wait(void)
{
    return __atomic_load_n(&tok.next, __ATOMIC_ACQUIRE) -
           __atomic_load_n(&tok.serving, __ATOMIC_ACQUIRE) > 1;
}

int mig_serial_alone(void)
{
    if (!mig_serial || tok.broken)
        return 0;
    if (!__atomic_load_n(&mig_serial_on, __ATOMIC_ACQUIRE))
        return 1;
    return !mig_token_out && mig_sched_holding();
}

/* The run token's slice (others_first): MIG_SLICE_US in the app's environment, a
 * diagnostic the benchmarks vary (bench/httpserver_bench.py --slice-us). */
static uint64_t slice_ns = 50000ull;
/* MIG_SCHED_BATCH = "0" in [app] env: no SCHED_BATCH (pin_to_one_cpu), a diagnostic the
 * benchmark varies (bench/httpserver_bench.py --unbatched). */
static int no_batch;
/* MIG_PIN = "0" in [app] env: no pinning to one CPU (pin_to_one_cpu), a diagnostic the
 * benchmark varies (bench/commit_bench.py -spread). */
static int no_pin;

/* The decimal number at the start of environment variable `name` (its digits read while
 * the number is below `limit`); *whole is -1 when it is unset or empty, 1 when the number
 * is all of it, 0 when something else follows. */
static uint64_t env_number(const char *name, uint64_t limit, int *whole)
{
    const char *s = getenv(name), *p = s;
    uint64_t v = 0;
    for (; p && *p >= '0' && *p <= '9' && v < limit; p++)
        v = v * 10 + (uint64_t)(*p - '0');
    *whole = !s || !*s ? -1 : !*p;
    return v;
}

/* Whether environment variable `name` is "0" (a diagnostic turned off). */
static int env_off(const char *name)
{
    const char *s = getenv(name);
    return s && strcmp(s, "0") == 0;
}

/* ------------------------------------------------------------------ the trace */

/* MIG_TRACE_POINTS=DIR in [app] env: a diagnostic, a line for each switch point of every
 * thread, in DIR/record-LPID on the primary and DIR/replay-LPID on a replica:
 *   P THREAD POINT CALL NR   the thread passed its switch point POINT at CALL (the shim's
 *                            function: a wrapper, on_futex, fd_call...), NR the trapped
 *                            system call's number (0: a call through libc's symbol);
 *   T THREAD POINT           it took the token there;
 *   S THREAD POINT HOW       it was stopped in a spin there (docs/threads.md, "Preempting
 *                            a spin"), asked by HOW: "waiter", a waiting thread's signal,
 *                            "timer", a request sent ahead (mig_preempt_ask_at), or
 *                            "holder", armed by itself (replay: mig_preempt_arm_here).
 * The lines are written holding the token, so a file's order is the order the threads ran.
 * scripts/points_diff.py compares two such files thread by thread and shows where they
 * part: the call one host made and the other did not (docs/threads.md, "Where threads went
 * out of step"). It costs a write per switch point. */
static const char *trace_dir;
static int trace_fd = -1; /* -2: to open at the first line */

static void trace_open(void)
{
    char path[512], *p = path, *end = path + sizeof path - 32;
    p = mig_put_str(p, end, trace_dir);
    p = mig_put_str(p, end, mig_mode == MIG_REPLAY ? "/replay-" : "/record-");
    p = mig_put_str(p, end, mig_lpid());
    *p = 0;
    trace_fd = -1;
    long fd = mig_sys(SYS_openat, AT_FDCWD, path,
                      O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        mig_warn("MIG_TRACE_POINTS: cannot write ", path);
        return;
    }
    /* far above the app's fds, whose numbers must not move */
    struct rlimit rl;
    long floor = mig_sys(SYS_getrlimit, RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur > 64
                     ? (long)rl.rlim_cur - 16 : 48;
    long high = mig_sys(SYS_fcntl, fd, F_DUPFD_CLOEXEC, floor);
    mig_sys(SYS_close, fd);
    trace_fd = high < 0 ? -1 : (int)high;
}

static void trace(char what, const char *call)
{
    if (__builtin_expect(trace_fd == -1, 1))
        return;
    if (trace_fd == -2)
        trace_open();
    if (trace_fd < 0)
        return;
    char line[160], *p = line, *end = line + sizeof line - 2;
    *p++ = what;
    *p++ = ' ';
    p = mig_put_uint(p, mig_tid);
    *p++ = ' ';
    p = mig_put_uint(p, points);
    if (call) {
        *p++ = ' ';
        p = mig_put_str(p, end - 24, call);
        if (what == 'P') {
            *p++ = ' ';
            p = mig_put_uint(p, (uint64_t)mig_trap_nr);
        }
    }
    *p++ = '\n';
    mig_sys(SYS_write, trace_fd, line, p - line);
}

void mig_sched_init(void)
{
    trace_dir = getenv("MIG_TRACE_POINTS");
    if (trace_dir && *trace_dir)
        trace_fd = -2;
    const char *mode = getenv("MIG_THREADS");
    if (!mode || strcmp(mode, "serialized") != 0)
        return;
    if (!mig_trapping) {
        mig_warn("threads = \"serialized\" needs capture = \"trap\" (futex waits must be seen):"
                 " threads run in parallel", NULL);
        return;
    }
    int whole;
    uint64_t ms = env_number("MIG_STALL_MS", UINT64_MAX / 10, &whole);
    if (ms)
        stall_ns = ms * 1000000ull;
    no_batch = env_off("MIG_SCHED_BATCH");
    no_pin = env_off("MIG_PIN");
    uint64_t us = env_number("MIG_SLICE_US", 1000000000ull, &whole);
    if (whole == 1)
        slice_ns = us * 1000ull;
    else if (whole == 0)
        mig_warn("MIG_SLICE_US is not a number of microseconds: the default slice is kept",
                 NULL);
    mig_serial = 1;
}

/* ------------------------------------------------------------------ one CPU */

/* A serialized process runs its threads on one CPU, as rr does: the token passes between
 * threads of one CPU by a plain context switch, where a wake-up on the other CPU cost tens
 * of microseconds at each pass (Redis with I/O threads ran at 0.1x to 0.6x of its rate
 * pinned to one CPU natively; pinned, 0.9x to 1.0x: docs/benchmarks.md). The app still
 * sees its mask from before (sched_getaffinity: mig_sched_affinity) until it sets one
 * itself; a child it forks gets that mask back (it has one thread). */
static unsigned long spread_mask[16]; /* the process's mask before mig pinned it */
static long spread_len;                /* its size in bytes; 0: not pinned by mig */
static unsigned long pinned_mask[16]; /* the one CPU mig pinned it to */

/* Wake-ups that do not preempt. On one CPU, a token that passes wakes the thread it goes
 * to, and the kernel switched to that thread at once (wake-up preemption) while the thread
 * that let it go was still on its way to the call it blocks in, which it ran again only
 * to make: a context switch more at each pass, and a thread woken before its turn. A
 * serialized process that runs under SCHED_OTHER gets SCHED_BATCH -- the same fair
 * policy, without wake-up preemption: a thread woken runs when the one that woke it
 * blocks, or at the next tick. Node.js served 1.8 to 1.9 times as many requests,
 * poolserver 1.7 times, CPython's http.server a tenth more (docs/benchmarks.md,
 * "Wake-ups that do not preempt"). The app sees SCHED_OTHER (sched_getscheduler,
 * mig_sched_policy) until it sets a policy itself; a child it forks and a program it
 * starts get SCHED_OTHER back. */
static int batched;

static long set_policy(int policy)
{
    struct sched_param none = {0};
    return mig_sys(SYS_sched_setscheduler, 0, policy, &none);
}

static void pin_to_one_cpu(void)
{
    unsigned cpu = 0;
    unsigned long one[16] = {0};
    long n = no_pin ? 0 : mig_sys(SYS_sched_getaffinity, 0, sizeof spread_mask, spread_mask);
    if (n > 0 && mig_sys(SYS_getcpu, &cpu, NULL, NULL) == 0 && cpu < sizeof one * 8) {
        one[cpu / 64] = 1ul << (cpu % 64);
        if (mig_sys(SYS_sched_setaffinity, 0, sizeof one, one) == 0) {
            memcpy(pinned_mask, one, sizeof one);
            spread_len = n;
        }
    }
    if (!no_batch && mig_sys(SYS_sched_getscheduler, 0) == SCHED_OTHER &&
        set_policy(SCHED_BATCH) == 0)
        batched = 1; /* the threads it makes inherit it */
}

/* A program the process starts (posix_spawn, a vfork child's execve) or becomes (execve)
 * is no serialized process yet: the calling thread gets the mask from before mig pinned
 * the process, which the new program inherits; mig_sched_repin puts the thread back on
 * the one CPU after (the spawn's parent, a failed exec). Nothing changes in a process mig
 * did not pin, or one that set a mask itself. */
void mig_sched_unpin(void)
{
    if (spread_len)
        mig_sys(SYS_sched_setaffinity, 0, spread_len, spread_mask);
    if (batched)
        set_policy(SCHED_OTHER);
}

void mig_sched_repin(void)
{
    if (spread_len)
        mig_sys(SYS_sched_setaffinity, 0, sizeof pinned_mask, pinned_mask);
    if (batched)
        set_policy(SCHED_BATCH);
}

/* A thread that waits for the token while its holder spins (mig_preempt.c asks the holder
 * to stop) needs the CPU the holder spins on: under SCHED_BATCH its wake-ups would wait
 * for the tick, a slice of the spin more at each hand-over (a worker whose main thread
 * spins waiting for its every call, tests/apps/turnspin.c, took 9 times as long; Redis's
 * I/O threads hand work over by spinning). So from its first ask it runs under
 * SCHED_OTHER, until it has asked none for HURRY_NS: spinners hand over again soon. */
#define HURRY_NS 100000000ull
static MIG_TLS uint64_t hurried_until; /* 0: not hurried */

static void hurry(uint64_t now)
{
    if (!batched)
        return;
    if (!hurried_until)
        set_policy(SCHED_OTHER);
    hurried_until = now + HURRY_NS;
}

static void unhurry(void)
{
    if (hurried_until && mig_monotonic_ns() > hurried_until) {
        hurried_until = 0;
        if (batched)
            set_policy(SCHED_BATCH);
    }
}

/* A thread of the shim's own (the release thread of held outputs, mig_hold.c): back
 * under SCHED_OTHER, so that the acknowledgement that wakes it sends the outputs at once,
 * not when the app's thread running blocks. */
void mig_sched_shim_thread(void)
{
    if (batched)
        set_policy(SCHED_OTHER);
}

/* Another process's thread, or this one's (a[0] 0 or a thread id of this process)? */
static int own_thread(long tid)
{
    return !tid || mig_sys(SYS_tgkill, mig_sys(SYS_getpid), tid, 0) == 0;
}

/* The head of the kernel's struct sched_attr (sched_getattr, sched_setattr) */
struct sched_attr_head {
    uint32_t size, policy;
    uint64_t flags;
};
#define KEEP_POLICY 0x08 /* SCHED_FLAG_KEEP_POLICY */

/* The app asks for or sets a thread's scheduling policy (trapped: sched_getscheduler,
 * sched_setscheduler, and sched_getattr and sched_setattr, which chrt and newer libcs
 * use): 1 and *ret when answered here. The SCHED_BATCH mig set shows as SCHED_OTHER; a
 * policy the app sets is its own from then on, for every thread. */
int mig_sched_policy(long nr, const long *a, long *ret)
{
    if (!batched || !own_thread(a[0]))
        return 0;
    if (nr == SYS_sched_setscheduler) {
        batched = 0; /* the app sets its threads' policies itself from here */
        return 0;
    }
    long r = mig_sys(nr, a[0], a[1], a[2], a[3]);
    *ret = r;
    if (nr == SYS_sched_setattr) {
        /* (read once the kernel has: the attributes are readable) */
        if (r == 0 && !(((const struct sched_attr_head *)a[1])->flags & KEEP_POLICY))
            batched = 0;
        return 1;
    }
    if (nr == SYS_sched_getattr) {
        struct sched_attr_head *h = (struct sched_attr_head *)a[1];
        if (r == 0 && h->policy == SCHED_BATCH)
            h->policy = SCHED_OTHER;
        return 1;
    }
    if (r >= 0 && (r & ~(long)SCHED_RESET_ON_FORK) == SCHED_BATCH)
        r = (r & SCHED_RESET_ON_FORK) | SCHED_OTHER;
    *ret = r;
    return 1;
}

/* The app asks for or sets a thread's CPU mask (trapped): 1 and *ret when answered here. */
int mig_sched_affinity(long nr, const long *a, long *ret)
{
    if (!spread_len || !own_thread(a[0]))
        return 0; /* another process's thread: the kernel answers */
    if (nr == SYS_sched_setaffinity) {
        spread_len = 0; /* the app places its threads itself from here */
        return 0;
    }
    if (a[1] < spread_len)
        return 0; /* a short buffer: the kernel's answer (EINVAL, or the mask in force) */
    memcpy((void *)a[2], spread_mask, (size_t)spread_len);
    *ret = spread_len;
    return 1;
}

/* The process creates its first thread: the creator holds the token from here. */
void mig_sched_start(void)
{
    if (!mig_serial || mig_serial_on || tok.broken)
        return;
    tok.next = 1;
    tok.serving = 0;
    tok.owner = mig_tid + 1;
    tok.last = mig_tid + 1;
    tok.last_sp = 0;
    mig_token_out = 0;
    took_token();
    __atomic_store_n(&mig_serial_on, 1, __ATOMIC_RELEASE);
    pin_to_one_cpu(); /* its threads inherit the mask */
}

void mig_sched_after_fork(void)
{
    if (trace_fd >= 0) { /* the child writes a file of its own */
        mig_sys(SYS_close, trace_fd);
        trace_fd = -2;
    }
    mig_serial_on = 0; /* the child has one thread; its own first thread starts it again */
    mig_token_out = 0;
    points = 0;
    my_ktid = 0;
    my_timer = -1; /* a child has none of its parent's timers: its own, at its next start */
    timer_made = 0;
    memset(&tok, 0, sizeof tok);
    mig_preempt_after_fork();
    if (spread_len) /* a process of one thread: all its CPUs back */
        mig_sys(SYS_sched_setaffinity, 0, spread_len, spread_mask);
    spread_len = 0;
    if (batched) /* ... and its policy */
        set_policy(SCHED_OTHER);
    batched = 0;
}

/* A thread that let go at its exit is not gone yet: the kernel clears its id word (which
 * pthread_join reads) only after. The next holder waits for that, on both hosts, so a
 * join finds the thread gone exactly where it did on the primary. */
static void after_exit(void)
{
    uint32_t *w = tok.exited;
    if (!w)
        return;
    tok.exited = NULL;
    uint64_t start = mig_monotonic_ns();
    struct timespec slice = {0, 1000000};
    uint32_t v;
    while ((v = __atomic_load_n(w, __ATOMIC_ACQUIRE)) != 0 &&
           mig_monotonic_ns() - start < 5000000000ull)
        mig_futex(w, FUTEX_WAIT, v, &slice);
}

void mig_sched_exit_word(uint32_t *word)
{
    exit_word = word;
}

/* ------------------------------------------------------------------ record */

static void rec_release(void)
{
    mig_preempt_quiet();
    mig_preempt_moot();
    __atomic_store_n(&tok.owner_id, 0, __ATOMIC_RELEASE);
    tok.last = mig_tid + 1;
    tok.last_sp = points;
    __atomic_store_n(&tok.owner, 0, __ATOMIC_RELAXED);
    mig_token_out = 1;
    __atomic_add_fetch(&tok.serving, 1, __ATOMIC_RELEASE);
    if (__atomic_load_n(&tok.waiting, __ATOMIC_ACQUIRE))
        mig_futex(&tok.serving, FUTEX_WAKE_PRIVATE, 0x7fffffff, NULL);
}

/* The holder made no call for stall_ns while this thread waited: go on without the
 * token, for good, and say so in the log and on stderr. */
static void give_up(void)
{
    if (__atomic_exchange_n(&tok.broken, 1, __ATOMIC_ACQ_REL))
        return;
    __atomic_store_n(&mig_serial_on, 0, __ATOMIC_RELEASE);
    uint32_t holder = __atomic_load_n(&tok.owner, __ATOMIC_ACQUIRE);
    struct mig_call c = {.kind = MIG_K_SWITCH,
                         .args = {holder ? (int64_t)holder - 1 : -1, -1, FORCED}};
    mig_append(&c);
    char text[512], *p = text, *end = text + sizeof text - 1;
    p = mig_put_str(p, end, "thread ");
    p = mig_put_uint(p, holder ? holder - 1 : 0);
    p = mig_put_str(p, end, " ran without a system call while thread ");
    p = mig_put_uint(p, mig_tid);
    p = mig_put_str(p, end, " waited to run: threads run unserialized from here on, "
                            "and replicas stop at this point (docs/threads.md); ");
    p = mig_preempt_report(p, end);
    *p = 0;
    mig_warn(text, NULL);
    mig_futex(&tok.serving, FUTEX_WAKE_PRIVATE, 0x7fffffff, NULL);
}

static void rec_wait(void);
static void rep_wait(void);

/* A thread waiting for the token is parked: the stack below its wait is the shim's, and
 * changes as it wakes to look, so a preemption's check does not hash it. */
static void rec_acquire(void)
{
    mig_preempt_park((uintptr_t)__builtin_frame_address(0));
    rec_wait();
    unhurry();
    mig_preempt_park(0);
}

static void rep_acquire(void)
{
    mig_preempt_park((uintptr_t)__builtin_frame_address(0));
    rep_wait();
    unhurry();
    mig_preempt_park(0);
}

static void rec_wait(void)
{
    uint32_t ticket = __atomic_fetch_add(&tok.next, 1, __ATOMIC_ACQ_REL);
    struct timespec slice = {0, MIG_PREEMPT_NS}, asked = {0, 5000000};
    uint32_t seen = __atomic_load_n(&tok.serving, __ATOMIC_ACQUIRE);
    uint32_t passed = __atomic_load_n(&tok.passes, __ATOMIC_RELAXED);
    uint64_t since = mig_monotonic_ns();
    for (;;) {
        uint32_t now = __atomic_load_n(&tok.serving, __ATOMIC_ACQUIRE);
        if (now == ticket)
            break;
        if (__atomic_load_n(&tok.broken, __ATOMIC_ACQUIRE)) {
            mig_token_out = 0;
            return;
        }
        uint64_t t = mig_monotonic_ns();
        uint32_t passes = __atomic_load_n(&tok.passes, __ATOMIC_RELAXED);
        if (now != seen || __atomic_load_n(&mig_agent_waits, __ATOMIC_ACQUIRE)) {
            seen = now;
            passed = passes;
            since = t;
        } else if (t - since > stall_ns) {
            give_up();
            mig_token_out = 0;
            return;
        } else if (passes != passed) { /* the holder is making calls: no need to ask */
            passed = passes;
            if (t - since < stall_ns / 2)
                since = t;
        } else if (t - since >= MIG_PREEMPT_NS && __atomic_load_n(&tok.owner, __ATOMIC_ACQUIRE)) {
            hurry(t);
            mig_preempt_rearm(t);
            mig_preempt_ask(owner_ktid(),
                            __atomic_load_n(&tok.owner_sel, __ATOMIC_ACQUIRE), t);
        }
        uint64_t id = __atomic_load_n(&tok.owner_id, __ATOMIC_ACQUIRE);
        if ((uint32_t)id && mig_preempt_lately(t))
            /* holders spin in this process, and this thread may not run again before the
             * tick: the request goes ahead, to arrive when it would ask */
            mig_preempt_ask_at((uint32_t)id, __atomic_load_n(&tok.owner_sel, __ATOMIC_ACQUIRE),
                               (int)(id >> 32), since + MIG_PREEMPT_NS);
        __atomic_fetch_add(&tok.waiting, 1, __ATOMIC_ACQ_REL);
        /* while the holder is checked for a stop, sleep: the check hashes this stack */
        mig_futex(&tok.serving, FUTEX_WAIT_PRIVATE, now, mig_preempt_busy() ? &asked : &slice);
        __atomic_fetch_sub(&tok.waiting, 1, __ATOMIC_ACQ_REL);
    }
    mig_token_out = 0;
    __atomic_store_n(&tok.owner, mig_tid + 1, __ATOMIC_RELAXED);
    if (mig_sched_others_wait()) { /* they may not run again before the tick */
        uint64_t t = mig_monotonic_ns();
        if (mig_preempt_lately(t))
            mig_preempt_ask_self(my_timer, t + MIG_PREEMPT_NS);
    }
    took_token();
    after_exit();
    trace('T', NULL);
    if (tok.last != mig_tid + 1) {
        struct mig_call c = {.kind = MIG_K_SWITCH,
                             .args = {(int64_t)tok.last - 1, (int64_t)tok.last_sp, PASSED}};
        mig_append(&c);
        tok.last = mig_tid + 1;
    }
}

/* ------------------------------------------------------------------ replay */

static void stop_forced(const struct mig_rec *rec)
{
    mig_sched_stop(rec, "the primary stopped serializing threads here (a thread ran "
                        "without a system call while another waited to run): the log "
                        "cannot be replayed past this point; replicas can follow the app "
                        "again once it is restarted (docs/threads.md)");
}

/* Replay: the token's waiters sleep on the ring's data word, which new records bump, and
 * look again only when something they act on may have come: the token handed over, the
 * holder's recorded stop at the tail (by a move of the tail, mig_sched_tail_moved, or a new
 * record), the process gone live. They looked every MIG_PREEMPT_NS instead, each of
 * Redis's three background threads 10,000 times a second: a third of its replica's CPU.
 * A waiter counts itself before it looks at the token a last time; a holder hands it over,
 * then bumps the word if it sees a sleeper (both sequentially consistent). */
static void rep_nudge(void)
{
    if (__atomic_load_n(&tok.sleepers, __ATOMIC_SEQ_CST))
        mig_replay_nudge();
}

/* Replay: A, when rec (the log's next record) is this thread's stop at A at this switch
 * point (a SWITCH PREEMPTED); else 0. */
static uintptr_t stop_in(const struct mig_rec *rec)
{
    if (rec && rec->kind == MIG_K_SWITCH && rec->args[2] == PREEMPTED &&
        rec->tid == mig_tid && (uint64_t)rec->args[1] == points)
        return (uintptr_t)rec->args[3];
    return 0;
}

void mig_sched_tail_moved(void)
{
    if (mig_mode != MIG_REPLAY)
        return;
    const struct mig_rec *rec = mig_tail_now();
    uintptr_t at = stop_in(rec);
    if (at && mig_serial_on && !mig_token_out)
        mig_preempt_arm_here(at); /* this holder's own stop is next */
    if (!__atomic_load_n(&tok.sleepers, __ATOMIC_SEQ_CST))
        return;
    if (rec && rec->kind == MIG_K_SWITCH && (rec->args[2] == PREEMPTED || rec->args[2] == FORCED))
        mig_replay_nudge();
}

static void rep_wait(void)
{
    struct timespec slice = {0, MIG_PREEMPT_NS}, asked = {0, 5000000}, rest = {0, 20000000};
    uint64_t stop_seq = UINT64_MAX, stop_since = 0; /* the recorded stop waited for */
    for (;;) {
        uint32_t gen = mig_replay_word();
        uint32_t owner = __atomic_load_n(&tok.owner, __ATOMIC_SEQ_CST);
        if (owner == mig_tid + 1)
            break;
        if (mig_mode != MIG_REPLAY) { /* live now: wait like the primary's threads */
            rec_acquire();
            return;
        }
        /* the holder may never come to a switch point again: it spins, as it did on the
         * primary until the primary gave up serializing (a forced SWITCH) */
        const struct mig_rec *rec = mig_tail_now();
        const struct timespec *wait = &rest; /* nothing to act on until woken */
        if (rec && rec->kind == MIG_K_SWITCH && rec->args[2] == FORCED)
            stop_forced(rec);
        if (rec && rec->kind == MIG_K_SWITCH && rec->args[2] == PREEMPTED &&
            rec->tid + 1 == owner) { /* the holder stopped here on the primary: ask it */
            uint64_t t = mig_monotonic_ns();
            if (rec->seq != stop_seq) {
                stop_seq = rec->seq;
                stop_since = t;
            } else if (t - stop_since > 30000000000ull) {
                mig_preempt_give_up(rec);
            }
            hurry(t);
            mig_preempt_rearm(t);
            mig_preempt_ask(owner_ktid(),
                            __atomic_load_n(&tok.owner_sel, __ATOMIC_ACQUIRE), t);
            wait = &slice;
        } else if (!rec && mig_replay_ahead()) {
            wait = &slice; /* a filler, or a record being taken: look again soon */
        }
        if (mig_preempt_busy())
            wait = &asked;
        __atomic_fetch_add(&tok.sleepers, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&tok.owner, __ATOMIC_SEQ_CST) == owner)
            mig_replay_doze(gen, wait);
        __atomic_fetch_sub(&tok.sleepers, 1, __ATOMIC_SEQ_CST);
    }
    mig_token_out = 0;
    took_token();
    after_exit();
    trace('T', NULL);
    mig_take_switch();
}

/* The holder at a switch point: is the next record a SWITCH naming it and this point?
 * Then hand the token to that record's thread (1). */
static int rep_hand_over(void)
{
    const struct mig_rec *rec = mig_peek_tail();
    if (!rec || rec->kind != MIG_K_SWITCH || rec->args[2] == END)
        return 0; /* gone live, this thread's own record comes next, or the process ends */
    if (rec->args[2] == FORCED)
        stop_forced(rec);
    if (rec->args[0] != (int64_t)mig_tid)
        mig_sched_diverged(rec, "threads out of step", rec->args[0], (int64_t)mig_tid);
    if (rec->args[2] == PREEMPTED) { /* the stop comes after this point, in the app's code */
        if ((uint64_t)rec->args[1] < points)
            mig_sched_diverged(rec, "threads out of step", rec->args[1], (int64_t)points);
        return 0;
    }
    if ((uint64_t)rec->args[1] > points)
        return 0; /* it let go at a later switch point */
    if ((uint64_t)rec->args[1] < points)
        mig_sched_diverged(rec, "threads out of step", rec->args[1], (int64_t)points);
    mig_token_out = 1;
    __atomic_store_n(&tok.owner, rec->tid + 1, __ATOMIC_SEQ_CST);
    rep_nudge();
    return 1;
}

void mig_sched_poke(void)
{
    if (mig_mode == MIG_REPLAY)
        rep_nudge();
    else
        mig_futex(&tok.serving, FUTEX_WAKE_PRIVATE, 0x7fffffff, NULL);
}

/* Replay: the address of this thread's next stop, when the log's next record is one
 * (a SWITCH PREEMPTED of this thread at this switch point); else 0. */
uintptr_t mig_sched_recorded_stop(void)
{
    return stop_in(mig_tail_now());
}

/* The holder, stopped in its spin's recurring state (mig_preempt.c), in the preemption's
 * signal handler (mig_trap.c, on_preempt): let the token go as at a switch point, and
 * take it back. Record: the stop is a SWITCH PREEMPTED; replay: the log has it, then the
 * SWITCH of the thread it passed to. */
void mig_sched_preempted(uintptr_t at, int by_timer)
{
    mig_busy++;
    trace('S', by_timer == 2 ? "holder" : by_timer ? "timer" : "waiter");
    if (mig_mode == MIG_RECORD) {
        struct mig_call c = {.kind = MIG_K_SWITCH,
                             .args = {mig_tid, (int64_t)points, PREEMPTED, (int64_t)at}};
        mig_append(&c);
        if (__atomic_fetch_add(&tok.spinners, 1, __ATOMIC_ACQ_REL) == 0)
            __atomic_store_n(&tok.spin_since, mig_monotonic_ns(), __ATOMIC_RELEASE);
        for (;;) { /* back to the spin only when no thread but spinners waits */
            rec_release();
            rec_acquire();
            uint32_t others = __atomic_load_n(&tok.next, __ATOMIC_ACQUIRE) -
                              __atomic_load_n(&tok.serving, __ATOMIC_ACQUIRE) - 1;
            if (__atomic_load_n(&tok.broken, __ATOMIC_ACQUIRE) ||
                others < __atomic_load_n(&tok.spinners, __ATOMIC_ACQUIRE))
                break;
        }
        if (__atomic_sub_fetch(&tok.spinners, 1, __ATOMIC_ACQ_REL))
            __atomic_store_n(&tok.spin_since, mig_monotonic_ns(), __ATOMIC_RELEASE);
    } else {
        const struct mig_rec *rec = mig_peek_tail();
        if (!rec) { /* gone live meanwhile: the holder goes on */
            mig_busy--;
            return;
        }
        if (rec->kind != MIG_K_SWITCH || rec->args[2] != PREEMPTED ||
            rec->tid != mig_tid || (uintptr_t)rec->args[3] != at)
            mig_sched_diverged(rec, "stopped where the primary did not", (int64_t)at, 0);
        mig_take_switch();
        while (rep_hand_over())
            rep_acquire();
    }
    mig_busy--;
}

/* ------------------------------------------------------------------ both */

/* Record, at a switch point: do other threads wait for the token, and should they run
 * first? A thread that waits gets its turn when the holder blocks, or at a switch point
 * once the holder has had the token slice_ns: a thread woken by the holder (a condition
 * signalled, a futex woken) asks for the token at once, and handing it over at the
 * holder's next call, before the holder blocks as it was about to, made two switches of
 * one (Node.js: 22 voluntary context switches a request, about 10 with a slice; its
 * thread pool signals a condition, then the event loop goes on to epoll_wait). The slice
 * is short (50 us): CPython lets its GIL go around every system call, and a thread that
 * asked for the token there runs at once; its http.server made about a sixth fewer
 * requests with 100 us and a third fewer with 300 us, Node.js 4 to 10% more with 100 us
 * (docs/benchmarks.md, "A warm broker, the token's slice, again"). A spinner
 * this process preempted (it waits for the others to change memory) gets its turn when
 * the holder blocks or spins itself, or at a switch point once it has waited
 * SPIN_TURN_NS: letting it spin on at every call of the thread it waits for would cost a
 * preemption per call. */
#define SPIN_TURN_NS 300000ull
static int others_first(void)
{
    __atomic_store_n(&tok.passes, tok.passes + 1, __ATOMIC_RELAXED);
    uint32_t others = __atomic_load_n(&tok.next, __ATOMIC_ACQUIRE) -
                      __atomic_load_n(&tok.serving, __ATOMIC_ACQUIRE) - 1;
    if (!others)
        return 0;
    uint32_t spinners = __atomic_load_n(&tok.spinners, __ATOMIC_ACQUIRE);
    uint64_t now = mig_monotonic_ns();
    if (others > spinners)
        return now - tok.since > slice_ns;
    return now - __atomic_load_n(&tok.spin_since, __ATOMIC_ACQUIRE) > SPIN_TURN_NS;
}

/* A switch point. Record: let the threads waiting for the token run first, if any (the
 * call itself runs with the token: a call that may block lets it go in mig_sched_block).
 * Replay: hand the token on as often as the log says at this point, each time waiting
 * for it to come back. */
void mig_sched_point_at(const char *what)
{
    points++;
    if (mig_token_out || !__atomic_load_n(&mig_serial_on, __ATOMIC_ACQUIRE))
        return;
    trace('P', what);
    mig_busy++;
    if (mig_mode == MIG_REPLAY) {
        while (rep_hand_over())
            rep_acquire();
    } else if (others_first()) {
        rec_release();
        rec_acquire();
    } else if (__atomic_load_n(&mig_preempt_armed, __ATOMIC_RELAXED)) {
        mig_preempt_called(); /* it keeps the token: a stop it was armed for is moot */
    }
    mig_busy--;
}

/* Record: the call about to be made may block (a read of a socket, a wait, a sleep): it
 * runs without the token, which this thread takes back before its record. */
void mig_sched_block(void)
{
    if (mig_token_out || mig_mode != MIG_RECORD ||
        !__atomic_load_n(&mig_serial_on, __ATOMIC_ACQUIRE))
        return;
    rec_release();
}

/* Record: a call that may block and makes new fds (accept, recvmsg with room for
 * SCM_RIGHTS). The kernel numbers a new fd with the lowest free one, so the fd must be
 * made holding the token, in the log's order with the other threads' opens and closes;
 * only the wait for it may go without. Returns 1 when fd was readable (or is nonblocking:
 * the call will not wait) and the token is held again. */
int mig_sched_wait_readable(int fd, int nonblocking)
{
    if (mig_token_out || mig_mode != MIG_RECORD ||
        !__atomic_load_n(&mig_serial_on, __ATOMIC_ACQUIRE))
        return 1;
    if (nonblocking || (syscall(SYS_fcntl, fd, F_GETFL) & O_NONBLOCK))
        return 1;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    long r;
    do {
        rec_release();
        r = syscall(SYS_poll, &p, 1, -1);
        mig_sched_resume();
    } while (r == -EINTR);
    return 1;
}

void mig_sched_resume(void)
{
    if (!mig_token_out)
        return;
    if (!__atomic_load_n(&mig_serial_on, __ATOMIC_ACQUIRE)) {
        mig_token_out = 0;
        return;
    }
    mig_busy++;
    if (mig_mode == MIG_REPLAY)
        rep_acquire();
    else
        rec_acquire();
    mig_busy--;
}

/* The thread ends: the token goes for good (to the next thread in the log, in replay). */
void mig_sched_exit(void)
{
    if (!__atomic_load_n(&mig_serial_on, __ATOMIC_ACQUIRE) || mig_token_out)
        return;
    points++;
    tok.exited = exit_word;
    mig_preempt_delete_timer(my_timer); /* (a request armed on it is moot) */
    my_timer = -1;
    if (mig_mode == MIG_REPLAY) {
        mig_busy++;
        int handed = rep_hand_over();
        mig_busy--;
        if (handed)
            return;
    }
    if (mig_mode == MIG_RECORD) /* (or the log ended here: let go as the live do) */
        rec_release();
}

/* The process ends (exit_group): no thread switches after this. A replica's threads
 * cannot know that from the calls that remain (a program's last writes to its files are
 * not recorded), so the primary says it: SWITCH {this thread, -, END}. */
void mig_sched_end(void)
{
    if (!__atomic_load_n(&mig_serial_on, __ATOMIC_ACQUIRE) || mig_busy)
        return;
    mig_sched_resume();
    struct mig_call c = {.kind = MIG_K_SWITCH, .args = {mig_tid, (int64_t)points, END}};
    if (mig_mode == MIG_RECORD) {
        mig_busy++;
        mig_append(&c);
        mig_busy--;
        return;
    }
    const struct mig_rec *rec = mig_peek_tail();
    if (rec && rec->kind == MIG_K_SWITCH && rec->args[2] == END && rec->tid == mig_tid)
        mig_take_switch();
}

void mig_sched_child(void)
{
    points = 0;
    if (!__atomic_load_n(&mig_serial_on, __ATOMIC_ACQUIRE))
        return;
    mig_token_out = 1;
    mig_sched_resume();
}

void mig_sched_went_live(void)
{
    /* the holder keeps the token as ticket 0; the others queue behind it */
    tok.next = 1;
    tok.serving = 0;
    tok.last = __atomic_load_n(&tok.owner, __ATOMIC_ACQUIRE);
}
