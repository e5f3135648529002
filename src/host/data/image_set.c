/* image_set.c: a data set of PNG and JPEG files: where each split's images come from, what
 * they are conditioned on, what each image becomes, and its decoded cache (image_set.h).
 *
 * The training split: --train-csv, else DIR/train's class folders, else CelebA's
 * DIR/list_attr_celeba.txt. The test split: --test-csv, else DIR/test's class folders,
 * else the rows of CelebA's test partition; none otherwise. The test split keeps to the
 * training split's classes (or the model's, for a test split alone) and conditions on
 * the same columns.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/image_set.h"

#define CELEBA_TABLE "list_attr_celeba.txt"

static bool is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* DIR/name into out, when it exists (a folder when folder). */
static bool in_dir(const char *dir, const char *name, bool folder, char out[CV_PATH_MAX]) {
    if (!dir || snprintf(out, CV_PATH_MAX, "%s/%s", dir, name) >= CV_PATH_MAX) return false;
    return folder ? is_dir(out) : cv_path_exists(out);
}

bool cv_image_folder_present(const char *dir, bool test_only) {
    char p[CV_PATH_MAX];
    return in_dir(dir, test_only ? "test" : "train", true, p) || in_dir(dir, CELEBA_TABLE, false, p);
}

/* The names joined by commas (the columns a test table conditions on), malloc'd. */
static char *joined(const cv_names *n) {
    size_t len = 1;
    for (int i = 0; i < n->count; i++) len += strlen(n->names[i]) + 1;
    char *s = malloc(len);
    if (!s) return NULL;
    s[0] = '\0';
    for (int i = 0; i < n->count; i++) strcat(strcat(s, i ? "," : ""), n->names[i]);
    return s;
}

static const char *kind_name(cv_condition_kind k) {
    return k == CV_COND_LABELS ? "class labels" : "condition vectors";
}

/* A table's images into list (and CelebA's test partition into test, when given),
 * keeping to s->names when it holds some; a test split (not training) keeps to the
 * training split's kind of condition. */
static cv_status from_table(cv_image_set *s, const char *table, const char *columns,
                            bool training, cv_image_list *list, cv_image_list *test,
                            cv_err *err) {
    cv_names own = {0};
    cv_table_request req = {columns, s->names.count ? &s->names : &own, CV_COND_LABELS, false,
                            s->names.count ? (s->train.n ? "training split" : "model") : NULL,
                            s->condition};
    cv_status st = cv_table_images(table, &req, list, test, err);
    const bool after_train = !training && s->train.n;
    if (!st && own.count && after_train && s->condition == CV_COND_LABELS && s->numeric_labels)
        st = cv_fail(err, CV_ERR_FORMAT, "%s: labels are class names, but the training "
                     "split's are class numbers", table);
    if (!st && own.count) {
        s->names = own;
        own = (cv_names){0};
    }
    cv_names_free(&own);
    if (st) return st;
    if (after_train && req.kind != s->condition)
        return cv_fail(err, CV_ERR_FORMAT, "%s: holds %s, but the training split has %s", table,
                       kind_name(req.kind), kind_name(s->condition));
    s->condition = req.kind;
    s->numeric_labels = req.numeric_labels;
    return CV_OK;
}

static cv_status from_folders(cv_image_set *s, const char *split_dir, cv_image_list *list,
                              cv_err *err) {
    if ((s->train.n || s->names.count) && s->condition != CV_COND_LABELS)
        return cv_fail(err, CV_ERR_FORMAT, "%s: class folders, but the %s takes condition "
                       "vectors", split_dir, s->train.n ? "training split" : "model");
    if (s->train.n && s->numeric_labels)
        return cv_fail(err, CV_ERR_FORMAT, "%s: class folders are named, but the training "
                       "split's classes are numbers", split_dir);
    s->condition = CV_COND_LABELS;
    return cv_class_folders(split_dir, &s->names, list, err);
}

