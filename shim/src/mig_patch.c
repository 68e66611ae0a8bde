/* mig_patch.c -- complete capture without a signal at libc's busy system-call sites.
 *
 * A system call the app makes outside the shim's text arrives as SIGSYS (mig_trap.c): the
 * kernel saves the thread's whole state in a signal frame, the handler runs, and
 * rt_sigreturn puts it back. That costs a microsecond or more a call, and a program that
 * makes them by the thousand (Node.js: libuv's locks and condition variables wake each
 * other through futex calls inside libc) spends a fifth of its time there. rr answers the
 * same problem by patching the system-call instructions it meets in libc with a jump into
 * its preload library; so does this file, within the process.
 *
 * A site is patched once it has trapped PATCH_AFTER times, if it is in libc's text and the
 * instructions after its syscall can run elsewhere (mig_x86.c reads them): comparisons,
 * moves, arithmetic without an operand addressed from their own place, a branch (moved as
 * a near one), a ret -- enough of them to free five bytes with the syscall's two, or a
 * ret or jmp followed by padding. In Debian 12's libc that is 512 of its 526 syscall
 * instructions. The syscall and those instructions become a jmp (and int3s) to a stub of
 * the site's own, in pages mapped within reach of libc at start-up (mig_patch_init):
 *     lea -128(%rsp),%rsp; call *entry; lea 128(%rsp),%rsp; jb trap
 *     resume: <the instructions moved>; jmp <the site's next instruction>
 *     trap: syscall; jmp resume
 * `entry` (mig_patch_entry, in the shim's text) saves the registers the kernel would keep
 * (and the FPU and vector state: XSAVE), and runs the call as the SIGSYS handler would,
 * through mig_trap.c's mig_trap_call. The few calls that need a signal frame
 * (sigprocmask, clone, sigsuspend...) return to `trap`, whose syscall instruction is
 * outside the shim's text and traps as before. The stub steps over the red zone.
 *
 * Safety. A jump into the bytes replaced would land inside the new jmp. So a site is
 * patched only when no branch mig_x86.c finds lands there: it reads every function within
 * a short branch's reach from its start, and the near branches of all of libc's text.
 * Indirect branches (switch tables) are not followed: none lands right after a system
 * call in glibc. And no other thread may run those bytes while they change, or resume in
 * the middle of them:
 *  - the patching thread runs the app's code alone: it holds the run token of a
 *    serialized process ([app] threads = "serialized"), or its process has made no other
 *    thread (a process with threads in parallel, or serialized but given up, does not
 *    patch);
 *  - the other threads are in the shim's code or in the kernel (the shim calls libc's own
 *    functions too), so each is stopped first: a signal (MIG_PREEMPT_SIG, with a cookie)
 *    holds it in its handler until the patch is written (mig_patch_stopped). A thread that
 *    does not stop within STOP_NS leaves the site unpatched;
 *  - every signal handler returns through the shim's restorer, which moves a frame that
 *    would resume inside the bytes replaced to the same point of the stub
 *    (mig_patch_fixup): the patching thread's own SIGSYS frame; a thread stopped in libc
 *    (one stopped in the kernel there has its call restarted from the syscall's address:
 *    the jmp, then the stub, which makes it as it is, its selector saying ALLOW). A child
 *    made by a trapped clone has no frame: it starts where mig_patch_resume says
 *    (mig_clone.c), after its site was patched at that very clone too.
 * The shim's release thread of held outputs blocks every signal; it makes its system
 * calls from the shim's text (mig_hold.c) and is not stopped.
 *
 * A libc page is made writable for the write and stays executable throughout; a page of
 * stubs is executable and read-only but while a stub is written. Patching changes nothing a record or a replay sees: a process on
 * each host patches its own sites as they trap. MIG_PATCH=0 in the app's environment
 * turns it off (bench/httpserver_bench.py compares).
 *
 * Rules: mig_patch_try runs in the SIGSYS handler and mig_patch_stopped in the preemption
 * signal's; mig_patch_fixup runs in the restorer of every handler, and mig_patch_call
 * from the app's code with its registers saved: system calls through mig_sys only,
 * nothing allocated with malloc, no libc call on the way (a libc page may be writable). */
