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

#include "cvae/comm.h"
#include "cvae/status.h"

#ifdef __cplusplus
extern "C" {
#endif

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
    double grad_sq;          /* this step's squared global gradient norm */
} cv_step;

/* The learned conditional prior p(z|c) = N(m, diag exp(r)) of each row of a batch: with
 * class labels, rows labels[r] of the tables m and r (K, L); with per_row, m and r are
 * (rows, L), row r's own (M c and R c of condition vectors). A NULL cv_prior pointer
 * means the standard normal prior. */
typedef struct {
    const float *m, *r;
    bool per_row;
} cv_prior;

/* Gradients of the prior's m and r: of the tables, accumulated (+=) over the rows; with
 * per_row, of each row's own m and r (rows, L), written (=): activation gradients. */
typedef struct {
    float *m, *r;
    bool per_row;
} cv_prior_grad;

/* A data set in backend memory, as gather_batch reads it: the images as bytes or as
 * floats, and the condition as labels or as vectors (exactly one of each is set). */
typedef struct {
    uint8_t *pixels;    /* (n, dim) bytes, x = pixel / 255 */
    float *fpixels;     /* (n, dim) floats in [0, 1] */
    uint8_t *labels;    /* (n) class indices */
    float *conditions;  /* (n, cond_width) */
    int32_t *perm;      /* (n): the order batches are drawn in */
    int n, dim, cond_width;
    bool borrowed;      /* the four arrays above perm are the host split's own (a backend of
                           host memory uses them where they lie): not released with it */
} cv_device_split;

/* The loss sums of a run of steps (an epoch so far, or an evaluation), accumulated in
 * backend memory in double so that an epoch of rows adds up without losing digits. A
 * checkpoint saves them whole. */
typedef struct {
    double rec, kl;   /* sums of the per-sample reconstruction and KL terms */
    double rows;      /* rows summed */
    double grad_norm; /* sum of the steps' global gradient norms (before clipping) */
    double steps;     /* steps counted in grad_norm */
} cv_loss_sums;

typedef enum { CV_LIKELIHOOD_BERNOULLI = 0, CV_LIKELIHOOD_GAUSSIAN = 1 } cv_likelihood;

/* Adam with PyTorch's semantics, a learning-rate schedule (cv_lr_at) and optional
 * clipping of the global gradient norm. */
typedef struct {
    float lr, beta1, beta2, eps;
    int cosine;                        /* 0: constant after the warm-up */
    int64_t warmup_steps, total_steps; /* of the schedule */
    float clip_norm;                   /* 0: no clipping */
} cv_adam_config;

/* How GEMMs round their inputs (docs/design.md 2.7). Everything else (weights, Adam's
 * state, activations, the loss and every reduction) stays fp32 in every mode. */
typedef enum {
    CV_PRECISION_FP32 = 0,   /* plain fp32 products and sums */
    CV_PRECISION_TF32 = 1,   /* TF32 tensor cores (GPU only) */
    CV_PRECISION_BF16 = 2,   /* inputs rounded to bf16 (nearest even), fp32 sums and output */
    CV_PRECISION_TF32X3 = 3, /* 3xTF32: a = hi + lo split, hi*lo + lo*hi + hi*hi in fp32 */
} cv_precision;

#define CV_PRECISION_COUNT 4

typedef struct {
    cv_precision precision;
    /* the run's ranks (NULL: one process), whose sums allreduce takes */
    cv_comm *comm;
    /* the GPU: device `device` when device_chosen (--device cuda:N), else the rank's local
     * rank modulo the devices (device 0 in one process) */
    bool device_chosen;
    int device;
} cv_backend_options;

/* The precision opt asks for (fp32 for NULL); its name ("fp32", "tf32", "bf16",
 * "tf32x3", as --precision spells it) and one line on what it does. */
cv_precision cv_backend_options_precision(const cv_backend_options *opt);
const char *cv_precision_name(cv_precision p);
const char *cv_precision_describe(cv_precision p);

struct cv_backend {
    const char *name;     /* "cpu" or "cuda" */
    char description[256];/* what the user is told: device name, cores, memory */
    void *impl;           /* the backend's own context: handles, streams */
    cv_precision precision; /* how its GEMMs round their inputs */
    bool host_memory;       /* its memory is the host's (the CPU): a data set is used where it
                               lies, memory-mapped files included, never copied */

    void (*destroy)(cv_backend *be);

    /* memory */
    cv_status (*alloc)(cv_backend *be, void **ptr, size_t bytes, const char *what,
                       cv_err *err);
    void (*release)(cv_backend *be, void *ptr);
    void (*upload)(cv_backend *be, void *dst, const void *src, size_t bytes);
    void (*download)(cv_backend *be, void *dst, const void *src, size_t bytes);
    void (*zero)(cv_backend *be, void *dst, size_t bytes);

