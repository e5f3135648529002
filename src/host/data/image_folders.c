/* image_folders.c: class folders, torchvision's ImageFolder layout: SPLIT/<class>/...
 * holds the images of one class, its name the folder's. Classes are the folder names in
 * byte order; within a class, a folder's images (.png, .jpg, .jpeg, any case) come in
 * byte order, then its subfolders', each the same way. Hidden entries (a leading dot)
 * are skipped, other files counted as ignored; an image directly in SPLIT, or a class
 * folder without images, is refused. */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "data/image_set.h"

#define MAX_DEPTH 16 /* subfolders within a class folder (a symlink loop stops here) */

static bool is_image_name(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot && (strcasecmp(dot, ".png") == 0 || strcasecmp(dot, ".jpg") == 0 ||
                   strcasecmp(dot, ".jpeg") == 0);
}

static int visible(const struct dirent *e) { return e->d_name[0] != '.'; }
static int by_name(const struct dirent **a, const struct dirent **b) {
    return strcmp((*a)->d_name, (*b)->d_name);
}

static cv_status scan(const char *dir, struct dirent ***entries, int *n, cv_err *err) {
    *n = scandir(dir, entries, visible, by_name);
    if (*n >= 0) return CV_OK;
    return cv_fail(err, errno == ENOMEM ? CV_ERR_NOMEM : CV_ERR_IO, "%s: cannot list: %s", dir,
                   strerror(errno));
}

static void free_entries(struct dirent **e, int n) {
    for (int i = 0; i < n; i++) free(e[i]);
    free(e);
}

static cv_status push(cv_image_list *l, int *cap, const char *path, int label, cv_err *err) {
    if (l->n == *cap) {
        const int grown = *cap ? 2 * *cap : 1024;
        char **p = realloc(l->paths, (size_t)grown * sizeof *p);
        if (p) l->paths = p;
        uint8_t *q = p ? realloc(l->labels, (size_t)grown) : NULL;
        if (q) l->labels = q;
        if (!p || !q) return cv_fail(err, CV_ERR_NOMEM, "out of memory listing %s", path);
        *cap = grown;
    }
    if (!(l->paths[l->n] = strdup(path)))
        return cv_fail(err, CV_ERR_NOMEM, "out of memory listing %s", path);
    l->labels[l->n++] = (uint8_t)label;
    return CV_OK;
}

static bool path_in(char out[CV_PATH_MAX], const char *dir, const char *name) {
    return snprintf(out, CV_PATH_MAX, "%s/%s", dir, name) < CV_PATH_MAX;
}

/* The images under dir (a class folder or a folder in one), in order, with label. */
static cv_status collect(const char *dir, int label, int depth, cv_image_list *l, int *cap,
                         cv_err *err) {
    struct dirent **e;
    int n;
    cv_status st = scan(dir, &e, &n, err);
    if (st) return st;
    char path[CV_PATH_MAX];
    struct stat sb;
    for (int pass = 0; pass < 2 && !st; pass++) /* its files, then its subfolders */
        for (int i = 0; i < n && !st; i++) {
            if (!path_in(path, dir, e[i]->d_name))
                st = cv_fail(err, CV_ERR_IO, "%s/%s: path too long", dir, e[i]->d_name);
            else if (stat(path, &sb) != 0)
                st = cv_fail(err, CV_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
            else if (pass == 1 && S_ISDIR(sb.st_mode) && depth < MAX_DEPTH)
                st = collect(path, label, depth + 1, l, cap, err);
            else if (pass == 0 && S_ISREG(sb.st_mode) && is_image_name(e[i]->d_name))
                st = push(l, cap, path, label, err);
            else if (pass == 0 && !S_ISDIR(sb.st_mode))
                l->ignored++;
        }
    free_entries(e, n);
    return st;
}

/* The class of folder `name`: its index among known names, or a new one. */
static cv_status class_of(const char *split_dir, const char *name, cv_names *classes,
                          bool define, int *label, cv_err *err) {
    const char *why = cv_name_problem(name);
    if (why)
        return cv_fail(err, CV_ERR_FORMAT, "%s/%s: cannot be a class name: %s", split_dir, name,
                       why);
    *label = cv_names_find(classes->names, classes->count, name);
    if (*label >= 0) return CV_OK;
    if (!define)
        return cv_fail(err, CV_ERR_FORMAT, "%s/%s: no class of that name among the %d the "
                       "model or the training split has", split_dir, name, classes->count);
    if (classes->count == CV_MAX_CLASSES)
        return cv_fail(err, CV_ERR_FORMAT, "%s: holds more than %d class folders, the most "
                       "cvae takes", split_dir, CV_MAX_CLASSES);
    if (!cv_names_add(classes, name)) return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    *label = classes->count - 1;
    return CV_OK;
}

/* One entry of the split folder: a class folder's images, or a file left alone. */
static cv_status split_entry(const char *split_dir, const char *name, cv_names *classes,
                             bool define, cv_image_list *l, int *cap, cv_err *err) {
    char path[CV_PATH_MAX];
    struct stat sb;
    if (!path_in(path, split_dir, name))
        return cv_fail(err, CV_ERR_IO, "%s/%s: path too long", split_dir, name);
    if (stat(path, &sb) != 0)
        return cv_fail(err, CV_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) {
        if (is_image_name(name))
            return cv_fail(err, CV_ERR_FORMAT, "%s: an image outside a class folder (images go "
                           "in %s/<class>/)", path, split_dir);
        l->ignored++;
        return CV_OK;
    }
    int label = 0, before = l->n;
    cv_status st = class_of(split_dir, name, classes, define, &label, err);
    if (!st) st = collect(path, label, 0, l, cap, err);
    if (!st && l->n == before)
        st = cv_fail(err, CV_ERR_FORMAT, "%s: an empty class folder (no .png, .jpg or .jpeg "
                     "images in it)", path);
    return st;
}

cv_status cv_class_folders(const char *split_dir, cv_names *classes, cv_image_list *list,
                           cv_err *err) {
    memset(list, 0, sizeof *list);
    snprintf(list->source, sizeof list->source, "%s", split_dir);
    const bool define = classes->count == 0;
    struct dirent **e;
    int n, cap = 0;
    cv_status st = scan(split_dir, &e, &n, err);
    if (st) return st;
    for (int i = 0; i < n && !st; i++)
        st = split_entry(split_dir, e[i]->d_name, classes, define, list, &cap, err);
    free_entries(e, n);
    if (!st && list->n == 0)
        st = cv_fail(err, CV_ERR_FORMAT, "%s: holds no class folders (class folders: "
                     "%s/<class>/*.png|jpg|jpeg)", split_dir, split_dir);
    if (st) cv_image_list_free(list);
    return st;
}