#define MIG_CORE
#include "mig.h"

#include <cpuid.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>

#include "mig_trap.h"
#include "mig_x86.h"
#include "mig_poison.h"

#define SITES 1024          /* sites looked at, patched or not (a hash: at most half full) */
#define STUB_BYTES 64       /* one stub: code (at most 50 bytes), then its site at 56 */
#define STUB_PAGE 4096
#define STUB_PAGES 16       /* 1,008 stubs: more than the sites that may be patched */
#define PATCH_AFTER 8       /* traps at a site before it is patched (not for a rare call) */
#define STOP_NS 50000000ull /* the longest the other threads may take to stop */
#define MAX_TASKS 1024
#define STOP_COOKIE 0x6d69677000000000ull /* "migp" in si_value's high bytes */

/* LEFT: looked at, stays as it is; COUNTING: trapped fewer than PATCH_AFTER times */
enum { EMPTY = 0, PATCHED = 1, LEFT = 2, COUNTING = 3 };

#define MOVED 4 /* instructions moved into a stub, at most */

static struct site {
    uintptr_t at;     /* the address after the syscall instruction */
    uintptr_t resume; /* its stub's resume */
    uint32_t state;
    uint32_t traps;
    uint8_t n;            /* instructions moved */
    uint8_t from[MOVED];  /* each one's offset from `at` ... */
    uint8_t to[MOVED];    /* ... and in the stub, from `resume` */
} sites[SITES];
static uint32_t n_patched;
int mig_patch_enabled;
static uintptr_t libc_lo, libc_hi; /* libc's executable segment */
/* The state components XSAVE saves, the XCR0 of the CPU the process started on (restored
 * from a checkpoint on a CPU with more, it keeps to those: libc's functions, chosen at
 * start-up, use no others), and the bytes they take, rounded to 64 (mig_patch_entry) */
__attribute__((used, visibility("hidden"))) uint64_t mig_xsave_mask, mig_xsave_bytes;
static const void *libc_eh;         /* its .eh_frame_hdr */
static unsigned char *stubs;        /* STUB_PAGES of stubs (the entry's address first), */
static size_t stubs_used;           /* ... the bytes used */
static uint32_t busy;               /* one patcher at a time */
static uint32_t stop_gen, stop_acks;
uint32_t mig_vforks;                /* vfork children running on this process's memory */
static int tasks[MAX_TASKS], listed[MAX_TASKS]; /* (the patcher's: one at a time) */
static char dents[4096] __attribute__((aligned(8)));

/* ------------------------------------------------------------ the entry from a stub */

/* mig_patch_entry: [rsp] is the return into the stub; every register is the app's at
 * its syscall instruction. s[0] is the number (then the result), s[1..6] the arguments. */
