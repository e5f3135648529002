/* test_ops_cpu.c: every CPU backend operation against a double-precision reference and,
 * for the ones with gradients, against central finite differences in double precision.
 *
 * Finite differences are taken of a double-precision loss L = sum(w * out) with random
 * weights w, at h = 1e-6, which leaves truncation and rounding error near 1e-9; the
 * backend computes in float, so gradients agree to float rounding of the sums involved.
 */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cv_math.h"
#include "cvae/backend.h"
#include "cvae/rng.h"
#include "helpers.h"

static cv_backend *be;

static void setup(void) {
    cv_err err;
    cr_assert_eq(cv_backend_cpu_create(&be, &err), CV_OK);
}
static void teardown(void) { be->destroy(be); }

TestSuite(ops_cpu, .init = setup, .fini = teardown);

#define FD_H 1e-6

/* ---------- GEMM ---------- */

static void gemm_case(test_rng *r, bool ta, bool tb, int m, int n, int k) {
    /* padded leading dimensions, so sub-matrix strides are exercised */
    int lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 2, ldc = n + 1;
    int arows = ta ? k : m, brows = tb ? n : k;
    float *a = malloc(sizeof(float) * arows * lda), *b = malloc(sizeof(float) * brows * ldb);
    float *c = malloc(sizeof(float) * m * ldc), *c0 = malloc(sizeof(float) * m * ldc);
    test_fill(r, a, (size_t)arows * lda, -1, 1);
    test_fill(r, b, (size_t)brows * ldb, -1, 1);
    test_fill(r, c0, (size_t)m * ldc, -1, 1);
    memcpy(c, c0, sizeof(float) * m * ldc);
    float alpha = (float)test_uniform(r, 0.5, 2), beta = (float)test_uniform(r, -1, 1);
    be->gemm(be, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < ldc; j++) {
            if (j >= n) {
                cr_assert_eq(c[i * ldc + j], c0[i * ldc + j], "padding of C was written");
                continue;
            }
            double s = 0, mag = 0;
            for (int p = 0; p < k; p++) {
                double av = ta ? a[p * lda + i] : a[i * lda + p];
                double bv = tb ? b[j * ldb + p] : b[p * ldb + j];
                s += av * bv;
                mag += fabs(av * bv);
            }
            double ref = alpha * s + beta * c0[i * ldc + j];
            /* a float dot product of length k errs by at most ~k eps sum|a b| */
            double tol = 2.0 * (k + 2) * FLT_EPSILON * (fabs(alpha) * mag + fabs(c0[i * ldc + j]));
            cr_assert(fabs(c[i * ldc + j] - ref) <= tol,
                      "gemm ta=%d tb=%d %dx%dx%d C[%d,%d] = %g, reference %g", ta, tb, m, n, k,
                      i, j, c[i * ldc + j], ref);
        }
    free(a);
    free(b);
    free(c);
    free(c0);
}