    /* C (m, n) = alpha * op(A) op(B) + beta * C, op(A) (m, k), op(B) (k, n). */
    void (*gemm)(cv_backend *be, bool trans_a, bool trans_b, int m, int n, int k,
                 float alpha, const float *a, int lda, const float *b, int ldb,
                 float beta, float *c, int ldc);

    /* Makes room for GEMMs whose op(A) and op(B) hold at most `elems` elements each, so
     * that gemm itself never allocates (a recorded step must not): the precisions that
     * round the operands (bf16, tf32x3) convert them into this room first. CV_ERR_NOMEM
     * when it cannot be had. Outside a recording, a larger gemm makes the room itself
     * (and aborts, with one line, if it cannot). cv_workspace_create calls it. */
    cv_status (*gemm_reserve)(cv_backend *be, size_t elems, cv_err *err);

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

    /* enc (rows, 2L) = [mu | s]; z (rows, L) = mu + exp(s/2) eps; kl (rows) per sample
     * against the prior (standard normal, or row r's prior, cv_prior); log_ratio (rows) =
     * log p(z|c) - log q(z|x,c), only when not NULL. With draw_eps, eps is first filled
     * (in the same pass) with elements first_row * L + (0 .. rows * L - 1) of the Philox
     * stream stream_base + (st ? st->step : 0) under seed; otherwise it is read as
     * given. */
    void (*reparam_forward)(cv_backend *be, const float *enc, float *eps, bool draw_eps,
                            uint64_t seed, uint64_t stream_base, const cv_step *st,
                            int first_row, const cv_prior *prior, const int32_t *labels,
                            float *z, float *kl, float *log_ratio, int rows, int latent);

    /* denc (rows, 2L) = gradient of sum_r (dz[r] . z[r] + kl_scale * kl[r]); with a
     * learned prior, its table gradients are added into dprior too. Free bits: with
     * unit_kl (L, device) given, unit j's KL term has no gradient (for mu, s or the prior)
     * when unit_kl[j], its KL summed over the batch (kl_unit_sums), is below kl_floor. */
    void (*reparam_backward)(cv_backend *be, const float *enc, const float *eps,
                             const float *dz, float kl_scale, const float *unit_kl,
                             float kl_floor, const cv_prior *prior, const int32_t *labels,
                             cv_prior_grad *dprior, float *denc, int rows, int latent);

    /* z (rows, L) <- m + exp(r / 2) z with row r's prior (cv_prior): standard normal
     * draws to draws from the learned prior (nothing for the standard prior). */
    void (*prior_transform)(cv_backend *be, const cv_prior *prior, const int32_t *labels,
                            float *z, int rows, int latent);

    /* rec (rows) = sum over cols of the negative log-likelihood (Bernoulli, or Gaussian
     * with mean sigmoid(l) and standard deviation sigma); dlogits = grad_scale * its
     * gradient when dlogits is not NULL (one pass). */
    void (*reconstruction)(cv_backend *be, cv_likelihood likelihood, float sigma,
                           const float *logits, const float *x, float *rec, float *dlogits,
                           float grad_scale, int rows, int cols);

    /* out (rows, cols) ~ N(0, 1): row r is elements 0..cols-1 of the Philox stream
     * first_stream + r under seed, so a row's draws do not depend on the batch it is in. */
    void (*normal)(cv_backend *be, float *out, int rows, int cols, uint64_t seed,
                   uint64_t first_stream);

    /* pixels (rows, cols) from logits: mean = round(255 sigmoid(l)); otherwise a draw
     * from the likelihood (Bernoulli as 0 or 255; Gaussian as round(255 clamp(p + sigma n,
     * 0, 1))) with element j of the Philox stream first_stream + r. */
    void (*pixels_from_logits)(cv_backend *be, cv_likelihood likelihood, float sigma,
                               const float *logits, int rows, int cols, bool mean,
                               uint64_t seed, uint64_t first_stream, uint8_t *pixels);

    /* st->grad_sq = the squared norm of grads (n), and flags the step in st when rec, kl
     * (rows) hold a NaN or Inf, or grads an element that is NaN, Inf or too large for
     * Adam's float state (|g| >= 2^63, CV_GRAD_LIMIT in cv_math.h): st->skip,
     * st->nonfinite_steps, and the first bad step and gradient index. Past
     * st->allowed_nonfinite such steps it sets st->halted, and every later step is skipped
     * (not counted), so the model stays as it was when the limit was crossed. */
    void (*check_finite)(cv_backend *be, const float *rec, const float *kl, int rows,
                         const float *grads, size_t n, cv_step *st);

