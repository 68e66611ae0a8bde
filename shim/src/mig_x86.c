/* mig_x86.c -- reading libc's machine code, for the sites mig_patch.c rewrites: the length
 * and kind of an x86-64 instruction, and whether a branch of libc lands inside bytes about
 * to be replaced.
 *
 * The decoder knows lengths, not meanings: prefixes, REX, VEX and EVEX, the one-, two- and
 * three-byte opcode maps, ModRM, SIB, displacements and immediates -- what a compiler emits
 * in 64-bit code. An opcode it does not know ends the reading (the site is left as it is).
 *
 * Branches. A function is read from its first instruction, which libc's unwind table
 * (.eh_frame_hdr: every function's start, sorted) gives, to the next function's start; the
 * reading must meet the site's syscall exactly, else the site is left. Every short and
 * near branch read on the way is checked, and so are the near (rel32) branches of the whole
 * of libc's text, read at every byte: a pair of bytes that only looks like one counts too,
 * which leaves a site unpatched now and then and never patches one wrongly. Indirect
 * branches (switch tables) are not followed: none lands right after a system call in glibc.
 *
 * Rules: called from the SIGSYS handler (mig_patch_try): no libc call but memcpy, no
 * allocation (the branch map's memory is mig_patch.c's). */
#define MIG_CORE
#include "mig.h"

#include <elf.h>
#include <link.h>
#include <string.h>
#include <sys/syscall.h>

#include "mig_x86.h"
#include "mig_poison.h"

/* ------------------------------------------------------------ opcode maps */

/* Has the opcode a ModRM byte (map 0: one byte; map 1: after 0f)? */
static int has_modrm0(unsigned char op)
{
    if (op < 0x40)
        return (op & 7) < 4;
    switch (op) {
    case 0x62: case 0x63: case 0x69: case 0x6b: case 0xc0: case 0xc1: case 0xc4: case 0xc5:
    case 0xc6: case 0xc7: case 0xd0: case 0xd1: case 0xd2: case 0xd3: case 0xf6: case 0xf7:
    case 0xfe: case 0xff:
        return 1;
    }
    return (op >= 0x80 && op <= 0x8f) || (op >= 0xd8 && op <= 0xdf);
}

static int has_modrm1(unsigned char op)
{
    switch (op) {
    case 0x05: case 0x06: case 0x07: case 0x08: case 0x09: case 0x0b: case 0x0e:
    case 0x77: case 0xa0: case 0xa1: case 0xa2: case 0xa8: case 0xa9: case 0xaa:
        return 0;
    }
    return !((op >= 0x30 && op <= 0x37) || (op >= 0x80 && op <= 0x8f) ||
             (op >= 0xc8 && op <= 0xcf));
}

static int imm8_map1(unsigned char op)
{
    return (op >= 0x70 && op <= 0x73) || op == 0xa4 || op == 0xac || op == 0xba ||
           op == 0xc2 || op == 0xc4 || op == 0xc5 || op == 0xc6 || op == 0x0f;
}

/* ModRM and what follows it (SIB, displacement): bytes, or 0 past `end`. */
static int modrm_bytes(const unsigned char *q, const unsigned char *end, int *riprel)
{
    if (q >= end)
        return 0;
    int mod = q[0] >> 6, rm = q[0] & 7, n = 1;
    if (mod == 3)
        return 1;
    if (rm == 4) {
        if (q + 1 >= end)
            return 0;
        n = 2;
        if (mod == 0 && (q[1] & 7) == 5)
            n += 4;
    } else if (mod == 0 && rm == 5) {
        *riprel = 1;
        n += 4;
    }
    return n + (mod == 1 ? 1 : mod == 2 ? 4 : 0);
}

/* ------------------------------------------------------------ one instruction */

