/* reparam.cu: the reparameterization sample with its KL term, its backward, and normal
 * draws, all from cuRAND's counter-based Philox4x32-10.
 *
 * Element i of the noise stream (seed, stream) is component i % 4 of the Philox block
 * i / 4 at counter (i / 4, stream), turned into normals by cuRAND's Box-Muller: the
 * layout of curand_init(seed, stream, 4 * (i / 4)) followed by curand_normal4, and of
 * cv_normal_fill on the host. Any step's noise can be replayed from (seed, step).
 *
 * forward: one warp per row (lanes over the L dimensions): draws eps (optionally), writes
 *          z, and reduces kl and log p(z|c) - log q(z|x,c) with warp shuffles (fixed
 *          order), against the standard normal or the learned prior N(m_c, exp(r_c)).
 */
#include <curand_kernel.h>

#include "cv_cuda.h"
#include "cv_math.h"

static __device__ __forceinline__ float philox_normal(uint64_t seed, uint64_t stream,
                                                     uint64_t i) {
    uint64_t block = i >> 2;
    uint4 c = make_uint4((unsigned)block, (unsigned)(block >> 32), (unsigned)stream,
                         (unsigned)(stream >> 32));
    uint4 v = curand_Philox4x32_10(c, make_uint2((unsigned)seed, (unsigned)(seed >> 32)));
    float2 n = (i & 2) ? _curand_box_muller(v.z, v.w) : _curand_box_muller(v.x, v.y);
    return (i & 1) ? n.y : n.x;
}

static __global__ void reparam_forward_kernel(const float *enc, float *eps, bool draw_eps,
                                              uint64_t seed, uint64_t stream_base,
                                              const cv_step *st, const float *prior_m,
                                              const float *prior_r, const int32_t *labels,
                                              float *z, float *kl, float *log_ratio, int rows,
                                              int latent) {
    const int lane = threadIdx.x & 31;
    const int r = (int)((blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5);
    if (r >= rows) return; /* whole warps leave together: r is uniform in a warp */
    const uint64_t stream = stream_base + (st ? (uint64_t)st->step : 0);
    const float *mu = enc + (size_t)r * 2 * latent, *s = mu + latent;
    const size_t row = prior_m ? (size_t)labels[r] * latent : 0;
    float k = 0.0f, lr = 0.0f;
    for (int j = lane; j < latent; j += 32) {
        size_t i = (size_t)r * latent + j;
        float e = draw_eps ? philox_normal(seed, stream, i) : eps[i];
        if (draw_eps) eps[i] = e;
        float sj = cv_clamp_logvar(s[j]);
        float zj = cv_reparam_z(mu[j], sj, e);
        z[i] = zj;
        if (prior_m) {
            float m = prior_m[row + j], rj = cv_clamp_logvar(prior_r[row + j]);
            k += cv_kl_gauss(mu[j], sj, m, rj);
            lr += cv_log_normal(zj, m, rj) - cv_log_normal_eps(e, sj);
        } else {
            k += cv_kl_std_normal(mu[j], sj);
            lr += cv_log_std_normal(zj) - cv_log_normal_eps(e, sj);
        }
    }
    for (int off = 16; off > 0; off >>= 1) {
        k += __shfl_xor_sync(0xffffffffu, k, off);
        lr += __shfl_xor_sync(0xffffffffu, lr, off);
    }
    if (lane == 0) {
        kl[r] = k;
        if (log_ratio) log_ratio[r] = lr;
    }
}

static __global__ void reparam_backward_kernel(const float *enc, const float *eps,
                                               const float *dz, float kl_scale,
                                               const float *prior_m, const float *prior_r,
                                               const int32_t *labels, float *denc, int rows,
                                               int latent) {
    size_t n = (size_t)rows * latent;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / latent, j = i % latent;
        const float *mu = enc + r * 2 * latent, *s = mu + latent;
        float sj = cv_clamp_logvar(s[j]);
        float *dmu = denc + r * 2 * latent, *ds = dmu + latent;
        if (!prior_m) {
            dmu[j] = cv_reparam_grad_mu(mu[j], dz[i], kl_scale);
            ds[j] = cv_reparam_grad_s(sj, eps[i], dz[i], kl_scale) * cv_clamp_logvar_grad(s[j]);
            continue;
        }
        size_t t = (size_t)labels[r] * latent + j;
        float rj = cv_clamp_logvar(prior_r[t]);
        dmu[j] = dz[i] + kl_scale * cv_kl_gauss_grad_mu(mu[j], prior_m[t], rj);
        ds[j] = (cv_reparam_grad_s(sj, eps[i], dz[i], 0.0f) +
                 kl_scale * cv_kl_gauss_grad_s(sj, rj)) * cv_clamp_logvar_grad(s[j]);
    }
}

