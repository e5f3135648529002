/* interrupt.h: SIGINT and SIGTERM as a request to stop cleanly.
 *
 * While installed, the first such signal is recorded instead of killing the process; the
 * training loop polls it between steps, finishes the step, writes a checkpoint and stops.
 * The same signal a second time is not caught: it ends the process at once, as a user who
 * presses Ctrl-C twice expects.
 */
#ifndef CVAE_INTERRUPT_H
#define CVAE_INTERRUPT_H

#include <signal.h>

typedef struct {
    struct sigaction old_int, old_term;
} cv_interrupt_guard;

void cv_interrupt_install(cv_interrupt_guard *g);
void cv_interrupt_restore(const cv_interrupt_guard *g);
/* The signal received since install (SIGINT or SIGTERM), or 0. */
int cv_interrupt_pending(void);

#endif