int mig_x86_insn(const unsigned char *p, const unsigned char *end, struct mig_x86 *in)
{
    const unsigned char *s = p;
    int opsize16 = 0, rexw = 0;
    memset(in, 0, sizeof *in);
    for (; p < end; p++) { /* legacy prefixes */
        unsigned char b = *p;
        if (b == 0x66)
            opsize16 = 1;
        else if (!(b == 0x67 || b == 0xf2 || b == 0xf3 || b == 0xf0 || b == 0x2e ||
                   b == 0x36 || b == 0x3e || b == 0x26 || b == 0x64 || b == 0x65))
            break;
        in->prefixed = 1;
    }
    if (p < end && (*p & 0xf0) == 0x40) { /* REX */
        rexw = (*p & 8) != 0;
        p++;
    }
    if (p >= end)
        return 0;
    unsigned char op = *p++;
    int map = 0, imm = 0, modrm;
    if (op == 0xc4 || op == 0xc5 || op == 0x62) { /* VEX, EVEX: ModRM always */
        int pre = op == 0xc5 ? 1 : op == 0xc4 ? 2 : 3;
        if (p + pre >= end)
            return 0;
        map = op == 0xc5 ? 1 : (p[0] & (op == 0x62 ? 3 : 0x1f));
        if (map < 1 || map > 3)
            return 0;
        p += pre;
        op = *p++;
        int m = map == 1 && op == 0x77 ? 0 : modrm_bytes(p, end, &in->riprel);
        if (!m && !(map == 1 && op == 0x77)) /* (vzeroupper, vzeroall: no ModRM) */
            return 0;
        p += m;
        imm = map == 3 || (map == 1 && imm8_map1(op) && op != 0x0f) ? 1 : 0;
        p += imm;
        in->len = (int)(p - s);
        return p <= end ? in->len : 0;
    }
    if (op == 0x0f) {
        if (p >= end)
            return 0;
        op = *p++;
        map = 1;
        if (op == 0x38 || op == 0x3a) {
            if (p >= end)
                return 0;
            map = op == 0x38 ? 2 : 3;
            op = *p++;
        }
    }
    if (map == 0) {
        if (op == 0x06 || op == 0x07 || op == 0x0e || op == 0x16 || op == 0x17 || op == 0x1e ||
            op == 0x1f || op == 0x27 || op == 0x2f || op == 0x37 || op == 0x3f || op == 0x60 ||
            op == 0x61 || op == 0x82 || op == 0x9a || op == 0xce || op == 0xd4 || op == 0xd5 ||
            op == 0xd6 || op == 0xea || op == 0x62)
            return 0; /* not in 64-bit code */
        modrm = has_modrm0(op);
        if (op < 0x40 && (op & 7) == 4)
            imm = 1;
        else if (op < 0x40 && (op & 7) == 5)
            imm = opsize16 ? 2 : 4;
        else if (op == 0x68 || op == 0x69 || op == 0x81 || op == 0xa9 || op == 0xc7)
            imm = opsize16 ? 2 : 4;
        else if (op == 0x6a || op == 0x6b || op == 0x80 || op == 0x83 || op == 0xa8 ||
                 op == 0xc0 || op == 0xc1 || op == 0xc6 || op == 0xcd || (op >= 0xe4 && op <= 0xe7) ||
                 (op >= 0xb0 && op <= 0xb7))
            imm = 1;
        else if (op >= 0xb8 && op <= 0xbf)
            imm = rexw ? 8 : opsize16 ? 2 : 4;
        else if (op >= 0xa0 && op <= 0xa3)
            imm = 8;
        else if (op == 0xc2 || op == 0xca)
            imm = 2;
        else if (op == 0xc8)
            imm = 3;
        if ((op & 0xf0) == 0x70 || op == 0xeb || (op >= 0xe0 && op <= 0xe3)) {
            if (p >= end)
                return 0;
            in->kind = op == 0xeb ? MIG_X86_JMP : (op & 0xf0) == 0x70 ? MIG_X86_JCC
                                                                       : MIG_X86_LOOP;
            in->target = (uintptr_t)(p + 1 + (int8_t)p[0]);
            p++;
            in->len = (int)(p - s);
            return in->len;
        }
        if (op == 0xe8 || op == 0xe9) {
            if (p + 4 > end)
                return 0;
            int32_t rel;
            memcpy(&rel, p, 4);
            p += 4;
            in->kind = op == 0xe8 ? MIG_X86_CALL : MIG_X86_JMP;
            in->target = (uintptr_t)(p + rel);
            in->len = (int)(p - s);
            return in->len;
        }
        if (op == 0xc3 || op == 0xc2)
            in->kind = MIG_X86_RET;
        else if (op == 0xcc || op == 0xcd || op == 0xcf || op == 0xf4 || op == 0xca ||
                 op == 0xcb || op == 0xf1)
            in->kind = MIG_X86_OTHER; /* int, iret, hlt, far ret */
    } else if (map == 1) {
        modrm = has_modrm1(op);
        imm = imm8_map1(op) ? 1 : 0;
        if (op >= 0x80 && op <= 0x8f) {
            if (p + 4 > end)
                return 0;
            int32_t rel;
            memcpy(&rel, p, 4);
            p += 4;
            in->kind = MIG_X86_JCC;
            in->target = (uintptr_t)(p + rel);
            in->len = (int)(p - s);
            return in->len;
        }
        if (op == 0x05 || op == 0x07 || op == 0x34 || op == 0x35 || op == 0x0b)
            in->kind = MIG_X86_OTHER; /* syscall, sysret, sysenter, sysexit, ud2 */
    } else {
        modrm = 1;
        imm = map == 3 ? 1 : 0;
    }
    if (modrm) {
        int m = modrm_bytes(p, end, &in->riprel);
        if (!m)
            return 0;
        if (map == 0 && (op == 0xf6 || op == 0xf7) && ((p[0] >> 3) & 7) < 2)
            imm = op == 0xf6 ? 1 : opsize16 ? 2 : 4; /* test $imm */
        if (map == 0 && op == 0xff) {
            int reg = (p[0] >> 3) & 7;
            if (reg >= 2 && reg <= 5)
                in->kind = MIG_X86_OTHER; /* indirect call or jmp */
        }
        p += m;
    }
    p += imm;
    in->len = (int)(p - s);
    return p <= end ? in->len : 0;
}

