/* generate.h: synthetic data sets, sample grids and reconstructions from a trained model.
 *
 * Each image has one of R conditions: R classes (interleaved: image i has class
 * classes[i % R], so every prefix is balanced), or R rows given explicitly (class labels
 * or condition vectors, for a model of that kind: image i has row i % R). A data set holds
 * R * per images (R * per_class, or one image per row with per 1); a grid has a row per
 * condition and `per` columns, column k holding images kR .. kR + R - 1. Image i's z is
 * row 0 of the Philox stream CV_STREAM_GEN_Z(i) and its pixel draws (with --sample) stream
 * CV_STREAM_GEN_PIXELS(i), so the draws depend only on the seed, not on --batch or the
 * device.
 *
 * Images are decoded in blocks of cv_generate_block_rows rows that start at multiples of
 * the block in the image order (a last, partial block is decoded whole and the extra
 * images dropped). Every GEMM then has the same shape, and each image the same row in it,
 * whatever --batch is; OpenBLAS and cuBLAS repeat themselves for the same call, so on one
 * device the bytes do not depend on --batch (tests/test_generate.c checks --batch 1, 3 and
 * 1000, tests/test_cuda.c the same on a GPU). Across devices the logits may differ by
 * float rounding: cuBLAS and OpenBLAS sum in other orders. A --mean pixel round(255 p) can then land on
 * the neighbouring integer (|d(255 p)| <= 255 |dl| / 4 < 1 for any |dl| < 1/64, far above
 * float rounding), and a --sample pixel flips when its uniform draw falls between the two
 * p, with probability |dp| <= |dl| / 4: logits 1e-5 apart flip at most 1 pixel in 400,000,
 * and the tests allow 1 in 10,000.
 */
#ifndef CVAE_GENERATE_H
#define CVAE_GENERATE_H

#include <stdbool.h>
#include <stdint.h>

#include "cvae/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    CV_FMT_IDX, CV_FMT_IDX_GZ, CV_FMT_NPY, CV_FMT_PNG, CV_FMT_GRID, CV_FMT_COUNT
} cv_gen_format;

/* A format's name, as --format and the manifest spell it: "idx", "idx.gz", "npy", "png",
 * "grid". */
const char *cv_gen_format_name(cv_gen_format f);

#define CV_GRID_MAX_ROWS 256

/* The conditions generated images take (see above): classes, or explicit rows. */
typedef struct {
    int n_classes;           /* how many of classes[] are used (interleaved classes) */
    int classes[CV_MAX_CLASSES];
    const uint8_t *labels;   /* or rows given explicitly: n_rows class labels, */
    const float *conditions; /* or n_rows condition vectors (n_rows, width), width K */
    int width;
    long long n_rows;        /* 0: the classes */
    const char *source;      /* the file the rows came from, for the manifest */
} cv_gen_conditions;

/* R: the count of conditions. */
long long cv_gen_condition_count(const cv_gen_conditions *c);
/* The class of image i (conditions of class labels: classes or rows of labels). */
int cv_gen_class_of(const cv_gen_conditions *c, long long i);

typedef struct {
    cv_gen_conditions cond;
    long long per;         /* images of each condition (grid: columns) */
    cv_gen_format format;
    bool mean;             /* round(255 p) instead of draws from the likelihood */
    bool same_z;           /* grid only: one z per column, shared by every row */
    uint64_t seed;
    int batch;             /* images decoded at a time */
    const char *out;       /* a folder, or the PNG file of a grid */
    const char *checkpoint;/* for the manifest */
    uint32_t checkpoint_crc;
    char *const *class_names; /* the model's K class names (cv_checkpoint.names): the png
                                 format's folders and the manifest's; NULL: numbers */
    bool progress;         /* a progress line on stderr */
    /* cvae decode: latents given instead of drawn. Image i takes row i of z (z_rows, L)
     * and condition i % R, R being 1 or z_rows; per is 1 and the pixels are --mean. */
    const float *z;
    long long z_rows;
    const char *z_source;  /* the file z came from, for the manifest */
    bool decoded;          /* also decoded.npy: E[x|z,c], float32 (N, H, W[, C]) */
} cv_generate_options;

