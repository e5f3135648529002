/* cv_math.h: the per-element math of every fused operation, written once.
 *
 * Each function is a small static inline that compiles as plain C11 for the CPU backend
 * and as __host__ __device__ under nvcc for the CUDA kernels, so the CPU tests exercise
 * the formulas the GPU runs (the CPU backend's kernels, src/host/backend/cpu_kernels.h,
 * evaluate them a vector register at a time, with SLEEF's exp, log, sin and cos in place
 * of glibc's). The bits can still differ: nvcc contracts a * b + c into one fused
 * multiply-add where gcc rounds twice, and the device's expf and logf are neither SLEEF's
 * nor glibc's, so GPU results match the CPU's within the tolerances of docs/design.md,
 * not bit for bit. Notation follows docs/design.md section 1:
 *   l: a logit, x: a target pixel in [0,1], mu / s: posterior mean and log-variance,
 *   eps: a standard normal draw, z = mu + exp(s/2) * eps.
 */
#ifndef CV_MATH_H
#define CV_MATH_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define CV_HD __host__ __device__ __forceinline__
#else
#define CV_HD static inline
#endif

/* log-variance clamp: exp(s) stays finite in float (exp(88.7) overflows) and the
 * posterior never collapses to a variance below exp(-30). Training at sane settings
 * never reaches either bound, so gradients of the reference model are unaffected. */
#define CV_LOGVAR_MIN (-30.0f)
#define CV_LOGVAR_MAX (30.0f)

#define CV_LOG_2PI 1.8378770664093453f

CV_HD float cv_clamp_logvar(float s) {
    return s < CV_LOGVAR_MIN ? CV_LOGVAR_MIN : (s > CV_LOGVAR_MAX ? CV_LOGVAR_MAX : s);
}

/* d clamp(s) / ds: 1 inside the clamp, 0 outside. */
CV_HD float cv_clamp_logvar_grad(float s) {
    return (s < CV_LOGVAR_MIN || s > CV_LOGVAR_MAX) ? 0.0f : 1.0f;
}

/* x, or 0 when x is subnormal (|x| < FLT_MIN = 2^-126; a NaN stays). Subnormals cost a
 * CPU about a hundred cycles an operation, and training makes them in bulk: the logits of
 * always-black pixels sink below -87, where exp(l) and their gradients are subnormal, and
 * Adam's m of such weights follows (a fifth of the default model's after three epochs,
 * halving its speed). Flushing where they arise keeps the bits identical on every device
 * (no FTZ mode to set on any thread) and changes each value by less than 2^-126. */
CV_HD float cv_flush_subnormal(float x) {
    return fabsf(x) < 1.17549435e-38f ? 0.0f : x;
}

CV_HD float cv_sigmoid(float l) {
    /* both branches use exp of a non-positive number, so nothing overflows */
    if (l >= 0.0f) return 1.0f / (1.0f + expf(-l));
    float e = cv_flush_subnormal(expf(l));
    return e / (1.0f + e);
}

/* Bernoulli negative log-likelihood of one pixel, softplus(l) - x*l, computed stably as
 * max(l,0) - x*l + log1p(exp(-|l|)); its gradient sigmoid(l) - x goes to *grad. The two
 * share one exp(-|l|), which is in (0, 1], so nothing overflows. */
CV_HD float cv_bernoulli_nll(float l, float x, float *grad) {
    float e = cv_flush_subnormal(expf(-fabsf(l)));
    float u = 1.0f + e, inv = 1.0f / u;
    float sig = l >= 0.0f ? inv : e * inv;
    *grad = sig - x;
    /* log1p(e) as log(u) * e / (u - 1) (Goldberg): as accurate as log1pf, with the
     * cheaper logf; when u rounds to 1, log1p(e) = e to float precision */
    float log1p_e = u == 1.0f ? e : logf(u) * e / (u - 1.0f);
    return fmaxf(l, 0.0f) - x * l + log1p_e;
}

CV_HD float cv_relu(float v) {
    return v > 0.0f ? v : 0.0f;
}

/* Reparameterization: z = mu + exp(s/2) * eps, s already clamped. */
CV_HD float cv_reparam_z(float mu, float s, float eps) {
    return mu + expf(0.5f * s) * eps;
}

/* KL(N(mu, exp(s)) || N(0, 1)) of one latent dimension. */
CV_HD float cv_kl_std_normal(float mu, float s) {
    return 0.5f * (mu * mu + expf(s) - 1.0f - s);
}

/* Gradients of  dz*z + kl_scale*kl  with respect to mu and s (s already clamped). */
CV_HD float cv_reparam_grad_mu(float mu, float dz, float kl_scale) {
    return dz + kl_scale * mu;
}

