/* test_objective_grad.c: the training objectives beyond the plain ELBO (docs/design.md
 * 1.6) against a double-precision reference (ref_model.c) and central finite differences
 * of it (h = 1e-6), every parameter's gradient: free bits, the IWAE objective with 1, 2
 * and 5 draws (labels and condition vectors, the learned prior, a learned sigma); then
 * --objective iwae --samples 1 trains bitwise as the ELBO does. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "cv_math.h"
#include "cvae/checkpoint.h"
#include "cvae/eval.h"
#include "cvae/train.h"
#include "helpers.h"
#include "ref_model.h"

#define FD_H 1e-6

/* A small model on the CPU with fresh random parameters, inputs and noise. */
typedef struct {
    cv_backend *be;
    cv_model m;
    cv_workspace ws;
    int rows, samples;
    ref_ctx ref;
} rig;

typedef struct {
    cv_prior_kind prior;
    cv_condition_kind condition;
    cv_likelihood likelihood;
    bool sigma_learned;
} rig_kind;

static void rig_make(rig *g, test_rng *r, const rig_kind *kind, int samples, int rows,
                     float beta) {
    cv_err err;
    cr_assert_eq(cv_backend_cpu_create(&g->be, &err), CV_OK);
    const int K = 3, L = 3;
    cv_model_config cfg = {.height = 3, .width = 3, .channels = 1, .condition = kind->condition,
                           .cond_width = K, .latent = L, .n_hidden = 1, .hidden = {6},
                           .prior = kind->prior, .likelihood = kind->likelihood, .sigma = 0.4f,
                           .sigma_learned = kind->sigma_learned};
    cr_assert_eq(cv_model_create(g->be, &cfg, &g->m, &err), CV_OK, "%s", err.msg);
    g->rows = rows;
    g->samples = samples;
    cr_assert_eq(samples ? cv_workspace_create_samples(&g->m, rows, rows, samples, &g->ws, &err)
                         : cv_workspace_create(&g->m, rows, &g->ws, &err),
                 CV_OK, "%s", err.msg);
    cr_assert_eq(cv_model_init_params(&g->m, r->s, &err), CV_OK, "%s", err.msg);
    const cv_layout *lo = &g->m.layout;
    if (lo->prior_m != CV_NO_COND) /* tables away from their zero start */
        test_fill(r, g->m.params + lo->prior_m, 2 * (size_t)K * L, -1, 1);
    if (lo->log_sigma != CV_NO_COND) g->m.params[lo->log_sigma] = (float)log(0.3);
    const int draws = samples ? samples : 1;
    test_fill(r, g->ws.x, (size_t)rows * lo->dim, 0, 1);
    for (int i = 0; i < rows; i++) g->ws.labels[i] = (int32_t)test_uniform(r, 0, K);
    if (g->ws.cond) test_fill(r, g->ws.cond, (size_t)rows * K, -1.5, 1.5);
    for (int i = 0; i < rows * L * draws; i++) g->ws.eps[i] = (float)test_normal(r);
    g->ref = (ref_ctx){lo, rows, g->ws.x, g->ws.eps, g->ws.labels,
                       g->ws.cond ? g->ws.cond : NULL, beta};
    g->be->zero(g->be, g->m.grads, lo->n_params * sizeof(float));
}

static void rig_free(rig *g) {
    cv_workspace_destroy(&g->m, &g->ws);
    cv_model_destroy(&g->m);
    g->be->destroy(g->be);
}

/* The parameters in double. */
static double *params_of(const rig *g) {
    double *p = malloc(g->m.layout.n_params * sizeof(double));
    for (size_t i = 0; i < g->m.layout.n_params; i++) p[i] = g->m.params[i];
    return p;
}

/* Each row's unit KLs (rows, L) and, for the draw `k` of the IWAE's draw-by-draw eps, its z
 * and log p(z|c) - log q(z|x,c); loss of the objective follows from them. */
typedef double (*objective_fn)(const ref_ctx *c, const double *p, double lambda, int samples,
                               double *row_loss);

