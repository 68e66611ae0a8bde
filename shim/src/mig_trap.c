/* mig_trap.c -- complete capture: every system call the app makes outside the shim's own
 * code is trapped and handled here, whoever makes it.
 *
 * The symbol wrappers (wrap_*.c) are the fast path. Everything else -- libc's internal
 * calls (stdio's reads, getaddrinfo), functions reached through dlsym(RTLD_NEXT), raw
 * syscall() -- is caught by Linux Syscall User Dispatch: a thread arms it once (prctl),
 * naming the shim's text as the only place system calls may come from freely and a
 * selector byte of its own (mig_sel). The byte says BLOCK while the app's code runs and
 * ALLOW while the shim's does (MIG_GATE in every wrapper), because the shim reaches the
 * kernel through libc too. A blocked system call arrives as SIGSYS; on_sigsys then
 *  - routes it to the wrapper of the same call (read, close, getrandom, clock_gettime...):
 *    recorded and replayed exactly like a call through the symbol;
 *  - runs it raw from the shim's text when its result is decided by the app's own state
 *    (memory, regular files, its signal mask): the `pass` list;
 *  - or refuses it by name, with the library it came from, and stops the process.
 * No call falls through unclassified: a number in none of the lists is refused.
 *
 * Rules of this file: it runs inside a signal handler that can interrupt libc anywhere;
 * it makes system calls only through mig_sys (the shim's own syscall instruction),
 * takes no lock libc could hold, and allocates nothing.
 *
 * Arming is per thread: it is not inherited by clone or fork, and execve clears it. The
 * first thread arms in mig_init, a forked child in mig_child_after_fork, and a thread
 * arms at its clone: the trapped clone runs through mig_clone_stub, whose child side
 * gives the thread its logical id (the THREAD_CREATE record made at the clone, in
 * creation order) and arms it before the thread runs any code of its own -- however the
 * thread was created. Signal handlers return through the shim's restorer
 * (rt_sigreturn from the shim's text), so the return from a handler is never trapped;
 * SIGSYS is kept out of every signal mask the app sets and the app cannot take it over. */
#define MIG_CORE
#include "mig.h"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <linux/futex.h>
#include <linux/sched.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include "mig_sysnames.h"

#ifndef PR_SET_SYSCALL_USER_DISPATCH
#define PR_SET_SYSCALL_USER_DISPATCH 59
#define PR_SYS_DISPATCH_OFF 0
#define PR_SYS_DISPATCH_ON 1
#endif
#ifndef SA_RESTORER
#define SA_RESTORER 0x04000000
#endif

MIG_TLS char mig_sel;
int mig_trapping;
static MIG_TLS char vfork_child;   /* this task is a vfork child about to exec */
static char vfork_lpid[64];         /* its logical id (its parent waits meanwhile) */
static uintptr_t text_lo, text_hi;  /* the shim's executable segment */

/* ------------------------------------------------------------ the shim's own syscalls */

__asm__(".text\n"
        ".globl mig_sys\n"
        ".hidden mig_sys\n"
        ".type mig_sys,@function\n"
        "mig_sys:\n"
        "    mov %rdi, %rax\n"
        "    mov %rsi, %rdi\n"
        "    mov %rdx, %rsi\n"
        "    mov %rcx, %rdx\n"
        "    mov %r8, %r10\n"
        "    mov %r9, %r8\n"
        "    mov 8(%rsp), %r9\n"
        "    syscall\n"
        "    ret\n"
        ".size mig_sys, .-mig_sys\n"
        /* the return from every signal handler the shim installs */
        ".globl mig_restore_rt\n"
        ".hidden mig_restore_rt\n"
        ".type mig_restore_rt,@function\n"
        "mig_restore_rt:\n"
        "    mov $15, %eax\n"
        "    syscall\n"
        "    hlt\n"
        ".size mig_restore_rt, .-mig_restore_rt\n");

void mig_restore_rt(void);

/* libc's convention (-1 and errno) back to the kernel's (-errno). */
static long kret_of(long r)
{
    return r == -1 ? -errno : r;
}

static void say(const char *s)
{
    mig_sys(SYS_write, 2, s, strlen(s));
}

static char *put_hex(char *p, uint64_t v)
{
    static const char digits[] = "0123456789abcdef";
    char tmp[16];
    int n = 0;
    do {
        tmp[n++] = digits[v & 15];
        v >>= 4;
    } while (v);
    *p++ = '0';
    *p++ = 'x';
    while (n)
        *p++ = tmp[--n];
    return p;
}

static const char *sys_name(long nr)
{
    return nr >= 0 && nr < (long)(sizeof mig_sysnames / sizeof *mig_sysnames) &&
                   mig_sysnames[nr]
               ? mig_sysnames[nr]
               : "an unknown system call";
}

/* Stop the process: `why` names the call and where it came from. A replaying process
 * reports it as its divergence (mig_core.c); a recording one ends with exit code 86. */
void mig_stop_refused(const char *text);
/* Count a trapped call in the ring's header (the agent reports it). */
void mig_count_trap(void);

/* "libname+0xoffset" of a code address, or the bare address. */
static char *put_where(char *p, char *end, uintptr_t pc, Dl_info *info)
{
    if (dladdr((void *)pc, info) && info->dli_fname) {
        const char *slash = strrchr(info->dli_fname, '/');
        p = mig_put_str(p, end, slash ? slash + 1 : info->dli_fname);
        p = mig_put_str(p, end, "+");
        if (p + 20 < end)
            p = put_hex(p, pc - (uintptr_t)info->dli_fbase);
    } else if (p + 20 < end) {
        info->dli_fname = NULL;
        p = put_hex(p, pc);
    }
    return p;
}

/* `sp`: the stack pointer at the call. When the call was made by libc's syscall()
 * function, the word there is the address it returns to: the program's own code. */
__attribute__((noreturn)) static void refuse(long nr, uintptr_t pc, uintptr_t sp,
                                             const char *why)
{
    char text[240], *p = text, *end = text + sizeof text - 1;
    p = mig_put_str(p, end, "system call ");
    p = mig_put_str(p, end, sys_name(nr));
    p = mig_put_str(p, end, " (");
    if (p + 24 < end)
        p = mig_put_uint(p, (uint64_t)nr);
    p = mig_put_str(p, end, ") from ");
    Dl_info at, caller;
    p = put_where(p, end, pc, &at);
    uintptr_t ret = sp ? *(const uintptr_t *)sp : 0;
    if (at.dli_fname && dladdr((void *)ret, &caller) && caller.dli_fname &&
        caller.dli_fbase != at.dli_fbase) {
        p = mig_put_str(p, end, " called from ");
        p = put_where(p, end, ret, &caller);
    }
    p = mig_put_str(p, end, ": ");
    p = mig_put_str(p, end, why);
    *p = 0;
    mig_stop_refused(text);
    __builtin_unreachable();
}

