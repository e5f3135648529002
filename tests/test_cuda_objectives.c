/* test_cuda_objectives.c: the training objectives' CUDA operations (objectives.cu, and
 * reparam_backward's free bits) against the CPU backend, and whole training steps of each
 * objective, GPU vs CPU and recorded vs eager. Each test skips without a usable CUDA
 * device. The tolerance rules (R1 to R5) are those written at the top of test_cuda.c;
 * each comparison says which it follows. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cv_math.h"
#include "cvae/eval.h"
#include "cvae/rng.h"
#include "cvae/train.h"
#include "cuda_harness.h"
#include "helpers.h"

TestSuite(cuda_objectives, .init = cuda_harness_setup, .fini = cuda_harness_teardown,
          .timeout = 600);

static const int ROWS[] = {1, 31, 33, 257};
#define NROWS 4

/* Random encodings, prior tables (K = 5 classes) or rows, labels and noise for `rows`
 * images of L units drawn `samples` times. */
typedef struct {
    int rows, L, K, samples;
    float *enc, *eps, *dz, *w, *pm, *pr, *rm, *rr;
    int32_t *labels;
} latent_case;

static latent_case latent_case_new(test_rng *r, int rows, int L, int samples) {
    latent_case c = {rows, L, 5, samples, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    const size_t n = (size_t)rows * L, s = n * samples;
    c.enc = malloc(2 * n * sizeof(float));
    c.eps = malloc(s * sizeof(float));
    c.dz = malloc(s * sizeof(float));
    c.w = malloc((size_t)rows * samples * sizeof(float));
    c.pm = malloc((size_t)c.K * L * sizeof(float));
    c.pr = malloc((size_t)c.K * L * sizeof(float));
    c.rm = malloc(n * sizeof(float));
    c.rr = malloc(n * sizeof(float));
    c.labels = malloc((size_t)rows * sizeof(int32_t));
    test_fill(r, c.enc, 2 * n, -2, 2);
    for (size_t i = 0; i < s; i++) c.eps[i] = (float)test_normal(r);
    test_fill(r, c.dz, s, -1, 1);
    test_fill(r, c.w, (size_t)rows * samples, 0, 1);
    test_fill(r, c.pm, (size_t)c.K * L, -1, 1);
    test_fill(r, c.pr, (size_t)c.K * L, -1.5, 1.5);
    test_fill(r, c.rm, n, -1, 1);
    test_fill(r, c.rr, n, -1.5, 1.5);
    for (int i = 0; i < rows; i++) c.labels[i] = (int32_t)test_uniform(r, 0, c.K);
    return c;
}

static void latent_case_free(latent_case *c) {
    float *f[] = {c->enc, c->eps, c->dz, c->w, c->pm, c->pr, c->rm, c->rr};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) free(f[i]);
    free(c->labels);
}

/* The three priors: the standard normal (0), the tables by label (1), per row (2). */
static cv_prior prior_of(const latent_case *c, int kind, bool on_gpu, float *const *d) {
    if (kind == 1) return on_gpu ? (cv_prior){d[0], d[1], false} : (cv_prior){c->pm, c->pr, false};
    return on_gpu ? (cv_prior){d[2], d[3], true} : (cv_prior){c->rm, c->rr, true};
}

/* The priors' arrays on the GPU: pm, pr, rm, rr. */
static void prior_to_gpu(const latent_case *c, float **d) {
    const size_t t = (size_t)c->K * c->L * sizeof(float), n = (size_t)c->rows * c->L * sizeof(float);
    d[0] = to_gpu(c->pm, t);
    d[1] = to_gpu(c->pr, t);
    d[2] = to_gpu(c->rm, n);
    d[3] = to_gpu(c->rr, n);
}

/* The largest term of one unit's KL (R2's S): mu^2, exp(s), |s|, and the prior's. */
static double kl_term_scale(float mu, float s, float m, float rr) {
    const double sj = cv_clamp_logvar(s), rj = cv_clamp_logvar(rr);
    return fmax(fmax((mu - m) * (mu - m) * exp(-rj), exp(sj - rj)), fmax(fabs(sj), fabs(rj)) + 1);
}

