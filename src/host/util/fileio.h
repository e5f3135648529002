/* fileio.h: output files that are never left half-written.
 *
 * cv_outfile_open writes to PATH.tmp.<pid>; cv_outfile_commit flushes, fsyncs, renames it
 * over PATH and syncs the folder, so a crash leaves either the old file or the new one;
 * cv_outfile_abort removes the temporary file.
 */
#ifndef CVAE_FILEIO_H
#define CVAE_FILEIO_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "cvae/status.h"

typedef struct {
    FILE *fp;
    char path[4096];
    char tmp_path[4200];
} cv_outfile;

cv_status cv_outfile_open(cv_outfile *f, const char *path, cv_err *err);
cv_status cv_outfile_write(cv_outfile *f, const void *data, size_t bytes, cv_err *err);
cv_status cv_outfile_commit(cv_outfile *f, cv_err *err);
void cv_outfile_abort(cv_outfile *f);

#define CV_PATH_MAX 4096

/* out = path without trailing slashes ("/" stays); an empty or too long path is an error. */
cv_status cv_trim_path(char out[CV_PATH_MAX], const char *path, cv_err *err);

/* Creates DIR and its missing parents, like mkdir -p; an existing non-folder anywhere on
 * the way is an error. `made` receives the shallowest folder this call created ("" when
 * DIR existed), so that cv_unmake_dirs can undo it. */
cv_status cv_make_dirs(const char *dir, char made[CV_PATH_MAX], cv_err *err);

/* Removes DIR and then its parents up to `made`, each only while it is empty: undoes
 * cv_make_dirs for a run that ended with nothing written. */
void cv_unmake_dirs(const char *dir, const char *made);

/* Creates the missing folders above PATH (the shallowest into `made`, as cv_make_dirs),
 * sweeps PATH's temporaries that dead processes left (cv_sweep_stale_temporaries), then
 * proves a file can be written beside it by creating and removing PATH's temporary name:
 * the check an output gets before any long work. PATH itself is left as it was; a PATH
 * that is a folder is an error. */
cv_status cv_prepare_output_file(const char *path, char made[CV_PATH_MAX], cv_err *err);

bool cv_path_exists(const char *path);

/* Removes path whole: a file, or a folder with everything in it (not following links). */
void cv_remove_tree(const char *path);

/* Removes the temporaries that processes no longer running left in folder: entries named
 * PREFIX.tmp.PID (any PREFIX when prefix is NULL) whose PID runs nothing, or is this
 * process's own, since a container reuses pids (so call it before this process writes
 * in folder). A folder goes whole. A missing folder is no error; nothing else is touched. */
void cv_sweep_stale_temporaries(const char *folder, const char *prefix);

/* Opens path for reading when it is a regular file, into *fd, with its size in *size: a
 * folder is "PATH: is a folder, not WHAT" and anything else that is no regular file (a
 * FIFO, a device) is refused at once, never waited on. */
cv_status cv_open_regular(const char *path, const char *what, int *fd, uint64_t *size,
                          cv_err *err);

/* The lock of a run folder: an advisory POSIX write lock on DIR/cvae.lock, which holds
 * the holder's pid. The kernel drops it when the holder exits, however it exits. */
#define CV_LOCK_FILE "cvae.lock"

typedef struct {
    int fd; /* -1: not held */
} cv_dir_lock;

/* Takes the lock of DIR (which must exist), or fails with one line naming the pid that
 * holds it. Nothing in DIR is changed unless the lock is taken. */
cv_status cv_dir_lock_take(const char *dir, cv_dir_lock *lock, cv_err *err);
void cv_dir_lock_release(cv_dir_lock *lock);

#endif