/* The training split, and CelebA's test partition with it when no test split is named. */
static cv_status open_train(const char *dir, const cv_data_files *f, cv_image_set *s,
                            cv_err *err) {
    char path[CV_PATH_MAX], test_dir[CV_PATH_MAX];
    const bool test_named = f->test_table || in_dir(dir, "test", true, test_dir);
    const char *table = f->train_table;
    if (!table && in_dir(dir, "train", true, path)) {
        snprintf(s->train_from, sizeof s->train_from, "class folders in %s", path);
        return from_folders(s, path, &s->train, err);
    }
    if (!table && in_dir(dir, CELEBA_TABLE, false, path)) table = path;
    if (!table)
        return cv_fail(err, CV_ERR_IO, "%s: no training images (train/<class>/ folders, "
                       CELEBA_TABLE ", or --train-csv)", dir ? dir : ".");
    snprintf(s->train_from, sizeof s->train_from, "table %s", table);
    cv_status st = from_table(s, table, f->condition_columns, true, &s->train,
                              test_named ? NULL : &s->test, err);
    if (!st && s->test.n) snprintf(s->test_from, sizeof s->test_from, "table %s (partition 2)", table);
    return st;
}

/* The test split alone (cvae eval), from the flags or the folder, in the model's terms. */
static cv_status open_test(const char *dir, const cv_data_files *f, cv_image_set *s,
                           cv_err *err) {
    if (s->test.n) return CV_OK; /* CelebA's partition, read with the training rows */
    char path[CV_PATH_MAX];
    char *columns = s->condition == CV_COND_VECTORS && s->names.count ? joined(&s->names) : NULL;
    cv_status st = CV_OK;
    if (s->condition == CV_COND_VECTORS && s->names.count && !columns)
        return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    const char *cols = columns ? columns : f->condition_columns;
    if (f->test_table) {
        snprintf(s->test_from, sizeof s->test_from, "table %s", f->test_table);
        st = from_table(s, f->test_table, cols, false, &s->test, NULL, err);
    } else if (in_dir(dir, "test", true, path)) {
        snprintf(s->test_from, sizeof s->test_from, "class folders in %s", path);
        st = from_folders(s, path, &s->test, err);
    } else if (!s->train.n && in_dir(dir, CELEBA_TABLE, false, path)) {
        cv_image_list train;
        snprintf(s->test_from, sizeof s->test_from, "table %s (partition 2)", path);
        st = from_table(s, path, cols, true, &train, &s->test, err);
        if (!st) cv_image_list_free(&train);
    }
    free(columns);
    return st;
}

/* K: the names, or the classes asked for (else the largest training label + 1), or the
 * vectors' width; and every label below it. */
static cv_status set_width(cv_image_set *s, int n_classes, cv_err *err) {
    const cv_image_list *first = s->train.n ? &s->train : &s->test;
    if (s->condition == CV_COND_VECTORS) {
        if (n_classes)
            return cv_fail(err, CV_ERR_USAGE, "--classes is for class labels; the table's "
                           "conditions are %d columns", first->width);
        s->cond_width = first->width;
        return CV_OK;
    }
    if (s->names.count && n_classes && n_classes != s->names.count)
        return cv_fail(err, CV_ERR_USAGE, "--classes %d, but the data names %d classes",
                       n_classes, s->names.count);
    int largest = 0;
    for (int i = 0; i < first->n; i++)
        if (first->labels[i] > largest) largest = first->labels[i];
    s->cond_width = s->names.count ? s->names.count : n_classes ? n_classes : largest + 1;
    for (int k = 0; k < 2; k++) {
        const cv_image_list *l = k ? &s->test : &s->train;
        for (int i = 0; i < l->n; i++)
            if (l->labels[i] >= s->cond_width)
                return cv_fail(err, CV_ERR_FORMAT, "%s: label %d of %s is not below --classes "
                               "%d", l->table ? l->table : l->source, l->labels[i], l->paths[i],
                               s->cond_width);
    }
    return CV_OK;
}

/* What every image becomes: the options' size and channels, else the first image's. */
static cv_status fix_target(const cv_image_options *o, cv_image_set *s, cv_err *err) {
    const cv_image_list *first = s->train.n ? &s->train : &s->test;
    cv_image_target *t = &s->target;
    *t = (cv_image_target){o->height, o->width, o->channels, o->height > 0, o->crop_center,
                           o->channels > 0, s->first};
    snprintf(s->first, sizeof s->first, "%s", first->paths[0]);
    cv_status st = CV_OK;
    if (!t->resize || !t->convert) {
        cv_image_scratch scratch = {0};
        cv_image_info info;
        size_t len = 0;
        st = cv_image_read_file(s->first, &scratch, &len, err);
        if (!st) st = cv_image_probe(s->first, scratch.file, len, &info, err);
        cv_image_scratch_free(&scratch);
        if (st && first->line) { /* a table's row: say which */
            const cv_err why = *err;
            return cv_fail(err, st, "%s: line %d: %s", first->table, first->line[0], why.msg);
        }
        if (st) return st;
        if (!t->resize) t->height = info.height, t->width = info.width;
        if (!t->convert) t->channels = info.channels >= 3 ? 3 : 1;
    }
    if ((int64_t)t->height * t->width * t->channels > CV_MAX_IMAGE_VALUES)
        return cv_fail(err, CV_ERR_FORMAT, "%s: images of %dx%dx%d are over the %d values cvae "
                       "takes; give a smaller --image-size", s->first, t->height, t->width,
                       t->channels, CV_MAX_IMAGE_VALUES);
    return CV_OK;
}

