/* latent_pictures.c: pictures of the latent space (latent.h): traversals, one latent unit
 * moved across the prior at a time, and interpolations between two images' posteriors.
 *
 * Each picture row is decoded as one batch of `steps` rows under one condition (a label
 * or a condition row repeated), so a row's pixels depend only on its latents. Pixels are
 * round(255 p), p = sigmoid(logits), as generate --mean draws them.
 */
#include <stdlib.h>
#include <string.h>

#include "cv_math.h"
#include "cvae/latent.h"

/* One condition on every row of ws: a label, or a condition row (vectors). */
typedef struct {
    int32_t label;
    const float *row;
} condition;

static condition condition_of(const cv_gen_conditions *c, int K, long long a) {
    if (c->conditions) return (condition){0, c->conditions + (size_t)a * K};
    return (condition){cv_gen_class_of(c, a), NULL};
}

/* Host scratch for a row's conditions, latents and means. */
typedef struct {
    void *cond; /* rows int32 labels, or rows * K floats */
    float *z;   /* rows * L */
    float *p;   /* rows * D */
} scratch;

static cv_status scratch_alloc(const cv_model *m, int rows, scratch *s, cv_err *err) {
    const size_t n = (size_t)rows, K = (size_t)m->layout.cfg.cond_width;
    s->cond = malloc(n * (K > 1 ? K : 1) * sizeof(float));
    s->z = malloc(n * (size_t)m->layout.cfg.latent * sizeof(float));
    s->p = malloc(n * (size_t)m->layout.dim * sizeof(float));
    if (s->cond && s->z && s->p) return CV_OK;
    free(s->cond);
    free(s->z);
    free(s->p);
    return cv_fail(err, CV_ERR_NOMEM, "out of host memory for a picture row");
}

static void scratch_free(scratch *s) {
    free(s->cond);
    free(s->z);
    free(s->p);
}

/* s->z (rows, L) decoded under condition c into s->p (rows, D); with in_prior, each z is
 * first placed in c's prior (z <- m + exp(r / 2) z). */
static void decode_row(cv_model *m, cv_workspace *ws, int rows, condition c, bool in_prior,
                       scratch *s) {
    cv_backend *be = m->be;
    const int K = m->layout.cfg.cond_width, L = m->layout.cfg.latent;
    if (c.row) {
        float *rows_k = s->cond;
        for (int r = 0; r < rows; r++) memcpy(rows_k + (size_t)r * K, c.row, (size_t)K * sizeof(float));
        be->upload(be, ws->cond, rows_k, (size_t)rows * K * sizeof(float));
    } else {
        int32_t *labels = s->cond;
        for (int r = 0; r < rows; r++) labels[r] = c.label;
        be->upload(be, ws->labels, labels, (size_t)rows * sizeof(int32_t));
    }
    be->upload(be, ws->z, s->z, (size_t)rows * L * sizeof(float));
    if (in_prior) {
        cv_prior prior;
        be->prior_transform(be, cv_model_batch_prior(m, ws, rows, &prior), ws->labels, ws->z,
                            rows, L);
    }
    cv_model_decode(m, ws, rows);
    cv_decoded_means(m, ws, rows, s->p);
}

static void to_pixels(const float *p, size_t n, uint8_t *px) {
    for (size_t i = 0; i < n; i++) px[i] = (uint8_t)floorf(255.0f * p[i] + 0.5f);
}

/* Unit j at t_k = -3 + 6 k / (steps - 1) standard deviations, every other unit at 0. */
static void traversal_latents(int L, int steps, int j, float *z) {
    memset(z, 0, (size_t)steps * L * sizeof(float));
    for (int k = 0; k < steps; k++) z[(size_t)k * L + j] = -3.0f + 6.0f * k / (steps - 1);
}

/* How much a row of `steps` images varies: the sum over pixels of their variance. */
static double row_variance(const float *p, int steps, int D) {
    double total = 0;
    for (int d = 0; d < D; d++) {
        double sum = 0, sq = 0;
        for (int k = 0; k < steps; k++) {
            double v = p[(size_t)k * D + d];
            sum += v;
            sq += v * v;
        }
        total += sq / steps - (sum / steps) * (sum / steps);
    }
    return total;
}