/* (1/B) sum_b rec_b + beta sum_j max(lambda, (1/B) sum_b kl_bj): free bits. */
static double free_bits_loss(const ref_ctx *c, const double *p, double lambda, int samples,
                             double *row_loss) {
    (void)samples;
    const int L = c->lo->cfg.latent;
    double rec = 0, unit[REF_MAX_LATENT] = {0}, enc[2 * REF_MAX_LATENT];
    double m[REF_MAX_LATENT], rr[REF_MAX_LATENT], z[REF_MAX_LATENT];
    for (int r = 0; r < c->rows; r++) {
        ref_encode(c, p, r, enc);
        ref_prior(c, p, r, m, rr);
        double kl = 0;
        for (int j = 0; j < L; j++) {
            z[j] = enc[j] + exp(0.5 * ref_clamp(enc[L + j])) * c->eps[r * L + j];
            const double kj = ref_kl(enc[j], enc[L + j], m[j], rr[j]);
            unit[j] += kj;
            kl += kj;
        }
        const double rr_rec = ref_rec(c, p, r, z);
        rec += rr_rec;
        if (row_loss) row_loss[r] = rr_rec + kl;
    }
    double total = rec / c->rows;
    for (int j = 0; j < L; j++) total += c->beta * fmax(lambda, unit[j] / c->rows);
    return total;
}

/* (1/B) sum_b -log (1/K sum_k w_bk), log w = -rec + beta (log p(z) - log q(z)), z of draw
 * k of row b from eps row k * B + b: the IWAE objective. */
static double iwae_loss(const ref_ctx *c, const double *p, double lambda, int samples,
                        double *row_loss) {
    (void)lambda;
    const int L = c->lo->cfg.latent, B = c->rows;
    double total = 0, enc[2 * REF_MAX_LATENT], m[REF_MAX_LATENT], rr[REF_MAX_LATENT];
    double z[REF_MAX_LATENT], lw[16];
    for (int b = 0; b < B; b++) {
        ref_encode(c, p, b, enc);
        ref_prior(c, p, b, m, rr);
        double top = -INFINITY;
        for (int k = 0; k < samples; k++) {
            double log_ratio = 0;
            for (int j = 0; j < L; j++) {
                const double s = ref_clamp(enc[L + j]), e = c->eps[((size_t)k * B + b) * L + j];
                z[j] = enc[j] + exp(0.5 * s) * e;
                log_ratio += ref_log_normal(z[j], m[j], rr[j]) + 0.5 * (e * e + s + log(2 * M_PI));
            }
            lw[k] = -ref_rec(c, p, b, z) + c->beta * log_ratio;
            top = fmax(top, lw[k]);
        }
        double sum = 0;
        for (int k = 0; k < samples; k++) sum += exp(lw[k] - top);
        const double loss = -(top + log(sum) - log((double)samples));
        if (row_loss) row_loss[b] = loss;
        total += loss;
    }
    return total / B;
}

/* Every parameter's gradient in g against central differences of fn. */
static void expect_gradient(rig *g, objective_fn fn, double lambda, const float *row_loss,
                            const char *what) {
    const size_t n = g->m.layout.n_params;
    double *p = params_of(g), rows[64];
    fn(&g->ref, p, lambda, g->samples, rows);
    for (int b = 0; row_loss && b < g->rows; b++) /* float forward vs double */
        cr_assert(fabs(row_loss[b] - rows[b]) <= 1e-4 + 1e-5 * fabs(rows[b]),
                  "%s: loss of row %d %.8g, reference %.8g", what, b, row_loss[b], rows[b]);
    for (size_t i = 0; i < n; i++) {
        const double keep = p[i];
        p[i] = keep + FD_H;
        const double lp = fn(&g->ref, p, lambda, g->samples, NULL);
        p[i] = keep - FD_H;
        const double lm = fn(&g->ref, p, lambda, g->samples, NULL);
        p[i] = keep;
        const double fd = (lp - lm) / (2 * FD_H);
        char name[128];
        cv_layout_describe(&g->m.layout, i, name, sizeof name);
        /* float backprop through a few layers vs double, as test_model_grad.c */
        cr_assert(fabs(g->m.grads[i] - fd) <= 3e-5 + 1e-3 * fabs(fd),
                  "%s: gradient of %s (%zu): backprop %.8g, finite difference %.8g", what, name,
                  i, g->m.grads[i], fd);
    }
    free(p);
}

