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

/* An array of the split's into new backend memory (none when src is NULL). */
static cv_status upload_array(cv_backend *be, void **dst, const void *src, size_t bytes,
                              const char *what, cv_err *err) {
    if (!src) return CV_OK;
    cv_status st = be->alloc(be, dst, bytes, what, err);
    if (!st) be->upload(be, *dst, src, bytes);
    return st;
}

cv_status cv_device_split_upload(cv_backend *be, const cv_split *s, cv_device_split *d,
                                 cv_err *err) {
    memset(d, 0, sizeof *d);
    d->n = s->n;
    d->dim = cv_split_dim(s);
    d->cond_width = s->conditions ? s->cond_width : 0;
    const size_t values = (size_t)s->n * d->dim, order = (size_t)s->n * sizeof(int32_t);
    int32_t *identity = malloc(order);
    if (!identity)
        return cv_fail(err, CV_ERR_NOMEM, "out of host memory: the data set order needs %.1f MiB",
                       order / 1048576.0);
    for (int i = 0; i < s->n; i++) identity[i] = i;
    cv_status st = upload_array(be, (void **)&d->pixels, s->pixels, values, "data set images", err);
    if (!st)
        st = upload_array(be, (void **)&d->fpixels, s->fpixels, values * sizeof(float),
                          "data set images", err);
    if (!st) st = upload_array(be, (void **)&d->labels, s->labels, (size_t)s->n, "data set labels", err);
    if (!st)
        st = upload_array(be, (void **)&d->conditions, s->conditions,
                          (size_t)s->n * d->cond_width * sizeof(float), "data set conditions", err);
    if (!st) st = upload_array(be, (void **)&d->perm, identity, order, "data set order", err);
    free(identity);
    if (st) cv_device_split_free(be, d);
    return st;
}

cv_status cv_device_split_use(cv_backend *be, const cv_split *s, cv_device_split *d,
                              cv_err *err) {
    if (!be->host_memory) {
        cv_status st = cv_device_split_upload(be, s, d, err);
        if (st == CV_ERR_NOMEM) {
            const cv_err why = *err;
            return cv_fail(err, st, "%s; cvae does not stream a data set to the GPU: train on "
                           "fewer or smaller images, or on the CPU (--device cpu), which maps "
                           "the data from disk", why.msg);
        }
        return st;
    }
    memset(d, 0, sizeof *d);
    *d = (cv_device_split){s->pixels, s->fpixels, s->labels, s->conditions, NULL, s->n,
                           cv_split_dim(s), s->conditions ? s->cond_width : 0, true};
    const size_t order = (size_t)s->n * sizeof(int32_t);
    cv_status st = be->alloc(be, (void **)&d->perm, order, "data set order", err);
    for (int i = 0; !st && i < s->n; i++) d->perm[i] = i;
    if (st) cv_device_split_free(be, d);
    return st;
}

void cv_device_split_free(cv_backend *be, cv_device_split *d) {
    void *arrays[] = {d->pixels, d->fpixels, d->labels, d->conditions, d->perm};
    const size_t first = d->borrowed ? 4 : 0; /* borrowed: only perm is the backend's */
    for (size_t i = first; i < sizeof arrays / sizeof arrays[0]; i++)
        if (arrays[i]) be->release(be, arrays[i]);
    memset(d, 0, sizeof *d);
}

void cv_eval_result_free(cv_eval_result *r) {
    free(r->kl_per_dim);
    r->kl_per_dim = NULL;
}

typedef struct {
    void *block;                  /* one allocation holding every buffer below */
    float *enc;                   /* host copy of one batch's [mu | s] */
    double *lse_max, *lse_sum;    /* host copies of the per-row log-sum-exp states */
    double *marg_max, *marg_sum;
    double *mu_sum, *mu_sq;       /* latent statistics over the set, zeroed */
    float *prior_m, *prior_r;     /* host copies of the learned prior's tables, or NULL */
    float *row_m, *row_r;         /* a batch's prior rows (rows, L), or NULL */
    int32_t *labels, *fixed;      /* a batch's labels; one class for every row */
} eval_scratch;

/* The scratch for batches of up to `rows` rows; prior_floats is the size of each learned
 * prior table to copy (0: none, and the prior's buffers stay NULL). */
