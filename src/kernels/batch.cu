/* batch.cu: the batch from the device-resident uint8 data set, the loss sums, and the
 * step state.
 *
 * gather:     x (rows, dim) = pixels[perm[st->start + r]] / 255, one thread per element.
 * accumulate: acc += sum of n floats, one block, double partial sums reduced in a fixed
 *             tree order (deterministic).
 * advance:    st->step += 1, st->start += rows, by one thread, after the step's work.
 */
#include "cv_cuda.h"

#define SUM_THREADS 256

static __global__ void gather_batch_kernel(const uint8_t *pixels, const uint8_t *labels,
                                           const int32_t *perm, const cv_step *st, int rows,
                                           int dim, float *x, int32_t *labels_out) {
    const int start = st->start;
    size_t n = (size_t)rows * dim;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        int r = (int)(i / dim), j = (int)(i % dim);
        size_t src = (size_t)perm[start + r];
        x[i] = (float)pixels[src * dim + j] / 255.0f;
        if (j == 0) labels_out[r] = labels[src];
    }
}

static __global__ void accumulate_kernel(double *acc, const float *values, int n) {
    __shared__ double partial[SUM_THREADS];
    double s = 0.0;
    for (int i = threadIdx.x; i < n; i += SUM_THREADS) s += values[i];
    partial[threadIdx.x] = s;
    __syncthreads();
    for (int half = SUM_THREADS / 2; half > 0; half >>= 1) {
        if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) *acc += partial[0];
}

static __global__ void advance_step_kernel(cv_step *st, int rows) {
    st->step += 1;
    st->start += rows;
}

extern "C" void cv_gather_batch_cuda(const uint8_t *pixels, const uint8_t *labels,
                                     const int32_t *perm, const cv_step *st, int rows, int dim,
                                     float *x, int32_t *labels_out, cudaStream_t stream) {
    const int threads = 256;
    gather_batch_kernel<<<CV_BLOCKS((size_t)rows * dim, threads), threads, 0, stream>>>(
        pixels, labels, perm, st, rows, dim, x, labels_out);
    CV_CUDA_CHECK(cudaGetLastError());
}

extern "C" void cv_accumulate_cuda(double *acc, const float *values, int n,
                                   cudaStream_t stream) {
    accumulate_kernel<<<1, SUM_THREADS, 0, stream>>>(acc, values, n);
    CV_CUDA_CHECK(cudaGetLastError());
}

extern "C" void cv_advance_step_cuda(cv_step *st, int rows, cudaStream_t stream) {
    advance_step_kernel<<<1, 1, 0, stream>>>(st, rows);
    CV_CUDA_CHECK(cudaGetLastError());
}
