/* logsumexp.cu: evaluation's running log-sum-exps per row, in double (cv_lse_add).
 *
 * accumulate: (lse_max, lse_sum)[r] += exp(-rec[r] + log_ratio[r]), one importance
 *             sample's weight, so the IWAE estimate stays on the device for all K samples.
 * merge:      (dst_max, dst_sum)[r] += exp(log_prior + log-mean of (src_max, src_sum)[r]),
 *             one class's term of the marginal.
 * One thread per row (grid-stride); rows are independent, so the result is the same
 * whatever the launch shape. Double exp and log are the device's, within an ulp or two of
 * glibc's, and nvcc may contract sum * exp(..) + 1 into an FMA: close to the CPU, not
 * bitwise equal (docs/design.md 3.4).
 */
#include "cv_cuda.h"
#include "cv_math.h"

#define LSE_THREADS 256

static __global__ void logsumexp_accumulate_kernel(double *__restrict__ lse_max,
                                                   double *__restrict__ lse_sum,
                                                   const float *__restrict__ rec,
                                                   const float *__restrict__ log_ratio,
                                                   int rows, bool reset) {
    for (int r = blockIdx.x * blockDim.x + threadIdx.x; r < rows;
         r += gridDim.x * blockDim.x) {
        double m = reset ? -INFINITY : lse_max[r], s = reset ? 0.0 : lse_sum[r];
        cv_lse_add(&m, &s, -(double)rec[r] + (double)log_ratio[r]);
        lse_max[r] = m;
        lse_sum[r] = s;
    }
}

static __global__ void logsumexp_merge_kernel(double *__restrict__ dst_max,
                                              double *__restrict__ dst_sum,
                                              const double *__restrict__ src_max,
                                              const double *__restrict__ src_sum,
                                              double log_count, double log_prior, int rows,
                                              bool reset) {
    for (int r = blockIdx.x * blockDim.x + threadIdx.x; r < rows;
         r += gridDim.x * blockDim.x) {
        double m = reset ? -INFINITY : dst_max[r], s = reset ? 0.0 : dst_sum[r];
        cv_lse_add(&m, &s, log_prior + cv_lse_log_mean(src_max[r], src_sum[r], log_count));
        dst_max[r] = m;
        dst_sum[r] = s;
    }
}

extern "C" void cv_logsumexp_accumulate_cuda(double *lse_max, double *lse_sum, const float *rec,
                                             const float *log_ratio, int rows, bool reset,
                                             cudaStream_t stream) {
    if (rows <= 0) return;
    logsumexp_accumulate_kernel<<<CV_BLOCKS(rows, LSE_THREADS), LSE_THREADS, 0, stream>>>(
        lse_max, lse_sum, rec, log_ratio, rows, reset);
    CV_CUDA_CHECK(cudaGetLastError());
}

extern "C" void cv_logsumexp_merge_cuda(double *dst_max, double *dst_sum, const double *src_max,
                                        const double *src_sum, double log_count,
                                        double log_prior, int rows, bool reset,
                                        cudaStream_t stream) {
    if (rows <= 0) return;
    logsumexp_merge_kernel<<<CV_BLOCKS(rows, LSE_THREADS), LSE_THREADS, 0, stream>>>(
        dst_max, dst_sum, src_max, src_sum, log_count, log_prior, rows, reset);
    CV_CUDA_CHECK(cudaGetLastError());
}
