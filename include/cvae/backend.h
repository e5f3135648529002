/* backend.h: the table of operations the model is written over.
 *
 * The model and the training loop see only these. Pointers marked (device) live in the
 * backend's memory (host memory for the CPU backend). Matrices are row-major; a layer's
 * weight is (out, in) like nn.Linear. Shapes are given in comments as (rows, cols).
 * Gradient rule: operations accumulate (+=) into parameter gradients and overwrite (=)
 * activation gradients.
 */
#ifndef CVAE_BACKEND_H
#define CVAE_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cvae/status.h"

typedef struct cv_backend cv_backend;

/* The per-step values the step's operations read, kept in backend memory so that a
 * captured step (a CUDA graph) replays unchanged: advance_step moves it on. */
typedef struct {
    int64_t step;            /* optimiser steps taken: Adam's t - 1, the noise stream */
    int32_t start;           /* first row of this step's batch in the epoch's order */
    int32_t skip;            /* this step's loss or gradient is not finite: no update */
    int64_t nonfinite_steps; /* steps skipped so far */
    int64_t first_bad_step;  /* the first such step, or -1 */
    int64_t first_bad_index; /* its first non-finite gradient element, or -1: the loss */
    int64_t allowed_nonfinite; /* more than this many bad steps halts training */
    int32_t halted;          /* set once they are exceeded: every later step is skipped */
    int32_t unused;
} cv_step;

typedef struct {
    bool tf32; /* let cuBLAS use TF32 tensor cores (CUDA only) */
} cv_backend_options;

struct cv_backend {
    const char *name;     /* "cpu" or "cuda" */
    char description[256];/* what the user is told: device name, cores, memory */
    void *impl;           /* the backend's own context: handles, streams */

    void (*destroy)(cv_backend *be);

    /* memory */
    cv_status (*alloc)(cv_backend *be, void **ptr, size_t bytes, const char *what,
                       cv_err *err);
    void (*release)(cv_backend *be, void *ptr);
    void (*upload)(cv_backend *be, void *dst, const void *src, size_t bytes);
    void (*download)(cv_backend *be, void *dst, const void *src, size_t bytes);
    void (*zero)(cv_backend *be, void *dst, size_t bytes);
    void (*synchronize)(cv_backend *be);

    /* C (m, n) = alpha * op(A) op(B) + beta * C, op(A) (m, k), op(B) (k, n). */
    void (*gemm)(cv_backend *be, bool trans_a, bool trans_b, int m, int n, int k,
                 float alpha, const float *a, int lda, const float *b, int ldb,
                 float beta, float *c, int ldc);

    /* y (rows, cols) = act(y + bias + cond[labels[r]]); cond (classes, cols) may be NULL.
     * This is the condition column of the layer's weight, gathered instead of a one-hot
     * GEMM. */
    void (*bias_act_forward)(cv_backend *be, float *y, const float *bias,
                             const float *cond, const int32_t *labels, int rows,
                             int cols, bool relu);

    /* dy (rows, cols) *= relu'(y) when relu; dbias += sum over rows of dy;
     * dcond[labels[r]] += dy[r] when dcond is not NULL. */
    void (*bias_act_backward)(cv_backend *be, float *dy, const float *y, float *dbias,
                              float *dcond, const int32_t *labels, int rows, int cols,
                              bool relu);

    /* enc (rows, 2L) = [mu | s]; z (rows, L) = mu + exp(s/2) eps; kl (rows) per sample;
     * log_ratio (rows) = log p(z) - log q(z|x), only when not NULL. With draw_eps, eps is
     * first filled (in the same pass) with elements of the Philox stream
     * stream_base + (st ? st->step : 0) under seed; otherwise it is read as given. */
    void (*reparam_forward)(cv_backend *be, const float *enc, float *eps, bool draw_eps,
                            uint64_t seed, uint64_t stream_base, const cv_step *st, float *z,
                            float *kl, float *log_ratio, int rows, int latent);

