/* dataset.c: a data folder (or explicitly named files) into training and test splits,
 * with every cross-file check: counts, image shapes, label ranges, condition widths.
 *
 * Each file's format is recognised from its content: the NumPy magic (or a file cut
 * inside it) means .npy, anything else is read as IDX (plain or gzip). A folder of image
 * files, or a table of them, goes to image_set.c instead.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cvae/data.h"
#include "cvae/npy.h"
#include "data/image_set.h"
#include "util/fileio.h"

#define NAME_MAX_CANDIDATES 6

/* The names a folder may give one file, in the order they are looked for. */
typedef struct {
    const char *what; /* for messages: "training images" */
    const char *names[NAME_MAX_CANDIDATES];
} file_slot;

static const file_slot TRAIN_IMAGES = {
    "training images",
    {"train-images-idx3-ubyte", "train_images.npy", "images.npy", "images-idx3-ubyte",
     "images-idx4-ubyte"}};
static const file_slot TRAIN_LABELS = {
    "training labels", {"train-labels-idx1-ubyte", "train_labels.npy", "labels.npy",
                        "labels-idx1-ubyte"}};
static const file_slot TRAIN_CONDITIONS = {"training conditions",
                                           {"train_conditions.npy", "conditions.npy"}};
static const file_slot TEST_IMAGES = {"test images",
                                      {"t10k-images-idx3-ubyte", "test_images.npy"}};
static const file_slot TEST_LABELS = {"test labels",
                                      {"t10k-labels-idx1-ubyte", "test_labels.npy"}};
static const file_slot TEST_CONDITIONS = {"test conditions", {"test_conditions.npy"}};

/* DIR/NAME, or DIR/NAME.gz for an IDX name when only that exists. */
static bool find_name(const char *dir, const char *name, char *out, size_t size) {
    snprintf(out, size, "%s/%s", dir, name);
    if (cv_path_exists(out)) return true;
    if (strstr(name, ".npy")) return false;
    snprintf(out, size, "%s/%s.gz", dir, name);
    return cv_path_exists(out);
}

/* The slot's file in dir: *found false when no candidate exists; two that exist are an
 * error naming both, since either could be meant. */
static cv_status find_slot(const char *dir, const file_slot *slot, char out[CV_PATH_MAX],
                           bool *found, cv_err *err) {
    *found = false;
    if (!dir) return CV_OK;
    char path[CV_PATH_MAX];
    for (int i = 0; i < NAME_MAX_CANDIDATES && slot->names[i]; i++) {
        if (!find_name(dir, slot->names[i], path, sizeof path)) continue;
        if (*found)
            return cv_fail(err, CV_ERR_FORMAT,
                           "%s: holds both %s and %s as its %s; name the one to use with "
                           "a file flag (cvae train --help)",
                           dir, out, path, slot->what);
        snprintf(out, CV_PATH_MAX, "%s", path);
        *found = true;
    }
    return CV_OK;
}

/* The explicit path when given, else the folder's. */
static cv_status resolve(const char *dir, const char *given, const file_slot *slot,
                         char out[CV_PATH_MAX], bool *found, cv_err *err) {
    if (!given) return find_slot(dir, slot, out, found, err);
    if (!cv_path_exists(given))
        return cv_fail(err, CV_ERR_IO, "%s: no such file (the %s)", given, slot->what);
    snprintf(out, CV_PATH_MAX, "%s", given);
    *found = true;
    return CV_OK;
}

/* ---------- reading one file ---------- */