Test(ops_cpu, gemm_all_transposes_and_awkward_shapes) {
    test_rng r = test_rng_new("gemm");
    const int shapes[][3] = {{1, 1, 1}, {31, 33, 32}, {257, 33, 31}, {33, 257, 64},
                             {128, 400, 784}, {400, 784, 128}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                gemm_case(&r, ta, tb, shapes[s][0], shapes[s][1], shapes[s][2]);
}

/* ---------- bias + condition + ReLU ---------- */

typedef struct {
    int rows, cols, classes;
    bool relu;
    const float *pre; /* y before the op */
    const int32_t *labels;
    const float *w; /* loss weights (rows, cols) */
} bias_ctx;

static double bias_loss(const bias_ctx *c, const double *bias, const double *cond) {
    double l = 0;
    for (int r = 0; r < c->rows; r++)
        for (int j = 0; j < c->cols; j++) {
            double v = c->pre[r * c->cols + j] + bias[j] + cond[c->labels[r] * c->cols + j];
            if (c->relu && v < 0) v = 0;
            l += c->w[r * c->cols + j] * v;
        }
    return l;
}

static void bias_case(test_rng *r, int rows, int cols, int classes, bool relu) {
    size_t n = (size_t)rows * cols;
    float *pre = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    float *w = malloc(n * sizeof(float)), *dy = malloc(n * sizeof(float));
    float *bias = malloc(cols * sizeof(float)), *cond = malloc(classes * cols * sizeof(float));
    float *dbias = calloc(cols, sizeof(float)), *dcond = calloc(classes * cols, sizeof(float));
    int32_t *labels = malloc(rows * sizeof(int32_t));
    test_fill(r, pre, n, -1, 1);
    test_fill(r, w, n, -1, 1);
    test_fill(r, bias, cols, -1, 1);
    test_fill(r, cond, (size_t)classes * cols, -1, 1);
    for (int i = 0; i < rows; i++) labels[i] = (int32_t)test_uniform(r, 0, classes);
    /* keep pre-activations away from the ReLU kink, where no derivative exists */
    for (size_t i = 0; i < n; i++) {
        int row = (int)(i / cols), j = (int)(i % cols);
        float v = pre[i] + bias[j] + cond[labels[row] * cols + j];
        if (fabsf(v) < 1e-2f) pre[i] += 0.05f;
    }
    memcpy(y, pre, n * sizeof(float));
    be->bias_act_forward(be, y, bias, cond, labels, rows, cols, relu);
    for (size_t i = 0; i < n; i++) {
        int row = (int)(i / cols), j = (int)(i % cols);
        double v = (double)pre[i] + bias[j] + cond[labels[row] * cols + j];
        if (relu && v < 0) v = 0;
        assert_close("bias_act_forward", (int)i, y[i], v, 1e-6, 1e-6);
    }
    memcpy(dy, w, n * sizeof(float));
    be->bias_act_backward(be, dy, y, dbias, dcond, labels, rows, cols, relu);

    bias_ctx c = {rows, cols, classes, relu, pre, labels, w};
    double *bd = malloc(cols * sizeof(double)), *cd = malloc(classes * cols * sizeof(double));
    for (int j = 0; j < cols; j++) bd[j] = bias[j];
    for (int j = 0; j < classes * cols; j++) cd[j] = cond[j];
    for (int j = 0; j < cols; j++) {
        double keep = bd[j];
        bd[j] = keep + FD_H;
        double lp = bias_loss(&c, bd, cd);
        bd[j] = keep - FD_H;
        double lm = bias_loss(&c, bd, cd);
        bd[j] = keep;
        assert_close("dbias", j, dbias[j], (lp - lm) / (2 * FD_H), 1e-5, 1e-4);
    }
    for (int j = 0; j < classes * cols; j++) {
        double keep = cd[j];
        cd[j] = keep + FD_H;
        double lp = bias_loss(&c, bd, cd);
        cd[j] = keep - FD_H;
        double lm = bias_loss(&c, bd, cd);
        cd[j] = keep;
        assert_close("dcond", j, dcond[j], (lp - lm) / (2 * FD_H), 1e-5, 1e-4);
    }
    /* the masked dy is the gradient with respect to the pre-activation */
    for (size_t i = 0; i < n; i++) {
        double ref = (!relu || y[i] > 0) ? w[i] : 0.0;
        assert_close("dy", (int)i, dy[i], ref, 0, 0);
    }
    free(pre); free(y); free(w); free(dy); free(bias); free(cond); free(dbias); free(dcond);
    free(labels); free(bd); free(cd);
}

Test(ops_cpu, bias_act_forward_backward_against_finite_differences) {
    test_rng r = test_rng_new("bias_act");
    const int shapes[][2] = {{1, 1}, {31, 33}, {33, 32}, {257, 31}, {128, 400}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int relu = 0; relu < 2; relu++)
            bias_case(&r, shapes[s][0], shapes[s][1], 1 + (int)test_uniform(&r, 0, 10), relu);
}

Test(ops_cpu, bias_act_without_condition_leaves_it_out) {
    test_rng r = test_rng_new("bias_act no cond");
    int rows = 33, cols = 17;
    float y[33 * 17], bias[17], dbias[17] = {0};
    int32_t labels[33] = {0};
    test_fill(&r, y, sizeof y / sizeof y[0], -1, 1);
    test_fill(&r, bias, 17, -1, 1);
    float ref[33 * 17];
    memcpy(ref, y, sizeof y);
    be->bias_act_forward(be, y, bias, NULL, labels, rows, cols, false);
    for (int i = 0; i < rows * cols; i++) assert_close("y", i, y[i], ref[i] + bias[i % cols], 0, 0);
    float dy[33 * 17];
    test_fill(&r, dy, sizeof dy / sizeof dy[0], -1, 1);
    be->bias_act_backward(be, dy, y, dbias, NULL, labels, rows, cols, false);
    for (int j = 0; j < cols; j++) {
        double s = 0;
        for (int i = 0; i < rows; i++) s += dy[i * cols + j];
        assert_close("dbias", j, dbias[j], s, 1e-5, 1e-5);
    }
}

/* ---------- reparameterization + KL ---------- */

static double clampd(double s) { return s < CV_LOGVAR_MIN ? CV_LOGVAR_MIN : s > CV_LOGVAR_MAX ? CV_LOGVAR_MAX : s; }

/* L = sum dz . z + kl_scale * sum kl is a sum of one term per (row, dim); the term of one
 * dimension, in double, is what finite differences are taken of, so the huge values of
 * other terms (exp(30) at the clamp) cannot swamp the difference. */
static double reparam_term(double mu, double s_raw, double eps, double dz, double kl_scale) {
    double s = clampd(s_raw);
    double z = mu + exp(0.5 * s) * eps;
    return dz * z + kl_scale * 0.5 * (mu * mu + exp(s) - 1 - s);
}

static void reparam_case(test_rng *r, int rows, int L) {
    size_t ne = (size_t)rows * 2 * L, nz = (size_t)rows * L;
    float *enc = malloc(ne * 4), *eps = malloc(nz * 4), *z = malloc(nz * 4), *dz = malloc(nz * 4);
    float *kl = malloc(rows * 4), *lr = malloc(rows * 4), *denc = malloc(ne * 4);
    test_fill(r, enc, ne, -2, 2);
    for (size_t i = 0; i < nz; i++) eps[i] = (float)test_normal(r);
    test_fill(r, dz, nz, -1, 1);
    /* a few log-variances beyond the clamp, where the gradient must vanish */
    enc[L] = 35.0f;
    if (rows > 1) enc[2 * L + L] = -33.0f;
    float kl_scale = (float)test_uniform(r, 0.1, 2);
    be->reparam_forward(be, enc, eps, false, 0, 0, NULL, 0, NULL, NULL, z, kl, lr, rows, L);
    for (int i = 0; i < rows; i++) {
        double k = 0, lrat = 0;
        for (int j = 0; j < L; j++) {
            double mu = enc[i * 2 * L + j], s = clampd(enc[i * 2 * L + L + j]);
            double zz = mu + exp(0.5 * s) * eps[i * L + j];
            assert_close("z", i * L + j, z[i * L + j], zz, 1e-5, 1e-5);
            k += 0.5 * (mu * mu + exp(s) - 1 - s);
            lrat += -0.5 * (zz * zz + log(2 * M_PI)) + 0.5 * (eps[i * L + j] * eps[i * L + j] + s + log(2 * M_PI));
        }
        assert_close("kl", i, kl[i], k, 1e-4, 1e-5);
        /* exp(s/2) up to e^15 scales float rounding of z, hence a looser log-ratio check */
        assert_close("log_ratio", i, lr[i], lrat, 1e-3, 1e-4);
    }
    be->reparam_backward(be, enc, eps, dz, kl_scale, NULL, 0.0f, NULL, NULL, NULL, denc, rows, L);
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < L; j++) {
            double mu = enc[i * 2 * L + j], s = enc[i * 2 * L + L + j];
            double e = eps[i * L + j], g = dz[i * L + j];
            float dmu = denc[i * 2 * L + j], ds = denc[i * 2 * L + L + j];
            if (clampd(s) != s) {
                /* beyond the clamp: mu's gradient as usual, none through s */
                assert_close("dmu (clamped s)", i * L + j, dmu, g + kl_scale * mu, 1e-5, 1e-5);
                cr_assert_eq(ds, 0.0f, "gradient through a clamped log-variance must be 0");
                continue;
            }
            double fd_mu = (reparam_term(mu + FD_H, s, e, g, kl_scale) -
                            reparam_term(mu - FD_H, s, e, g, kl_scale)) / (2 * FD_H);
            double fd_s = (reparam_term(mu, s + FD_H, e, g, kl_scale) -
                           reparam_term(mu, s - FD_H, e, g, kl_scale)) / (2 * FD_H);
            assert_close("dmu", i * L + j, dmu, fd_mu, 1e-5, 1e-4);
            assert_close("ds", i * L + j, ds, fd_s, 1e-5, 1e-4);
        }
    free(enc); free(eps); free(z); free(dz); free(kl); free(lr); free(denc);
}