Test(cuda_objectives, kl_unit_sums_match_cpu_for_every_prior) {
    NEED_GPU();
    test_rng r = test_rng_new("kl_unit_sums");
    for (int si = 0; si < NROWS; si++)
        for (int kind = 0; kind < 3; kind++) {
            const int rows = ROWS[si], L = 1 + (int)test_uniform(&r, 0, 40);
            latent_case c = latent_case_new(&r, rows, L, 1);
            float *d[4], *d_enc = to_gpu(c.enc, 2 * (size_t)rows * L * sizeof(float));
            int32_t *d_lab = to_gpu(c.labels, (size_t)rows * sizeof(int32_t));
            prior_to_gpu(&c, d);
            cv_prior cp = prior_of(&c, kind, false, d), gp = prior_of(&c, kind, true, d);
            float *want = malloc(L * sizeof(float)), *got = malloc(L * sizeof(float));
            float *d_out = to_gpu(NULL, L * sizeof(float));
            cpu->kl_unit_sums(cpu, c.enc, kind ? &cp : NULL, c.labels, rows, L, want);
            gpu->kl_unit_sums(gpu, d_enc, kind ? &gp : NULL, d_lab, rows, L, d_out);
            from_gpu(got, d_out, L * sizeof(float), "unit KL sums");
            double *tol = malloc(L * sizeof(double));
            for (int j = 0; j < L; j++) {
                /* R3 over the rows, plus each term's R2 (n = 16: 2 expf and ~5 operations,
                 * doubled) times its largest intermediate */
                double abs_sum = 0, r2 = 0;
                for (int b = 0; b < rows; b++) {
                    const size_t t = kind == 1 ? (size_t)c.labels[b] * L + j : (size_t)b * L + j;
                    const float m = kind == 1 ? c.pm[t] : kind == 2 ? c.rm[t] : 0;
                    const float pr = kind == 1 ? c.pr[t] : kind == 2 ? c.rr[t] : 0;
                    const float mu = c.enc[(size_t)b * 2 * L + j], s = c.enc[(size_t)b * 2 * L + L + j];
                    const double S = kl_term_scale(mu, s, m, pr);
                    abs_sum += S;
                    r2 += 16 * EPS * S;
                }
                tol[j] = sum_tol(rows, abs_sum, EPS) + r2;
            }
            compare_each("unit KL sums", want, got, L, tol, NMSE_MAX);
            free(tol);
            free(want);
            free(got);
            latent_case_free(&c);
            gpu_free_all();
        }
}

/* Free bits in reparam_backward: the units under the floor (the same unit sums on both
 * sides, so the same mask: R1) lose their KL gradient; denc and the tables otherwise as
 * without free bits (R2 per element; the tables R3 over rows). */
