/* backend_timed.c: a backend that forwards every operation to another one and times each
 * kernel call, by family (include/cvae/bench.h).
 *
 * Each timed call is bracketed by two of the inner backend's events. They are only
 * recorded here, never waited for, so the calls run as they would without the timing;
 * cv_backend_timed_read waits for the last of them and reads them all. Memory management,
 * host transfers and events are forwarded untimed: they are not kernels of a step.
 */
#include <stdlib.h>
#include <string.h>

#include "cvae/bench.h"

typedef struct {
    cv_backend *inner;
    int max_calls;
    int used;                 /* timed calls since the last read */
    long long untimed;        /* calls beyond max_calls since the last read */
    void **start, **end;      /* the events around timed call i */
    cv_op_family *family;     /* of timed call i */
    cv_family_stats pending[CV_FAMILY_COUNT]; /* bytes, FLOPs and calls since the last read */
} timed_ctx;

static timed_ctx *ctx_of(cv_backend *be) { return (timed_ctx *)be->impl; }

/* Marks the start of a call: its slot, or -1 when every slot is in use. */
static int call_begin(timed_ctx *t) {
    if (t->used == t->max_calls) {
        t->untimed++;
        return -1;
    }
    t->inner->event_record(t->inner, t->start[t->used]);
    return t->used++;
}

/* Marks the end of the call in `slot` and counts what it cost. */
static void call_end(timed_ctx *t, int slot, cv_op_family family, cv_op_cost cost) {
    if (slot < 0) return;
    t->inner->event_record(t->inner, t->end[slot]);
    t->family[slot] = family;
    t->pending[family].bytes += cost.bytes;
    t->pending[family].flops += cost.flops;
    t->pending[family].calls += 1.0;
}

/* Runs `call` on the inner backend `in`, timed as `family` at `cost`. */
#define TIMED(be, family, cost, call)                  \
    do {                                               \
        timed_ctx *t_ = ctx_of(be);                    \
        cv_backend *in = t_->inner;                    \
        int slot_ = call_begin(t_);                    \
        call;                                          \
        call_end(t_, slot_, family, cost);             \
    } while (0)

static void free_ctx(timed_ctx *t) {
    for (int i = 0; i < t->max_calls; i++) {
        if (t->start && t->start[i]) t->inner->event_destroy(t->inner, t->start[i]);
        if (t->end && t->end[i]) t->inner->event_destroy(t->inner, t->end[i]);
    }
    free(t->start);
    free(t->end);
    free(t->family);
    free(t);
}

static void timed_destroy(cv_backend *be) {
    free_ctx(ctx_of(be));
    free(be);
}

/* memory, host transfers and events: forwarded untimed */

static cv_status timed_alloc(cv_backend *be, void **ptr, size_t bytes, const char *what,
                             cv_err *err) {
    cv_backend *in = ctx_of(be)->inner;
    return in->alloc(in, ptr, bytes, what, err);
}

static void timed_release(cv_backend *be, void *ptr) {
    cv_backend *in = ctx_of(be)->inner;
    in->release(in, ptr);
}

static void timed_upload(cv_backend *be, void *dst, const void *src, size_t bytes) {
    cv_backend *in = ctx_of(be)->inner;
    in->upload(in, dst, src, bytes);
}

static void timed_download(cv_backend *be, void *dst, const void *src, size_t bytes) {
    cv_backend *in = ctx_of(be)->inner;
    in->download(in, dst, src, bytes);
}

static cv_status timed_event_create(cv_backend *be, void **event, cv_err *err) {
    cv_backend *in = ctx_of(be)->inner;
    return in->event_create(in, event, err);
}

static void timed_event_record(cv_backend *be, void *event) {
    cv_backend *in = ctx_of(be)->inner;
    in->event_record(in, event);
}

static double timed_event_elapsed_ms(cv_backend *be, void *start, void *end) {
    cv_backend *in = ctx_of(be)->inner;
    return in->event_elapsed_ms(in, start, end);
}

static void timed_event_destroy(cv_backend *be, void *event) {
    cv_backend *in = ctx_of(be)->inner;
    in->event_destroy(in, event);
}

