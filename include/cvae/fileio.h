/* fileio.h: output files that are never left half-written.
 *
 * cv_outfile_open writes to PATH.tmp.<pid>; cv_outfile_commit flushes, fsyncs, renames it
 * over PATH and syncs the folder, so a crash leaves either the old file or the new one;
 * cv_outfile_abort removes the temporary file.
 */
#ifndef CVAE_FILEIO_H
#define CVAE_FILEIO_H

#include <stdbool.h>
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

/* Creates DIR (one level) if it does not exist; an existing non-folder is an error. */
cv_status cv_ensure_dir(const char *dir, cv_err *err);

bool cv_path_exists(const char *path);

#endif