Test(cuda_objectives, reparam_backward_with_free_bits_matches_cpu) {
    NEED_GPU();
    test_rng r = test_rng_new("free bits backward");
    for (int si = 0; si < NROWS; si++)
        for (int kind = 0; kind < 3; kind++) {
            const int rows = ROWS[si], L = 2 + (int)test_uniform(&r, 0, 20);
            latent_case c = latent_case_new(&r, rows, L, 1);
            float *unit = malloc(L * sizeof(float));
            test_fill(&r, unit, L, 0, 2); /* the floor 1 splits them */
            const size_t n = (size_t)rows * L, t = (size_t)c.K * L;
            float *d[4], *d_enc = to_gpu(c.enc, 2 * n * sizeof(float));
            float *d_eps = to_gpu(c.eps, n * sizeof(float)), *d_dz = to_gpu(c.dz, n * sizeof(float));
            float *d_unit = to_gpu(unit, L * sizeof(float));
            int32_t *d_lab = to_gpu(c.labels, (size_t)rows * sizeof(int32_t));
            prior_to_gpu(&c, d);
            cv_prior cp = prior_of(&c, kind, false, d), gp = prior_of(&c, kind, true, d);
            const size_t g_n = kind == 1 ? t : n;
            float *cg_m = calloc(g_n, sizeof(float)), *cg_r = calloc(g_n, sizeof(float));
            float *gg_m = malloc(g_n * sizeof(float)), *gg_r = malloc(g_n * sizeof(float));
            float *d_gm = to_gpu(cg_m, g_n * sizeof(float)), *d_gr = to_gpu(cg_r, g_n * sizeof(float));
            cv_prior_grad cg = {cg_m, cg_r, kind == 2}, gg = {d_gm, d_gr, kind == 2};
            float *want = malloc(2 * n * sizeof(float)), *got = malloc(2 * n * sizeof(float));
            float *d_denc = to_gpu(NULL, 2 * n * sizeof(float));
            const float ks = 0.37f;
            cpu->reparam_backward(cpu, c.enc, c.eps, c.dz, ks, unit, 1.0f, kind ? &cp : NULL,
                                  c.labels, kind ? &cg : NULL, want, rows, L);
            gpu->reparam_backward(gpu, d_enc, d_eps, d_dz, ks, d_unit, 1.0f, kind ? &gp : NULL,
                                  d_lab, kind ? &gg : NULL, d_denc, rows, L);
            from_gpu(got, d_denc, 2 * n * sizeof(float), "denc");
            /* R2: n = 24 (2 expf, ~6 operations, doubled), S: the largest of dz eps e^(s/2)
             * and ks times the KL's terms, bounded by 20 for these inputs' ranges */
            compare("denc with free bits", want, got, 2 * n, 24 * EPS * 20, 0);
            for (int j = 0; j < L; j++)
                if (unit[j] < 1.0f && !kind) /* no KL gradient: dmu is dz exactly */
                    for (int b = 0; b < rows; b++)
                        cr_assert_eq(got[(size_t)b * 2 * L + j], c.dz[(size_t)b * L + j]);
            if (kind) {
                from_gpu(gg_m, d_gm, g_n * sizeof(float), "prior mean gradient");
                from_gpu(gg_r, d_gr, g_n * sizeof(float), "prior log-variance gradient");
                /* R3 over at most `rows` terms of at most ks * 20 each */
                const double tol = sum_tol(rows, rows * ks * 20.0, EPS) + rows * 24 * EPS * 20;
                compare("prior mean gradient", cg_m, gg_m, g_n, tol, 0);
                compare("prior log-variance gradient", cg_r, gg_r, g_n, tol, 0);
            }
            free(unit);
            free(cg_m);
            free(cg_r);
            free(gg_m);
            free(gg_r);
            free(want);
            free(got);
            latent_case_free(&c);
            gpu_free_all();
        }
}

Test(cuda_objectives, iwae_weights_and_scale_rows_match_cpu) {
    NEED_GPU();
    test_rng r = test_rng_new("iwae_weights");
    for (int si = 0; si < NROWS; si++) {
        const int rows = ROWS[si], K = 1 + (int)test_uniform(&r, 0, 12), S = rows * K;
        const int cols = 1 + (int)test_uniform(&r, 0, 100);
        float *rec = malloc(S * sizeof(float)), *lr = malloc(S * sizeof(float));
        test_fill(&r, rec, S, 50, 400);
        test_fill(&r, lr, S, -30, 5);
        float *w = malloc(S * sizeof(float)), *loss = malloc(rows * sizeof(float));
        float *gw = malloc(S * sizeof(float)), *gloss = malloc(rows * sizeof(float));
        float *d_rec = to_gpu(rec, S * sizeof(float)), *d_lr = to_gpu(lr, S * sizeof(float));
        float *d_w = to_gpu(NULL, S * sizeof(float)), *d_loss = to_gpu(NULL, rows * sizeof(float));
        cpu->iwae_weights(cpu, rec, lr, 0.8f, rows, K, w, loss);
        gpu->iwae_weights(gpu, d_rec, d_lr, 0.8f, rows, K, d_w, d_loss);
        from_gpu(gw, d_w, S * sizeof(float), "weights");
        from_gpu(gloss, d_loss, rows * sizeof(float), "IWAE loss");
        /* R2: a weight is exp(lw - max) / sum, its argument up to ~430 in magnitude before
         * the subtraction (n = 16 per exp/div chain, S = 430 in the exponent: relative
         * 16 EPS 430 on the weight, which is at most 1) */
        compare("weights", w, gw, S, 16 * EPS * 430, 0);
        compare("IWAE loss", loss, gloss, rows, 16 * EPS * 430, 16 * EPS);
        /* scale_rows: one product per element with the same weights: R1 */
        const size_t xn = (size_t)S * cols;
        float *x = malloc(xn * sizeof(float)), *gx = malloc(xn * sizeof(float));
        test_fill(&r, x, xn, -3, 3);
        float *d_x = to_gpu(x, xn * sizeof(float)), *d_wc = to_gpu(w, S * sizeof(float));
        cpu->scale_rows(cpu, x, w, S, cols);
        gpu->scale_rows(gpu, d_x, d_wc, S, cols);
        from_gpu(gx, d_x, xn * sizeof(float), "scaled rows");
        cr_assert(memcmp(x, gx, xn * sizeof(float)) == 0, "scale_rows differs from the CPU's");
        free(rec);
        free(lr);
        free(w);
        free(loss);
        free(gw);
        free(gloss);
        free(x);
        free(gx);
        gpu_free_all();
    }
}

