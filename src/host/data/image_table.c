/* image_table.c: a table's rows into the images of a split and their conditions.
 *
 * The column `image` names each image, relative to the table's folder (CelebA's attribute
 * table: to img_align_celeba/ beside it). The condition: the columns --condition-columns
 * names, in its order (condition vectors, even beside a label column); else a column
 * `label`, of class numbers (0..255) or class names (sorted, they become the classes);
 * else every column whose first row holds a number (condition vectors; other columns are
 * left alone). Every value the condition takes must be there and be a finite number, or a
 * class the split may have: a refusal names the table, the line and the column.
 */
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/image_set.h"
#include "data/table.h"

#define CELEBA_IMAGES "img_align_celeba"
#define CELEBA_PARTITION "list_eval_partition.txt"
#define PARTITION_TRAIN 0
#define PARTITION_TEST 2

/* The folder a table lies in. */
static void folder_of(const char *table, char out[CV_PATH_MAX]) {
    char copy[CV_PATH_MAX];
    snprintf(copy, sizeof copy, "%s", table);
    snprintf(out, CV_PATH_MAX, "%s", dirname(copy));
}

/* FOLDER/NAME of the folder a table lies in. */
static bool beside(const char *table, const char *name, char out[CV_PATH_MAX]) {
    char folder[CV_PATH_MAX];
    folder_of(table, folder);
    return snprintf(out, CV_PATH_MAX, "%s/%s", folder, name) < CV_PATH_MAX;
}

static bool is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static const char *kind_name(cv_condition_kind k) {
    return k == CV_COND_LABELS ? "class labels" : "condition vectors";
}

/* The columns a comma-separated list names, in its order. */
static cv_status pick_columns(const cv_table *t, const char *list, int *cols, int *n,
                              cv_err *err) {
    *n = 0;
    const char *p = list;
    for (;;) {
        const size_t len = strcspn(p, ",");
        char name[CV_NAME_MAX + 1];
        snprintf(name, sizeof name, "%.*s", (int)(len < CV_NAME_MAX ? len : CV_NAME_MAX), p);
        const int c = cv_table_column(t, name);
        if (c < 0 || strcmp(name, "image") == 0)
            return cv_fail(err, CV_ERR_USAGE, "%s: no column '%s' to condition on "
                           "(--condition-columns)", t->path, name);
        for (int i = 0; i < *n; i++)
            if (cols[i] == c)
                return cv_fail(err, CV_ERR_USAGE, "--condition-columns names '%s' twice", name);
        if (*n == CV_MAX_COND_WIDTH)
            return cv_fail(err, CV_ERR_USAGE, "--condition-columns names more than %d columns",
                           CV_MAX_COND_WIDTH);
        cols[(*n)++] = c;
        if (!p[len]) return CV_OK;
        p += len + 1;
    }
}

/* Without --condition-columns or a label column: every column whose first row is a
 * number. */
static cv_status numeric_columns(const cv_table *t, int image, int row, int *cols, int *n,
                                 cv_err *err) {
    *n = 0;
    float v;
    for (int c = 0; c < t->n_cols && *n < CV_MAX_COND_WIDTH; c++)
        if (c != image && cv_table_number(cv_table_cell(t, row, c), &v)) cols[(*n)++] = c;
    if (*n) return CV_OK;
    return cv_fail(err, CV_ERR_FORMAT, "%s: no column 'label' and no column of numbers to "
                   "condition on (the first row's values are not numbers)", t->path);
}

static cv_status field_error(const cv_table *t, int row, int col, cv_err *err,
                             const char *what) {
    const char *v = cv_table_cell(t, row, col);
    if (!v[0])
        return cv_fail(err, CV_ERR_FORMAT, "%s: line %d, column '%s': no value", t->path,
                       t->line[row], t->names[col]);
    return cv_fail(err, CV_ERR_FORMAT, "%s: line %d, column '%s': '%.80s' is not %s", t->path,
                   t->line[row], t->names[col], v, what);
}

