/* interrupt.h: SIGINT and SIGTERM as a request to stop cleanly.
 *
 * While installed, the first such signal is recorded instead of killing the process; the
 * training loop polls it between steps, finishes the step, writes a checkpoint and stops.
 * The same signal a second time ends the process at once, as a user who presses Ctrl-C
 * twice expects, by that signal's default action; before it does, it removes what the
 * guard was told to take back on such a kill (cv_interrupt_undo_on_kill): the folders a
 * run made and has not yet written anything into, and their lock file.
 */
#ifndef CVAE_INTERRUPT_H
#define CVAE_INTERRUPT_H

#include <signal.h>

#define CV_UNDO_CHAINS 2
#define CV_UNDO_PATH_MAX 4200

/* A file to unlink, then a folder to remove with its parents up to `made` (each only while
 * empty): what cv_unmake_dirs undoes, kept where a signal handler can reach it. */
typedef struct {
    char file[CV_UNDO_PATH_MAX]; /* "" for none */
    char dir[CV_UNDO_PATH_MAX];  /* without trailing slashes */
    char made[CV_UNDO_PATH_MAX]; /* the shallowest folder made, a prefix of dir */
} cv_undo_chain;

typedef struct {
    struct sigaction old_int, old_term;
    cv_undo_chain undo[CV_UNDO_CHAINS];
    volatile sig_atomic_t n_undo; /* chains in force */
} cv_interrupt_guard;

void cv_interrupt_install(cv_interrupt_guard *g);
void cv_interrupt_restore(const cv_interrupt_guard *g);
/* The signal received since install (SIGINT or SIGTERM), or 0. */
int cv_interrupt_pending(void);

/* Adds a chain to what a second signal takes back (file may be NULL; made "" adds
 * nothing): at most CV_UNDO_CHAINS, taken back last added first (a folder made inside
 * another goes before it). */
void cv_interrupt_undo_on_kill(cv_interrupt_guard *g, const char *file, const char *dir,
                               const char *made);
/* Drops every chain: the run has written what must stay. */
void cv_interrupt_undo_clear(cv_interrupt_guard *g);

#endif