typedef struct {
    double activity;
    int unit;
} ranked;

/* More active first; ties: the lower unit first. */
static int by_activity(const void *pa, const void *pb) {
    const ranked *a = pa, *b = pb;
    if (a->activity != b->activity) return a->activity > b->activity ? -1 : 1;
    return a->unit - b->unit;
}

/* The units in order of activity, most active first. */
static cv_status rank_units(const double *activity, int L, int *order, cv_err *err) {
    ranked *r = malloc((size_t)L * sizeof *r);
    if (!r) return cv_fail(err, CV_ERR_NOMEM, "out of host memory");
    for (int j = 0; j < L; j++) r[j] = (ranked){activity[j], j};
    qsort(r, (size_t)L, sizeof *r, by_activity);
    for (int j = 0; j < L; j++) order[j] = r[j].unit;
    free(r);
    return CV_OK;
}

cv_status cv_latent_traversal(cv_model *m, cv_workspace *ws, const cv_gen_conditions *cond,
                              int units, int steps, const double *given, cv_tiles *out,
                              int *order, cv_err *err) {
    const int L = m->layout.cfg.latent, D = m->layout.dim, K = m->layout.cfg.cond_width;
    const int R = (int)cv_gen_condition_count(cond);
    CV_ASSERT(units >= 1 && units <= L && steps >= 2 && steps <= ws->max_rows);
    memset(out, 0, sizeof *out);
    scratch s;
    cv_status st = scratch_alloc(m, steps, &s, err);
    if (st) return st;
    double *activity = calloc((size_t)L, sizeof(double));
    out->pixels = malloc((size_t)R * units * steps * D);
    if (!activity || !out->pixels) {
        free(activity);
        free(out->pixels);
        out->pixels = NULL;
        scratch_free(&s);
        return cv_fail(err, CV_ERR_NOMEM, "out of host memory for a traversal of %d rows",
                       R * units);
    }
    if (given) memcpy(activity, given, (size_t)L * sizeof(double));
    for (int a = 0; !given && a < R; a++) /* every unit's row, to rank them */
        for (int j = 0; j < L; j++) {
            traversal_latents(L, steps, j, s.z);
            decode_row(m, ws, steps, condition_of(cond, K, a), true, &s);
            activity[j] += row_variance(s.p, steps, D);
        }
    st = rank_units(activity, L, order, err);
    for (int a = 0; !st && a < R; a++) /* the chosen units' rows again, for their pixels */
        for (int u = 0; u < units; u++) {
            traversal_latents(L, steps, order[u], s.z);
            decode_row(m, ws, steps, condition_of(cond, K, a), true, &s);
            to_pixels(s.p, (size_t)steps * D, out->pixels + ((size_t)a * units + u) * steps * D);
        }
    free(activity);
    scratch_free(&s);
    if (st) {
        free(out->pixels);
        out->pixels = NULL;
        return st;
    }
    out->rows = R * units;
    out->cols = steps;
    return CV_OK;
}

cv_status cv_posterior_activity(cv_model *m, cv_workspace *ws, const cv_split *split,
                                int count, double *activity, cv_err *err) {
    const int L = m->layout.cfg.latent, n = count < split->n ? count : split->n;
    /* batches of at most 2^22 floats of [mean | logvar] (16 MiB) on the host */
    const int cap = (1 << 22) / (2 * L) > 0 ? (1 << 22) / (2 * L) : 1;
    const int batch = ws->max_rows < cap ? ws->max_rows : cap;
    float *head = malloc((size_t)batch * 2 * L * sizeof(float));
    double *sum = calloc((size_t)L, sizeof(double));
    cv_status st = head && sum ? CV_OK : cv_fail(err, CV_ERR_NOMEM, "out of host memory");
    for (int j = 0; j < L; j++) activity[j] = 0;
    for (int first = 0; !st && first < n; first += batch) {
        const int rows = n - first < batch ? n - first : batch;
        st = cv_workspace_load_split(m, ws, split, first, rows, err);
        if (st) break;
        cv_model_encode(m, ws, rows);
        m->be->download(m->be, head, ws->act[m->layout.n_enc - 1],
                        (size_t)rows * 2 * L * sizeof(float));
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < L; j++) {
                const double mu = head[(size_t)r * 2 * L + j];
                sum[j] += mu;
                activity[j] += mu * mu; /* the sum of squares, until the end */
            }
    }
    for (int j = 0; !st && j < L; j++)
        activity[j] = activity[j] / n - (sum[j] / n) * (sum[j] / n);
    free(head);
    free(sum);
    return st;
}

