/* test_objectives.c: the model options' operations against double-precision references
 * and central finite differences (h = 1e-6, see test_ops_cpu.c): the learned conditional
 * prior's KL, the Gaussian likelihood, Adam's schedule and clipping, binarized batches. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cv_math.h"
#include "cvae/backend.h"
#include "cvae/rng.h"
#include "helpers.h"

#define FD_H 1e-6

static cv_backend *be;

static void setup(void) {
    cv_err err;
    cr_assert_eq(cv_backend_cpu_create(&be, &err), CV_OK);
}
static void teardown(void) { be->destroy(be); }

TestSuite(objectives, .init = setup, .fini = teardown);

static double clampd(double s) { return s < CV_LOGVAR_MIN ? CV_LOGVAR_MIN : s > CV_LOGVAR_MAX ? CV_LOGVAR_MAX : s; }

/* One (row, dim) term of dz . z + kl_scale KL(N(mu, e^s) || N(m, e^r)), in double. */
static double cond_term(double mu, double s, double m, double rr, double eps, double dz,
                        double kl_scale) {
    s = clampd(s);
    rr = clampd(rr);
    double z = mu + exp(0.5 * s) * eps, d = mu - m;
    return dz * z + kl_scale * 0.5 * (rr - s + (exp(s) + d * d) * exp(-rr) - 1);
}

Test(objectives, conditional_prior_kl_against_finite_differences) {
    test_rng r = test_rng_new("conditional prior");
    const int rows = 33, L = 5, K = 4;
    size_t ne = (size_t)rows * 2 * L, nz = (size_t)rows * L, nt = (size_t)K * L;
    float enc[33 * 10], eps[33 * 5], z[33 * 5], kl[33], lr[33], dz[33 * 5], denc[33 * 10];
    float pm[20], pr[20], dm[20] = {0}, dr[20] = {0};
    int32_t labels[33];
    test_fill(&r, enc, ne, -2, 2);
    test_fill(&r, dz, nz, -1, 1);
    test_fill(&r, pm, nt, -1, 1);
    test_fill(&r, pr, nt, -1.5, 1.5);
    for (size_t i = 0; i < nz; i++) eps[i] = (float)test_normal(&r);
    for (int i = 0; i < rows; i++) labels[i] = (int32_t)test_uniform(&r, 0, K);
    cv_prior prior = {pm, pr, false};
    cv_prior_grad dprior = {dm, dr, false};
    const float scale = 0.8f;
    be->reparam_forward(be, enc, eps, false, 0, 0, NULL, 0, &prior, labels, z, kl, lr, rows, L);
    be->reparam_backward(be, enc, eps, dz, scale, NULL, 0.0f, &prior, labels, &dprior, denc,
                         rows, L);
    double ref_dm[20] = {0}, ref_dr[20] = {0};
    for (int i = 0; i < rows; i++) {
        double k = 0, lrat = 0;
        for (int j = 0; j < L; j++) {
            size_t t = (size_t)labels[i] * L + j;
            double mu = enc[i * 2 * L + j], s = enc[i * 2 * L + L + j], e = eps[i * L + j];
            double m = pm[t], rr = pr[t], g = dz[i * L + j];
            double zz = mu + exp(0.5 * s) * e;
            k += 0.5 * (rr - s + (exp(s) + (mu - m) * (mu - m)) * exp(-rr) - 1);
            lrat += -0.5 * ((zz - m) * (zz - m) * exp(-rr) + rr + log(2 * M_PI)) +
                    0.5 * (e * e + s + log(2 * M_PI));
#define FD(expr_plus, expr_minus) (((expr_plus) - (expr_minus)) / (2 * FD_H))
            assert_close("dmu", i * L + j, denc[i * 2 * L + j],
                         FD(cond_term(mu + FD_H, s, m, rr, e, g, scale),
                            cond_term(mu - FD_H, s, m, rr, e, g, scale)), 1e-5, 1e-4);
            assert_close("ds", i * L + j, denc[i * 2 * L + L + j],
                         FD(cond_term(mu, s + FD_H, m, rr, e, g, scale),
                            cond_term(mu, s - FD_H, m, rr, e, g, scale)), 1e-5, 1e-4);
            ref_dm[t] += FD(cond_term(mu, s, m + FD_H, rr, e, g, scale),
                            cond_term(mu, s, m - FD_H, rr, e, g, scale));
            ref_dr[t] += FD(cond_term(mu, s, m, rr + FD_H, e, g, scale),
                            cond_term(mu, s, m, rr - FD_H, e, g, scale));
#undef FD
        }
        assert_close("kl", i, kl[i], k, 1e-4, 1e-5);
        assert_close("log_ratio", i, lr[i], lrat, 1e-3, 1e-4);
    }
    for (size_t t = 0; t < nt; t++) {
        assert_close("d prior mean", (int)t, dm[t], ref_dm[t], 1e-4, 1e-4);
        assert_close("d prior log-variance", (int)t, dr[t], ref_dr[t], 1e-4, 1e-4);
    }
    /* at m = 0, r = 0 the conditional KL is the standard one */
    cr_assert_float_eq(cv_kl_gauss(0.7f, -0.3f, 0, 0), cv_kl_std_normal(0.7f, -0.3f), 1e-6);
    /* and the prior transform puts a standard draw at m + exp(r/2) z */
    float zz[5] = {1, -1, 0.5f, 2, 0};
    int32_t one[1] = {2};
    be->prior_transform(be, &prior, one, zz, 1, L);
    assert_close("prior transform", 0, zz[0], pm[10] + exp(0.5 * pr[10]), 1e-6, 1e-6);
    assert_close("prior transform", 4, zz[4], pm[14], 1e-6, 1e-6);
}

