/* objectives.cu: the training objectives' kernels (docs/design.md 1.6), over cv_math.h's
 * per-element math, which the CPU backend (backend_cpu_objectives.c) runs too.
 *
 * kl_unit_sums:    one thread per latent unit, the rows summed in row order (free bits
 *                  compare each sum with a floor; L threads are few, B rows short).
 * iwae_weights:    one thread per image, its draws in order (cv_iwae_weights).
 * scale_rows:      one thread per element.
 * iwae_backward:   one thread per (image, unit) for denc and a per-row prior's gradients,
 *                  its draws summed in order; the prior tables' gradients by
 *                  cv_colsum.cuh's per-class sums, whose op sums the same draws.
 * reconstruction_learned: one block per row, as bernoulli.cu, reducing the row's NLL and
 *                  its log-sigma gradient in one fixed tree.
 * softmax_xent, squared_error: one thread per row, its columns in order.
 * No float is added atomically: the bits repeat from run to run.
 */
#include "cv_colsum.cuh"
#include "cv_cuda.h"
#include "cv_math.h"

#define ROW_THREADS 256

/* The prior row of row r: its label's (tables), or its own (labels NULL: per row). */
static __device__ __forceinline__ size_t prior_row_of(const int32_t *labels, int r) {
    return labels ? (size_t)labels[r] : (size_t)r;
}

static const int32_t *prior_labels(const cv_prior *prior, const int32_t *labels) {
    return prior && prior->per_row ? NULL : labels;
}

static __global__ void kl_unit_sums_kernel(const float *enc, const float *pm, const float *pr,
                                           const int32_t *labels, int rows, int latent,
                                           float *out) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= latent) return;
    float s = 0.0f;
    for (int r = 0; r < rows; r++) {
        const float *mu = enc + (size_t)r * 2 * latent;
        s += cv_kl_unit(mu[j], mu[latent + j], pm, pr, prior_row_of(labels, r) * latent + j);
    }
    out[j] = s;
}

static __global__ void iwae_weights_kernel(const float *rec, const float *log_ratio, float beta,
                                           int rows, int samples, float *w, float *loss) {
    for (int b = blockIdx.x * blockDim.x + threadIdx.x; b < rows; b += gridDim.x * blockDim.x)
        loss[b] = cv_iwae_weights(rec + b, log_ratio + b, beta, samples, (size_t)rows, w + b);
}

static __global__ void scale_rows_kernel(float *x, const float *w, int rows, int cols) {
    const size_t n = (size_t)rows * cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] *= w[i / cols];
}

/* The sums over the draws of image b, unit j (cv_iwae_latent_add), as the CPU takes them. */
struct iwae_sums {
    float g_mu, g_eps, w_sum, g_m, g_r;
};

static __device__ iwae_sums iwae_element(const float *enc, const float *eps, const float *dz,
                                         const float *w, int samples, float ks, const float *pm,
                                         const float *pr, size_t t, int b, int j, int rows,
                                         int latent) {
    const float *mu = enc + (size_t)b * 2 * latent;
    const float sj = cv_clamp_logvar(mu[latent + j]);
    const float m = pm ? pm[t] : 0.0f;
    const float inv_var = pm ? expf(-cv_clamp_logvar(pr[t])) : 1.0f;
    iwae_sums a = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    for (int k = 0; k < samples; k++) {
        const size_t i = ((size_t)k * rows + b) * latent + j;
        const float z = cv_reparam_z(mu[j], sj, eps[i]);
        cv_iwae_latent_add(z, eps[i], w[(size_t)k * rows + b], dz[i], ks, m, inv_var, &a.g_mu,
                           &a.g_eps, &a.w_sum, &a.g_m, &a.g_r);
    }
    return a;
}