    /* denc (rows, 2L) = gradient of sum_r (dz[r] . z[r] + kl_scale * kl[r]). */
    void (*reparam_backward)(cv_backend *be, const float *enc, const float *eps,
                             const float *dz, float kl_scale, float *denc, int rows,
                             int latent);

    /* rec (rows) = sum over cols of the Bernoulli NLL; dlogits = grad_scale *
     * (sigmoid(l) - x) when dlogits is not NULL (one pass). */
    void (*bernoulli_xent)(cv_backend *be, const float *logits, const float *x,
                           float *rec, float *dlogits, float grad_scale, int rows,
                           int cols);

    /* out (rows, cols) ~ N(0, 1): row r is elements 0..cols-1 of the Philox stream
     * first_stream + r under seed, so a row's draws do not depend on the batch it is in. */
    void (*normal)(cv_backend *be, float *out, int rows, int cols, uint64_t seed,
                   uint64_t first_stream);

    /* pixels (rows, cols) from logits: mean = round(255 sigmoid(l)); otherwise a Bernoulli
     * draw as 0 or 255 with the uniform of element j of stream first_stream + r. */
    void (*pixels_from_logits)(cv_backend *be, const float *logits, int rows, int cols,
                               bool mean, uint64_t seed, uint64_t first_stream,
                               uint8_t *pixels);

    /* Flags the step in st when rec, kl (rows) or grads (n) hold a NaN or Inf: st->skip,
     * st->nonfinite_steps, and the first bad step and gradient index. Past
     * st->allowed_nonfinite such steps it sets st->halted, and every later step is skipped
     * (not counted), so the model stays as it was when the limit was crossed. */
    void (*check_finite)(cv_backend *be, const float *rec, const float *kl, int rows,
                         const float *grads, size_t n, cv_step *st);

    /* One Adam step (PyTorch semantics) over the whole buffer, t = st->step + 1; nothing
     * when st->skip. */
    void (*adam)(cv_backend *be, float *params, const float *grads, float *m, float *v,
                 size_t n, float lr, float beta1, float beta2, float eps, const cv_step *st);

    /* sums[0] += sum of rec, sums[1] += sum of kl, sums[2] += rows (sums: 3 doubles in
     * device memory); nothing when st is not NULL and st->skip. */
    void (*accumulate_loss)(cv_backend *be, double *sums, const float *rec, const float *kl,
                            int rows, const cv_step *st);

    /* x (rows, dim) = pixels[perm[st->start + r]] / 255, labels_out[r] = labels[...]. */
    void (*gather_batch)(cv_backend *be, const uint8_t *pixels, const uint8_t *labels,
                         const int32_t *perm, const cv_step *st, int rows, int dim, float *x,
                         int32_t *labels_out);

    /* st->step += 1, st->start += rows, st->skip = 0 (st in backend memory). */
    void (*advance_step)(cv_backend *be, cv_step *st, int rows);

    /* Recording a sequence of operations once and replaying it. capture_begin returns
     * false when the backend has no such thing (the CPU): the caller then just runs the
     * operations. Between begin and end, operations are recorded, not run. */
    bool (*capture_begin)(cv_backend *be);
    void *(*capture_end)(cv_backend *be);
    void (*replay)(cv_backend *be, void *recording);
    void (*recording_free)(cv_backend *be, void *recording);
};

cv_status cv_backend_cpu_create(cv_backend **out, cv_err *err);

/* The CUDA backend; CV_ERR_DEVICE when it was not built or no GPU is usable. */
cv_status cv_backend_cuda_create(const cv_backend_options *opt, cv_backend **out,
                                 cv_err *err);
bool cv_backend_cuda_available(void);

/* "auto", "cpu" or "cuda"; auto picks the GPU when one is usable. opt may be NULL. TF32
 * on the CPU is a usage error. */
cv_status cv_backend_open(const char *device, const cv_backend_options *opt,
                          cv_backend **out, cv_err *err);

#endif
