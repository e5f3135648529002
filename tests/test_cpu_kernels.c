/* test_cpu_kernels.c: the CPU backend's vectorised kernels (src/host/backend/cpu_kernels.h)
 * for every instruction set this CPU runs: against cv_math.h's scalar functions (libm's
 * exp and log) and double-precision references, at awkward lengths (a short last
 * vector) and at the edges (NaN, Inf, the clamp, subnormals); the kernels without exp or
 * log give exactly the scalar bits; AVX-512 and AVX2 give each other's bits; a split of
 * the work never changes a value; and a few training steps come out bitwise the same
 * with either table and with 1, 2 or 3 threads (the baseline's, bits of their own, with 1
 * or 2).
 *
 * Tolerances follow docs/design.md 3.4's R2: n FLT_EPSILON S, S the largest term of the
 * formula, n twice the roundings that may differ (SLEEF's exp and log err by up to 1
 * ulp, glibc's by up to 0.5 and 0.8: 3 roundings a call).
 */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu_kernels.h"
#include "cv_math.h"
#include "cvae/rng.h"
#include "cvae/train.h"
#include "helpers.h"

#define EPS ((double)FLT_EPSILON)

static const char *const isa_names[CV_ISA_COUNT] = {"baseline", "AVX2", "AVX-512"};

/* |got - ref| <= tol, or both NaN, or both the same infinity */
static void expect_near(const char *what, const char *isa, int i, double got, double ref,
                        double tol) {
    if (isnan(ref) || isinf(ref)) {
        cr_assert(isnan(ref) ? isnan(got) : got == ref, "%s (%s) [%d]: %g, expected %g", what,
                  isa, i, got, ref);
        return;
    }
    cr_assert(fabs(got - ref) <= tol, "%s (%s) [%d]: %.9g, reference %.9g (tolerance %.3g)",
              what, isa, i, got, ref, tol);
}

/* logits over the whole range, with the edges among them */
static void fill_logits(test_rng *r, float *l, int n) {
    static const float edges[] = {0.0f, -0.0f, 87.3f, -87.3f, 88.8f, -88.8f, -103.9f,
                                  1e30f, -1e30f, 17.0f, -17.0f, 1e-30f};
    for (int i = 0; i < n; i++) {
        const double u = test_uniform(r, 0, 1);
        l[i] = u < 0.1 ? edges[(int)test_uniform(r, 0, sizeof edges / sizeof edges[0])]
               : u < 0.6 ? (float)test_uniform(r, -8, 8)
                         : (float)test_uniform(r, -120, 120);
    }
}

static const int LENGTHS[] = {1, 3, 15, 16, 17, 31, 33, 784, 1001};
#define N_LENGTHS (int)(sizeof LENGTHS / sizeof LENGTHS[0])

/* ---- reconstruction ---- */

static double softplus(double l) { return l > 0 ? l + log1p(exp(-l)) : log1p(exp(l)); }

Test(cpu_kernels, bernoulli_rows_match_the_scalar_formula_and_double) {
    test_rng r = test_rng_new("bernoulli rows");
    const int n = 1001;
    float l[1001], x[1001], d[1001];
    fill_logits(&r, l, n);
    test_fill(&r, x, n, 0, 1);
    x[0] = 0.0f;
    x[1] = 1.0f;
    const float scale = (float)test_uniform(&r, 0.01, 1);
    for (int isa = 0; isa < CV_ISA_COUNT; isa++) {
        const cv_cpu_kernels *k = cv_cpu_kernels_for((cv_cpu_isa)isa);
        if (!k) continue;
        /* element by element (rows of one): the NLL and its gradient */
        for (int i = 0; i < n; i++) {
            float g_ref, dl;
            const float nll_ref = cv_bernoulli_nll(l[i], x[i], &g_ref);
            const float nll = k->bernoulli_row(&l[i], &x[i], &dl, scale, 1);
            const double lx = fabs((double)x[i] * l[i]);
            const double exact = softplus(l[i]) - (double)x[i] * l[i];
            const double S = fmax(l[i], 0.0) + lx + log1p(exp(-fabs((double)l[i])));
            expect_near("nll against the scalar", isa_names[isa], i, nll, nll_ref, 6 * EPS * S);
            if (isfinite(exact))
                expect_near("nll against double", isa_names[isa], i, nll, exact, 4 * EPS * S);
            expect_near("gradient", isa_names[isa], i, dl, scale * g_ref,
                        6 * EPS * scale * (fabs(g_ref) + x[i]) + FLT_MIN);
            cr_assert(dl == 0.0f || fabsf(dl) >= FLT_MIN, "a subnormal gradient at l = %g", l[i]);
        }
        /* rows of every length, the last vector short: the sum over the row */
        for (int c = 0; c < N_LENGTHS; c++) {
            const int len = LENGTHS[c];
            double exact = 0, mag = 0;
            for (int i = 0; i < len; i++) {
                const double t = softplus(l[i]) - (double)x[i] * l[i];
                exact += t;
                mag += fabs(t);
            }
            const float sum = k->bernoulli_row(l, x, d, scale, len);
            const float no_grad = k->bernoulli_row(l, x, NULL, scale, len);
            cr_assert(memcmp(&sum, &no_grad, sizeof sum) == 0, "the sum depends on the gradient");
            if (isfinite(exact))
                expect_near("row sum", isa_names[isa], len, sum, exact, (len + 8) * EPS * mag);
        }
    }
}

