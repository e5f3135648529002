/* cpu_kernels.h: the CPU backend's per-element loops, a table per instruction set.
 *
 * backend_cpu.c shares the work out over its OpenMP threads and calls these on one row,
 * or one range of a flat array, at a time. cpu_kernels_isa.c is built once for AVX-512,
 * once for AVX2 with FMA and once for the x86-64 baseline (SSE2); the backend takes the
 * widest the CPU runs. The exp, log, sin and cos inside are SLEEF's vector functions
 * (cpu_simd.h), the rest the formulas of cv_math.h, operation for operation.
 *
 * Determinism: a row's sums are taken in 16 lanes, then across the lanes in a fixed
 * order, whatever the register width; no kernel's result depends on where a thread's
 * range starts. So the bits depend neither on the thread count nor on whether AVX-512 or
 * AVX2 runs them (SLEEF's FMA variants agree bit for bit); the baseline's SLEEF (no FMA)
 * rounds some exp, log, sin and cos an ulp apart. Adam, the bias passes and the gather
 * give exactly the bits of cv_math.h's scalar functions.
 */
#ifndef CV_CPU_KERNELS_H
#define CV_CPU_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { CV_ISA_BASELINE, CV_ISA_AVX2, CV_ISA_AVX512, CV_ISA_COUNT } cv_cpu_isa;

/* Adam's per-step constants (cv_adam_update): the clip factor scales each gradient. */
typedef struct {
    float clip, beta1, beta2, eps, step_size, inv_bc2_sqrt;
} cv_adam_consts;

typedef struct {
    const char *name; /* "AVX-512", "AVX2", "SSE2" (or "scalar" off x86-64) */
    /* the Bernoulli (cv_bernoulli_nll) or Gaussian (cv_gaussian_nll) NLL of one row of n
     * logits l against targets x, returned as the row's sum; dl (may be NULL) = scale *
     * the gradient */
    float (*bernoulli_row)(const float *l, const float *x, float *dl, float scale, int n);
    float (*gaussian_row)(const float *l, const float *x, float sigma, float *dl, float scale,
                          int n);
    /* one row of the reparameterization: z = mu + exp(s/2) eps (s clamped), the row's KL
     * and log q - log p ratio (log_ratio may be NULL), against N(0, I), or N(pm, exp(pr))
     * when pm is not NULL */
    void (*reparam_forward_row)(const float *mu, const float *s, const float *eps,
                                const float *pm, const float *pr, float *z, float *kl,
                                float *log_ratio, int latent);
    /* its gradients of dz . z + kl_scale kl: dmu, ds; with a prior (pm not NULL) also
     * those of pm and pr, added into dpm and dpr (add) or written there. With unit_kl (the
     * batch's KL per unit, free bits), a unit under kl_floor takes a KL scale of 0
     * (cv_free_bits_scale) */
    void (*reparam_backward_row)(const float *mu, const float *s, const float *eps,
                                 const float *dz, float kl_scale, const float *unit_kl,
                                 float kl_floor, const float *pm, const float *pr, float *dmu,
                                 float *ds, float *dpm, float *dpr, bool add, int latent);
    /* out[i] = element first + i of the normal stream (seed, stream) (cv_philox_normal) */
    void (*normal_fill)(float *out, size_t n, uint64_t seed, uint64_t stream, uint64_t first);
    /* cv_adam_update on n parameters */
    void (*adam)(float *p, const float *g, float *m, float *v, size_t n, const cv_adam_consts *c);
    /* sum of x[i]^2 in double: 16 lanes, then the fixed order of cpu_simd.h */
    double (*sum_squares)(const float *x, size_t n);
    /* y += bias (+ cond, a condition row, when not NULL), then ReLU when relu; n values */
    void (*bias_act_forward_row)(float *y, const float *bias, const float *cond, int n,
                                 bool relu);
    /* columns lo..hi of dy (rows, cols): masked by y > 0 when relu, then added into dbias
     * and, when dcond is not NULL, into row labels[r] of dcond, walking the rows in order */
    void (*bias_act_backward_cols)(float *dy, const float *y, float *dbias, float *dcond,
                                   const int32_t *labels, int rows, int cols, int lo, int hi,
                                   bool relu);
    /* n model inputs x from bytes / 255 (pixels) or floats (fpixels); binarized with the
     * uniforms from element `element` of stream (seed, stream) when binarize */
    void (*gather_row)(const uint8_t *pixels, const float *fpixels, float *x, int n,
                       bool binarize, uint64_t seed, uint64_t stream, uint64_t element);
} cv_cpu_kernels;

/* The table for isa, or NULL when this CPU cannot run it (or this build has no such
 * table: off x86-64 there is one, reported as CV_ISA_BASELINE). */
const cv_cpu_kernels *cv_cpu_kernels_for(cv_cpu_isa isa);

/* The widest table this CPU runs: what a CPU backend takes when it is created. */
const cv_cpu_kernels *cv_cpu_kernels_best(void);

/* A CPU backend's kernels from now on (backend_cpu.c), for tests that run the same
 * operations with each table. */
struct cv_backend;
void cv_backend_cpu_set_kernels(struct cv_backend *be, const cv_cpu_kernels *k);

#endif