Test(ops_cpu, reparam_forward_backward_against_finite_differences) {
    test_rng r = test_rng_new("reparam");
    const int shapes[][2] = {{1, 1}, {31, 2}, {32, 20}, {33, 7}, {257, 3}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) reparam_case(&r, shapes[s][0], shapes[s][1]);
}

Test(ops_cpu, kl_closed_forms_and_monte_carlo) {
    /* KL(N(mu, e^s) || N(0,1)) = 0.5 (mu^2 + e^s - 1 - s): known points */
    cr_assert_float_eq(cv_kl_std_normal(0, 0), 0.0f, 1e-7);
    cr_assert_float_eq(cv_kl_std_normal(1, 0), 0.5f, 1e-7);
    cr_assert_float_eq(cv_kl_std_normal(0, logf(2)), 0.5f * (1.0f - logf(2)), 1e-6);
    /* and as the expectation of log q - log p over q: -mean(log_ratio) with many draws */
    test_rng r = test_rng_new("kl monte carlo");
    const int L = 3, rows = 200000;
    float mu[3], s[3];
    test_fill(&r, mu, 3, -1, 1);
    test_fill(&r, s, 3, -1, 1);
    float *enc = malloc((size_t)rows * 2 * L * 4), *eps = malloc((size_t)rows * L * 4);
    float *z = malloc((size_t)rows * L * 4), *kl = malloc(rows * 4), *lr = malloc(rows * 4);
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < L; j++) {
            enc[i * 2 * L + j] = mu[j];
            enc[i * 2 * L + L + j] = s[j];
        }
    cv_step st = {.step = 7};
    be->reparam_forward(be, enc, eps, true, r.s, 0, &st, 0, NULL, NULL, z, kl, lr, rows, L);
    /* the backend's Box-Muller takes SLEEF's log, sin and cos, libm's cv_normal_fill an
     * ulp or two apart: another stream would differ everywhere */
    float check[16];
    cv_normal_fill(check, 16, r.s, 7);
    for (int i = 0; i < 16; i++)
        cr_assert(fabsf(check[i] - eps[i]) <= 8 * FLT_EPSILON * fabsf(check[i]),
                  "drawn eps is not stream base + step: %g, not %g", eps[i], check[i]);
    double mean = 0, sq = 0;
    for (int i = 0; i < rows; i++) {
        mean -= lr[i];
        sq += (double)lr[i] * lr[i];
    }
    mean /= rows;
    double sd = sqrt(sq / rows - mean * mean);
    /* 6 standard errors: a false alarm is a 1e-9 event */
    cr_assert(fabs(mean - kl[0]) < 6 * sd / sqrt(rows), "MC KL %g vs closed form %g (se %g)", mean,
              kl[0], sd / sqrt(rows));
    free(enc); free(eps); free(z); free(kl); free(lr);
}

