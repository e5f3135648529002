/* interrupt.c: the signal flag. A signal handler can only talk to the program through
 * a static of type volatile sig_atomic_t; this is cvae's one piece of global state. */
#include <string.h>

#include "util/interrupt.h"

static volatile sig_atomic_t pending;

static void record(int sig) {
    if (!pending) pending = sig;
}

void cv_interrupt_install(cv_interrupt_guard *g) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = record;
    sa.sa_flags = SA_RESETHAND; /* a second signal is not caught: it ends the process */
    sigemptyset(&sa.sa_mask);
    pending = 0;
    sigaction(SIGINT, &sa, &g->old_int);
    sigaction(SIGTERM, &sa, &g->old_term);
}

void cv_interrupt_restore(const cv_interrupt_guard *g) {
    sigaction(SIGINT, &g->old_int, NULL);
    sigaction(SIGTERM, &g->old_term, NULL);
}

int cv_interrupt_pending(void) { return pending; }
