/* adam.cu: one Adam step over the whole parameter buffer in one launch.
 *
 * t = st->step + 1 is read on the device, so a recorded step replays with the right bias
 * corrections; a step flagged non-finite (st->skip) changes nothing. PyTorch's semantics
 * via cv_adam_update (cv_math.h).
 */
#include "cv_cuda.h"
#include "cv_math.h"

static __global__ void adam_kernel(float *p, const float *g, float *m, float *v, size_t n,
                                   float lr, float b1, float b2, float eps, const cv_step *st) {
    if (st->skip) return;
    const float t = (float)(st->step + 1);
    const float step_size = lr / (1.0f - powf(b1, t));
    const float inv_bc2_sqrt = 1.0f / sqrtf(1.0f - powf(b2, t));
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        cv_adam_update(&p[i], &m[i], &v[i], g[i], b1, b2, eps, step_size, inv_bc2_sqrt);
}

extern "C" void cv_adam_cuda(float *p, const float *g, float *m, float *v, size_t n, float lr,
                             float b1, float b2, float eps, const cv_step *st,
                             cudaStream_t stream) {
    const int threads = 256;
    adam_kernel<<<CV_BLOCKS(n, threads), threads, 0, stream>>>(p, g, m, v, n, lr, b1, b2, eps,
                                                               st);
    CV_CUDA_CHECK(cudaGetLastError());
}
