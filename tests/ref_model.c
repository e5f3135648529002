/* ref_model.c: see ref_model.h. */
#include "ref_model.h"

#include <math.h>
#include <stdlib.h>

#include "cv_math.h"

double ref_clamp(double s) {
    return s < CV_LOGVAR_MIN ? CV_LOGVAR_MIN : s > CV_LOGVAR_MAX ? CV_LOGVAR_MAX : s;
}

/* Row r's condition vector c (K): its label's one-hot, or its condition vector. */
static void ref_condition(const ref_ctx *c, int r, double *cvec) {
    const int K = c->lo->cfg.cond_width;
    CV_ASSERT(K <= REF_MAX_K);
    for (int k = 0; k < K; k++)
        cvec[k] = c->cond ? c->cond[(size_t)r * K + k] : (k == c->labels[r] ? 1.0 : 0.0);
}

/* y (out) = W [in ; c if cond] + b, from the layout's buffer, in double. */
static void ref_linear(const cv_layout *lo, const cv_layer *l, const double *p,
                       const double *in, const double *cvec, double *y) {
    int K = lo->cfg.cond_width, fan = l->in + (l->cond != CV_NO_COND ? K : 0);
    double *row = malloc(sizeof(double) * fan);
    for (int o = 0; o < l->out; o++) {
        /* the spec's weight row: [W_x | W_c] */
        for (int i = 0; i < l->in; i++) row[i] = p[l->w + (size_t)o * l->in + i];
        if (l->cond != CV_NO_COND)
            for (int k = 0; k < K; k++) row[l->in + k] = p[l->cond + (size_t)k * l->out + o];
        double s = p[l->b + o];
        for (int i = 0; i < l->in; i++) s += row[i] * in[i];
        if (l->cond != CV_NO_COND)
            for (int k = 0; k < K; k++) s += row[l->in + k] * cvec[k];
        y[o] = l->relu && s < 0 ? 0 : s;
    }
    free(row);
}

/* Layers [first, last) on `in` (copied into a), the output in a[cur]; returns cur. */
static int ref_layers(const ref_ctx *c, const double *p, int r, int first, int last,
                      double a[2][REF_MAX_WIDTH]) {
    double cvec[REF_MAX_K];
    ref_condition(c, r, cvec);
    int cur = 0;
    for (int i = first; i < last; i++, cur ^= 1) {
        CV_ASSERT(c->lo->layers[i].out <= REF_MAX_WIDTH);
        ref_linear(c->lo, &c->lo->layers[i], p, a[cur], cvec, a[cur ^ 1]);
    }
    return cur;
}

void ref_encode(const ref_ctx *c, const double *p, int r, double *enc) {
    const cv_layout *lo = c->lo;
    static double a[2][REF_MAX_WIDTH];
    CV_ASSERT(lo->dim <= REF_MAX_WIDTH);
    for (int j = 0; j < lo->dim; j++) a[0][j] = c->x[(size_t)r * lo->dim + j];
    const int cur = ref_layers(c, p, r, 0, lo->n_enc, a);
    for (int j = 0; j < 2 * lo->cfg.latent; j++) enc[j] = a[cur][j];
}

void ref_prior(const ref_ctx *c, const double *p, int r, double *m, double *rr) {
    const cv_layout *lo = c->lo;
    const int L = lo->cfg.latent, K = lo->cfg.cond_width;
    double cvec[REF_MAX_K];
    ref_condition(c, r, cvec);
    for (int j = 0; j < L; j++) {
        m[j] = rr[j] = 0;
        if (lo->cfg.prior != CV_PRIOR_CONDITIONAL) continue;
        /* m = M c and r = R c: the tables (K, L) times the condition */
        for (int k = 0; k < K; k++) {
            m[j] += cvec[k] * p[lo->prior_m + (size_t)k * L + j];
            rr[j] += cvec[k] * p[lo->prior_r + (size_t)k * L + j];
        }
    }
}

double ref_kl(double mu, double s, double m, double rr) {
    s = ref_clamp(s);
    rr = ref_clamp(rr);
    return 0.5 * (rr - s + (exp(s) + (mu - m) * (mu - m)) * exp(-rr) - 1);
}

double ref_log_normal(double z, double m, double rr) {
    rr = ref_clamp(rr);
    return -0.5 * ((z - m) * (z - m) * exp(-rr) + rr + log(2 * M_PI));
}

static double softplus(double l) { return l > 0 ? l + log1p(exp(-l)) : log1p(exp(l)); }

double ref_rec(const ref_ctx *c, const double *p, int r, const double *z) {
    const cv_layout *lo = c->lo;
    const int D = lo->dim, L = lo->cfg.latent;
    static double a[2][REF_MAX_WIDTH];
    for (int j = 0; j < L; j++) a[0][j] = z[j];
    const int cur = ref_layers(c, p, r, lo->n_enc, lo->n_layers, a);
    /* the Gaussian's log-variance: fixed, or 2 log sigma learned (clamped) */
    const double v = lo->log_sigma != CV_NO_COND ? ref_clamp(2 * p[lo->log_sigma])
                                                 : log((double)lo->cfg.sigma * lo->cfg.sigma);
    double rec = 0;
    for (int j = 0; j < D; j++) {
        double x = c->x[(size_t)r * D + j], l = a[cur][j];
        if (lo->cfg.likelihood == CV_LIKELIHOOD_GAUSSIAN) {
            double e = x - 1 / (1 + exp(-l));
            rec += 0.5 * e * e * exp(-v) + 0.5 * (v + log(2 * M_PI));
        } else {
            rec += softplus(l) - x * l;
        }
    }
    return rec;
}