static cv_status read_conditions(const cv_table *t, const int *rows, int n, const int *cols,
                                 int k, float *out, cv_err *err) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < k; j++)
            if (!cv_table_number(cv_table_cell(t, rows[i], cols[j]), out + (size_t)i * k + j))
                return field_error(t, rows[i], cols[j], err, "a finite number");
    return CV_OK;
}

/* A class number 0..255 written as a plain decimal. */
static bool class_number(const char *s, int *v) {
    if (!s[0] || strlen(s) > 3) return false;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9') return false;
    *v = atoi(s);
    return *v < CV_MAX_CLASSES;
}

static int compare_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The sorted distinct label names of the rows: the classes. */
static cv_status define_classes(const cv_table *t, const int *rows, int n, int col,
                                cv_names *names, cv_err *err) {
    const char **all = malloc((size_t)n * sizeof *all);
    if (!all) return cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", t->path);
    for (int i = 0; i < n; i++) all[i] = cv_table_cell(t, rows[i], col);
    qsort(all, (size_t)n, sizeof *all, compare_names);
    cv_status st = CV_OK;
    for (int i = 0; i < n && !st; i++) {
        if (i && strcmp(all[i], all[i - 1]) == 0) continue;
        if (names->count == CV_MAX_CLASSES)
            st = cv_fail(err, CV_ERR_FORMAT, "%s: column 'label' holds more than %d class "
                         "names, the most cvae takes", t->path, CV_MAX_CLASSES);
        else if (!cv_names_add(names, all[i]))
            st = cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", t->path);
    }
    free(all);
    return st;
}

/* Labels: class numbers when every value is one (and no class names are given), else
 * names, which must be among names (or become them). */
static cv_status read_labels(const cv_table *t, const int *rows, int n, int col,
                             cv_table_request *req, uint8_t *out, cv_err *err) {
    int v;
    bool numbers = req->names->count == 0;
    for (int i = 0; i < n && numbers; i++) numbers = class_number(cv_table_cell(t, rows[i], col), &v);
    req->numeric_labels = numbers;
    for (int i = 0; i < n && numbers; i++) {
        class_number(cv_table_cell(t, rows[i], col), &v);
        out[i] = (uint8_t)v;
    }
    if (numbers) return CV_OK;
    const bool define = req->names->count == 0;
    cv_status st = define ? define_classes(t, rows, n, col, req->names, err) : CV_OK;
    for (int i = 0; i < n && !st; i++) {
        const char *name = cv_table_cell(t, rows[i], col);
        const char *why = cv_name_problem(name);
        const int c = cv_names_find(req->names->names, req->names->count, name);
        if (why)
            return cv_fail(err, CV_ERR_FORMAT, "%s: line %d, column 'label': '%.80s' cannot be a "
                           "class name: %s", t->path, t->line[rows[i]], name, why);
        if (c < 0) return field_error(t, rows[i], col, err, "among the classes");
        out[i] = (uint8_t)c;
    }
    return st;
}

/* The image paths of the rows, relative to folder unless absolute. */
static cv_status read_paths(const cv_table *t, const int *rows, int n, int col,
                            const char *folder, cv_image_list *l, cv_err *err) {
    l->paths = calloc((size_t)n, sizeof *l->paths);
    l->line = malloc((size_t)n * sizeof *l->line);
    if (!l->paths || !l->line) return cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", t->path);
    l->n = n;
    char path[CV_PATH_MAX];
    for (int i = 0; i < n; i++) {
        const char *v = cv_table_cell(t, rows[i], col);
        if (!v[0]) return field_error(t, rows[i], col, err, "an image");
        const int len = v[0] == '/' ? snprintf(path, sizeof path, "%s", v)
                                    : snprintf(path, sizeof path, "%s/%s", folder, v);
        if (len >= (int)sizeof path)
            return cv_fail(err, CV_ERR_FORMAT, "%s: line %d: path too long", t->path,
                           t->line[rows[i]]);
        if (!(l->paths[i] = strdup(path)))
            return cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", t->path);
        l->line[i] = t->line[rows[i]];
    }
    return CV_OK;
}