/* ---------- Bernoulli cross-entropy ---------- */

static double softplus(double l) { return l > 0 ? l + log1p(exp(-l)) : log1p(exp(l)); }

static void xent_case(test_rng *r, int rows, int cols) {
    size_t n = (size_t)rows * cols;
    float *l = malloc(n * 4), *x = malloc(n * 4), *d = malloc(n * 4), *rec = malloc(rows * 4);
    float *rec2 = malloc(rows * 4);
    test_fill(r, l, n, -8, 8);
    test_fill(r, x, n, 0, 1);
    float scale = (float)test_uniform(r, 0.01, 1);
    be->reconstruction(be, CV_LIKELIHOOD_BERNOULLI, 0, l, x, rec, d, scale, rows, cols);
    be->reconstruction(be, CV_LIKELIHOOD_BERNOULLI, 0, l, x, rec2, NULL, scale, rows, cols);
    for (int i = 0; i < rows; i++) {
        double s = 0;
        for (int j = 0; j < cols; j++) s += softplus(l[i * cols + j]) - x[i * cols + j] * (double)l[i * cols + j];
        assert_close("rec", i, rec[i], s, 1e-4, 1e-5);
        cr_assert_eq(rec[i], rec2[i], "rec differs with and without the gradient");
    }
    for (size_t i = 0; i < n; i++) {
        double lp = softplus(l[i] + FD_H) - x[i] * (l[i] + FD_H);
        double lm = softplus(l[i] - FD_H) - x[i] * (l[i] - FD_H);
        assert_close("dlogits", (int)i, d[i], scale * (lp - lm) / (2 * FD_H), 1e-6, 1e-4);
    }
    free(l); free(x); free(d); free(rec); free(rec2);
}

Test(ops_cpu, bernoulli_xent_against_finite_differences) {
    test_rng r = test_rng_new("xent");
    const int shapes[][2] = {{1, 1}, {31, 33}, {32, 784}, {33, 1}, {257, 31}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) xent_case(&r, shapes[s][0], shapes[s][1]);
}

