/* interrupt.c: the signal flag. A signal handler can only talk to the program through
 * statics (a volatile sig_atomic_t, and here the installed guard, set before the handler
 * can run); this is cvae's one piece of global state. The handler calls only
 * async-signal-safe functions (unlink, rmdir, sigaction, raise, strlen, memcpy). */
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "util/interrupt.h"

static volatile sig_atomic_t pending;
static cv_interrupt_guard *volatile installed;

/* Removes chain's file, then its folders from the deepest up to `made`, while each is
 * empty. Async-signal-safe. */
static void take_back(const cv_undo_chain *c) {
    if (c->file[0]) unlink(c->file);
    char path[CV_UNDO_PATH_MAX];
    size_t stop = strlen(c->made), len = strlen(c->dir);
    if (!stop || len < stop || len >= sizeof path) return;
    memcpy(path, c->dir, len + 1);
    for (;;) {
        if (rmdir(path) != 0 || len <= stop) return;
        while (len > stop && path[len - 1] != '/') len--; /* up to the parent's name */
        while (len > stop && path[len - 1] == '/') len--;
        path[len] = '\0';
    }
}

static void record(int sig) {
    if (!pending) {
        pending = sig;
        return;
    }
    if (sig != pending) return; /* the other signal after the first asks for nothing new */
    cv_interrupt_guard *g = installed;
    for (int i = g ? g->n_undo - 1 : -1; i >= 0; i--) take_back(&g->undo[i]); /* last first */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
    raise(sig); /* delivered by its default action once this handler returns */
}

void cv_interrupt_install(cv_interrupt_guard *g) {
    g->n_undo = 0;
    installed = g;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = record;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGINT); /* one handler at a time */
    sigaddset(&sa.sa_mask, SIGTERM);
    pending = 0;
    sigaction(SIGINT, &sa, &g->old_int);
    sigaction(SIGTERM, &sa, &g->old_term);
}

void cv_interrupt_restore(const cv_interrupt_guard *g) {
    sigaction(SIGINT, &g->old_int, NULL);
    sigaction(SIGTERM, &g->old_term, NULL);
    installed = NULL;
}

int cv_interrupt_pending(void) { return pending; }

static void copy_path(char dst[CV_UNDO_PATH_MAX], const char *src) {
    size_t n = src ? strlen(src) : 0;
    if (n >= CV_UNDO_PATH_MAX) n = 0; /* too long to keep: nothing */
    memcpy(dst, src ? src : "", n);
    dst[n] = '\0';
}

void cv_interrupt_undo_on_kill(cv_interrupt_guard *g, const char *file, const char *dir,
                               const char *made) {
    if (!made || !made[0] || g->n_undo >= CV_UNDO_CHAINS) return;
    cv_undo_chain *c = &g->undo[g->n_undo];
    copy_path(c->file, file);
    copy_path(c->dir, dir);
    copy_path(c->made, made);
    size_t len = strlen(c->dir); /* "DIR/" names DIR */
    while (len > 1 && c->dir[len - 1] == '/') c->dir[--len] = '\0';
    /* the chain is whole before the handler may read it: the compiler may not move the
     * plain stores above past the volatile count without this fence */
    atomic_signal_fence(memory_order_seq_cst);
    g->n_undo = g->n_undo + 1;
}

void cv_interrupt_undo_clear(cv_interrupt_guard *g) { g->n_undo = 0; }
