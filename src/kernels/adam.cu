/* adam.cu: one Adam step over the whole parameter buffer in one launch.
 *
 * t = st->step + 1 is read on the device, so a recorded step replays with the right bias
 * corrections, learning rate (cv_lr_at) and gradient clip (from st->grad_sq); a step
 * flagged non-finite (st->skip) changes nothing. PyTorch's semantics
 * via cv_adam_update (cv_math.h).
 */
#include "cv_cuda.h"
#include "cv_math.h"

static __global__ void adam_kernel(float *p, const float *g, float *m, float *v, size_t n,
                                   cv_adam_config c, const cv_step *st) {
    if (st->skip) return;
    const float t = (float)(st->step + 1);
    const float lr = cv_lr_at(c.lr, st->step, c.warmup_steps, c.total_steps, c.cosine);
    const float step_size = lr / (1.0f - powf(c.beta1, t));
    const float inv_bc2_sqrt = 1.0f / sqrtf(1.0f - powf(c.beta2, t));
    const double norm = sqrt(st->grad_sq);
    const float clip = c.clip_norm > 0.0f && norm > c.clip_norm ? (float)(c.clip_norm / norm)
                                                                 : 1.0f;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        cv_adam_update(&p[i], &m[i], &v[i], clip * g[i], c.beta1, c.beta2, c.eps, step_size,
                       inv_bc2_sqrt);
}

extern "C" void cv_adam_cuda(float *p, const float *g, float *m, float *v, size_t n,
                             const cv_adam_config *cfg, const cv_step *st, cudaStream_t stream) {
    const int threads = 256;
    adam_kernel<<<CV_BLOCKS(n, threads), threads, 0, stream>>>(p, g, m, v, n, *cfg, st);
    CV_CUDA_CHECK(cudaGetLastError());
}