static cv_status npy_images(const char *path, cv_split *s, cv_err *err) {
    cv_npy_array a;
    cv_status st = cv_npy_map(path, &a, err);
    if (st) return st;
    if (a.dtype != CV_NPY_U8 && a.dtype != CV_NPY_F32)
        st = cv_fail(err, CV_ERR_FORMAT, "%s: images are %s; expected uint8 (|u1) or float32 "
                     "(<f4) values in [0, 1]", path, cv_npy_descr(a.dtype));
    else if (a.ndims != 3 && a.ndims != 4)
        st = cv_fail(err, CV_ERR_FORMAT, "%s: images have %d dimensions; expected (N, H, W) or "
                     "(N, H, W, C)", path, a.ndims);
    const size_t count = a.bytes / cv_npy_item_size(a.dtype);
    const float *f = a.data;
    for (size_t i = 0; !st && a.dtype == CV_NPY_F32 && i < count; i++)
        if (!(f[i] >= 0.0f && f[i] <= 1.0f))
            st = cv_fail(err, CV_ERR_FORMAT, "%s: value %g at element %zu is not in [0, 1] "
                         "(float images hold intensities in [0, 1])", path, f[i], i);
    if (st) {
        cv_npy_free(&a);
        return st;
    }
    s->n = (int)a.dims[0];
    s->h = (int)a.dims[1];
    s->w = (int)a.dims[2];
    s->channels = a.ndims == 4 ? (int)a.dims[3] : 1;
    if (a.dtype == CV_NPY_U8)
        s->pixels = a.data;
    else
        s->fpixels = a.data;
    s->mapping = a.mapping;
    s->mapping_bytes = a.mapping_bytes;
    return CV_OK;
}

/* Images are mapped, not copied, where the file allows (an uncompressed IDX or .npy). */
static cv_status read_images(const char *path, cv_split *s, cv_err *err) {
    if (cv_npy_sniff(path)) return npy_images(path, s, err);
    int dims[4];
    cv_idx_mapping m;
    cv_status st = cv_idx_map_images(path, dims, &s->pixels, &m, err);
    if (st) return st;
    s->mapping = m.mapping;
    s->mapping_bytes = m.bytes;
    s->n = dims[0];
    s->h = dims[1];
    s->w = dims[2];
    s->channels = dims[3];
    return CV_OK;
}

/* Element i of an integer array as a signed value; false when it does not fit. */
static bool npy_int_at(const cv_npy_array *a, size_t i, int64_t *v) {
    const uint8_t *p = a->data;
    switch (a->dtype) {
    case CV_NPY_U8: *v = p[i]; return true;
    case CV_NPY_I8: *v = ((const int8_t *)p)[i]; return true;
    case CV_NPY_U16: *v = ((const uint16_t *)p)[i]; return true;
    case CV_NPY_I16: *v = ((const int16_t *)p)[i]; return true;
    case CV_NPY_U32: *v = ((const uint32_t *)p)[i]; return true;
    case CV_NPY_I32: *v = ((const int32_t *)p)[i]; return true;
    case CV_NPY_I64: *v = ((const int64_t *)p)[i]; return true;
    case CV_NPY_U64: {
        uint64_t u = ((const uint64_t *)p)[i];
        *v = (int64_t)u;
        return u <= INT64_MAX;
    }
    default: return false;
    }
}

/* Integer class indices of shape (N,), each 0..255, into bytes. */
static cv_status npy_labels(const char *path, uint8_t **labels, int *n, cv_err *err) {
    cv_npy_array a;
    cv_status st = cv_npy_read(path, &a, err);
    if (st) return st;
    if (!cv_npy_is_integer(a.dtype))
        st = cv_fail(err, CV_ERR_FORMAT, "%s: labels are %s; expected integer class indices",
                     path, cv_npy_descr(a.dtype));
    else if (a.ndims != 1)
        st = cv_fail(err, CV_ERR_FORMAT, "%s: labels have %d dimensions; expected shape (N,) "
                     "(condition vectors go in a float32 conditions file)", path, a.ndims);
    uint8_t *out = st ? NULL : malloc((size_t)a.dims[0]);
    if (!st && !out)
        st = cv_fail(err, CV_ERR_NOMEM, "%s: out of memory for %lld labels", path,
                     (long long)a.dims[0]);
    for (size_t i = 0; !st && i < (size_t)a.dims[0]; i++) {
        int64_t v = -1;
        if (!npy_int_at(&a, i, &v) || v < 0 || v >= CV_MAX_CLASSES)
            st = cv_fail(err, CV_ERR_FORMAT, "%s: label at index %zu is out of range 0..%d",
                         path, i, CV_MAX_CLASSES - 1);
        else
            out[i] = (uint8_t)v;
    }
    if (!st) *n = (int)a.dims[0];
    if (st) free(out);
    cv_npy_free(&a);
    if (!st) *labels = out;
    return st;
}

