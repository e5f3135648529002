/* test_iwae.c: evaluation's running log-sum-exps on the backend (logsumexp_accumulate,
 * logsumexp_merge) against a two-pass reference in long double, including huge, tiny,
 * infinite and NaN log weights; bit for bit against the host loop they replaced, op by op
 * and as whole IWAE and marginal figures of cv_evaluate; the same bits for any thread
 * count; their byte counts; the progress callback, and `cvae eval`'s progress line on a
 * terminal (and none off one). */
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <pty.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cv_math.h"
#include "cvae/bench.h"
#include "cvae/eval.h"
#include "cvae/rng.h"
#include "helpers.h"

static cv_backend *cpu;

static void setup(void) {
    cv_err err;
    cr_assert_eq(cv_backend_cpu_create(&cpu, &err), CV_OK, "%s", err.msg);
}

static void teardown(void) {
    if (cpu) cpu->destroy(cpu);
    cpu = NULL;
}

TestSuite(iwae, .init = setup, .fini = teardown, .timeout = 300);

/* The host loop of eval.c before the log-sum-exp moved to the backend, verbatim. */
static void old_host_update(double *lse_max, double *lse_sum, double lw) {
    if (lw > *lse_max) {
        *lse_sum = *lse_sum * exp(*lse_max - lw) + 1.0;
        *lse_max = lw;
    } else {
        *lse_sum += exp(lw - *lse_max);
    }
}

/* log((1/k) sum_i exp(x_i)) in two passes in long double: the maximum, then the sum of
 * exp(x - max); -inf when every term is -inf, +inf with a +inf term, NaN with a NaN. */
static double ref_log_mean(const double *x, int k) {
    long double mx = -INFINITY;
    for (int i = 0; i < k; i++) {
        if (isnan(x[i])) return NAN;
        if (x[i] > mx) mx = x[i];
    }
    if (isinf(mx)) return (double)mx;
    long double s = 0.0L;
    for (int i = 0; i < k; i++) s += expl((long double)x[i] - mx);
    return (double)(mx + logl(s) - logl((long double)k));
}