Test(ops_cpu, bernoulli_closed_forms_and_extremes) {
    float g;
    /* at l = 0 every pixel costs log 2 whatever x is */
    cr_assert_float_eq(cv_bernoulli_nll(0.0f, 0.3f, &g), logf(2.0f), 1e-7);
    cr_assert_float_eq(g, 0.5f - 0.3f, 1e-7);
    /* x = sigmoid(l): the cost is the entropy of Bernoulli(x) */
    float l = 1.3f, p = 1.0f / (1.0f + expf(-l));
    cr_assert_float_eq(cv_bernoulli_nll(l, p, &g), -(p * logf(p) + (1 - p) * logf(1 - p)), 1e-6);
    cr_assert_float_eq(g, 0.0f, 1e-7);
    /* huge logits stay finite and exact: softplus(100) - 100 = 0, softplus(-100) = ~0 */
    cr_assert_float_eq(cv_bernoulli_nll(100.0f, 1.0f, &g), 0.0f, 1e-6);
    cr_assert_float_eq(cv_bernoulli_nll(-100.0f, 0.0f, &g), 0.0f, 1e-6);
    cr_assert_float_eq(cv_bernoulli_nll(1e30f, 0.0f, &g), 1e30f, 1e24);
    cr_assert(isfinite(cv_bernoulli_nll(-1e30f, 1.0f, &g)) && g == -1.0f);
    /* NaN in, NaN out: a poisoned logit must not be hidden */
    cr_assert(isnan(cv_bernoulli_nll(NAN, 0.5f, &g)) && isnan(g));
}

/* No operation hands a subnormal on (cv_flush_subnormal): they cost the CPU ~100 cycles an
 * operation, and without the flush the logits of always-black pixels (below -87) made
 * subnormal gradients and, through them, a fifth of Adam's m. */
static bool subnormal(float x) { return x != 0.0f && fabsf(x) < FLT_MIN; }

Test(ops_cpu, no_operation_makes_a_subnormal_out_of_normal_inputs) {
    float g;
    const float logits[] = {-87.5f, -100.0f, -103.9f, -1e30f};
    for (int i = 0; i < 4; i++) {
        float nll = cv_bernoulli_nll(logits[i], 0.0f, &g);
        cr_assert(g == 0.0f && !subnormal(nll), "l = %g: gradient %g, nll %g", logits[i], g, nll);
        cv_bernoulli_nll(logits[i], 1.0f, &g);
        cr_assert_eq(g, -1.0f, "l = %g, x = 1: gradient %g", logits[i], g);
        cr_assert_eq(cv_sigmoid(logits[i]), 0.0f, "sigmoid(%g) is subnormal", logits[i]);
        cv_gaussian_nll(logits[i], 0.0f, 0.1f, &g);
        cr_assert(!subnormal(g), "Gaussian gradient at %g is %g", logits[i], g);
    }
    /* a normal result is kept: exp(-87) = 1.6e-38 is the smallest e above FLT_MIN */
    cv_bernoulli_nll(-87.0f, 0.0f, &g);
    cr_assert(g > 0.0f && !subnormal(g), "%g", g);
    /* Adam: m decays by 0.9 a step when the gradient is 0 and passes through the
     * subnormals to 0; v by 0.999 */
    float p = 0.5f, m = 1.2e-38f, v = 1.176e-38f; /* both fall below FLT_MIN */
    cv_adam_update(&p, &m, &v, 0.0f, 0.9f, 0.999f, 1e-8f, 1e-3f, 1.0f);
    cr_assert(m == 0.0f && v == 0.0f && p == 0.5f, "m %g v %g p %g", m, v, p);
    m = 1e-30f;
    for (int t = 0; t < 200; t++) {
        cv_adam_update(&p, &m, &v, 0.0f, 0.9f, 0.999f, 1e-8f, 1e-3f, 1.0f);
        cr_assert(!subnormal(m) && !subnormal(v), "step %d: m %g, v %g", t, m, v);
    }
    cr_assert_eq(m, 0.0f);
    /* a NaN is not flushed */
    cr_assert(isnan(cv_flush_subnormal(NAN)) && cv_flush_subnormal(-FLT_MIN) == -FLT_MIN);
    /* the backend's reconstruction writes exact zeros for black pixels far below -87 */
    const float l[4] = {-120.0f, -95.0f, -88.0f, 3.0f}, x[4] = {0, 0, 0, 1};
    float rec, d[4];
    be->reconstruction(be, CV_LIKELIHOOD_BERNOULLI, 0.1f, l, x, &rec, d, 1.0f, 1, 4);
    for (int i = 0; i < 3; i++) cr_assert_eq(d[i], 0.0f, "dlogits[%d] = %g", i, d[i]);
}