static cv_status scratch_alloc(eval_scratch *sc, size_t rows, size_t latent,
                               size_t prior_floats, cv_err *err) {
    const size_t row_floats = prior_floats ? rows * latent : 0;
    const struct {
        void **ptr;
        size_t bytes;
    } parts[] = {
        {(void **)&sc->enc, rows * 2 * latent * sizeof(float)},
        {(void **)&sc->lse_max, rows * sizeof(double)},
        {(void **)&sc->lse_sum, rows * sizeof(double)},
        {(void **)&sc->marg_max, rows * sizeof(double)},
        {(void **)&sc->marg_sum, rows * sizeof(double)},
        {(void **)&sc->mu_sum, latent * sizeof(double)},
        {(void **)&sc->mu_sq, latent * sizeof(double)},
        {(void **)&sc->prior_m, prior_floats * sizeof(float)},
        {(void **)&sc->prior_r, prior_floats * sizeof(float)},
        {(void **)&sc->row_m, row_floats * sizeof(float)},
        {(void **)&sc->row_r, row_floats * sizeof(float)},
        {(void **)&sc->labels, rows * sizeof(int32_t)},
        {(void **)&sc->fixed, rows * sizeof(int32_t)},
    };
    const size_t n = sizeof parts / sizeof parts[0];
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total += (parts[i].bytes + 7) / 8 * 8; /* doubles aligned */
    uint8_t *p = sc->block = malloc(total);
    if (!p)
        return cv_fail(err, CV_ERR_NOMEM,
                       "out of host memory: the evaluation scratch needs %.1f MiB",
                       total / 1048576.0);
    for (size_t i = 0; i < n; i++) {
        *parts[i].ptr = parts[i].bytes ? p : NULL;
        p += (parts[i].bytes + 7) / 8 * 8;
    }
    memset(sc->mu_sum, 0, latent * sizeof(double));
    memset(sc->mu_sq, 0, latent * sizeof(double));
    return CV_OK;
}

/* The running log-sum-exp states in backend memory: (max, sum) of the importance samples
 * of one class slot, and of the marginal's classes; rows each. */
typedef struct {
    double *block;
    double *lse_max, *lse_sum, *marg_max, *marg_sum;
} eval_device_state;

static cv_status device_state_alloc(cv_backend *be, eval_device_state *d, size_t rows,
                                    cv_err *err) {
    memset(d, 0, sizeof *d);
    cv_status st = be->alloc(be, (void **)&d->block, 4 * rows * sizeof(double),
                             "the IWAE log-sum-exp states", err);
    if (st) return st;
    d->lse_max = d->block;
    d->lse_sum = d->block + rows;
    d->marg_max = d->block + 2 * rows;
    d->marg_sum = d->block + 3 * rows;
    return CV_OK;
}

/* The importance-weighted estimate of each row's log p(x|c), left on the device as a
 * log-sum-exp state (dev->lse_max, dev->lse_sum) over k_count samples:
 * log w_k = log p(x|z_k,c) + log p(z_k|c) - log q(z_k|x,c), added to the state in double
 * per row (logsumexp_accumulate), so K in the thousands loses nothing and nothing comes back
 * to the host per sample. log p_K(x|c) = max + log(sum) - log K (cv_lse_log_mean).
 * ws->act holds the encoding of the batch under the labels in ws->labels. */
static void iwae_state(cv_model *m, cv_workspace *ws, int rows, uint64_t seed, int b,
                       int class_slot, int k_count, eval_device_state *dev) {
    cv_backend *be = m->be;
    for (int k = 1; k <= k_count; k++) {
        cv_noise noise = {true, seed, EVAL_STREAM(b, k, class_slot), NULL, 0};
        cv_model_sample_decode(m, ws, rows, &noise, 0, true);
        be->logsumexp_accumulate(be, dev->lse_max, dev->lse_sum, ws->rec, ws->log_ratio, rows,
                                 k == 1);
    }
}

/* Each row's learned prior into sc->row_m and sc->row_r: its label's table rows, or the
 * rows the forward pass left in ws (condition vectors). */
static void host_prior_rows(cv_model *m, cv_workspace *ws, int rows, eval_scratch *sc) {
    const size_t L = (size_t)m->layout.cfg.latent;
    if (m->layout.cfg.condition == CV_COND_VECTORS) {
        m->be->download(m->be, sc->row_m, ws->prior_m, rows * L * sizeof(float));
        m->be->download(m->be, sc->row_r, ws->prior_r, rows * L * sizeof(float));
        return;
    }
    for (int r = 0; r < rows; r++) {
        memcpy(sc->row_m + r * L, sc->prior_m + (size_t)sc->labels[r] * L, L * sizeof(float));
        memcpy(sc->row_r + r * L, sc->prior_r + (size_t)sc->labels[r] * L, L * sizeof(float));
    }
}

/* Per-dimension KL and posterior-mean moments of a batch, from the encoding in ws and,
 * with a learned prior, each row's prior. */