CV_HD float cv_reparam_grad_s(float s, float eps, float dz, float kl_scale) {
    return dz * eps * 0.5f * expf(0.5f * s) + kl_scale * 0.5f * (expf(s) - 1.0f);
}

/* KL(N(mu, exp(s)) || N(m, exp(r))) of one dimension: the learned conditional prior. */
CV_HD float cv_kl_gauss(float mu, float s, float m, float r) {
    float d = mu - m;
    return 0.5f * (r - s + (expf(s) + d * d) * expf(-r) - 1.0f);
}

/* Its gradients: with respect to mu (and -that for m), s, and r. */
CV_HD float cv_kl_gauss_grad_mu(float mu, float m, float r) { return (mu - m) * expf(-r); }
CV_HD float cv_kl_gauss_grad_s(float s, float r) { return 0.5f * (expf(s - r) - 1.0f); }
CV_HD float cv_kl_gauss_grad_r(float mu, float s, float m, float r) {
    float d = mu - m;
    return 0.5f * (1.0f - (expf(s) + d * d) * expf(-r));
}

/* log N(z; m, exp(r)) of one dimension. */
CV_HD float cv_log_normal(float z, float m, float r) {
    float d = z - m;
    return -0.5f * (d * d * expf(-r) + r + CV_LOG_2PI);
}

/* The KL of one latent dimension against its prior: the standard normal when pm is NULL,
 * else N(pm[t], exp(clamp(pr[t]))); s is the raw log-variance. Free bits sum it per unit. */
CV_HD float cv_kl_unit(float mu, float s_raw, const float *pm, const float *pr, size_t t) {
    const float s = cv_clamp_logvar(s_raw);
    return pm ? cv_kl_gauss(mu, s, pm[t], cv_clamp_logvar(pr[t])) : cv_kl_std_normal(mu, s);
}

/* Free bits (Kingma et al. 2016): the KL gradient scale of a unit whose KL summed over the
 * batch is unit_kl, given the floor (lambda times the batch's rows): none under the floor. */
CV_HD float cv_free_bits_scale(float kl_scale, float unit_kl, float floor) {
    return unit_kl < floor ? 0.0f : kl_scale;
}

/* The IWAE objective (Burda et al. 2015) for one image of K samples, its log weights
 * log w_k = -rec_k + beta * log_ratio_k at lw[k * stride]: the normalised weights
 * w_k / sum w (to w[k * stride]) and the image's loss -log (1/K sum_k w_k), returned.
 * In float with the maximum taken out, the samples in order. */
CV_HD float cv_iwae_weights(const float *rec, const float *log_ratio, float beta, int K,
                            size_t stride, float *w) {
    float top = -INFINITY;
    for (int k = 0; k < K; k++) {
        const float lw = -rec[k * stride] + beta * log_ratio[k * stride];
        top = lw > top ? lw : top;
    }
    float sum = 0.0f;
    for (int k = 0; k < K; k++) {
        const float e = expf(-rec[k * stride] + beta * log_ratio[k * stride] - top);
        w[k * stride] = e;
        sum += e;
    }
    for (int k = 0; k < K; k++) w[k * stride] /= sum;
    return -(top + logf(sum) - logf((float)K));
}

/* One sample's share of the IWAE gradient of one latent dimension (see model.c): z its
 * draw, w its normalised weight, dz the decoder's gradient (already weighted), ks the
 * KL scale beta / B, m and inv_var = exp(-r) its prior (0 and 1 for the standard one).
 * Adds the gradient with respect to z, times 1 and times eps, to *g_mu and *g_eps, w to
 * *w_sum, and the prior's mean and log-variance gradients to *g_m and *g_r. */
CV_HD void cv_iwae_latent_add(float z, float eps, float w, float dz, float ks, float m,
                              float inv_var, float *g_mu, float *g_eps, float *w_sum,
                              float *g_m, float *g_r) {
    const float d = z - m, prior = ks * w * d * inv_var, g = dz + prior;
    *g_mu += g;
    *g_eps += g * eps;
    *w_sum += w;
    *g_m -= prior;
    *g_r += ks * w * 0.5f * (1.0f - d * d * inv_var);
}

/* The log-variance's gradient from those sums: through z = mu + exp(s/2) eps, and through
 * log q's -s/2 (weighted by the weights' sum, times ks). */
CV_HD float cv_iwae_grad_s(float s, float g_eps, float w_sum, float ks) {
    return 0.5f * expf(0.5f * s) * g_eps - 0.5f * ks * w_sum;
}