/* cv_math.h's promise: log1p(exp(l)) as accurate as log1pf, relative to its tiny value */
Test(cpu_kernels, bernoulli_nll_of_very_negative_logits_keeps_its_relative_accuracy) {
    for (int isa = 0; isa < CV_ISA_COUNT; isa++) {
        const cv_cpu_kernels *k = cv_cpu_kernels_for((cv_cpu_isa)isa);
        if (!k) continue;
        for (float l = -87.0f; l < 0.0f; l += 0.37f) {
            const float x = 0.0f, nll = k->bernoulli_row(&l, &x, NULL, 1.0f, 1);
            const double exact = log1p(exp((double)l));
            cr_assert(fabs(nll - exact) <= 3 * EPS * exact, "%s: l = %g: %.9g, exact %.9g",
                      isa_names[isa], l, nll, exact);
        }
    }
}

Test(cpu_kernels, gaussian_rows_match_the_scalar_formula) {
    test_rng r = test_rng_new("gaussian rows");
    const int n = 1001;
    float l[1001], x[1001], d[1001];
    fill_logits(&r, l, n);
    test_fill(&r, x, n, 0, 1);
    const float sigmas[] = {0.1f, 0.37f, 1.0f};
    for (int isa = 0; isa < CV_ISA_COUNT; isa++) {
        const cv_cpu_kernels *k = cv_cpu_kernels_for((cv_cpu_isa)isa);
        if (!k) continue;
        for (int s = 0; s < 3; s++) {
            const float sigma = sigmas[s], iv = 1.0f / (sigma * sigma);
            for (int i = 0; i < n; i++) {
                float g_ref, dl;
                const float nll_ref = cv_gaussian_nll(l[i], x[i], sigma, &g_ref);
                const float nll = k->gaussian_row(&l[i], &x[i], sigma, &dl, 1.0f, 1);
                /* p = sigmoid(l) errs by 3 roundings relative; (p - x)^2 / 2 sigma^2 and the
                 * constant log term are the scale */
                expect_near("nll", isa_names[isa], i, nll, nll_ref,
                            12 * EPS * (0.5 * iv + fabs(log(sigma)) + 1));
                expect_near("gradient", isa_names[isa], i, dl, g_ref, 12 * EPS * iv + FLT_MIN);
            }
            for (int c = 0; c < N_LENGTHS; c++) {
                const int len = LENGTHS[c];
                double ref = 0, mag = 0;
                for (int i = 0; i < len; i++) {
                    float g;
                    const float t = cv_gaussian_nll(l[i], x[i], sigma, &g);
                    ref += t;
                    mag += fabs(t);
                }
                const float sum = k->gaussian_row(l, x, sigma, d, 1.0f, len);
                expect_near("row sum", isa_names[isa], len, sum, ref, (len + 16) * EPS * mag);
            }
        }
    }
}

Test(cpu_kernels, nan_and_infinite_logits_give_what_the_scalar_formulas_give) {
    const float l[] = {NAN, INFINITY, -INFINITY, -NAN}, xs[] = {0.0f, 0.5f, 1.0f};
    for (int isa = 0; isa < CV_ISA_COUNT; isa++) {
        const cv_cpu_kernels *k = cv_cpu_kernels_for((cv_cpu_isa)isa);
        if (!k) continue;
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 3; j++) {
                float g_ref, dl, gg_ref, gdl;
                const float b_ref = cv_bernoulli_nll(l[i], xs[j], &g_ref);
                const float b = k->bernoulli_row(&l[i], &xs[j], &dl, 1.0f, 1);
                const float q_ref = cv_gaussian_nll(l[i], xs[j], 0.2f, &gg_ref);
                const float q = k->gaussian_row(&l[i], &xs[j], 0.2f, &gdl, 1.0f, 1);
                const float got[4] = {b, dl, q, gdl}, ref[4] = {b_ref, g_ref, q_ref, gg_ref};
                for (int c = 0; c < 4; c++)
                    cr_assert(isnan(ref[c]) ? isnan(got[c]) : got[c] == ref[c],
                              "%s: l = %g, x = %g, output %d: %g, scalar %g", isa_names[isa],
                              l[i], xs[j], c, got[c], ref[c]);
            }
    }
}