/* A per-row prior (the rows M c, R c of condition vectors) is the tables' arithmetic on
 * each row's own m and r: given the rows a label would gather, the forward, the prior
 * transform and dmu, ds are the same bits, and the per-row gradients, added up by label in
 * row order as the table version adds them, are its table gradients. */
Test(objectives, a_per_row_prior_is_the_table_prior_on_gathered_rows) {
    test_rng r = test_rng_new("per-row prior");
    const int rows = 29, L = 6, K = 3;
    const size_t ne = (size_t)rows * 2 * L, nz = (size_t)rows * L, nt = (size_t)K * L;
    float enc[29 * 12], eps[29 * 6], dz[29 * 6], pm[18], pr[18];
    float rm[29 * 6], rr[29 * 6]; /* the rows each label gathers */
    int32_t labels[29];
    test_fill(&r, enc, ne, -2, 2);
    test_fill(&r, dz, nz, -1, 1);
    test_fill(&r, pm, nt, -1, 1);
    test_fill(&r, pr, nt, -1.5, 1.5);
    pr[4] = 40.0f; /* past the clamp: its gradient is 0 in both */
    for (size_t i = 0; i < nz; i++) eps[i] = (float)test_normal(&r);
    for (int i = 0; i < rows; i++) {
        labels[i] = (int32_t)test_uniform(&r, 0, K);
        memcpy(rm + i * L, pm + labels[i] * L, L * sizeof(float));
        memcpy(rr + i * L, pr + labels[i] * L, L * sizeof(float));
    }
    const cv_prior tables = {pm, pr, false}, per_row = {rm, rr, true};
    float z1[29 * 6], z2[29 * 6], kl1[29], kl2[29], lr1[29], lr2[29];
    be->reparam_forward(be, enc, eps, false, 0, 0, NULL, 0, &tables, labels, z1, kl1, lr1, rows, L);
    be->reparam_forward(be, enc, eps, false, 0, 0, NULL, 0, &per_row, NULL, z2, kl2, lr2, rows, L);
    cr_assert(memcmp(z1, z2, sizeof z1) == 0 && memcmp(kl1, kl2, sizeof kl1) == 0 &&
              memcmp(lr1, lr2, sizeof lr1) == 0, "per-row forward differs from the tables'");
    float dm[18] = {0}, dr[18] = {0}, gm[29 * 6], gr[29 * 6], d1[29 * 12], d2[29 * 12];
    test_fill(&r, gm, nz, 5, 6); /* written, not added to: garbage must not survive */
    test_fill(&r, gr, nz, 5, 6);
    cv_prior_grad tg = {dm, dr, false}, rg = {gm, gr, true};
    be->reparam_backward(be, enc, eps, dz, 0.7f, NULL, 0.0f, &tables, labels, &tg, d1, rows, L);
    be->reparam_backward(be, enc, eps, dz, 0.7f, NULL, 0.0f, &per_row, NULL, &rg, d2, rows, L);
    cr_assert(memcmp(d1, d2, sizeof d1) == 0, "per-row dmu, ds differ from the tables'");
    float sm[18] = {0}, sr[18] = {0};
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < L; j++) {
            sm[labels[i] * L + j] += gm[i * L + j];
            sr[labels[i] * L + j] += gr[i * L + j];
        }
    cr_assert(memcmp(sm, dm, sizeof sm) == 0 && memcmp(sr, dr, sizeof sr) == 0,
              "per-row gradients do not add up to the table gradients");
    for (int i = 0; i < rows; i++)
        if (labels[i] == 0) cr_assert_eq(gr[i * L + 4], 0.0f, "clamped r has a gradient");
    float t1[29 * 6], t2[29 * 6];
    for (size_t i = 0; i < nz; i++) t1[i] = t2[i] = (float)test_normal(&r);
    be->prior_transform(be, &tables, labels, t1, rows, L);
    be->prior_transform(be, &per_row, NULL, t2, rows, L);
    cr_assert(memcmp(t1, t2, sizeof t1) == 0, "per-row prior transform differs");
}