/* The Gaussian likelihood with a learned log-variance v = 2 log sigma (clamped like the
 * latents'), one pixel: (x - p)^2 exp(-v) / 2 + (v + log 2 pi) / 2 with p = sigmoid(l); its
 * gradients with respect to l and to v. */
CV_HD float cv_gaussian_nll_logvar(float l, float x, float v, float *grad_l, float *grad_v) {
    const float p = cv_sigmoid(l), d = p - x, inv_var = expf(-v);
    *grad_l = d * inv_var * p * (1.0f - p);
    *grad_v = 0.5f - 0.5f * d * d * inv_var;
    return 0.5f * d * d * inv_var + 0.5f * (v + CV_LOG_2PI);
}

/* Squared error of one row of outputs against its targets (n each): sum (out - t)^2 / 2;
 * grad (n, when not NULL) = scale * (out - t). The regression of cvae score. */
CV_HD float cv_squared_error(const float *out, const float *target, int n, float scale,
                             float *grad) {
    float s = 0.0f;
    for (int j = 0; j < n; j++) {
        const float d = out[j] - target[j];
        s += 0.5f * d * d;
        if (grad) grad[j] = scale * d;
    }
    return s;
}

/* Softmax cross-entropy of one row of logits l (n) against class y: logsumexp(l) - l[y];
 * grad (n, when not NULL) = scale * (softmax(l) - onehot(y)). The classifier of cvae score. */
CV_HD float cv_softmax_xent(const float *l, int n, int y, float scale, float *grad) {
    float top = l[0];
    for (int j = 1; j < n; j++) top = l[j] > top ? l[j] : top;
    float sum = 0.0f;
    for (int j = 0; j < n; j++) sum += expf(l[j] - top);
    const float lse = top + logf(sum);
    if (grad)
        for (int j = 0; j < n; j++)
            grad[j] = scale * (expf(l[j] - lse) - (j == y ? 1.0f : 0.0f));
    return lse - l[y];
}

/* Gaussian likelihood with mean p = sigmoid(l) and standard deviation sigma, one pixel:
 * (x - p)^2 / (2 sigma^2) + log(2 pi sigma^2) / 2, and its gradient with respect to l. */
CV_HD float cv_gaussian_nll(float l, float x, float sigma, float *grad) {
    float p = cv_sigmoid(l), d = p - x, inv_var = 1.0f / (sigma * sigma);
    *grad = d * inv_var * p * (1.0f - p);
    return 0.5f * d * d * inv_var + 0.5f * (CV_LOG_2PI + 2.0f * logf(sigma));
}

/* The learning rate of step t (from 0): linear warm-up over `warmup` steps, then constant
 * or a cosine decay to 0 at step `total`. */
CV_HD float cv_lr_at(float lr, int64_t t, int64_t warmup, int64_t total, int cosine) {
    float scale = warmup > 0 && t < warmup ? (float)(t + 1) / (float)warmup : 1.0f;
    if (cosine && total > warmup) {
        float progress = (float)(t - warmup) / (float)(total - warmup);
        progress = progress < 0.0f ? 0.0f : (progress > 1.0f ? 1.0f : progress);
        scale *= 0.5f * (1.0f + cosf(3.14159265358979f * progress));
    }
    return lr * scale;
}

/* log N(z; mu, exp(s)) of one dimension, written with eps = (z - mu) / exp(s/2). */
CV_HD float cv_log_normal_eps(float eps, float s) {
    return -0.5f * (eps * eps + s + CV_LOG_2PI);
}

/* log N(z; 0, 1) of one dimension. */
CV_HD float cv_log_std_normal(float z) {
    return -0.5f * (z * z + CV_LOG_2PI);
}

/* The largest gradient element Adam can take: its second moment v = b2 v + (1 - b2) g^2
 * is a float, so from |g| = 2^64 the update itself would write an Inf into a model whose
 * gradient was finite (a diverging run). Below 2^63, g^2 < FLT_MAX / 4, and v, a weighted
 * mean of such squares, stays finite. The non-finite check flags a larger element like a
 * NaN (design.md 1.10). */
#define CV_GRAD_LIMIT 9.223372036854775808e18f /* 2^63 */

/* Whether a gradient element is finite and small enough for Adam (CV_GRAD_LIMIT). */
CV_HD bool cv_grad_usable(float g) { return fabsf(g) < CV_GRAD_LIMIT; }

/* One Adam update with PyTorch's semantics (bias-corrected, eps after the sqrt).
 * step_size = lr / (1 - b1^t), inv_bc2_sqrt = 1 / sqrt(1 - b2^t). */