/* iwae_backward: denc R3 over the K draws of computed terms (each R2, n = 24), the prior
 * tables R3 over rows x draws; every prior kind, 1 to 7 draws. */
Test(cuda_objectives, iwae_backward_matches_cpu_for_every_prior) {
    NEED_GPU();
    test_rng r = test_rng_new("iwae_backward");
    for (int si = 0; si < NROWS; si++)
        for (int kind = 0; kind < 3; kind++) {
            const int rows = ROWS[si], L = 1 + (int)test_uniform(&r, 0, 24);
            const int K = 1 + (int)test_uniform(&r, 0, 7);
            latent_case c = latent_case_new(&r, rows, L, K);
            const size_t n = (size_t)rows * L, t = (size_t)c.K * L, s = n * K;
            float *d[4], *d_enc = to_gpu(c.enc, 2 * n * sizeof(float));
            float *d_eps = to_gpu(c.eps, s * sizeof(float)), *d_dz = to_gpu(c.dz, s * sizeof(float));
            float *d_w = to_gpu(c.w, (size_t)rows * K * sizeof(float));
            int32_t *d_lab = to_gpu(c.labels, (size_t)rows * sizeof(int32_t));
            prior_to_gpu(&c, d);
            cv_prior cp = prior_of(&c, kind, false, d), gp = prior_of(&c, kind, true, d);
            const size_t g_n = kind == 1 ? t : n;
            float *cg_m = calloc(g_n, sizeof(float)), *cg_r = calloc(g_n, sizeof(float));
            float *gg_m = malloc(g_n * sizeof(float)), *gg_r = malloc(g_n * sizeof(float));
            float *d_gm = to_gpu(cg_m, g_n * sizeof(float)), *d_gr = to_gpu(cg_r, g_n * sizeof(float));
            cv_prior_grad cg = {cg_m, cg_r, kind == 2}, gg = {d_gm, d_gr, kind == 2};
            float *want = malloc(2 * n * sizeof(float)), *got = malloc(2 * n * sizeof(float));
            float *d_denc = to_gpu(NULL, 2 * n * sizeof(float));
            const float ks = 0.21f;
            cpu->iwae_backward(cpu, c.enc, c.eps, c.dz, c.w, K, ks, kind ? &cp : NULL, c.labels,
                               kind ? &cg : NULL, want, rows, L);
            gpu->iwae_backward(gpu, d_enc, d_eps, d_dz, d_w, K, ks, kind ? &gp : NULL, d_lab,
                               kind ? &gg : NULL, d_denc, rows, L);
            from_gpu(got, d_denc, 2 * n * sizeof(float), "IWAE denc");
            /* a draw's terms: |dz| <= 1, |eps| <~ 5, |z - m| e^(-r) <~ 30 (|mu| <= 2, e^(s/2)
             * <= e, |m| <= 1, e^(-r) <= e^1.5), times e^(s/2) <= e: S = 400 per draw */
            const double tol = sum_tol(K, K * 400.0, EPS) + K * 24 * EPS * 400;
            compare("IWAE denc", want, got, 2 * n, tol, 0);
            if (kind) {
                from_gpu(gg_m, d_gm, g_n * sizeof(float), "IWAE prior mean gradient");
                from_gpu(gg_r, d_gr, g_n * sizeof(float), "IWAE prior log-variance gradient");
                const double tt = sum_tol((double)rows * K, rows * K * 400.0, EPS) +
                                  rows * K * 24 * EPS * 400;
                compare("IWAE prior mean gradient", cg_m, gg_m, g_n, tt, 0);
                compare("IWAE prior log-variance gradient", cg_r, gg_r, g_n, tt, 0);
            }
            free(cg_m);
            free(cg_r);
            free(gg_m);
            free(gg_r);
            free(want);
            free(got);
            latent_case_free(&c);
            gpu_free_all();
        }
}