/* ---- reparameterization and KL ---- */

/* rows of `latent` values: mu, s (some beyond the clamp), eps, dz, and a prior's m and r */
typedef struct {
    float mu[40], s[40], eps[40], dz[40], pm[40], pr[40];
} latent_row;

static void fill_latent(test_rng *r, latent_row *x, int latent) {
    test_fill(r, x->mu, latent, -2, 2);
    test_fill(r, x->s, latent, -4, 4);
    for (int j = 0; j < latent; j++) x->eps[j] = (float)test_normal(r);
    test_fill(r, x->dz, latent, -1, 1);
    test_fill(r, x->pm, latent, -1, 1);
    test_fill(r, x->pr, latent, -2, 2);
    x->s[0] = 35.0f;
    if (latent > 2) x->s[2] = -33.0f;
    if (latent > 3) x->pr[3] = 31.0f;
    if (latent > 5) x->s[5] = 29.5f;
}

static void check_reparam_forward(const cv_cpu_kernels *k, const char *isa, const latent_row *x,
                                  int latent, bool prior) {
    float z[40], kl, ratio;
    k->reparam_forward_row(x->mu, x->s, x->eps, prior ? x->pm : NULL, prior ? x->pr : NULL, z,
                           &kl, &ratio, latent);
    double kl_ref = 0, kl_mag = 0, ratio_ref = 0, ratio_mag = 0;
    for (int j = 0; j < latent; j++) {
        const double mu = x->mu[j], s = cv_clamp_logvar(x->s[j]), e = x->eps[j], zj = z[j];
        expect_near("z", isa, j, z[j], cv_reparam_z(x->mu[j], (float)s, x->eps[j]),
                    6 * EPS * (fabs(mu) + exp(0.5 * s) * fabs(e)));
        const double log_q = -0.5 * (e * e + s + CV_LOG_2PI);
        if (prior) {
            const double m = x->pm[j], r = cv_clamp_logvar(x->pr[j]), d = mu - m, dz = zj - m;
            kl_ref += 0.5 * (r - s + (exp(s) + d * d) * exp(-r) - 1);
            kl_mag += fabs(r) + fabs(s) + (exp(s) + d * d) * exp(-r) + 1;
            ratio_ref += -0.5 * (dz * dz * exp(-r) + r + CV_LOG_2PI) - log_q;
            ratio_mag += dz * dz * exp(-r) + fabs(r) + e * e + fabs(s) + 2 * CV_LOG_2PI;
        } else {
            kl_ref += 0.5 * (mu * mu + exp(s) - 1 - s);
            kl_mag += mu * mu + exp(s) + 1 + fabs(s);
            ratio_ref += -0.5 * (zj * zj + CV_LOG_2PI) - log_q;
            ratio_mag += zj * zj + e * e + fabs(s) + 2 * CV_LOG_2PI;
        }
    }
    expect_near(prior ? "kl (prior)" : "kl", isa, latent, kl, kl_ref,
                (latent + 8) * 2 * EPS * kl_mag);
    expect_near(prior ? "log ratio (prior)" : "log ratio", isa, latent, ratio, ratio_ref,
                (latent + 8) * 2 * EPS * ratio_mag);
}

/* the backward against cv_math.h's gradients, as the scalar loop called them; with unit_kl
 * (free bits), each unit's KL scale is cv_free_bits_scale's */