/* The images a request makes: z_rows when z is given, else R * per. */
long long cv_generate_count(const cv_generate_options *opt);

typedef struct {
    long long images;
    double seconds;
} cv_generate_result;

/* Rows of the blocks images are decoded in: min(256, 2^22 / D), fewer than 256 for images
 * of over 16,384 values (D = H W C). */
int cv_generate_block_rows(const cv_model *model);

/* Checks that the conditions suit the model: classes or labels below its K for a model of
 * labels, rows of width K (all finite) for one of condition vectors, at most
 * CV_GRID_MAX_ROWS for a grid; given latents finite, one per image, as many as the
 * condition rows (or one condition for all). CV_ERR_USAGE for the wrong kind,
 * CV_ERR_FORMAT for bad rows, each one line naming the source. cv_generate calls it before
 * writing anything. */
cv_status cv_generate_check(const cv_model_config *model, const cv_generate_options *opt,
                            cv_err *err);

/* Checks, before any long work, that opt->out can take what cv_generate will write: a
 * data set's folder must not exist or be empty, and a temporary folder must be creatable
 * beside it (the missing folders above it are made for the probe); a grid's file must not
 * exist yet, and a file must be creatable beside it. Whatever the check made is removed
 * again; each failure is one line, CV_ERR_IO (CV_ERR_USAGE for an empty or too long
 * path). */
cv_status cv_generate_check_output(const cv_generate_options *opt, cv_err *err);

/* The model must have a workspace of at least cv_generate_block_rows rows (grid: its
 * rows). opt->batch images are decoded per device round trip, rounded up to whole blocks. */
cv_status cv_generate(cv_model *model, cv_workspace *ws, const cv_generate_options *opt,
                      cv_generate_result *res, cv_err *err);

/* A picture of rows x cols images of the model's shape, row-major: tile t at pixels +
 * t * D (malloc'd: free it). */
typedef struct {
    uint8_t *pixels;
    int rows, cols;
} cv_tiles;

/* A samples grid's tiles: a row per condition, `cols` columns. */
cv_status cv_generate_grid_tiles(cv_model *model, cv_workspace *ws, const cv_gen_conditions *cond,
                                 int cols, bool same_z, bool mean, uint64_t seed, cv_tiles *out,
                                 cv_err *err);
/* The reconstructions' tiles: the first `count` images of split (top row) above their
 * reconstructions from the posterior mean (bottom row). */
cv_status cv_reconstruction_tiles(cv_model *model, cv_workspace *ws, const cv_split *split,
                                  int count, cv_tiles *out, cv_err *err);
/* The images opt describes (its conditions, per, mean, seed and batch; nothing written)
 * into host memory: pixels (n, D) bytes, and each image's label (labels, a model of
 * labels) or condition row (rows (n, K), a model of vectors), n = R * per: the bytes
 * cv_generate writes for the same options. */
cv_status cv_generate_images(cv_model *model, cv_workspace *ws, const cv_generate_options *opt,
                             uint8_t *pixels, uint8_t *labels, float *rows, cv_err *err);

/* Writes a samples grid (a row per condition, `cols` columns) to path, PNG. */
cv_status cv_generate_grid(cv_model *model, cv_workspace *ws, const cv_gen_conditions *cond,
                           int cols, bool same_z, bool mean, uint64_t seed, const char *path,
                           cv_err *err);

/* Writes the first `count` images of split (top row) above their reconstructions from the
 * posterior mean (bottom row) to path, PNG. */
cv_status cv_reconstructions_png(cv_model *model, cv_workspace *ws, const cv_split *split,
                                 int count, const char *path, cv_err *err);

#ifdef __cplusplus
}
#endif

#endif
