/* mig_start.c -- the shim's set-up and the state every part of it shares.
 *
 * Owns: the mode (MIG_MODE) and barrier mode (MIG_BARRIER), the real-function table
 * (resolved once, in mig_init, which every wrapper runs first: a call can arrive before the
 * constructor), the per-thread re-entrancy count mig_busy, and attaching this process's
 * ring: created in MIG_RUN_DIR as <lpid>.ring and mapped once. The ring's file descriptor
 * is closed right after it is mapped: the app's fd numbers stay the same on the primary
 * and on a replaying backup. After exec the process keeps its ring, and a forked child
 * gets its own (mig_proc.c). */
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

#include "mig_poison.h"

struct mig_real mig_real;
enum mig_mode mig_mode;
enum mig_barrier_mode mig_barrier_mode;
MIG_TLS int mig_busy;
MIG_TLS uint32_t mig_tid;  /* this thread's logical id: 0 for a process's first thread */
unsigned mig_threads;       /* threads this process created (wrap_thread.c, mig_clone.c) */

struct mig_ring_hdr *mig_ring;
unsigned char *mig_ring_data;
uint64_t mig_ring_cap;       /* bytes of mig_ring_data as mapped (the header's copy is shared) */
static int ready;            /* 0: not yet, 1: initialising, 2: done */
static char run_dir[512];

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

/* Tell the recorder agent that a ring is there, so that it need not look for new rings on
 * a timer: RUN_DIR/agent.bell, one page the agent made and waits on
 * (mig/ring/doorbell.py); its first word is bumped and woken. No such file (a replica's run
 * folder, the shim under a test): nothing to tell. */
static void ring_agent_bell(void)
{
    static const char name[] = "/agent.bell";
    char path[sizeof run_dir + sizeof name];
    size_t dlen = strlen(run_dir);
    memcpy(path, run_dir, dlen);
    memcpy(path + dlen, name, sizeof name);
    int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return;
    struct stat st;
    long m = -1;
    if (syscall(SYS_fstat, fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size >= 4096)
        m = syscall(SYS_mmap, NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    syscall(SYS_close, fd);
    if (m < 0 && m > -4096)
        return;
    uint32_t *word = (uint32_t *)m;
    __atomic_fetch_add(word, 1, __ATOMIC_SEQ_CST);
    mig_futex(word, FUTEX_WAKE, 0x7fffffff, NULL);
    syscall(SYS_munmap, m, 4096);
}

static void open_ring(const char *lpid, const char *parent)
{
    char path[640];
    size_t llen = strlen(lpid);
    if (mig_ring_path(lpid, path, sizeof path) != 0 || llen >= sizeof mig_ring->lpid)
        mig_die("MIG_RUN_DIR or logical process id too long");

    uint64_t capacity = MIG_RING_DEFAULT_CAPACITY;
    const char *cap = getenv("MIG_RING_BYTES");
    if (cap && atoll(cap) >= 65536) {
        capacity = 65536;
        while (capacity < (uint64_t)atoll(cap))
            capacity <<= 1;
    }
    /* After exec the process keeps its lpid and its ring: positions and seq carry on. */
    const char *exec_env = getenv("MIG_EXEC");
    int reuse = exec_env && strcmp(exec_env, "1") == 0 && strcmp(lpid, mig_lpid()) == 0;
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
    mig_ring = map;
    mig_ring_data = (unsigned char *)map + MIG_RING_HDR;
    mig_ring_cap = capacity;
    if (reuse && mig_ring->magic == MIG_RING_MAGIC && mig_ring->capacity == capacity) {
        mig_ring->pid = (int32_t)syscall(SYS_getpid);
        __atomic_store_n(&mig_ring->state, MIG_RS_READY, __ATOMIC_RELEASE);
        return; /* (the agent was told of this ring when the process forked) */
    }
    mig_ring->magic = MIG_RING_MAGIC;
    mig_ring->version = MIG_RING_VERSION;
    mig_ring->mode = (uint32_t)mig_mode;
    mig_ring->capacity = capacity;
    mig_ring->pid = (int32_t)syscall(SYS_getpid);
    memcpy(mig_ring->lpid, lpid, llen + 1);
    mig_ring->stdin_dev = stdin_dev;
    mig_ring->stdin_ino = stdin_ino;
    size_t plen = strlen(parent);
    if (plen < sizeof mig_ring->parent_lpid)
        memcpy(mig_ring->parent_lpid, parent, plen + 1);
    __atomic_store_n(&mig_ring->state, MIG_RS_READY, __ATOMIC_RELEASE);
    ring_agent_bell();
}

/* A forked child: the parent's ring stays the parent's. Unmap it untouched, keeping what
 * the child inherits from it (the app's stdin pipe); mig_ring_attach makes the child's. */
void mig_ring_detach(void)
{
    stdin_dev = mig_ring->stdin_dev;
    stdin_ino = mig_ring->stdin_ino;
    syscall(SYS_munmap, mig_ring, MIG_RING_HDR + mig_ring->capacity);
    mig_ring = NULL;
}

void mig_ring_attach(const char *parent)
{
    open_ring(mig_lpid(), parent);
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
    mig_barrier_mode = bm && strcmp(bm, "sync") == 0    ? MIG_B_SYNC
                       : bm && strcmp(bm, "async") == 0 ? MIG_B_ASYNC
                                                        : MIG_B_OUTPUT;
    if (want == MIG_RECORD || want == MIG_REPLAY) {
        if (!dir || strlen(dir) >= sizeof run_dir)
            mig_die("MIG_MODE is set but MIG_RUN_DIR is not");
        memcpy(run_dir, dir, strlen(dir) + 1);
        mig_set_lpid(getenv("MIG_LPID"));
        mig_mode = want;
        const char *parent = getenv("MIG_PARENT_LPID");
        const char *in = getenv("MIG_STDIN");
        if (in && *in) {
            char *colon;
            stdin_dev = strtoull(in, &colon, 10);
            stdin_ino = *colon == ':' ? strtoull(colon + 1, NULL, 10) : 0;
        }
        open_ring(mig_lpid(), parent ? parent : "");
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
    if (mig_ring)
        __atomic_store_n(&mig_ring->state, MIG_RS_EXITED, __ATOMIC_RELEASE);
}

/* "mig-shim <version> <mode>": a probe for tests and `mig doctor`. */
MIG_EXPORT const char *mig_shim_version(void)
{
    static const char *names[] = {"mig-shim 0.2.0 off", "mig-shim 0.2.0 record",
                                  "mig-shim 0.2.0 replay", "mig-shim 0.2.0 live"};
    mig_init();
    return names[mig_mode];
}

const char *mig_run_dir(void)
{
    return run_dir;
}

int mig_ring_path(const char *lpid, char *path, size_t size)
{
    size_t dlen = strlen(run_dir), llen = strlen(lpid);
    if (dlen + llen + 7 >= size)
        return -1;
    memcpy(path, run_dir, dlen);
    path[dlen] = '/';
    memcpy(path + dlen + 1, lpid, llen);
    memcpy(path + dlen + 1 + llen, ".ring", 6);
    return 0;
}
