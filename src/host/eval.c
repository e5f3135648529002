/* eval.c: test-set figures over the backend: the -ELBO (rec and kl), the importance-
 * weighted -log p(x|c), the marginal -log p(x) over classes, and per-dimension KL with the
 * count of active units. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cv_math.h"
#include "cvae/eval.h"
#include "cvae/rng.h"

/* The noise of importance sample k (0 is the ELBO's) of batch b, given class slot c (0:
 * the image's own label, 1 + c: class c for the marginal). */
#define EVAL_STREAM(b, k, c) \
    CV_STREAM_EVAL_EPS(((uint64_t)(c) << 52) | ((uint64_t)(k) << 32) | (uint64_t)(b))

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

void cv_eval_result_free(cv_eval_result *r) {
    free(r->kl_per_dim);
    r->kl_per_dim = NULL;
}

typedef struct {
    float *rec, *log_ratio, *enc; /* host copies of one batch */
    double *lse_max, *lse_sum;    /* running log-sum-exp per row */
    double *log_px;               /* per row, for the marginal */
    double *marg_max, *marg_sum;
    double *mu_sum, *mu_sq;       /* latent statistics over the set */
    float *prior_m, *prior_r;     /* host copies of the learned prior, or NULL */
} eval_scratch;

/* The importance-weighted log p(x|c) of each row, from k_count samples, into out:
 * log w_k = log p(x|z_k,c) + log p(z_k|c) - log q(z_k|x,c), combined by a running
 * log-sum-exp in double so that K in the thousands loses nothing. ws->act holds the
 * encoding of the batch under the labels in ws->labels. */
static void iwae_log_px(cv_model *m, cv_workspace *ws, int rows, uint64_t seed, int b,
                        int class_slot, int k_count, eval_scratch *sc, double *out) {
    cv_backend *be = m->be;
    for (int r = 0; r < rows; r++) {
        sc->lse_max[r] = -INFINITY;
        sc->lse_sum[r] = 0.0;
    }
    for (int k = 1; k <= k_count; k++) {
        cv_noise noise = {true, seed, EVAL_STREAM(b, k, class_slot), NULL};
        cv_model_sample_decode(m, ws, rows, &noise, false, true);
        be->download(be, sc->rec, ws->rec, (size_t)rows * sizeof(float));
        be->download(be, sc->log_ratio, ws->log_ratio, (size_t)rows * sizeof(float));
        for (int r = 0; r < rows; r++) {
            double lw = -(double)sc->rec[r] + (double)sc->log_ratio[r];
            if (lw > sc->lse_max[r]) {
                sc->lse_sum[r] = sc->lse_sum[r] * exp(sc->lse_max[r] - lw) + 1.0;
                sc->lse_max[r] = lw;
            } else {
                sc->lse_sum[r] += exp(lw - sc->lse_max[r]);
            }
        }
    }
    for (int r = 0; r < rows; r++)
        out[r] = sc->lse_max[r] + log(sc->lse_sum[r]) - log((double)k_count);
}

/* Per-dimension KL and posterior-mean moments of a batch, from the encoding in ws. */
static void latent_stats(cv_model *m, cv_workspace *ws, int rows, const int32_t *labels,
                         eval_scratch *sc, double *kl_dim) {
    const int L = m->layout.cfg.latent;
    m->be->download(m->be, sc->enc, ws->act[m->layout.n_enc - 1],
                    (size_t)rows * 2 * L * sizeof(float));
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < L; j++) {
            float mu = sc->enc[(size_t)r * 2 * L + j];
            float s = cv_clamp_logvar(sc->enc[(size_t)r * 2 * L + L + j]);
            size_t t = (size_t)labels[r] * L + j;
            kl_dim[j] += sc->prior_m ? cv_kl_gauss(mu, s, sc->prior_m[t],
                                                   cv_clamp_logvar(sc->prior_r[t]))
                                     : cv_kl_std_normal(mu, s);
            sc->mu_sum[j] += mu;
            sc->mu_sq[j] += (double)mu * mu;
        }
}