/* Every step through this backend runs eagerly, so that each call can be timed. */
static bool timed_capture_begin(cv_backend *be) {
    (void)be;
    return false;
}

/* kernels: timed */

static void timed_zero(cv_backend *be, void *dst, size_t bytes) {
    TIMED(be, CV_FAMILY_OTHER, cv_cost_zero(bytes), in->zero(in, dst, bytes));
}

static void timed_copy(cv_backend *be, void *dst, const void *src, size_t bytes) {
    TIMED(be, CV_FAMILY_OTHER, cv_cost_copy(bytes), in->copy(in, dst, src, bytes));
}

static void timed_gemm(cv_backend *be, bool ta, bool tb, int m, int n, int k, float alpha,
                       const float *a, int lda, const float *b, int ldb, float beta, float *c,
                       int ldc) {
    TIMED(be, CV_FAMILY_GEMM, cv_cost_gemm(m, n, k, beta != 0.0f),
          in->gemm(in, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc));
}

static cv_status timed_gemm_reserve(cv_backend *be, size_t elems, cv_err *err) {
    cv_backend *in = ctx_of(be)->inner;
    return in->gemm_reserve(in, elems, err);
}

static void timed_bias_act_forward(cv_backend *be, float *y, const float *bias,
                                   const float *cond, const int32_t *labels, int rows,
                                   int cols, bool relu) {
    TIMED(be, CV_FAMILY_BIAS_ACT_FORWARD, cv_cost_bias_act_forward(rows, cols, cond != NULL),
          in->bias_act_forward(in, y, bias, cond, labels, rows, cols, relu));
}

static void timed_bias_act_backward(cv_backend *be, float *dy, const float *y, float *dbias,
                                    float *dcond, const int32_t *labels, int rows, int cols,
                                    bool relu) {
    TIMED(be, CV_FAMILY_BIAS_ACT_BACKWARD,
          cv_cost_bias_act_backward(rows, cols, relu, dcond != NULL),
          in->bias_act_backward(in, dy, y, dbias, dcond, labels, rows, cols, relu));
}

static void timed_reparam_forward(cv_backend *be, const float *enc, float *eps, bool draw_eps,
                                  uint64_t seed, uint64_t stream_base, const cv_step *st,
                                  int first_row, const cv_prior *prior, const int32_t *labels,
                                  float *z, float *kl, float *log_ratio, int rows, int latent) {
    TIMED(be, CV_FAMILY_REPARAM_FORWARD,
          cv_cost_reparam_forward(rows, latent, draw_eps, prior != NULL, log_ratio != NULL),
          in->reparam_forward(in, enc, eps, draw_eps, seed, stream_base, st, first_row, prior,
                              labels, z, kl, log_ratio, rows, latent));
}

static void timed_reparam_backward(cv_backend *be, const float *enc, const float *eps,
                                   const float *dz, float kl_scale, const float *unit_kl,
                                   float kl_floor, const cv_prior *prior, const int32_t *labels,
                                   cv_prior_grad *dprior, float *denc, int rows, int latent) {
    TIMED(be, CV_FAMILY_REPARAM_BACKWARD, cv_cost_reparam_backward(rows, latent, prior != NULL),
          in->reparam_backward(in, enc, eps, dz, kl_scale, unit_kl, kl_floor, prior, labels,
                               dprior, denc, rows, latent));
}

static void timed_prior_transform(cv_backend *be, const cv_prior *prior, const int32_t *labels,
                                  float *z, int rows, int latent) {
    TIMED(be, CV_FAMILY_OTHER, cv_cost_prior_transform(rows, latent, prior != NULL),
          in->prior_transform(in, prior, labels, z, rows, latent));
}

static void timed_reconstruction(cv_backend *be, cv_likelihood likelihood, float sigma,
                                 const float *logits, const float *x, float *rec,
                                 float *dlogits, float grad_scale, int rows, int cols) {
    TIMED(be, CV_FAMILY_RECONSTRUCTION, cv_cost_reconstruction(rows, cols, dlogits != NULL),
          in->reconstruction(in, likelihood, sigma, logits, x, rec, dlogits, grad_scale, rows,
                             cols));
}