static void check_reparam_backward(const cv_cpu_kernels *k, const char *isa, const latent_row *x,
                                   int latent, bool prior, float kl_scale_all,
                                   const float *unit_kl, float floor) {
    float dmu[40], ds[40], dpm[40], dpr[40], dpm0[40], dpr0[40];
    for (int j = 0; j < latent; j++) dpm0[j] = dpm[j] = 0.25f * (float)j, dpr0[j] = dpr[j] = -0.5f;
    k->reparam_backward_row(x->mu, x->s, x->eps, x->dz, kl_scale_all, unit_kl, floor,
                            prior ? x->pm : NULL, prior ? x->pr : NULL, dmu, ds, dpm, dpr, true,
                            latent);
    for (int j = 0; j < latent; j++) {
        const float kl_scale =
            unit_kl ? cv_free_bits_scale(kl_scale_all, unit_kl[j], floor) : kl_scale_all;
        const float sj = cv_clamp_logvar(x->s[j]), cg = cv_clamp_logvar_grad(x->s[j]);
        const float mu = x->mu[j], e = x->eps[j], g = x->dz[j];
        const double h = fabs(g * e * 0.5 * exp(0.5 * sj));
        if (!prior) {
            expect_near("dmu", isa, j, dmu[j], cv_reparam_grad_mu(mu, g, kl_scale),
                        6 * EPS * (fabs(g) + fabs(kl_scale * mu)));
            expect_near("ds", isa, j, ds[j], cv_reparam_grad_s(sj, e, g, kl_scale) * cg,
                        6 * EPS * (h + kl_scale * 0.5 * (exp(sj) + 1)));
            continue;
        }
        const float m = x->pm[j], rr = x->pr[j], rj = cv_clamp_logvar(rr);
        const float g_mu = cv_kl_gauss_grad_mu(mu, m, rj);
        expect_near("dmu (prior)", isa, j, dmu[j], g + kl_scale * g_mu,
                    6 * EPS * (fabs(g) + fabs(kl_scale * g_mu)));
        const float ds_ref =
            (cv_reparam_grad_s(sj, e, g, 0.0f) + kl_scale * cv_kl_gauss_grad_s(sj, rj)) * cg;
        expect_near("ds (prior)", isa, j, ds[j], ds_ref,
                    6 * EPS * (h + kl_scale * 0.5 * (exp((double)sj - rj) + 1)));
        expect_near("dm", isa, j, dpm[j], dpm0[j] - kl_scale * g_mu,
                    6 * EPS * (fabs(dpm0[j]) + fabs(kl_scale * g_mu)));
        const double d = mu - m, big = kl_scale * 0.5 * (1 + (exp(sj) + d * d) * exp(-rj));
        const float g_r = kl_scale * cv_kl_gauss_grad_r(mu, sj, m, rj) * cv_clamp_logvar_grad(rr);
        expect_near("dr", isa, j, dpr[j], dpr0[j] + g_r, 6 * EPS * (fabs(dpr0[j]) + big));
    }
    /* a per-row prior's gradients are written, not added */
    float wm[40], wr[40];
    k->reparam_backward_row(x->mu, x->s, x->eps, x->dz, kl_scale_all, unit_kl, floor,
                            prior ? x->pm : NULL, prior ? x->pr : NULL, dmu, ds, wm, wr, false,
                            latent);
    for (int j = 0; prior && j < latent; j++)
        cr_assert(dpm[j] == dpm0[j] + wm[j] && dpr[j] == dpr0[j] + wr[j],
                  "%s: the gradients written and added differ at %d", isa, j);
}

Test(cpu_kernels, reparameterization_rows_match_the_scalar_formulas_and_double) {
    test_rng r = test_rng_new("reparam rows");
    const int latents[] = {1, 3, 16, 17, 20, 33, 40};
    for (int isa = 0; isa < CV_ISA_COUNT; isa++) {
        const cv_cpu_kernels *k = cv_cpu_kernels_for((cv_cpu_isa)isa);
        if (!k) continue;
        for (int c = 0; c < 7; c++)
            for (int rep = 0; rep < 20; rep++) {
                latent_row x;
                fill_latent(&r, &x, latents[c]);
                const float kl_scale = (float)test_uniform(&r, 0.05, 2);
                /* free bits: units' KL on both sides of the floor */
                float unit_kl[40];
                const float floor = (float)test_uniform(&r, 0.1, 1);
                test_fill(&r, unit_kl, latents[c], 0, 2 * floor);
                for (int prior = 0; prior < 2; prior++) {
                    check_reparam_forward(k, isa_names[isa], &x, latents[c], prior);
                    check_reparam_backward(k, isa_names[isa], &x, latents[c], prior, kl_scale,
                                           NULL, 0.0f);
                    check_reparam_backward(k, isa_names[isa], &x, latents[c], prior, kl_scale,
                                           unit_kl, floor);
                }
            }
    }
}

/* ---- normal draws ---- */

