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
     * log_ratio (rows) = log p(z) - log q(z|x), only when not NULL. */
    void (*reparam_forward)(cv_backend *be, const float *enc, const float *eps, float *z,
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

    /* out[i] ~ N(0, 1): element i of the Philox stream (seed, stream). */
    void (*normal)(cv_backend *be, float *out, size_t n, uint64_t seed, uint64_t stream);

    /* One Adam step (PyTorch semantics) over the whole buffer; t counts from 1. */
    void (*adam)(cv_backend *be, float *params, const float *grads, float *m, float *v,
                 size_t n, float lr, float beta1, float beta2, float eps, int64_t t);

    /* acc[0] += sum of values[0..n) (acc is one double in device memory). */
    void (*accumulate)(cv_backend *be, double *acc, const float *values, int n);

    /* x (rows, dim) = pixels[perm[start + r]] / 255, labels_out[r] = labels[...]. */
    void (*gather_batch)(cv_backend *be, const uint8_t *pixels, const uint8_t *labels,
                         const int32_t *perm, int start, int rows, int dim, float *x,
                         int32_t *labels_out);
};

cv_status cv_backend_cpu_create(cv_backend **out, cv_err *err);

/* The CUDA backend; CV_ERR_DEVICE when it was not built or no GPU is usable. */
cv_status cv_backend_cuda_create(cv_backend **out, cv_err *err);
bool cv_backend_cuda_available(void);

/* "auto", "cpu" or "cuda"; auto picks the GPU when one is usable. */
cv_status cv_backend_open(const char *device, cv_backend **out, cv_err *err);

#endif