/* ------------------------------------------------------------ arming */

static void find_text(void)
{
    Dl_info info;
    if (!dladdr((void *)mig_sys, &info) || !info.dli_fbase)
        return;
    const ElfW(Ehdr) *eh = info.dli_fbase;
    const ElfW(Phdr) *ph = (const ElfW(Phdr) *)((const char *)eh + eh->e_phoff);
    for (int i = 0; i < eh->e_phnum; i++) {
        if (ph[i].p_type != PT_LOAD || !(ph[i].p_flags & PF_X))
            continue;
        uintptr_t lo = (uintptr_t)info.dli_fbase + ph[i].p_vaddr;
        if ((uintptr_t)mig_sys >= lo && (uintptr_t)mig_sys < lo + ph[i].p_memsz) {
            text_lo = lo;
            text_hi = lo + ph[i].p_memsz;
        }
    }
}

void mig_trap_arm(void)
{
    if (!mig_trapping)
        return;
    long r = mig_sys(SYS_prctl, PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_ON, text_lo,
                     text_hi - text_lo, &mig_sel);
    if (r != 0) {
        say("mig-shim: fatal: cannot arm Syscall User Dispatch (Linux 5.11 or later is "
            "needed; [app] capture = \"symbols\" runs without complete capture)\n");
        mig_sys(SYS_exit_group, 86);
    }
}

/* ------------------------------------------------------------ the vDSO
 *
 * Clock reads libc makes inside itself (timespec_get, clock(), its own uses of
 * clock_gettime) go through the vDSO, with no system call to trap: libc keeps the vDSO's
 * entry points in the dynamic loader's read-only data (_rtld_global_ro). The shim puts its
 * own entries there instead. Called from the app's code (the selector at BLOCK) an entry
 * runs the wrapper of the same call, which records it; called from the shim's (ALLOW:
 * the wrapper's real call comes back through libc to here) it runs the vDSO itself. */
/* The vDSO's functions, in the order of divert_vdso's names. */
static void *vdso_real[4];
#define vdso_clock_gettime ((int (*)(clockid_t, struct timespec *))vdso_real[0])
#define vdso_gettimeofday ((int (*)(struct timeval *, void *))vdso_real[1])
#define vdso_time ((time_t(*)(time_t *))vdso_real[2])
#define vdso_clock_getres ((int (*)(clockid_t, struct timespec *))vdso_real[3])

/* The vDSO's convention is the kernel's: -errno on failure. */
static int on_vdso_clock_gettime(clockid_t clk, struct timespec *ts)
{
    if (mig_sel == MIG_SEL_ALLOW)
        return vdso_clock_gettime(clk, ts);
    return (int)kret_of(clock_gettime(clk, ts));
}

static int on_vdso_gettimeofday(struct timeval *tv, void *tz)
{
    if (mig_sel == MIG_SEL_ALLOW)
        return vdso_gettimeofday(tv, tz);
    return (int)kret_of(gettimeofday(tv, tz));
}

static time_t on_vdso_time(time_t *t)
{
    if (mig_sel == MIG_SEL_ALLOW)
        return vdso_time(t);
    return time(t);
}

static int on_vdso_clock_getres(clockid_t clk, struct timespec *res)
{
    if (mig_sel == MIG_SEL_ALLOW)
        return vdso_clock_getres(clk, res);
    return (int)kret_of(clock_getres(clk, res));
}

/* Put the shim's entries in place of the vDSO's in the loader's table. A libc or vDSO
 * that does not look as expected leaves it as it is, with a warning: clock reads inside
 * libc then go unrecorded (docs/interceptor.md). */
static void divert_vdso(void)
{
    void *vdso = dlopen("linux-vdso.so.1", RTLD_NOW | RTLD_NOLOAD);
    void *table = dlsym(RTLD_DEFAULT, "_rtld_global_ro");
    Dl_info info;
    const ElfW(Sym) *sym = NULL;
    if (!vdso || !table || !dladdr1(table, &info, (void **)&sym, RTLD_DL_SYMENT) || !sym ||
        sym->st_size < 8) {
        mig_warn("cannot reach the vDSO's entries in the loader: clock reads inside libc "
                 "are not recorded", NULL);
        return;
    }
    static const char *const names[] = {"__vdso_clock_gettime", "__vdso_gettimeofday",
                                         "__vdso_time", "__vdso_clock_getres"};
    void *const mine[] = {(void *)on_vdso_clock_gettime, (void *)on_vdso_gettimeofday,
                          (void *)on_vdso_time, (void *)on_vdso_clock_getres};
    for (int i = 0; i < 4; i++)
        vdso_real[i] = dlsym(vdso, names[i]);
    uintptr_t lo = (uintptr_t)table & ~(uintptr_t)4095;
    uintptr_t hi = ((uintptr_t)table + sym->st_size + 4095) & ~(uintptr_t)4095;
    if (mig_sys(SYS_mprotect, lo, hi - lo, PROT_READ | PROT_WRITE) != 0) {
        mig_warn("cannot divert the vDSO's entries: clock reads inside libc are not "
                 "recorded", NULL);
        return;
    }
    void **slot = table;
    for (size_t k = 0; k < sym->st_size / sizeof *slot; k++)
        for (int i = 0; i < 4; i++)
            if (vdso_real[i] && slot[k] == vdso_real[i])
                slot[k] = mine[i];
    mig_sys(SYS_mprotect, lo, hi - lo, PROT_READ);
}

/* The kernel's struct sigaction (rt_sigaction), not libc's. */
struct k_sigaction {
    void *handler;
    unsigned long flags;
    void (*restorer)(void);
    uint64_t mask;
};

#define BIT(sig) (1ull << ((sig) - 1))
#define NEVER_BLOCKED (BIT(SIGSYS) | BIT(SIGKILL) | BIT(SIGSTOP))

static void on_sigsys(int sig, siginfo_t *si, void *ctx);

void mig_trap_init(void)
{
    const char *capture = getenv("MIG_CAPTURE");
    if (capture && strcmp(capture, "symbols") == 0)
        return;
    find_text();
    if (!text_hi) {
        say("mig-shim: fatal: cannot find the shim's own code to arm complete capture\n");
        mig_sys(SYS_exit_group, 86);
    }
    struct k_sigaction ka = {.handler = (void *)on_sigsys,
                             .flags = SA_SIGINFO | SA_RESTORER | SA_NODEFER,
                             .restorer = mig_restore_rt};
    if (mig_sys(SYS_rt_sigaction, SIGSYS, &ka, NULL, 8) != 0) {
        say("mig-shim: fatal: cannot install the SIGSYS handler\n");
        mig_sys(SYS_exit_group, 86);
    }
    /* SIGSYS must never be blocked while armed: a trap then kills the process */
    uint64_t unblock = BIT(SIGSYS);
    mig_sys(SYS_rt_sigprocmask, SIG_UNBLOCK, &unblock, NULL, 8);
    mig_trapping = 1;
    divert_vdso();
    mig_trap_arm();
    mig_sel = MIG_SEL_BLOCK; /* from here on, the app's code is trapped */
}

