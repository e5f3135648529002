/* bernoulli.cu: the reconstruction term and its gradient in one pass: Bernoulli
 * cross-entropy, or the Gaussian NLL with mean sigmoid(l).
 *
 * One block per row: each thread takes columns j, j + blockDim, ..., writes
 * dlogits = grad_scale * dNLL/dl and adds the row's NLL; the block then reduces
 * the partial sums in shared memory in a fixed tree order (deterministic).
 */
#include "cv_cuda.h"
#include "cv_math.h"

#define XENT_THREADS 256

static __global__ void reconstruction_kernel(bool gaussian, float sigma, const float *logits,
                                             const float *x, float *rec, float *dlogits,
                                             float grad_scale, int cols) {
    __shared__ float partial[XENT_THREADS];
    const size_t row = (size_t)blockIdx.x * cols;
    float s = 0.0f;
    for (int j = threadIdx.x; j < cols; j += XENT_THREADS) {
        float g;
        s += gaussian ? cv_gaussian_nll(logits[row + j], x[row + j], sigma, &g)
                      : cv_bernoulli_nll(logits[row + j], x[row + j], &g);
        if (dlogits) dlogits[row + j] = grad_scale * g;
    }
    partial[threadIdx.x] = s;
    __syncthreads();
    for (int half = XENT_THREADS / 2; half > 0; half >>= 1) {
        if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) rec[blockIdx.x] = partial[0];
}

extern "C" void cv_reconstruction_cuda(cv_likelihood likelihood, float sigma,
                                       const float *logits, const float *x, float *rec,
                                       float *dlogits, float grad_scale, int rows, int cols,
                                       cudaStream_t stream) {
    reconstruction_kernel<<<rows, XENT_THREADS, 0, stream>>>(
        likelihood == CV_LIKELIHOOD_GAUSSIAN, sigma, logits, x, rec, dlogits, grad_scale, cols);
    CV_CUDA_CHECK(cudaGetLastError());
}
