/* probe.c: the linear probes of cvae score (score.h) over the backend table: y = x W^T + b
 * by a GEMM and bias_act_forward, softmax cross-entropy or squared error, the gradients
 * dW = dy^T x + lambda W (the L2 penalty, by a GEMM with the identity) and db by
 * bias_act_backward, Adam. Shapes: x (B, D), y (B, K), W (K, D).
 */
#include <stdlib.h>
#include <string.h>

#include "cvae/rng.h"
#include "cvae/score.h"

#define PROBE_PREDICT_ROWS 500

cv_probe_options cv_probe_defaults(void) {
    return (cv_probe_options){.steps = 8000, .batch = 256, .lr = 0.03f, .c = 1.0f, .seed = 0};
}

/* The backend buffers of a pass over rows images at a time. */
typedef struct {
    float *x, *y, *dy, *loss, *target;
    float *identity; /* (K, K): the penalty's GEMM */
    int32_t *labels;
    cv_step *step;
} probe_work;

static void work_free(cv_backend *be, probe_work *w) {
    void *bufs[] = {w->x, w->y, w->dy, w->loss, w->target, w->identity, w->labels, w->step};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) be->release(be, bufs[i]);
    memset(w, 0, sizeof *w);
}

static cv_status work_alloc(cv_backend *be, int rows, int dim, int outputs, probe_work *w,
                            cv_err *err) {
    memset(w, 0, sizeof *w);
    const size_t R = (size_t)rows;
    cv_status st = be->alloc(be, (void **)&w->x, R * dim * sizeof(float), "probe images", err);
    if (!st) st = be->alloc(be, (void **)&w->y, R * outputs * sizeof(float), "probe outputs", err);
    if (!st) st = be->alloc(be, (void **)&w->dy, R * outputs * sizeof(float), "probe gradients", err);
    if (!st) st = be->alloc(be, (void **)&w->loss, R * sizeof(float), "probe losses", err);
    if (!st) st = be->alloc(be, (void **)&w->target, R * outputs * sizeof(float), "probe targets", err);
    if (!st) st = be->alloc(be, (void **)&w->labels, R * sizeof(int32_t), "probe labels", err);
    if (!st) st = be->alloc(be, (void **)&w->step, sizeof(cv_step), "probe step", err);
    const size_t kk = (size_t)outputs * outputs;
    float *eye = st ? NULL : calloc(kk, sizeof(float));
    if (!st && !eye) st = cv_fail(err, CV_ERR_NOMEM, "out of host memory for the probe");
    if (!st) st = be->alloc(be, (void **)&w->identity, kk * sizeof(float), "probe identity", err);
    for (int k = 0; !st && k < outputs; k++) eye[(size_t)k * outputs + k] = 1.0f;
    if (!st) be->upload(be, w->identity, eye, kk * sizeof(float));
    free(eye);
    if (st) work_free(be, w);
    return st;
}

void cv_probe_free(cv_probe *p) {
    if (!p->be) return;
    float *bufs[] = {p->params, p->grads, p->adam_m, p->adam_v};
    for (int i = 0; i < 4; i++)
        if (bufs[i]) p->be->release(p->be, bufs[i]);
    memset(p, 0, sizeof *p);
}

static size_t probe_params(const cv_probe *p) { return (size_t)p->outputs * (p->dim + 1); }

/* y = x W^T + b for the rows in w. */
static void forward(cv_probe *p, probe_work *w, int rows) {
    cv_backend *be = p->be;
    be->gemm(be, false, true, rows, p->outputs, p->dim, 1.0f, w->x, p->dim, p->params, p->dim,
             0.0f, w->y, p->outputs);
    be->bias_act_forward(be, w->y, p->params + (size_t)p->outputs * p->dim, NULL, NULL, rows,
                         p->outputs, false);
}

/* The split's images from w->step->start on, in the split's order, into w. */
static void gather(cv_backend *be, const cv_device_split *s, probe_work *w, int rows) {
    be->gather_batch(be, s, w->step, 0, rows, false, 0, w->x, w->labels, w->target);
}

/* One Adam step on the rows gathered in w, with the L2 penalty lambda |W|^2 / 2. */
static void train_step(cv_probe *p, probe_work *w, const cv_device_split *s, int rows,
                       float lambda, const cv_adam_config *adam) {
    cv_backend *be = p->be;
    const size_t n = probe_params(p);
    const float scale = 1.0f / (float)rows;
    gather(be, s, w, rows);
    forward(p, w, rows);
    if (p->classify)
        be->softmax_xent(be, w->y, w->labels, w->loss, w->dy, scale, rows, p->outputs);
    else
        be->squared_error(be, w->y, w->target, w->loss, w->dy, scale, rows, p->outputs);
    be->zero(be, p->grads, n * sizeof(float));
    be->bias_act_backward(be, w->dy, w->y, p->grads + (size_t)p->outputs * p->dim, NULL, NULL,
                          rows, p->outputs, false);
    be->gemm(be, true, false, p->outputs, p->dim, rows, 1.0f, w->dy, p->outputs, w->x, p->dim,
             1.0f, p->grads, p->dim);
    /* dW += lambda W: the identity (K, K) times W (K, D) */
    be->gemm(be, false, false, p->outputs, p->dim, p->outputs, lambda, w->identity, p->outputs,
             p->params, p->dim, 1.0f, p->grads, p->dim);
    be->adam(be, p->params, p->grads, p->adam_m, p->adam_v, n, adam, w->step);
    be->advance_step(be, w->step, rows);
}