int mig_trap_sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    struct k_sigaction ka, ko;
    if (act) {
        ka.handler = (void *)act->sa_handler;
        ka.flags = (unsigned long)act->sa_flags | SA_RESTORER;
        ka.restorer = mig_restore_rt;
        memcpy(&ka.mask, &act->sa_mask, sizeof ka.mask);
        ka.mask &= ~NEVER_BLOCKED;
    }
    long r = mig_sys(SYS_rt_sigaction, sig, act ? &ka : NULL, old ? &ko : NULL, 8);
    if (r < 0) {
        errno = (int)-r;
        return -1;
    }
    if (old) {
        memset(old, 0, sizeof *old);
        old->sa_handler = (void (*)(int))ko.handler;
        old->sa_flags = (int)(ko.flags & ~(unsigned long)SA_RESTORER);
        memcpy(&old->sa_mask, &ko.mask, sizeof ko.mask);
    }
    return 0;
}

/* Stop the process at the trapped call `nr` (registers `g`), saying why. */
#define REFUSE(why) refuse(nr, (uintptr_t)g[REG_RIP], (uintptr_t)g[REG_RSP], (why))

/* ------------------------------------------------------------ clone */

/* The app's registers at the trapped clone, as its child resumes with them. */
struct regs {
    uint64_t r8, r9, r10, r12, r13, r14, r15, rdi, rsi, rbp, rbx, rdx, rip;
};

#define CLONE_SLOTS 64
static struct clone_slot {
    uint32_t state; /* 0 free, 1 taken, 2 the parent is done: the child may run */
    uint32_t tid;
    int thread;     /* 1: a thread, 0: a vfork child */
    uint32_t *clear_tid; /* CLONE_CHILD_CLEARTID's word, or NULL */
    struct regs regs;
} cslots[CLONE_SLOTS];
_Static_assert(offsetof(struct clone_slot, state) == 0, "mig_claim takes the state first");

/* The clone system call from the shim's text. The parent returns the result; a child
 * (on the stack the kernel gave it) calls mig_clone_child, then resumes the app's code
 * after its syscall instruction with the app's registers and 0 in rax. */
long mig_clone_stub(long nr, long a1, long a2, long a3, long a4, long a5,
                    struct clone_slot *slot);
__asm__(".text\n"
        ".globl mig_clone_stub\n"
        ".hidden mig_clone_stub\n"
        ".type mig_clone_stub,@function\n"
        "mig_clone_stub:\n"
        "    push %r12\n"
        "    push %rbx\n"
        "    mov 24(%rsp), %r12\n"
        "    mov %rdi, %rax\n"
        "    mov %rsi, %rdi\n"
        "    mov %rdx, %rsi\n"
        "    mov %rcx, %rdx\n"
        "    mov %r8, %r10\n"
        "    mov %r9, %r8\n"
        "    syscall\n"
        "    test %rax, %rax\n"
        "    jz 1f\n"
        "    pop %rbx\n"
        "    pop %r12\n"
        "    ret\n"
        "1:\n"
        "    mov %rsp, %rbx\n"
        "    lea -1024(%rsp), %rsp\n"
        "    and $-16, %rsp\n"
        "    mov %r12, %rdi\n"
        "    lea -512(%rbx), %rsi\n"
        "    call mig_clone_child\n"
        "    lea -512(%rbx), %r12\n"
        "    mov %rbx, %rsp\n"
        "    mov 0(%r12), %r8\n"
        "    mov 8(%r12), %r9\n"
        "    mov 16(%r12), %r10\n"
        "    mov 32(%r12), %r13\n"
        "    mov 40(%r12), %r14\n"
        "    mov 48(%r12), %r15\n"
        "    mov 56(%r12), %rdi\n"
        "    mov 64(%r12), %rsi\n"
        "    mov 72(%r12), %rbp\n"
        "    mov 80(%r12), %rbx\n"
        "    mov 88(%r12), %rdx\n"
        "    pushq 96(%r12)\n"
        "    mov 24(%r12), %r12\n"
        "    xor %eax, %eax\n"
        "    ret\n"
        ".size mig_clone_stub, .-mig_clone_stub\n");

/* wrap_thread.c: the next logical thread id of this process (record mode). */
uint32_t mig_thread_new_id(void);
/* ... and in replay: ids up to `id` are given (the next one, once live, comes after). */
void mig_thread_seen_id(uint32_t id);
/* wrap_proc.c */
pid_t mig_fork_call(long (*real)(void *), void *ctx);
void mig_remember_child(pid_t recorded, pid_t real);

__attribute__((used)) void mig_clone_child(struct clone_slot *s, struct regs *dest);
__attribute__((used)) void mig_clone_child(struct clone_slot *s, struct regs *dest)
{
    *dest = s->regs;
    if (!s->thread) {
        /* a vfork child shares its parent's memory and thread storage; the parent's
         * thread waits until this child has exec'd or exited */
        vfork_child = 1;
        __atomic_store_n(&s->state, 0, __ATOMIC_RELEASE);
        mig_trap_arm();
        mig_sel = MIG_SEL_BLOCK;
        return;
    }
    /* record: the parent's THREAD_CREATE record must be in the ring before this thread's
     * first record; replay: the same point in the log */
    while (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) != 2)
        mig_sys(SYS_futex, &s->state, FUTEX_WAIT, 1, NULL, NULL, 0);
    mig_tid = s->tid;
    mig_quiet = 0;
    mig_busy = 0;
    mig_sched_exit_word(s->clear_tid);
    __atomic_store_n(&s->state, 0, __ATOMIC_RELEASE);
    mig_trap_arm();
    mig_sched_child(); /* serialized threads: run once the token comes to this thread */
    mig_sel = MIG_SEL_BLOCK;
}

static void save_regs(struct regs *r, const greg_t *g)
{
    r->r8 = (uint64_t)g[REG_R8];
    r->r9 = (uint64_t)g[REG_R9];
    r->r10 = (uint64_t)g[REG_R10];
    r->r12 = (uint64_t)g[REG_R12];
    r->r13 = (uint64_t)g[REG_R13];
    r->r14 = (uint64_t)g[REG_R14];
    r->r15 = (uint64_t)g[REG_R15];
    r->rdi = (uint64_t)g[REG_RDI];
    r->rsi = (uint64_t)g[REG_RSI];
    r->rbp = (uint64_t)g[REG_RBP];
    r->rbx = (uint64_t)g[REG_RBX];
    r->rdx = (uint64_t)g[REG_RDX];
    r->rip = (uint64_t)g[REG_RIP];
}