/* ------------------------------------------------------------ libc's functions */

static const unsigned char *hdr; /* libc's .eh_frame_hdr */
static uintptr_t text_lo, text_hi;
static uint64_t *targets;        /* a bit per byte of the text: a rel32 branch goes there */
static int scanned;

size_t mig_x86_map_bytes(uintptr_t lo, uintptr_t hi)
{
    return ((hi - lo + 63) / 64) * 8;
}

void mig_x86_libc(uintptr_t lo, uintptr_t hi, const void *eh_frame_hdr, uint64_t *map)
{
    text_lo = lo;
    text_hi = hi;
    hdr = eh_frame_hdr;
    targets = map;
}

/* The start of the function holding pc, and the next one's (0 when not found). The table
 * of .eh_frame_hdr: (start, its FDE) pairs, 4-byte offsets from the header, sorted. */
static uintptr_t function_of(uintptr_t pc, uintptr_t *next)
{
    if (!hdr || hdr[0] != 1 || hdr[3] != 0x3b) /* version 1, datarel | sdata4 */
        return 0;
    const unsigned char *q = hdr + 4;
    if (hdr[1] == 0x1b) /* eh_frame_ptr: pcrel | sdata4 */
        q += 4;
    else
        return 0;
    if (hdr[2] != 0x03) /* fde_count: udata4 */
        return 0;
    uint32_t count;
    memcpy(&count, q, 4);
    const int32_t *table = (const int32_t *)(q + 4);
    uint32_t lo = 0, hi = count;
    while (hi - lo > 1) {
        uint32_t mid = (lo + hi) / 2;
        if ((uintptr_t)(hdr + table[2 * mid]) <= pc)
            lo = mid;
        else
            hi = mid;
    }
    if (!count || (uintptr_t)(hdr + table[2 * lo]) > pc)
        return 0;
    *next = lo + 1 < count ? (uintptr_t)(hdr + table[2 * (lo + 1)]) : text_hi;
    if (*next > text_hi)
        *next = text_hi;
    return (uintptr_t)(hdr + table[2 * lo]);
}

/* Fill the map of near-branch targets, once (the map is zeroed memory the caller gave). */
static int scan_targets(void)
{
    if (!targets)
        return 0;
    size_t len = text_hi - text_lo;
    uint64_t *bits = targets;
    const unsigned char *t = (const unsigned char *)text_lo;
    for (size_t i = 0; i + 5 <= len; i++) {
        size_t next;
        int32_t rel;
        if (t[i] == 0xe8 || t[i] == 0xe9)
            next = i + 5;
        else if (t[i] == 0x0f && i + 6 <= len && (t[i + 1] & 0xf0) == 0x80)
            next = i + 6;
        else
            continue;
        memcpy(&rel, t + next - 4, 4);
        int64_t to = (int64_t)next + rel;
        if (to >= 0 && (size_t)to < len)
            bits[to / 64] |= 1ull << (to % 64);
    }
    scanned = 1;
    return 1;
}

/* Read the function [pc, next): 0 if an instruction is unknown or a branch lands in
 * (from, to); *met when an instruction starts at from. */
static int read_function(uintptr_t pc, uintptr_t next, uintptr_t from, uintptr_t to, int *met)
{
    struct mig_x86 in;
    while (pc < next) {
        if (!mig_x86_insn((const unsigned char *)pc, (const unsigned char *)next, &in))
            return 0;
        if (pc == from)
            *met = 1;
        if ((in.kind == MIG_X86_JCC || in.kind == MIG_X86_JMP || in.kind == MIG_X86_LOOP ||
             in.kind == MIG_X86_CALL) && in.target > from && in.target < to)
            return 0;
        pc += (uintptr_t)in.len;
    }
    return 1;
}

int mig_x86_safe(uintptr_t from, uintptr_t to)
{
    if (from <= text_lo + 256 || to + 256 > text_hi || (!scanned && !scan_targets()))
        return 0;
    for (uintptr_t x = from + 1; x < to; x++) { /* near branches from anywhere in libc */
        size_t o = x - text_lo;
        if (targets[o / 64] & (1ull << (o % 64)))
            return 0;
    }
    /* every function a short branch could come from: within 128 bytes either side */
    uintptr_t next = 0, pc = function_of(from - 130, &next);
    if (!pc || !function_of(from, &(uintptr_t){0}))
        return 0;
    int met = 0;
    while (pc < to + 130) {
        if (!read_function(pc, next, from, to, &met))
            return 0;
        if (next >= text_hi)
            break;
        pc = next;
        if (function_of(pc, &next) != pc)
            return 0;
    }
    return met;
}