    /* One Adam step (PyTorch semantics) over the whole buffer, t = st->step + 1, at the
     * schedule's learning rate for that step, the gradient scaled to cfg->clip_norm when
     * st->grad_sq says it is longer; nothing when st->skip. */
    void (*adam)(cv_backend *be, float *params, const float *grads, float *m, float *v,
                 size_t n, const cv_adam_config *cfg, const cv_step *st);

    /* sums->rec += sum of rec, sums->kl += sum of kl, sums->rows += rows, and with st:
     * sums->grad_norm += sqrt(st->grad_sq), sums->steps += 1 (sums in backend memory);
     * nothing when st is not NULL and st->skip. */
    void (*accumulate_loss)(cv_backend *be, cv_loss_sums *sums, const float *rec, const float *kl,
                            int rows, const cv_step *st);

    /* Row r is row first + r of the step's batch, image perm[st->start + first + r] of
     * src: x (rows, dim) its values (pixel / 255, or the float), and labels_out[r] its
     * label or cond_out (rows, cond_width) its condition vector, as src holds. With
     * binarize, x is instead a Bernoulli(value) draw as 0 or 1, from element
     * (first + r) * dim + j of the uniform stream CV_STREAM_BINARIZE(st->step) under seed
     * (first: the rank's offset into the batch, 0 in one process). */
    void (*gather_batch)(cv_backend *be, const cv_device_split *src, const cv_step *st,
                         int first, int rows, bool binarize, uint64_t seed, float *x,
                         int32_t *labels_out, float *cond_out);

    /* st->step += 1, st->start += rows, st->skip = 0 (st in backend memory). */
    void (*advance_step)(cv_backend *be, cv_step *st, int rows);

    /* Data parallelism (cvae/comm.h). buf (n floats) = its sum over the run's ranks, in
     * order with the other operations (nothing in one process). */
    void (*allreduce)(cv_backend *be, float *buf, size_t n);
    /* *flag = 0 when every rec and kl (rows, possibly 0) is finite, else NaN: summed over
     * the ranks with the gradient, it makes every rank see any rank's bad loss. */
    void (*loss_flag)(cv_backend *be, const float *rec, const float *kl, int rows,
                      float *flag);

    /* Recording a sequence of operations once and replaying it. capture_begin returns
     * false when the backend has no such thing (the CPU): the caller then just runs the
     * operations. Between begin and end, operations are recorded, not run. */
    bool (*capture_begin)(cv_backend *be);
    void *(*capture_end)(cv_backend *be);
    void (*replay)(cv_backend *be, void *recording);
    void (*recording_free)(cv_backend *be, void *recording);

    /* dst = src, bytes within the backend's memory, in order with the other operations
     * (no wait for it to finish). */
    void (*copy)(cv_backend *be, void *dst, const void *src, size_t bytes);

    /* Timing. Recording an event marks the end of the work queued so far, without
     * waiting; it takes its time when that work is done (at once on the CPU, whose
     * operations finish before they return; on a GPU when its stream gets there).
     * elapsed_ms waits for `end` and gives the milliseconds from `start` to `end`. Record
     * no event between capture_begin and capture_end. */
    cv_status (*event_create)(cv_backend *be, void **event, cv_err *err);
    void (*event_record)(cv_backend *be, void *event);
    double (*event_elapsed_ms)(cv_backend *be, void *start, void *end);
    void (*event_destroy)(cv_backend *be, void *event);

    /* Evaluation: running log-sum-exps per row, in double, in backend memory, so that an
     * IWAE estimate over thousands of importance samples needs no host round trip per
     * sample. A state (max, sum) (rows each) stands for log sum_k exp(x_k) = max + log(sum);
     * reset first makes it the empty sum (-inf, 0). Adding x (cv_lse_add in cv_math.h):
     * x = -inf adds nothing, +inf makes the sum +inf, a NaN makes it NaN. Rows are
     * independent, so the result does not depend on how the rows are split. */

    /* x[r] = -rec[r] + log_ratio[r] (one importance sample's log weight, in double) is
     * added into (lse_max[r], lse_sum[r]). */
    void (*logsumexp_accumulate)(cv_backend *be, double *lse_max, double *lse_sum,
                                 const float *rec, const float *log_ratio, int rows,
                                 bool reset);

    /* x[r] = log_prior + (src_max[r] + log(src_sum[r]) - log_count), the log-mean of a
     * finished state over its count of terms (log_count = log(count)) plus log_prior, is
     * added into (dst_max[r], dst_sum[r]): the marginal's sum over classes. */
    void (*logsumexp_merge)(cv_backend *be, double *dst_max, double *dst_sum,
                            const double *src_max, const double *src_sum, double log_count,
                            double log_prior, int rows, bool reset);