Test(cpu_kernels, normal_draws_are_the_philox_stream_whatever_the_split) {
    test_rng r = test_rng_new("normal fill");
    const size_t n = 1000;
    float whole[1000], part[1000];
    for (int isa = 0; isa < CV_ISA_COUNT; isa++) {
        const cv_cpu_kernels *k = cv_cpu_kernels_for((cv_cpu_isa)isa);
        if (!k) continue;
        const uint64_t stream = (uint64_t)test_uniform(&r, 0, 1e9);
        k->normal_fill(whole, n, r.s, stream, 0);
        for (size_t i = 0; i < n; i++) {
            const float ref = cv_philox_normal(r.s, stream, i);
            expect_near("normal", isa_names[isa], (int)i, whole[i], ref,
                        8 * EPS * fabs(ref) + 1e-37);
        }
        /* any first element and length: the same values, never a write past the end */
        const size_t firsts[] = {0, 1, 3, 63, 64, 65, 130, 999}, lens[] = {1, 2, 5, 64, 100, 500};
        for (int a = 0; a < 8; a++)
            for (int b = 0; b < 6; b++) {
                const size_t first = firsts[a], len = first + lens[b] <= n ? lens[b] : n - first;
                for (size_t i = 0; i < n; i++) part[i] = -7.0f;
                k->normal_fill(part + first, len, r.s, stream, first);
                for (size_t i = 0; i < n; i++) {
                    const bool in = i >= first && i < first + len;
                    const bool ok = in ? memcmp(&part[i], &whole[i], sizeof(float)) == 0
                                       : part[i] == -7.0f;
                    cr_assert(ok, "%s: element %zu of a fill from %zu of %zu", isa_names[isa], i,
                              first, len);
                }
            }
    }
}

/* ---- the kernels without exp or log: cv_math.h's bits exactly ---- */

static void expect_same(const char *what, const char *isa, const float *a, const float *b,
                        size_t n) {
    for (size_t i = 0; i < n; i++)
        cr_assert(memcmp(&a[i], &b[i], sizeof(float)) == 0, "%s (%s) [%zu]: %a, scalar %a",
                  what, isa, i, a[i], b[i]);
}