static bool same_double(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

/* The kinds of rows the accumulate test draws, by r % ROW_KINDS. */
enum {
    ROW_TYPICAL,    /* rec ~ 200..300 nats, log ratio ~ -20..20: a trained model's weights */
    ROW_WIDE,       /* terms spread over +-800 around 0: exp of the naive sum would overflow */
    ROW_HUGE,       /* |rec| ~ 1e30: every other term is exp(-1e23) of the largest */
    ROW_TINY,       /* all terms 250 +- 1e-4: the sum is K to rounding */
    ROW_ONE_NEG_INF,/* one term -inf (log ratio -inf) among finite ones: ignored */
    ROW_ALL_NEG_INF,/* every term -inf: log p = -inf */
    ROW_FIRST_NEG_INF, /* the first term -inf, then finite ones */
    ROW_NAN,        /* one NaN term: NaN */
    ROW_POS_INF,    /* one +inf term (rec -inf): +inf */
    ROW_KINDS
};

static void draw_term(test_rng *g, int r, int k, float *rec, float *lr) {
    switch (r % ROW_KINDS) {
    case ROW_TYPICAL:
        *rec = (float)test_uniform(g, 200, 300);
        *lr = (float)test_uniform(g, -20, 20);
        break;
    case ROW_WIDE:
        *rec = (float)test_uniform(g, -800, 800);
        *lr = (float)test_uniform(g, -5, 5);
        break;
    case ROW_HUGE:
        *rec = (float)test_uniform(g, -1e30, 1e30);
        *lr = (float)test_uniform(g, -1, 1);
        break;
    case ROW_TINY:
        *rec = 250.0f + (float)test_uniform(g, -1e-4, 1e-4);
        *lr = 0.0f;
        break;
    case ROW_ONE_NEG_INF:
        *rec = (float)test_uniform(g, 200, 300);
        *lr = k == 3 ? -INFINITY : (float)test_uniform(g, -20, 20);
        break;
    case ROW_ALL_NEG_INF:
        *rec = (float)test_uniform(g, 200, 300);
        *lr = -INFINITY;
        break;
    case ROW_FIRST_NEG_INF:
        *rec = k == 0 ? INFINITY : (float)test_uniform(g, 200, 300);
        *lr = 0.0f;
        break;
    case ROW_NAN:
        *rec = k == 5 ? NAN : (float)test_uniform(g, 200, 300);
        *lr = 0.0f;
        break;
    case ROW_POS_INF:
        *rec = k == 7 ? -INFINITY : (float)test_uniform(g, 200, 300);
        *lr = 0.0f;
        break;
    }
}

Test(iwae, accumulate_matches_a_long_double_reference_and_the_old_host_loop) {
    test_rng g = test_rng_new("logsumexp accumulate");
    const int rows = 9 * ROW_KINDS + 4, K = 1000;
    float *rec = malloc((size_t)K * rows * sizeof(float));
    float *lr = malloc((size_t)K * rows * sizeof(float));
    double *x = malloc((size_t)K * rows * sizeof(double)); /* (rows, K): each row's terms */
    double *mx = malloc(rows * sizeof(double)), *sum = malloc(rows * sizeof(double));
    double *old_max = malloc(rows * sizeof(double)), *old_sum = malloc(rows * sizeof(double));
    for (int r = 0; r < rows; r++) {
        old_max[r] = -INFINITY;
        old_sum[r] = 0.0;
    }
    for (int k = 0; k < K; k++) {
        float *rk = rec + (size_t)k * rows, *lk = lr + (size_t)k * rows;
        for (int r = 0; r < rows; r++) {
            draw_term(&g, r, k, &rk[r], &lk[r]);
            x[(size_t)r * K + k] = -(double)rk[r] + (double)lk[r];
            old_host_update(&old_max[r], &old_sum[r], -(double)rk[r] + (double)lk[r]);
        }
        cpu->logsumexp_accumulate(cpu, mx, sum, rk, lk, rows, k == 0);
    }
    const double log_k = log((double)K);
    for (int r = 0; r < rows; r++) {
        double got = cv_lse_log_mean(mx[r], sum[r], log_k);
        double ref = ref_log_mean(x + (size_t)r * K, K);
        int kind = r % ROW_KINDS;
        if (isnan(ref)) {
            cr_assert(isnan(got), "row %d (kind %d): %g, expected NaN", r, kind, got);
            continue;
        }
        if (isinf(ref)) {
            cr_assert(got == ref, "row %d (kind %d): %g, expected %g", r, kind, got, ref);
            continue;
        }
        /* the running sum rounds once per term (a multiply or add, and exp within an ulp):
         * relative error <= 3 K eps = 7e-13 in the sum, so absolute in its log; the rest is
         * max's own rounding, relative 1e-16 */
        cr_assert(fabs(got - ref) <= 1e-11 + 1e-15 * fabs(ref),
                  "row %d (kind %d): %.17g vs reference %.17g", r, kind, got, ref);
        /* the old loop gives the same bits wherever every term was finite (its -inf
         * handling differed: a first -inf made the sum NaN) */
        if (kind == ROW_TYPICAL || kind == ROW_WIDE || kind == ROW_HUGE || kind == ROW_TINY)
            cr_assert(same_double(mx[r], old_max[r]) && same_double(sum[r], old_sum[r]),
                      "row %d (kind %d): (%a, %a) vs the old loop's (%a, %a)", r, kind, mx[r],
                      sum[r], old_max[r], old_sum[r]);
    }
    /* the tiny row: K terms of nearly the same value */
    cr_assert(fabs(cv_lse_log_mean(mx[ROW_TINY], sum[ROW_TINY], log_k) + 250.0) < 2e-4);
    free(rec); free(lr); free(x); free(mx); free(sum); free(old_max); free(old_sum);
}

Test(iwae, reset_starts_the_empty_sum_and_edge_terms_follow_the_rules) {
    double mx[6] = {1, 2, 3, 4, 5, 6}, sum[6] = {7, 8, 9, 10, 11, 12};
    const float rec[6] = {5.0f, INFINITY, -INFINITY, NAN, 0.0f, -1e30f};
    const float lr[6] = {1.0f, 0.0f, 0.0f, 0.0f, -INFINITY, 0.0f};
    cpu->logsumexp_accumulate(cpu, mx, sum, rec, lr, 6, true);
    cr_assert(mx[0] == -4.0 && sum[0] == 1.0, "a finite term: (%g, %g)", mx[0], sum[0]);
    cr_assert(mx[1] == -INFINITY && sum[1] == 0.0, "-inf adds nothing: (%g, %g)", mx[1], sum[1]);
    cr_assert(mx[2] == INFINITY && sum[2] == 1.0, "+inf: (%g, %g)", mx[2], sum[2]);
    cr_assert(isnan(sum[3]), "NaN: sum %g", sum[3]);
    cr_assert(mx[4] == -INFINITY && sum[4] == 0.0, "log ratio -inf adds nothing");
    cr_assert(mx[5] == 1e30f && sum[5] == 1.0);
    /* a second pass without reset: the same terms again double each finite sum */
    cpu->logsumexp_accumulate(cpu, mx, sum, rec, lr, 6, false);
    cr_assert(mx[0] == -4.0 && sum[0] == 2.0);
    cr_assert(mx[1] == -INFINITY && sum[1] == 0.0);
    cr_assert(mx[2] == INFINITY && sum[2] == 2.0, "two +inf terms: (%g, %g)", mx[2], sum[2]);
    cr_assert(isnan(sum[3]));
    cr_assert(isinf(cv_lse_log_mean(mx[1], sum[1], log(2.0))) &&
                  cv_lse_log_mean(mx[1], sum[1], log(2.0)) < 0,
              "the empty sum's log-mean is -inf");
}

Test(iwae, merge_matches_a_reference_and_the_old_host_loop) {
    test_rng g = test_rng_new("logsumexp merge");
    enum { ROWS = 40, CLASSES = 5, K = 17 };
    const double log_prior[CLASSES] = {log(0.1), log(0.4), -INFINITY, log(0.3), log(0.2)};
    double mx[CLASSES][ROWS], sum[CLASSES][ROWS], dmax[ROWS], dsum[ROWS];
    double old_max[ROWS], old_sum[ROWS];
    double terms[ROWS][CLASSES];
    float rec[ROWS], lr[ROWS];
    double x[K];
    for (int r = 0; r < ROWS; r++) {
        old_max[r] = -INFINITY;
        old_sum[r] = 0.0;
    }
    const double log_k = log((double)K);
    double xs[CLASSES][ROWS][K];
    for (int c = 0; c < CLASSES; c++) {
        for (int k = 0; k < K; k++) {
            for (int r = 0; r < ROWS; r++) {
                /* class c fits row r better by c * r / 10 nats: the terms differ by up to
                 * 20 nats, as a classifier's would */
                rec[r] = (float)(test_uniform(&g, 240, 260) - 0.1 * c * r);
                lr[r] = (float)test_uniform(&g, -10, 10);
                xs[c][r][k] = -(double)rec[r] + (double)lr[r];
            }
            cpu->logsumexp_accumulate(cpu, mx[c], sum[c], rec, lr, ROWS, k == 0);
        }
        cpu->logsumexp_merge(cpu, dmax, dsum, mx[c], sum[c], log_k, log_prior[c], ROWS, c == 0);
        for (int r = 0; r < ROWS; r++) {
            for (int k = 0; k < K; k++) x[k] = xs[c][r][k];
            terms[r][c] = log_prior[c] + ref_log_mean(x, K);
            /* the old marginal loop skipped classes with no prior */
            if (isfinite(log_prior[c]))
                old_host_update(&old_max[r], &old_sum[r],
                                log_prior[c] + (mx[c][r] + log(sum[c][r]) - log((double)K)));
        }
    }
    for (int r = 0; r < ROWS; r++) {
        long double m = -INFINITY, s = 0.0L;
        for (int c = 0; c < CLASSES; c++)
            if (terms[r][c] > m) m = terms[r][c];
        for (int c = 0; c < CLASSES; c++) s += expl((long double)terms[r][c] - m);
        double ref = (double)(m + logl(s));
        double got = dmax[r] + log(dsum[r]);
        /* K + CLASSES rounded updates, as in the accumulate test */
        cr_assert(fabs(got - ref) <= 1e-11 + 1e-15 * fabs(ref), "row %d: %.17g vs %.17g", r,
                  got, ref);
        cr_assert(same_double(dmax[r], old_max[r]) && same_double(dsum[r], old_sum[r]),
                  "row %d: (%a, %a) vs the old loop's (%a, %a)", r, dmax[r], dsum[r],
                  old_max[r], old_sum[r]);
    }
}

Test(iwae, the_same_bits_for_any_thread_count) {
    test_rng g = test_rng_new("logsumexp threads");
    const int rows = 10007, K = 5; /* over the CPU loop's threshold for threads */
    float *rec = malloc((size_t)K * rows * sizeof(float)), *lr = malloc((size_t)K * rows * 4);
    test_fill(&g, rec, (size_t)K * rows, 100, 900);
    test_fill(&g, lr, (size_t)K * rows, -30, 30);
    double *state[3][4];
    const int saved = omp_get_max_threads();
    for (int t = 0; t < 3; t++) {
        omp_set_num_threads(t + 1);
        for (int i = 0; i < 4; i++) state[t][i] = malloc(rows * sizeof(double));
        for (int k = 0; k < K; k++)
            cpu->logsumexp_accumulate(cpu, state[t][0], state[t][1], rec + (size_t)k * rows,
                                      lr + (size_t)k * rows, rows, k == 0);
        cpu->logsumexp_merge(cpu, state[t][2], state[t][3], state[t][0], state[t][1], log(5.0),
                             -1.5, rows, true);
        cpu->logsumexp_merge(cpu, state[t][2], state[t][3], state[t][0], state[t][1], log(5.0),
                             -0.5, rows, false);
    }
    omp_set_num_threads(saved);
    for (int t = 1; t < 3; t++)
        for (int i = 0; i < 4; i++)
            cr_assert(memcmp(state[0][i], state[t][i], rows * sizeof(double)) == 0,
                      "state %d differs between 1 and %d threads", i, t + 1);
    for (int t = 0; t < 3; t++)
        for (int i = 0; i < 4; i++) free(state[t][i]);
    free(rec);
    free(lr);
}

Test(iwae, costs_count_the_state_in_doubles) {
    /* rec and log_ratio read (4 bytes each), max and sum read and written (8 each) */
    cr_assert_eq(cv_cost_logsumexp_accumulate(10, false).bytes, 10 * (8.0 + 32.0));
    cr_assert_eq(cv_cost_logsumexp_accumulate(10, true).bytes, 10 * (8.0 + 16.0));
    cr_assert_eq(cv_cost_logsumexp_merge(10, false).bytes, 10 * (16.0 + 32.0));
    cr_assert_eq(cv_cost_logsumexp_merge(10, true).bytes, 10 * (16.0 + 16.0));
    cr_assert_eq(cv_cost_logsumexp_merge(10, true).flops, 0.0);
}

/* cv_evaluate against the loop it replaced ------------------------------------------- */

/* eval.c's noise streams (docs/design.md 1.11) */
#define EVAL_STREAM(b, k, c) \
    CV_STREAM_EVAL_EPS(((uint64_t)(c) << 52) | ((uint64_t)(k) << 32) | (uint64_t)(b))

typedef struct {
    cv_model m;
    cv_workspace ws;
    cv_split host;
    cv_device_split data;
} eval_rig;

enum { N_IMAGES = 777, H = 5, W = 7, CLASSES = 3 }; /* two batches: 500 + 277 */

static void rig_open(eval_rig *g, cv_prior_kind prior, uint64_t seed) {
    cv_err err;
    cv_model_config cfg = {.height = H, .width = W, .channels = 1, .cond_width = CLASSES, .latent = 3,
                           .n_hidden = 1, .hidden = {12}, .prior = prior};
    cr_assert_eq(cv_model_create(cpu, &cfg, &g->m, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(cv_model_init_params(&g->m, seed, &err), CV_OK);
    if (prior == CV_PRIOR_CONDITIONAL) { /* a prior away from N(0, I) */
        size_t n = (size_t)CLASSES * 3;
        float *t = malloc(2 * n * sizeof(float));
        test_rng r = {seed};
        test_fill(&r, t, 2 * n, -0.5, 0.5);
        cpu->upload(cpu, g->m.params + g->m.layout.prior_m, t, 2 * n * sizeof(float));
        free(t);
    }
    cr_assert_eq(cv_workspace_create(&g->m, CV_EVAL_BATCH, &g->ws, &err), CV_OK);
    g->host = (cv_split){.n = N_IMAGES, .h = H, .w = W, .channels = 1};
    g->host.pixels = malloc((size_t)N_IMAGES * H * W);
    g->host.labels = malloc(N_IMAGES);
    test_rng r = {seed ^ 0x5eed};
    for (int i = 0; i < N_IMAGES * H * W; i++)
        g->host.pixels[i] = (uint8_t)test_uniform(&r, 0, 256);
    for (int i = 0; i < N_IMAGES; i++) g->host.labels[i] = (uint8_t)(i % CLASSES);
    cr_assert_eq(cv_device_split_upload(cpu, &g->host, &g->data, &err), CV_OK);
}

static void rig_close(eval_rig *g) {
    cv_device_split_free(cpu, &g->data);
    cv_workspace_destroy(&g->m, &g->ws);
    cv_model_destroy(&g->m);
    cv_split_free(&g->host);
}

/* The importance samples of eval.c before this change: rec and log_ratio downloaded per
 * sample, the running log-sum-exp on the host. */
static void old_iwae_log_px(eval_rig *g, int rows, uint64_t seed, int b, int slot, int K,
                            double *out) {
    float rec[CV_EVAL_BATCH], lr[CV_EVAL_BATCH];
    double mx[CV_EVAL_BATCH], sum[CV_EVAL_BATCH];
    for (int r = 0; r < rows; r++) {
        mx[r] = -INFINITY;
        sum[r] = 0.0;
    }
    for (int k = 1; k <= K; k++) {
        cv_noise noise = {true, seed, EVAL_STREAM(b, k, slot), NULL, 0};
        cv_model_sample_decode(&g->m, &g->ws, rows, &noise, 0, true);
        cpu->download(cpu, rec, g->ws.rec, (size_t)rows * sizeof(float));
        cpu->download(cpu, lr, g->ws.log_ratio, (size_t)rows * sizeof(float));
        for (int r = 0; r < rows; r++)
            old_host_update(&mx[r], &sum[r], -(double)rec[r] + (double)lr[r]);
    }
    for (int r = 0; r < rows; r++) out[r] = mx[r] + log(sum[r]) - log((double)K);
}

/* The old cv_evaluate's IWAE and marginal totals, recomputed from the same noise. */
static void old_figures(eval_rig *g, uint64_t seed, int K, const double *log_prior,
                        double *iwae_nll, double *marginal_nll) {
    double iwae_total = 0.0, marginal_total = 0.0, log_px[CV_EVAL_BATCH];
    double mmax[CV_EVAL_BATCH], msum[CV_EVAL_BATCH];
    int32_t fixed[CV_EVAL_BATCH];
    const int n = g->data.n;
    for (int start = 0, b = 0; start < n; start += CV_EVAL_BATCH, b++) {
        int rows = n - start < CV_EVAL_BATCH ? n - start : CV_EVAL_BATCH;
        cv_step st = {.step = 0, .start = start};
        cpu->upload(cpu, g->ws.step, &st, sizeof st);
        cpu->gather_batch(cpu, &g->data, g->ws.step, 0, rows, false, 0, g->ws.x, g->ws.labels,
                          g->ws.cond);
        cv_model_encode(&g->m, &g->ws, rows);
        old_iwae_log_px(g, rows, seed, b, 0, K, log_px);
        for (int r = 0; r < rows; r++) iwae_total -= log_px[r];
        for (int r = 0; r < rows; r++) {
            mmax[r] = -INFINITY;
            msum[r] = 0.0;
        }
        for (int c = 0; c < CLASSES; c++) {
            if (!isfinite(log_prior[c])) continue;
            for (int r = 0; r < rows; r++) fixed[r] = c;
            cpu->upload(cpu, g->ws.labels, fixed, (size_t)rows * sizeof(int32_t));
            cv_model_encode(&g->m, &g->ws, rows);
            old_iwae_log_px(g, rows, seed, b, 1 + c, K, log_px);
            for (int r = 0; r < rows; r++)
                old_host_update(&mmax[r], &msum[r], log_prior[c] + log_px[r]);
        }
        for (int r = 0; r < rows; r++) marginal_total -= mmax[r] + log(msum[r]);
    }
    *iwae_nll = iwae_total / n;
    *marginal_nll = marginal_total / n;
}

typedef struct {
    int calls, last_images, last_batches, total_images, total_batches;
    bool increasing;
} progress_log;

static void log_progress(void *ctx, int images_done, int images_total, int batches_done,
                         int batches_total) {
    progress_log *p = ctx;
    p->increasing = p->increasing && images_done > p->last_images &&
                    batches_done == p->last_batches + 1;
    p->calls++;
    p->last_images = images_done;
    p->last_batches = batches_done;
    p->total_images = images_total;
    p->total_batches = batches_total;
}

static void expect_old_figures(cv_prior_kind prior, const double *log_prior) {
    test_rng r = test_rng_new("eval vs the old host loop");
    eval_rig g;
    rig_open(&g, prior, r.s);
    const int K = 9;
    progress_log p = {.increasing = true};
    cv_eval_options eo = {.iwae_k = K, .marginal = true, .class_log_prior = log_prior,
                          .latent_stats = true, .progress = log_progress, .progress_ctx = &p};
    cv_eval_result res;
    cv_err err;
    cr_assert_eq(cv_evaluate(&g.m, &g.ws, &g.data, r.s, &eo, &res, &err), CV_OK, "%s", err.msg);
    double iwae, marginal;
    old_figures(&g, r.s, K, log_prior, &iwae, &marginal);
    cr_assert(isfinite(res.iwae_nll) && isfinite(res.marginal_nll));
    cr_assert(same_double(res.iwae_nll, iwae), "IWAE NLL %a, the old loop's %a", res.iwae_nll,
              iwae);
    cr_assert(same_double(res.marginal_nll, marginal), "marginal NLL %a, the old loop's %a",
              res.marginal_nll, marginal);
    /* the progress callback: once per batch, in order, ending at the totals */
    cr_assert(p.increasing && p.calls == 2 && p.last_batches == 2 && p.total_batches == 2 &&
                  p.last_images == N_IMAGES && p.total_images == N_IMAGES,
              "progress: %d calls, last %d/%d images, %d/%d batches", p.calls, p.last_images,
              p.total_images, p.last_batches, p.total_batches);
    cv_eval_result_free(&res);
    rig_close(&g);
}

Test(iwae, evaluate_gives_the_old_host_loops_bits_standard_prior) {
    const double log_prior[CLASSES] = {log(0.2), log(0.5), log(0.3)};
    expect_old_figures(CV_PRIOR_STANDARD, log_prior);
}

Test(iwae, evaluate_gives_the_old_host_loops_bits_learned_prior_and_an_unseen_class) {
    const double log_prior[CLASSES] = {log(0.6), -INFINITY, log(0.4)};
    expect_old_figures(CV_PRIOR_CONDITIONAL, log_prior);
}

Test(iwae, evaluate_without_iwae_still_reports_progress) {
    test_rng r = test_rng_new("eval progress");
    eval_rig g;
    rig_open(&g, CV_PRIOR_STANDARD, r.s);
    progress_log p = {.increasing = true};
    cv_eval_options eo = {.progress = log_progress, .progress_ctx = &p};
    cv_eval_result res;
    cv_err err;
    cr_assert_eq(cv_evaluate(&g.m, &g.ws, &g.data, r.s, &eo, &res, &err), CV_OK, "%s", err.msg);
    cr_assert(p.increasing && p.calls == 2 && p.last_images == N_IMAGES);
    cr_assert_eq(res.iwae_nll, 0.0);
    cv_eval_result_free(&res);
    rig_close(&g);
}

/* `cvae eval`'s progress line ------------------------------------------------------- */

/* A small run: 600 test images (two batches) and a checkpoint, in a fresh folder. */
static char *eval_fixture(char *ckpt, size_t size) {
    char *dir = test_tmpdir(), data[4200], out[4200];
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(out, sizeof out, "%s/run", dir);
    cr_assert_eq(mkdir(data, 0777), 0);
    test_write_dataset(data, 200, 600, 6, 6, 3, false, 7);
    test_train_small(data, out, 8, 2, 1, 7);
    snprintf(ckpt, size, "%s/model.ckpt", out);
    return dir;
}

Test(iwae, eval_prints_no_progress_when_stderr_is_not_a_terminal) {
    char ckpt[4300], data[4200];
    char *dir = eval_fixture(ckpt, sizeof ckpt);
    snprintf(data, sizeof data, "%s/data", dir);
    char *o, *e;
    const char *args[] = {"eval", "--model", ckpt, "--data", data, "--iwae", "3",
                          "--device", "cpu", NULL};
    cr_assert_eq(test_run_cvae(&o, &e, args), 0, "%s", e);
    cr_assert_str_eq(e, "", "stderr is a pipe, yet eval wrote: %s", e);
    cr_assert(strstr(o, "IWAE-3"), "%s", o);
    free(o);
    free(e);
    test_rmtree(dir);
    free(dir);
}

Test(iwae, eval_shows_progress_on_a_terminal) {
    char ckpt[4300], data[4200];
    char *dir = eval_fixture(ckpt, sizeof ckpt);
    snprintf(data, sizeof data, "%s/data", dir);
    const char *bin = getenv("CVAE_BIN");
    cr_assert(bin, "CVAE_BIN is not set");
    int master;
    pid_t pid = forkpty(&master, NULL, NULL, NULL);
    cr_assert(pid >= 0, "forkpty: %s", strerror(errno));
    if (pid == 0) { /* stdin, stdout and stderr are the terminal */
        execl(bin, bin, "eval", "--model", ckpt, "--data", data, "--iwae", "3", "--device",
              "cpu", (char *)NULL);
        _exit(127);
    }
    char buf[65536];
    size_t len = 0;
    for (;;) { /* until the child closes the terminal (EIO on Linux) */
        ssize_t n = read(master, buf + len, sizeof buf - 1 - len);
        if (n > 0) len += (size_t)n;
        else if (n < 0 && errno == EINTR) continue;
        else break;
        if (len == sizeof buf - 1) break;
    }
    buf[len] = 0;
    close(master);
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "eval failed: %s", buf);
    /* the last batch's line is always drawn, then cleared */
    cr_assert(strstr(buf, "\reval: batch 2/2, 600/600 images ("), "no progress line in: %s", buf);
    cr_assert(strstr(buf, "images/s)"), "%s", buf);
    cr_assert(strstr(buf, "IWAE-3"), "%s", buf);
    test_rmtree(dir);
    free(dir);
}

/* The model's class count decides which labels are valid: a model trained with
 * --classes 4 on training labels 0..2 takes a test set holding a 3 with --marginal as
 * without (class 3 never occurred in training: p(3) = 0, its term is skipped). It used to
 * be refused, the training labels setting K = 3. Training labels the model does not have
 * are still refused. */
Test(iwae, marginal_takes_the_models_class_count) {
    char *dir = test_tmpdir();
    char data[4200], four[4200], out[4200], ckpt[4300];
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(four, sizeof four, "%s/four", dir);
    snprintf(out, sizeof out, "%s/run", dir);
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", out);
    mkdir(data, 0777);
    mkdir(four, 0777);
    test_write_dataset(data, 300, 0, 6, 6, 3, false, 71);
    test_write_dataset(four, 60, 200, 6, 6, 4, false, 72);
    const char *test_files[] = {"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
    for (int i = 0; i < 2; i++)
        cr_assert_eq(rename(test_path_in(four, test_files[i]), test_path_in(data, test_files[i])),
                     0);
    char *o, *e;
    const char *train[] = {"train", "--data", data, "--classes", "4", "--out", out, "--epochs",
                           "1", "--hidden", "16", "--latent", "3", "--device", "cpu", NULL};
    cr_assert_eq(test_run_cvae(&o, &e, train), 0, "%s", e);
    free(o);
    free(e);
    const char *marginal[] = {"eval", "--model", ckpt, "--data", data, "--iwae", "2",
                              "--marginal", "--json", "--device", "cpu", NULL};
    cr_assert_eq(test_run_cvae(&o, &e, marginal), 0, "%s", e);
    const char *at = strstr(o, "\"marginal_nll\": ");
    cr_assert(at && isfinite(strtod(at + 16, NULL)), "no finite marginal_nll in %s", o);
    free(o);
    free(e);
    /* training labels 0..3 against a model of 2 classes: refused, naming the label */
    char two[4200], run2[4200], ckpt2[4300];
    snprintf(two, sizeof two, "%s/two", dir);
    snprintf(run2, sizeof run2, "%s/run2", dir);
    snprintf(ckpt2, sizeof ckpt2, "%s/model.ckpt", run2);
    mkdir(two, 0777);
    test_write_dataset(two, 100, 20, 6, 6, 2, false, 73);
    test_train_small(two, run2, 8, 2, 1, 74);
    marginal[2] = ckpt2;
    marginal[4] = four;
    cr_assert_eq(test_run_cvae(&o, &e, marginal), 1, "%s", e);
    cr_assert_eq(test_count_lines(e), 1, "%s", e);
    cr_assert(strstr(e, "label 3") && strstr(e, "2 classes"), "%s", e);
    free(o);
    free(e);
    test_rmtree(dir);
    free(dir);
}