cv_status cv_labels_read(const char *path, uint8_t **labels, int *n, cv_err *err) {
    if (cv_npy_sniff(path)) return npy_labels(path, labels, n, err);
    int dims[4];
    cv_status st = cv_idx_read(path, 1, dims, labels, err);
    if (!st) *n = dims[0];
    return st;
}

cv_status cv_conditions_read(const char *path, float **rows, int *n, int *width, cv_err *err) {
    cv_npy_array a;
    cv_status st = cv_npy_read(path, &a, err);
    if (st == CV_ERR_FORMAT && !cv_npy_sniff(path))
        return cv_fail(err, CV_ERR_FORMAT, "%s: not a .npy file; condition vectors are read "
                       "from float32 NumPy arrays of shape (N, K)", path);
    if (st) return st;
    if (a.dtype != CV_NPY_F32)
        st = cv_fail(err, CV_ERR_FORMAT, "%s: conditions are %s; expected float32 (<f4)", path,
                     cv_npy_descr(a.dtype));
    else if (a.ndims != 2)
        st = cv_fail(err, CV_ERR_FORMAT, "%s: conditions have %d dimensions; expected shape "
                     "(N, K)", path, a.ndims);
    else if (a.dims[1] > CV_MAX_COND_WIDTH)
        st = cv_fail(err, CV_ERR_FORMAT, "%s: conditions of width %lld are over the %d "
                     "supported", path, (long long)a.dims[1], CV_MAX_COND_WIDTH);
    const float *f = a.data;
    for (size_t i = 0; !st && i < a.bytes / sizeof(float); i++)
        if (!isfinite(f[i]))
            st = cv_fail(err, CV_ERR_FORMAT, "%s: row %lld holds a NaN or Inf (column %lld)",
                         path, (long long)(i / (size_t)a.dims[1]),
                         (long long)(i % (size_t)a.dims[1]));
    if (st) {
        cv_npy_free(&a);
        return st;
    }
    *rows = a.data;
    *width = (int)a.dims[1];
    *n = (int)a.dims[0];
    return CV_OK;
}

/* ---------- splits ---------- */

/* The paths of one split's files; conditions[0] or labels[0] is "" when absent. */
typedef struct {
    char images[CV_PATH_MAX], labels[CV_PATH_MAX], conditions[CV_PATH_MAX];
} split_paths;

/* The model's limits on an image, checked here so that every later h * w * c fits an int. */
static cv_status check_image_size(const char *path, const cv_split *s, cv_err *err) {
    if (s->h > CV_MAX_IMAGE_SIDE || s->w > CV_MAX_IMAGE_SIDE || s->channels > CV_MAX_IMAGE_SIDE)
        return cv_fail(err, CV_ERR_FORMAT, "%s: images of %dx%dx%d are over %d per side", path,
                       s->h, s->w, s->channels, CV_MAX_IMAGE_SIDE);
    if ((int64_t)s->h * s->w * s->channels > CV_MAX_IMAGE_VALUES)
        return cv_fail(err, CV_ERR_FORMAT, "%s: images of %dx%dx%d are over the %d values "
                       "supported", path, s->h, s->w, s->channels, CV_MAX_IMAGE_VALUES);
    return CV_OK;
}

static cv_status load_split(const split_paths *p, cv_split *s, cv_err *err) {
    int n_cond = 0;
    cv_status st = read_images(p->images, s, err);
    if (!st) st = check_image_size(p->images, s, err);
    const char *cond_path = p->labels[0] ? p->labels : p->conditions;
    if (!st && p->labels[0]) st = cv_labels_read(p->labels, &s->labels, &n_cond, err);
    if (!st && p->conditions[0])
        st = cv_conditions_read(p->conditions, &s->conditions, &n_cond, &s->cond_width, err);
    if (!st && n_cond != s->n)
        st = cv_fail(err, CV_ERR_FORMAT, "%s: holds %d %s but %s holds %d images", cond_path,
                     n_cond, p->labels[0] ? "labels" : "condition rows", p->images, s->n);
    if (st) cv_split_free(s);
    return st;
}