Test(cpu_kernels, adam_bias_and_gather_give_the_scalar_bits) {
    test_rng r = test_rng_new("exact kernels");
    const size_t n = 70001;
    float *p = malloc(n * 4), *g = malloc(n * 4), *m = malloc(n * 4), *v = malloc(n * 4);
    float *p2 = malloc(n * 4), *m2 = malloc(n * 4), *v2 = malloc(n * 4);
    test_fill(&r, p, n, -1, 1);
    test_fill(&r, g, n, -1, 1);
    test_fill(&r, m, n, -0.1, 0.1);
    test_fill(&r, v, n, 0, 0.01);
    m[5] = 1.2e-38f; /* flushed to 0 after the decay */
    const cv_adam_consts c = {0.75f, 0.9f, 0.999f, 1e-8f, 1e-3f / 0.19f, 1.0f / sqrtf(0.002f)};
    const int rows = 7, cols = 37, classes = 3;
    float y[7 * 37], y0[7 * 37], yref[7 * 37], bias[37], cond[3 * 37], dy[7 * 37], dyref[7 * 37];
    int32_t labels[7];
    test_fill(&r, y0, rows * cols, -1, 1);
    test_fill(&r, bias, cols, -1, 1);
    test_fill(&r, cond, classes * cols, -1, 1);
    for (int i = 0; i < rows; i++) labels[i] = (int32_t)test_uniform(&r, 0, classes);
    uint8_t px[37];
    float fx[37], x[37], xref[37];
    for (int j = 0; j < cols; j++) px[j] = (uint8_t)test_uniform(&r, 0, 256);
    test_fill(&r, fx, cols, 0, 1);
    for (int isa = 0; isa < CV_ISA_COUNT; isa++) {
        const cv_cpu_kernels *k = cv_cpu_kernels_for((cv_cpu_isa)isa);
        if (!k) continue;
        const char *name = isa_names[isa];
        /* Adam */
        memcpy(p2, p, n * 4);
        memcpy(m2, m, n * 4);
        memcpy(v2, v, n * 4);
        k->adam(p2, g, m2, v2, n, &c);
        for (size_t i = 0; i < n; i++) {
            float pi = p[i], mi = m[i], vi = v[i];
            cv_adam_update(&pi, &mi, &vi, c.clip * g[i], c.beta1, c.beta2, c.eps, c.step_size,
                           c.inv_bc2_sqrt);
            cr_assert(memcmp(&pi, &p2[i], 4) == 0 && memcmp(&mi, &m2[i], 4) == 0 &&
                          memcmp(&vi, &v2[i], 4) == 0, "adam (%s) [%zu]", name, i);
        }
        /* bias, condition row, ReLU: every combination */
        for (int variant = 0; variant < 4; variant++) {
            const bool relu = variant & 1, with_cond = variant & 2;
            memcpy(y, y0, sizeof y);
            for (int i = 0; i < rows; i++) {
                const float *cr = with_cond ? cond + labels[i] * cols : NULL;
                k->bias_act_forward_row(y + i * cols, bias, cr, cols, relu);
                for (int j = 0; j < cols; j++) {
                    const float t = y0[i * cols + j] + bias[j] + (cr ? cr[j] : 0.0f);
                    yref[i * cols + j] = relu ? cv_relu(t) : t;
                }
            }
            expect_same("bias_act_forward", name, y, yref, (size_t)rows * cols);
            /* the backward over two column blocks, as two threads split it */
            float db[37] = {0}, dbref[37] = {0}, dc[3 * 37] = {0}, dcref[3 * 37] = {0};
            test_fill(&r, dy, rows * cols, -1, 1);
            memcpy(dyref, dy, sizeof dy);
            float *dcp = with_cond ? dc : NULL;
            k->bias_act_backward_cols(dy, y, db, dcp, labels, rows, cols, 0, 16, relu);
            k->bias_act_backward_cols(dy, y, db, dcp, labels, rows, cols, 16, cols, relu);
            for (int i = 0; i < rows; i++)
                for (int j = 0; j < cols; j++) {
                    float *d = &dyref[i * cols + j];
                    if (relu) *d = y[i * cols + j] > 0.0f ? *d : 0.0f;
                    dbref[j] += *d;
                    if (with_cond) dcref[labels[i] * cols + j] += *d;
                }
            expect_same("masked dy", name, dy, dyref, (size_t)rows * cols);
            expect_same("dbias", name, db, dbref, (size_t)cols);
            expect_same("dcond", name, dc, dcref, (size_t)classes * cols);
        }
        /* the gather: bytes, floats, binarized from elements on and off a block's and a
         * register group's start, and past 2^34 (block numbers above 32 bits) */
        const uint64_t elements[] = {0, 3, 4 * 37 + 3, 63, 64, 127, (1ull << 34) - 5};
        for (int variant = 0; variant < 4 * 7; variant++) {
            const bool bytes = variant & 1, binarize = variant & 2;
            const uint64_t element = elements[variant / 4], stream = CV_STREAM_BINARIZE(11);
            k->gather_row(bytes ? px : NULL, bytes ? NULL : fx, x, cols, binarize, r.s, stream,
                          element);
            for (int j = 0; j < cols; j++) {
                float t = cv_pixel_value(bytes ? px : NULL, fx, (size_t)j);
                if (binarize) t = cv_bernoulli(cv_philox_uniform(r.s, stream, element + j), t);
                xref[j] = t;
            }
            expect_same("gather", name, x, xref, (size_t)cols);
        }
        /* every byte value, on and off a register's start */
        uint8_t all[257];
        float xall[256], xallref[256];
        for (int b = 0; b < 256; b++) all[b + 1] = (uint8_t)b;
        for (int at = 0; at < 2; at++) {
            k->gather_row(all + at, NULL, xall, 256 - at, false, r.s, 0, 0);
            for (int j = 0; j < 256 - at; j++) xallref[j] = cv_pixel_value(all + at, NULL, j);
            expect_same("gather of every byte", name, xall, xallref, (size_t)(256 - at));
        }
    }
    free(p); free(g); free(m); free(v); free(p2); free(m2); free(v2);
}

/* The documented order: lane i % 16 sums x[i]^2 in double, then the halves of the lanes
 * are added lane by lane, 8 + 4 + 2 + 1. */
static double lanes_then_halves(const float *x, size_t n) {
    double h[16] = {0};
    for (size_t i = 0; i < n; i++) h[i % 16] += (double)x[i] * x[i];
    for (int w = 8; w >= 1; w /= 2)
        for (int k = 0; k < w; k++) h[k] += h[k + w];
    return h[0];
}

Test(cpu_kernels, sum_of_squares_has_one_order_on_every_set) {
    test_rng r = test_rng_new("sum of squares");
    const size_t n = 10007;
    float *x = malloc(n * 4);
    test_fill(&r, x, n, -3, 3);
    for (int isa = 0; isa < CV_ISA_COUNT; isa++) {
        const cv_cpu_kernels *k = cv_cpu_kernels_for((cv_cpu_isa)isa);
        if (!k) continue;
        const size_t lens[] = {0, 1, 15, 16, 17, 1000, n};
        for (int c = 0; c < 7; c++) {
            const double got = k->sum_squares(x, lens[c]), ref = lanes_then_halves(x, lens[c]);
            cr_assert(memcmp(&got, &ref, sizeof got) == 0, "%s: %zu values: %.17g, expected %.17g",
                      isa_names[isa], lens[c], got, ref);
        }
        x[77] = NAN;
        cr_assert(isnan(k->sum_squares(x, n)), "%s: a NaN was lost", isa_names[isa]);
        x[77] = 1.0f;
    }
    free(x);
}

