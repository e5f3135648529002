/* cpu_kernels_isa.c: the CPU backend's per-element loops (cpu_kernels.h), for one
 * instruction set.
 *
 * meson builds this file once per set, with that set's compiler flags and CV_ISA naming
 * the table it defines (cv_cpu_kernels_avx512, _avx2, _baseline). The kernels with exp,
 * log, sin or cos, Philox and the sum of squares work a register at a time (cpu_simd.h);
 * the others are plain loops that the compiler vectorises to the set's width. Each follows
 * cv_math.h's formula operation for operation, so only SLEEF's elementary functions and
 * the order of the sums over a row differ from the scalar functions there.
 */
#include <string.h>

#include "backend/cpu_kernels.h"
#include "backend/cpu_simd.h"
#include "cv_math.h"

/* ---- reconstruction ---- */

/* cv_bernoulli_nll, lane by lane: the NLL, and the gradient into *g */
CV_VINLINE vn bernoulli_nll(vn l, vn x, vn *g) {
    const vn e = v_flush(v_exp(-v_abs(l)));
    const vn u = 1.0f + e, inv = 1.0f / u;
    *g = v_sel(l >= 0.0f, inv, e * inv) - x;
    const vn log1p_e = v_sel(u == 1.0f, e, v_log(u) * e / (u - 1.0f));
    return v_keep(l > 0.0f, l) - x * l + log1p_e;
}

/* A row's sums are kept in the 16 lanes of NP registers: register p of each group of 16
 * values starts at value 16 i + p VN and holds k (<= VN) of them, the last perhaps fewer,
 * its other lanes 0. */
static float bernoulli_row(const float *l, const float *x, float *dl, float scale, int n) {
    vn sum[NP] = {{0}};
    for (int j0 = 0; j0 < n; j0 += SUM_LANES)
        for (int p = 0; p < NP && j0 + p * VN < n; p++) {
            const int j = j0 + p * VN, k = n - j < VN ? n - j : VN;
            vn g;
            const vn nll = bernoulli_nll(v_load_n(l + j, k), v_load_n(x + j, k), &g);
            sum[p] += v_keep(v_lanes_below(k), nll);
            if (dl) v_store_n(dl + j, scale * g, k);
        }
    return sum_lanes(sum);
}

/* cv_sigmoid: both branches take exp(-|l|), so nothing overflows */
CV_VINLINE vn sigmoid(vn l) {
    const vn e = v_flush(v_exp(-v_abs(l)));
    return v_sel(l >= 0.0f, 1.0f / (1.0f + e), e / (1.0f + e));
}

static float gaussian_row(const float *l, const float *x, float sigma, float *dl, float scale,
                          int n) {
    /* cv_gaussian_nll's terms that do not depend on the pixel, in its order */
    const float inv_var = 1.0f / (sigma * sigma);
    const float log_norm = 0.5f * (CV_LOG_2PI + 2.0f * logf(sigma));
    vn sum[NP] = {{0}};
    for (int j0 = 0; j0 < n; j0 += SUM_LANES)
        for (int p = 0; p < NP && j0 + p * VN < n; p++) {
            const int j = j0 + p * VN, k = n - j < VN ? n - j : VN;
            const vn p_j = sigmoid(v_load_n(l + j, k)), d = p_j - v_load_n(x + j, k);
            sum[p] += v_keep(v_lanes_below(k), 0.5f * d * d * inv_var + log_norm);
            if (dl) v_store_n(dl + j, scale * (d * inv_var * p_j * (1.0f - p_j)), k);
        }
    return sum_lanes(sum);
}

/* ---- reparameterization and KL ---- */

static void reparam_forward_row(const float *mu, const float *s, const float *eps,
                                const float *pm, const float *pr, float *z, float *kl,
                                float *log_ratio, int latent) {
    vn kl_sum[NP] = {{0}}, ratio_sum[NP] = {{0}};
    for (int j0 = 0; j0 < latent; j0 += SUM_LANES)
        for (int p = 0; p < NP && j0 + p * VN < latent; p++) {
            const int j = j0 + p * VN, k = latent - j < VN ? latent - j : VN;
            const vn m = v_load_n(mu + j, k), e = v_load_n(eps + j, k);
            const vn sj = v_clamp_logvar(v_load_n(s + j, k));
            const vn zj = m + v_exp(0.5f * sj) * e, es = v_exp(sj);
            const vn log_q = -0.5f * (e * e + sj + CV_LOG_2PI); /* cv_log_normal_eps */
            vn klj, ratio;
            if (pm) {
                /* cv_kl_gauss and cv_log_normal against N(m, exp(r)) */
                const vn mj = v_load_n(pm + j, k), rj = v_clamp_logvar(v_load_n(pr + j, k));
                const vn er = v_exp(-rj), d = m - mj, dz = zj - mj;
                klj = 0.5f * (rj - sj + (es + d * d) * er - 1.0f);
                ratio = -0.5f * (dz * dz * er + rj + CV_LOG_2PI) - log_q;
            } else {
                /* cv_kl_std_normal and cv_log_std_normal */
                klj = 0.5f * (m * m + es - 1.0f - sj);
                ratio = -0.5f * (zj * zj + CV_LOG_2PI) - log_q;
            }
            const vm in = v_lanes_below(k);
            kl_sum[p] += v_keep(in, klj);
            ratio_sum[p] += v_keep(in, ratio);
            v_store_n(z + j, zj, k);
        }
    *kl = sum_lanes(kl_sum);
    if (log_ratio) *log_ratio = sum_lanes(ratio_sum);
}