static __global__ void iwae_backward_kernel(const float *enc, const float *eps, const float *dz,
                                            const float *w, int samples, float ks,
                                            const float *pm, const float *pr,
                                            const int32_t *labels, float *row_dm, float *row_dr,
                                            float *denc, int rows, int latent) {
    const size_t n = (size_t)rows * latent;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const int b = (int)(i / latent), j = (int)(i % latent);
        const size_t t = prior_row_of(labels, b) * latent + j;
        const iwae_sums a = iwae_element(enc, eps, dz, w, samples, ks, pm, pr, t, b, j, rows,
                                         latent);
        const float s_raw = enc[(size_t)b * 2 * latent + latent + j];
        float *dmu = denc + (size_t)b * 2 * latent;
        dmu[j] = a.g_mu;
        dmu[latent + j] = cv_iwae_grad_s(cv_clamp_logvar(s_raw), a.g_eps, a.w_sum, ks) *
                          cv_clamp_logvar_grad(s_raw);
        if (!row_dm) continue;
        /* a per-row prior: this element's own gradients */
        row_dm[i] = a.g_m;
        row_dr[i] = a.g_r * cv_clamp_logvar_grad(pr[t]);
    }
}

/* The prior tables' gradients: each (row, unit)'s sums over its draws, summed per class by
 * cv_colsum.cuh's owner warps (as prior_grad_op in reparam.cu). */
struct iwae_prior_op {
    const float *enc, *eps, *dz, *w, *prior_m, *prior_r;
    int samples, rows, latent;
    float ks;
    static constexpr int TC = 16, NV = 2;
    static constexpr bool BIAS = false;
    struct raw {
        float g_m, g_r;
    };
    __device__ raw load(int row, int j, int cls) const {
        const size_t t = (size_t)cls * latent + j;
        const iwae_sums a = iwae_element(enc, eps, dz, w, samples, ks, prior_m, prior_r, t, row,
                                         j, rows, latent);
        return raw{a.g_m, a.g_r * cv_clamp_logvar_grad(prior_r[t])};
    }
    __device__ void finish(int row, int j, const raw &x, float *v) const {
        (void)row;
        (void)j;
        v[0] = x.g_m;
        v[1] = x.g_r;
    }
};

/* One block per row: the row's NLL and its log-sigma gradient, each in a fixed tree. */
static __global__ void reconstruction_learned_kernel(const float *log_sigma, const float *logits,
                                                     const float *x, float *rec, float *dlogits,
                                                     float *dsigma, float grad_scale, int cols) {
    __shared__ float part_rec[ROW_THREADS], part_v[ROW_THREADS];
    const size_t row = (size_t)blockIdx.x * cols;
    const float raw = 2.0f * log_sigma[0], v = cv_clamp_logvar(raw);
    float s = 0.0f, gv = 0.0f;
    for (int j = threadIdx.x; j < cols; j += ROW_THREADS) {
        float gl, g;
        s += cv_gaussian_nll_logvar(logits[row + j], x[row + j], v, &gl, &g);
        gv += g;
        if (dlogits) dlogits[row + j] = grad_scale * gl;
    }
    part_rec[threadIdx.x] = s;
    part_v[threadIdx.x] = gv;
    __syncthreads();
    for (int half = ROW_THREADS / 2; half > 0; half >>= 1) {
        if (threadIdx.x < half) {
            part_rec[threadIdx.x] += part_rec[threadIdx.x + half];
            part_v[threadIdx.x] += part_v[threadIdx.x + half];
        }
        __syncthreads();
    }
    if (threadIdx.x != 0) return;
    rec[blockIdx.x] = part_rec[0];
    if (dlogits) dsigma[blockIdx.x] = grad_scale * part_v[0] * 2.0f * cv_clamp_logvar_grad(raw);
}

static __global__ void softmax_xent_kernel(const float *logits, const int32_t *labels,
                                           float *loss, float *dlogits, float grad_scale,
                                           int rows, int classes) {
    for (int r = blockIdx.x * blockDim.x + threadIdx.x; r < rows; r += gridDim.x * blockDim.x)
        loss[r] = cv_softmax_xent(logits + (size_t)r * classes, classes, labels[r], grad_scale,
                                  dlogits ? dlogits + (size_t)r * classes : NULL);
}

static __global__ void squared_error_kernel(const float *out, const float *target, float *loss,
                                            float *dout, float grad_scale, int rows, int cols) {
    for (int r = blockIdx.x * blockDim.x + threadIdx.x; r < rows; r += gridDim.x * blockDim.x) {
        const size_t o = (size_t)r * cols;
        loss[r] = cv_squared_error(out + o, target + o, cols, grad_scale, dout ? dout + o : NULL);
    }
}

