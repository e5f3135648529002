/* cv_cuda.h: the CUDA kernels' launchers, callable from C (backend_cuda.c), and the
 * checks every CUDA, cuBLASLt and cuRAND call goes through.
 *
 * Each launcher runs its kernel on the given stream and checks the launch; shapes and
 * semantics are those of the matching operation in include/cvae/backend.h. No kernel
 * assumes a size that is a multiple of its block size.
 */
#ifndef CV_CUDA_H
#define CV_CUDA_H

#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "cvae/backend.h"

/* One body for every library's status type: the failing statement, file, line, device. */
#define CV_CHECK_STATUS(call, type, ok, describe)                                          \
    do {                                                                                   \
        type cv_status_ = (call);                                                          \
        if (cv_status_ != (ok)) {                                                          \
            int cv_dev_ = -1;                                                              \
            cudaGetDevice(&cv_dev_);                                                       \
            fprintf(stderr, "cvae: %s failed at %s:%d on device %d: %s\n", #call, __FILE__, \
                    __LINE__, cv_dev_, describe(cv_status_));                              \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

#define CV_CUDA_CHECK(call) CV_CHECK_STATUS(call, cudaError_t, cudaSuccess, cudaGetErrorString)
#define CV_CUBLASLT_CHECK(call) \
    CV_CHECK_STATUS(call, cublasStatus_t, CUBLAS_STATUS_SUCCESS, cublasLtGetStatusString)

/* The kernels' device scratch, one per backend, allocated with it (cuda_setup): nothing is
 * allocated later, so a step can be captured in a CUDA graph at its first call. Calls on
 * the backend's one stream use it in turn. The setup zeroes its first CV_SCRATCH_ZEROED
 * bytes (the flags and tickets), and every kernel leaves them zero again when it ends.
 *
 * Column sums in slabs (bias_act_backward, the prior's table gradient; cv_colsum.cuh):
 * each block writes the partial sums of its slab of rows to `part`, takes a ticket for
 * its column tile, and the tile's last block adds the slabs in slab order. The slab
 * count is cut until the partials fit in CV_SCRATCH_FLOATS floats and the blocks in
 * CV_SCRATCH_BLOCKS; a shape with more than CV_SCRATCH_TILES column tiles uses one
 * slab, so these bounds only limit parallelism, never the shapes that work. */
#define CV_CHECK_MAX_BLOCKS 1024
#define CV_SCRATCH_TILES 4096
#define CV_SCRATCH_BLOCKS 32768
#define CV_SCRATCH_FLOATS (8u << 20) /* 32 MiB */
typedef struct {
    /* the non-finite check: 0 when all is finite, else the bitwise complement of the
     * smallest bad code (0 the loss, 1 + i gradient element i), kept by atomicMax */
    unsigned long long bad;
    unsigned int check_ticket;         /* the check's blocks that are done */
    unsigned int tickets[CV_SCRATCH_TILES]; /* a column tile's slabs that are done */
    /* the rest needs no initial value */
    double partial[CV_CHECK_MAX_BLOCKS];      /* the check's per-block sums of squares */
    unsigned int present[CV_SCRATCH_BLOCKS][8]; /* classes present in each (tile, slab) */
    float part[CV_SCRATCH_FLOATS];            /* slab partial sums */
} cv_scratch;
#define CV_SCRATCH_ZEROED offsetof(cv_scratch, partial)

#ifdef __cplusplus
extern "C" {
#endif

/* cudaMalloc as a status: out of GPU memory says what needed how much (CV_ERR_NOMEM),
 * any other failure names the device unusable (CV_ERR_DEVICE); never aborts. */
cv_status cv_cuda_malloc(void **ptr, size_t bytes, const char *what, cv_err *err);

void cv_bias_act_forward_cuda(float *y, const float *bias, const float *cond,
                              const int32_t *labels, int rows, int cols, bool relu,
                              cudaStream_t stream);
void cv_bias_act_backward_cuda(float *dy, const float *y, float *dbias, float *dcond,
                               const int32_t *labels, int rows, int cols, bool relu,
                               cv_scratch *scratch, cudaStream_t stream);
void cv_reparam_forward_cuda(const float *enc, float *eps, bool draw_eps, uint64_t seed,
                             uint64_t stream_base, const cv_step *st, int first_row,
                             const cv_prior *prior, const int32_t *labels, float *z, float *kl,
                             float *log_ratio, int rows, int latent, cudaStream_t stream);
void cv_reparam_backward_cuda(const float *enc, const float *eps, const float *dz,
                              float kl_scale, const float *unit_kl, float kl_floor,
                              const cv_prior *prior, const int32_t *labels,
                              cv_prior_grad *dprior, float *denc, int rows, int latent,
                              cv_scratch *scratch, cudaStream_t stream);
void cv_prior_transform_cuda(const cv_prior *prior, const int32_t *labels, float *z, int rows,
                             int latent, cudaStream_t stream);
void cv_normal_cuda(float *out, int rows, int cols, uint64_t seed, uint64_t first_stream,
                    cudaStream_t stream);
void cv_pixels_from_logits_cuda(cv_likelihood likelihood, float sigma, const float *logits,
                                int rows, int cols, bool mean, uint64_t seed,
                                uint64_t first_stream, uint8_t *pixels, cudaStream_t stream);
void cv_reconstruction_cuda(cv_likelihood likelihood, float sigma, const float *logits,
                            const float *x, float *rec, float *dlogits, float grad_scale,
                            int rows, int cols, cudaStream_t stream);
void cv_adam_cuda(float *p, const float *g, float *m, float *v, size_t n,
                  const cv_adam_config *cfg, const cv_step *st, cudaStream_t stream);
void cv_accumulate_loss_cuda(cv_loss_sums *sums, const float *rec, const float *kl, int rows,
                             const cv_step *st, cudaStream_t stream);
void cv_check_finite_cuda(const float *rec, const float *kl, int rows, const float *grads,
                          size_t n, cv_step *st, cv_scratch *scratch, cudaStream_t stream);
void cv_gather_batch_cuda(const cv_device_split *src, const cv_step *st, int first, int rows,
                          bool binarize, uint64_t seed, float *x, int32_t *labels_out,
                          float *cond_out, cudaStream_t stream);
void cv_loss_flag_cuda(const float *rec, const float *kl, int rows, float *flag,
                       cudaStream_t stream);
void cv_advance_step_cuda(cv_step *st, int rows, cudaStream_t stream);
void cv_logsumexp_accumulate_cuda(double *lse_max, double *lse_sum, const float *rec,
                                  const float *log_ratio, int rows, bool reset,
                                  cudaStream_t stream);
void cv_logsumexp_merge_cuda(double *dst_max, double *dst_sum, const double *src_max,
                             const double *src_sum, double log_count, double log_prior,
                             int rows, bool reset, cudaStream_t stream);

/* The training objectives' operations (objectives.cu): free bits' per-unit KL sums, the
 * IWAE objective's weights, row scaling and latent gradient, the Gaussian likelihood with a
 * learned sigma, and cvae score's heads. */
void cv_kl_unit_sums_cuda(const float *enc, const cv_prior *prior, const int32_t *labels,
                          int rows, int latent, float *out, cudaStream_t stream);
void cv_iwae_weights_cuda(const float *rec, const float *log_ratio, float beta, int rows,
                          int samples, float *w, float *loss, cudaStream_t stream);
void cv_scale_rows_cuda(float *x, const float *w, int rows, int cols, cudaStream_t stream);
void cv_iwae_backward_cuda(const float *enc, const float *eps, const float *dz, const float *w,
                           int samples, float kl_scale, const cv_prior *prior,
                           const int32_t *labels, cv_prior_grad *dprior, float *denc, int rows,
                           int latent, cv_scratch *scratch, cudaStream_t stream);
void cv_reconstruction_learned_cuda(const float *log_sigma, const float *logits, const float *x,
                                    float *rec, float *dlogits, float *dsigma, float grad_scale,
                                    int rows, int cols, cudaStream_t stream);
void cv_softmax_xent_cuda(const float *logits, const int32_t *labels, float *loss,
                          float *dlogits, float grad_scale, int rows, int classes,
                          cudaStream_t stream);
void cv_squared_error_cuda(const float *out, const float *target, float *loss, float *dout,
                           float grad_scale, int rows, int cols, cudaStream_t stream);

/* The GEMM operand conversions (precision.cu): two column-major float matrices (element
 * (i, j) at src[i + j * ld]) packed into scratch with leading dimension rows, in one
 * launch. bf16: each element's bf16 bits (cv_bf16_bits); tf32x3: its TF32 hi and lo
 * parts (cv_split_tf32). */
void cv_round_bf16_cuda(const float *a, int a_rows, int a_cols, int lda, uint16_t *a_out,
                        const float *b, int b_rows, int b_cols, int ldb, uint16_t *b_out,
                        cudaStream_t stream);
void cv_split_tf32_cuda(const float *a, int a_rows, int a_cols, int lda, float *a_hi,
                        float *a_lo, const float *b, int b_rows, int b_cols, int ldb,
                        float *b_hi, float *b_lo, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

/* Blocks for n items at `threads` per block, capped so grid-stride loops cover the rest. */
#define CV_BLOCKS(n, threads) \
    ((unsigned)(((size_t)(n) + (threads) - 1) / (threads) < 65535 * 16 ? ((size_t)(n) + (threads) - 1) / (threads) : 65535 * 16))

#endif
