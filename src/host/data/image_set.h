/* image_set.h: a data set of PNG and JPEG files, before and after decoding (internal).
 *
 * The images of a split come from class folders (DIR/train/<class>/..., image_folders.c)
 * or from a table (image_table.c); image_set.c decides which, fixes what every image
 * becomes (size, crop, channels), and finds each split's decoded cache (image_cache.c),
 * which it builds when missing or stale and then maps. cvae data reads a set without
 * decoding it (cv_image_set_open); training loads it (cv_data_load_files). docs/design.md
 * 4.8 gives the layouts and the rules.
 */
#ifndef CVAE_DATA_IMAGE_SET_H
#define CVAE_DATA_IMAGE_SET_H

#include <stdbool.h>
#include <stdint.h>

#include "cvae/data.h"
#include "data/image.h"
#include "data/names.h"
#include "util/fileio.h"

/* The images of one split, in order, with their conditions. */
typedef struct {
    int n;
    char **paths;      /* (n) each image's path, as opened */
    char source[CV_PATH_MAX]; /* the class folder (DIR/train) or the table */
    const char *table; /* the table that named them (NULL: class folders) */
    int *line;         /* (n) the table line of each image (NULL: class folders) */
    uint8_t *labels;   /* (n) class indices, or NULL */
    float *conditions; /* (n, width) condition vectors, or NULL */
    int width;
    int ignored;       /* files in class folders that are not PNG or JPEG images */
} cv_image_list;

void cv_image_list_free(cv_image_list *l);

/* The images of the class folders in split_dir (DIR/train or DIR/test), each folder a
 * class. With classes->count, the folders must be among those names (a test split, or a
 * checkpoint's) and take their indices; otherwise classes receives the sorted folder
 * names. Images are sorted by class, then by path within it. */
cv_status cv_class_folders(const char *split_dir, cv_names *classes, cv_image_list *list,
                           cv_err *err);

/* What a table's rows say: which column names each image, and the condition. */
typedef struct {
    const char *condition_columns; /* the columns to condition on, comma-separated, or NULL */
    cv_names *names;     /* in: the class names or condition columns to keep to (count 0:
                            the table's own); out: the classes of label names, or the
                            condition columns */
    cv_condition_kind kind; /* out */
    bool numeric_labels;    /* out: labels were numbers (no names) */
    const char *names_from; /* in: "training split" or "model" when names came from one, */
    cv_condition_kind names_kind; /* whose kind a table of the other kind is refused by */
} cv_table_request;

/* The images a table names (paths relative to its folder), with their labels or
 * condition vectors, into list. A table in CelebA's attribute layout names its images in
 * img_align_celeba/ beside it when that folder exists; with CelebA's
 * list_eval_partition.txt beside it, the rows of partition 0 go to list and, when test is
 * given, those of partition 2 to test (validation, 1, to neither). */
cv_status cv_table_images(const char *path, cv_table_request *req, cv_image_list *list,
                          cv_image_list *test, cv_err *err);

/* The decoded cache of one split: DIR/<name>-<split>.npy (uint8 (n, h, w[, c])) and its
 * key file beside it. */
typedef enum { CV_CACHE_MISSING, CV_CACHE_STALE, CV_CACHE_FRESH } cv_cache_state;

typedef struct {
    char npy[CV_PATH_MAX], key_file[CV_PATH_MAX + 8];
    char key[65];   /* SHA-256 of the file list, sizes, times and the target, hex */
    cv_cache_state state;
} cv_cache_entry;

/* The cache folder the options name, or the default one. */
cv_status cv_cache_dir(const cv_image_options *o, char dir[CV_PATH_MAX], cv_err *err);
/* Stats every file of the list (a missing one is an error naming it, and its table line)
 * and finds the split's cache entry and its state. */
cv_status cv_cache_locate(const char *dir, const char *split, const cv_image_list *l,
                          const cv_image_target *t, cv_cache_entry *e, cv_err *err);
/* Decodes every image of the list into the entry (in parallel), under the cache folder's
 * lock; an entry another process made fresh meanwhile is kept; on failure nothing is left
 * (folders it made removed). what: "training" or "test". */
cv_status cv_cache_build(cv_cache_entry *e, const cv_image_list *l, const cv_image_target *t,
                         const cv_image_options *o, const char *what, cv_err *err);
/* Maps a fresh entry's images into s (n, h, w, c as the target says). */
cv_status cv_cache_map(const cv_cache_entry *e, const cv_image_target *t, int n, cv_split *s,
                       cv_err *err);

/* A data set of image files, read up to its decoding. */
typedef struct {
    cv_image_list train, test;  /* train.n == 0 with test_only */
    char train_from[CV_PATH_MAX + 32], test_from[CV_PATH_MAX + 32]; /* for messages */
    cv_names names;
    cv_condition_kind condition;
    int cond_width;
    bool numeric_labels;
    cv_image_target target;
    char first[CV_PATH_MAX];    /* the image the target's size came from */
    char cache_dir[CV_PATH_MAX];
    cv_cache_entry cache[2];    /* training, test */
} cv_image_set;

/* Whether a folder holds image files as cvae reads them: class folders (DIR/train, or
 * DIR/test for a test split alone) or CelebA's attribute table. */
bool cv_image_folder_present(const char *dir, bool test_only);
/* The set's images, conditions, target and cache state, without decoding anything. */
cv_status cv_image_set_open(const char *dir, const cv_data_files *files, int n_classes,
                            cv_image_set *s, cv_err *err);
/* Decodes what is not cached yet and maps the cache into d. */
cv_status cv_image_set_load(cv_image_set *s, const cv_image_options *o, cv_data *d,
                            cv_err *err);
void cv_image_set_free(cv_image_set *s);

#endif