/* Which files make the training split: the flags first, then the folder. */
static cv_status train_paths(const char *dir, const cv_data_files *f, split_paths *p,
                             cv_err *err) {
    bool img, lab, cond;
    memset(p, 0, sizeof *p);
    if (f->train_labels && f->train_conditions)
        return cv_fail(err, CV_ERR_USAGE, "--train-labels and --train-conditions both given; "
                       "a split has one kind of condition");
    cv_status st = resolve(dir, f->train_images, &TRAIN_IMAGES, p->images, &img, err);
    if (st) return st;
    if (!img)
        return dir ? cv_fail(err, CV_ERR_IO, "%s: no training images (train-images-idx3-ubyte"
                             "[.gz], train_images.npy or images.npy; PNG or JPEG files in "
                             "train/<class>/ folders, with list_attr_celeba.txt, or named by "
                             "--train-csv)", dir)
                   : cv_fail(err, CV_ERR_USAGE, "no training images: give --data or "
                             "--train-images");
    const bool from_folder = !f->train_labels && !f->train_conditions;
    st = resolve(from_folder ? dir : NULL, f->train_labels, &TRAIN_LABELS, p->labels, &lab, err);
    if (!st)
        st = resolve(from_folder ? dir : NULL, f->train_conditions, &TRAIN_CONDITIONS,
                     p->conditions, &cond, err);
    if (st) return st;
    if (lab && cond)
        return cv_fail(err, CV_ERR_FORMAT, "%s: holds both %s and %s; choose with "
                       "--train-labels or --train-conditions", dir, p->labels, p->conditions);
    if (!lab && !cond)
        return cv_fail(err, CV_ERR_IO, "%s: no training labels or conditions beside them "
                       "(train-labels-idx1-ubyte[.gz], train_labels.npy, train_conditions.npy, "
                       "...); name one with --train-labels or --train-conditions", p->images);
    return CV_OK;
}

/* Whether the folder's test split is of the other kind than the training condition a
 * flag named (MNIST's t10k labels beside --train-conditions): it goes with the folder's
 * own training files, so it is left out, not refused. */
static bool folder_test_of_other_kind(const char *dir, const cv_data_files *f,
                                      cv_condition_kind kind) {
    if (!f->train_labels && !f->train_conditions) return false;
    if (f->test_images || f->test_labels || f->test_conditions) return false;
    char path[CV_PATH_MAX];
    bool found = false;
    find_slot(dir, kind == CV_COND_LABELS ? &TEST_CONDITIONS : &TEST_LABELS, path, &found, NULL);
    return found;
}

/* The test split's files, of d's condition kind; *present false without one, and with
 * d->test_skipped when the folder's is of the other kind (folder_test_of_other_kind). */
static cv_status test_paths(const char *dir, const cv_data_files *f, cv_data *d,
                            split_paths *p, bool *present, cv_err *err) {
    const cv_condition_kind kind = d->condition;
    bool img, lab = false, cond = false;
    memset(p, 0, sizeof *p);
    const char *wrong = kind == CV_COND_LABELS ? f->test_conditions : f->test_labels;
    if (wrong)
        return cv_fail(err, CV_ERR_USAGE, "%s: the training split has %s, so the test split "
                       "needs %s too", wrong,
                       kind == CV_COND_LABELS ? "labels" : "condition vectors",
                       kind == CV_COND_LABELS ? "labels" : "condition vectors");
    cv_status st = resolve(dir, f->test_images, &TEST_IMAGES, p->images, &img, err);
    if (!st && kind == CV_COND_LABELS)
        st = resolve(dir, f->test_labels, &TEST_LABELS, p->labels, &lab, err);
    if (!st && kind == CV_COND_VECTORS)
        st = resolve(dir, f->test_conditions, &TEST_CONDITIONS, p->conditions, &cond, err);
    if (st) return st;
    const char *what = kind == CV_COND_LABELS ? "labels" : "conditions";
    d->test_skipped = img && !lab && !cond && folder_test_of_other_kind(dir, f, kind);
    if (d->test_skipped) return CV_OK;
    char other[CV_PATH_MAX];
    bool other_kind = false;
    if (img && !lab && !cond)
        find_slot(dir, kind == CV_COND_LABELS ? &TEST_CONDITIONS : &TEST_LABELS, other,
                  &other_kind, NULL);
    if (other_kind)
        return cv_fail(err, CV_ERR_IO, "%s: the test split holds the other kind of "
                       "condition (%s) than the training split (%s); a data set has one kind: "
                       "give test %s, or name test files of that kind with --test-images and "
                       "--test-%s", other, kind == CV_COND_LABELS ? "condition vectors" : "class "
                       "labels", kind == CV_COND_LABELS ? "class labels" : "condition vectors",
                       what, what);
    if (img && !lab && !cond)
        return cv_fail(err, CV_ERR_IO, "%s: test images without test %s (%s)", p->images, what,
                       kind == CV_COND_LABELS ? "t10k-labels-idx1-ubyte[.gz] or test_labels.npy"
                                              : "test_conditions.npy");
    if (!img && (lab || cond))
        return cv_fail(err, CV_ERR_IO, "%s: test %s without test images (t10k-images-idx3-"
                       "ubyte or test_images.npy)", lab ? p->labels : p->conditions, what);
    *present = img;
    return CV_OK;
}

