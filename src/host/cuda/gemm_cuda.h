/* gemm_cuda.h: the CUDA backend's GEMMs, every one through cuBLASLt (internal to
 * backend_cuda.c; docs/design.md 2.4 and 2.7).
 *
 * A cv_gemm owns the cuBLASLt handle, a workspace allocated once, the operand scratch of
 * the precisions that round their inputs (bf16, tf32x3), and a table of plans: for each
 * GEMM configuration met (transposes, m, n, k, leading dimensions, pointer alignments,
 * matmul kind) the matmul descriptor, the matrix layouts and the algorithm the cuBLASLt
 * heuristic chose, so a configuration is planned once. Nothing here allocates device
 * memory after cv_gemm_reserve, so a GEMM can be recorded in a CUDA graph.
 */
#ifndef CV_GEMM_CUDA_H
#define CV_GEMM_CUDA_H

#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stddef.h>

#include "cvae/backend.h"

typedef struct cv_gemm cv_gemm;

/* The cuBLASLt workspace, allocated once at creation. */
#define CV_GEMM_WORKSPACE_BYTES ((size_t)32 << 20)

/* Starts cuBLASLt and allocates the workspace. Every failure is a status (CV_ERR_DEVICE
 * naming the step, or CV_ERR_NOMEM), with what was made released. */
cv_status cv_gemm_create(cv_precision precision, cudaStream_t stream, cv_gemm **out,
                         cv_err *err);
void cv_gemm_destroy(cv_gemm *g);

/* Room for GEMMs whose op(A) and op(B) hold at most elems elements each (nothing at fp32
 * and tf32). Synchronises the stream when it has to grow. */
cv_status cv_gemm_reserve(cv_gemm *g, size_t elems, cv_err *err);

/* While set, a GEMM that would need more scratch aborts with one line instead of
 * allocating (an allocation cannot be recorded). */
void cv_gemm_set_recording(cv_gemm *g, bool recording);

/* Row-major C (m, n) = alpha op(A) op(B) + beta C, as the backend's gemm, on the stream. */
void cv_gemm_run(cv_gemm *g, bool ta, bool tb, int m, int n, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta, float *c,
                 int ldc);

#endif