/* Free bits: lambda between two units' batch-mean KLs, so that some are under the floor
 * (no KL gradient) and some over, none within reach of the finite difference's kink. */
static void check_free_bits(const rig_kind *kind) {
    test_rng r = test_rng_new("free bits");
    rig g;
    const int rows = 7, L = 3;
    rig_make(&g, &r, kind, 0, rows, 0.8f);
    const cv_noise given = {.draw = false};
    cv_model_forward(&g.m, &g.ws, rows, &given, rows, false);
    double *p = params_of(&g), enc[2 * REF_MAX_LATENT], m[REF_MAX_LATENT], rr[REF_MAX_LATENT];
    double unit[REF_MAX_LATENT] = {0};
    for (int b = 0; b < rows; b++) {
        ref_encode(&g.ref, p, b, enc);
        ref_prior(&g.ref, p, b, m, rr);
        for (int j = 0; j < L; j++) unit[j] += ref_kl(enc[j], enc[L + j], m[j], rr[j]) / rows;
    }
    free(p);
    double lo = fmin(unit[0], fmin(unit[1], unit[2])), hi = fmax(unit[0], fmax(unit[1], unit[2]));
    const double lambda = 0.5 * (lo + hi); /* at least the smallest unit is under it */
    cr_assert(hi - lo > 1e-3, "the units' KLs %g and %g are too close to split", lo, hi);
    const cv_objective obj = {.beta = 0.8f, .free_bits = (float)lambda, .samples = 1};
    cv_model_backward_objective(&g.m, &g.ws, rows, rows, &obj);
    expect_gradient(&g, free_bits_loss, lambda, NULL, "free bits");
    rig_free(&g);
}

Test(objective_grad, free_bits_against_finite_differences) {
    const rig_kind standard = {CV_PRIOR_STANDARD, CV_COND_LABELS, CV_LIKELIHOOD_BERNOULLI, false};
    check_free_bits(&standard);
}

Test(objective_grad, free_bits_with_the_learned_prior_and_condition_vectors) {
    const rig_kind kind = {CV_PRIOR_CONDITIONAL, CV_COND_VECTORS, CV_LIKELIHOOD_BERNOULLI, false};
    check_free_bits(&kind);
}

/* A floor of 0 changes nothing: the same bits as the plain ELBO's gradient. */
Test(objective_grad, free_bits_of_zero_is_the_elbo) {
    test_rng r = test_rng_new("free bits 0");
    const rig_kind kind = {CV_PRIOR_CONDITIONAL, CV_COND_LABELS, CV_LIKELIHOOD_BERNOULLI, false};
    rig a, b;
    test_rng r2 = r;
    rig_make(&a, &r, &kind, 0, 9, 1.0f);
    rig_make(&b, &r2, &kind, 0, 9, 1.0f);
    const cv_noise given = {.draw = false};
    cv_model_forward(&a.m, &a.ws, 9, &given, 9, false);
    cv_model_forward(&b.m, &b.ws, 9, &given, 9, false);
    cv_model_backward(&a.m, &a.ws, 9, 9, 1.0f);
    const cv_objective floor0 = {.beta = 1.0f, .free_bits = 1e-30f, .samples = 1};
    cv_model_backward_objective(&b.m, &b.ws, 9, 9, &floor0);
    cr_assert(memcmp(a.m.grads, b.m.grads, a.m.layout.n_params * sizeof(float)) == 0);
    rig_free(&a);
    rig_free(&b);
}

static void check_iwae(const rig_kind *kind, int samples, float beta) {
    test_rng r = test_rng_new("IWAE");
    rig g;
    const int rows = 5;
    rig_make(&g, &r, kind, samples, rows, beta);
    const cv_noise given = {.draw = false};
    cv_model_iwae_forward(&g.m, &g.ws, rows, &given, rows, beta);
    cv_model_iwae_backward(&g.m, &g.ws, rows, rows, beta);
    char what[64];
    snprintf(what, sizeof what, "IWAE, %d draws", samples);
    expect_gradient(&g, iwae_loss, 0, g.ws.iwae_loss, what);
    /* the normalised weights of each image add up to 1 */
    for (int b = 0; b < rows; b++) {
        double sum = 0;
        for (int k = 0; k < samples; k++) sum += g.ws.weights[k * rows + b];
        cr_assert(fabs(sum - 1) < 1e-5, "row %d's weights add up to %g", b, sum);
    }
    rig_free(&g);
}