static int largest_label(const cv_split *s) {
    int max_label = 0;
    for (int i = 0; i < s->n; i++)
        if (s->labels[i] > max_label) max_label = s->labels[i];
    return max_label;
}

/* The largest training label sets K unless n_classes asks for more. */
static cv_status set_classes(const char *path, int n_classes, cv_data *d, cv_err *err) {
    const int max_label = largest_label(&d->train);
    if (n_classes == 0) n_classes = max_label + 1;
    if (max_label >= n_classes)
        return cv_fail(err, CV_ERR_FORMAT, "%s: label %d is not among the %d classes (0..%d) "
                       "that --classes or the model gives", path, max_label, n_classes,
                       n_classes - 1);
    d->cond_width = n_classes;
    return CV_OK;
}

/* --classes given for condition vectors, which take K from their file at path. */
static cv_status classes_for_vectors(int width, const char *path, cv_err *err) {
    return cv_fail(err, CV_ERR_USAGE, "--classes is for class labels; condition vectors take "
                   "their width (%d) from %s", width, path);
}

/* The training split, its condition kind and K. */
static cv_status load_training(const char *dir, const cv_data_files *f, int n_classes,
                               cv_data *d, cv_err *err) {
    split_paths tp;
    cv_status st = train_paths(dir, f, &tp, err);
    if (!st) st = load_split(&tp, &d->train, err);
    if (st) return st;
    d->condition = d->train.conditions ? CV_COND_VECTORS : CV_COND_LABELS;
    if (d->condition == CV_COND_VECTORS && n_classes)
        return classes_for_vectors(d->train.cond_width, tp.conditions, err);
    if (d->condition == CV_COND_LABELS) return set_classes(tp.labels, n_classes, d, err);
    d->cond_width = d->train.cond_width;
    return CV_OK;
}

/* Without a training split (test_only), the test split's kind from its own files: the
 * flags', else the folder's; class labels when neither names one. */
static cv_status test_only_kind(const char *dir, const cv_data_files *f, cv_data *d,
                                cv_err *err) {
    if (f->test_labels && f->test_conditions)
        return cv_fail(err, CV_ERR_USAGE, "--test-labels and --test-conditions both given; a "
                       "split has one kind of condition");
    bool lab = f->test_labels != NULL, cond = f->test_conditions != NULL;
    char labels[CV_PATH_MAX], conditions[CV_PATH_MAX];
    cv_status st = CV_OK;
    if (!lab && !cond) {
        st = find_slot(dir, &TEST_LABELS, labels, &lab, err);
        if (!st) st = find_slot(dir, &TEST_CONDITIONS, conditions, &cond, err);
        if (!st && lab && cond)
            st = cv_fail(err, CV_ERR_FORMAT, "%s: holds both %s and %s; choose with "
                         "--test-labels or --test-conditions", dir, labels, conditions);
    }
    d->condition = cond ? CV_COND_VECTORS : CV_COND_LABELS;
    return st;
}

/* Without a training split, K from the test split: n_classes (else its largest label + 1),
 * or the width of its condition vectors. */
static cv_status set_test_only_width(const char *path, int n_classes, cv_data *d,
                                     cv_err *err) {
    if (d->condition == CV_COND_LABELS) {
        d->cond_width = n_classes ? n_classes : largest_label(&d->test) + 1;
        return CV_OK;
    }
    if (n_classes) return classes_for_vectors(d->test.cond_width, path, err);
    d->cond_width = d->test.cond_width;
    return CV_OK;
}