static void reparam_backward_row(const float *mu, const float *s, const float *eps,
                                 const float *dz, float kl_scale, const float *unit_kl,
                                 float kl_floor, const float *pm, const float *pr, float *dmu,
                                 float *ds, float *dpm, float *dpr, bool add, int latent) {
    for (int j = 0; j < latent; j += VN) {
        const int k = latent - j < VN ? latent - j : VN;
        /* cv_free_bits_scale per unit: kl_scale, or 0 where the unit is under the floor */
        vn ks = v_splat(kl_scale);
        if (unit_kl) ks = (vn)((vm)ks & ~(v_load_n(unit_kl + j, k) < v_splat(kl_floor)));
        const vn m = v_load_n(mu + j, k), e = v_load_n(eps + j, k), g = v_load_n(dz + j, k);
        const vn s_raw = v_load_n(s + j, k), sj = v_clamp_logvar(s_raw);
        const vn through_s = v_clamp_logvar_grad(s_raw);
        const vn half_sd = v_exp(0.5f * sj), es = v_exp(sj);
        if (!pm) {
            /* cv_reparam_grad_mu and cv_reparam_grad_s */
            v_store_n(dmu + j, g + ks * m, k);
            v_store_n(ds + j, (g * e * 0.5f * half_sd + ks * 0.5f * (es - 1.0f)) * through_s,
                      k);
            continue;
        }
        /* cv_reparam_grad_s with a KL scale of 0 (its zero KL term kept: it decides the
         * sign of a zero, as in the scalar call), then cv_kl_gauss_grad_mu, _s and _r */
        const vn reparam_s = g * e * 0.5f * half_sd + 0.0f * 0.5f * (es - 1.0f);
        const vn mj = v_load_n(pm + j, k), r_raw = v_load_n(pr + j, k);
        const vn rj = v_clamp_logvar(r_raw), er = v_exp(-rj), d = m - mj;
        const vn g_mu = d * er;
        v_store_n(dmu + j, g + ks * g_mu, k);
        v_store_n(ds + j, (reparam_s + ks * (0.5f * (v_exp(sj - rj) - 1.0f))) * through_s,
                  k);
        const vn g_m = -(ks * g_mu);
        const vn g_r = ks * (0.5f * (1.0f - (es + d * d) * er)) * v_clamp_logvar_grad(r_raw);
        v_store_n(dpm + j, add ? v_load_n(dpm + j, k) + g_m : g_m, k);
        v_store_n(dpr + j, add ? v_load_n(dpr + j, k) + g_r : g_r, k);
    }
}

/* ---- Philox and normal draws ---- */

typedef uint64_t vnu64 __attribute__((vector_size(VN * 8)));

/* a * b lane by lane: the low 32 bits returned, the high 32 into *hi (cv_mulhilo32).
 * GCC widens a vector multiply to 64-bit lanes through vpmullq or its emulation; the
 * even/odd 32x32 -> 64 products (vpmuludq) are what the scalar code compiles to. */
CV_VINLINE vnu mulhilo(vnu a, uint32_t b, vnu *hi) {
#if defined(__AVX512F__)
    __m512i va, vb = _mm512_set1_epi32((int)b);
    memcpy(&va, &a, sizeof va);
    const __m512i even = _mm512_mul_epu32(va, vb);
    const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(va, 32), vb);
    const __m512i h = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
    const __m512i l = _mm512_mullo_epi32(va, vb);
#elif defined(__AVX2__)
    __m256i va, vb = _mm256_set1_epi32((int)b);
    memcpy(&va, &a, sizeof va);
    const __m256i even = _mm256_mul_epu32(va, vb);
    const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(va, 32), vb);
    const __m256i h = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
    const __m256i l = _mm256_mullo_epi32(va, vb);
#endif
#if defined(__AVX512F__) || defined(__AVX2__)
    vnu lo;
    memcpy(hi, &h, sizeof *hi);
    memcpy(&lo, &l, sizeof lo);
    return lo;