CV_HD void cv_adam_update(float *p, float *m, float *v, float g, float b1, float b2,
                          float eps, float step_size, float inv_bc2_sqrt) {
    float mn = cv_flush_subnormal(b1 * *m + (1.0f - b1) * g);
    float vn = cv_flush_subnormal(b2 * *v + (1.0f - b2) * g * g);
    *m = mn;
    *v = vn;
    *p -= step_size * mn / (sqrtf(vn) * inv_bc2_sqrt + eps);
}

/* Philox4x32-10, the counter-based generator of cuRAND (curand_Philox4x32_10), so the
 * CPU and the GPU draw from one stream: counter (c0..c3), key (k0, k1). */
typedef struct { uint32_t v[4]; } cv_u32x4;

CV_HD uint32_t cv_mulhilo32(uint32_t a, uint32_t b, uint32_t *hi) {
    uint64_t p = (uint64_t)a * (uint64_t)b;
    *hi = (uint32_t)(p >> 32);
    return (uint32_t)p;
}

CV_HD cv_u32x4 cv_philox4x32_10(cv_u32x4 c, uint32_t k0, uint32_t k1) {
    for (int round = 0; round < 10; round++) {
        uint32_t hi0, hi1;
        uint32_t lo0 = cv_mulhilo32(0xD2511F53u, c.v[0], &hi0);
        uint32_t lo1 = cv_mulhilo32(0xCD9E8D57u, c.v[2], &hi1);
        cv_u32x4 n = {{hi1 ^ c.v[1] ^ k0, lo1, hi0 ^ c.v[3] ^ k1, lo0}};
        c = n;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    return c;
}

/* The 4 uint32 of block `block` in stream `stream` under key `seed`: the counter layout
 * of curand_init(seed, stream, 4 * block). */
CV_HD cv_u32x4 cv_philox_block(uint64_t seed, uint64_t stream, uint64_t block) {
    cv_u32x4 c = {{(uint32_t)block, (uint32_t)(block >> 32),
                   (uint32_t)stream, (uint32_t)(stream >> 32)}};
    return cv_philox4x32_10(c, (uint32_t)seed, (uint32_t)(seed >> 32));
}

/* cuRAND's Box-Muller (_curand_box_muller): two uint32 to two standard normals. */
CV_HD void cv_box_muller(uint32_t a, uint32_t b, float *n0, float *n1) {
    const float inv32 = 2.3283064e-10f;
    const float inv32_2pi = 2.3283064e-10f * 6.2831855f;
    float u = (float)a * inv32 + inv32 / 2.0f;
    float t = (float)b * inv32_2pi + inv32_2pi / 2.0f;
    float r = sqrtf(-2.0f * logf(u));
    *n0 = sinf(t) * r;
    *n1 = cosf(t) * r;
}

/* A uniform float in (0, 1] from one uint32, as cuRAND's _curand_uniform: the top 128
 * words round to 1. */
CV_HD float cv_uniform01(uint32_t a) {
    return (float)a * 2.3283064e-10f + 2.3283064e-10f / 2.0f;
}

/* Element i of the normal stream (seed, stream): component i % 4 of block i / 4. */
CV_HD float cv_philox_normal(uint64_t seed, uint64_t stream, uint64_t i) {
    cv_u32x4 b = cv_philox_block(seed, stream, i >> 2);
    float n0, n1;
    int pair = (int)(i & 2);
    cv_box_muller(b.v[pair], b.v[pair + 1], &n0, &n1);
    return (i & 1) ? n1 : n0;
}

/* Element i of the uniform stream (seed, stream). */
CV_HD float cv_philox_uniform(uint64_t seed, uint64_t stream, uint64_t i) {
    return cv_uniform01(cv_philox_block(seed, stream, i >> 2).v[i & 3]);
}

/* A data set's value i as a model input in [0, 1]: byte pixels / 255, or the float
 * images' own value (exactly one of the two arrays is set). */
CV_HD float cv_pixel_value(const uint8_t *pixels, const float *fpixels, size_t i) {
    return pixels ? (float)pixels[i] / 255.0f : fpixels[i];
}

/* A Bernoulli(p) draw from a uniform u in (0, 1]: u <= p, so that p = 1 always gives 1
 * (u may be 1.0f) and p = 0 never does. */
CV_HD bool cv_bernoulli(float u, float p) { return u <= p; }

/* A generated pixel: the mean image round(255 p), or a Bernoulli(p) draw with uniform u
 * as 0 or 255; p = sigmoid(l). */
CV_HD uint8_t cv_pixel_mean(float l) {
    return (uint8_t)floorf(255.0f * cv_sigmoid(l) + 0.5f);
}

CV_HD uint8_t cv_pixel_sample(float l, float u) {
    return cv_bernoulli(u, cv_sigmoid(l)) ? 255 : 0;
}

/* A Gaussian pixel draw p + sigma n, clamped to [0, 1], as a byte. */
CV_HD uint8_t cv_pixel_gaussian(float l, float sigma, float n) {
    float v = cv_sigmoid(l) + sigma * n;
    v = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
    return (uint8_t)floorf(255.0f * v + 0.5f);
}

/* ---------- GEMM input rounding (docs/design.md 2.7) ----------
 * The precision modes round each GEMM input before an fp32-accumulating product: bf16
 * keeps 8 significant bits (7 stored), TF32 11 (10 stored); both keep fp32's exponent
 * range. The CPU emulations and the GPU's conversion kernels call these same functions,
 * so both sides feed the products the same bits. */

CV_HD uint32_t cv_float_bits(float x) {
#ifdef __CUDA_ARCH__
    return __float_as_uint(x);
#else
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
#endif
}

CV_HD float cv_bits_float(uint32_t u) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
#endif
}

