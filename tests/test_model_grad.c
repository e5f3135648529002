/* test_model_grad.c: the whole model against a double-precision reference written from
 * docs/design.md section 1 (with the condition as an explicit input vector c: a label's
 * one-hot, so the gathered column is checked too, or a condition vector, with the prior
 * N(M c, diag exp(R c))), and every parameter's gradient against central finite
 * differences of that reference. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cv_math.h"
#include "cvae/model.h"
#include "helpers.h"
#include "ref_model.h"

/* loss = (1/B) sum_b (rec_b + beta kl_b); per-sample rec and kl when not NULL */
static double ref_loss(const ref_ctx *c, const double *p, double *rec_out, double *kl_out) {
    const int L = c->lo->cfg.latent;
    double total = 0, enc[2 * REF_MAX_LATENT], m[REF_MAX_LATENT], rr[REF_MAX_LATENT];
    double z[REF_MAX_LATENT];
    for (int r = 0; r < c->rows; r++) {
        ref_encode(c, p, r, enc);
        ref_prior(c, p, r, m, rr);
        double kl = 0;
        for (int j = 0; j < L; j++) {
            z[j] = enc[j] + exp(0.5 * ref_clamp(enc[L + j])) * c->eps[r * L + j];
            kl += ref_kl(enc[j], enc[L + j], m[j], rr[j]);
        }
        double rec = ref_rec(c, p, r, z);
        if (rec_out) rec_out[r] = rec;
        if (kl_out) kl_out[r] = kl;
        total += rec + c->beta * kl;
    }
    return total / c->rows;
}

/* The data side of a checked model: image channels and the condition's kind. */
typedef struct {
    int channels;
    cv_condition_kind condition;
    bool sigma_learned; /* the Gaussian's sigma a parameter */
} data_shape;

static const data_shape GREY_LABELS = {1, CV_COND_LABELS, false};