/* ---------- Adam ---------- */

Test(ops_cpu, adam_matches_pytorch_formula_in_double) {
    test_rng r = test_rng_new("adam");
    const size_t n = 70001; /* over the parallel threshold and not a multiple of anything */
    float *p = malloc(n * 4), *g = malloc(n * 4), *m = calloc(n, 4), *v = calloc(n, 4);
    double *pd = malloc(n * 8), *md = calloc(n, 8), *vd = calloc(n, 8);
    test_fill(&r, p, n, -1, 1);
    for (size_t i = 0; i < n; i++) pd[i] = p[i];
    const double lr = 1e-3, b1 = 0.9, b2 = 0.999, eps = 1e-8;
    for (int t = 1; t <= 5; t++) {
        test_fill(&r, g, n, -1, 1);
        cv_step st = {.step = t - 1};
        cv_adam_config c = {.lr = (float)lr, .beta1 = (float)b1, .beta2 = (float)b2,
                            .eps = (float)eps};
        be->adam(be, p, g, m, v, n, &c, &st);
        for (size_t i = 0; i < n; i++) {
            md[i] = b1 * md[i] + (1 - b1) * g[i];
            vd[i] = b2 * vd[i] + (1 - b2) * (double)g[i] * g[i];
            double denom = sqrt(vd[i]) / sqrt(1 - pow(b2, t)) + eps;
            pd[i] -= lr / (1 - pow(b1, t)) * md[i] / denom;
        }
    }
    for (size_t i = 0; i < n; i++) {
        assert_close("p", (int)i, p[i], pd[i], 1e-6, 1e-5);
        assert_close("m", (int)i, m[i], md[i], 1e-7, 1e-5);
        assert_close("v", (int)i, v[i], vd[i], 1e-9, 1e-4);
    }
    free(p); free(g); free(m); free(v); free(pd); free(md); free(vd);
}

/* ---------- batching, sums ---------- */

Test(ops_cpu, gather_batch_scales_and_follows_the_order) {
    test_rng r = test_rng_new("gather");
    const int n = 57, dim = 37, rows = 19, start = 21;
    uint8_t pix[57 * 37], lab[57];
    int32_t perm[57];
    for (int i = 0; i < n * dim; i++) pix[i] = (uint8_t)test_uniform(&r, 0, 256);
    for (int i = 0; i < n; i++) lab[i] = (uint8_t)test_uniform(&r, 0, 10);
    cv_shuffle(perm, n, r.s, 3);
    float x[19 * 37];
    int32_t labels[19];
    cv_step st = {.step = 3, .start = start};
    const cv_device_split src = {.pixels = pix, .labels = lab, .perm = perm, .n = n, .dim = dim};
    be->gather_batch(be, &src, &st, 0, rows, false, 0, x, labels, NULL);
    be->advance_step(be, &st, rows);
    cr_assert(st.step == 4 && st.start == start + rows, "advance_step moved to %lld, %d",
              (long long)st.step, st.start);
    for (int i = 0; i < rows; i++) {
        cr_assert_eq(labels[i], lab[perm[start + i]]);
        for (int j = 0; j < dim; j++)
            cr_assert_eq(x[i * dim + j], (float)pix[perm[start + i] * dim + j] / 255.0f);
    }
}

/* Float images are taken as they are; condition vectors come with their image's row. */
Test(ops_cpu, gather_batch_takes_float_images_and_condition_rows) {
    test_rng r = test_rng_new("gather floats");
    const int n = 41, dim = 12, K = 5, rows = 17, start = 9;
    float fpix[41 * 12], cond[41 * 5], x[17 * 12], c[17 * 5];
    int32_t perm[41], labels[17];
    test_fill(&r, fpix, (size_t)n * dim, 0, 1);
    test_fill(&r, cond, (size_t)n * K, -4, 4);
    cv_shuffle(perm, n, r.s, 5);
    for (int i = 0; i < rows; i++) labels[i] = -7; /* untouched: there are no labels */
    cv_step st = {.step = 2, .start = start};
    const cv_device_split src = {.fpixels = fpix, .conditions = cond, .perm = perm, .n = n,
                                 .dim = dim, .cond_width = K};
    be->gather_batch(be, &src, &st, 0, rows, false, 0, x, labels, c);
    for (int i = 0; i < rows; i++) {
        const int s = perm[start + i];
        cr_assert(memcmp(x + i * dim, fpix + s * dim, dim * sizeof(float)) == 0, "row %d", i);
        cr_assert(memcmp(c + i * K, cond + s * K, K * sizeof(float)) == 0, "condition %d", i);
        cr_assert_eq(labels[i], -7);
    }
    /* binarized float values are Bernoulli draws of the value itself */
    be->gather_batch(be, &src, &st, 0, rows, true, r.s, x, labels, c);
    for (int i = 0; i < rows * dim; i++) {
        const float v = fpix[perm[start + i / dim] * dim + i % dim];
        const float u = cv_philox_uniform(r.s, CV_STREAM_BINARIZE(st.step), (uint64_t)i);
        cr_assert_eq(x[i], u <= v ? 1.0f : 0.0f, "binarized value %d", i);
    }
}

