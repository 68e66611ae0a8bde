/* mig_clone.c -- threads and child processes made by a trapped clone, clone3, fork or
 * vfork, however the app made them (pthread_create through its symbol or through dlsym, a
 * library's own thread, posix_spawn inside libc, a raw clone).
 *
 * A thread gets its logical id here, at the clone: the THREAD_CREATE record made by its
 * creator orders it in the creating thread's log. The trapped clone runs through
 * mig_clone_stub, whose child side (mig_clone_child) gives the thread its id and arms it
 * before the thread runs any code of its own. A vfork child on its own stack (system,
 * popen) is recorded as a SPAWN and runs only until its execve, which keeps mig loaded
 * under the child's own logical id. A fork is recorded by wrap_proc.c.
 *
 * Rules (those of mig_trap.c): runs inside the SIGSYS handler; system calls only through
 * mig_sys, no lock libc could hold, no allocation. */
#define MIG_CORE
#include "mig.h"

#include <linux/futex.h>
#include <linux/sched.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>

#include "mig_trap.h"
#include "mig_poison.h"

MIG_TLS char mig_vfork_child;      /* this task is a vfork child about to exec */
static char vfork_lpid[64];         /* its logical id (its parent waits meanwhile) */

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

__attribute__((used)) void mig_clone_child(struct clone_slot *s, struct regs *dest);
__attribute__((used)) void mig_clone_child(struct clone_slot *s, struct regs *dest)
{
    *dest = s->regs;
    if (!s->thread) {
        /* a vfork child shares its parent's memory and thread storage; the parent's
         * thread waits until this child has exec'd or exited */
        mig_vfork_child = 1;
        dest->rip = mig_patch_resume(dest->rip); /* (no site is patched meanwhile) */
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
    /* a site patched since the clone: the child resumes in its stub (with the token, no
     * other can be patched before it runs) */
    dest->rip = mig_patch_resume(dest->rip);
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
    mig_fd_shared(); /* the program started may hold this process's eventfds */
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
        __atomic_fetch_add(&mig_vforks, 1, __ATOMIC_ACQ_REL);
        r = stub(nr, a, s);
        __atomic_fetch_sub(&mig_vforks, 1, __ATOMIC_ACQ_REL);
        if (r > 0)
            mig_remember_child(recorded, (pid_t)r);
        r = recorded;
    } else {
        __atomic_fetch_add(&mig_vforks, 1, __ATOMIC_ACQ_REL);
        r = stub(nr, a, s);
        __atomic_fetch_sub(&mig_vforks, 1, __ATOMIC_ACQ_REL);
        pid_t pid = r > 0 ? (pid_t)r : 0;
        c.result = r > 0 ? 0 : -r;
        c.payload = &pid;
        c.payload_len = r > 0 ? sizeof pid : 0;
        mig_record(&c);
    }
    mig_vfork_child = 0; /* the child has exec'd or exited: this thread storage is ours again */
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

long mig_trap_clone(long nr, const long *a, const greg_t *g)
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

/* In a vfork child (on its parent's memory, until execve): everything runs as it is but
 * execve, which keeps mig loaded under the child's own logical id. */
long mig_vfork_child_call(long nr, const long *a, ucontext_t *uc)
{
    if (nr == SYS_rt_sigprocmask)
        return mig_trap_sigprocmask(a, uc);
    if (nr == SYS_rt_sigaction && a[0] == SIGSYS)
        return 0; /* libc's spawn child resets handlers: the trap's must stay */
    if (nr == SYS_execve) {
        char *const *env = mig_exec_env((char *const *)a[2], vfork_lpid, 0);
        mig_sched_unpin(); /* this child's own mask: its parent stays pinned */
        return mig_sys(SYS_execve, a[0], a[1], env);
    }
    return mig_trap_raw(nr, a);
}
