/* score.c: cvae score (score.h): images generated from the model, linear probes trained
 * and tested on real and generated images, and the figures: accuracies (ceiling, fidelity,
 * CAS, each per class) for a model of labels, R^2 per column for one of vectors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cvae/generate.h"
#include "cvae/score.h"

/* Images generated in memory, as a split a probe takes. */
typedef struct {
    cv_split split;
    float *rows; /* vectors: the condition rows asked for (the test split's) */
} generated;

static void generated_free(generated *g) {
    free(g->split.pixels);
    free(g->split.labels);
    free(g->split.conditions);
    memset(g, 0, sizeof *g);
}

/* R classes x per images (labels), or one image per test condition row (vectors). */
static cv_status generate(cv_model *m, cv_workspace *ws, const cv_data *d,
                          const cv_score_options *o, generated *g, cv_err *err) {
    const cv_model_config *c = &m->layout.cfg;
    const bool vectors = c->condition == CV_COND_VECTORS;
    cv_generate_options go = {.per = vectors ? 1 : o->per_class, .mean = o->mean,
                              .seed = o->seed, .batch = 1024};
    if (vectors) {
        go.cond = (cv_gen_conditions){.conditions = d->test.conditions, .width = c->cond_width,
                                      .n_rows = d->test.n};
    } else {
        go.cond.n_classes = c->cond_width;
        for (int k = 0; k < c->cond_width; k++) go.cond.classes[k] = k;
    }
    const long long n = cv_gen_condition_count(&go.cond) * go.per;
    if (n > 2147483647LL / (long long)m->layout.dim)
        return cv_fail(err, CV_ERR_USAGE, "%lld generated images of %d values are too many",
                       n, m->layout.dim);
    memset(g, 0, sizeof *g);
    g->split = (cv_split){.n = (int)n, .h = c->height, .w = c->width, .channels = c->channels,
                          .cond_width = vectors ? c->cond_width : 0};
    g->split.pixels = malloc((size_t)n * m->layout.dim);
    if (vectors)
        g->split.conditions = malloc((size_t)n * c->cond_width * sizeof(float));
    else
        g->split.labels = malloc((size_t)n);
    if (!g->split.pixels || !(g->split.conditions || g->split.labels)) {
        generated_free(g);
        return cv_fail(err, CV_ERR_NOMEM, "out of host memory: %lld generated images", n);
    }
    g->rows = g->split.conditions;
    cv_status st = cv_generate_images(m, ws, &go, g->split.pixels, g->split.labels,
                                      g->split.conditions, err);
    if (st) generated_free(g);
    return st;
}

/* Accuracy over all of `labels` (n) against predicted, and per class (NaN: none). */
static double accuracy(const uint8_t *labels, const int32_t *predicted, int n, int classes,
                       double *per_class) {
    long long hit[CV_MAX_CLASSES] = {0}, count[CV_MAX_CLASSES] = {0}, hits = 0;
    for (int i = 0; i < n; i++) {
        count[labels[i]]++;
        if (predicted[i] == labels[i]) {
            hit[labels[i]]++;
            hits++;
        }
    }
    for (int k = 0; k < classes; k++)
        per_class[k] = count[k] ? (double)hit[k] / (double)count[k] : NAN;
    return n ? (double)hits / n : NAN;
}

/* R^2 of each column of predicted (n, K) against truth, and their mean over the columns
 * that vary (NaN when none does). */
static double r_squared(const float *truth, const float *predicted, int n, int K,
                        double *column) {
    double sum = 0;
    int counted = 0;
    for (int j = 0; j < K; j++) {
        double mean = 0, ss_tot = 0, ss_res = 0;
        for (int i = 0; i < n; i++) mean += truth[(size_t)i * K + j];
        mean /= n;
        for (int i = 0; i < n; i++) {
            const double t = truth[(size_t)i * K + j], p = predicted[(size_t)i * K + j];
            ss_tot += (t - mean) * (t - mean);
            ss_res += (t - p) * (t - p);
        }
        column[j] = ss_tot > 0 ? 1.0 - ss_res / ss_tot : NAN;
        if (ss_tot > 0) {
            sum += column[j];
            counted++;
        }
    }
    return counted ? sum / counted : NAN;
}

static void say(const cv_score_options *o, const char *what) {
    if (!o->progress) return;
    fprintf(stderr, "score: %s\n", what);
    fflush(stderr);
}