__asm__(".text\n"
        ".globl mig_patch_entry\n"
        ".hidden mig_patch_entry\n"
        ".type mig_patch_entry,@function\n"
        "mig_patch_entry:\n"
        "    push %rbp\n"
        "    mov %rsp, %rbp\n"
        "    push %r9\n"
        "    push %r8\n"
        "    push %r10\n"
        "    push %rdx\n"
        "    push %rsi\n"
        "    push %rdi\n"
        "    push %rax\n"
        "    mov %rsp, %rdi\n"
        "    mov 8(%rbp), %rsi\n"
        "    and $-64, %rsp\n"
        "    sub mig_xsave_bytes(%rip), %rsp\n"
        /* XRSTOR wants the header's reserved bytes zero; XSAVE writes only its first 8 */
        "    movq $0, 512(%rsp)\n"
        "    movq $0, 520(%rsp)\n"
        "    movq $0, 528(%rsp)\n"
        "    movq $0, 536(%rsp)\n"
        "    movq $0, 544(%rsp)\n"
        "    movq $0, 552(%rsp)\n"
        "    movq $0, 560(%rsp)\n"
        "    movq $0, 568(%rsp)\n"
        "    mov mig_xsave_mask(%rip), %eax\n"
        "    mov mig_xsave_mask+4(%rip), %edx\n"
        "    xsave64 (%rsp)\n"
        "    call mig_patch_call\n"
        "    mov %eax, %r11d\n"
        "    mov mig_xsave_mask(%rip), %eax\n"
        "    mov mig_xsave_mask+4(%rip), %edx\n"
        "    xrstor64 (%rsp)\n"
        "    lea -56(%rbp), %rsp\n"
        "    pop %rax\n"
        "    pop %rdi\n"
        "    pop %rsi\n"
        "    pop %rdx\n"
        "    pop %r10\n"
        "    pop %r8\n"
        "    pop %r9\n"
        "    pop %rbp\n"
        /* CF set (the stub's jb): the call was not made here, the stub traps it */
        "    cmp $1, %r11d\n"
        "    ret\n"
        ".size mig_patch_entry, .-mig_patch_entry\n");
void mig_patch_entry(void);

/* Calls that need the signal frame the trap gives them: the mask the thread returns to
 * (sigprocmask, sigsuspend), its registers (a clone's child starts from them). Made by
 * the shim itself (its release thread's pthread_create), they are not made here either:
 * a thread's child would start in mig_sys on an empty stack and return to nowhere, so the
 * stub's own syscall instruction makes them, as the app's code would have. */
static int needs_frame(long nr)
{
    switch (nr) {
    case SYS_rt_sigprocmask: case SYS_rt_sigreturn: case SYS_rt_sigsuspend: case SYS_pause:
    case SYS_clone: case SYS_clone3: case SYS_fork: case SYS_vfork:
        return 1;
    }
    return 0;
}

__attribute__((used, visibility("hidden"))) int mig_patch_call(long *s, uintptr_t ret);
__attribute__((used, visibility("hidden"))) int mig_patch_call(long *s, uintptr_t ret)
{
    long nr = s[0];
    if (needs_frame(nr))
        return 0;
    if (mig_sel != MIG_SEL_BLOCK) { /* the shim's own call into libc: as it is */
        s[0] = mig_sys(nr, s[1], s[2], s[3], s[4], s[5], s[6]);
        return 1;
    }
    if (mig_vfork_child)
        return 0;
    mig_sel = MIG_SEL_ALLOW;
    int saved_errno = errno;
    if (mig_ring)
        __atomic_fetch_add(&mig_ring->patched, 1, __ATOMIC_RELAXED);
    long a[6] = {s[1], s[2], s[3], s[4], s[5], s[6]};
    /* the registers a refusal names (mig_trap_refuse): where the call was made */
    ucontext_t uc;
    greg_t *g = uc.uc_mcontext.gregs;
    memset(g, 0, sizeof uc.uc_mcontext.gregs);
    uintptr_t stub = ret - 11; /* after the lea (5 bytes) and the call (6) */
    g[REG_RIP] = (greg_t) * (const uintptr_t *)(stub + 56);
    /* the app's: over the 7 registers saved, rbp, the return into the stub, and the red
     * zone the stub stepped over */
    g[REG_RSP] = (greg_t)((uintptr_t)s + 7 * 8 + 8 + 8 + 128);
    g[REG_RAX] = nr;
    g[REG_RDI] = a[0];
    g[REG_RSI] = a[1];
    g[REG_RDX] = a[2];
    g[REG_R10] = a[3];
    g[REG_R8] = a[4];
    g[REG_R9] = a[5];
    s[0] = mig_trap_call(nr, a, &uc); /* (not a vfork child's, nor a sigprocmask: above) */
    errno = saved_errno;
    mig_sel = MIG_SEL_BLOCK;
    return 1;
}

/* ------------------------------------------------------------ set-up */