static cv_status locate_caches(const cv_image_options *o, cv_image_set *s, cv_err *err) {
    cv_status st = cv_cache_dir(o, s->cache_dir, err);
    if (!st && s->train.n)
        st = cv_cache_locate(s->cache_dir, "train", &s->train, &s->target, &s->cache[0], err);
    if (!st && s->test.n)
        st = cv_cache_locate(s->cache_dir, "test", &s->test, &s->target, &s->cache[1], err);
    return st;
}

cv_status cv_image_set_open(const char *dir, const cv_data_files *f, int n_classes,
                            cv_image_set *s, cv_err *err) {
    memset(s, 0, sizeof *s);
    if (f->train_images || f->train_labels || f->train_conditions || f->test_images ||
        f->test_labels || f->test_conditions)
        return cv_fail(err, CV_ERR_USAGE, "image tables and folders do not mix with the IDX "
                       "and .npy file flags (--train-images, ...)");
    if (f->names && !cv_names_copy(f->names, f->n_names, &s->names.names))
        return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    s->names.count = f->names ? f->n_names : 0;
    s->condition = f->names ? f->names_kind : CV_COND_LABELS;
    cv_status st = f->test_only ? CV_OK : open_train(dir, f, s, err);
    if (!st) st = open_test(dir, f, s, err);
    if (!st && !s->train.n && !s->test.n)
        st = cv_fail(err, CV_ERR_IO, "%s: no test images (test/<class>/ folders, CelebA's "
                     "partition, or --test-csv)", dir ? dir : ".");
    if (!st) st = set_width(s, n_classes, err);
    if (!st) st = fix_target(&f->image, s, err);
    if (!st) st = locate_caches(&f->image, s, err);
    const int ignored = s->train.ignored + s->test.ignored;
    if (!st && ignored && f->image.log) /* a .gif or .webp a user expected to be read */
        fprintf(f->image.log, "note: %d file%s in the class folders %s not named as PNG or JPEG "
                "images (.png, .jpg, .jpeg) and %s left out\n", ignored, ignored == 1 ? "" : "s",
                ignored == 1 ? "is" : "are", ignored == 1 ? "is" : "are");
    if (st) cv_image_set_free(s);
    return st;
}

/* A split's images from its cache (decoded first when missing or stale), its conditions
 * moved from the list. */
static cv_status load_split(cv_image_set *s, int k, const cv_image_options *o, cv_split *out,
                            cv_err *err) {
    cv_image_list *l = k ? &s->test : &s->train;
    cv_cache_entry *e = &s->cache[k];
    cv_status st = e->state == CV_CACHE_FRESH
                       ? CV_OK
                       : cv_cache_build(e, l, &s->target, o, k ? "test" : "training", err);
    if (!st) st = cv_cache_map(e, &s->target, l->n, out, err);
    if (st) return st;
    out->labels = l->labels;
    out->conditions = l->conditions;
    out->cond_width = l->conditions ? l->width : 0;
    l->labels = NULL;
    l->conditions = NULL;
    return CV_OK;
}

cv_status cv_image_set_load(cv_image_set *s, const cv_image_options *o, cv_data *d,
                            cv_err *err) {
    memset(d, 0, sizeof *d);
    cv_status st = s->train.n ? load_split(s, 0, o, &d->train, err) : CV_OK;
    if (!st && s->test.n) st = load_split(s, 1, o, &d->test, err);
    if (st) {
        cv_data_free(d);
        return st;
    }
    d->condition = s->condition;
    d->cond_width = s->cond_width;
    d->names = s->names.names;
    d->n_names = s->names.count;
    s->names = (cv_names){0};
    return CV_OK;
}

void cv_image_set_free(cv_image_set *s) {
    cv_image_list_free(&s->train);
    cv_image_list_free(&s->test);
    cv_names_free(&s->names);
}