/* reconstruction_learned: the NLL per row (R3 over the columns), the logit gradients (R2),
 * the log-sigma gradient per row (R3); at sigmas from 0.02 to 1, and one past the clamp. */
Test(cuda_objectives, reconstruction_with_a_learned_sigma_matches_cpu) {
    NEED_GPU();
    test_rng r = test_rng_new("reconstruction_learned");
    const float sigmas[] = {0.02f, 0.1f, 1.0f, 1e-9f};
    for (int si = 0; si < NROWS; si++)
        for (int k = 0; k < 4; k++) {
            const int rows = ROWS[si], cols = 1 + (int)test_uniform(&r, 0, 800);
            const size_t n = (size_t)rows * cols;
            float *l = malloc(n * sizeof(float)), *x = malloc(n * sizeof(float));
            test_fill(&r, l, n, -8, 8);
            test_fill(&r, x, n, 0, 1);
            const float log_sigma = logf(sigmas[k]);
            float *rec = malloc(rows * sizeof(float)), *dl = malloc(n * sizeof(float));
            float *ds = malloc(rows * sizeof(float)), *grec = malloc(rows * sizeof(float));
            float *gdl = malloc(n * sizeof(float)), *gds = malloc(rows * sizeof(float));
            float *d_ls = to_gpu(&log_sigma, sizeof log_sigma), *d_l = to_gpu(l, n * sizeof(float));
            float *d_x = to_gpu(x, n * sizeof(float)), *d_rec = to_gpu(NULL, rows * sizeof(float));
            float *d_dl = to_gpu(NULL, n * sizeof(float)), *d_ds = to_gpu(NULL, rows * sizeof(float));
            const float scale = 1.0f / 64;
            cpu->reconstruction_learned(cpu, &log_sigma, l, x, rec, dl, ds, scale, rows, cols);
            gpu->reconstruction_learned(gpu, d_ls, d_l, d_x, d_rec, d_dl, d_ds, scale, rows, cols);
            from_gpu(grec, d_rec, rows * sizeof(float), "rec");
            from_gpu(gdl, d_dl, n * sizeof(float), "dlogits");
            from_gpu(gds, d_ds, rows * sizeof(float), "dsigma");
            /* a pixel's terms reach (x - p)^2 e^(-v) / 2 <= e^(-v) / 2 */
            const double v = cv_clamp_logvar(2 * log_sigma), S = 0.5 * exp(-v) + fabs(v) + 2;
            compare("learned-sigma rec", rec, grec, rows, sum_tol(cols, cols * S, EPS) + cols * 24 * EPS * S, 0);
            compare("learned-sigma dlogits", dl, gdl, n, 24 * EPS * S * scale, 0);
            compare("learned-sigma dsigma", ds, gds, rows,
                    2 * scale * (sum_tol(cols, cols * S, EPS) + cols * 24 * EPS * S), 0);
            free(l);
            free(x);
            free(rec);
            free(dl);
            free(ds);
            free(grec);
            free(gdl);
            free(gds);
            gpu_free_all();
        }
}

/* The heads of cvae score: softmax cross-entropy (R3 over the classes for the loss, R2 for
 * the gradient) and squared error (R3 over the columns). */
