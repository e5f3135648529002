/* data.h: IDX image and label files (plain or gzip) and the standard data folder.
 *
 * Images are idx3-ubyte (N, H, W), labels idx1-ubyte (N), unsigned bytes only. Every
 * header is validated before any allocation the file does not justify.
 */
#ifndef CVAE_DATA_H
#define CVAE_DATA_H

#include <stdbool.h>
#include <stdint.h>

#include "cvae/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    uint8_t *pixels; /* (n, h, w) */
    uint8_t *labels; /* (n) */
    int n, h, w;
} cv_split;

typedef struct {
    cv_split train;
    cv_split test;    /* n == 0 when the folder has no test files */
    int n_classes;    /* largest training label + 1, unless asked otherwise */
} cv_data;

/* ndims is 3 for images and 1 for labels; dims receives (n[, h, w]). */
cv_status cv_idx_read(const char *path, int ndims, int dims[3], uint8_t **payload,
                      cv_err *err);
cv_status cv_idx_write(const char *path, int ndims, const int dims[3],
                       const uint8_t *payload, bool gzip, cv_err *err);

/* Loads DIR/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]. n_classes 0 means "from
 * the training labels". Missing test files leave data->test.n == 0. */
cv_status cv_data_load(const char *dir, int n_classes, cv_data *data, cv_err *err);
void cv_data_free(cv_data *data);

/* Binarizes a split in place, once: pixel p becomes 255 with probability p / 255, else 0,
 * with the fixed seed CV_BINARIZE_TEST_SEED, so every run evaluates on the same images. */
void cv_split_binarize(cv_split *split);
void cv_split_free(cv_split *split);

#ifdef __cplusplus
}
#endif

#endif
