/* mig_preempt.c -- serialized threads: taking the token from a thread that spins.
 *
 * A thread that holds the run token and waits for another thread by reading memory in a
 * loop (Redis's main thread waiting for its I/O threads, a flag read with atomics) makes
 * no call, so it never comes to a switch point, and the thread it waits for cannot run.
 * rr preempts such a thread and replays the preemption at the same count of retired
 * branches; this machine has no performance counters to count them. What it has are the
 * debug registers (perf's breakpoint events), and they are enough for the one kind of
 * spin that matters: a loop that leaves the thread's whole state as it found it.
 *
 * The rule, the same on both hosts. A hardware breakpoint on an address A of the loop
 * stops the thread each time it comes to A. The thread is preempted at the first stop
 * whose registers equal those of the stop before it and of the stop before that, and
 * whose memory (every private writable page of the process: the app's, not the shim's)
 * hashes the same as at the stop before. Such a state recurs: a thread alone, going from
 * a state back to the same state, loops there for ever. So wherever each host began to
 * look, both stop in that same state, and the other threads find memory exactly as on
 * the primary. A loop that writes as it spins (a counter) never passes the check and is
 * not preempted: after serial_stall_ms the primary stops serializing, as before.
 *
 * Record: a thread that waited PREEMPT_NS for a holder that passed no switch point asks
 * it (MIG_PREEMPT_SIG from tgkill, which the shim's handler owns, or from a timer set
 * ahead: mig_preempt_ask_at) for the address it is at, arms the breakpoint there, and at
 * the checked stop the holder records SWITCH {itself, its switch point, PREEMPTED, A} and
 * lets the token go. Replay: the holder arms A once it has taken its last record before
 * that one (mig_preempt_arm_here), or a thread waiting for the token that finds that
 * record at the tail asks it to; the holder stops at the checked state and hands the
 * token on as the log says.
 *
 * Rules: the handlers run in a signal handler (mig_trap.c's on_preempt): system calls
 * through mig_sys, nothing allocated. */
#define MIG_CORE
#include "mig.h"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <linux/hw_breakpoint.h>
#include <linux/perf_event.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>

#include "mig_poison.h"

#define MAX_HITS 8 /* stops at A before a primary gives up this address (a counting loop) */
/* An armed holder that has not stopped in the checked state this long is asked again. */
#define REARM_RECORD_NS 20000000ull
#define REARM_REPLAY_NS 200000000ull

enum { IDLE = 0, ASKING = 1, ASKED = 2, ARMED = 3 };

/* One preemption at a time per process (there is one token). */
static struct {
    uint32_t state;
    uint32_t ktid;       /* the holder asked */
    uint64_t asked_ns;   /* when asked, then when armed (mig_preempt_rearm) */
    uint64_t retry_ns;   /* record: do not ask again before */
    int fails;           /* record: addresses given up in a row (the retry backs off) */
    int fd;              /* the breakpoint, on the holder */
    uintptr_t at;        /* A */
    int hits;
    uint32_t stops, outside, regs_differ, memory_differs; /* since the last preemption */
    uint32_t asks, not_in_app, given_up;                  /* record, the same */
    int last_reg;          /* the register (gregs index; NGREG: an xmm) that last differed */
    int by_timer;          /* what asked: 0 a waiter's signal, 1 the timer, 2 the holder */
    uintptr_t last_at;     /* the address last armed */
    int have_prev, have_hash;
    uint64_t hash;
    greg_t prev[NGREG];
    unsigned char prev_xmm[16 * 16 + 4];
} pre = {.fd = -1};

uint32_t mig_preempt_armed;

/* Record: a request sent ahead, as a timer whose signal goes to the holder itself
 * (mig_preempt_ask_at). A serialized process runs on one CPU, and a thread that waits for
 * the token there does not run while the holder spins until the scheduler's tick (4 ms at
 * HZ 250; neither SCHED_BATCH's nor SCHED_OTHER's wake-ups preempt a thread inside its
 * slice), so a request it sent when it woke came at the tick: Redis with I/O threads
 * handed the token over by ticks, five a turn of its event loop (20 ms). The timer's
 * signal interrupts the holder where it runs.
 *
 * Each thread has its timer, made when it first takes the token and deleted at its exit
 * (mig_sched.c), on the primary and on a replica alike: the kernel numbers a process's
 * timers in the order they are made, and the app's own timer_create, which both hosts
 * perform, must get the same number on each; a timer made per request on the primary
 * only would have moved the app's. The id of the timer armed, or -1; its signal carries
 * ASK_TIMER. */