/* The float with bits u rounded to nearest, ties to even, at bit `drop` (the low `drop`
 * bits cleared): adding half an ulp less one, plus the kept lowest bit, carries into the
 * exponent exactly when the value rounds up, also across binades, from subnormal to
 * normal, and from the largest finite values to Inf. A NaN stays a NaN (made quiet, sign
 * kept); +-Inf stay +-Inf. */
CV_HD uint32_t cv_round_bits(uint32_t u, int drop) {
    const uint32_t low = (1u << drop) - 1u;
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u | 0x00400000u) & ~low;
    return (u + (low >> 1) + ((u >> drop) & 1u)) & ~low;
}

/* x rounded to bf16, as a float (exact), and as the 16 bits of a bf16. */
CV_HD float cv_round_bf16(float x) { return cv_bits_float(cv_round_bits(cv_float_bits(x), 16)); }
CV_HD uint16_t cv_bf16_bits(float x) {
    return (uint16_t)(cv_round_bits(cv_float_bits(x), 16) >> 16);
}

/* x rounded to TF32 (10 stored significand bits), as a float. */
CV_HD float cv_round_tf32(float x) { return cv_bits_float(cv_round_bits(cv_float_bits(x), 13)); }

/* The 3xTF32 split: x = hi + lo + (a rest below 2^-22 |x|), hi = x rounded to TF32 and
 * lo = (x - hi) rounded to TF32 (x - hi is exact in float). Two edges: a finite x whose
 * nearest TF32 is Inf keeps a finite hi (truncated, so hi + lo is still x to 22 bits);
 * a NaN or Inf goes whole into hi, with lo = 0 (so an Inf input meets 0 in the hi*lo
 * products and gives NaN, where an fp32 GEMM gives Inf: both are caught as non-finite). */
CV_HD void cv_split_tf32(float x, float *hi, float *lo) {
    const uint32_t u = cv_float_bits(x);
    if ((u & 0x7f800000u) == 0x7f800000u) {
        *hi = x;
        *lo = 0.0f;
        return;
    }
    uint32_t h = cv_round_bits(u, 13);
    if ((h & 0x7f800000u) == 0x7f800000u) h = u & ~0x1fffu;
    *hi = cv_bits_float(h);
    *lo = cv_round_tf32(x - *hi);
}

/* One term x added to a running log-sum-exp in double: (*max, *sum) stands for
 * log sum_k exp(x_k) = *max + log(*sum), and the empty sum is (-inf, 0). A larger x
 * rescales the sum to itself; x = -inf adds nothing; x equal to *max adds 1 (so +inf terms
 * give +inf); a NaN makes the sum NaN. For finite terms this is the update of
 * docs/design.md 1.11, bit for bit what the host loop computed before it moved here. */
CV_HD void cv_lse_add(double *max, double *sum, double x) {
    if (x > *max) {
        *sum = *sum * exp(*max - x) + 1.0;
        *max = x;
    } else if (x == *max) {
        if (x != -INFINITY) *sum += 1.0; /* exp(x - *max) = exp(0) = 1 exactly */
    } else {
        *sum += exp(x - *max); /* x < *max, or x is NaN */
    }
}

/* The log-mean of a running log-sum-exp over `count` terms, log_count = log(count). */
CV_HD double cv_lse_log_mean(double max, double sum, double log_count) {
    return max + log(sum) - log_count;
}

#endif
