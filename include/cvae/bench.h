/* bench.h: `cvae bench` as a library call: how fast a training step runs on a device, and
 * where its time goes.
 *
 * Three parts: what each backend operation costs (bytes moved and floating-point
 * operations, counted from its shapes), a timing backend that forwards every operation to
 * a real one and times each kernel call by family, and the benchmark itself, which sets
 * the step's time against two measured ceilings: the device's copy bandwidth and a large
 * GEMM's rate.
 */
#ifndef CVAE_BENCH_H
#define CVAE_BENCH_H

#include <stdbool.h>
#include <stddef.h>

#include "cvae/backend.h"
#include "cvae/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The kernel families a training step's time is split into. */
typedef enum {
    CV_FAMILY_GEMM,
    CV_FAMILY_BIAS_ACT_FORWARD,
    CV_FAMILY_BIAS_ACT_BACKWARD,
    CV_FAMILY_REPARAM_FORWARD,
    CV_FAMILY_REPARAM_BACKWARD,
    CV_FAMILY_RECONSTRUCTION,
    CV_FAMILY_ADAM,
    CV_FAMILY_CHECK_ACCUMULATE, /* check_finite, accumulate_loss and loss_flag */
    CV_FAMILY_GATHER,
    CV_FAMILY_ALLREDUCE, /* the gradient's sum over the ranks of a data-parallel run */
    CV_FAMILY_OTHER, /* zero, advance_step, copy, normal, prior_transform, pixels_from_logits,
                        logsumexp_accumulate, logsumexp_merge */
    CV_FAMILY_COUNT
} cv_op_family;

/* "gemm", "bias_act_forward", ...: the names the report and its JSON use. */
const char *cv_op_family_name(cv_op_family family);

/* GEMMs are rated in FLOP/s against the GEMM ceiling, every other family in bytes/s
 * against the copy ceiling. */
bool cv_op_family_is_flops(cv_op_family family);

/* What one call of an operation costs: bytes read plus bytes written, as an ideal kernel
 * moves them (src/host/backend/op_cost.c says how they are counted), and floating-point operations
 * (GEMMs only: 2 m n k). */
typedef struct {
    double bytes, flops;
} cv_op_cost;

/* C (m, n) = op(A) (m, k) op(B) (k, n), reading C first when beta is not 0. */
cv_op_cost cv_cost_gemm(int m, int n, int k, bool reads_c);
cv_op_cost cv_cost_bias_act_forward(int rows, int cols, bool cond);
cv_op_cost cv_cost_bias_act_backward(int rows, int cols, bool relu, bool dcond);
cv_op_cost cv_cost_reparam_forward(int rows, int latent, bool draw_eps, bool prior,
                                   bool log_ratio);
cv_op_cost cv_cost_reparam_backward(int rows, int latent, bool prior);
cv_op_cost cv_cost_prior_transform(int rows, int latent, bool prior);
cv_op_cost cv_cost_reconstruction(int rows, int cols, bool grad);
cv_op_cost cv_cost_normal(int rows, int cols);
cv_op_cost cv_cost_pixels_from_logits(int rows, int cols);
cv_op_cost cv_cost_check_finite(int rows, size_t n);
cv_op_cost cv_cost_accumulate_loss(int rows);
cv_op_cost cv_cost_adam(size_t n);
cv_op_cost cv_cost_gather_batch(int rows, int dim, bool float_pixels, int cond_width);
/* n floats summed in place: read and written once (what the ranks send each other is the
 * transport's, not counted) */
cv_op_cost cv_cost_allreduce(size_t n);
cv_op_cost cv_cost_zero(size_t bytes);
cv_op_cost cv_cost_copy(size_t bytes);
cv_op_cost cv_cost_logsumexp_accumulate(int rows, bool reset);
cv_op_cost cv_cost_logsumexp_merge(int rows, bool reset);

/* The calls of one family: their summed time, bytes, FLOPs and count. */
typedef struct {
    double ms, bytes, flops, calls;
} cv_family_stats;

/* A backend that forwards every operation to `inner` and times each kernel call (every
 * operation but memory management, host transfers and events) with inner's events,
 * recorded before and after the call and read only by cv_backend_timed_read, so nothing
 * waits between operations. Up to max_calls calls are timed between two reads. It records
 * no steps (capture_begin returns false), so a step through it runs eagerly, one call at a
 * time. inner must outlive it; its destroy frees the timing backend only. */
cv_status cv_backend_timed_create(cv_backend *inner, int max_calls, cv_backend **out,
                                  cv_err *err);

/* Waits for the calls made since the last read and adds their times, bytes, FLOPs and
 * counts to stats[family] (CV_FAMILY_COUNT entries). CV_ERR_USAGE when more than
 * max_calls calls were made: those were run but not timed. */
cv_status cv_backend_timed_read(cv_backend *timed, cv_family_stats *stats, cv_err *err);

typedef struct {
    const char *device;         /* auto, cpu or cuda */
    cv_backend_options backend; /* the precision */
    const char *precision;      /* its name, for the report */
    int n_hidden;
    int hidden[CV_MAX_HIDDEN];
    int latent, batch, classes;
    int dim;   /* pixels per image: an H x W image with H*W = dim, as square as dim allows */
    int steps; /* timed steps, after the warm-up */
} cv_bench_options;

typedef struct {
    char device[256];  /* the backend's description */
    int height, width; /* of the synthetic images */
    size_t n_params;

    /* the ceilings, each the best of several runs */
    double copy_bytes; /* the buffer copied within the device's memory */
    double copy_gbs;   /* its bytes read + written per second, / 1e9 */
    int gemm_n;        /* an n x n x n GEMM through the backend's gemm */
    double gemm_tflops;

    /* the whole step as cvae train runs it: median over `steps` steps */
    double step_ms;
    bool step_replayed; /* a recorded step (a CUDA graph) was replayed; otherwise eager */
    double samples_per_s;

    /* per family and step, from `steps` eager steps through the timing backend: the
     * median time, and the bytes, FLOPs and calls of one step */
    cv_family_stats family[CV_FAMILY_COUNT];
    double eager_ms; /* the sum of the families' times */
    int steps;
} cv_bench_result;

/* The defaults of `cvae bench`: the default model (hidden 400, latent 20, 10 classes,
 * 28 x 28 images), batch 128, fp32, device auto, 200 steps. */
cv_bench_options cv_bench_defaults(void);

/* H x W = dim with H the largest divisor of dim not above its square root (1 x dim for a
 * prime). */
void cv_bench_image_shape(int dim, int *height, int *width);

/* Measures the ceilings, then the step on synthetic data of opt's shape. CV_ERR_USAGE for
 * a shape the model cannot take, as cv_backend_open's errors for the device. */
cv_status cv_bench_run(const cv_bench_options *opt, cv_bench_result *res, cv_err *err);

/* A family's achieved rate per step: TFLOP/s for GEMMs, GB/s otherwise (0 when it took
 * no time), and that as a percentage of its ceiling. */
double cv_bench_rate(const cv_bench_result *res, cv_op_family family);
double cv_bench_ceiling_pct(const cv_bench_result *res, cv_op_family family);

#ifdef __cplusplus
}
#endif

#endif