void cv_evaluate(cv_model *m, cv_workspace *ws, const cv_device_split *s, uint64_t seed,
                 const cv_eval_options *opt, cv_eval_result *out) {
    static const cv_eval_options none = {0};
    if (!opt) opt = &none;
    cv_backend *be = m->be;
    const cv_layout *lo = &m->layout;
    const int L = lo->cfg.latent, K = lo->cfg.n_classes;
    const int rows_max = s->n < CV_EVAL_BATCH ? s->n : CV_EVAL_BATCH;
    CV_ASSERT(ws->max_rows >= rows_max);
    memset(out, 0, sizeof *out);
    be->zero(be, ws->sums, sizeof(cv_loss_sums));

    eval_scratch sc = {0};
    size_t rb = (size_t)rows_max;
    sc.rec = malloc(rb * sizeof(float));
    sc.log_ratio = malloc(rb * sizeof(float));
    sc.enc = malloc(rb * 2 * L * sizeof(float));
    sc.lse_max = malloc(rb * sizeof(double));
    sc.lse_sum = malloc(rb * sizeof(double));
    sc.log_px = malloc(rb * sizeof(double));
    sc.marg_max = malloc(rb * sizeof(double));
    sc.marg_sum = malloc(rb * sizeof(double));
    sc.mu_sum = calloc((size_t)L, sizeof(double));
    sc.mu_sq = calloc((size_t)L, sizeof(double));
    int32_t *labels = malloc(rb * sizeof(int32_t)), *fixed = malloc(rb * sizeof(int32_t));
    CV_ASSERT(sc.rec && sc.log_ratio && sc.enc && sc.lse_max && sc.lse_sum && sc.log_px &&
              sc.marg_max && sc.marg_sum && sc.mu_sum && sc.mu_sq && labels && fixed);
    if (opt->latent_stats) {
        out->kl_per_dim = calloc((size_t)L, sizeof(double));
        CV_ASSERT(out->kl_per_dim);
        if (lo->prior_m != CV_NO_COND) {
            size_t bytes = (size_t)K * L * sizeof(float);
            sc.prior_m = malloc(bytes);
            sc.prior_r = malloc(bytes);
            CV_ASSERT(sc.prior_m && sc.prior_r);
            be->download(be, sc.prior_m, m->params + lo->prior_m, bytes);
            be->download(be, sc.prior_r, m->params + lo->prior_r, bytes);
        }
    }
    double iwae_total = 0.0, marginal_total = 0.0;

    for (int start = 0, b = 0; start < s->n; start += rows_max, b++) {
        int rows = s->n - start < rows_max ? s->n - start : rows_max;
        cv_step st = {.step = 0, .start = start};
        be->upload(be, ws->step, &st, sizeof st);
        be->gather_batch(be, s->pixels, s->labels, s->perm, ws->step, rows, s->dim, false, 0,
                         ws->x, ws->labels);
        cv_noise noise = {true, seed, EVAL_STREAM(b, 0, 0), NULL};
        cv_model_forward(m, ws, rows, &noise, false, false);
        be->accumulate_loss(be, ws->sums, ws->rec, ws->kl, rows, NULL);
        if (opt->latent_stats || opt->marginal)
            be->download(be, labels, ws->labels, (size_t)rows * sizeof(int32_t));
        if (opt->latent_stats) latent_stats(m, ws, rows, labels, &sc, out->kl_per_dim);
        if (opt->iwae_k <= 0) continue;

        iwae_log_px(m, ws, rows, seed, b, 0, opt->iwae_k, &sc, sc.log_px);
        for (int r = 0; r < rows; r++) iwae_total -= sc.log_px[r];
        if (!opt->marginal) continue;

        /* log p(x) = logsumexp_c [log p(c) + log p(x|c)], each term importance-sampled
         * with the encoder conditioned on c */
        for (int r = 0; r < rows; r++) {
            sc.marg_max[r] = -INFINITY;
            sc.marg_sum[r] = 0.0;
        }
        for (int c = 0; c < K; c++) {
            if (!isfinite(opt->class_log_prior[c])) continue; /* a class never seen */
            for (int r = 0; r < rows; r++) fixed[r] = c;
            be->upload(be, ws->labels, fixed, (size_t)rows * sizeof(int32_t));
            cv_model_encode(m, ws, rows);
            iwae_log_px(m, ws, rows, seed, b, 1 + c, opt->iwae_k, &sc, sc.log_px);
            for (int r = 0; r < rows; r++) {
                double t = opt->class_log_prior[c] + sc.log_px[r];
                if (t > sc.marg_max[r]) {
                    sc.marg_sum[r] = sc.marg_sum[r] * exp(sc.marg_max[r] - t) + 1.0;
                    sc.marg_max[r] = t;
                } else {
                    sc.marg_sum[r] += exp(t - sc.marg_max[r]);
                }
            }
        }
        for (int r = 0; r < rows; r++) marginal_total -= sc.marg_max[r] + log(sc.marg_sum[r]);
    }
    cv_loss_sums sums;
    be->download(be, &sums, ws->sums, sizeof sums);
    out->rec = sums.rec / s->n;
    out->kl = sums.kl / s->n;
    out->neg_elbo = out->rec + out->kl;
    if (opt->iwae_k > 0) out->iwae_nll = iwae_total / s->n;
    if (opt->marginal && opt->iwae_k > 0) out->marginal_nll = marginal_total / s->n;
    if (opt->latent_stats)
        for (int j = 0; j < L; j++) {
            out->kl_per_dim[j] /= s->n;
            double mean = sc.mu_sum[j] / s->n;
            out->active_units += sc.mu_sq[j] / s->n - mean * mean > CV_ACTIVE_UNIT_VARIANCE;
        }
    free(sc.rec); free(sc.log_ratio); free(sc.enc); free(sc.lse_max); free(sc.lse_sum);
    free(sc.log_px); free(sc.marg_max); free(sc.marg_sum); free(sc.mu_sum); free(sc.mu_sq);
    free(sc.prior_m); free(sc.prior_r); free(labels); free(fixed);
}