static long stub(long nr, const long *a, struct clone_slot *s)
{
    return mig_clone_stub(nr, a[0], a[1], a[2], a[3], a[4], s);
}

/* A new thread: its logical id is given here, at the clone, whatever made it
 * (pthread_create through the symbol or through dlsym, a library's own thread, a raw
 * clone). The THREAD_CREATE record orders it in the creating thread's log. */
static long thread_clone(long nr, const long *a, const greg_t *g, uint32_t *clear_tid)
{
    struct clone_slot *s = mig_claim(cslots, sizeof *cslots, CLONE_SLOTS);
    save_regs(&s->regs, g);
    s->thread = 1;
    s->clear_tid = clear_tid;
    struct mig_call c = {.kind = MIG_K_THREAD_CREATE};
    mig_busy++;
    int replaying = mig_mode == MIG_REPLAY && mig_replay(&c, 0);
    if (replaying) {
        int64_t id = c.result, err = c.err;
        mig_replay_done();
        if (err || id <= 0) {
            __atomic_store_n(&s->state, 0, __ATOMIC_RELEASE);
            mig_busy--;
            return -(err ? err : EAGAIN); /* the primary's clone failed here */
        }
        s->tid = (uint32_t)id;
        mig_thread_seen_id(s->tid);
    } else {
        s->tid = mig_thread_new_id();
    }
    mig_sched_start(); /* the first thread: from here on one runs at a time, if serialized */
    __atomic_add_fetch(&mig_threads, 1, __ATOMIC_ACQ_REL); /* before the thread runs */
    long r = stub(nr, a, s);
    if (!replaying) {
        c.result = r >= 0 ? (int64_t)s->tid : -1;
        c.err = r < 0 ? (int)-r : 0;
        mig_record(&c);
    } else if (r < 0) {
        mig_warn("a thread could not be created in replay where it was on the primary", NULL);
    }
    if (r < 0) {
        __atomic_sub_fetch(&mig_threads, 1, __ATOMIC_ACQ_REL);
        __atomic_store_n(&s->state, 0, __ATOMIC_RELEASE);
    } else {
        __atomic_store_n(&s->state, 2, __ATOMIC_RELEASE);
        mig_sys(SYS_futex, &s->state, FUTEX_WAKE, 1, NULL, NULL, 0);
    }
    mig_busy--;
    return r;
}

/* A vfork child on its own stack (posix_spawn inside libc: system, popen): recorded as a
 * SPAWN, like posix_spawn through its symbol; the child runs only until its execve, which
 * gets it a logical id and a ring of its own. */
static long spawn_clone(long nr, const long *a, const greg_t *g)
{
    struct clone_slot *s = mig_claim(cslots, sizeof *cslots, CLONE_SLOTS);
    save_regs(&s->regs, g);
    s->thread = 0;
    struct mig_call c = {.kind = MIG_K_SPAWN};
    mig_busy++;
    mig_next_child_lpid(vfork_lpid, sizeof vfork_lpid);
    long r;
    if (mig_mode == MIG_REPLAY && mig_replay(&c, 0)) {
        pid_t recorded = 0;
        int ok = c.result == 0 && c.payload_len == sizeof recorded;
        if (ok)
            memcpy(&recorded, c.payload, sizeof recorded);
        mig_replay_done();
        if (!ok) {
            __atomic_store_n(&s->state, 0, __ATOMIC_RELEASE);
            mig_busy--;
            return -(c.result > 0 ? c.result : EAGAIN);
        }
        r = stub(nr, a, s);
        if (r > 0)
            mig_remember_child(recorded, (pid_t)r);
        r = recorded;
    } else {
        r = stub(nr, a, s);
        pid_t pid = r > 0 ? (pid_t)r : 0;
        c.result = r > 0 ? 0 : -r;
        c.payload = &pid;
        c.payload_len = r > 0 ? sizeof pid : 0;
        mig_record(&c);
    }
    vfork_child = 0; /* the child has exec'd or exited: this thread storage is ours again */
    mig_sel = MIG_SEL_ALLOW;
    __atomic_store_n(&s->state, 0, __ATOMIC_RELEASE);
    mig_busy--;
    return r;
}

struct raw_fork {
    long nr;
    long a[5];
};

static long raw_fork(void *p)
{
    struct raw_fork *f = p;
    return mig_sys(f->nr, f->a[0], f->a[1], f->a[2], f->a[3], f->a[4]);
}

static long on_clone(long nr, const long *a, const greg_t *g)
{
    uint64_t flags;
    uint64_t stack;
    if (nr == SYS_clone3) {
        const struct clone_args *ca = (const struct clone_args *)a[0];
        if (!ca || (unsigned long)a[1] < 64)
            return -EINVAL;
        flags = ca->flags;
        stack = ca->stack;
    } else if (nr == SYS_clone) {
        flags = (uint64_t)a[0];
        stack = (uint64_t)a[1];
    } else {
        flags = 0; /* fork, vfork */
        stack = 0;
    }
    if (flags & CLONE_THREAD) {
        if (!(flags & CLONE_VM) || !stack)
            REFUSE("a thread without its own stack or memory");
        return thread_clone(nr, a, g, !(flags & CLONE_CHILD_CLEARTID) ? NULL
                                      : nr == SYS_clone3
                                          ? (uint32_t *)((const struct clone_args *)a[0])->child_tid
                                          : (uint32_t *)a[3]);
    }
    if ((flags & CLONE_VM) && (flags & CLONE_VFORK) && stack)
        return spawn_clone(nr, a, g);
    if (flags & CLONE_VM)
        REFUSE("a process sharing its parent's memory");
    /* a fork (a vfork is run as a fork: the child gets a copy instead of a loan) */
    struct raw_fork f = {.nr = nr};
    if (nr == SYS_vfork)
        f.nr = SYS_fork;
    for (int i = 0; i < 5; i++)
        f.a[i] = a[i];
    long r = mig_fork_call(raw_fork, &f);
    return r < 0 ? -errno : r;
}

/* ------------------------------------------------------------ the handler */


static long on_rt_sigprocmask(const long *a, ucontext_t *uc)
{
    /* the mask the thread returns to is the one saved in the signal frame: change it */
    if (a[3] != 8)
        return -EINVAL;
    uint64_t *cur = (uint64_t *)&uc->uc_sigmask;
    uint64_t was = *cur;
    if (a[1]) {
        uint64_t set = *(const uint64_t *)a[1];
        if (a[0] == SIG_BLOCK)
            *cur |= set;
        else if (a[0] == SIG_UNBLOCK)
            *cur &= ~set;
        else if (a[0] == SIG_SETMASK)
            *cur = set;
        else
            return -EINVAL;
        *cur &= ~NEVER_BLOCKED;
    }
    if (a[2])
        *(uint64_t *)a[2] = was;
    return 0;
}

