/* data.h: the images a model trains on and their conditions, from IDX or NumPy files, or
 * from PNG and JPEG images in class folders or named by a table.
 *
 * Images are (N, H, W) or (N, H, W, C), unsigned bytes (IDX or .npy) or float32 in [0, 1]
 * (.npy). A split's condition is either a class label per image (IDX idx1-ubyte or an
 * integer .npy of shape (N,)) or a vector of K floats per image (a float32 .npy of shape
 * (N, K)). Every header is validated before any allocation the file does not justify;
 * uncompressed IDX and .npy images are memory-mapped, not copied. Image files are decoded
 * once into a cache of .npy files, which later runs map. docs/design.md 1.1, 4.5 and 4.8
 * give the folder layouts, the formats and the cache.
 */
#ifndef CVAE_DATA_H
#define CVAE_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cvae/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What a model is conditioned on: one class index per image, which enters the first
 * layers as its one-hot vector, or a vector of K numbers. */
typedef enum { CV_COND_LABELS = 0, CV_COND_VECTORS = 1 } cv_condition_kind;

#define CV_MAX_CLASSES 256        /* labels are bytes */
#define CV_MAX_COND_WIDTH 65536   /* K of condition vectors */
#define CV_MAX_IMAGE_SIDE 65535      /* H, W and C each */
#define CV_MAX_IMAGE_VALUES (1 << 24) /* D = H * W * C; an index over rows of D is a size_t */

typedef struct {
    uint8_t *pixels;   /* (n, h, w, channels) bytes: x = pixel / 255; NULL for float images */
    float *fpixels;    /* (n, h, w, channels) float32 in [0, 1]; NULL for byte images */
    uint8_t *labels;   /* (n) class indices (labels), else NULL */
    float *conditions; /* (n, cond_width) (vectors), else NULL */
    int n, h, w, channels;
    int cond_width;    /* K of the conditions; 0 for labels */
    void *mapping;     /* the file mapping the images lie in (private, copy on write), which
                          cv_split_free unmaps; NULL: pixels or fpixels are malloc'd */
    size_t mapping_bytes;
} cv_split;

typedef struct {
    cv_split train;
    cv_split test;               /* n == 0 when there are no test files */
    cv_condition_kind condition; /* both splits have the same kind */
    int cond_width;              /* K: classes (largest training label + 1 unless asked
                                    otherwise), or the condition vectors' width */
    bool test_skipped;           /* the folder's test files hold the other kind of condition
                                    than the training one a file flag named: left out */
    char **names;                /* the K conditions' names: class names (class folders, a
                                    table's label names) or condition columns; NULL when the
                                    files name none */
    int n_names;                 /* how many: K when names is not NULL */
} cv_data;

/* How PNG and JPEG images become a data set's images (docs/design.md 4.8). */
typedef struct {
    int height, width;     /* --image-size; 0: every image must have the first one's size */
    bool crop_center;      /* crop to the target's aspect ratio before resizing */
    int channels;          /* 1 or 3 (grey and colour converted); 0: the first image's */
    const char *cache_dir; /* NULL: $XDG_CACHE_HOME/cvae, else ~/.cache/cvae */
    bool progress;         /* a progress line on stderr while decoding */
    FILE *log;             /* a line per decoded split (NULL: none) */
} cv_image_options;

/* Files named explicitly (NULL: from the data folder). At most one of labels and
 * conditions per split. The format is recognised from each file's content. With
 * test_only, the training split is not read (its files are ignored): the test split's
 * kind comes from its own files and K from n_classes or from them. */
typedef struct {
    const char *train_images, *train_labels, *train_conditions;
    const char *test_images, *test_labels, *test_conditions;
    const char *train_table, *test_table; /* tables of images (--train-csv, --test-csv) */
    const char *condition_columns;        /* a table's columns to condition on, comma-
                                             separated, in order (NULL: table.h's rules) */
    cv_image_options image;
    char *const *names;  /* the names the data must keep to (cvae eval: the model's), n_names
                            of them, of the kind names_kind: classes, which its class names
                            must be among, or the columns it conditions on; NULL: the
                            data's own */
    int n_names;
    cv_condition_kind names_kind;
    bool test_only;
} cv_data_files;

/* ndims (1 to 4) is the dimension count the file must have; dims (ndims) receives them. */
cv_status cv_idx_read(const char *path, int ndims, int *dims, uint8_t **payload,
                      cv_err *err);
/* An IDX image file of 3 dimensions (n, h, w: dims[3] = 1 channel) or 4 (n, h, w, c). */
cv_status cv_idx_read_images(const char *path, int dims[4], uint8_t **payload, cv_err *err);
/* The same, but an uncompressed file is memory-mapped (private, copy on write) instead of
 * read: m->mapping (m->bytes long) holds the payload, for munmap; a gzip file is read into
 * a malloc'd payload, m->mapping NULL. */
typedef struct {
    void *mapping;
    size_t bytes;
} cv_idx_mapping;
cv_status cv_idx_map_images(const char *path, int dims[4], uint8_t **payload, cv_idx_mapping *m,
                            cv_err *err);
cv_status cv_idx_write(const char *path, int ndims, const int *dims,
                       const uint8_t *payload, bool gzip, cv_err *err);

/* Loads the training split (not with files->test_only) and, when present, the test
 * split: each file from `files`
 * when named there, else from the folder dir (which may be NULL when files name the
 * training images and their conditions). Folder names, each also as NAME.gz for IDX:
 *   train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
 *   t10k-labels-idx1-ubyte (MNIST's); train_images.npy, train_labels.npy or
 *   train_conditions.npy, test_images.npy, test_labels.npy or test_conditions.npy;
 *   and a data set `cvae generate` wrote: images.npy or images-idx3-ubyte (or idx4),
 *   labels.npy, labels-idx1-ubyte or conditions.npy, as a training split only.
 * Two candidates for one file are an error that names both. n_classes (labels only) 0
 * means "from the training labels"; condition vectors take K from their file. When a
 * flag names the training labels or conditions and no test file is named, a test split
 * in the folder with the other kind of condition is left out (test_skipped). */
cv_status cv_data_load_files(const char *dir, const cv_data_files *files, int n_classes,
                             cv_data *data, cv_err *err);
/* Whether the folder and the files are image files (class folders, CelebA's table, or
 * tables named by the files), which cv_data_load_files decodes, rather than IDX or .npy. */
bool cv_data_has_image_files(const char *dir, const cv_data_files *files);
/* cv_data_load_files with every file from the folder. */
cv_status cv_data_load(const char *dir, int n_classes, cv_data *data, cv_err *err);
void cv_data_free(cv_data *data);

/* One file of class labels (IDX idx1-ubyte, or an integer .npy of shape (N,), each 0..255)
 * or of condition vectors (a float32 .npy of shape (N, K), every value finite), as the
 * loader reads them: *labels (n) or *rows (n, *width), malloc'd. */
cv_status cv_labels_read(const char *path, uint8_t **labels, int *n, cv_err *err);
cv_status cv_conditions_read(const char *path, float **rows, int *n, int *width, cv_err *err);

/* D = h * w * channels: the values of one image. */
int cv_split_dim(const cv_split *split);

/* Binarizes a split in place, once: value v (pixel / 255, or the float) becomes 1 (a
 * pixel of 255) with probability v, else 0, with the fixed seed CV_BINARIZE_TEST_SEED,
 * so every run evaluates on the same images. */
void cv_split_binarize(cv_split *split);
void cv_split_free(cv_split *split);

#ifdef __cplusplus
}
#endif

#endif