static void latent_stats(cv_model *m, cv_workspace *ws, int rows, eval_scratch *sc,
                         double *kl_dim) {
    const int L = m->layout.cfg.latent;
    m->be->download(m->be, sc->enc, ws->act[m->layout.n_enc - 1],
                    (size_t)rows * 2 * L * sizeof(float));
    if (sc->row_m) host_prior_rows(m, ws, rows, sc);
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < L; j++) {
            float mu = sc->enc[(size_t)r * 2 * L + j];
            float s = cv_clamp_logvar(sc->enc[(size_t)r * 2 * L + L + j]);
            size_t t = (size_t)r * L + j;
            kl_dim[j] += sc->row_m ? cv_kl_gauss(mu, s, sc->row_m[t], cv_clamp_logvar(sc->row_r[t]))
                                   : cv_kl_std_normal(mu, s);
            sc->mu_sum[j] += mu;
            sc->mu_sq[j] += (double)mu * mu;
        }
}

/* One evaluation over the batches of a split, and what it has summed so far. */
typedef struct {
    cv_model *m;
    cv_workspace *ws;
    const cv_device_split *s;
    const cv_eval_options *opt;
    uint64_t seed;
    double log_k;
    eval_scratch *sc;
    eval_device_state *dev;
    double totals[2]; /* the sums of -log p(x|c) (IWAE) and -log p(x) (marginal) */
} eval_pass;

/* Batch b's marginal -log p(x) = -logsumexp_c [log p(c) + log p(x|c)], each term
 * importance-sampled with the encoder conditioned on c, summed over classes on the device;
 * added row by row to the pass's total. */
static void marginal_batch(eval_pass *e, int b, int rows) {
    cv_model *m = e->m;
    cv_workspace *ws = e->ws;
    cv_backend *be = m->be;
    eval_scratch *sc = e->sc;
    bool first = true;
    for (int c = 0; c < m->layout.cfg.cond_width; c++) {
        if (!isfinite(e->opt->class_log_prior[c])) continue; /* a class never seen */
        for (int r = 0; r < rows; r++) sc->fixed[r] = c;
        be->upload(be, ws->labels, sc->fixed, (size_t)rows * sizeof(int32_t));
        cv_model_encode(m, ws, rows);
        iwae_state(m, ws, rows, e->seed, b, 1 + c, e->opt->iwae_k, e->dev);
        be->logsumexp_merge(be, e->dev->marg_max, e->dev->marg_sum, e->dev->lse_max,
                            e->dev->lse_sum, e->log_k, e->opt->class_log_prior[c], rows, first);
        first = false;
    }
    if (first) { /* no class has a prior: the empty sum, log p(x) = -inf */
        for (int r = 0; r < rows; r++) {
            sc->marg_max[r] = -INFINITY;
            sc->marg_sum[r] = 0.0;
        }
    } else {
        be->download(be, sc->marg_max, e->dev->marg_max, (size_t)rows * sizeof(double));
        be->download(be, sc->marg_sum, e->dev->marg_sum, (size_t)rows * sizeof(double));
    }
    for (int r = 0; r < rows; r++) e->totals[1] -= sc->marg_max[r] + log(sc->marg_sum[r]);
}

/* Batch b, rows from start: the -ELBO sums on the device, and whichever of the latent
 * statistics, the IWAE and the marginal the options ask for. */
static void eval_batch(eval_pass *e, int b, int start, int rows, double *kl_dim) {
    cv_model *m = e->m;
    cv_workspace *ws = e->ws;
    cv_backend *be = m->be;
    const cv_eval_options *opt = e->opt;
    eval_scratch *sc = e->sc;
    cv_step st = {.step = 0, .start = start};
    be->upload(be, ws->step, &st, sizeof st);
    be->gather_batch(be, e->s, ws->step, 0, rows, false, 0, ws->x, ws->labels, ws->cond);
    cv_noise noise = {true, e->seed, EVAL_STREAM(b, 0, 0), NULL, 0};
    cv_model_forward(m, ws, rows, &noise, 0, false);
    be->accumulate_loss(be, ws->sums, ws->rec, ws->kl, rows, NULL);
    if ((opt->latent_stats || opt->marginal) && m->layout.cfg.condition == CV_COND_LABELS)
        be->download(be, sc->labels, ws->labels, (size_t)rows * sizeof(int32_t));
    if (opt->latent_stats) latent_stats(m, ws, rows, sc, kl_dim);
    if (opt->iwae_k > 0) {
        iwae_state(m, ws, rows, e->seed, b, 0, opt->iwae_k, e->dev);
        be->download(be, sc->lse_max, e->dev->lse_max, (size_t)rows * sizeof(double));
        be->download(be, sc->lse_sum, e->dev->lse_sum, (size_t)rows * sizeof(double));
        for (int r = 0; r < rows; r++)
            e->totals[0] -= cv_lse_log_mean(sc->lse_max[r], sc->lse_sum[r], e->log_k);
    }
    if (opt->iwae_k > 0 && opt->marginal) marginal_batch(e, b, rows);
}