static void timed_normal(cv_backend *be, float *out, int rows, int cols, uint64_t seed,
                         uint64_t first_stream) {
    TIMED(be, CV_FAMILY_OTHER, cv_cost_normal(rows, cols),
          in->normal(in, out, rows, cols, seed, first_stream));
}

static void timed_pixels_from_logits(cv_backend *be, cv_likelihood likelihood, float sigma,
                                     const float *logits, int rows, int cols, bool mean,
                                     uint64_t seed, uint64_t first_stream, uint8_t *pixels) {
    TIMED(be, CV_FAMILY_OTHER, cv_cost_pixels_from_logits(rows, cols),
          in->pixels_from_logits(in, likelihood, sigma, logits, rows, cols, mean, seed,
                                 first_stream, pixels));
}

static void timed_check_finite(cv_backend *be, const float *rec, const float *kl, int rows,
                               const float *grads, size_t n, cv_step *st) {
    TIMED(be, CV_FAMILY_CHECK_ACCUMULATE, cv_cost_check_finite(rows, n),
          in->check_finite(in, rec, kl, rows, grads, n, st));
}

static void timed_adam(cv_backend *be, float *params, const float *grads, float *m, float *v,
                       size_t n, const cv_adam_config *cfg, const cv_step *st) {
    TIMED(be, CV_FAMILY_ADAM, cv_cost_adam(n), in->adam(in, params, grads, m, v, n, cfg, st));
}

static void timed_accumulate_loss(cv_backend *be, cv_loss_sums *sums, const float *rec,
                                  const float *kl, int rows, const cv_step *st) {
    TIMED(be, CV_FAMILY_CHECK_ACCUMULATE, cv_cost_accumulate_loss(rows),
          in->accumulate_loss(in, sums, rec, kl, rows, st));
}

static void timed_gather_batch(cv_backend *be, const cv_device_split *src, const cv_step *st,
                               int first, int rows, bool binarize, uint64_t seed, float *x,
                               int32_t *labels_out, float *cond_out) {
    TIMED(be, CV_FAMILY_GATHER,
          cv_cost_gather_batch(rows, src->dim, src->fpixels != NULL,
                               src->conditions ? src->cond_width : 0),
          in->gather_batch(in, src, st, first, rows, binarize, seed, x, labels_out, cond_out));
}

static void timed_allreduce(cv_backend *be, float *buf, size_t n) {
    TIMED(be, CV_FAMILY_ALLREDUCE, cv_cost_allreduce(n), in->allreduce(in, buf, n));
}

static void timed_loss_flag(cv_backend *be, const float *rec, const float *kl, int rows,
                            float *flag) {
    TIMED(be, CV_FAMILY_CHECK_ACCUMULATE, cv_cost_accumulate_loss(rows),
          in->loss_flag(in, rec, kl, rows, flag));
}

static void timed_advance_step(cv_backend *be, cv_step *st, int rows) {
    const cv_op_cost step_state = {0.0, 0.0}; /* a few bytes: left out, as in op_cost.c */
    TIMED(be, CV_FAMILY_OTHER, step_state, in->advance_step(in, st, rows));
}

static void timed_logsumexp_accumulate(cv_backend *be, double *lse_max, double *lse_sum,
                                       const float *rec, const float *log_ratio, int rows,
                                       bool reset) {
    TIMED(be, CV_FAMILY_OTHER, cv_cost_logsumexp_accumulate(rows, reset),
          in->logsumexp_accumulate(in, lse_max, lse_sum, rec, log_ratio, rows, reset));
}

static void timed_logsumexp_merge(cv_backend *be, double *dst_max, double *dst_sum,
                                  const double *src_max, const double *src_sum,
                                  double log_count, double log_prior, int rows, bool reset) {
    TIMED(be, CV_FAMILY_OTHER, cv_cost_logsumexp_merge(rows, reset),
          in->logsumexp_merge(in, dst_max, dst_sum, src_max, src_sum, log_count, log_prior,
                              rows, reset));
}

/* The training objectives' operations (backend.h), costed as the nearest family's: every
 * float read once plus every float written. */