/* The posterior mean of image i of split into mu (L). */
static cv_status posterior_mean(cv_model *m, cv_workspace *ws, const cv_split *split, int i,
                                float *mu, cv_err *err) {
    cv_status st = cv_workspace_load_split(m, ws, split, i, 1, err);
    if (st) return st;
    cv_model_encode(m, ws, 1);
    m->be->download(m->be, mu, ws->act[m->layout.n_enc - 1],
                    (size_t)m->layout.cfg.latent * sizeof(float));
    return CV_OK;
}

/* Image i of split as bytes. */
static void image_bytes(const cv_split *s, int i, int D, uint8_t *px) {
    for (int d = 0; d < D; d++)
        px[d] = s->pixels ? s->pixels[(size_t)i * D + d]
                          : (uint8_t)floorf(255.0f * s->fpixels[(size_t)i * D + d] + 0.5f);
}

/* Whether images a and b of split have the same condition. */
static bool same_condition(const cv_split *s, int a, int b) {
    if (s->labels) return s->labels[a] == s->labels[b];
    return memcmp(s->conditions + (size_t)a * s->cond_width,
                  s->conditions + (size_t)b * s->cond_width,
                  (size_t)s->cond_width * sizeof(float)) == 0;
}

cv_status cv_latent_interpolation(cv_model *m, cv_workspace *ws, const cv_split *split, int a,
                                  int b, int steps, cv_tiles *out, cv_err *err) {
    const int L = m->layout.cfg.latent, D = m->layout.dim, K = m->layout.cfg.cond_width;
    CV_ASSERT(a >= 0 && a < split->n && b >= 0 && b < split->n);
    CV_ASSERT(steps >= 2 && steps <= ws->max_rows);
    memset(out, 0, sizeof *out);
    const int rows = same_condition(split, a, b) ? 1 : 2, cols = steps + 2;
    scratch s;
    cv_status st = scratch_alloc(m, steps, &s, err);
    if (st) return st;
    float *mu = malloc(2 * (size_t)L * sizeof(float));
    out->pixels = malloc((size_t)rows * cols * D);
    if (!mu || !out->pixels) st = cv_fail(err, CV_ERR_NOMEM, "out of host memory");
    if (!st) st = posterior_mean(m, ws, split, a, mu, err);
    if (!st) st = posterior_mean(m, ws, split, b, mu + L, err);
    for (int r = 0; !st && r < rows; r++) {
        const int from = r == 0 ? a : b; /* row r: the condition of image a, then of b */
        for (int k = 0; k < steps; k++)
            for (int j = 0; j < L; j++) {
                const float t = (float)k / (steps - 1);
                s.z[(size_t)k * L + j] = mu[j] + t * (mu[L + j] - mu[j]);
            }
        const condition c = split->labels ? (condition){split->labels[from], NULL}
                                          : (condition){0, split->conditions + (size_t)from * K};
        decode_row(m, ws, steps, c, false, &s);
        uint8_t *row = out->pixels + (size_t)r * cols * D;
        image_bytes(split, a, D, row);
        to_pixels(s.p, (size_t)steps * D, row + D);
        image_bytes(split, b, D, row + (size_t)(steps + 1) * D);
    }
    free(mu);
    scratch_free(&s);
    if (st) {
        free(out->pixels);
        out->pixels = NULL;
        return st;
    }
    out->rows = rows;
    out->cols = cols;
    return CV_OK;
}