/* The per-image figures from the sums, summed over the ranks first. */
static void finish(eval_pass *e, cv_eval_result *out) {
    cv_backend *be = e->m->be;
    const int n = e->s->n, L = e->m->layout.cfg.latent;
    cv_loss_sums sums;
    be->download(be, &sums, e->ws->sums, sizeof sums);
    double figures[4] = {sums.rec, sums.kl, e->totals[0], e->totals[1]};
    cv_comm_sum_f64(e->opt->comm, figures, 4);
    out->rec = figures[0] / n;
    out->kl = figures[1] / n;
    out->neg_elbo = out->rec + out->kl;
    if (e->opt->iwae_k > 0) out->iwae_nll = figures[2] / n;
    if (e->opt->marginal && e->opt->iwae_k > 0) out->marginal_nll = figures[3] / n;
    if (!e->opt->latent_stats) return;
    cv_comm_sum_f64(e->opt->comm, out->kl_per_dim, (size_t)L);
    cv_comm_sum_f64(e->opt->comm, e->sc->mu_sum, (size_t)L);
    cv_comm_sum_f64(e->opt->comm, e->sc->mu_sq, (size_t)L);
    for (int j = 0; j < L; j++) {
        out->kl_per_dim[j] /= n;
        double mean = e->sc->mu_sum[j] / n;
        out->active_units += e->sc->mu_sq[j] / n - mean * mean > CV_ACTIVE_UNIT_VARIANCE;
    }
}

cv_status cv_evaluate(cv_model *m, cv_workspace *ws, const cv_device_split *s, uint64_t seed,
                      const cv_eval_options *opt, cv_eval_result *out, cv_err *err) {
    static const cv_eval_options none = {0};
    if (!opt) opt = &none;
    cv_backend *be = m->be;
    const cv_layout *lo = &m->layout;
    const int L = lo->cfg.latent, K = lo->cfg.cond_width;
    if (opt->marginal && lo->cfg.condition != CV_COND_LABELS)
        return cv_fail(err, CV_ERR_USAGE, "the marginal -log p(x) sums over classes: it needs "
                       "a model of class labels, not condition vectors");
    const int rows_max = s->n < CV_EVAL_BATCH ? s->n : CV_EVAL_BATCH;
    CV_ASSERT(ws->max_rows >= rows_max);
    memset(out, 0, sizeof *out);
    const bool learned_prior = opt->latent_stats && lo->prior_m != CV_NO_COND;
    eval_scratch sc = {0};
    cv_status st = scratch_alloc(&sc, (size_t)rows_max, (size_t)L,
                                 learned_prior ? (size_t)K * L : 0, err);
    if (!st && opt->latent_stats && !(out->kl_per_dim = calloc((size_t)L, sizeof(double))))
        st = cv_fail(err, CV_ERR_NOMEM, "out of host memory: the per-dimension KL needs %zu "
                     "bytes", (size_t)L * sizeof(double));
    eval_device_state dev = {0};
    if (!st && opt->iwae_k > 0) st = device_state_alloc(be, &dev, (size_t)rows_max, err);
    /* a rank that cannot evaluate stops them all here, not in the sums at the end */
    st = cv_comm_agree(opt->comm, st, err);
    if (st) {
        if (dev.block) be->release(be, dev.block);
        cv_eval_result_free(out);
        free(sc.block);
        return st;
    }
    if (learned_prior) {
        size_t bytes = (size_t)K * L * sizeof(float);
        be->download(be, sc.prior_m, m->params + lo->prior_m, bytes);
        be->download(be, sc.prior_r, m->params + lo->prior_r, bytes);
    }
    be->zero(be, ws->sums, sizeof(cv_loss_sums));
    const double log_k = opt->iwae_k > 0 ? log((double)opt->iwae_k) : 0.0;
    const int batches = (s->n + rows_max - 1) / rows_max;
    /* in a data-parallel run, each rank takes whole batches: each image sees the noise and
     * the batch shape it sees in one process */
    const cv_batch_part mine = cv_batch_part_of(batches, cv_comm_rank(opt->comm),
                                                cv_comm_size(opt->comm));
    const int first = mine.offset * rows_max, end = (mine.offset + mine.rows) * rows_max;
    const int images = mine.rows ? (end < s->n ? end : s->n) - first : 0;
    eval_pass pass = {m, ws, s, opt, seed, log_k, &sc, &dev, {0.0, 0.0}};
    for (int b = mine.offset, done = 0; b < mine.offset + mine.rows; b++) {
        const int start = b * rows_max, rows = s->n - start < rows_max ? s->n - start : rows_max;
        eval_batch(&pass, b, start, rows, out->kl_per_dim);
        done += rows;
        if (opt->progress)
            opt->progress(opt->progress_ctx, done, images, b - mine.offset + 1, mine.rows);
    }
    finish(&pass, out);
    if (dev.block) be->release(be, dev.block);
    free(sc.block);
    return CV_OK;
}
