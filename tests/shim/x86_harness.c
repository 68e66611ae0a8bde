/* x86_harness.c -- shim/src/mig_x86.c run on this machine's libc, for
 * tests/shim/test_x86.py. Prints, with addresses as in libc's file (objdump's):
 *   F start end ok      each function of libc's unwind table, read from start to the next
 *                       function's start (ok 1: every instruction known), then
 *   I addr              each instruction read;
 *   S addr len safe     for each address on stdin (a syscall instruction, as objdump saw
 *                       it) and len 5..9: may [addr, addr+len) be replaced (mig_x86_safe).
 * Build: gcc -O1 -I shim/src -I shim/build -o x86_harness tests/shim/x86_harness.c
 *        shim/src/mig_x86.c -ldl */
#define _GNU_SOURCE
#include <elf.h>
#include <link.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "mig_x86.h"

/* mig_x86.c's only outside call: the shim's raw system call. */
long mig_sys(long nr, ...)
{
    va_list ap;
    va_start(ap, nr);
    long a[6];
    for (int i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);
    long r = syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    return r == -1 ? -1 : r;
}

static uintptr_t base, lo, hi;
static const unsigned char *eh;

static int find(struct dl_phdr_info *info, size_t size, void *unused)
{
    (void)size;
    (void)unused;
    const char *slash = info->dlpi_name ? strrchr(info->dlpi_name, '/') : NULL;
    if (!slash || strncmp(slash, "/libc.so.", 9) != 0)
        return 0;
    base = info->dlpi_addr;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
            lo = base + ph->p_vaddr;
            hi = lo + ph->p_memsz;
        } else if (ph->p_type == PT_GNU_EH_FRAME) {
            eh = (const unsigned char *)(base + ph->p_vaddr);
        }
    }
    return 1;
}

int main(void)
{
    dl_iterate_phdr(find, NULL);
    if (!lo || !eh)
        return 2;
    mig_x86_libc(lo, hi, eh, calloc(1, mig_x86_map_bytes(lo, hi)));
    uint32_t count;
    memcpy(&count, eh + 8, 4);
    const int32_t *table = (const int32_t *)(eh + 12);
    for (uint32_t f = 0; f < count; f++) {
        uintptr_t start = (uintptr_t)(eh + table[2 * f]);
        uintptr_t end = f + 1 < count ? (uintptr_t)(eh + table[2 * (f + 1)]) : hi;
        if (start < lo || end > hi || end <= start)
            continue;
        uintptr_t pc = start;
        struct mig_x86 in;
        while (pc < end && mig_x86_insn((const unsigned char *)pc, (const unsigned char *)end,
                                        &in)) {
            printf("I %lx\n", (unsigned long)(pc - base));
            pc += (uintptr_t)in.len;
        }
        printf("F %lx %lx %d\n", (unsigned long)(start - base), (unsigned long)(end - base),
               pc == end);
    }
    unsigned long site;
    while (scanf("%lx", &site) == 1)
        for (int len = 5; len <= 9; len++)
            printf("S %lx %d %d\n", site, len, mig_x86_safe(base + site, base + site + len));
    return 0;
}