/* Puts the split's order on the device: the shuffle of epoch e, or (e < 0) the identity. */
static cv_status set_order(cv_backend *be, const cv_device_split *s, int epoch, uint64_t seed,
                           cv_err *err) {
    int32_t *perm = malloc((size_t)s->n * sizeof(int32_t));
    if (!perm)
        return cv_fail(err, CV_ERR_NOMEM, "out of host memory: a probe's order of %d images",
                       s->n);
    if (epoch < 0)
        for (int i = 0; i < s->n; i++) perm[i] = i;
    else
        cv_shuffle(perm, s->n, seed, CV_STREAM_SCORE_SHUFFLE((uint64_t)epoch));
    be->upload(be, s->perm, perm, (size_t)s->n * sizeof(int32_t));
    free(perm);
    return CV_OK;
}

cv_status cv_probe_fit(cv_backend *be, const cv_device_split *s, int outputs, bool classify,
                       const cv_probe_options *o, cv_probe *p, cv_err *err) {
    memset(p, 0, sizeof *p);
    p->be = be;
    p->dim = s->dim;
    p->outputs = outputs;
    p->classify = classify;
    const size_t bytes = probe_params(p) * sizeof(float);
    float **bufs[4] = {&p->params, &p->grads, &p->adam_m, &p->adam_v};
    cv_status st = CV_OK;
    for (int i = 0; i < 4 && !st; i++) {
        st = be->alloc(be, (void **)bufs[i], bytes, "probe parameters", err);
        if (!st) be->zero(be, *bufs[i], bytes);
    }
    const int batch = o->batch < s->n ? o->batch : s->n;
    probe_work w = {0};
    if (!st) st = work_alloc(be, batch, p->dim, outputs, &w, err);
    /* the learning rate decays to 0 along a cosine, so that Adam settles at the optimum */
    const cv_adam_config adam = {.lr = o->lr, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                                 .cosine = 1, .total_steps = o->steps};
    /* scikit-learn's objective, C sum(loss) + |W|^2 / 2, per image: lambda = 1 / (C n) */
    const float lambda = 1.0f / (o->c * (float)s->n);
    cv_step state = {.first_bad_step = -1, .first_bad_index = -1};
    int64_t taken = 0;
    for (int e = 0; !st && taken < o->steps; e++) {
        st = set_order(be, s, e, o->seed, err);
        state.start = 0;
        if (!st) be->upload(be, w.step, &state, sizeof state);
        for (int at = 0; !st && at < s->n && taken < o->steps; at += batch, taken++)
            train_step(p, &w, s, s->n - at < batch ? s->n - at : batch, lambda, &adam);
        if (!st) be->download(be, &state, w.step, sizeof state); /* Adam's step count goes on */
    }
    if (w.x) work_free(be, &w);
    if (st) cv_probe_free(p);
    return st;
}

/* The row's class of largest score (the first of equal ones). */
static int32_t argmax(const float *y, int n) {
    int32_t best = 0;
    for (int j = 1; j < n; j++)
        if (y[j] > y[best]) best = j;
    return best;
}

cv_status cv_probe_predict(cv_probe *p, cv_device_split *s, int32_t *labels, float *out,
                           cv_err *err) {
    cv_backend *be = p->be;
    const int rows_max = s->n < PROBE_PREDICT_ROWS ? s->n : PROBE_PREDICT_ROWS;
    probe_work w;
    cv_status st = work_alloc(be, rows_max, p->dim, p->outputs, &w, err);
    if (!st) st = set_order(be, s, -1, 0, err);
    float *y = st ? NULL : malloc((size_t)rows_max * p->outputs * sizeof(float));
    if (!st && !y) st = cv_fail(err, CV_ERR_NOMEM, "out of host memory for a probe's outputs");
    for (int at = 0; !st && at < s->n; at += rows_max) {
        const int rows = s->n - at < rows_max ? s->n - at : rows_max;
        cv_step state = {.start = at};
        be->upload(be, w.step, &state, sizeof state);
        gather(be, s, &w, rows);
        forward(p, &w, rows);
        be->download(be, y, w.y, (size_t)rows * p->outputs * sizeof(float));
        for (int r = 0; r < rows; r++) {
            const float *yr = y + (size_t)r * p->outputs;
            if (labels) labels[at + r] = argmax(yr, p->outputs);
            if (out) memcpy(out + (size_t)(at + r) * p->outputs, yr, p->outputs * sizeof(float));
        }
    }
    free(y);
    if (w.x) work_free(be, &w);
    return st;
}