/* How the table conditions its images: the columns (vectors) or the label column. */
typedef struct {
    int image, label; /* column indices; label -1 for vectors */
    int *cols, k;     /* condition columns */
} table_roles;

static cv_status find_roles(const cv_table *t, cv_table_request *req, table_roles *r,
                            cv_err *err) {
    r->image = cv_table_column(t, "image");
    if (r->image < 0)
        return cv_fail(err, CV_ERR_FORMAT, "%s: no column 'image' (the header must name the "
                       "column of image paths 'image')", t->path);
    r->cols = malloc((size_t)(t->n_cols < CV_MAX_COND_WIDTH ? t->n_cols : CV_MAX_COND_WIDTH) *
                     sizeof *r->cols);
    if (!r->cols) return cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", t->path);
    r->label = req->condition_columns ? -1 : cv_table_column(t, "label");
    req->kind = r->label >= 0 ? CV_COND_LABELS : CV_COND_VECTORS;
    if (req->condition_columns) return pick_columns(t, req->condition_columns, r->cols, &r->k, err);
    return r->label >= 0 ? CV_OK : numeric_columns(t, r->image, 0, r->cols, &r->k, err);
}

/* The vectors' columns as the split's names, or as the given names (which must match). */
static cv_status column_names(const cv_table *t, const table_roles *r, cv_names *names,
                              cv_err *err) {
    if (names->count) {
        bool same = names->count == r->k;
        for (int j = 0; same && j < r->k; j++) same = strcmp(names->names[j], t->names[r->cols[j]]) == 0;
        return same ? CV_OK : cv_fail(err, CV_ERR_FORMAT, "%s: conditions on other columns "
                                      "than the training split or the model (%s, ...)", t->path,
                                      names->names[0]);
    }
    for (int j = 0; j < r->k; j++) {
        const char *why = cv_name_problem(t->names[r->cols[j]]);
        if (why)
            return cv_fail(err, CV_ERR_FORMAT, "%s: column '%.80s' cannot be a condition name: %s",
                           t->path, t->names[r->cols[j]], why);
        if (!cv_names_add(names, t->names[r->cols[j]]))
            return cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", t->path);
    }
    return CV_OK;
}

/* The rows' images and conditions into l. */
static cv_status fill_list(const cv_table *t, const table_roles *r, const int *rows, int n,
                           const char *folder, cv_table_request *req, cv_image_list *l,
                           cv_err *err) {
    memset(l, 0, sizeof *l);
    l->table = t->path;
    snprintf(l->source, sizeof l->source, "%s", t->path);
    cv_status st = read_paths(t, rows, n, r->image, folder, l, err);
    if (!st && r->label >= 0) {
        l->labels = malloc((size_t)n);
        st = l->labels ? read_labels(t, rows, n, r->label, req, l->labels, err)
                       : cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", t->path);
    } else if (!st) {
        l->width = r->k;
        l->conditions = malloc((size_t)n * r->k * sizeof(float));
        st = l->conditions ? read_conditions(t, rows, n, r->cols, r->k, l->conditions, err)
                           : cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", t->path);
    }
    if (st) cv_image_list_free(l);
    return st;
}

/* CelebA's partition of each row of an attribute table, from list_eval_partition.txt. */
typedef struct {
    const char *name;
    int partition;
} named_partition;

static int by_image(const void *a, const void *b) {
    return strcmp(((const named_partition *)a)->name, ((const named_partition *)b)->name);
}

static cv_status read_partition(const cv_table *p, named_partition *parts, cv_err *err) {
    for (int i = 0; i < p->n_rows; i++) {
        const char *v = cv_table_cell(p, i, 1);
        if (strlen(v) != 1 || v[0] < '0' || v[0] > '2')
            return cv_fail(err, CV_ERR_FORMAT, "%s: line %d: partition '%.20s' is not 0, 1 or 2",
                           p->path, p->line[i], v);
        parts[i] = (named_partition){cv_table_cell(p, i, 0), v[0] - '0'};
    }
    qsort(parts, (size_t)p->n_rows, sizeof *parts, by_image);
    return CV_OK;
}

