/* eval.c: test -ELBO and the importance-weighted bound, over the backend. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cvae/eval.h"
#include "cvae/rng.h"

/* The noise of evaluation sample k (k = 0 for the ELBO) in batch b. */
#define EVAL_STREAM(b, k) CV_STREAM_EVAL_EPS(((uint64_t)(k) << 32) | (uint64_t)(b))

cv_status cv_device_split_upload(cv_backend *be, const cv_split *s, cv_device_split *d,
                                 cv_err *err) {
    memset(d, 0, sizeof *d);
    d->n = s->n;
    d->dim = s->h * s->w;
    size_t pix = (size_t)s->n * d->dim;
    cv_status st = be->alloc(be, (void **)&d->pixels, pix, "data set images", err);
    if (!st) st = be->alloc(be, (void **)&d->labels, (size_t)s->n, "data set labels", err);
    if (!st)
        st = be->alloc(be, (void **)&d->perm, (size_t)s->n * sizeof(int32_t),
                       "data set order", err);
    if (st) {
        cv_device_split_free(be, d);
        return st;
    }
    be->upload(be, d->pixels, s->pixels, pix);
    be->upload(be, d->labels, s->labels, (size_t)s->n);
    int32_t *identity = malloc((size_t)s->n * sizeof(int32_t));
    CV_ASSERT(identity);
    for (int i = 0; i < s->n; i++) identity[i] = i;
    be->upload(be, d->perm, identity, (size_t)s->n * sizeof(int32_t));
    free(identity);
    return CV_OK;
}

void cv_device_split_free(cv_backend *be, cv_device_split *d) {
    if (d->pixels) be->release(be, d->pixels);
    if (d->labels) be->release(be, d->labels);
    if (d->perm) be->release(be, d->perm);
    memset(d, 0, sizeof *d);
}

void cv_evaluate(cv_model *m, cv_workspace *ws, const cv_device_split *s, uint64_t seed,
                 int iwae_k, cv_eval_result *out) {
    cv_backend *be = m->be;
    const int rows_max = s->n < CV_EVAL_BATCH ? s->n : CV_EVAL_BATCH;
    CV_ASSERT(ws->max_rows >= rows_max);
    memset(out, 0, sizeof *out);
    be->zero(be, ws->sums, 3 * sizeof(double));

    float *rec = malloc((size_t)rows_max * sizeof(float));
    float *log_ratio = malloc((size_t)rows_max * sizeof(float));
    double *lse_max = malloc((size_t)rows_max * sizeof(double));
    double *lse_sum = malloc((size_t)rows_max * sizeof(double));
    CV_ASSERT(rec && log_ratio && lse_max && lse_sum);
    double iwae_total = 0.0;

    for (int start = 0, b = 0; start < s->n; start += rows_max, b++) {
        int rows = s->n - start < rows_max ? s->n - start : rows_max;
        cv_step st = {.step = 0, .start = start};
        be->upload(be, ws->step, &st, sizeof st);
        be->gather_batch(be, s->pixels, s->labels, s->perm, ws->step, rows, s->dim, ws->x,
                         ws->labels);
        cv_noise noise = {true, seed, EVAL_STREAM(b, 0), NULL};
        cv_model_forward(m, ws, rows, &noise, false, false);
        be->accumulate_loss(be, ws->sums, ws->rec, ws->kl, rows, NULL);
        if (iwae_k <= 0) continue;

        /* log w_k = log p(x|z_k,c) + log p(z_k) - log q(z_k|x,c), combined by a running
         * log-sum-exp in double so that K in the thousands loses nothing */
        for (int r = 0; r < rows; r++) {
            lse_max[r] = -INFINITY;
            lse_sum[r] = 0.0;
        }
        for (int k = 1; k <= iwae_k; k++) {
            noise.stream_base = EVAL_STREAM(b, k);
            cv_model_sample_decode(m, ws, rows, &noise, false, true);
            be->download(be, rec, ws->rec, (size_t)rows * sizeof(float));
            be->download(be, log_ratio, ws->log_ratio, (size_t)rows * sizeof(float));
            for (int r = 0; r < rows; r++) {
                double lw = -(double)rec[r] + (double)log_ratio[r];
                if (lw > lse_max[r]) {
                    lse_sum[r] = lse_sum[r] * exp(lse_max[r] - lw) + 1.0;
                    lse_max[r] = lw;
                } else {
                    lse_sum[r] += exp(lw - lse_max[r]);
                }
            }
        }
        for (int r = 0; r < rows; r++)
            iwae_total += -(lse_max[r] + log(lse_sum[r]) - log((double)iwae_k));
    }
    double sums[3];
    be->download(be, sums, ws->sums, sizeof sums);
    out->rec = sums[0] / s->n;
    out->kl = sums[1] / s->n;
    out->neg_elbo = out->rec + out->kl;
    if (iwae_k > 0) out->iwae_nll = iwae_total / s->n;
    free(rec);
    free(log_ratio);
    free(lse_max);
    free(lse_sum);
}
