/* mig_shim.c -- load-time set-up of the mig interposer.
 *
 * Rules of every file in shim/src (the interceptor issue adds the wrappers):
 *  - nothing on the hot path allocates or calls stdio;
 *  - real functions are reached only through the table resolved here, once;
 *  - a wrapper may run before this constructor (another library's constructor can call
 *    it), so every wrapper calls mig_init() first.
 *
 * Today the shim reads its mode from MIG_MODE (record, replay, live; unset: off) and exports
 * mig_shim_version() so the package and tests can check which build is loaded.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#define MIG_EXPORT __attribute__((visibility("default")))

enum mig_mode { MIG_OFF = 0, MIG_RECORD, MIG_REPLAY, MIG_LIVE };

static enum mig_mode mig_mode;
static int mig_ready;

static void mig_init(void)
{
    if (mig_ready)
        return;
    const char *mode = getenv("MIG_MODE");
    if (mode && strcmp(mode, "record") == 0)
        mig_mode = MIG_RECORD;
    else if (mode && strcmp(mode, "replay") == 0)
        mig_mode = MIG_REPLAY;
    else if (mode && strcmp(mode, "live") == 0)
        mig_mode = MIG_LIVE;
    mig_ready = 1;
}

__attribute__((constructor)) static void mig_constructor(void)
{
    mig_init();
}

/* "mig-shim <version> <mode>": a probe for tests and `mig doctor`. */
MIG_EXPORT const char *mig_shim_version(void)
{
    static const char *names[] = {"mig-shim 0.1.0 off", "mig-shim 0.1.0 record",
                                  "mig-shim 0.1.0 replay", "mig-shim 0.1.0 live"};
    mig_init();
    return names[mig_mode];
}