    /* ---- training objectives (docs/design.md 1.6) ---- */

    /* out (L) = each latent unit's KL against the row's prior (as reparam_forward takes
     * it), summed over the rows in row order: what free bits compare with their floor. */
    void (*kl_unit_sums)(cv_backend *be, const float *enc, const cv_prior *prior,
                         const int32_t *labels, int rows, int latent, float *out);

    /* The IWAE objective over `samples` draws of each of `rows` images, stored sample by
     * sample (row k * rows + b is draw k of image b): w (samples * rows) = the normalised
     * importance weights of each image's log weights -rec + beta * log_ratio, and
     * loss (rows) = -log of their mean (cv_iwae_weights). */
    void (*iwae_weights)(cv_backend *be, const float *rec, const float *log_ratio, float beta,
                         int rows, int samples, float *w, float *loss);

    /* x (rows, cols): row r *= w[r]. */
    void (*scale_rows)(cv_backend *be, float *x, const float *w, int rows, int cols);

    /* The IWAE objective's gradient with respect to each image's [mu | s] and the prior:
     * denc (rows, 2L) = the gradient of sum over draws of w * (-beta * (log p(z) -
     * log q(z))) / B plus dz (samples * rows, L, the decoder's, already weighted) through
     * z = mu + exp(s/2) eps, with eps (samples * rows, L) and w (samples * rows) stored as
     * iwae_weights takes them, kl_scale = beta / B; the prior's gradients into dprior as
     * reparam_backward adds them (tables +=, per row =). */
    void (*iwae_backward)(cv_backend *be, const float *enc, const float *eps, const float *dz,
                          const float *w, int samples, float kl_scale, const cv_prior *prior,
                          const int32_t *labels, cv_prior_grad *dprior, float *denc, int rows,
                          int latent);

    /* The Gaussian likelihood with the learned standard deviation exp(log_sigma[0])
     * (device; its log-variance 2 log sigma clamped to [-30, 30]): rec as reconstruction;
     * with dlogits, dlogits = grad_scale * the gradient and dsigma (rows) = grad_scale *
     * each row's gradient with respect to log sigma. */
    void (*reconstruction_learned)(cv_backend *be, const float *log_sigma, const float *logits,
                                   const float *x, float *rec, float *dlogits, float *dsigma,
                                   float grad_scale, int rows, int cols);

    /* cvae score's heads. Softmax cross-entropy: loss (rows) = logsumexp(l) - l[label],
     * dlogits (rows, classes, when not NULL) = grad_scale * (softmax - onehot). Squared
     * error: loss (rows) = sum_j (out - target)^2 / 2, dout = grad_scale * (out - target). */
    void (*softmax_xent)(cv_backend *be, const float *logits, const int32_t *labels,
                         float *loss, float *dlogits, float grad_scale, int rows, int classes);
    void (*squared_error)(cv_backend *be, const float *out, const float *target, float *loss,
                          float *dout, float grad_scale, int rows, int cols);

    /* The device's memory: what a new allocation may still take, and all of it, in bytes
     * (the CPU: MemAvailable and MemTotal). */
    void (*memory_info)(cv_backend *be, size_t *free_bytes, size_t *total_bytes);
};

cv_status cv_backend_cpu_create(cv_backend **out, cv_err *err);

/* The CPU backend with options: fp32, or the bf16 and tf32x3 emulations (the reference
 * the GPU's are tested against); tf32 is a usage error. */
cv_status cv_backend_cpu_create_with(const cv_backend_options *opt, cv_backend **out,
                                     cv_err *err);

/* The CUDA backend; CV_ERR_DEVICE when it was not built or no GPU is usable. */
cv_status cv_backend_cuda_create(const cv_backend_options *opt, cv_backend **out,
                                 cv_err *err);
bool cv_backend_cuda_available(void);

/* "auto", "cpu", "cuda" or "cuda:N"; auto picks the GPU when one is usable, and otherwise
 * the CPU with the reason appended to its description; cuda is GPU 0, or in a data-parallel
 * run the GPU of the rank's index on its machine modulo their count; cuda:N is GPU N. opt
 * may be NULL. TF32 on the CPU is a usage error (bf16 and tf32x3 run on both). */
cv_status cv_backend_open(const char *device, const cv_backend_options *opt,
                          cv_backend **out, cv_err *err);

/* N of a device "cuda:N" (N in 0..255), or -1 for any other string. */
int cv_backend_cuda_index(const char *device);

#ifdef __cplusplus
}
#endif

#endif
