/* dataset.c: the standard four-file data folder and its cross-file checks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cv_math.h"
#include "cvae/data.h"
#include "cvae/fileio.h"
#include "cvae/rng.h"

/* DIR/NAME, or DIR/NAME.gz when only that exists; false when neither does. */
static bool find_file(const char *dir, const char *name, char *out, size_t size) {
    snprintf(out, size, "%s/%s", dir, name);
    if (cv_path_exists(out)) return true;
    snprintf(out, size, "%s/%s.gz", dir, name);
    return cv_path_exists(out);
}

static cv_status load_split(const char *images, const char *labels, cv_split *s,
                            cv_err *err) {
    int idims[3], ldims[3];
    cv_status st = cv_idx_read(images, 3, idims, &s->pixels, err);
    if (!st) st = cv_idx_read(labels, 1, ldims, &s->labels, err);
    if (!st && ldims[0] != idims[0])
        st = cv_fail(err, CV_ERR_FORMAT, "%s: holds %d labels but %s holds %d images",
                     labels, ldims[0], images, idims[0]);
    if (st) {
        cv_split_free(s);
        return st;
    }
    s->n = idims[0];
    s->h = idims[1];
    s->w = idims[2];
    return CV_OK;
}

void cv_split_free(cv_split *s) {
    free(s->pixels);
    free(s->labels);
    memset(s, 0, sizeof *s);
}

void cv_data_free(cv_data *d) {
    cv_split_free(&d->train);
    cv_split_free(&d->test);
}

cv_status cv_data_load(const char *dir, int n_classes, cv_data *d, cv_err *err) {
    memset(d, 0, sizeof *d);
    char ti[4200], tl[4200], vi[4200], vl[4200];
    if (!cv_path_exists(dir))
        return cv_fail(err, CV_ERR_IO, "%s: no such data folder", dir);
    if (!find_file(dir, "train-images-idx3-ubyte", ti, sizeof ti))
        return cv_fail(err, CV_ERR_IO, "%s: no train-images-idx3-ubyte[.gz]", dir);
    if (!find_file(dir, "train-labels-idx1-ubyte", tl, sizeof tl))
        return cv_fail(err, CV_ERR_IO, "%s: no train-labels-idx1-ubyte[.gz]", dir);
    cv_status st = load_split(ti, tl, &d->train, err);
    if (st) return st;

    int max_label = 0;
    for (int i = 0; i < d->train.n; i++)
        if (d->train.labels[i] > max_label) max_label = d->train.labels[i];
    if (n_classes == 0) n_classes = max_label + 1;
    if (max_label >= n_classes) {
        cv_data_free(d);
        return cv_fail(err, CV_ERR_FORMAT, "%s: label %d is not below --classes %d", tl,
                       max_label, n_classes);
    }
    d->n_classes = n_classes;

    bool has_vi = find_file(dir, "t10k-images-idx3-ubyte", vi, sizeof vi);
    bool has_vl = find_file(dir, "t10k-labels-idx1-ubyte", vl, sizeof vl);
    if (has_vi != has_vl) {
        cv_data_free(d);
        return cv_fail(err, CV_ERR_IO, "%s: has %s but not %s", dir,
                       has_vi ? "t10k-images" : "t10k-labels",
                       has_vi ? "t10k-labels" : "t10k-images");
    }
    if (!has_vi) return CV_OK;
    st = load_split(vi, vl, &d->test, err);
    if (!st && (d->test.h != d->train.h || d->test.w != d->train.w))
        st = cv_fail(err, CV_ERR_FORMAT, "%s: images are %dx%d but training images are %dx%d",
                     vi, d->test.h, d->test.w, d->train.h, d->train.w);
    for (int i = 0; !st && i < d->test.n; i++)
        if (d->test.labels[i] >= n_classes)
            st = cv_fail(err, CV_ERR_FORMAT,
                         "%s: label %d at index %d is not below the %d training classes",
                         vl, d->test.labels[i], i, n_classes);
    if (st) cv_data_free(d);
    return st;
}

void cv_split_binarize(cv_split *s) {
    size_t n = (size_t)s->n * s->h * s->w;
    for (size_t i = 0; i < n; i++) {
        float u = cv_philox_uniform(CV_BINARIZE_TEST_SEED, CV_STREAM_BINARIZE_TEST, i);
        s->pixels[i] = u < (float)s->pixels[i] / 255.0f ? 255 : 0;
    }
}
