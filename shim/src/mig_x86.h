/* mig_x86.h -- mig_x86.c's reading of libc's machine code, for mig_patch.c. */
#ifndef MIG_X86_H
#define MIG_X86_H

#include <stddef.h>
#include <stdint.h>

enum { MIG_X86_PLAIN = 0, MIG_X86_JCC, MIG_X86_JMP, MIG_X86_LOOP, MIG_X86_CALL, MIG_X86_RET,
       MIG_X86_OTHER };

struct mig_x86 {
    int len;          /* bytes */
    int kind;         /* MIG_X86_*: a branch, a return, or one that must not move (OTHER) */
    int riprel;       /* an operand addressed from the instruction's own place */
    int prefixed;     /* legacy prefixes */
    uintptr_t target; /* a relative branch's destination */
};

/* The instruction at p (not reading at or past end): its length, 0 when not known. */
int mig_x86_insn(const unsigned char *p, const unsigned char *end, struct mig_x86 *in);
/* libc's text [lo, hi), its .eh_frame_hdr, and zeroed memory of mig_x86_map_bytes for
 * the map of its near branches' targets (filled at the first mig_x86_safe). */
size_t mig_x86_map_bytes(uintptr_t lo, uintptr_t hi);
void mig_x86_libc(uintptr_t lo, uintptr_t hi, const void *eh_frame_hdr, uint64_t *map);
/* May [from, to) be replaced: `from` starts an instruction of its function, read from the
 * function's start, and no branch of libc lands in (from, to)? */
int mig_x86_safe(uintptr_t from, uintptr_t to);

#endif