Test(cuda_objectives, score_heads_match_cpu) {
    NEED_GPU();
    test_rng r = test_rng_new("score heads");
    for (int si = 0; si < NROWS; si++) {
        const int rows = ROWS[si], C = 2 + (int)test_uniform(&r, 0, 60);
        const size_t n = (size_t)rows * C;
        float *l = malloc(n * sizeof(float)), *t = malloc(n * sizeof(float));
        test_fill(&r, l, n, -20, 20);
        test_fill(&r, t, n, -2, 2);
        int32_t *lab = malloc(rows * sizeof(int32_t));
        for (int i = 0; i < rows; i++) lab[i] = (int32_t)test_uniform(&r, 0, C);
        float *loss = malloc(rows * sizeof(float)), *g = malloc(n * sizeof(float));
        float *gloss = malloc(rows * sizeof(float)), *gg = malloc(n * sizeof(float));
        float *d_l = to_gpu(l, n * sizeof(float)), *d_t = to_gpu(t, n * sizeof(float));
        int32_t *d_lab = to_gpu(lab, rows * sizeof(int32_t));
        float *d_loss = to_gpu(NULL, rows * sizeof(float)), *d_g = to_gpu(NULL, n * sizeof(float));
        cpu->softmax_xent(cpu, l, lab, loss, g, 0.5f, rows, C);
        gpu->softmax_xent(gpu, d_l, d_lab, d_loss, d_g, 0.5f, rows, C);
        from_gpu(gloss, d_loss, rows * sizeof(float), "xent loss");
        from_gpu(gg, d_g, n * sizeof(float), "xent gradient");
        /* logsumexp of C terms of at most 1 after the max (40 apart at most): R3 + R2 */
        compare("xent loss", loss, gloss, rows, sum_tol(C, C, EPS) + 24 * EPS * 40, 0);
        compare("xent gradient", g, gg, n, 24 * EPS * 40 * 0.5, 0);
        cpu->squared_error(cpu, l, t, loss, g, 0.25f, rows, C);
        gpu->squared_error(gpu, d_l, d_t, d_loss, d_g, 0.25f, rows, C);
        from_gpu(gloss, d_loss, rows * sizeof(float), "squared error");
        from_gpu(gg, d_g, n * sizeof(float), "squared error gradient");
        /* terms (out - target)^2 / 2 <= 242; the gradient one difference and product */
        compare("squared error", loss, gloss, rows, sum_tol(C, C * 242.0, EPS) + C * 8 * EPS * 242, 0);
        compare("squared error gradient", g, gg, n, 8 * EPS * 22 * 0.25, 0);
        free(l);
        free(t);
        free(lab);
        free(loss);
        free(g);
        free(gloss);
        free(gg);
        gpu_free_all();
    }
}

/* Whole training steps of each objective, GPU vs CPU from the same start (R5: over 30 steps
 * the GPU's losses follow the CPU's within 1%, the bound test_cuda.c's chains use), and on
 * the GPU a recorded step replayed against eager steps: the same bits (R1). */
typedef struct {
    cv_model m;
    cv_workspace ws;
    cv_device_split split;
} step_rig;