static int find_libc(struct dl_phdr_info *info, size_t size, void *unused)
{
    (void)size;
    (void)unused;
    const char *name = info->dlpi_name;
    const char *base = name ? strrchr(name, '/') : NULL;
    if (!base || strncmp(base, "/libc.so.", 9) != 0)
        return 0;
    const void *eh = NULL;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
            libc_lo = info->dlpi_addr + ph->p_vaddr;
            libc_hi = libc_lo + ph->p_memsz;
        } else if (ph->p_type == PT_GNU_EH_FRAME) {
            eh = (const void *)(info->dlpi_addr + ph->p_vaddr);
        }
    }
    if (!eh)
        libc_hi = 0; /* (its functions cannot be read: no patching) */
    libc_eh = eh;
    return 1;
}

static unsigned char *reserve(size_t len);

void mig_patch_init(void)
{
    const char *on = getenv("MIG_PATCH");
    if (on && strcmp(on, "0") == 0)
        return;
    dl_iterate_phdr(find_libc, NULL);
    if (!libc_hi)
        return;
    /* The stubs' pages and the map of libc's branches are mapped now, before the app
     * runs, whatever this CPU can do: the app's address space is the same on every host
     * (mig runs it without ASLR), and a mapping made at the first patch would move the
     * app's later ones on a host that patched and not on one that could not. */
    size_t map = (mig_x86_map_bytes(libc_lo, libc_hi) + STUB_PAGE - 1) & ~(size_t)(STUB_PAGE - 1);
    unsigned char *r = reserve(STUB_PAGE * STUB_PAGES + map);
    if (!r)
        return;
    uintptr_t entry = (uintptr_t)mig_patch_entry;
    memcpy(r, &entry, 8);
    mig_sys(SYS_mprotect, r, STUB_PAGE * STUB_PAGES, PROT_READ | PROT_EXEC);
    mig_preempt_exclude(r, STUB_PAGE * STUB_PAGES + map); /* (the shim's, not the app's) */
    mig_x86_libc(libc_lo, libc_hi, libc_eh, (uint64_t *)(r + STUB_PAGE * STUB_PAGES));
    stubs = r;
    stubs_used = 16;
    unsigned a, b, c, d;
    /* XSAVE, and enabled by the kernel (OSXSAVE) */
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 26)) || !(c & (1u << 27)))
        return;
    if (!__get_cpuid_count(0xd, 0, &a, &b, &c, &d) || b < 576)
        return;
    mig_xsave_bytes = ((uint64_t)b + 63) & ~63ull; /* (the size for XCR0's components) */
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    mig_xsave_mask = (uint64_t)hi << 32 | lo;
    mig_patch_enabled = 1;
}

/* ------------------------------------------------------------ the table */

static struct site *slot(uintptr_t at)
{
    uint32_t i = (uint32_t)((at * 0x9e3779b97f4a7c15ull) >> 54) & (SITES - 1);
    for (uint32_t n = 0; n < SITES; n++, i = (i + 1) & (SITES - 1)) {
        uintptr_t seen = __atomic_load_n(&sites[i].at, __ATOMIC_ACQUIRE);
        if (seen == at || seen == 0)
            return &sites[i];
    }
    return NULL;
}

/* Where a thread about to resume at rip resumes instead: in the stub, when rip is right
 * after a patched syscall (or after some of the instructions the stub runs in its place). */
uintptr_t mig_patch_resume(uintptr_t rip)
{
    if (!__atomic_load_n(&n_patched, __ATOMIC_ACQUIRE) || rip < libc_lo || rip >= libc_hi)
        return rip;
    for (int back = 0; back < 16; back++) {
        struct site *s = slot(rip - (uintptr_t)back);
        if (!s || s->at != rip - (uintptr_t)back)
            continue;
        if (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) != PATCHED)
            return rip;
        for (int i = 0; i < s->n; i++)
            if (s->from[i] == back)
                return s->resume + s->to[i];
        return rip;
    }
    return rip;
}