static cv_op_cost floats_moved(double n) { return (cv_op_cost){4.0 * n, 0.0}; }

static void timed_kl_unit_sums(cv_backend *be, const float *enc, const cv_prior *prior,
                               const int32_t *labels, int rows, int latent, float *out) {
    TIMED(be, CV_FAMILY_REPARAM_FORWARD, floats_moved((double)rows * latent * (prior ? 4 : 2) + latent),
          in->kl_unit_sums(in, enc, prior, labels, rows, latent, out));
}

static void timed_iwae_weights(cv_backend *be, const float *rec, const float *log_ratio,
                               float beta, int rows, int samples, float *w, float *loss) {
    TIMED(be, CV_FAMILY_OTHER, floats_moved(3.0 * rows * samples + rows),
          in->iwae_weights(in, rec, log_ratio, beta, rows, samples, w, loss));
}

static void timed_scale_rows(cv_backend *be, float *x, const float *w, int rows, int cols) {
    TIMED(be, CV_FAMILY_RECONSTRUCTION, floats_moved(2.0 * rows * cols + rows),
          in->scale_rows(in, x, w, rows, cols));
}

static void timed_iwae_backward(cv_backend *be, const float *enc, const float *eps,
                                const float *dz, const float *w, int samples, float kl_scale,
                                const cv_prior *prior, const int32_t *labels,
                                cv_prior_grad *dprior, float *denc, int rows, int latent) {
    const double n = (double)rows * latent;
    TIMED(be, CV_FAMILY_REPARAM_BACKWARD,
          floats_moved(4.0 * n + 2.0 * n * samples + (double)rows * samples + (prior ? 4 * n : 0)),
          in->iwae_backward(in, enc, eps, dz, w, samples, kl_scale, prior, labels, dprior, denc,
                            rows, latent));
}

static void timed_reconstruction_learned(cv_backend *be, const float *log_sigma,
                                         const float *logits, const float *x, float *rec,
                                         float *dlogits, float *dsigma, float grad_scale,
                                         int rows, int cols) {
    TIMED(be, CV_FAMILY_RECONSTRUCTION, cv_cost_reconstruction(rows, cols, dlogits != NULL),
          in->reconstruction_learned(in, log_sigma, logits, x, rec, dlogits, dsigma,
                                     grad_scale, rows, cols));
}

static void timed_softmax_xent(cv_backend *be, const float *logits, const int32_t *labels,
                               float *loss, float *dlogits, float grad_scale, int rows,
                               int classes) {
    TIMED(be, CV_FAMILY_OTHER, floats_moved((double)rows * classes * (dlogits ? 2 : 1) + 2.0 * rows),
          in->softmax_xent(in, logits, labels, loss, dlogits, grad_scale, rows, classes));
}

static void timed_squared_error(cv_backend *be, const float *out, const float *target,
                                float *loss, float *dout, float grad_scale, int rows, int cols) {
    TIMED(be, CV_FAMILY_OTHER, floats_moved((double)rows * cols * (dout ? 3 : 2) + rows),
          in->squared_error(in, out, target, loss, dout, grad_scale, rows, cols));
}

static void timed_memory_info(cv_backend *be, size_t *free_bytes, size_t *total_bytes) {
    cv_backend *in = ctx_of(be)->inner;
    in->memory_info(in, free_bytes, total_bytes);
}

/* The table: every operation of struct cv_backend. capture_end, replay and
 * recording_free stay NULL, as on the CPU: capture_begin never starts a recording. */
