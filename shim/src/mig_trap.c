/* mig_trap.c -- complete capture: every system call the app makes outside the shim's own
 * code is trapped, and arrives here, whoever makes it.
 *
 * The symbol wrappers (wrap_*.c) are the fast path. Everything else -- libc's internal
 * calls (stdio's reads, getaddrinfo), functions reached through dlsym(RTLD_NEXT), raw
 * syscall() -- is caught by Linux Syscall User Dispatch: a thread arms it once (prctl),
 * naming the shim's text as the only place system calls may come from freely and a
 * selector byte of its own (mig_sel). The byte says BLOCK while the app's code runs and
 * ALLOW while the shim's does (MIG_GATE in every wrapper), because the shim reaches the
 * kernel through libc too. A blocked system call arrives as SIGSYS; on_sigsys hands it to
 * wrap_syscall.c, which routes it to the wrapper of the same call, emulates it, runs it
 * as it is, or refuses it by name (mig_trap_refuse, here) and stops the process.
 *
 * This file owns the machinery: the shim's own syscall instruction (mig_sys) and signal
 * restorer, arming, the SIGSYS handler, and the signal masks and handlers the app sets
 * (SIGSYS is kept out of every mask, and the app cannot take it over). Clones are
 * mig_clone.c's; the vDSO's clock entries are wrap_syscall.c's.
 *
 * Rules of this file: it runs inside a signal handler that can interrupt libc anywhere;
 * it makes system calls only through mig_sys (the shim's own syscall instruction),
 * takes no lock libc could hold, and allocates nothing.
 *
 * Arming is per thread: it is not inherited by clone or fork, and execve clears it. The
 * first thread arms in mig_init, a forked child in mig_child_after_fork, and a thread
 * arms at its clone (mig_clone.c), before it runs any code of its own. Signal handlers
 * return through the shim's restorer (rt_sigreturn from the shim's text), so the return
 * from a handler is never trapped. */
#define MIG_CORE
#include "mig.h"

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>

#include "mig_sysnames.h"
#include "mig_trap.h"
#include "mig_poison.h"

MIG_TLS char mig_sel;
int mig_trapping;
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
        /* the return from every signal handler the shim installs: rsp is at the frame's
         * ucontext, 16-byte aligned; a frame that would resume right after a patched
         * syscall resumes in its stub (mig_patch.c) */
        ".globl mig_restore_rt\n"
        ".hidden mig_restore_rt\n"
        ".type mig_restore_rt,@function\n"
        "mig_restore_rt:\n"
        "    mov %rsp, %rdi\n"
        "    call mig_patch_fixup\n"
        "    mov $15, %eax\n"
        "    syscall\n"
        "    hlt\n"
        ".size mig_restore_rt, .-mig_restore_rt\n");

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
void mig_trap_refuse(long nr, uintptr_t pc, uintptr_t sp, const char *why)
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

static void on_sigsys(int sig, siginfo_t *si, void *ctx);
static void on_preempt(int sig, siginfo_t *si, void *ctx);

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
                             .flags = SA_SIGINFO | SA_RESTORER | SA_NODEFER | SA_RESTART,
                             .restorer = mig_restore_rt};
    if (mig_sys(SYS_rt_sigaction, SIGSYS, &ka, NULL, 8) != 0) {
        say("mig-shim: fatal: cannot install the SIGSYS handler\n");
        mig_sys(SYS_exit_group, 86);
    }
    /* the preemption's signal: not deferred (one request or stop at a time) */
    struct k_sigaction kp = {.handler = (void *)on_preempt,
                             .flags = SA_SIGINFO | SA_RESTORER | SA_RESTART,
                             .restorer = mig_restore_rt};
    if (mig_sys(SYS_rt_sigaction, MIG_PREEMPT_SIG, &kp, NULL, 8) != 0) {
        say("mig-shim: fatal: cannot install the preemption's signal handler\n");
        mig_sys(SYS_exit_group, 86);
    }
    /* SIGSYS must never be blocked while armed: a trap then kills the process; a request
     * to preempt must find every thread */
    uint64_t unblock = BIT(SIGSYS) | BIT(MIG_PREEMPT_SIG);
    mig_sys(SYS_rt_sigprocmask, SIG_UNBLOCK, &unblock, NULL, 8);
    mig_trapping = 1;
    mig_patch_init();
    mig_divert_vdso();
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

long mig_trap_sigprocmask(const long *a, ucontext_t *uc)
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

/* Count a trapped call in the ring's header (the agent reports it). */
static void count_trap(void)
{
    if (mig_ring)
        __atomic_fetch_add(&mig_ring->traps, 1, __ATOMIC_RELAXED);
}

static void on_sigsys(int sig, siginfo_t *si, void *ctx)
{
    (void)sig;
    ucontext_t *uc = ctx;
    greg_t *g = uc->uc_mcontext.gregs;
    char was = mig_sel;
    mig_sel = MIG_SEL_ALLOW;
    int saved_errno = errno;
    if (si->si_code != SYS_USER_DISPATCH) {
        mig_sel = was; /* not a trapped call: a SIGSYS sent by someone, which is dropped */
        return;
    }
    long nr = si->si_syscall;
    count_trap();
    if (mig_patch_enabled && was == MIG_SEL_BLOCK)
        mig_patch_try((uintptr_t)g[REG_RIP]); /* (a busy site: patched, no signal) */
    long a[6] = {g[REG_RDI], g[REG_RSI], g[REG_RDX], g[REG_R10], g[REG_R8], g[REG_R9]};
    g[REG_RAX] = mig_trap_call(nr, a, uc);
    errno = saved_errno;
    mig_sel = was;
}

long mig_trap_call(long nr, const long *a, ucontext_t *uc)
{
    if (mig_vfork_child)
        return mig_vfork_child_call(nr, a, uc);
    if (mig_busy || (mig_mode != MIG_RECORD && mig_mode != MIG_REPLAY))
        return nr == SYS_rt_sigprocmask ? mig_trap_sigprocmask(a, uc) : mig_trap_raw(nr, a);
    return mig_trap_dispatch(nr, a, uc);
}

MIG_TLS int *mig_errno_at;

/* A request to a spinning holder or its stop at a breakpoint (mig_preempt.c). The thread
 * ran the app's code if its selector said so and it was not at the very start of a shim
 * handler (a trap's SIGSYS delivered just before this signal): a breakpoint armed there
 * would stop every later trap. */
static void on_preempt(int sig, siginfo_t *si, void *ctx)
{
    ucontext_t *uc = ctx;
    char was = mig_sel;
    mig_sel = MIG_SEL_ALLOW;
    /* not errno: __errno_location may be the address watched (mig_preempt.c) */
    int *err = mig_errno_at ? mig_errno_at : &errno;
    int saved_errno = *err;
    uintptr_t rip = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
    int in_app = was == MIG_SEL_BLOCK && (rip < text_lo || rip >= text_hi);
    if (mig_patch_stopped(si))
        ; /* held while a site was patched */
    else if (!mig_preempt_signal(si, uc, in_app))
        mig_signal_foreign(sig, si, ctx);
    *err = saved_errno;
    mig_sel = was;
}