/* The restorer of every signal handler: a frame resumes where mig_patch_resume says. */
__attribute__((used, visibility("hidden"))) void mig_patch_fixup(ucontext_t *uc);
__attribute__((used, visibility("hidden"))) void mig_patch_fixup(ucontext_t *uc)
{
    greg_t *rip = &uc->uc_mcontext.gregs[REG_RIP];
    *rip = (greg_t)mig_patch_resume((uintptr_t)*rip);
}

/* ------------------------------------------------------------ which sites */

/* The instructions after a syscall that a stub runs instead. They must run the same
 * anywhere: no operand addressed from their own place; a relative branch moves as a near
 * one to the same destination. */
struct moved {
    int n, bytes;        /* instructions, and their bytes at the site */
    int len[MOVED], kind[MOVED];
    uintptr_t target[MOVED];
};

/* Is [p, end) the multi-byte nops (or int3s) an assembler pads with? */
static int padding(const unsigned char *p, const unsigned char *end)
{
    while (p < end) {
        if (*p == 0xcc || *p == 0x90) {
            p++;
            continue;
        }
        while (p < end && (*p == 0x66 || *p == 0x2e))
            p++;
        if (p < end && *p == 0x90) {
            p++;
            continue;
        }
        if (p + 3 > end || p[0] != 0x0f || p[1] != 0x1f)
            return 0;
        switch (p[2]) {
        case 0x00: p += 3; break;
        case 0x40: p += 4; break;
        case 0x44: p += 5; break;
        case 0x80: p += 7; break;
        case 0x84: p += 8; break;
        default: return 0;
        }
    }
    return p == end;
}

/* The instructions after the syscall at p[-2], until five bytes from the syscall's are
 * free for the jmp -- or until a ret or jmp, after which padding must give the rest. */
static int plan(const unsigned char *p, struct moved *mv)
{
    mv->n = mv->bytes = 0;
    while (mv->bytes < 3) {
        struct mig_x86 in;
        if (mv->n == MOVED || !mig_x86_insn(p + mv->bytes, p + 16, &in) || in.riprel ||
            (in.kind != MIG_X86_PLAIN && in.kind != MIG_X86_JCC && in.kind != MIG_X86_JMP &&
             in.kind != MIG_X86_RET))
            return 0;
        if ((in.kind == MIG_X86_RET && in.len != 1) || (in.kind != MIG_X86_PLAIN && in.prefixed))
            return 0;
        mv->len[mv->n] = in.len;
        mv->kind[mv->n] = in.kind;
        mv->target[mv->n++] = in.target;
        mv->bytes += in.len;
        if (in.kind == MIG_X86_RET || in.kind == MIG_X86_JMP) {
            /* nothing runs after it: padding up to the next 16 bytes must hold the rest */
            const unsigned char *end = (const unsigned char *)(((uintptr_t)p + mv->bytes + 15) &
                                                               ~15ull);
            if (mv->bytes < 3 && (end < p + 3 || !padding(p + mv->bytes, end)))
                return 0;
            break;
        }
    }
    return 1;
}

/* ------------------------------------------------------------ stubs */

static int reach(uintptr_t a, uintptr_t b)
{
    int64_t d = (int64_t)a - (int64_t)b;
    return d > -0x7f000000ll && d < 0x7f000000ll;
}

