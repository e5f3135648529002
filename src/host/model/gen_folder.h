/* gen_folder.h: the folder a generated data set is written into, and how it appears under
 * its name (internal to generate.c).
 *
 * A new folder OUT is written as OUT.tmp.<pid> beside it and renamed into place whole. An
 * existing empty OUT (often a mount point, which rename() cannot replace: EBUSY) is filled
 * in place instead: the files are written into OUT/.tmp.<pid> and moved into OUT one by one,
 * manifest.json last, so a complete set is one whose manifest is there. Before either,
 * the temporaries of processes no longer running are swept (cv_sweep_stale_temporaries).
 */
#ifndef CVAE_GEN_FOLDER_H
#define CVAE_GEN_FOLDER_H

#include <stdbool.h>

#include "util/fileio.h"

typedef struct {
    char out[CV_PATH_MAX];      /* the set's folder, without trailing slashes */
    char tmp[CV_PATH_MAX + 32]; /* the folder the files are written into */
    char made[CV_PATH_MAX];     /* the shallowest folder made above out ("" for none) */
    bool in_place;              /* out existed (empty): tmp lies inside it */
} gen_folder;

/* Checks out (it must not exist, or be an empty folder), makes the folders above a new one
 * and the temporary folder; on failure nothing made is left, and the line names the path
 * that failed. */
cv_status gen_folder_open(gen_folder *f, const char *out, cv_err *err);
/* The finished set under its name: tmp renamed to out, or its entries moved into out with
 * the manifest last. On failure what was moved is removed again (gen_folder_abort then
 * removes the rest). */
cv_status gen_folder_commit(gen_folder *f, cv_err *err);
/* Everything gen_folder_open made, removed: the temporary folder and the folders above. */
void gen_folder_abort(gen_folder *f);

#endif