/* ---- AVX-512 and AVX2: the same bits ---- */

static void expect_same_bits(const char *what, const void *a, const void *b, size_t bytes) {
    cr_assert(memcmp(a, b, bytes) == 0, "%s differs between AVX-512 and AVX2", what);
}

Test(cpu_kernels, avx512_and_avx2_give_the_same_bits) {
    const cv_cpu_kernels *wide = cv_cpu_kernels_for(CV_ISA_AVX512);
    const cv_cpu_kernels *narrow = cv_cpu_kernels_for(CV_ISA_AVX2);
    if (!wide || !narrow) cr_skip_test("this CPU lacks AVX-512 or AVX2 with FMA");
    test_rng r = test_rng_new("avx512 vs avx2");
    enum { N = 4001 };
    static float l[N], x[N], d1[N], d2[N];
    fill_logits(&r, l, N);
    test_fill(&r, x, N, 0, 1);
    for (int len = 1; len <= N; len += 250) {
        const float a = wide->bernoulli_row(l, x, d1, 0.3f, len);
        const float b = narrow->bernoulli_row(l, x, d2, 0.3f, len);
        expect_same_bits("the Bernoulli row sum", &a, &b, sizeof a);
        expect_same_bits("the Bernoulli gradient", d1, d2, (size_t)len * sizeof(float));
        const float c = wide->gaussian_row(l, x, 0.1f, d1, 0.3f, len);
        const float e = narrow->gaussian_row(l, x, 0.1f, d2, 0.3f, len);
        expect_same_bits("the Gaussian row sum", &c, &e, sizeof c);
        expect_same_bits("the Gaussian gradient", d1, d2, (size_t)len * sizeof(float));
    }
    for (int rep = 0; rep < 50; rep++) {
        latent_row in;
        const int latent = rep % 2 ? 20 : 33;
        fill_latent(&r, &in, latent);
        for (int prior = 0; prior < 2; prior++) {
            float z[2][40], kl[2], ratio[2], dmu[2][40], ds[2][40];
            float dm[2][40] = {{0}}, dr[2][40] = {{0}};
            const cv_cpu_kernels *ks[2] = {wide, narrow};
            for (int t = 0; t < 2; t++) {
                ks[t]->reparam_forward_row(in.mu, in.s, in.eps, prior ? in.pm : NULL,
                                           prior ? in.pr : NULL, z[t], &kl[t], &ratio[t], latent);
                ks[t]->reparam_backward_row(in.mu, in.s, in.eps, in.dz, 0.7f, in.dz, 0.0f,
                                            prior ? in.pm : NULL, prior ? in.pr : NULL, dmu[t],
                                            ds[t], dm[t], dr[t], true, latent);
            }
            expect_same_bits("z", z[0], z[1], latent * sizeof(float));
            expect_same_bits("kl", &kl[0], &kl[1], sizeof kl[0]);
            expect_same_bits("the log ratio", &ratio[0], &ratio[1], sizeof ratio[0]);
            expect_same_bits("dmu", dmu[0], dmu[1], latent * sizeof(float));
            expect_same_bits("ds", ds[0], ds[1], latent * sizeof(float));
            expect_same_bits("dm", dm[0], dm[1], latent * sizeof(float));
            expect_same_bits("dr", dr[0], dr[1], latent * sizeof(float));
        }
    }
    wide->normal_fill(d1, N, r.s, 5, 3);
    narrow->normal_fill(d2, N, r.s, 5, 3);
    expect_same_bits("the normal draws", d1, d2, sizeof d1);
}

/* ---- training: the same bits with either table, with 1, 2 or 3 threads ---- */

typedef struct {
    cv_backend *be;
    cv_model m;
    cv_workspace ws;
    cv_device_split data;
    float *params;
} kernel_run;

/* Three steps of a model big enough for every operation to split over the threads
 * (784 values an image, 64 rows, latent 20 with a short last vector), with the learned
 * prior and binarization (Bernoulli) or the Gaussian likelihood; its parameters after. */