#define ASK_TIMER 0x6d696770
static int ask_timer = -1;

/* Where each waiting thread's stack stops being the app's (mig_preempt_park). */
#define PARKED 64
static uintptr_t parked[PARKED];
static int fd_floor = -1;             /* the breakpoint's fd: far above the app's */
/* The shim's writable segments [0, 4) and memory it maps or runs on [4, 8): not hashed. */
static uintptr_t own_lo[8], own_hi[8];
static int own_segments, own_extra;
static char maps[1 << 19];
static unsigned char resident[1 << 16];

/* ------------------------------------------------------------------ set-up */

static int set_up(void)
{
    if (fd_floor >= 0)
        return fd_floor > 0;
    struct rlimit rl;
    fd_floor = (mig_sys(SYS_getrlimit, RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur >= 640)
                   ? (int)rl.rlim_cur - 8 : 0;
    Dl_info info;
    if (fd_floor && dladdr((void *)set_up, &info) && info.dli_fbase) {
        const ElfW(Ehdr) *eh = info.dli_fbase;
        const ElfW(Phdr) *ph = (const ElfW(Phdr) *)((const char *)eh + eh->e_phoff);
        for (int i = 0; i < eh->e_phnum && own_segments < 4; i++) {
            if (ph[i].p_type != PT_LOAD || !(ph[i].p_flags & PF_W))
                continue;
            uintptr_t lo = (uintptr_t)info.dli_fbase + ph[i].p_vaddr;
            own_lo[own_segments] = lo & ~(uintptr_t)4095;
            own_hi[own_segments++] = (lo + ph[i].p_memsz + 4095) & ~(uintptr_t)4095;
        }
    }
    if (!own_segments)
        fd_floor = 0;
    return fd_floor > 0;
}

/* The pending request's timer, disarmed. A signal it had sent already is taken on the
 * way out of the call, as a late one (dropped). */
static void drop_timer(void)
{
    static const struct itimerspec off;
    int id = __atomic_exchange_n(&ask_timer, -1, __ATOMIC_ACQ_REL);
    if (id >= 0)
        mig_sys(SYS_timer_settime, id, 0, &off, NULL);
}

/* A timer whose signal goes to thread ktid, for requests to it: its id, or -1. */
int mig_preempt_new_timer(uint32_t ktid)
{
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = MIG_PREEMPT_SIG;
    sev.sigev_value.sival_int = ASK_TIMER;
    sev._sigev_un._tid = (pid_t)ktid;
    int id = -1;
    return mig_sys(SYS_timer_create, CLOCK_MONOTONIC, &sev, &id) == 0 ? id : -1;
}

/* This thread's timer, at its exit: no request armed on it remains. */
void mig_preempt_delete_timer(int id)
{
    if (id < 0)
        return;
    int armed = id; /* (it is no longer the one armed) */
    __atomic_compare_exchange_n(&ask_timer, &armed, -1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    mig_sys(SYS_timer_delete, id);
}

static void disarm(void)
{
    drop_timer();
    if (pre.fd >= 0)
        mig_sys(SYS_close, pre.fd);
    pre.fd = -1;
    pre.hits = pre.have_prev = pre.have_hash = 0;
    __atomic_store_n(&mig_preempt_armed, 0, __ATOMIC_RELEASE);
}

static int arm(uintptr_t at)
{
    disarm(); /* (replay arms again when a stop is late) */
    struct perf_event_attr a;
    memset(&a, 0, sizeof a);
    a.type = PERF_TYPE_BREAKPOINT;
    a.size = sizeof a;
    a.bp_type = HW_BREAKPOINT_X;
    a.bp_addr = at;
    a.bp_len = sizeof(long);
    a.sample_period = 1;
    a.wakeup_events = 1;
    a.exclude_kernel = 1;
    a.exclude_hv = 1;
    long fd = mig_sys(SYS_perf_event_open, &a, 0, -1, -1, PERF_FLAG_FD_CLOEXEC);
    if (fd < 0)
        return 0;
    long high = mig_sys(SYS_fcntl, fd, F_DUPFD_CLOEXEC, fd_floor);
    mig_sys(SYS_close, fd);
    if (high < 0)
        return 0;
    struct f_owner_ex owner = {F_OWNER_TID, (pid_t)mig_sys(SYS_gettid)};
    if (mig_sys(SYS_fcntl, high, F_SETSIG, MIG_PREEMPT_SIG) != 0 ||
        mig_sys(SYS_fcntl, high, F_SETOWN_EX, &owner) != 0 ||
        mig_sys(SYS_fcntl, high, F_SETFL, O_ASYNC) != 0) {
        mig_sys(SYS_close, high);
        return 0;
    }
    pre.fd = (int)high;
    pre.at = pre.last_at = at;
    pre.hits = pre.have_prev = pre.have_hash = 0;
    return 1;
}

/* ------------------------------------------------------------------ the state */

static uint64_t mix(uint64_t h, uint64_t w)
{
    h ^= w;
    h *= 0x9e3779b97f4a7c15ull;
    return h ^ (h >> 29);
}

static uint64_t hash_range(uint64_t h, uintptr_t lo, uintptr_t hi)
{
    const uint64_t *p = (const uint64_t *)lo, *end = (const uint64_t *)hi;
    uint64_t a = h, b = h + 1, c = h + 2, d = h + 3;
    for (; p + 4 <= end; p += 4) {
        a = mix(a, p[0]);
        b = mix(b, p[1]);
        c = mix(c, p[2]);
        d = mix(d, p[3]);
    }
    for (; p < end; p++)
        a = mix(a, *p);
    return mix(mix(mix(a, b), c), d);
}

/* The resident pages of [lo, hi), except the shim's own. */
static uint64_t hash_mapping(uint64_t h, uintptr_t lo, uintptr_t hi)
{
    for (int i = 0; i < 8; i++)
        if ((i < own_segments || i >= 4) && lo < own_hi[i] && own_lo[i] < hi)
            return h; /* the shim's data: the app does not see it */
    while (lo < hi) {
        uintptr_t chunk = hi - lo;
        if (chunk > sizeof resident * 4096ul)
            chunk = sizeof resident * 4096ul;
        uintptr_t page_lo = lo & ~(uintptr_t)4095;
        if (mig_sys(SYS_mincore, page_lo, (lo + chunk) - page_lo, resident) != 0)
            return mix(h, lo); /* gone meanwhile: differs from any state that had it */
        for (uintptr_t p = page_lo; p < lo + chunk; p += 4096) {
            if (!(resident[(p - page_lo) / 4096] & 1))
                continue;
            uintptr_t from = p < lo ? lo : p;
            h = mix(hash_range(h, from, p + 4096), p);
        }
        lo += chunk;
    }
    return h;
}

static uintptr_t hex(const char **s)
{
    uintptr_t v = 0;
    for (;; (*s)++) {
        char c = **s;
        if (c >= '0' && c <= '9')
            v = v * 16 + (uintptr_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v = v * 16 + (uintptr_t)(c - 'a' + 10);
        else
            return v;
    }
}

/* [lo, hi) without the stack of a thread parked in it below its wait: that part is the
 * shim's and changes each time the thread looks for the token. Two parked in one mapping:
 * all of it (a check then fails more often, never wrongly). */
static uintptr_t parked_floor(uintptr_t lo, uintptr_t hi)
{
    uintptr_t floor = 0;
    for (int i = 0; i < PARKED; i++) {
        uintptr_t at = __atomic_load_n(&parked[i], __ATOMIC_ACQUIRE);
        if (at <= lo || at >= hi)
            continue;
        if (floor)
            return lo;
        floor = at;
    }
    return floor ? floor & ~(uintptr_t)7 : lo;
}

void mig_preempt_park(uintptr_t frame)
{
    __atomic_store_n(&parked[mig_tid % PARKED], frame, __ATOMIC_RELEASE);
}

/* Every private writable page of the process; the stopped thread's stack only above its
 * red zone (below it is this handler's frame), a parked thread's only above its wait.
 * 0: the map could not be read. */
static uint64_t hash_memory(uintptr_t sp)
{
    long fd = mig_sys(SYS_open, "/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    size_t n = 0;
    long r;
    while (n < sizeof maps - 1 && (r = mig_sys(SYS_read, fd, maps + n, sizeof maps - 1 - n)) > 0)
        n += (size_t)r;
    mig_sys(SYS_close, fd);
    if (n >= sizeof maps - 1)
        return 0; /* more mappings than fit: no proof */
    maps[n] = 0;
    uint64_t h = 0x6d6967;
    for (const char *s = maps; *s;) {
        uintptr_t lo = hex(&s);
        s++;
        uintptr_t hi = hex(&s);
        s++;
        int keep = s[0] == 'r' && s[1] == 'w' && s[3] == 'p';
        while (*s && *s != '\n')
            s++;
        if (*s)
            s++;
        if (!keep)
            continue;
        if (sp - 128 >= lo && sp < hi)
            lo = (sp - 128) & ~(uintptr_t)7;
        else
            lo = parked_floor(lo, hi);
        h = hash_mapping(h, lo, hi);
    }
    return h ? h : 1;
}

/* The handler calls nothing in libc once the breakpoint is armed: A may be there (the app
 * was interrupted in __errno_location, memcmp...), and the handler's own call would stop
 * the thread again, that stop's signal held until the handler returned and arriving with
 * the registers it had just seen: three such stops made a "recurring" state of a place
 * the thread came to once (`python3 -m http.server` was preempted so in __errno_location;
 * its replica, which did not stop there, diverged; a counting loop reading errno was
 * stopped mid-count: tests/apps/errnospin.c). Hence this loop, not memcmp; errno is
 * saved through a pointer taken outside the handler (mig_trap.c). */
static int same_bytes(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    unsigned char d = 0;
    for (size_t i = 0; i < n; i++)
        d |= (unsigned char)(x[i] ^ y[i]);
    return d == 0;
}

/* The registers that make the thread's state (not the kernel's notes on the stop). */
static int same_registers(const ucontext_t *uc)
{
    const greg_t *g = uc->uc_mcontext.gregs;
    greg_t now[NGREG];
    memcpy(now, g, sizeof now);
    now[REG_EFL] &= 0xcd5; /* CF PF AF ZF SF DF OF */
    now[REG_CSGSFS] = now[REG_ERR] = now[REG_TRAPNO] = now[REG_OLDMASK] = now[REG_CR2] = 0;
    unsigned char xmm[sizeof pre.prev_xmm];
    memset(xmm, 0, sizeof xmm);
    if (uc->uc_mcontext.fpregs) {
        memcpy(xmm, uc->uc_mcontext.fpregs->_xmm, 16 * 16);
        memcpy(xmm + 16 * 16, &uc->uc_mcontext.fpregs->mxcsr, 4);
    }
    int same = pre.have_prev && same_bytes(now, pre.prev, sizeof now) &&
               same_bytes(xmm, pre.prev_xmm, sizeof xmm);
    if (pre.have_prev && !same) {
        pre.last_reg = NGREG;
        for (int i = 0; i < NGREG; i++)
            if (now[i] != pre.prev[i])
                pre.last_reg = i;
    }
    memcpy(pre.prev, now, sizeof now);
    memcpy(pre.prev_xmm, xmm, sizeof xmm);
    pre.have_prev = 1;
    return same;
}

/* A stop at A: 1 when this is the state that recurs. */
static int recurring(const ucontext_t *uc)
{
    pre.hits++;
    if (!same_registers(uc)) {
        pre.regs_differ++;
        pre.have_hash = 0;
        return 0;
    }
    uint64_t h = hash_memory((uintptr_t)uc->uc_mcontext.gregs[REG_RSP]);
    int same = h && pre.have_hash && h == pre.hash;
    if (pre.have_hash && !same)
        pre.memory_differs++;
    pre.hash = h;
    pre.have_hash = h != 0;
    return same;
}

/* ------------------------------------------------------------------ both */

/* The request on timer id (the target's), to come at when_ns (CLOCK_MONOTONIC), the
 * state already ASKING: 1 when set. */
static int set_timer(int id, uint64_t when_ns)
{
    if (id < 0)
        return 0;
    drop_timer();
    __atomic_store_n(&ask_timer, id, __ATOMIC_RELEASE); /* before it can fire */
    struct itimerspec at = {{0, 0}, {(time_t)(when_ns / 1000000000ull),
                                     (long)(when_ns % 1000000000ull)}};
    if (mig_sys(SYS_timer_settime, id, TIMER_ABSTIME, &at, NULL) != 0) {
        drop_timer();
        return 0;
    }
    return 1;
}

/* A request begun (ASKING, to the holder ktid) goes: a signal from tgkill now (timer < 0),
 * or the holder's timer at when_ns. Not to this thread, nor to a holder in the shim's code
 * (its selector at sel): its request would be stale there, or find it on its way to a
 * call that may block. */
static void send_request(uint32_t ktid, const char *sel, int timer, uint64_t when_ns)
{
    uint32_t state = ASKING;
    if (ktid == (uint32_t)mig_sys(SYS_gettid) ||
        __atomic_load_n(sel, __ATOMIC_ACQUIRE) != MIG_SEL_BLOCK ||
        (timer < 0 ? mig_sys(SYS_tgkill, mig_sys(SYS_getpid), ktid, MIG_PREEMPT_SIG) != 0
                   : !set_timer(timer, when_ns))) {
        /* stale, in the shim's code, or gone */
        __atomic_compare_exchange_n(&pre.state, &state, IDLE, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE);
        return;
    }
    __atomic_fetch_add(&pre.asks, 1, __ATOMIC_RELAXED);
    state = ASKING; /* (the holder may have taken the request already) */
    __atomic_compare_exchange_n(&pre.state, &state, ASKED, 0, __ATOMIC_ACQ_REL,
                                __ATOMIC_ACQUIRE);
}

/* A thread waiting for the token asks the holder (kernel id ktid, its selector at sel) to
 * stop where it is, if it runs the app's code: a signal that found it in a system call
 * could end the call with EINTR. The holder, before a call that may block, waits out a
 * request in flight (mig_preempt_quiet). */
void mig_preempt_ask(uint32_t ktid, const char *sel, uint64_t now_ns)
{
    if (!ktid || !sel || now_ns < __atomic_load_n(&pre.retry_ns, __ATOMIC_ACQUIRE))
        return;
    uint32_t state = IDLE;
    if (!__atomic_compare_exchange_n(&pre.state, &state, ASKING, 0, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
        return;
    __atomic_store_n(&pre.ktid, ktid, __ATOMIC_RELEASE);
    pre.asked_ns = now_ns;
    send_request(ktid, sel, -1, now_ns);
}

/* Record: a request sent ahead to ktid begins (IDLE to ASKING), due at *when_ns, which
 * comes no earlier than a retry may: 0 when another is under way. */
static int begin_ask(uint32_t ktid, uint64_t *when_ns)
{
    uint64_t retry = __atomic_load_n(&pre.retry_ns, __ATOMIC_ACQUIRE);
    uint32_t state = IDLE;
    if (mig_mode != MIG_RECORD ||
        !__atomic_compare_exchange_n(&pre.state, &state, ASKING, 0, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
        return 0;
    if (*when_ns < retry)
        *when_ns = retry;
    __atomic_store_n(&pre.ktid, ktid, __ATOMIC_RELEASE);
    pre.asked_ns = *when_ns;
    return 1;
}

/* Record: the request of mig_preempt_ask, sent ahead by a thread that begins to wait for
 * the token while the holder (kernel id ktid, its selector at sel, its timer) runs the
 * app's code, to arrive at when_ns, when the waiter would ask. The holder takes it in its
 * handler as a request; one that lets the token go before disarms it (mig_preempt_quiet
 * and mig_preempt_moot, on the way to a call that may block: the signal never finds it
 * in one). */
void mig_preempt_ask_at(uint32_t ktid, const char *sel, int timer, uint64_t when_ns)
{
    if (!ktid || !sel || timer < 0 || !begin_ask(ktid, &when_ns))
        return;
    send_request(ktid, sel, timer, when_ns);
}

/* Record: the holder asks itself, by the timer, to arrive at when_ns: a thread that took
 * the token while others wait for it, in a process whose holders were asked to stop
 * lately (mig_preempt_lately). The waiters would ask only when they next run, at the
 * tick. */
void mig_preempt_ask_self(int timer, uint64_t when_ns)
{
    if (timer < 0 || !begin_ask((uint32_t)mig_sys(SYS_gettid), &when_ns))
        return;
    /* (a CAS: a timer due already may have fired in this thread's handler, which took
     * the request; a store of ASKED after it left a request no signal would ever answer,
     * and no thread asked again: the primary gave up serializing Redis with I/O threads) */
    uint32_t state = ASKING;
    __atomic_compare_exchange_n(&pre.state, &state, set_timer(timer, when_ns) ? ASKED : IDLE,
                                0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

/* Replay: the holder has taken its last record before a stop the log has for it at A (the
 * tail is now that SWITCH PREEMPTED): it arms A itself, at once. A waiting thread that
 * would ask it may not run before the tick while the holder spins, as on the primary. */
void mig_preempt_arm_here(uintptr_t at)
{
    uint32_t state = IDLE;
    if (mig_mode != MIG_REPLAY || !at || !set_up() ||
        !__atomic_compare_exchange_n(&pre.state, &state, ASKING, 0, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
        return;
    __atomic_store_n(&pre.ktid, (uint32_t)mig_sys(SYS_gettid), __ATOMIC_RELEASE);
    uint64_t now = mig_monotonic_ns();
    if (!mig_serial_on || mig_token_out || !mig_sched_holding() || !arm(at)) {
        __atomic_store_n(&pre.state, IDLE, __ATOMIC_RELEASE);
        return;
    }
    pre.asked_ns = now;
    pre.by_timer = 2;
    __atomic_store_n(&pre.state, ARMED, __ATOMIC_RELEASE);
}

/* Was a holder of this process asked to stop in the last LATELY_NS (a request that reached
 * it)? Its threads spin: the requests go ahead (mig_sched.c). Else nothing is sent ahead:
 * a request so costs two system calls, and most hand-overs are at switch points. */
static uint64_t last_asked_ns;
#define LATELY_NS 100000000ull

int mig_preempt_lately(uint64_t now_ns)
{
    uint64_t last = __atomic_load_n(&last_asked_ns, __ATOMIC_ACQUIRE);
    return last && now_ns - last < LATELY_NS;
}

/* The holder is about to let the token go for a call that may block: a request sent to
 * it is taken now, by a system call that cannot be interrupted, not by the call. */
void mig_preempt_quiet(void)
{
    uint32_t state = __atomic_load_n(&pre.state, __ATOMIC_ACQUIRE);
    if ((state != ASKING && state != ASKED) ||
        __atomic_load_n(&pre.ktid, __ATOMIC_ACQUIRE) != (uint32_t)mig_sys(SYS_gettid))
        return;
    while ((state = __atomic_load_n(&pre.state, __ATOMIC_ACQUIRE)) == ASKING)
        __builtin_ia32_pause();
    drop_timer(); /* a request sent ahead: no later signal */
    if (state == ASKED)
        mig_sys(SYS_getpid); /* the pending signal is handled on its way out */
}

/* The holder let the token go at a switch point: a stop it was armed for is moot. */
void mig_preempt_moot(void)
{
    if (pre.state == IDLE || pre.ktid != (uint32_t)mig_sys(SYS_gettid))
        return;
    disarm();
    __atomic_store_n(&pre.state, IDLE, __ATOMIC_RELEASE);
}

/* Record: the armed holder made a call -- it passed a switch point and kept the token (only
 * preempted spinners wait), or made a record where no switch point is (a system call on a
 * recorded fd, trapped). The stops compared for a recurring state must lie between two of
 * its calls: a replica arms when its holder has made every call the log has before the
 * stop, so a state the primary met again only across a call (a loop that makes one each
 * turn) is one the replica cannot stop in before its next call, which finds the stop in
 * the log instead of its record. A holder that makes calls is no spin: it lets the token
 * go at one of them. */
void mig_preempt_called(void)
{
    if (__atomic_load_n(&mig_preempt_armed, __ATOMIC_ACQUIRE) != mig_tid + 1)
        return;
    disarm();
    __atomic_store_n(&pre.state, IDLE, __ATOMIC_RELEASE);
}

/* A holder armed a while ago that has not stopped in the checked state is asked again, and
 * arms a new breakpoint where it is then. A breakpoint can go silent: the address the
 * request found may be one the holder passes once (straight code after a count) before
 * it spins elsewhere; a primary that kept it asked no more and gave up serializing after
 * serial_stall_ms (tests/apps/sledspin.c). Replay waits longer: its stop may still be far
 * off (the holder works before it spins). */
void mig_preempt_rearm(uint64_t now_ns)
{
    uint32_t state = ARMED;
    uint64_t after = mig_mode == MIG_REPLAY ? REARM_REPLAY_NS : REARM_RECORD_NS;
    if (__atomic_load_n(&pre.state, __ATOMIC_ACQUIRE) == ARMED &&
        now_ns - pre.asked_ns > after)
        __atomic_compare_exchange_n(&pre.state, &state, IDLE, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE);
    /* a request that never reached its holder (asked_ns: when it was due). A signal of the
     * same number pending in the holder (a stop's that came late, a timer's) makes the
     * kernel drop another: the request stood, no thread asked again, and after
     * serial_stall_ms the primary gave up serializing (Redis with I/O threads, once) */
    state = ASKED;
    if (__atomic_load_n(&pre.state, __ATOMIC_ACQUIRE) == ASKED &&
        (int64_t)(now_ns - pre.asked_ns) > (int64_t)after) {
        drop_timer();
        __atomic_compare_exchange_n(&pre.state, &state, IDLE, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE);
    }
}

/* No stop this time. failed: the holder was checked at an address and did not recur
 * there (a counting loop): asking again backs off; else it was not in the app's code. */
static void not_now(int failed)
{
    disarm();
    if (failed)
        pre.given_up++;
    else
        pre.not_in_app++;
    if (failed && pre.fails < 3)
        pre.fails++;
    pre.retry_ns = mig_monotonic_ns() + (MIG_PREEMPT_NS << (failed ? pre.fails : 0));
    __atomic_store_n(&pre.state, IDLE, __ATOMIC_RELEASE);
    mig_sched_poke(); /* the waiters slept through the check: they may ask again */
}

/* On the holder, in the signal handler: a request (tgkill) or a stop at A (the
 * breakpoint's signal). in_app: the thread was running the app's code. Returns 1 when
 * the signal was the shim's. */
int mig_preempt_signal(const siginfo_t *si, ucontext_t *uc, int in_app)
{
    uint32_t state = __atomic_load_n(&pre.state, __ATOMIC_ACQUIRE);
    int timed = si->si_code == SI_TIMER && si->si_value.sival_int == ASK_TIMER;
    int ours_ask = ((si->si_code == SI_TKILL && si->si_pid == (pid_t)mig_sys(SYS_getpid)) ||
                    timed) &&
                   (state == ASKING || state == ASKED) &&
                   pre.ktid == (uint32_t)mig_sys(SYS_gettid);
    int ours_stop = pre.fd >= 0 && si->si_code != SI_TKILL && !timed && si->si_fd == pre.fd;
    if (!ours_ask && !ours_stop)
        return timed; /* a request's timer that came late: the shim's, dropped */
    if (timed)
        __atomic_store_n(&ask_timer, -1, __ATOMIC_RELEASE); /* (it fired: one shot) */
    int holder = mig_serial_on && !mig_token_out && mig_sched_holding();
    if (ours_ask) {
        uintptr_t at = 0;
        if (mig_mode == MIG_REPLAY)
            at = mig_sched_recorded_stop();
        else if (in_app && !mig_busy)
            at = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
        uint64_t now = mig_monotonic_ns(); /* (libc: before the breakpoint is on) */
        __atomic_store_n(&last_asked_ns, now, __ATOMIC_RELEASE);
        if (!holder || !at || !set_up() || !arm(at)) {
            if (mig_mode == MIG_REPLAY)
                __atomic_store_n(&pre.state, IDLE, __ATOMIC_RELEASE); /* ask again */
            else
                not_now(0);
            return 1;
        }
        pre.asked_ns = now;
        pre.by_timer = timed;
        if (mig_mode == MIG_RECORD) /* until its next call (mig_preempt_called) */
            __atomic_store_n(&mig_preempt_armed, mig_tid + 1, __ATOMIC_RELEASE);
        __atomic_store_n(&pre.state, ARMED, __ATOMIC_RELEASE);
        return 1;
    }
    if (!holder || (mig_mode != MIG_RECORD && mig_mode != MIG_REPLAY)) {
        not_now(0); /* gone live, or let go meanwhile */
        return 1;
    }
    pre.stops++;
    if (!in_app || mig_busy || (uintptr_t)uc->uc_mcontext.gregs[REG_RIP] != pre.at) {
        pre.outside++;
        return 1; /* A reached from the shim's own code (or its signal came late): not
                   * the app's loop */
    }
    if (!recurring(uc)) {
        if (mig_mode == MIG_RECORD && pre.hits >= MAX_HITS)
            not_now(1);
        return 1;
    }
    uintptr_t at = pre.at;
    disarm();
    pre.fails = 0;
    pre.stops = pre.outside = pre.regs_differ = pre.memory_differs = 0;
    pre.asks = pre.not_in_app = pre.given_up = 0;
    __atomic_store_n(&pre.state, IDLE, __ATOMIC_RELEASE);
    mig_sched_preempted(at, pre.by_timer);
    return 1;
}

/* What the stops since the last preemption showed, for a divergence or a warning. */
static char *put_stops(char *p, char *end)
{
    p = mig_put_int(p, end, pre.stops);
    p = mig_put_str(p, end, " stops (");
    p = mig_put_int(p, end, pre.outside);
    p = mig_put_str(p, end, " in the shim, registers differed ");
    p = mig_put_int(p, end, pre.regs_differ);
    p = mig_put_str(p, end, ", memory ");
    p = mig_put_int(p, end, pre.memory_differs);
    return mig_put_str(p, end, ")");
}

/* Replay: the armed holder did not stop in the recorded state in time. */
void mig_preempt_give_up(const struct mig_rec *rec)
{
    /* where the holder is: "running", or the system call it waits in */
    char path[64] = "/proc/self/task/", *p = mig_put_int(path + 16, path + 40, pre.ktid);
    memcpy(p, "/syscall", 9);
    static char where[96];
    long fd = mig_sys(SYS_open, path, O_RDONLY | O_CLOEXEC), n = 0;
    if (fd >= 0) {
        n = mig_sys(SYS_read, fd, where, sizeof where - 1);
        mig_sys(SYS_close, fd);
    }
    where[n > 0 ? n : 0] = 0;
    int spaces = 0; /* "running", or the call's number and first argument */
    for (char *c = where; *c; c++)
        if (*c == '\n' || (*c == ' ' && ++spaces == 2))
            *c = 0;
    static char seen[192];
    char *q = put_stops(seen, seen + sizeof seen - 1);
    q = mig_put_str(q, seen + sizeof seen - 1, "; in the kernel: ");
    *mig_put_str(q, seen + sizeof seen - 1, where[0] ? where : "?") = 0;
    mig_preempt_diverged(rec, seen);
}

char *mig_preempt_report(char *p, char *end)
{
    p = mig_put_str(p, end, "preemption since its last stop: ");
    p = mig_put_int(p, end, pre.asks);
    p = mig_put_str(p, end, " requests (");
    p = mig_put_int(p, end, pre.not_in_app);
    p = mig_put_str(p, end, " not in the app's code), ");
    p = put_stops(p, end);
    p = mig_put_str(p, end, ", ");
    p = mig_put_int(p, end, pre.given_up);
    p = mig_put_str(p, end, " addresses given up, the last at ");
    p = mig_put_int(p, end, (int64_t)pre.last_at);
    p = mig_put_str(p, end, " (a register that differed: gregs[");
    p = mig_put_int(p, end, pre.last_reg);
    return mig_put_str(p, end, "])");
}

void mig_preempt_exclude(const void *at, size_t len)
{
    int i = __atomic_fetch_add(&own_extra, 1, __ATOMIC_ACQ_REL);
    if (i >= 4)
        return; /* (then it is hashed: a stop may be found less often, never wrongly) */
    own_lo[4 + i] = (uintptr_t)at;
    __atomic_store_n(&own_hi[4 + i], (uintptr_t)at + len, __ATOMIC_RELEASE);
}

/* A forked child has one thread and none of its parent's breakpoints. */
void mig_preempt_after_fork(void)
{
    ask_timer = -1; /* a child has none of its parent's timers */
    if (pre.fd >= 0)
        mig_sys(SYS_close, pre.fd);
    pre.fd = -1;
    mig_preempt_armed = 0;
    pre.state = IDLE;
    pre.retry_ns = 0;
    pre.fails = 0;
}

/* Is a preemption being asked for or armed (the threads waiting for the token then
 * sleep without touching their stacks, which the check hashes)? */
int mig_preempt_busy(void)
{
    return __atomic_load_n(&pre.state, __ATOMIC_ACQUIRE) != IDLE;
}