Test(ops_cpu, accumulate_loss_adds_sums_unless_the_step_is_skipped) {
    test_rng r = test_rng_new("accumulate");
    float rec[1001], kl[1001];
    test_fill(&r, rec, 1001, 0, 300);
    test_fill(&r, kl, 1001, 0, 30);
    cv_loss_sums sums = {.rec = 2.5, .kl = 1.0, .rows = 7};
    double ref[3] = {2.5, 1.0, 7 + 1001};
    for (int i = 0; i < 1001; i++) {
        ref[0] += rec[i];
        ref[1] += kl[i];
    }
    cv_step st = {.skip = 0, .grad_sq = 6.25};
    be->accumulate_loss(be, &sums, rec, kl, 1001, &st);
    cr_assert(sums.grad_norm == 2.5 && sums.steps == 1.0, "gradient norm sums %g, %g",
              sums.grad_norm, sums.steps);
    const double got[3] = {sums.rec, sums.kl, sums.rows};
    for (int k = 0; k < 3; k++)
        cr_assert(fabs(got[k] - ref[k]) < 1e-9 * 1001 * 300, "sums[%d] %g vs %g", k, got[k], ref[k]);
    st.skip = 1;
    be->accumulate_loss(be, &sums, rec, kl, 1001, &st);
    cr_assert_eq(sums.rows, ref[2], "a skipped step was counted");
}