#else
    const vnu64 p = __builtin_convertvector(a, vnu64) * b;
    *hi = __builtin_convertvector(p >> 32, vnu);
    return __builtin_convertvector(p, vnu);
#endif
}

/* cv_philox_block for blocks b0 .. b0 + VN - 1, lane by lane: word c of block b0 + lane
 * into w[c][lane]. Integer arithmetic, so the same bits as the scalar function. */
CV_VINLINE void philox_blocks(uint64_t seed, uint64_t stream, uint64_t b0, vnu w[4]) {
    vnu64 block;
    for (int lane = 0; lane < VN; lane++) block[lane] = b0 + (uint64_t)lane;
    vnu c0 = __builtin_convertvector(block, vnu), c1 = __builtin_convertvector(block >> 32, vnu);
    vnu c2 = (vnu){0} + (uint32_t)stream, c3 = (vnu){0} + (uint32_t)(stream >> 32);
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int round = 0; round < 10; round++) { /* cv_philox4x32_10 */
        vnu hi0, hi1;
        const vnu lo0 = mulhilo(c0, 0xD2511F53u, &hi0), lo1 = mulhilo(c2, 0xCD9E8D57u, &hi1);
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    w[0] = c0, w[1] = c1, w[2] = c2, w[3] = c3;
}

/* cuRAND's Box-Muller (cv_box_muller) on VN pairs of words */
CV_VINLINE void box_muller(vnu a, vnu b, vn *n0, vn *n1) {
    const float inv32 = 2.3283064e-10f;
    const float inv32_2pi = 2.3283064e-10f * 6.2831855f;
    const vn u = __builtin_convertvector(a, vn) * inv32 + inv32 / 2.0f;
    const vn t = __builtin_convertvector(b, vn) * inv32_2pi + inv32_2pi / 2.0f;
    const vn r = v_sqrt(-2.0f * v_log(u));
    vn sin_t, cos_t;
    v_sincos(t, &sin_t, &cos_t);
    *n0 = sin_t * r;
    *n1 = cos_t * r;
}

/* Element i is component i % 4 of Philox block i / 4: pair (0, 1) of the block gives
 * elements 4b and 4b + 1 (sine and cosine), pair (2, 3) elements 4b + 2 and 4b + 3.
 * Blocks are drawn VN at a time, each once, and their 4 VN normals kept as far as they
 * fall within the range. */
static void normal_fill(float *out, size_t n, uint64_t seed, uint64_t stream, uint64_t first) {
    const uint64_t end = first + n, per_group = 4 * VN;
    for (uint64_t g0 = first / per_group * per_group; g0 < end; g0 += per_group) {
        vnu w[4];
        philox_blocks(seed, stream, g0 / 4, w);
        vn nv[4];
        box_muller(w[0], w[1], &nv[0], &nv[1]);
        box_muller(w[2], w[3], &nv[2], &nv[3]);
        float group[4 * VN];
        for (int lane = 0; lane < VN; lane++)
            for (int c = 0; c < 4; c++) group[4 * lane + c] = nv[c][lane];
        const uint64_t lo = g0 > first ? g0 : first;
        const uint64_t hi = g0 + per_group < end ? g0 + per_group : end;
        memcpy(out + (lo - first), group + (lo - g0), (size_t)(hi - lo) * sizeof(float));
    }
}

/* ---- the optimizer and the gradient's norm ---- */

static void adam(float *restrict p, const float *restrict g, float *restrict m,
                 float *restrict v, size_t n, const cv_adam_consts *c) {
    const float clip = c->clip, b1 = c->beta1, b2 = c->beta2, eps = c->eps;
    const float step_size = c->step_size, inv_bc2_sqrt = c->inv_bc2_sqrt;
#pragma omp simd
    for (size_t i = 0; i < n; i++)
        cv_adam_update(&p[i], &m[i], &v[i], clip * g[i], b1, b2, eps, step_size, inv_bc2_sqrt);
}

/* the squares' 16 lanes in double: each register of VN / 2 doubles takes VN / 2 floats */
#define DN (VN / 2)
typedef double vnd __attribute__((vector_size(DN * 8)));
typedef float vnh __attribute__((vector_size(DN * 4)));

static double sum_squares(const float *x, size_t n) {
    vnd sum[SUM_LANES / DN] = {{0}};
    size_t i = 0;
    for (; i + SUM_LANES <= n; i += SUM_LANES)
        for (int q = 0; q < SUM_LANES / DN; q++) {
            vnh h;
            memcpy(&h, x + i + (size_t)q * DN, sizeof h);
            const vnd d = __builtin_convertvector(h, vnd);
            sum[q] += d * d;
        }
    if (i < n) { /* the last values, the rest of the group 0 */
        float last[SUM_LANES] = {0};
        memcpy(last, x + i, (n - i) * sizeof(float));
        for (int q = 0; q < SUM_LANES / DN; q++) {
            vnh h;
            memcpy(&h, last + q * DN, sizeof h);
            const vnd d = __builtin_convertvector(h, vnd);
            sum[q] += d * d;
        }
    }
    double h[SUM_LANES];
    memcpy(h, sum, sizeof h);
    for (int w = SUM_LANES / 2; w >= 1; w /= 2)
        for (int k = 0; k < w; k++) h[k] += h[k + w];
    return h[0];
}