/* The test split against the training one (when read): image shape, condition width; and
 * every label below K. */
static cv_status check_test(const split_paths *p, const cv_data *d, cv_err *err) {
    const cv_split *tr = &d->train, *te = &d->test;
    if (tr->n && (te->h != tr->h || te->w != tr->w || te->channels != tr->channels))
        return cv_fail(err, CV_ERR_FORMAT, "%s: images are %dx%dx%d but training images are "
                       "%dx%dx%d", p->images, te->h, te->w, te->channels, tr->h, tr->w,
                       tr->channels);
    if (tr->n && te->conditions && te->cond_width != tr->cond_width)
        return cv_fail(err, CV_ERR_FORMAT, "%s: condition rows have width %d but the training "
                       "conditions have %d", p->conditions, te->cond_width, tr->cond_width);
    for (int i = 0; te->labels && i < te->n; i++)
        if (te->labels[i] >= d->cond_width)
            return cv_fail(err, CV_ERR_FORMAT,
                           "%s: label %d at index %d is not among the %d classes (0..%d)",
                           p->labels, te->labels[i], i, d->cond_width, d->cond_width - 1);
    return CV_OK;
}

bool cv_data_has_image_files(const char *dir, const cv_data_files *f) {
    if (f->train_table || f->test_table) return true;
    if (!dir || f->train_images || f->train_labels || f->train_conditions || f->test_images ||
        f->test_labels || f->test_conditions)
        return false;
    char path[CV_PATH_MAX];
    bool idx_or_npy = false;
    find_slot(dir, f->test_only ? &TEST_IMAGES : &TRAIN_IMAGES, path, &idx_or_npy, NULL);
    return !idx_or_npy && cv_image_folder_present(dir, f->test_only);
}

/* A data set of image files: read, decoded where the cache is not fresh, and mapped. */
static cv_status load_image_files(const char *dir, const cv_data_files *f, int n_classes,
                                  cv_data *d, cv_err *err) {
    cv_image_set set;
    cv_status st = cv_image_set_open(dir, f, n_classes, &set, err);
    if (st) return st;
    st = cv_image_set_load(&set, &f->image, d, err);
    cv_image_set_free(&set);
    return st;
}

cv_status cv_data_load_files(const char *dir, const cv_data_files *files, int n_classes,
                             cv_data *d, cv_err *err) {
    static const cv_data_files none = {0};
    if (!files) files = &none;
    memset(d, 0, sizeof *d);
    struct stat sb;
    if (dir && stat(dir, &sb) != 0) return cv_fail(err, CV_ERR_IO, "%s: no such data folder", dir);
    if (dir && !S_ISDIR(sb.st_mode))
        return cv_fail(err, CV_ERR_IO, "%s: is not a folder (--data names the folder of the "
                       "data files)", dir);
    if (cv_data_has_image_files(dir, files)) return load_image_files(dir, files, n_classes, d, err);
    const cv_image_options *io = &files->image;
    const char *image_flag = io->height           ? "--image-size"
                             : io->crop_center    ? "--crop"
                             : io->channels       ? "--channels"
                             : files->condition_columns ? "--condition-columns"
                                                        : NULL;
    if (image_flag)
        return cv_fail(err, CV_ERR_USAGE, "%s applies to PNG and JPEG images (class folders or "
                       "a table); %s holds IDX or .npy files", image_flag,
                       dir ? dir : "the data");
    split_paths vp;
    bool has_test = false;
    cv_status st = files->test_only ? test_only_kind(dir, files, d, err)
                                    : load_training(dir, files, n_classes, d, err);
    if (!st) st = test_paths(dir, files, d, &vp, &has_test, err);
    if (!st && has_test) st = load_split(&vp, &d->test, err);
    if (!st && has_test && files->test_only)
        st = set_test_only_width(vp.conditions, n_classes, d, err);
    if (!st && has_test) st = check_test(&vp, d, err);
    if (st) cv_data_free(d);
    return st;
}

cv_status cv_data_load(const char *dir, int n_classes, cv_data *d, cv_err *err) {
    return cv_data_load_files(dir, NULL, n_classes, d, err);
}