static void step_rig_make(step_rig *g, cv_backend *be, const cv_split *data,
                          const cv_model_config *cfg, int samples, int batch) {
    cv_err err;
    cr_assert_eq(cv_model_create(be, cfg, &g->m, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(samples > 1 ? cv_workspace_create_samples(&g->m, batch, batch, samples, &g->ws, &err)
                             : cv_workspace_create(&g->m, batch, &g->ws, &err),
                 CV_OK, "%s", err.msg);
    cr_assert_eq(cv_model_init_params(&g->m, 11, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(cv_device_split_upload(be, data, &g->split, &err), CV_OK, "%s", err.msg);
    cv_loss_sums zero = {0};
    be->upload(be, g->ws.sums, &zero, sizeof zero);
    cv_step st = {.first_bad_step = -1, .first_bad_index = -1};
    be->upload(be, g->ws.step, &st, sizeof st);
}

static void step_rig_free(step_rig *g) {
    cv_device_split_free(g->m.be, &g->split);
    cv_workspace_destroy(&g->m, &g->ws);
    cv_model_destroy(&g->m);
}

/* The mean loss of `steps` steps of a rig (from a fresh step state each time). */
static double run_steps(step_rig *g, const cv_objective *obj, int steps, int batch,
                        bool recorded) {
    cv_backend *be = g->m.be;
    const cv_adam_config adam = {.lr = 2e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
    const cv_batch_part part = cv_batch_part_of(batch, 0, 1);
    void *rec = NULL;
    if (recorded && be->capture_begin(be)) {
        cv_train_step_objective(&g->m, &g->ws, &g->split, &part, 5, &adam, obj, false);
        rec = be->capture_end(be);
    }
    for (int s = 0; s < steps; s++) {
        cv_step st;
        be->download(be, &st, g->ws.step, sizeof st);
        st.start = 0; /* the same rows each step: the batch rewinds */
        be->upload(be, g->ws.step, &st, sizeof st);
        if (rec) be->replay(be, rec);
        else cv_train_step_objective(&g->m, &g->ws, &g->split, &part, 5, &adam, obj, false);
    }
    if (rec) be->recording_free(be, rec);
    cv_loss_sums sums;
    be->download(be, &sums, g->ws.sums, sizeof sums);
    return sums.rec / sums.rows + obj->beta * sums.kl / sums.rows;
}

static void check_steps(const cv_model_config *cfg, const cv_objective *obj) {
    test_rng r = test_rng_new("objective steps");
    const int batch = 64, steps = quick() ? 6 : 30;
    cv_split data = {.pixels = malloc(batch * 784), .labels = malloc(batch), .n = batch,
                     .h = 28, .w = 28, .channels = 1};
    for (size_t i = 0; i < (size_t)batch * 784; i++) data.pixels[i] = (uint8_t)test_uniform(&r, 0, 256);
    for (int i = 0; i < batch; i++) data.labels[i] = (uint8_t)test_uniform(&r, 0, 10);
    step_rig c, g, e;
    step_rig_make(&c, cpu, &data, cfg, obj->samples, batch);
    step_rig_make(&g, gpu, &data, cfg, obj->samples, batch);
    step_rig_make(&e, gpu, &data, cfg, obj->samples, batch);
    const double lc = run_steps(&c, obj, steps, batch, false);
    const double lg = run_steps(&g, obj, steps, batch, true);
    run_steps(&e, obj, steps, batch, false);
    cr_assert(isfinite(lc) && fabs(lg - lc) <= 0.01 * fabs(lc), "GPU mean loss %.6g, CPU %.6g",
              lg, lc);
    const size_t bytes = g.m.layout.n_params * sizeof(float);
    float *a = malloc(bytes), *b = malloc(bytes);
    gpu->download(gpu, a, g.m.params, bytes);
    gpu->download(gpu, b, e.m.params, bytes);
    expect_same_bits("recorded vs eager parameters", a, b, bytes);
    free(a);
    free(b);
    step_rig_free(&c);
    step_rig_free(&g);
    step_rig_free(&e);
    free(data.pixels);
    free(data.labels);
}

static const cv_model_config STEP_CFG = {.height = 28, .width = 28, .channels = 1,
                                         .condition = CV_COND_LABELS, .cond_width = 10,
                                         .latent = 8, .n_hidden = 1, .hidden = {64},
                                         .prior = CV_PRIOR_CONDITIONAL,
                                         .likelihood = CV_LIKELIHOOD_BERNOULLI, .sigma = 0.1f};

Test(cuda_objectives, free_bits_steps_follow_the_cpu_and_replay_bit_for_bit) {
    NEED_GPU();
    const cv_objective obj = {.beta = 1.0f, .free_bits = 0.5f, .samples = 1};
    check_steps(&STEP_CFG, &obj);
}

Test(cuda_objectives, iwae_steps_follow_the_cpu_and_replay_bit_for_bit) {
    NEED_GPU();
    const cv_objective obj = {.beta = 1.0f, .samples = 4};
    check_steps(&STEP_CFG, &obj);
}

Test(cuda_objectives, learned_sigma_steps_follow_the_cpu_and_replay_bit_for_bit) {
    NEED_GPU();
    cv_model_config cfg = STEP_CFG;
    cfg.likelihood = CV_LIKELIHOOD_GAUSSIAN;
    cfg.sigma_learned = true;
    const cv_objective elbo = {.beta = 1.0f, .samples = 1}, iwae = {.beta = 0.5f, .samples = 3};
    check_steps(&cfg, &elbo);
    check_steps(&cfg, &iwae);
}

int main(int argc, char *argv[]) { return cuda_test_main(argc, argv); }