/* ---- bias, condition row and ReLU ---- */

static void bias_act_forward_row(float *restrict y, const float *restrict bias,
                                 const float *restrict cond, int n, bool relu) {
    /* without a condition the sum adds 0, as the scalar loop always did (-0 becomes +0) */
    if (cond && relu)
        for (int j = 0; j < n; j++) y[j] = cv_relu(y[j] + bias[j] + cond[j]);
    else if (cond)
        for (int j = 0; j < n; j++) y[j] = y[j] + bias[j] + cond[j];
    else if (relu)
        for (int j = 0; j < n; j++) y[j] = cv_relu(y[j] + bias[j] + 0.0f);
    else
        for (int j = 0; j < n; j++) y[j] = y[j] + bias[j] + 0.0f;
}

/* one row's columns lo..hi: mask, then add into dbias and the condition row, one pass */
CV_VINLINE void bias_backward_row(float *restrict d, const float *restrict y,
                                  float *restrict dbias, float *restrict dc, int lo, int hi,
                                  bool relu) {
    for (int j = lo; j < hi; j++) {
        const float v = !relu || y[j] > 0.0f ? d[j] : 0.0f;
        d[j] = v;
        dbias[j] += v;
        if (dc) dc[j] += v;
    }
}

static void bias_act_backward_cols(float *dy, const float *y, float *dbias, float *dcond,
                                   const int32_t *labels, int rows, int cols, int lo, int hi,
                                   bool relu) {
    for (int r = 0; r < rows; r++) {
        float *d = dy + (size_t)r * cols;
        const float *yr = y + (size_t)r * cols;
        float *dc = dcond ? dcond + (size_t)labels[r] * cols : NULL;
        /* the branches give the compiler each loop with its flags fixed */
        if (relu && dc)
            bias_backward_row(d, yr, dbias, dc, lo, hi, true);
        else if (relu)
            bias_backward_row(d, yr, dbias, NULL, lo, hi, true);
        else if (dc)
            bias_backward_row(d, yr, dbias, dc, lo, hi, false);
        else
            bias_backward_row(d, yr, dbias, NULL, lo, hi, false);
    }
}

/* ---- the batch gather ---- */

static void gather_row(const uint8_t *pixels, const float *fpixels, float *x, int n,
                       bool binarize, uint64_t seed, uint64_t stream, uint64_t element) {
    if (!binarize) {
        if (pixels)
            for (int j = 0; j < n; j++) x[j] = cv_pixel_value(pixels, NULL, (size_t)j);
        else
            memcpy(x, fpixels, (size_t)n * sizeof(float));
        return;
    }
    /* cv_bernoulli(cv_philox_uniform(...), the pixel's value) in one pass: VN blocks of
     * Philox at a time, each drawn once for its 4 elements */
    const uint64_t end = element + (uint64_t)n, per_group = 4 * VN;
    for (uint64_t g0 = element / per_group * per_group; g0 < end; g0 += per_group) {
        vnu w[4];
        philox_blocks(seed, stream, g0 / 4, w);
        float u[4 * VN];
        for (int lane = 0; lane < VN; lane++)
            for (int c = 0; c < 4; c++) u[4 * lane + c] = cv_uniform01(w[c][lane]);
        const uint64_t lo = g0 > element ? g0 : element;
        const uint64_t hi = g0 + per_group < end ? g0 + per_group : end;
        for (uint64_t i = lo; i < hi; i++) {
            const size_t j = (size_t)(i - element);
            x[j] = cv_bernoulli(u[i - g0], cv_pixel_value(pixels, fpixels, j));
        }
    }
}

#define CV_TABLE_NAME(isa) cv_cpu_kernels_##isa
#define CV_TABLE(isa) CV_TABLE_NAME(isa)

const cv_cpu_kernels CV_TABLE(CV_ISA) = {
    .name = CV_SIMD_NAME,
    .bernoulli_row = bernoulli_row,
    .gaussian_row = gaussian_row,
    .reparam_forward_row = reparam_forward_row,
    .reparam_backward_row = reparam_backward_row,
    .normal_fill = normal_fill,
    .adam = adam,
    .sum_squares = sum_squares,
    .bias_act_forward_row = bias_act_forward_row,
    .bias_act_backward_cols = bias_act_backward_cols,
    .gather_row = gather_row,
};