static void fill_table(cv_backend *be) {
    be->destroy = timed_destroy;
    be->alloc = timed_alloc;
    be->release = timed_release;
    be->upload = timed_upload;
    be->download = timed_download;
    be->zero = timed_zero;
    be->gemm = timed_gemm;
    be->gemm_reserve = timed_gemm_reserve;
    be->bias_act_forward = timed_bias_act_forward;
    be->bias_act_backward = timed_bias_act_backward;
    be->reparam_forward = timed_reparam_forward;
    be->reparam_backward = timed_reparam_backward;
    be->prior_transform = timed_prior_transform;
    be->reconstruction = timed_reconstruction;
    be->normal = timed_normal;
    be->pixels_from_logits = timed_pixels_from_logits;
    be->check_finite = timed_check_finite;
    be->adam = timed_adam;
    be->accumulate_loss = timed_accumulate_loss;
    be->gather_batch = timed_gather_batch;
    be->advance_step = timed_advance_step;
    be->allreduce = timed_allreduce;
    be->loss_flag = timed_loss_flag;
    be->capture_begin = timed_capture_begin;
    be->copy = timed_copy;
    be->event_create = timed_event_create;
    be->event_record = timed_event_record;
    be->event_elapsed_ms = timed_event_elapsed_ms;
    be->event_destroy = timed_event_destroy;
    be->logsumexp_accumulate = timed_logsumexp_accumulate;
    be->logsumexp_merge = timed_logsumexp_merge;
    be->kl_unit_sums = timed_kl_unit_sums;
    be->iwae_weights = timed_iwae_weights;
    be->scale_rows = timed_scale_rows;
    be->iwae_backward = timed_iwae_backward;
    be->reconstruction_learned = timed_reconstruction_learned;
    be->softmax_xent = timed_softmax_xent;
    be->squared_error = timed_squared_error;
    be->memory_info = timed_memory_info;
}

/* The context with max_calls pairs of inner's events. */
static cv_status make_ctx(cv_backend *inner, int max_calls, timed_ctx **out, cv_err *err) {
    timed_ctx *t = calloc(1, sizeof *t);
    if (!t) return cv_fail(err, CV_ERR_NOMEM, "out of host memory for the timing backend");
    t->inner = inner;
    t->max_calls = max_calls;
    t->start = calloc((size_t)max_calls, sizeof *t->start);
    t->end = calloc((size_t)max_calls, sizeof *t->end);
    t->family = calloc((size_t)max_calls, sizeof *t->family);
    cv_status st = CV_OK;
    if (!t->start || !t->end || !t->family)
        st = cv_fail(err, CV_ERR_NOMEM, "out of host memory for the timing backend");
    for (int i = 0; !st && i < max_calls; i++) {
        st = inner->event_create(inner, &t->start[i], err);
        if (!st) st = inner->event_create(inner, &t->end[i], err);
    }
    if (st) {
        free_ctx(t);
        return st;
    }
    *out = t;
    return CV_OK;
}

cv_status cv_backend_timed_create(cv_backend *inner, int max_calls, cv_backend **out,
                                  cv_err *err) {
    CV_ASSERT(max_calls >= 1);
    *out = NULL;
    cv_backend *be = calloc(1, sizeof *be);
    if (!be) return cv_fail(err, CV_ERR_NOMEM, "out of host memory for the timing backend");
    timed_ctx *t = NULL;
    cv_status st = make_ctx(inner, max_calls, &t, err);
    if (st) {
        free(be);
        return st;
    }
    be->name = inner->name; /* it runs on inner's device, and callers may ask which */
    be->host_memory = inner->host_memory;
    be->precision = inner->precision;
    snprintf(be->description, sizeof be->description, "%s", inner->description);
    be->impl = t;
    fill_table(be);
    *out = be;
    return CV_OK;
}

cv_status cv_backend_timed_read(cv_backend *be, cv_family_stats *stats, cv_err *err) {
    timed_ctx *t = ctx_of(be);
    for (int i = 0; i < t->used; i++)
        stats[t->family[i]].ms +=
            t->inner->event_elapsed_ms(t->inner, t->start[i], t->end[i]);
    for (int f = 0; f < CV_FAMILY_COUNT; f++) {
        stats[f].bytes += t->pending[f].bytes;
        stats[f].flops += t->pending[f].flops;
        stats[f].calls += t->pending[f].calls;
    }
    memset(t->pending, 0, sizeof t->pending);
    t->used = 0;
    long long untimed = t->untimed;
    t->untimed = 0;
    if (untimed)
        return cv_fail(err, CV_ERR_USAGE,
                       "%lld calls went untimed: the timing backend times %d between reads",
                       untimed, t->max_calls);
    return CV_OK;
}