static long on_rt_sigaction(const long *a)
{
    const struct k_sigaction *k = (const struct k_sigaction *)a[1];
    struct k_sigaction *ko = (struct k_sigaction *)a[2];
    if (a[3] != 8)
        return -EINVAL;
    struct sigaction act, old;
    if (k) {
        memset(&act, 0, sizeof act);
        act.sa_handler = (void (*)(int))k->handler;
        act.sa_flags = (int)(k->flags & ~(unsigned long)SA_RESTORER);
        memcpy(&act.sa_mask, &k->mask, sizeof k->mask);
    }
    if (sigaction((int)a[0], k ? &act : NULL, ko ? &old : NULL) != 0)
        return -errno;
    if (ko) {
        ko->handler = (void *)old.sa_handler;
        ko->flags = (unsigned long)old.sa_flags | SA_RESTORER;
        ko->restorer = mig_restore_rt;
        memcpy(&ko->mask, &old.sa_mask, sizeof ko->mask);
    }
    return 0;
}

static long raw(long nr, const long *a)
{
    return mig_sys(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}

/* ------------------------------------------------------------ serialized threads */

/* A call that may wait long for something outside the log (a yield, a file lock, a
 * signal): the token goes for its duration (mig_sched.c). */
static long without_token(long nr, const long *a)
{
    mig_sched_point();
    mig_sched_block();
    long r = raw(nr, a);
    mig_sched_resume();
    return r;
}

/* pause and sigsuspend: a wait for a signal, recorded as a SLEEP (args[0] 4: pause, 5:
 * sigsuspend) with its result, EINTR. A replica waits for that record in the shim -- so a
 * checkpoint finds the process at rest, as an nginx master waits between its signals --
 * and returns it; the handlers of the signals that ended the wait run at the process's
 * next call, where the primary's ran too (wrap_signal.c defers them there). SIGSYS stays
 * deliverable during the wait. */
static long on_sigwait(long nr, const long *a)
{
    struct mig_call c = {.kind = MIG_K_SLEEP, .args = {nr == SYS_pause ? 4 : 5}};
    mig_sched_point();
    mig_busy++;
    if (mig_mode == MIG_REPLAY && mig_replay(&c, 1)) {
        long r = c.result < 0 ? -c.err : c.result;
        mig_replay_done();
        mig_busy--;
        return r;
    }
    mig_sched_block();
    mig_busy--;
    long r;
    if (nr == SYS_rt_sigsuspend) {
        uint64_t mask = a[0] && a[1] == 8 ? *(const uint64_t *)a[0] & ~NEVER_BLOCKED : 0;
        r = a[1] == 8 ? mig_sys(SYS_rt_sigsuspend, a[0] ? &mask : NULL, 8) : -EINVAL;
    } else {
        r = raw(nr, a);
    }
    mig_busy++;
    c.result = r < 0 ? -1 : r;
    c.err = r < 0 ? (int)-r : 0;
    mig_record(&c);
    mig_busy--;
    return r;
}

/* futex under serialized threads. A wait is a switch point: it waits without the token and
 * is recorded (FUTEX {op}) with its result once it has the token again; a replica takes
 * the result from the log at its turn and never waits in the kernel. Wakes and requeues
 * act for real on both hosts (a requeue moves waiters, WAKE_OP changes a word) and return
 * the recorded count. Priority-inheritance futexes are refused: the kernel hands their
 * ownership to a waiter of its choosing. */
static long on_futex(long nr, const long *a, const greg_t *g)
{
    if (!mig_serial_on)
        return raw(nr, a);
    int cmd = (int)a[1] & FUTEX_CMD_MASK;
    struct mig_call c = {.kind = MIG_K_FUTEX, .args = {cmd}};
    long r;
    switch (cmd) {
    case FUTEX_WAIT: case FUTEX_WAIT_BITSET:
        mig_sched_point();
        mig_busy++;
        if (mig_mode == MIG_REPLAY && mig_replay(&c, 1)) {
            /* the word is what it was when the primary's thread resumed: every write to it
             * was made under the token, in the log's order (a thread's id word, which the
             * kernel clears at its exit, is waited for by the next holder: mig_sched.c) */
            r = c.result < 0 ? -c.err : c.result;
            mig_replay_done();
            mig_busy--;
            return r;
        }
        mig_sched_block(); /* (in replay: the log ended just now, this thread is live) */
        r = raw(nr, a);
        break;
    case FUTEX_WAKE: case FUTEX_WAKE_BITSET: case FUTEX_REQUEUE: case FUTEX_CMP_REQUEUE:
    case FUTEX_WAKE_OP:
        mig_busy++;
        r = raw(nr, a);
        if (mig_mode == MIG_REPLAY && mig_replay(&c, 1)) {
            r = c.result < 0 ? -c.err : c.result;
            mig_replay_done();
            mig_busy--;
            return r;
        }
        break;
    default:
        REFUSE("a priority-inheritance futex under serialized threads (docs/threads.md)");
    }
    c.result = r < 0 ? -1 : r;
    c.err = r < 0 ? (int)-r : 0;
    mig_record(&c);
    mig_busy--;
    return r;
}

/* ioctl on an fd whose I/O is recorded: performed on the primary and recorded with the
 * bytes it wrote back (FIONREAD's count, a terminal's settings and size...); a backup
 * returns those and performs nothing (its placeholder could not: an eventfd takes no
 * FIOASYNC), except FIONBIO, which it applies to the placeholder too, so the socket that
 * replaces it when the backup goes live is as the program set it. */
static uint32_t ioctl_out_size(unsigned long req)
{
    switch (req) {
    case FIONREAD: case TIOCOUTQ: case TIOCGPGRP: case TIOCGSID: case TIOCGETD:
    case TIOCMGET: case TIOCGSOFTCAR: case TIOCGPTN:
        return sizeof(int);
    case TCGETS:
        return 36; /* the kernel's struct termios */
    case TIOCGWINSZ:
        return sizeof(struct winsize);
    case FIONBIO: case FIOASYNC: case FIOCLEX: case FIONCLEX: case TCSETS: case TCSETSW:
    case TCSETSF: case TIOCSWINSZ: case TIOCSPGRP: case TIOCSCTTY: case TIOCNOTTY:
    case TCFLSH: case TCXONC: case TCSBRK: case TIOCMSET: case TIOCMBIS: case TIOCMBIC:
        return 0;
    }
    if (_IOC_TYPE(req) != 'T' && (_IOC_DIR(req) & _IOC_READ))
        return _IOC_SIZE(req);
    return 0;
}

/* A call on a recorded fd (args {a0, a1}) that writes at most `size` bytes to `buf`:
 * performed and recorded with those bytes on the primary, returned from the log on a
 * backup, which performs nothing. */
static long fd_call(enum mig_kind kind, long nr, const long *a, int64_t a0, int64_t a1,
                    void *buf, uint32_t size)
{
    struct mig_call c = {.kind = kind, .args = {a0, a1}};
    mig_busy++;
    if (mig_mode == MIG_REPLAY && mig_replay(&c, 2)) {
        mig_replay_fits(&c, size);
        if (c.result >= 0 && c.payload_len && buf)
            memcpy(buf, c.payload, c.payload_len);
        mig_replay_done();
    } else {
        long r = raw(nr, a);
        c.result = r < 0 ? -1 : r;
        c.err = r < 0 ? (int)-r : 0;
        c.payload = buf;
        c.payload_len = r >= 0 && buf ? size : 0;
        mig_record(&c);
    }
    mig_busy--;
    return c.result < 0 ? -c.err : c.result;
}

/* ioctl and fcntl: the buffer is their third argument. */
static long fd_control(enum mig_kind kind, long nr, const long *a, uint32_t size)
{
    return fd_call(kind, nr, a, a[0], a[1], (void *)a[2], size);
}

/* fstat (or fstatat/statx with AT_EMPTY_PATH) of an fd whose I/O is recorded -- a socket,
 * a pipe, a host file: what it says is the primary's (a backup has a placeholder there,
 * whose size and block size differ, and stdio sizes its buffers by them). */
static long fd_stat(long nr, const long *a, int fd, void *buf, uint32_t size)
{
    return fd_call(MIG_K_FSTAT, nr, a, fd, nr, buf, size);
}

/* stat of anything else, for real on every host; a regular file keeps the identity the
 * program first saw across a restore (mig_fileid.c). */
static long file_stat(long nr, const long *a)
{
    long r = raw(nr, a);
    if (r == 0)
        mig_fileid_fix(nr, a);
    return r;
}

static long fd_ioctl(long nr, const long *a)
{
    int replaying = mig_mode == MIG_REPLAY;
    long r = fd_control(MIG_K_IOCTL, nr, a, ioctl_out_size((unsigned long)a[1]));
    if (replaying && mig_mode == MIG_REPLAY && (unsigned long)a[1] == FIONBIO && r == 0)
        raw(nr, a);
    return r;
}

/* fcntl's signal-driven I/O commands on a recorded fd (F_SETOWN names a pid the program
 * took from getpid(), the primary's: a backup must not apply it) are recorded like an
 * ioctl, with the owner structure F_GETOWN_EX fills. Every other command acts for real on
 * both hosts (flags, duplicates, locks of the fd table the program shapes itself). */
static long fd_fcntl(long nr, const long *a)
{
    int cmd = (int)a[1];
    if (cmd != F_SETOWN && cmd != F_GETOWN && cmd != F_SETSIG && cmd != F_GETSIG &&
        cmd != F_SETOWN_EX && cmd != F_GETOWN_EX)
        return raw(nr, a);
    return fd_control(MIG_K_FCNTL, nr, a, cmd == F_GETOWN_EX ? sizeof(struct f_owner_ex) : 0);
}

/* System calls whose result the app's own state decides (its memory, its regular files,
 * its own ids and limits), or which only wait: run as they are. Waiting calls the app
 * makes through libc's symbols (futex aside) are wrapped; these come from inside libc. */
static int passes(long nr)
{
    switch (nr) {
    case SYS_mprotect: case SYS_munmap: case SYS_brk: case SYS_mremap: case SYS_msync:
    case SYS_mincore: case SYS_madvise: case SYS_mlock: case SYS_munlock: case SYS_mlockall:
    case SYS_munlockall: case SYS_mlock2: case SYS_membarrier: case SYS_pkey_mprotect:
    case SYS_statfs: case SYS_fstatfs: case SYS_lseek:
    case SYS_pread64: case SYS_pwrite64:
    case SYS_preadv: case SYS_pwritev: case SYS_preadv2: case SYS_pwritev2:
    case SYS_access: case SYS_faccessat: case SYS_faccessat2: case SYS_readlink:
    case SYS_readlinkat: case SYS_getcwd: case SYS_chdir: case SYS_fchdir: case SYS_mkdir:
    case SYS_mkdirat: case SYS_rmdir: case SYS_rename: case SYS_renameat: case SYS_renameat2:
    case SYS_unlink: case SYS_unlinkat: case SYS_link: case SYS_linkat: case SYS_symlink:
    case SYS_symlinkat: case SYS_chmod: case SYS_fchmod: case SYS_fchmodat: case SYS_chown:
    case SYS_fchown: case SYS_lchown: case SYS_fchownat: case SYS_truncate:
    case SYS_ftruncate: case SYS_fsync: case SYS_fdatasync: case SYS_sync_file_range:
    case SYS_fallocate: case SYS_flock: case SYS_utimensat: case SYS_utimes: case SYS_umask:
    case SYS_getdents64: case SYS_getdents: case SYS_getxattr: case SYS_lgetxattr:
    case SYS_fgetxattr: case SYS_listxattr: case SYS_flistxattr: case SYS_llistxattr:
    case SYS_fadvise64: case SYS_readahead: case SYS_sync: case SYS_syncfs:
    case SYS_dup: case SYS_memfd_create:
    case SYS_eventfd2: case SYS_eventfd: case SYS_epoll_create: case SYS_epoll_create1:
    case SYS_timerfd_create: case SYS_timerfd_settime: case SYS_timerfd_gettime:
    case SYS_signalfd: case SYS_signalfd4: case SYS_inotify_init: case SYS_inotify_init1:
    case SYS_inotify_add_watch: case SYS_inotify_rm_watch:
    case SYS_futex: case SYS_set_robust_list: case SYS_get_robust_list: case SYS_rseq:
    case SYS_set_tid_address: case SYS_arch_prctl: case SYS_sched_yield:
    case SYS_sched_getaffinity: case SYS_sched_setaffinity: case SYS_sched_getparam:
    case SYS_sched_setparam: case SYS_sched_getscheduler: case SYS_sched_setscheduler:
    case SYS_sched_get_priority_max: case SYS_sched_get_priority_min: case SYS_getpriority:
    case SYS_setpriority: case SYS_sigaltstack: case SYS_rt_sigpending:
    case SYS_rt_sigsuspend: case SYS_tgkill: case SYS_tkill: case SYS_rt_tgsigqueueinfo:
    case SYS_getuid: case SYS_geteuid: case SYS_getgid: case SYS_getegid: case SYS_getgroups:
    case SYS_getresuid: case SYS_getresgid: case SYS_setuid: case SYS_setgid:
    case SYS_setreuid: case SYS_setregid: case SYS_setresuid: case SYS_setresgid:
    case SYS_setgroups: case SYS_setfsuid: case SYS_setfsgid: case SYS_getpgid:
    case SYS_getpgrp: case SYS_getsid: case SYS_setsid: case SYS_setpgid: case SYS_capget:
    case SYS_capset: case SYS_prlimit64: case SYS_getrlimit: case SYS_setrlimit:
    case SYS_personality: case SYS_close_range: case SYS_pipe: case SYS_pipe2:
    /* timers: their signals are recorded where they ran (wrap_signal.c) */
    case SYS_setitimer: case SYS_getitimer: case SYS_alarm: case SYS_timer_create:
    case SYS_timer_settime: case SYS_timer_gettime: case SYS_timer_getoverrun:
    case SYS_timer_delete: case SYS_pause: case SYS_restart_syscall: case SYS_mknod:
    case SYS_mknodat: case SYS_sched_rr_get_interval: case SYS_ioprio_get:
    case SYS_ioprio_set:
        return 1;
    }
    return 0;
}

static long dispatch(long nr, const long *a, ucontext_t *uc)
{
    greg_t *g = uc->uc_mcontext.gregs;
    switch (nr) {
    /* input and output */
    case SYS_read: return kret_of(read((int)a[0], (void *)a[1], (size_t)a[2]));
    case SYS_write: return kret_of(write((int)a[0], (const void *)a[1], (size_t)a[2]));
    case SYS_readv: return kret_of(readv((int)a[0], (const struct iovec *)a[1], (int)a[2]));
    case SYS_writev: return kret_of(writev((int)a[0], (const struct iovec *)a[1], (int)a[2]));
    case SYS_close: return kret_of(close((int)a[0]));
    case SYS_recvfrom:
        return kret_of(recvfrom((int)a[0], (void *)a[1], (size_t)a[2], (int)a[3],
                             (struct sockaddr *)a[4], (socklen_t *)a[5]));
    case SYS_sendto:
        return kret_of(sendto((int)a[0], (const void *)a[1], (size_t)a[2], (int)a[3],
                           (const struct sockaddr *)a[4], (socklen_t)a[5]));
    case SYS_recvmsg: return kret_of(recvmsg((int)a[0], (struct msghdr *)a[1], (int)a[2]));
    case SYS_sendmsg: return kret_of(sendmsg((int)a[0], (const struct msghdr *)a[1], (int)a[2]));
    /* sockets */
    case SYS_socket: return kret_of(socket((int)a[0], (int)a[1], (int)a[2]));
    case SYS_socketpair: return kret_of(socketpair((int)a[0], (int)a[1], (int)a[2], (int *)a[3]));
    case SYS_bind:
        return kret_of(bind((int)a[0], (const struct sockaddr *)a[1], (socklen_t)a[2]));
    case SYS_listen: return kret_of(listen((int)a[0], (int)a[1]));
    case SYS_accept:
        return kret_of(accept((int)a[0], (struct sockaddr *)a[1], (socklen_t *)a[2]));
    case SYS_accept4:
        return kret_of(accept4((int)a[0], (struct sockaddr *)a[1], (socklen_t *)a[2], (int)a[3]));
    case SYS_connect:
        return kret_of(connect((int)a[0], (const struct sockaddr *)a[1], (socklen_t)a[2]));
    case SYS_getsockname:
        return kret_of(getsockname((int)a[0], (struct sockaddr *)a[1], (socklen_t *)a[2]));
    case SYS_getpeername:
        return kret_of(getpeername((int)a[0], (struct sockaddr *)a[1], (socklen_t *)a[2]));
    case SYS_getsockopt:
        return kret_of(getsockopt((int)a[0], (int)a[1], (int)a[2], (void *)a[3],
                               (socklen_t *)a[4]));
    case SYS_setsockopt:
        return kret_of(setsockopt((int)a[0], (int)a[1], (int)a[2], (const void *)a[3],
                               (socklen_t)a[4]));
    case SYS_shutdown: return kret_of(shutdown((int)a[0], (int)a[1]));
    /* readiness */
    case SYS_poll: return kret_of(poll((struct pollfd *)a[0], (nfds_t)a[1], (int)a[2]));
    case SYS_ppoll:
        return kret_of(ppoll((struct pollfd *)a[0], (nfds_t)a[1], (const struct timespec *)a[2],
                          (const sigset_t *)a[3]));
    case SYS_select:
        return kret_of(select((int)a[0], (fd_set *)a[1], (fd_set *)a[2], (fd_set *)a[3],
                           (struct timeval *)a[4]));
    case SYS_epoll_wait:
        return kret_of(epoll_wait((int)a[0], (struct epoll_event *)a[1], (int)a[2], (int)a[3]));
    case SYS_epoll_pwait:
        return kret_of(epoll_pwait((int)a[0], (struct epoll_event *)a[1], (int)a[2], (int)a[3],
                                (const sigset_t *)a[4]));
    case SYS_epoll_ctl:
        return kret_of(epoll_ctl((int)a[0], (int)a[1], (int)a[2], (struct epoll_event *)a[3]));
    /* clocks, waits, identity, randomness */
    case SYS_clock_gettime: return kret_of(clock_gettime((clockid_t)a[0], (struct timespec *)a[1]));
    case SYS_clock_getres: return kret_of(clock_getres((clockid_t)a[0], (struct timespec *)a[1]));
    case SYS_gettimeofday: return kret_of(gettimeofday((struct timeval *)a[0], (void *)a[1]));
    case SYS_time: return time((time_t *)a[0]);
    case SYS_nanosleep:
        return kret_of(nanosleep((const struct timespec *)a[0], (struct timespec *)a[1]));
    case SYS_clock_nanosleep:
        return -clock_nanosleep((clockid_t)a[0], (int)a[1], (const struct timespec *)a[2],
                                (struct timespec *)a[3]);
    case SYS_getrandom:
        return kret_of(getrandom((void *)a[0], (size_t)a[1], (unsigned)a[2]));
    case SYS_getpid: return getpid();
    case SYS_getppid: return getppid();
    case SYS_gettid: return gettid();
    case SYS_uname: return kret_of(uname((struct utsname *)a[0]));
    /* files */
    case SYS_open: return kret_of(open((const char *)a[0], (int)a[1], (mode_t)a[2]));
    case SYS_openat:
        return kret_of(openat((int)a[0], (const char *)a[1], (int)a[2], (mode_t)a[3]));
    case SYS_creat:
        return kret_of(open((const char *)a[0], O_CREAT | O_WRONLY | O_TRUNC, (mode_t)a[1]));
    case SYS_ioctl:
        return mig_fd_recorded((int)a[0]) ? fd_ioctl(nr, a) : raw(nr, a);
    case SYS_fcntl:
        return mig_fd_recorded((int)a[0]) ? fd_fcntl(nr, a) : raw(nr, a);
    case SYS_stat: case SYS_lstat:
        return file_stat(nr, a);
    case SYS_fstat:
        if (mig_fd_recorded((int)a[0]))
            return fd_stat(nr, a, (int)a[0], (void *)a[1], sizeof(struct stat));
        return file_stat(nr, a);
    case SYS_newfstatat:
        if ((a[3] & AT_EMPTY_PATH) && a[1] && !*(const char *)a[1] &&
            mig_fd_recorded((int)a[0]))
            return fd_stat(nr, a, (int)a[0], (void *)a[2], sizeof(struct stat));
        return file_stat(nr, a);
    case SYS_statx:
        if ((a[2] & AT_EMPTY_PATH) && a[1] && !*(const char *)a[1] &&
            mig_fd_recorded((int)a[0]))
            return fd_stat(nr, a, (int)a[0], (void *)a[4], sizeof(struct statx));
        return file_stat(nr, a);
    case SYS_dup2: return kret_of(dup2((int)a[0], (int)a[1]));
    case SYS_dup3: return kret_of(dup3((int)a[0], (int)a[1], (int)a[2]));
    case SYS_mmap:
        if (((int)a[3] & MAP_SHARED) && !((int)a[3] & MAP_ANONYMOUS))
            return kret_of((long)mmap((void *)a[0], (size_t)a[1], (int)a[2], (int)a[3], (int)a[4],
                                   (off_t)a[5]));
        return raw(nr, a);
    /* processes and signals */
    case SYS_clone: case SYS_clone3: case SYS_fork: case SYS_vfork:
        return on_clone(nr, a, g);
    case SYS_execve:
        return kret_of(execve((const char *)a[0], (char *const *)a[1], (char *const *)a[2]));
    case SYS_wait4:
        return kret_of(wait4((pid_t)a[0], (int *)a[1], (int)a[2], (struct rusage *)a[3]));
    case SYS_kill: return kret_of(kill((pid_t)a[0], (int)a[1]));
    case SYS_rt_sigaction: return on_rt_sigaction(a);
    case SYS_rt_sigprocmask: return on_rt_sigprocmask(a, uc);
    case SYS_exit:
        /* a thread ends: its last unrecorded mutex acquisitions are said now, and the
         * token goes for good */
        mig_busy++;
        mig_quiet_flush();
        mig_copy_thread_exit();
        mig_busy--;
        mig_sched_exit();
        return raw(nr, a);
    case SYS_futex:
        return on_futex(nr, a, g);
    case SYS_futex_waitv:
        if (mig_serial_on)
            REFUSE("futex_waitv under serialized threads (docs/threads.md)");
        return raw(nr, a);
    case SYS_sched_yield: case SYS_flock:
        return mig_serial_on ? without_token(nr, a) : raw(nr, a);
    case SYS_pause: case SYS_rt_sigsuspend:
        return on_sigwait(nr, a);
    case SYS_exit_group:
        if (mig_mode == MIG_RECORD)
            mig_hold_flush();
        mig_sched_end();
        return raw(nr, a);
    case SYS_rt_sigreturn:
        REFUSE("a signal handler returned through a restorer "
                                          "the shim did not install");
    case SYS_prctl:
        if (a[0] == PR_SET_SYSCALL_USER_DISPATCH || a[0] == PR_SET_SECCOMP)
            REFUSE("the app cannot take system call dispatch "
                                              "over from the shim");
        return raw(nr, a);
    /* bytes moved between fds inside the kernel: a read and a write when a side is
     * recorded (wrap_io.c) */
    case SYS_sendfile:
        return kret_of(sendfile((int)a[0], (int)a[1], (off_t *)a[2], (size_t)a[3]));
    case SYS_splice:
        return kret_of(splice((int)a[0], (loff_t *)a[1], (int)a[2], (loff_t *)a[3],
                              (size_t)a[4], (unsigned)a[5]));
    case SYS_copy_file_range:
        return kret_of(copy_file_range((int)a[0], (loff_t *)a[1], (int)a[2], (loff_t *)a[3],
                                       (size_t)a[4], (unsigned)a[5]));
    case SYS_tee:
        /* tee takes two pipes: without one, the kernel says EINVAL */
        if (!mig_fd_recorded((int)a[0]) && !mig_fd_recorded((int)a[1]))
            return raw(nr, a);
        REFUSE("tee copies a pipe's bytes without consuming them, which no recorded read "
               "and write can do (docs/interceptor.md)");
    case SYS_pkey_alloc:
        /* memory protection keys depend on the CPU, which may differ between members: every
         * member answers as a host without them (ENOSPC), so a program that would use them
         * (V8 hardening its JIT code) takes the same path everywhere */
        return -ENOSPC;
    case SYS_pkey_free:
        return -EINVAL; /* no key was ever allocated */
    case SYS_getrusage: case SYS_sysinfo: case SYS_times: case SYS_getcpu:
        /* host facts the app may only report: passed, not recorded (docs/interceptor.md) */
        return raw(nr, a);
    }
    if (passes(nr))
        return raw(nr, a);
    REFUSE("not supported under mig (docs/interceptor.md)");
}

/* In a vfork child (on its parent's memory, until execve): everything runs as it is but
 * execve, which keeps mig loaded under the child's own logical id. */
static long in_vfork_child(long nr, const long *a, ucontext_t *uc)
{
    if (nr == SYS_rt_sigprocmask)
        return on_rt_sigprocmask(a, uc);
    if (nr == SYS_rt_sigaction && a[0] == SIGSYS)
        return 0; /* libc's spawn child resets handlers: the trap's must stay */
    if (nr == SYS_execve) {
        char *const *env = mig_exec_env((char *const *)a[2], vfork_lpid, 0);
        return mig_sys(SYS_execve, a[0], a[1], env);
    }
    return raw(nr, a);
}

static void on_sigsys(int sig, siginfo_t *si, void *ctx)
{
    (void)sig;
    ucontext_t *uc = ctx;
    greg_t *g = uc->uc_mcontext.gregs;
    char was = mig_sel;
    mig_sel = MIG_SEL_ALLOW;
    int saved_errno = errno;
    long nr = si->si_syscall;
    mig_count_trap();
    long a[6] = {g[REG_RDI], g[REG_RSI], g[REG_RDX], g[REG_R10], g[REG_R8], g[REG_R9]};
    long r;
    if (vfork_child)
        r = in_vfork_child(nr, a, uc);
    else if (mig_busy || (mig_mode != MIG_RECORD && mig_mode != MIG_REPLAY))
        r = nr == SYS_rt_sigprocmask ? on_rt_sigprocmask(a, uc) : raw(nr, a);
    else
        r = dispatch(nr, a, uc);
    g[REG_RAX] = r;
    errno = saved_errno;
    mig_sel = was;
}