Test(objectives, gaussian_likelihood_against_finite_differences) {
    test_rng r = test_rng_new("gaussian likelihood");
    const int rows = 31, cols = 33;
    float l[31 * 33], x[31 * 33], d[31 * 33], rec[31];
    test_fill(&r, l, rows * cols, -5, 5);
    test_fill(&r, x, rows * cols, 0, 1);
    const float sigma = (float)test_uniform(&r, 0.05, 1), scale = 0.25f;
    be->reconstruction(be, CV_LIKELIHOOD_GAUSSIAN, sigma, l, x, rec, d, scale, rows, cols);
    for (int i = 0; i < rows; i++) {
        double s = 0;
        for (int j = 0; j < cols; j++) {
            double p = 1 / (1 + exp(-(double)l[i * cols + j])), e = x[i * cols + j] - p;
            s += e * e / (2.0 * sigma * sigma) + 0.5 * log(2 * M_PI * sigma * sigma);
        }
        assert_close("gaussian rec", i, rec[i], s, 1e-3, 1e-5);
    }
    for (int i = 0; i < rows * cols; i++) {
        double lp = l[i] + FD_H, lm = l[i] - FD_H;
        double pp = 1 / (1 + exp(-lp)), pmn = 1 / (1 + exp(-lm));
        double fd = ((x[i] - pp) * (x[i] - pp) - (x[i] - pmn) * (x[i] - pmn)) /
                    (2.0 * sigma * sigma) / (2 * FD_H);
        assert_close("gaussian dlogits", i, d[i], scale * fd, 1e-5, 1e-4);
    }
}

