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
 *          order), against the standard normal or the learned prior N(m, exp(r)) of the
 *          row: its label's table rows, or its own rows (per_row: M c, R c).
 * backward: one thread per element for dmu and ds; with the learned prior, its table
 *          gradients by per-class column sums (cv_colsum.cuh), deterministic, or per row
 *          each element's own gradient in the same thread.
 *
 * The kernels take the prior's rows by `labels`: row labels[r] of the tables, or row r
 * itself when labels is NULL (a per-row prior).
 */
#include <curand_kernel.h>

#include "cv_colsum.cuh"
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
                                              const cv_step *st, int first_row,
                                              const float *prior_m,
                                              const float *prior_r, const int32_t *labels,
                                              float *z, float *kl, float *log_ratio, int rows,
                                              int latent) {
    const int lane = threadIdx.x & 31;
    const int r = (int)((blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5);
    if (r >= rows) return; /* whole warps leave together: r is uniform in a warp */
    const uint64_t stream = stream_base + (st ? (uint64_t)st->step : 0);
    const float *mu = enc + (size_t)r * 2 * latent, *s = mu + latent;
    const size_t row = prior_m ? (size_t)(labels ? labels[r] : r) * latent : 0;
    float k = 0.0f, lr = 0.0f;
    for (int j = lane; j < latent; j += 32) {
        size_t i = (size_t)r * latent + j;
        float e = draw_eps ? philox_normal(seed, stream, (uint64_t)first_row * latent + i) : eps[i];
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
                                               const float *dz, float kl_scale_all,
                                               const float *unit_kl, float kl_floor,
                                               const float *prior_m, const float *prior_r,
                                               const int32_t *labels, float *row_dm,
                                               float *row_dr, float *denc, int rows,
                                               int latent) {
    size_t n = (size_t)rows * latent;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / latent, j = i % latent;
        const float kl_scale =
            unit_kl ? cv_free_bits_scale(kl_scale_all, unit_kl[j], kl_floor) : kl_scale_all;
        const float *mu = enc + r * 2 * latent, *s = mu + latent;
        float sj = cv_clamp_logvar(s[j]);
        float *dmu = denc + r * 2 * latent, *ds = dmu + latent;
        if (!prior_m) {
            dmu[j] = cv_reparam_grad_mu(mu[j], dz[i], kl_scale);
            ds[j] = cv_reparam_grad_s(sj, eps[i], dz[i], kl_scale) * cv_clamp_logvar_grad(s[j]);
            continue;
        }
        size_t t = (size_t)(labels ? labels[r] : r) * latent + j;
        float rj = cv_clamp_logvar(prior_r[t]);
        float g_mu = cv_kl_gauss_grad_mu(mu[j], prior_m[t], rj);
        dmu[j] = dz[i] + kl_scale * g_mu;
        ds[j] = (cv_reparam_grad_s(sj, eps[i], dz[i], 0.0f) +
                 kl_scale * cv_kl_gauss_grad_s(sj, rj)) * cv_clamp_logvar_grad(s[j]);
        if (!row_dm) continue;
        /* a per-row prior: this element's own gradients, as prior_grad_op computes them */
        row_dm[i] = -(kl_scale * g_mu);
        row_dr[i] = kl_scale * cv_kl_gauss_grad_r(mu[j], sj, prior_m[t], rj) *
                    cv_clamp_logvar_grad(prior_r[t]);
    }
}

/* The learned prior's table gradients, one element of a row: dm[c] -= kl_scale dKL/dmu
 * (accumulated negated, so every sum is a +=), dr[c] += kl_scale dKL/dr (clamp-aware).
 * Summed over rows per class by cv_colsum.cuh's owner warps: any 1..256 classes, the same
 * bits on every run. TC = 16 columns a tile keeps the two 256-class tables in 32 KiB of
 * shared memory; latent sizes are small, so the idle half-warp costs little. */
struct prior_grad_op {
    const float *enc, *prior_m, *prior_r;
    float kl_scale_all;
    const float *unit_kl; /* free bits: a unit under kl_floor gets no gradient (NULL: none) */
    float kl_floor;
    int latent;
    static constexpr int TC = 16, NV = 2;
    static constexpr bool BIAS = false;
    struct raw {
        float mu, s, m, r;
    };
    __device__ raw load(int row, int j, int cls) const {
        const float *mu = enc + (size_t)row * 2 * latent;
        const size_t t = (size_t)cls * latent + j;
        return raw{mu[j], mu[latent + j], prior_m[t], prior_r[t]};
    }
    __device__ void finish(int row, int j, const raw &x, float *v) const {
        (void)row;
        const float kl_scale =
            unit_kl ? cv_free_bits_scale(kl_scale_all, unit_kl[j], kl_floor) : kl_scale_all;
        const float sj = cv_clamp_logvar(x.s), rj = cv_clamp_logvar(x.r);
        v[0] = -(kl_scale * cv_kl_gauss_grad_mu(x.mu, x.m, rj));
        v[1] = kl_scale * cv_kl_gauss_grad_r(x.mu, sj, x.m, rj) * cv_clamp_logvar_grad(x.r);
    }
};

static __global__ void prior_transform_kernel(const float *prior_m, const float *prior_r,
                                              const int32_t *labels, float *z, int rows,
                                              int latent) {
    size_t n = (size_t)rows * latent;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / latent;
        size_t t = (size_t)(labels ? labels[r] : r) * latent + i % latent;
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

/* The labels the kernels index the prior by: NULL for a per-row prior (row r is its own). */
static const int32_t *prior_labels(const cv_prior *prior, const int32_t *labels) {
    return prior && prior->per_row ? NULL : labels;
}

extern "C" void cv_reparam_forward_cuda(const float *enc, float *eps, bool draw_eps,
                                        uint64_t seed, uint64_t stream_base, const cv_step *st,
                                        int first_row, const cv_prior *prior,
                                        const int32_t *labels, float *z, float *kl,
                                        float *log_ratio, int rows, int latent,
                                        cudaStream_t stream) {
    const int threads = 128, rows_per_block = threads / 32;
    reparam_forward_kernel<<<(rows + rows_per_block - 1) / rows_per_block, threads, 0,
                             stream>>>(enc, eps, draw_eps, seed, stream_base, st, first_row,
                                       prior ? prior->m : NULL, prior ? prior->r : NULL,
                                       prior_labels(prior, labels), z, kl, log_ratio, rows,
                                       latent);
    CV_CUDA_CHECK(cudaGetLastError());
}

static void launch_prior_grad(const float *enc, float kl_scale, const float *unit_kl,
                              float kl_floor, const cv_prior *prior, const int32_t *labels,
                              cv_prior_grad *dprior, int rows, int latent, cv_scratch *sc,
                              cudaStream_t stream) {
    if (rows <= 0) return;
    const cs_plan p = cs_make_plan(rows, latent, prior_grad_op::TC, 2 * CS_CLASSES);
    const prior_grad_op op = {enc, prior->m, prior->r, kl_scale, unit_kl, kl_floor, latent};
    const cs_dest d = {NULL, {dprior->m, dprior->r}, 2, latent};
    cs_class_kernel<prior_grad_op><<<dim3(p.tiles, p.slabs), CS_THREADS, 0, stream>>>(
        op, labels, rows, latent, p.rows_per_slab, p.slabs, d, sc);
    CV_CUDA_CHECK(cudaGetLastError());
}

extern "C" void cv_reparam_backward_cuda(const float *enc, const float *eps, const float *dz,
                                         float kl_scale, const float *unit_kl, float kl_floor,
                                         const cv_prior *prior, const int32_t *labels,
                                         cv_prior_grad *dprior, float *denc, int rows,
                                         int latent, cv_scratch *scratch, cudaStream_t stream) {
    const int threads = 256;
    const bool per_row = prior && prior->per_row;
    reparam_backward_kernel<<<CV_BLOCKS((size_t)rows * latent, threads), threads, 0, stream>>>(
        enc, eps, dz, kl_scale, unit_kl, kl_floor, prior ? prior->m : NULL,
        prior ? prior->r : NULL, prior_labels(prior, labels), per_row ? dprior->m : NULL,
        per_row ? dprior->r : NULL, denc, rows, latent);
    CV_CUDA_CHECK(cudaGetLastError());
    if (prior && !per_row)
        launch_prior_grad(enc, kl_scale, unit_kl, kl_floor, prior, labels, dprior, rows, latent,
                          scratch, stream);
}

extern "C" void cv_prior_transform_cuda(const cv_prior *prior, const int32_t *labels, float *z,
                                        int rows, int latent, cudaStream_t stream) {
    if (!prior) return;
    const int threads = 256;
    prior_transform_kernel<<<CV_BLOCKS((size_t)rows * latent, threads), threads, 0, stream>>>(
        prior->m, prior->r, prior_labels(prior, labels), z, rows, latent);
    CV_CUDA_CHECK(cudaGetLastError());
}

extern "C" void cv_normal_cuda(float *out, int rows, int cols, uint64_t seed,
                               uint64_t first_stream, cudaStream_t stream) {
    const int threads = 256;
    normal_kernel<<<CV_BLOCKS((size_t)rows * cols, threads), threads, 0, stream>>>(
        out, rows, cols, seed, first_stream);
    CV_CUDA_CHECK(cudaGetLastError());
}