static const rig_kind IWAE_PLAIN = {CV_PRIOR_STANDARD, CV_COND_LABELS, CV_LIKELIHOOD_BERNOULLI,
                                    false};
static const rig_kind IWAE_PRIOR = {CV_PRIOR_CONDITIONAL, CV_COND_LABELS,
                                    CV_LIKELIHOOD_BERNOULLI, false};
static const rig_kind IWAE_VECTORS = {CV_PRIOR_CONDITIONAL, CV_COND_VECTORS,
                                      CV_LIKELIHOOD_GAUSSIAN, true};

Test(objective_grad, iwae_of_one_draw_against_finite_differences) {
    check_iwae(&IWAE_PLAIN, 1, 1.0f);
    check_iwae(&IWAE_PRIOR, 1, 1.0f);
}

Test(objective_grad, iwae_of_two_draws_against_finite_differences) {
    check_iwae(&IWAE_PLAIN, 2, 1.0f);
    check_iwae(&IWAE_PRIOR, 2, 0.6f);
    check_iwae(&IWAE_VECTORS, 2, 1.0f);
}

Test(objective_grad, iwae_of_five_draws_against_finite_differences) {
    check_iwae(&IWAE_PLAIN, 5, 1.0f);
    check_iwae(&IWAE_PRIOR, 5, 1.0f);
    check_iwae(&IWAE_VECTORS, 5, 0.7f);
}

/* --objective iwae --samples 1 is the ELBO, trained as --objective elbo trains it: the
 * same checkpoint bits (but for the objective recorded in its header). */
Test(objective_grad, iwae_of_one_draw_trains_bitwise_as_the_elbo) {
    test_rng r = test_rng_new("IWAE K = 1");
    char *dir = test_tmpdir(), data[4200], out[2][4200];
    snprintf(data, sizeof data, "%s/data", dir);
    cr_assert_eq(mkdir(data, 0777), 0);
    test_write_dataset(data, 300, 50, 6, 6, 3, false, r.s);
    FILE *sink = fopen("/dev/null", "w");
    cv_checkpoint ck[2];
    for (int run = 0; run < 2; run++) {
        snprintf(out[run], sizeof out[run], "%s/run%d", dir, run);
        cv_train_options o = cv_train_defaults();
        o.data_dir = data;
        o.device = "cpu";
        o.out_dir = out[run];
        o.hidden[0] = 16;
        o.latent = 3;
        o.batch = 32;
        o.epochs = 2;
        o.prior = CV_PRIOR_CONDITIONAL;
        o.train.kl_warmup = 1;
        o.seed = r.s;
        o.log = sink;
        if (run == 1) o.train.objective = CV_OBJECTIVE_IWAE; /* samples stays 1 */
        cv_train_result res;
        cv_err err;
        cr_assert_eq(cv_train_run(&o, &res, &err), CV_OK, "%s", err.msg);
        char path[4300];
        snprintf(path, sizeof path, "%.4200s/model.ckpt", out[run]);
        cr_assert_eq(cv_checkpoint_load(path, &ck[run], &err), CV_OK, "%s", err.msg);
    }
    fclose(sink);
    cr_assert_eq(ck[1].train.objective, CV_OBJECTIVE_IWAE);
    const size_t bytes = ck[0].n_params * sizeof(float);
    cr_assert(ck[0].n_params == ck[1].n_params && memcmp(ck[0].params, ck[1].params, bytes) == 0 &&
              memcmp(ck[0].adam_m, ck[1].adam_m, bytes) == 0 &&
              memcmp(ck[0].adam_v, ck[1].adam_v, bytes) == 0,
              "IWAE with one draw did not train bitwise as the ELBO");
    cv_checkpoint_free(&ck[0]);
    cv_checkpoint_free(&ck[1]);
    test_rmtree(dir);
    free(dir);
}

/* Options for a small run of the IDX data in data_dir into out. */
static cv_train_options small_run(const char *data_dir, const char *out, int epochs, FILE *log,
                                  uint64_t seed) {
    cv_train_options o = cv_train_defaults();
    o.data_dir = data_dir;
    o.device = "cpu";
    o.out_dir = out;
    o.hidden[0] = 16;
    o.latent = 3;
    o.batch = 32;
    o.epochs = epochs;
    o.train.kl_warmup = 3;
    o.seed = seed;
    o.log = log;
    return o;
}