/* Each row's partition (every row must have one) into which[n_rows]. */
static cv_status partitions(const cv_table *t, int image, const char *file, int *which,
                            cv_err *err) {
    static const char *const names[] = {"image", "partition"};
    cv_table p;
    cv_status st = cv_table_read_headless(file, 2, names, &p, err);
    if (st) return st;
    named_partition *parts = malloc((size_t)p.n_rows * sizeof *parts);
    st = parts ? read_partition(&p, parts, err) : cv_fail(err, CV_ERR_NOMEM, "out of memory");
    for (int i = 0; i < t->n_rows && !st; i++) {
        const named_partition key = {cv_table_cell(t, i, image), 0};
        const named_partition *hit = bsearch(&key, parts, (size_t)p.n_rows, sizeof *parts, by_image);
        if (!hit)
            st = cv_fail(err, CV_ERR_FORMAT, "%s: line %d: %s is not in %s", t->path, t->line[i],
                         key.name, file);
        else
            which[i] = hit->partition;
    }
    free(parts);
    cv_table_free(&p);
    return st;
}

/* The rows of one partition (-1: all of them). */
static int rows_of(const cv_table *t, const int *which, int partition, int *rows) {
    int n = 0;
    for (int i = 0; i < t->n_rows; i++)
        if (partition < 0 || which[i] == partition) rows[n++] = i;
    return n;
}

/* The table's splits: all rows to list, or CelebA's partitions 0 and 2. */
static cv_status split_rows(const cv_table *t, const table_roles *r, const char *folder,
                            cv_table_request *req, cv_image_list *list, cv_image_list *test,
                            cv_err *err) {
    char file[CV_PATH_MAX];
    const bool parted = t->celeba && beside(t->path, CELEBA_PARTITION, file) &&
                        cv_path_exists(file);
    int *which = malloc((size_t)t->n_rows * sizeof *which);
    int *rows = malloc((size_t)t->n_rows * sizeof *rows);
    cv_status st = which && rows ? CV_OK : cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", t->path);
    if (!st && parted) st = partitions(t, r->image, file, which, err);
    int n = st ? 0 : rows_of(t, which, parted ? PARTITION_TRAIN : -1, rows);
    if (!st && n == 0)
        st = cv_fail(err, CV_ERR_FORMAT, "%s: no rows of partition 0 (training) in %s", t->path,
                     file);
    if (!st) st = fill_list(t, r, rows, n, folder, req, list, err);
    if (!st && parted && test && (n = rows_of(t, which, PARTITION_TEST, rows)) > 0) {
        st = fill_list(t, r, rows, n, folder, req, test, err);
        if (st) cv_image_list_free(list);
    }
    free(which);
    free(rows);
    return st;
}

cv_status cv_table_images(const char *path, cv_table_request *req, cv_image_list *list,
                          cv_image_list *test, cv_err *err) {
    memset(list, 0, sizeof *list);
    if (test) memset(test, 0, sizeof *test);
    cv_table t;
    cv_status st = cv_table_read(path, &t, err);
    if (st) return st;
    table_roles r = {0};
    st = find_roles(&t, req, &r, err);
    if (!st && req->names_from && req->kind != req->names_kind)
        st = cv_fail(err, CV_ERR_FORMAT, "%s: holds %s, but the %s has %s", path,
                     kind_name(req->kind), req->names_from, kind_name(req->names_kind));
    if (!st && req->kind == CV_COND_VECTORS) st = column_names(&t, &r, req->names, err);
    char folder[CV_PATH_MAX], images[CV_PATH_MAX];
    folder_of(path, folder);
    if (!st && t.celeba && beside(path, CELEBA_IMAGES, images) && is_dir(images))
        snprintf(folder, sizeof folder, "%s", images);
    if (!st) st = split_rows(&t, &r, folder, req, list, test, err);
    free(r.cols);
    cv_table_free(&t);
    return st;
}