Test(ops_cpu, check_finite_flags_the_first_bad_tensor_and_adam_skips) {
    test_rng r = test_rng_new("check_finite");
    const size_t n = 70001;
    float *g = malloc(n * 4), *p = malloc(n * 4), *m = calloc(n, 4), *v = calloc(n, 4);
    float *p0 = malloc(n * 4), rec[5], kl[5];
    test_fill(&r, g, n, -1, 1);
    test_fill(&r, p, n, -1, 1);
    test_fill(&r, rec, 5, 0, 10);
    test_fill(&r, kl, 5, 0, 10);
    memcpy(p0, p, n * 4);
    cv_step st = {.step = 41, .first_bad_step = -1, .first_bad_index = -1,
                  .allowed_nonfinite = 1};
    be->check_finite(be, rec, kl, 5, g, n, &st);
    cr_assert(!st.skip && st.nonfinite_steps == 0, "finite inputs were flagged");
    g[60000] = INFINITY;
    g[123] = NAN;
    be->check_finite(be, rec, kl, 5, g, n, &st);
    cr_assert(st.skip && st.nonfinite_steps == 1 && st.first_bad_step == 41 &&
              st.first_bad_index == 123, "flag %d, count %lld, step %lld, index %lld", st.skip,
              (long long)st.nonfinite_steps, (long long)st.first_bad_step,
              (long long)st.first_bad_index);
    cv_adam_config ac = {.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
    be->adam(be, p, g, m, v, n, &ac, &st);
    cr_assert(memcmp(p, p0, n * 4) == 0, "Adam updated a flagged step");
    be->advance_step(be, &st, 10);
    cr_assert_eq(st.skip, 0);
    g[123] = 0.5f;
    g[60000] = 0.5f;
    kl[3] = NAN;
    be->check_finite(be, rec, kl, 5, g, n, &st);
    cr_assert(st.skip && st.nonfinite_steps == 2, "a NaN loss was not flagged");
    cr_assert(st.first_bad_step == 41, "the first bad step was overwritten");
    /* two bad steps with one allowed: halted, and every later step skipped uncounted */
    cr_assert(st.halted, "the limit was crossed without halting");
    be->advance_step(be, &st, 10);
    kl[3] = 1.0f;
    be->check_finite(be, rec, kl, 5, g, n, &st);
    cr_assert(st.skip && st.nonfinite_steps == 2, "a halted run took a step");
    free(g); free(p); free(m); free(v); free(p0);
}


/* GEMMs are cut into blocks that threads share out; the blocks must depend on the shape
 * alone, because OpenBLAS picks different kernels (with different summation orders) for
 * different block sizes. Shapes of the tests' models and of the default model. */
Test(ops_cpu, gemm_is_the_same_bits_for_any_thread_count) {
    test_rng r = test_rng_new("gemm threads");
    const int shapes[][3] = {{32, 96, 144}, {96, 144, 32}, {32, 144, 96}, {128, 400, 784},
                             {400, 784, 128}, {24, 12, 96}, {500, 40, 96}, {1, 1, 1}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int t = 0; t < 4; t++) {
            const int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
            bool ta = t & 1, tb = t & 2;
            float *a = malloc(sizeof(float) * m * k), *b = malloc(sizeof(float) * k * n);
            float *c[3];
            test_fill(&r, a, (size_t)m * k, -1, 1);
            test_fill(&r, b, (size_t)k * n, -1, 1);
            for (int threads = 1; threads <= 3; threads++) {
                omp_set_num_threads(threads);
                c[threads - 1] = malloc(sizeof(float) * m * n);
                be->gemm(be, ta, tb, m, n, k, 1.0f, a, ta ? m : k, b, tb ? k : n, 0.0f,
                         c[threads - 1], n);
            }
            for (int i = 1; i < 3; i++)
                cr_assert(memcmp(c[i], c[0], sizeof(float) * m * n) == 0,
                          "gemm %dx%dx%d (trans %d,%d) with %d threads differs from 1 thread",
                          m, n, k, ta, tb, i + 1);
            for (int i = 0; i < 3; i++) free(c[i]);
            free(a);
            free(b);
        }
}

/* --clip-grad scales every step by clip / norm, so the norm must be the same bits whatever
 * the thread count, or parameters would depend on OMP_NUM_THREADS. A million random
 * squares summed in two different orders differ in the last bits almost surely. */
Test(ops_cpu, gradient_norm_is_the_same_bits_for_any_thread_count) {
    test_rng r = test_rng_new("grad norm");
    const size_t n = 1000003;
    float *g = malloc(n * sizeof(float)), rec[3] = {1, 2, 3}, kl[3] = {1, 1, 1};
    test_fill(&r, g, n, -3, 3);
    double norms[4];
    const int threads[4] = {1, 2, 3, 7};
    for (int k = 0; k < 4; k++) {
        omp_set_num_threads(threads[k]);
        cv_step st = {.first_bad_step = -1, .first_bad_index = -1};
        be->check_finite(be, rec, kl, 3, g, n, &st);
        norms[k] = st.grad_sq;
    }
    for (int k = 1; k < 4; k++)
        cr_assert(memcmp(&norms[k], &norms[0], sizeof(double)) == 0,
                  "squared norm with %d threads %.17g, with 1 thread %.17g", threads[k],
                  norms[k], norms[0]);
    double ref = 0.0;
    for (size_t i = 0; i < n; i++) ref += (double)g[i] * g[i];
    /* a double sum of n positive terms errs by at most n eps of the total */
    cr_assert(fabs(norms[0] - ref) <= n * DBL_EPSILON * ref, "%.17g vs %.17g", norms[0], ref);
    free(g);
}

/* zero and copy split large buffers over the threads: every byte, and none past the end,
 * whatever the thread count and however the size falls on the cache lines */
Test(ops_cpu, zero_and_copy_cover_every_byte_for_any_thread_count) {
    const size_t sizes[] = {0, 1, 4097, (1u << 20) + 1, (3u << 20) + 5};
    const int threads[3] = {1, 2, 3};
    for (int t = 0; t < 3; t++) {
        omp_set_num_threads(threads[t]);
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            const size_t n = sizes[i];
            unsigned char *a = malloc(n + 1), *b = malloc(n + 1);
            for (size_t j = 0; j <= n; j++) a[j] = (unsigned char)(j * 7 + 3);
            memset(b, 0xEE, n + 1);
            be->copy(be, b, a, n);
            cr_assert(memcmp(a, b, n) == 0 && b[n] == 0xEE, "%d threads: copy of %zu bytes",
                      threads[t], n);
            be->zero(be, a, n);
            for (size_t j = 0; j < n; j++)
                cr_assert(a[j] == 0, "%d threads: byte %zu of %zu not zeroed", threads[t], j, n);
            cr_assert_eq(a[n], (unsigned char)(n * 7 + 3), "%d threads: zero wrote past %zu",
                         threads[t], n);
            free(a);
            free(b);
        }
    }
}