/* `len` bytes mapped within a jmp's reach of all of libc: below it, then above. */
static unsigned char *reserve(size_t len)
{
    for (int64_t step = 1; step < 1024; step++) {
        for (int side = 0; side < 2; side++) {
            uintptr_t want = side ? ((libc_hi + 0xfffff) & ~0xfffffull) + (uintptr_t)step * 0x100000
                                  : (libc_lo & ~0xfffffull) - (uintptr_t)step * 0x100000;
            if (!reach(want, libc_lo) || !reach(want + len, libc_hi))
                continue;
            long m = mig_sys(SYS_mmap, want, len, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
            if (m == (long)want)
                return (unsigned char *)m;
            if (m > 0 || m < -4095)
                mig_sys(SYS_munmap, m, len); /* (a kernel that took the hint loosely) */
        }
    }
    return NULL;
}

static void put32(unsigned char *p, int64_t v)
{
    int32_t x = (int32_t)v;
    memcpy(p, &x, 4);
}

/* The stub of the site after-syscall `at`, running the instructions `mv` there; their
 * places in it go to `site`. Returns its resume, 0 when the stubs' pages are full. */
static uintptr_t write_stub(uintptr_t at, const struct moved *mv, struct site *site)
{
    if (stubs_used % STUB_PAGE + STUB_BYTES > STUB_PAGE) /* (a stub is within a page) */
        stubs_used = (stubs_used + STUB_PAGE - 1) & ~(size_t)(STUB_PAGE - 1);
    if (!stubs || stubs_used + STUB_BYTES > STUB_PAGE * STUB_PAGES)
        return 0;
    unsigned char *page = stubs + (stubs_used & ~(size_t)(STUB_PAGE - 1));
    if (mig_sys(SYS_mprotect, page, STUB_PAGE, PROT_READ | PROT_WRITE | PROT_EXEC) != 0)
        return 0;
    unsigned char *s = stubs + stubs_used;
    unsigned char *p = s;
    static const unsigned char lea_down[] = {0x48, 0x8d, 0x64, 0x24, 0x80};
    static const unsigned char lea_up[] = {0x48, 0x8d, 0xa4, 0x24, 0x80, 0, 0, 0};
    memcpy(p, lea_down, 5);
    p += 5;
    p[0] = 0xff; /* call *entry(%rip) */
    p[1] = 0x15;
    put32(p + 2, (int64_t)(uintptr_t)stubs - (int64_t)(uintptr_t)(p + 6));
    p += 6;
    memcpy(p, lea_up, 8);
    p += 8;
    unsigned char *jb = p;
    p += 2;
    unsigned char *resume = p;
    const unsigned char *o = (const unsigned char *)at;
    int last = MIG_X86_PLAIN;
    for (int i = 0; i < mv->n; i++) {
        site->from[i] = (uint8_t)(o - (const unsigned char *)at);
        site->to[i] = (uint8_t)(p - resume);
        last = mv->kind[i];
        if (last == MIG_X86_JCC || last == MIG_X86_JMP) { /* moved as a near branch */
            uintptr_t dest = mv->target[i];
            if (last == MIG_X86_JCC) { /* the condition: 7x (short) or 0f 8x (near) */
                p[0] = 0x0f;
                p[1] = (unsigned char)(0x80 | ((o[0] == 0x0f ? o[1] : o[0]) & 0x0f));
                p += 2;
            } else {
                *p++ = 0xe9;
            }
            put32(p, (int64_t)dest - (int64_t)(uintptr_t)(p + 4));
            p += 4;
        } else {
            memcpy(p, o, (size_t)mv->len[i]);
            p += mv->len[i];
        }
        o += mv->len[i];
    }
    site->n = (uint8_t)mv->n;
    if (last != MIG_X86_RET && last != MIG_X86_JMP) {
        p[0] = 0xe9; /* jmp back to the instruction after those moved */
        put32(p + 1, (int64_t)(at + (uintptr_t)mv->bytes) - (int64_t)(uintptr_t)(p + 5));
        p += 5;
    }
    jb[0] = 0x72; /* jb trap */
    jb[1] = (unsigned char)(p - (jb + 2));
    p[0] = 0x0f; /* trap: syscall (outside the shim's text: trapped) */
    p[1] = 0x05;
    p[2] = 0xeb; /* jmp resume */
    p[3] = (unsigned char)(int8_t)(resume - (p + 4));
    memcpy(s + 56, &at, 8);
    stubs_used += STUB_BYTES;
    mig_sys(SYS_mprotect, page, STUB_PAGE, PROT_READ | PROT_EXEC); /* (not the app's memory
                                                                    * to hash: mig_preempt.c) */
    return (uintptr_t)resume;
}

/* ------------------------------------------------------------ stopping the others */

static int list_tasks(int self, int *out, int max)
{
    long fd = mig_sys(SYS_openat, AT_FDCWD, "/proc/self/task",
                      O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int n = 0;
    for (;;) {
        long got = mig_sys(SYS_getdents64, fd, dents, sizeof dents);
        if (got <= 0)
            break;
        for (long off = 0; off < got;) {
            struct {
                uint64_t ino;
                int64_t off;
                unsigned short reclen;
                unsigned char type;
                char name[];
            } *e = (void *)(dents + off);
            int tid = 0;
            for (const char *c = e->name; *c >= '0' && *c <= '9'; c++)
                tid = tid * 10 + (*c - '0');
            if (tid > 0 && tid != self && tid != mig_hold_ktid) {
                if (n == max) {
                    n = -1;
                    break;
                }
                out[n++] = tid;
            }
            off += e->reclen;
        }
        if (n < 0)
            break;
    }
    mig_sys(SYS_close, fd);
    return n;
}

/* In the preemption signal's handler: is it a request to stop while a site is patched?
 * Then hold here until the patch is written. */
int mig_patch_stopped(const siginfo_t *si)
{
    uint64_t v = (uint64_t)(uintptr_t)si->si_value.sival_ptr;
    if (si->si_code != SI_QUEUE || (v >> 32) != (STOP_COOKIE >> 32) ||
        si->si_pid != (pid_t)mig_sys(SYS_getpid))
        return 0;
    uint32_t gen = (uint32_t)v;
    if (__atomic_load_n(&stop_gen, __ATOMIC_ACQUIRE) != gen)
        return 1; /* late: that patch is over */
    __atomic_fetch_add(&stop_acks, 1, __ATOMIC_ACQ_REL);
    mig_sys(SYS_futex, &stop_acks, FUTEX_WAKE, 1, NULL, NULL, 0);
    while (__atomic_load_n(&stop_gen, __ATOMIC_ACQUIRE) == gen)
        mig_sys(SYS_futex, &stop_gen, FUTEX_WAIT, gen, NULL, NULL, 0);
    return 1;
}

static void restart_others(void)
{
    __atomic_fetch_add(&stop_gen, 1, __ATOMIC_ACQ_REL);
    mig_sys(SYS_futex, &stop_gen, FUTEX_WAKE, 0x7fffffff, NULL, NULL, 0);
}

/* Stop every other thread of the process in its handler; 0 (all restarted) if one does
 * not come within STOP_NS. */
static int stop_others(void)
{
    int self = (int)mig_sys(SYS_gettid);
    int pid = (int)mig_sys(SYS_getpid);
    uint32_t gen = __atomic_load_n(&stop_gen, __ATOMIC_ACQUIRE);
    __atomic_store_n(&stop_acks, 0, __ATOMIC_RELEASE);
    int sent = 0;
    uint64_t until = mig_monotonic_ns() + STOP_NS;
    for (int round = 0; round < 4; round++) {
        int *now = listed;
        int n = list_tasks(self, now, MAX_TASKS);
        if (n < 0)
            goto fail;
        int added = 0;
        for (int i = 0; i < n; i++) {
            int known = 0;
            for (int j = 0; j < sent && !known; j++)
                known = tasks[j] == now[i];
            if (known)
                continue;
            if (sent == MAX_TASKS)
                goto fail;
            siginfo_t si;
            memset(&si, 0, sizeof si);
            si.si_signo = MIG_PREEMPT_SIG;
            si.si_code = SI_QUEUE;
            si.si_pid = pid;
            si.si_value.sival_ptr = (void *)(uintptr_t)(STOP_COOKIE | gen);
            if (mig_sys(SYS_rt_tgsigqueueinfo, pid, now[i], MIG_PREEMPT_SIG, &si) != 0)
                continue; /* gone */
            tasks[sent++] = now[i];
            added++;
        }
        for (;;) {
            uint32_t acks = __atomic_load_n(&stop_acks, __ATOMIC_ACQUIRE);
            if (acks >= (uint32_t)sent)
                break;
            uint64_t t = mig_monotonic_ns();
            if (t >= until)
                goto fail;
            struct timespec slice = {0, 1000000};
            mig_sys(SYS_futex, &stop_acks, FUTEX_WAIT, acks, &slice, NULL, 0);
        }
        if (!added && round)
            return 1; /* nobody new since the last look */
    }
fail:
    restart_others();
    return 0;
}

/* ------------------------------------------------------------ patching */

static int write_site(uintptr_t from, const unsigned char *bytes, size_t len)
{
    uintptr_t lo = from & ~4095ull, hi = (from + len + 4095) & ~4095ull;
    if (mig_sys(SYS_mprotect, lo, hi - lo, PROT_READ | PROT_WRITE | PROT_EXEC) != 0)
        return 0;
    for (size_t i = 0; i < len; i++)
        ((volatile unsigned char *)from)[i] = bytes[i];
    mig_sys(SYS_mprotect, lo, hi - lo, PROT_READ | PROT_EXEC);
    return 1;
}

/* May this thread patch now: it is the only one running the app's code (the token's
 * holder, or the thread of a process that has made no other: mig_threads counts them
 * from before they run). */
static int alone(void)
{
    return (mig_serial_alone() || !__atomic_load_n(&mig_threads, __ATOMIC_ACQUIRE)) &&
           !mig_busy && !mig_vfork_child &&
           !__atomic_load_n(&mig_vforks, __ATOMIC_ACQUIRE) &&
           (mig_mode == MIG_RECORD || mig_mode == MIG_REPLAY);
}

void mig_patch_try(uintptr_t at)
{
    if (at < libc_lo + 2 || at + 16 > libc_hi || !alone())
        return;
    if (__atomic_exchange_n(&busy, 1, __ATOMIC_ACQUIRE))
        return;
    struct site *s = slot(at);
    if (!s || (s->at == at && s->state != COUNTING))
        goto out; /* patched, left, or the table is full */
    if (s->at != at) {
        if (2 * (n_patched + 1) > SITES)
            goto out;
        s->state = COUNTING;
        s->traps = 0;
        __atomic_store_n(&s->at, at, __ATOMIC_RELEASE);
    }
    if (++s->traps < PATCH_AFTER)
        goto out;
    const unsigned char *p = (const unsigned char *)at;
    struct moved mv = {0};
    int ok = p[-2] == 0x0f && p[-1] == 0x05 && plan(p, &mv);
    size_t len = ok && mv.bytes < 3 ? 5 : (size_t)(2 + (ok ? mv.bytes : 0));
    if (!ok || !mig_x86_safe(at - 2, at - 2 + len)) {
        s->state = LEFT;
        goto out;
    }
    if (!stop_others()) { /* a thread did not stop: the site stays as it is */
        s->state = LEFT;
        goto out;
    }
    uintptr_t resume = write_stub(at, &mv, s);
    unsigned char jmp[16];
    if (resume) {
        uintptr_t stub = resume - 21;
        jmp[0] = 0xe9;
        put32(jmp + 1, (int64_t)stub - (int64_t)(at - 2 + 5));
        for (size_t i = 5; i < len; i++)
            jmp[i] = 0xcc;
    }
    s->resume = resume;
    if (resume && write_site(at - 2, jmp, len)) {
        __atomic_store_n(&s->state, PATCHED, __ATOMIC_RELEASE);
        __atomic_fetch_add(&n_patched, 1, __ATOMIC_RELEASE);
    } else {
        s->state = LEFT;
    }
    restart_others();
out:
    __atomic_store_n(&busy, 0, __ATOMIC_RELEASE);
}

void mig_patch_after_fork(void)
{
    busy = 0;
    mig_vforks = 0;
    stop_acks = 0;
}