static void check_model_shaped(const int *hidden, int n_hidden, int h, int w, int K, int L,
                               int rows, float beta, cv_prior_kind prior, cv_likelihood like,
                               data_shape shape) {
    test_rng r = test_rng_new("model gradient");
    cv_backend *be;
    cv_err err;
    cr_assert_eq(cv_backend_cpu_create(&be, &err), CV_OK);
    cv_model_config cfg = {.height = h, .width = w, .channels = shape.channels,
                           .condition = shape.condition, .cond_width = K, .latent = L,
                           .n_hidden = n_hidden, .prior = prior, .likelihood = like,
                           .sigma = 0.4f, .sigma_learned = shape.sigma_learned};
    memcpy(cfg.hidden, hidden, sizeof(int) * n_hidden);
    cv_model m;
    cv_workspace ws;
    cr_assert_eq(cv_model_create(be, &cfg, &m, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(cv_workspace_create(&m, rows, &ws, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(cv_model_init_params(&m, r.s, &err), CV_OK, "%s", err.msg);
    if (prior == CV_PRIOR_CONDITIONAL) /* tables away from their zero start */
        test_fill(&r, m.params + m.layout.prior_m, m.layout.prior_r - m.layout.prior_m + K * L,
                  -1, 1);
    if (shape.sigma_learned) /* log sigma away from its start */
        m.params[m.layout.log_sigma] = (float)test_uniform(&r, log(0.15), log(0.6));
    const int D = h * w * shape.channels;
    const bool vectors = shape.condition == CV_COND_VECTORS;
    test_fill(&r, ws.x, (size_t)rows * D, 0, 1);
    for (int i = 0; i < rows; i++) ws.labels[i] = (int32_t)test_uniform(&r, 0, K);
    if (vectors) test_fill(&r, ws.cond, (size_t)rows * K, -1.5, 1.5);
    for (int i = 0; i < rows * L; i++) ws.eps[i] = (float)test_normal(&r);

    be->zero(be, m.grads, m.layout.n_params * sizeof(float));
    cv_noise given = {.draw = false};
    cv_model_forward(&m, &ws, rows, &given, rows, false);
    cv_model_backward(&m, &ws, rows, rows, beta);

    ref_ctx c = {&m.layout, rows, ws.x, ws.eps, ws.labels, vectors ? ws.cond : NULL, beta};
    const size_t n = m.layout.n_params;
    double *p = calloc(n, sizeof(double)), *rec = malloc(rows * 8), *kl = malloc(rows * 8);
    cr_assert(p && rec && kl);
    for (size_t i = 0; i < n; i++) p[i] = m.params[i];
    ref_loss(&c, p, rec, kl);
    for (int i = 0; i < rows; i++) {
        /* float forward vs double: a few hundred float sums, 1e-5 relative */
        cr_assert(fabs(ws.rec[i] - rec[i]) <= 1e-4 + 1e-5 * fabs(rec[i]), "rec[%d] %g vs %g", i,
                  ws.rec[i], rec[i]);
        cr_assert(fabs(ws.kl[i] - kl[i]) <= 1e-4 + 1e-5 * fabs(kl[i]), "kl[%d] %g vs %g", i,
                  ws.kl[i], kl[i]);
    }
    const double hstep = 1e-6;
    for (size_t i = 0; i < n; i++) {
        double keep = p[i];
        p[i] = keep + hstep;
        double lp = ref_loss(&c, p, NULL, NULL);
        p[i] = keep - hstep;
        double lm = ref_loss(&c, p, NULL, NULL);
        p[i] = keep;
        double fd = (lp - lm) / (2 * hstep);
        /* float backprop through a few layers vs double: 1e-3 relative, 3e-5 absolute */
        cr_assert(fabs(m.grads[i] - fd) <= 3e-5 + 1e-3 * fabs(fd),
                  "gradient of parameter %zu: backprop %.8g, finite difference %.8g", i,
                  m.grads[i], fd);
    }
    free(p);
    free(rec);
    free(kl);
    cv_workspace_destroy(&m, &ws);
    cv_model_destroy(&m);
    be->destroy(be);
}

static void check_model_with(const int *hidden, int n_hidden, int h, int w, int K, int L,
                             int rows, float beta, cv_prior_kind prior, cv_likelihood like) {
    check_model_shaped(hidden, n_hidden, h, w, K, L, rows, beta, prior, like, GREY_LABELS);
}

static void check_model(const int *hidden, int n_hidden, int h, int w, int K, int L, int rows,
                        float beta) {
    check_model_with(hidden, n_hidden, h, w, K, L, rows, beta, CV_PRIOR_STANDARD,
                     CV_LIKELIHOOD_BERNOULLI);
}

Test(model, gradient_with_conditional_prior) {
    int hidden[] = {6, 5};
    check_model_with(hidden, 2, 3, 4, 3, 3, 6, 0.7f, CV_PRIOR_CONDITIONAL,
                     CV_LIKELIHOOD_BERNOULLI);
}

Test(model, gradient_with_gaussian_likelihood_and_conditional_prior) {
    int hidden[] = {7};
    check_model_with(hidden, 1, 3, 3, 2, 2, 5, 1.0f, CV_PRIOR_CONDITIONAL,
                     CV_LIKELIHOOD_GAUSSIAN);
}

/* Condition vectors: the condition GEMMs of the first layers (C x T) and their gradient
 * (C^T dy), and the linear prior m = M c, r = R c with its table gradients. */
Test(model, gradient_with_condition_vectors) {
    int hidden[] = {6, 5};
    const data_shape vectors = {1, CV_COND_VECTORS, false};
    check_model_shaped(hidden, 2, 3, 4, 3, 3, 6, 0.8f, CV_PRIOR_STANDARD,
                       CV_LIKELIHOOD_BERNOULLI, vectors);
}

Test(model, gradient_with_condition_vectors_and_the_linear_prior) {
    int hidden[] = {7};
    const data_shape vectors = {1, CV_COND_VECTORS, false};
    check_model_shaped(hidden, 1, 3, 3, 4, 3, 5, 0.6f, CV_PRIOR_CONDITIONAL,
                       CV_LIKELIHOOD_BERNOULLI, vectors);
}

/* Colour images: D = H W C values, interleaved, through the same layers. */
Test(model, gradient_with_colour_images_and_condition_vectors) {
    int hidden[] = {8};
    const data_shape rgb = {3, CV_COND_VECTORS, false};
    check_model_shaped(hidden, 1, 2, 3, 2, 2, 4, 1.0f, CV_PRIOR_CONDITIONAL,
                       CV_LIKELIHOOD_GAUSSIAN, rgb);
}

Test(model, gradient_with_colour_images_and_labels) {
    int hidden[] = {5};
    const data_shape rgba = {4, CV_COND_LABELS, false};
    check_model_shaped(hidden, 1, 2, 2, 3, 2, 4, 1.0f, CV_PRIOR_CONDITIONAL,
                       CV_LIKELIHOOD_BERNOULLI, rgba);
}

/* A learned sigma: log sigma's gradient, and the likelihood's through it. */
Test(model, gradient_with_a_learned_gaussian_sigma) {
    int hidden[] = {6};
    const data_shape learned = {1, CV_COND_LABELS, true};
    check_model_shaped(hidden, 1, 3, 3, 3, 2, 5, 1.0f, CV_PRIOR_CONDITIONAL,
                       CV_LIKELIHOOD_GAUSSIAN, learned);
}

Test(model, gradient_two_hidden_layers) {
    int hidden[] = {6, 5};
    check_model(hidden, 2, 3, 4, 3, 3, 5, 1.0f);
}

Test(model, gradient_one_hidden_layer_with_beta) {
    int hidden[] = {9};
    check_model(hidden, 1, 5, 5, 4, 2, 7, 0.35f);
}

Test(model, gradient_three_hidden_layers_one_class_one_row) {
    int hidden[] = {7, 4, 3};
    check_model(hidden, 3, 2, 3, 1, 2, 1, 2.0f);
}

Test(model, layout_matches_nn_linear_sizes) {
    cv_model_config cfg = {.height = 28, .width = 28, .channels = 1, .cond_width = 10, .latent = 20,
                           .n_hidden = 1, .hidden = {400}};
    cv_layout lo;
    cv_err err;
    cr_assert_eq(cv_layout_init(&cfg, &lo, &err), CV_OK);
    /* nn.Linear(794, 400), (400, 40), (30, 400), (400, 784) with biases */
    size_t expect = 794 * 400 + 400 + 400 * 40 + 40 + 30 * 400 + 400 + 400 * 784 + 784;
    cr_assert_eq(lo.n_params, expect);
    cr_assert_eq(lo.n_layers, 4);
    cr_assert_eq(lo.n_enc, 2);
}

Test(model, init_follows_fan_in_bounds) {
    cv_backend *be;
    cv_err err;
    cr_assert_eq(cv_backend_cpu_create(&be, &err), CV_OK);
    cv_model_config cfg = {.height = 28, .width = 28, .channels = 1, .cond_width = 10, .latent = 20,
                           .n_hidden = 1, .hidden = {400}};
    cv_model m;
    cr_assert_eq(cv_model_create(be, &cfg, &m, &err), CV_OK);
    test_rng r = test_rng_new("init");
    cr_assert_eq(cv_model_init_params(&m, r.s, &err), CV_OK, "%s", err.msg);
    for (int i = 0; i < m.layout.n_layers; i++) {
        const cv_layer *l = &m.layout.layers[i];
        int fan = l->in + (l->cond != CV_NO_COND ? 10 : 0);
        /* the float bound the model uses: 2u - 1 rounds to 1 (u = 1.0f) and to -1 (the
         * lowest words), so the weights reach it, and 1/sqrt(fan) rounded to float may lie
         * above the exact one (fan 400: 0.05) */
        double bound = 1.0f / sqrtf((float)fan), sum = 0, sq = 0, maxabs = 0;
        size_t n = l->b + l->out - l->w;
        for (size_t k = l->w; k < l->b + l->out; k++) {
            double v = m.params[k];
            sum += v;
            sq += v * v;
            maxabs = fmax(maxabs, fabs(v));
        }
        cr_assert_leq(maxabs, bound, "layer %d exceeds 1/sqrtf(%d)", i, fan);
        /* U(-b, b) has variance b^2/3; 6 standard errors of the sample variance */
        double var = sq / n - (sum / n) * (sum / n);
        cr_assert(fabs(var - bound * bound / 3) < 6 * bound * bound * sqrt(0.8 / n) / 3 + 1e-12,
                  "layer %d variance %g, expected %g", i, var, bound * bound / 3);
    }
    cv_model_destroy(&m);
    be->destroy(be);
}

Test(model, layout_rejects_image_sizes_whose_pixel_count_overflows) {
    /* found by fuzzing the checkpoint reader: 53344 x 60417 overflowed an int */
    cv_model_config cfg = {.height = 53344, .width = 60417, .channels = 1, .cond_width = 10, .latent = 20,
                           .n_hidden = 1, .hidden = {400}};
    cv_layout lo;
    cv_err err;
    cr_assert_eq(cv_layout_init(&cfg, &lo, &err), CV_ERR_USAGE);
    cr_assert(strstr(err.msg, "over the 2^24 values") != NULL, "%s", err.msg);
}
