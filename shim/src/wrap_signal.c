/* wrap_signal.c -- asynchronous signals: sigaction and signal.
 *
 * For every signal the app handles, the shim installs its own handler. On the primary it
 * only notes the signal; the app's handler runs at the start of the next intercepted call,
 * recorded there as a SIGNAL call, so the delivery point is in the log. On a backup real
 * deliveries of handled signals are ignored and the handler runs where the log has SIGNAL.
 * Signals the app leaves at their default action are not touched. */
#include "mig.h"

#include <string.h>

volatile int mig_signals_pending;

static struct sigaction app_action[NSIG];
static volatile sig_atomic_t pending[NSIG];
static siginfo_t pending_info[NSIG];

static int handled(const struct sigaction *act)
{
    return act && act->sa_handler != SIG_DFL && act->sa_handler != SIG_IGN;
}

static void mig_on_signal(int sig, siginfo_t *info, void *uctx)
{
    (void)uctx;
    if (mig_mode != MIG_RECORD || sig <= 0 || sig >= NSIG)
        return; /* replay: the log decides when the handler runs */
    if (info)
        pending_info[sig] = *info;
    pending[sig] = 1;
    mig_signals_pending = 1;
}

/* A MIG_PREEMPT_SIG the shim did not send: the app's, if it handles the signal, noted as
 * any signal it handles; else dropped (its default action would end the process, which
 * no one sends this signal for). */
void mig_signal_foreign(int sig, siginfo_t *si, void *ctx)
{
    if (sig > 0 && sig < NSIG && handled(&app_action[sig]))
        mig_on_signal(sig, si, ctx);
}

/* The real sigaction: under complete capture, the kernel's, with the shim's restorer (the
 * return from a handler must come from the shim's text) and SIGSYS never masked. */
static int install(int sig, const struct sigaction *act, struct sigaction *old)
{
    return mig_trapping ? mig_trap_sigaction(sig, act, old) : mig_real.sigaction(sig, act, old);
}

void mig_run_app_handler(int sig, int code)
{
    if (sig <= 0 || sig >= NSIG || !handled(&app_action[sig]))
        return;
    int saved = errno;
    struct sigaction copy = app_action[sig];
    struct sigaction *act = &copy;
    if (act->sa_flags & SA_RESETHAND) {
        /* a one-shot handler: the signal's action is the default again before the handler
         * runs, as the kernel would have made it at the delivery (the shim's handler is
         * installed without the flag), so a handler that raises the signal again to end
         * the process (Node.js at SIGTERM) ends it instead of running again at every call */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        /* (SIGSYS and the preemption's signal stay the shim's in the kernel: sigaction) */
        if (!((sig == SIGSYS || sig == MIG_PREEMPT_SIG) && mig_trapping))
            install(sig, &dfl, NULL);
        app_action[sig] = dfl;
    }
    if (act->sa_flags & SA_SIGINFO) {
        siginfo_t info;
        memset(&info, 0, sizeof info);
        info.si_signo = sig;
        info.si_code = code;
        MIG_APP_CODE(act->sa_sigaction(sig, &info, NULL));
    } else {
        MIG_APP_CODE(act->sa_handler(sig));
    }
    errno = saved;
}

void mig_deliver_signals(void)
{
    mig_signals_pending = 0;
    for (int sig = 1; sig < NSIG; sig++) {
        if (!pending[sig])
            continue;
        pending[sig] = 0;
        struct mig_call c = {.kind = MIG_K_SIGNAL, .args = {sig, pending_info[sig].si_code}};
        mig_busy++;
        mig_record(&c);
        mig_busy--;
        mig_run_app_handler(sig, pending_info[sig].si_code);
    }
}

MIG_EXPORT int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    MIG_GATE;
    if (mig_mode != MIG_RECORD && mig_mode != MIG_REPLAY)
        return install(sig, act, old);
    if (sig <= 0 || sig >= NSIG || sig == SIGKILL || sig == SIGSTOP)
        return install(sig, act, old);
    struct sigaction previous = app_action[sig];
    int had = handled(&previous);
    int r;
    if ((sig == SIGSYS || sig == MIG_PREEMPT_SIG) && mig_trapping) {
        /* SIGSYS is the trap's: the app's handler is kept, never installed (a SIGSYS of
         * the app's own would come from a seccomp filter, which the shim refuses); so is
         * the preemption's signal, whose foreign deliveries run it (mig_signal_foreign) */
        r = 0;
        if (old) {
            memset(old, 0, sizeof *old);
            old->sa_handler = SIG_DFL;
        }
    } else if (handled(act)) {
        struct sigaction mine = *act;
        mine.sa_sigaction = mig_on_signal;
        mine.sa_flags |= SA_SIGINFO;
        mine.sa_flags &= ~SA_RESETHAND;
        r = install(sig, &mine, old);
    } else {
        r = install(sig, act, old);
    }
    if (r == 0) {
        if (old && had)
            *old = previous; /* the app sees its own handler, not the shim's */
        if (act)
            app_action[sig] = *act;
    }
    return r;
}

MIG_EXPORT sighandler_t signal(int sig, sighandler_t handler)
{
    struct sigaction act, old;
    memset(&act, 0, sizeof act);
    act.sa_handler = handler;
    act.sa_flags = SA_RESTART;
    sigemptyset(&act.sa_mask);
    if (sigaction(sig, &act, &old) != 0)
        return SIG_ERR;
    return old.sa_handler;
}