static void train_three_steps(kernel_run *run, const cv_cpu_kernels *k, int threads,
                              bool gaussian, uint64_t seed) {
    cv_err err;
    omp_set_num_threads(threads);
    cr_assert_eq(cv_backend_cpu_create(&run->be, &err), CV_OK);
    cv_backend_cpu_set_kernels(run->be, k);
    cv_model_config cfg = {.height = 28, .width = 28, .channels = 1, .cond_width = 10,
                           .latent = 20, .n_hidden = 2, .hidden = {96, 40},
                           .prior = gaussian ? CV_PRIOR_STANDARD : CV_PRIOR_CONDITIONAL,
                           .likelihood =
                               gaussian ? CV_LIKELIHOOD_GAUSSIAN : CV_LIKELIHOOD_BERNOULLI,
                           .sigma = 0.3f};
    cr_assert_eq(cv_model_create(run->be, &cfg, &run->m, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(cv_model_init_params(&run->m, seed, &err), CV_OK);
    cr_assert_eq(cv_workspace_create(&run->m, 64, &run->ws, &err), CV_OK);
    const int rows = 3 * 64, dim = 784; /* each step takes the next 64 */
    cv_split host = {.n = rows, .h = 28, .w = 28, .channels = 1};
    host.pixels = malloc((size_t)rows * dim);
    host.labels = malloc(rows);
    uint64_t s = seed;
    for (int i = 0; i < rows * dim; i++) {
        s = s * 6364136223846793005u + 1442695040888963407u; /* Knuth's LCG */
        host.pixels[i] = (uint8_t)(s >> 56);
    }
    for (int i = 0; i < rows; i++) host.labels[i] = (uint8_t)(i % 10);
    cr_assert_eq(cv_device_split_upload(run->be, &host, &run->data, &err), CV_OK);
    cv_split_free(&host);
    cv_step st = {.first_bad_step = -1, .first_bad_index = -1};
    cv_loss_sums sums = {0};
    run->be->upload(run->be, run->ws.step, &st, sizeof st);
    run->be->upload(run->be, run->ws.sums, &sums, sizeof sums);
    const cv_adam_config adam = {.lr = 1e-2f, .beta1 = CV_ADAM_BETA1, .beta2 = CV_ADAM_BETA2,
                                 .eps = CV_ADAM_EPS, .clip_norm = 50.0f};
    for (int i = 0; i < 3; i++)
        cv_train_step(&run->m, &run->ws, &run->data, TEST_WHOLE_BATCH(64), seed, &adam, 1.0f,
                      !gaussian);
    const size_t n = run->m.layout.n_params;
    run->params = malloc(n * sizeof(float));
    run->be->download(run->be, run->params, run->m.params, n * sizeof(float));
    cv_device_split_free(run->be, &run->data);
    cv_workspace_destroy(&run->m, &run->ws);
}

static void close_run(kernel_run *run) {
    cv_model_destroy(&run->m);
    run->be->destroy(run->be);
    free(run->params);
}

Test(cpu_kernels, training_steps_are_the_same_bits_on_either_set_and_any_thread_count) {
    test_rng r = test_rng_new("training across sets and threads");
    const cv_cpu_kernels *best = cv_cpu_kernels_best(), *avx2 = cv_cpu_kernels_for(CV_ISA_AVX2);
    const int saved = omp_get_max_threads();
    for (int gaussian = 0; gaussian < 2; gaussian++) {
        kernel_run ref, other;
        train_three_steps(&ref, best, 1, gaussian, r.s);
        const size_t bytes = ref.m.layout.n_params * sizeof(float);
        for (int threads = 2; threads <= 3; threads++) {
            train_three_steps(&other, best, threads, gaussian, r.s);
            cr_assert(memcmp(ref.params, other.params, bytes) == 0,
                      "%s: %d threads and 1 gave different parameters", best->name, threads);
            close_run(&other);
        }
        if (avx2 && avx2 != best) {
            train_three_steps(&other, avx2, 2, gaussian, r.s);
            cr_assert(memcmp(ref.params, other.params, bytes) == 0,
                      "AVX2 and %s gave different parameters", best->name);
            close_run(&other);
        }
        close_run(&ref);
        /* the baseline's SLEEF rounds some values otherwise: bits of its own, but the same
         * for any thread count (what a CPU without AVX2 runs, here on every CPU) */
        const cv_cpu_kernels *base = cv_cpu_kernels_for(CV_ISA_BASELINE);
        if (base == best) continue;
        train_three_steps(&ref, base, 1, gaussian, r.s);
        train_three_steps(&other, base, 2, gaussian, r.s);
        cr_assert(memcmp(ref.params, other.params, bytes) == 0,
                  "%s: 2 threads and 1 gave different parameters", base->name);
        close_run(&other);
        close_run(&ref);
    }
    omp_set_num_threads(saved);
}
