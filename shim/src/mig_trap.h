/* mig_trap.h -- what the three files of complete capture share, and nothing else includes:
 * mig_trap.c (arming, the SIGSYS handler, signal frames), mig_clone.c (threads and vfork
 * children made by a trapped clone) and wrap_syscall.c (each trapped system call by
 * number, and the vDSO's clock entries). mig.h lists what they give the rest of the shim. */
#ifndef MIG_TRAP_H
#define MIG_TRAP_H

#include <sys/prctl.h>
#include <ucontext.h>

#ifndef PR_SET_SYSCALL_USER_DISPATCH
#define PR_SET_SYSCALL_USER_DISPATCH 59
#define PR_SYS_DISPATCH_OFF 0
#define PR_SYS_DISPATCH_ON 1
#endif
#ifndef SA_RESTORER
#define SA_RESTORER 0x04000000
#endif

/* The kernel's struct sigaction (rt_sigaction), not libc's. */
struct k_sigaction {
    void *handler;
    unsigned long flags;
    void (*restorer)(void);
    uint64_t mask;
};

#define BIT(sig) (1ull << ((sig) - 1))
#define NEVER_BLOCKED (BIT(SIGSYS) | BIT(MIG_PREEMPT_SIG) | BIT(SIGKILL) | BIT(SIGSTOP))

/* The return from every signal handler the shim installs (rt_sigreturn from its text). */
void mig_restore_rt(void);

/* The trapped call `nr` with its six arguments, run as it is from the shim's text. */
static inline long mig_trap_raw(long nr, const long *a)
{
    return mig_sys(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}

/* mig_trap.c: stop the process at the trapped call `nr` (pc, sp: where it was made),
 * naming the call, the library it came from, and why. */
__attribute__((noreturn)) void mig_trap_refuse(long nr, uintptr_t pc, uintptr_t sp,
                                               const char *why);
#define REFUSE(why) mig_trap_refuse(nr, (uintptr_t)g[REG_RIP], (uintptr_t)g[REG_RSP], (why))
/* mig_trap.c: rt_sigprocmask, on the mask saved in the signal frame (the one the thread
 * returns to), with SIGSYS kept out of it. */
long mig_trap_sigprocmask(const long *a, ucontext_t *uc);

/* mig_clone.c: clone, clone3, fork and vfork (registers `g` at the call). */
long mig_trap_clone(long nr, const long *a, const greg_t *g);
/* mig_clone.c: this task is a vfork child about to exec; its trapped calls go to
 * mig_vfork_child_call. */
extern MIG_TLS char mig_vfork_child;
long mig_vfork_child_call(long nr, const long *a, ucontext_t *uc);

/* mig_trap.c: a trapped call of the app, by number, with the registers at it (uc), run as
 * the shim's state says: a vfork child's, as it is while the shim is busy or not recording
 * or replaying, else mig_trap_dispatch. From the SIGSYS handler and a patched site's stub. */
long mig_trap_call(long nr, const long *a, ucontext_t *uc);
/* wrap_syscall.c: a trapped call of the app, by number: routed to the wrapper of the same
 * call, emulated, run as it is, or refused. */
long mig_trap_dispatch(long nr, const long *a, ucontext_t *uc);
/* wrap_syscall.c: put the shim's entries in place of the vDSO's in the loader's table. */
void mig_divert_vdso(void);

#endif