/* The file at path as version 3 wrote it: without version 5's names block (the count 0
 * before the CRC) and version 4's block of six u32 before n_params, its CRC made again. */
static void rewrite_as_version_3(const char *path) {
    size_t size;
    uint8_t *b = test_read_file(path, &size);
    cr_assert(b[size - 8] == 0 && b[size - 7] == 0 && b[size - 6] == 0 && b[size - 5] == 0,
              "a checkpoint of numbered classes holds names");
    size -= 4; /* the CRC, made again below, takes the count's place */
    const uint32_t fields = (uint32_t)b[12] | (uint32_t)b[13] << 8;
    const size_t at = 16 + fields - 8 - 24;
    memmove(b + at, b + at + 24, size - at - 24);
    size -= 24;
    b[8] = 3;
    b[12] = (uint8_t)(fields - 24);
    b[13] = (uint8_t)((fields - 24) >> 8);
    const uint32_t crc = (uint32_t)crc32(0L, b, (uInt)(size - 4));
    for (int i = 0; i < 4; i++) b[size - 4 + i] = (uint8_t)(crc >> (8 * i));
    test_write_file(path, b, size);
    free(b);
}

/* A checkpoint of format version 3, whose KL warm-up held beta for a whole epoch, resumes
 * as it was trained: the same bits as the run never stopped (warm-up per epoch), and not
 * those of the per-step warm-up that new runs take. */
Test(objective_grad, a_version_3_checkpoint_resumes_its_per_epoch_warm_up_exactly) {
    test_rng r = test_rng_new("version 3 resume");
    char *dir = test_tmpdir(), data[4200], whole[4200], cut[4200], fresh[4200];
    snprintf(data, sizeof data, "%s/data", dir);
    cr_assert_eq(mkdir(data, 0777), 0);
    test_write_dataset(data, 200, 40, 6, 6, 3, false, r.s);
    snprintf(whole, sizeof whole, "%s/whole", dir);
    snprintf(cut, sizeof cut, "%s/cut", dir);
    snprintf(fresh, sizeof fresh, "%s/fresh", dir);
    FILE *sink = fopen("/dev/null", "w");
    cv_train_result res;
    cv_err err;
    cv_train_options o = small_run(data, whole, 4, sink, r.s);
    o.train.warmup_per_step = 0; /* as versions 1 to 3 trained */
    cr_assert_eq(cv_train_run(&o, &res, &err), CV_OK, "%s", err.msg);
    o = small_run(data, cut, 2, sink, r.s);
    o.train.warmup_per_step = 0;
    cr_assert_eq(cv_train_run(&o, &res, &err), CV_OK, "%s", err.msg);
    char ck_path[3][4300];
    snprintf(ck_path[0], sizeof ck_path[0], "%.4200s/model.ckpt", whole);
    snprintf(ck_path[1], sizeof ck_path[1], "%.4200s/model.ckpt", cut);
    snprintf(ck_path[2], sizeof ck_path[2], "%.4200s/model.ckpt", fresh);
    rewrite_as_version_3(ck_path[1]);
    cv_checkpoint ck[3];
    cr_assert_eq(cv_checkpoint_load(ck_path[1], &ck[1], &err), CV_OK, "%s", err.msg);
    cr_assert(ck[1].version == 3 && ck[1].train.warmup_per_step == 0);
    cv_checkpoint_free(&ck[1]);
    o = small_run(data, cut, 4, sink, r.s); /* the command as a user gives it, plus --resume */
    o.resume_path = ck_path[1];
    cr_assert_eq(cv_train_run(&o, &res, &err), CV_OK, "%s", err.msg);
    o = small_run(data, fresh, 4, sink, r.s); /* today's per-step warm-up, for contrast */
    cr_assert_eq(cv_train_run(&o, &res, &err), CV_OK, "%s", err.msg);
    fclose(sink);
    for (int k = 0; k < 3; k++)
        cr_assert_eq(cv_checkpoint_load(ck_path[k], &ck[k], &err), CV_OK, "%s", err.msg);
    const size_t bytes = ck[0].n_params * sizeof(float);
    cr_assert(memcmp(ck[0].params, ck[1].params, bytes) == 0 &&
              memcmp(ck[0].adam_v, ck[1].adam_v, bytes) == 0,
              "the version 3 checkpoint did not resume as it was trained");
    cr_assert(memcmp(ck[0].params, ck[2].params, bytes) != 0,
              "a per-step warm-up trained the same bits as a per-epoch one");
    for (int k = 0; k < 3; k++) cv_checkpoint_free(&ck[k]);
    test_rmtree(dir);
    free(dir);
}