/* The learned prior's table gradients: one thread per latent dimension walks the rows in
 * order and adds into its class's row, so the sums are deterministic. */
static __global__ void prior_grad_kernel(const float *enc, float kl_scale, const float *prior_m,
                                         const float *prior_r, const int32_t *labels,
                                         float *dm, float *dr, int rows, int latent) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= latent) return;
    for (int r = 0; r < rows; r++) {
        const float *mu = enc + (size_t)r * 2 * latent, *s = mu + latent;
        size_t t = (size_t)labels[r] * latent + j;
        float sj = cv_clamp_logvar(s[j]), rr = prior_r[t], rj = cv_clamp_logvar(rr);
        dm[t] -= kl_scale * cv_kl_gauss_grad_mu(mu[j], prior_m[t], rj);
        dr[t] += kl_scale * cv_kl_gauss_grad_r(mu[j], sj, prior_m[t], rj) *
                 cv_clamp_logvar_grad(rr);
    }
}

static __global__ void prior_transform_kernel(const float *prior_m, const float *prior_r,
                                              const int32_t *labels, float *z, int rows,
                                              int latent) {
    size_t n = (size_t)rows * latent;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t t = (size_t)labels[i / latent] * latent + i % latent;
        z[i] = cv_reparam_z(prior_m[t], cv_clamp_logvar(prior_r[t]), z[i]);
    }
}

static __global__ void normal_kernel(float *out, int rows, int cols, uint64_t seed,
                                     uint64_t first_stream) {
    size_t n = (size_t)rows * cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = philox_normal(seed, first_stream + i / cols, i % cols);
}

extern "C" void cv_reparam_forward_cuda(const float *enc, float *eps, bool draw_eps,
                                        uint64_t seed, uint64_t stream_base, const cv_step *st,
                                        const cv_prior *prior, const int32_t *labels, float *z,
                                        float *kl, float *log_ratio, int rows, int latent,
                                        cudaStream_t stream) {
    const int threads = 128, rows_per_block = threads / 32;
    reparam_forward_kernel<<<(rows + rows_per_block - 1) / rows_per_block, threads, 0,
                             stream>>>(enc, eps, draw_eps, seed, stream_base, st,
                                       prior ? prior->m : NULL, prior ? prior->r : NULL, labels,
                                       z, kl, log_ratio, rows, latent);
    CV_CUDA_CHECK(cudaGetLastError());
}

extern "C" void cv_reparam_backward_cuda(const float *enc, const float *eps, const float *dz,
                                         float kl_scale, const cv_prior *prior,
                                         const int32_t *labels, cv_prior_grad *dprior,
                                         float *denc, int rows, int latent, cudaStream_t stream) {
    const int threads = 256;
    reparam_backward_kernel<<<CV_BLOCKS((size_t)rows * latent, threads), threads, 0, stream>>>(
        enc, eps, dz, kl_scale, prior ? prior->m : NULL, prior ? prior->r : NULL, labels, denc,
        rows, latent);
    CV_CUDA_CHECK(cudaGetLastError());
    if (!prior) return;
    prior_grad_kernel<<<(latent + 127) / 128, 128, 0, stream>>>(
        enc, kl_scale, prior->m, prior->r, labels, dprior->m, dprior->r, rows, latent);
    CV_CUDA_CHECK(cudaGetLastError());
}

extern "C" void cv_prior_transform_cuda(const cv_prior *prior, const int32_t *labels, float *z,
                                        int rows, int latent, cudaStream_t stream) {
    if (!prior) return;
    const int threads = 256;
    prior_transform_kernel<<<CV_BLOCKS((size_t)rows * latent, threads), threads, 0, stream>>>(
        prior->m, prior->r, labels, z, rows, latent);
    CV_CUDA_CHECK(cudaGetLastError());
}

extern "C" void cv_normal_cuda(float *out, int rows, int cols, uint64_t seed,
                               uint64_t first_stream, cudaStream_t stream) {
    const int threads = 256;
    normal_kernel<<<CV_BLOCKS((size_t)rows * cols, threads), threads, 0, stream>>>(
        out, rows, cols, seed, first_stream);
    CV_CUDA_CHECK(cudaGetLastError());
}
