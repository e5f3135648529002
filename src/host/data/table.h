/* table.h: a text table of images and their labels or attributes (internal).
 *
 * A header row names the columns; each later row holds one image's fields. Fields are
 * separated by commas (CSV: a field may be in double quotes, "" inside standing for one
 * quote, and spaces around a field are dropped) when the header holds a comma, else by
 * runs of spaces and tabs. Blank lines, a UTF-8 byte-order mark and CR line ends are
 * ignored. CelebA's list_attr_celeba.txt is read as distributed: a first line holding
 * only the row count, a line of the attribute names, then rows whose first field is the
 * image; its column 0 is then named "image", and the count must match. Every row must
 * have a field for every column; a refusal is one line naming the file and its line.
 */
#ifndef CVAE_DATA_TABLE_H
#define CVAE_DATA_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cvae/status.h"

#define CV_TABLE_MAX_BYTES (UINT64_C(1) << 30)
#define CV_TABLE_MAX_COLUMNS 100000

typedef struct {
    const char *path;  /* for messages */
    char *text;        /* the file's bytes, each field NUL-terminated in place */
    int n_cols;
    const char **names; /* (n_cols) column names */
    int n_rows;
    int *line;          /* (n_rows) each row's line in the file, from 1 */
    uint32_t *cells;    /* (n_rows, n_cols) each field's offset in text */
    bool celeba;        /* CelebA's attribute layout (column 0, the image, is unnamed there) */
} cv_table;

/* Parses text (len bytes and one more after them, which may be overwritten; malloc'd: the
 * table takes it, and frees it on failure too). */
cv_status cv_table_parse(const char *path, char *text, size_t len, cv_table *t, cv_err *err);
/* The file at path, read whole and parsed. */
cv_status cv_table_read(const char *path, cv_table *t, cv_err *err);
/* A file without a header row, every line n_cols fields (CelebA's list_eval_partition.txt),
 * its columns named by names (which must outlive the table). */
cv_status cv_table_read_headless(const char *path, int n_cols, const char *const *names,
                                 cv_table *t, cv_err *err);
void cv_table_free(cv_table *t);

static inline const char *cv_table_cell(const cv_table *t, int row, int col) {
    return t->text + t->cells[(size_t)row * t->n_cols + col];
}

/* The index of the column of that name, or -1. */
int cv_table_column(const cv_table *t, const char *name);

/* A field as a finite number: false for an empty field, trailing text, NaN or Inf. */
bool cv_table_number(const char *field, float *value);

#endif