/* Active units on a model built to have a known count: of 7 latent units, the posterior
 * means of 3 follow the image (variance over the test set far above 0.01), 2 are constant
 * (their head rows 0), and 2 vary a little (rows scaled down: variance far below 0.01). */
Test(objective_grad, active_units_counts_a_model_built_to_have_three) {
    test_rng r = test_rng_new("active units");
    cv_backend *be;
    cv_err err;
    cr_assert_eq(cv_backend_cpu_create(&be, &err), CV_OK);
    const int L = 7, n = 700, D = 36;
    cv_model_config cfg = {.height = 6, .width = 6, .channels = 1, .condition = CV_COND_LABELS,
                           .cond_width = 3, .latent = L, .n_hidden = 1, .hidden = {16}};
    cv_model m;
    cv_workspace ws;
    cr_assert_eq(cv_model_create(be, &cfg, &m, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(cv_model_init_params(&m, r.s, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(cv_workspace_create(&m, CV_EVAL_BATCH, &ws, &err), CV_OK, "%s", err.msg);
    const cv_layer *head = &m.layout.layers[m.layout.n_enc - 1];
    const float scale[7] = {20, 20, 20, 0, 0, 0.01f, 0.01f}; /* mu rows of the head */
    for (int j = 0; j < L; j++) {
        for (int i = 0; i < head->in; i++) m.params[head->w + (size_t)j * head->in + i] *= scale[j];
        m.params[head->b + j] = 0.5f;
    }
    cv_split split = {.pixels = malloc((size_t)n * D), .labels = malloc(n), .n = n, .h = 6,
                      .w = 6, .channels = 1};
    for (size_t i = 0; i < (size_t)n * D; i++) split.pixels[i] = (uint8_t)test_uniform(&r, 0, 256);
    for (int i = 0; i < n; i++) split.labels[i] = (uint8_t)test_uniform(&r, 0, 3);
    cv_device_split ds;
    cr_assert_eq(cv_device_split_upload(be, &split, &ds, &err), CV_OK, "%s", err.msg);
    const cv_eval_options eo = {.latent_stats = true};
    cv_eval_result res;
    cr_assert_eq(cv_evaluate(&m, &ws, &ds, 0, &eo, &res, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(res.active_units, 3);
    cv_eval_result_free(&res);
    cv_device_split_free(be, &ds);
    free(split.pixels);
    free(split.labels);
    cv_workspace_destroy(&m, &ws);
    cv_model_destroy(&m);
    be->destroy(be);
}

/* An IWAE run whose draws the device cannot hold is refused, with one line, before
 * training, and leaves no run folder. */
Test(objective_grad, a_k_that_cannot_fit_is_refused_before_training) {
    char *dir = test_tmpdir(), out[4200];
    snprintf(out, sizeof out, "%s/run", dir);
    const char *args[] = {"train", "--data", "/usr/share/datasets/fashion-mnist", "--device",
                          "cpu", "--objective", "iwae", "--samples", "1000000", "--batch",
                          "4096", "--out", out, NULL};
    char *o, *e;
    cr_assert_eq(test_run_cvae(&o, &e, args), 1, "%s", e);
    cr_assert_eq(test_count_lines(e), 1, "%s", e);
    cr_assert(strstr(e, "cvae train: --samples 1000000 does not fit") != NULL, "%s", e);
    cr_assert(strstr(o, "epoch") == NULL, "it trained: %s", o);
    struct stat sb;
    cr_assert_neq(stat(out, &sb), 0, "the run folder was left behind");
    free(o);
    free(e);
    test_rmtree(dir);
    free(dir);
}