extern "C" void cv_kl_unit_sums_cuda(const float *enc, const cv_prior *prior,
                                     const int32_t *labels, int rows, int latent, float *out,
                                     cudaStream_t stream) {
    const int threads = 128;
    kl_unit_sums_kernel<<<(latent + threads - 1) / threads, threads, 0, stream>>>(
        enc, prior ? prior->m : NULL, prior ? prior->r : NULL, prior_labels(prior, labels), rows,
        latent, out);
    CV_CUDA_CHECK(cudaGetLastError());
}

extern "C" void cv_iwae_weights_cuda(const float *rec, const float *log_ratio, float beta,
                                     int rows, int samples, float *w, float *loss,
                                     cudaStream_t stream) {
    const int threads = 128;
    iwae_weights_kernel<<<CV_BLOCKS(rows, threads), threads, 0, stream>>>(
        rec, log_ratio, beta, rows, samples, w, loss);
    CV_CUDA_CHECK(cudaGetLastError());
}

extern "C" void cv_scale_rows_cuda(float *x, const float *w, int rows, int cols,
                                   cudaStream_t stream) {
    const int threads = 256;
    scale_rows_kernel<<<CV_BLOCKS((size_t)rows * cols, threads), threads, 0, stream>>>(
        x, w, rows, cols);
    CV_CUDA_CHECK(cudaGetLastError());
}

extern "C" void cv_iwae_backward_cuda(const float *enc, const float *eps, const float *dz,
                                      const float *w, int samples, float kl_scale,
                                      const cv_prior *prior, const int32_t *labels,
                                      cv_prior_grad *dprior, float *denc, int rows, int latent,
                                      cv_scratch *scratch, cudaStream_t stream) {
    const int threads = 256;
    const bool per_row = prior && prior->per_row;
    const float *pm = prior ? prior->m : NULL, *pr = prior ? prior->r : NULL;
    iwae_backward_kernel<<<CV_BLOCKS((size_t)rows * latent, threads), threads, 0, stream>>>(
        enc, eps, dz, w, samples, kl_scale, pm, pr, prior_labels(prior, labels),
        per_row ? dprior->m : NULL, per_row ? dprior->r : NULL, denc, rows, latent);
    CV_CUDA_CHECK(cudaGetLastError());
    if (!prior || per_row || rows <= 0) return;
    const cs_plan p = cs_make_plan(rows, latent, iwae_prior_op::TC, 2 * CS_CLASSES);
    const iwae_prior_op op = {enc, eps, dz, w, pm, pr, samples, rows, latent, kl_scale};
    const cs_dest d = {NULL, {dprior->m, dprior->r}, 2, latent};
    cs_class_kernel<iwae_prior_op><<<dim3(p.tiles, p.slabs), CS_THREADS, 0, stream>>>(
        op, labels, rows, latent, p.rows_per_slab, p.slabs, d, scratch);
    CV_CUDA_CHECK(cudaGetLastError());
}

extern "C" void cv_reconstruction_learned_cuda(const float *log_sigma, const float *logits,
                                               const float *x, float *rec, float *dlogits,
                                               float *dsigma, float grad_scale, int rows,
                                               int cols, cudaStream_t stream) {
    if (rows <= 0) return;
    reconstruction_learned_kernel<<<rows, ROW_THREADS, 0, stream>>>(
        log_sigma, logits, x, rec, dlogits, dsigma, grad_scale, cols);
    CV_CUDA_CHECK(cudaGetLastError());
}

extern "C" void cv_softmax_xent_cuda(const float *logits, const int32_t *labels, float *loss,
                                     float *dlogits, float grad_scale, int rows, int classes,
                                     cudaStream_t stream) {
    const int threads = 128;
    softmax_xent_kernel<<<CV_BLOCKS(rows, threads), threads, 0, stream>>>(
        logits, labels, loss, dlogits, grad_scale, rows, classes);
    CV_CUDA_CHECK(cudaGetLastError());
}

extern "C" void cv_squared_error_cuda(const float *out, const float *target, float *loss,
                                      float *dout, float grad_scale, int rows, int cols,
                                      cudaStream_t stream) {
    const int threads = 128;
    squared_error_kernel<<<CV_BLOCKS(rows, threads), threads, 0, stream>>>(
        out, target, loss, dout, grad_scale, rows, cols);
    CV_CUDA_CHECK(cudaGetLastError());
}