Test(objectives, adam_schedule_and_clipping_match_a_double_reference) {
    test_rng r = test_rng_new("adam schedule");
    const size_t n = 20001;
    float *p = malloc(n * 4), *g = malloc(n * 4), *m = calloc(n, 4), *v = calloc(n, 4);
    double *pd = malloc(n * 8), *md = calloc(n, 8), *vd = calloc(n, 8);
    test_fill(&r, p, n, -1, 1);
    for (size_t i = 0; i < n; i++) pd[i] = p[i];
    cv_adam_config c = {.lr = 2e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .cosine = 1,
                        .warmup_steps = 3, .total_steps = 10, .clip_norm = 5.0f};
    for (int t = 0; t < 10; t++) {
        test_fill(&r, g, n, -0.1, 0.1);
        cv_step st = {.step = t};
        double sq = 0;
        for (size_t i = 0; i < n; i++) sq += (double)g[i] * g[i];
        st.grad_sq = sq;
        be->adam(be, p, g, m, v, n, &c, &st);
        /* reference: linear warm-up over 3 steps, then cosine to 0 at step 10 */
        double lr = 2e-3 * (t < 3 ? (t + 1) / 3.0 : 0.5 * (1 + cos(M_PI * (t - 3) / 7.0)));
        double clip = sqrt(sq) > 5.0 ? 5.0 / sqrt(sq) : 1.0;
        for (size_t i = 0; i < n; i++) {
            double gi = clip * g[i];
            md[i] = 0.9 * md[i] + 0.1 * gi;
            vd[i] = 0.999 * vd[i] + 0.001 * gi * gi;
            pd[i] -= lr / (1 - pow(0.9, t + 1)) * md[i] / (sqrt(vd[i]) / sqrt(1 - pow(0.999, t + 1)) + 1e-8);
        }
    }
    for (size_t i = 0; i < n; i++) assert_close("p", (int)i, p[i], pd[i], 2e-6, 1e-5);
    cr_assert_float_eq(cv_lr_at(1.0f, 0, 0, 100, 1), 1.0f, 1e-6);
    cr_assert_float_eq(cv_lr_at(1.0f, 100, 0, 100, 1), 0.0f, 1e-6);
    cr_assert_float_eq(cv_lr_at(1.0f, 50, 0, 100, 0), 1.0f, 1e-6);
    free(p); free(g); free(m); free(v); free(pd); free(md); free(vd);
}

Test(objectives, binarized_batches_are_bernoulli_draws_replayable_by_step) {
    test_rng r = test_rng_new("binarize");
    const int n = 64, dim = 200;
    uint8_t *pix = malloc(n * dim), lab[64] = {0};
    int32_t perm[64];
    for (int i = 0; i < n * dim; i++) pix[i] = (uint8_t)test_uniform(&r, 0, 256);
    for (int i = 0; i < n; i++) perm[i] = i;
    float *x = malloc(n * dim * 4), *y = malloc(n * dim * 4);
    int32_t labels[64];
    cv_step st = {.step = 12};
    const cv_device_split src = {.pixels = pix, .labels = lab, .perm = perm, .n = n, .dim = dim};
    be->gather_batch(be, &src, &st, 0, n, true, r.s, x, labels, NULL);
    be->gather_batch(be, &src, &st, 0, n, true, r.s, y, labels, NULL);
    cr_assert(memcmp(x, y, n * dim * 4) == 0, "the same step drew other pixels");
    double ones = 0, expect = 0;
    for (int i = 0; i < n * dim; i++) {
        cr_assert(x[i] == 0.0f || x[i] == 1.0f);
        ones += x[i];
        expect += pix[i] / 255.0;
    }
    /* 6 standard deviations of a sum of Bernoullis */
    cr_assert(fabs(ones - expect) < 6 * sqrt(n * dim / 4.0), "%g ones, expected %g", ones, expect);
    st.step = 13;
    be->gather_batch(be, &src, &st, 0, n, true, r.s, y, labels, NULL);
    cr_assert(memcmp(x, y, n * dim * 4) != 0, "another step drew the same pixels");
    free(pix); free(x); free(y);
}