/* The device copies score trains and tests on. */
typedef struct {
    cv_device_split train, test, gen;
} score_splits;

static void splits_free(cv_backend *be, score_splits *s) {
    cv_device_split_free(be, &s->train);
    cv_device_split_free(be, &s->test);
    cv_device_split_free(be, &s->gen);
}

/* The classifier trained on real images (ceiling, fidelity), then on generated ones (CAS). */
static cv_status score_labels(cv_backend *be, const cv_data *d, const generated *g,
                              score_splits *s, const cv_score_options *o, cv_score_result *res,
                              cv_err *err) {
    const int K = d->cond_width, nt = d->test.n, ng = g->split.n;
    int32_t *pred = malloc((size_t)(nt > ng ? nt : ng) * sizeof(int32_t));
    if (!pred) return cv_fail(err, CV_ERR_NOMEM, "out of host memory for the predictions");
    cv_probe probe;
    say(o, "training the classifier on the real training images");
    cv_status st = cv_probe_fit(be, &s->train, K, true, &o->probe, &probe, err);
    if (!st) st = cv_probe_predict(&probe, &s->test, pred, NULL, err);
    if (!st) res->ceiling = accuracy(d->test.labels, pred, nt, K, res->ceiling_class);
    if (!st) st = cv_probe_predict(&probe, &s->gen, pred, NULL, err);
    if (!st) res->fidelity = accuracy(g->split.labels, pred, ng, K, res->fidelity_class);
    cv_probe_free(&probe);
    if (!st) {
        say(o, "training the classifier on the generated images");
        st = cv_probe_fit(be, &s->gen, K, true, &o->probe, &probe, err);
    }
    if (!st) st = cv_probe_predict(&probe, &s->test, pred, NULL, err);
    if (!st) res->cas = accuracy(d->test.labels, pred, nt, K, res->cas_class);
    cv_probe_free(&probe);
    free(pred);
    return st;
}

/* The regression trained on real images, applied to generated and real test images. */
static cv_status score_vectors(cv_backend *be, const cv_data *d, const generated *g,
                               score_splits *s, const cv_score_options *o, cv_score_result *res,
                               cv_err *err) {
    const int K = d->cond_width, n = d->test.n;
    float *pred = malloc((size_t)n * K * sizeof(float));
    res->r2_column = malloc((size_t)K * sizeof(double));
    res->r2_real_column = malloc((size_t)K * sizeof(double));
    if (!pred || !res->r2_column || !res->r2_real_column) {
        free(pred);
        return cv_fail(err, CV_ERR_NOMEM, "out of host memory for the regression's outputs");
    }
    cv_probe probe;
    say(o, "training the regression on the real training images");
    cv_status st = cv_probe_fit(be, &s->train, K, false, &o->probe, &probe, err);
    if (!st) st = cv_probe_predict(&probe, &s->gen, NULL, pred, err);
    if (!st) res->r2 = r_squared(g->rows, pred, n, K, res->r2_column);
    if (!st) st = cv_probe_predict(&probe, &s->test, NULL, pred, err);
    if (!st) res->r2_real = r_squared(d->test.conditions, pred, n, K, res->r2_real_column);
    cv_probe_free(&probe);
    free(pred);
    return st;
}

cv_status cv_score(cv_model *m, cv_workspace *ws, const cv_data *d, const cv_score_options *o,
                   cv_score_result *res, cv_err *err) {
    memset(res, 0, sizeof *res);
    cv_backend *be = m->be;
    res->labels = m->layout.cfg.condition == CV_COND_LABELS;
    say(o, "generating images");
    generated g;
    cv_status st = generate(m, ws, d, o, &g, err);
    if (st) return st;
    res->generated = g.split.n;
    score_splits s;
    memset(&s, 0, sizeof s);
    st = cv_device_split_upload(be, &d->train, &s.train, err);
    if (!st) st = cv_device_split_upload(be, &d->test, &s.test, err);
    if (!st) st = cv_device_split_upload(be, &g.split, &s.gen, err);
    if (!st)
        st = res->labels ? score_labels(be, d, &g, &s, o, res, err)
                         : score_vectors(be, d, &g, &s, o, res, err);
    splits_free(be, &s);
    generated_free(&g);
    if (st) cv_score_result_free(res);
    return st;
}

void cv_score_result_free(cv_score_result *r) {
    free(r->r2_column);
    free(r->r2_real_column);
    r->r2_column = r->r2_real_column = NULL;
}
