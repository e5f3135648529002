/* bias_act.cu: bias + condition column + ReLU, forward and backward.
 *
 * forward:  y (rows, cols) = act(y + bias + cond[labels[r]]), one thread per element.
 * backward: one thread per column walks the rows in order: masks dy by relu'(y), sums it
 *           into dbias and scatters it into dcond[labels[r]]. A column is one thread's, so
 *           there are no atomics and every sum has one fixed order (deterministic).
 */
#include "cv_cuda.h"
#include "cv_math.h"

static __global__ void bias_act_forward_kernel(float *y, const float *bias, const float *cond,
                                               const int32_t *labels, int rows, int cols,
                                               bool relu) {
    size_t n = (size_t)rows * cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        int r = (int)(i / cols), j = (int)(i % cols);
        float v = y[i] + bias[j];
        if (cond) v += cond[(size_t)labels[r] * cols + j];
        y[i] = relu ? cv_relu(v) : v;
    }
}

static __global__ void bias_act_backward_kernel(float *dy, const float *y, float *dbias,
                                                float *dcond, const int32_t *labels, int rows,
                                                int cols, bool relu) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= cols) return;
    float sum = 0.0f;
    for (int r = 0; r < rows; r++) {
        size_t i = (size_t)r * cols + j;
        float g = dy[i];
        if (relu && !(y[i] > 0.0f)) {
            g = 0.0f;
            dy[i] = 0.0f;
        }
        sum += g;
        if (dcond) dcond[(size_t)labels[r] * cols + j] += g;
    }
    dbias[j] += sum;
}

extern "C" void cv_bias_act_forward_cuda(float *y, const float *bias, const float *cond,
                                         const int32_t *labels, int rows, int cols, bool relu,
                                         cudaStream_t stream) {
    const int threads = 256;
    bias_act_forward_kernel<<<CV_BLOCKS((size_t)rows * cols, threads), threads, 0, stream>>>(
        y, bias, cond, labels, rows, cols, relu);
    CV_CUDA_CHECK(cudaGetLastError());
}

extern "C" void cv_bias_act_backward_cuda(float *dy, const float *y, float *dbias, float *dcond,
                                          const int32_t *labels, int rows, int cols, bool relu,
                                          cudaStream_t stream) {
    const int threads = 128;
    bias_act_backward_kernel<<<(cols + threads - 1) / threads, threads, 0, stream>>>(
        dy, y, dbias, dcond, labels, rows, cols, relu);
    CV_CUDA_CHECK(cudaGetLastError());
}
