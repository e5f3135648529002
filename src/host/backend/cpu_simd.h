/* cpu_simd.h: one vector register of floats, for the CPU kernels (cpu_kernels_isa.c) alone.
 *
 * The arithmetic is GCC's vector extension (+ - * / and comparisons lane by lane) on the
 * register of the instruction set the file is built for: 16 floats with AVX-512, 8 with
 * AVX2, 4 with SSE2. The elementary functions come from SLEEF (Debian's libsleef-dev), at
 * most 1 ulp from the exact value: its "finz" variants, which use FMA and return the same
 * bits for AVX-512 and AVX2, and on a CPU without FMA its "cinz" SSE2 ones (some results
 * an ulp apart from finz). Off x86-64 a lane-by-lane libm call stands in. Everything else
 * is IEEE arithmetic, rounded once per operation and never contracted (the kernels build
 * with -ffp-contract=off), so a kernel gives the same bits whichever register runs it.
 */
#ifndef CV_CPU_SIMD_H
#define CV_CPU_SIMD_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#include <sleef.h>
#endif

#define CV_VINLINE static inline __attribute__((always_inline))

/* The register of the build: VN floats. A row's sums keep 16 lanes (element j in lane
 * j mod 16) in NP registers, so they add in the same order whatever VN is. */
#if defined(__AVX512F__)
#define VN 16
#define CV_SIMD_NAME "AVX-512"
#elif defined(__AVX2__) && defined(__FMA__)
#define VN 8
#define CV_SIMD_NAME "AVX2"
#elif defined(__x86_64__)
#define VN 4
#define CV_SIMD_NAME "SSE2"
#else
#define VN 4
#define CV_SIMD_NAME "scalar"
#endif
#define SUM_LANES 16
#define NP (SUM_LANES / VN)

typedef float vn __attribute__((vector_size(VN * 4)));
typedef int32_t vm __attribute__((vector_size(VN * 4))); /* comparison masks: -1 or 0 */
typedef uint32_t vnu __attribute__((vector_size(VN * 4)));

CV_VINLINE vn v_splat(float a) { return (vn){0} + a; }

/* k (<= VN) values from p, the other lanes 0 */
CV_VINLINE vn v_load_n(const float *p, int k) {
    vn v = {0};
    if (k == VN)
        memcpy(&v, p, sizeof v);
    else
        memcpy(&v, p, (size_t)k * sizeof(float));
    return v;
}

CV_VINLINE void v_store_n(float *p, vn v, int k) {
    if (k == VN)
        memcpy(p, &v, sizeof v);
    else
        memcpy(p, &v, (size_t)k * sizeof(float));
}

/* mask ? a : b, lane by lane */
CV_VINLINE vn v_sel(vm mask, vn a, vn b) { return (vn)(((vm)a & mask) | ((vm)b & ~mask)); }

/* a where mask, else 0 */
CV_VINLINE vn v_keep(vm mask, vn a) { return (vn)((vm)a & mask); }

CV_VINLINE vn v_abs(vn x) { return (vn)((vm)x & 0x7fffffff); }

/* lanes below k set */
CV_VINLINE vm v_lanes_below(int k) {
    static const int32_t lane[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    vm l;
    memcpy(&l, lane, sizeof l);
    return l < k;
}

/* cv_flush_subnormal of each lane */
CV_VINLINE vn v_flush(vn x) { return v_sel(v_abs(x) < 1.17549435e-38f, v_splat(0.0f), x); }

/* cv_clamp_logvar of each lane (a NaN stays), and its gradient */
CV_VINLINE vn v_clamp_logvar(vn s) {
    return v_sel(s < -30.0f, v_splat(-30.0f), v_sel(s > 30.0f, v_splat(30.0f), s));
}

CV_VINLINE vn v_clamp_logvar_grad(vn s) {
    return v_keep(~((s < -30.0f) | (s > 30.0f)), v_splat(1.0f));
}

/* The sum of a row's 16 lanes (NP registers) in a fixed order: the halves added lane by
 * lane, 8 + 4 + 2 + 1. */
CV_VINLINE float sum_lanes(const vn acc[NP]) {
    float h[SUM_LANES];
    memcpy(h, acc, sizeof h);
    for (int w = SUM_LANES / 2; w >= 1; w /= 2)
        for (int k = 0; k < w; k++) h[k] += h[k + w];
    return h[0];
}

/* ---- exp, log, sqrt, sin and cos of a register ---- */

#if VN == 16
CV_VINLINE vn v_exp(vn x) { return Sleef_finz_expf16_u10avx512f(x); }
CV_VINLINE vn v_log(vn x) { return Sleef_finz_logf16_u10avx512f(x); }
CV_VINLINE vn v_sqrt(vn x) { return _mm512_sqrt_ps(x); }
CV_VINLINE void v_sincos(vn x, vn *s, vn *c) {
    const Sleef___m512_2 r = Sleef_finz_sincosf16_u10avx512f(x);
    *s = r.x;
    *c = r.y;
}
#elif VN == 8
CV_VINLINE vn v_exp(vn x) { return Sleef_finz_expf8_u10avx2(x); }
CV_VINLINE vn v_log(vn x) { return Sleef_finz_logf8_u10avx2(x); }
CV_VINLINE vn v_sqrt(vn x) { return _mm256_sqrt_ps(x); }
CV_VINLINE void v_sincos(vn x, vn *s, vn *c) {
    const Sleef___m256_2 r = Sleef_finz_sincosf8_u10avx2(x);
    *s = r.x;
    *c = r.y;
}
#elif defined(__x86_64__)
CV_VINLINE vn v_exp(vn x) { return Sleef_cinz_expf4_u10sse2(x); }
CV_VINLINE vn v_log(vn x) { return Sleef_cinz_logf4_u10sse2(x); }
CV_VINLINE vn v_sqrt(vn x) { return _mm_sqrt_ps(x); }
CV_VINLINE void v_sincos(vn x, vn *s, vn *c) {
    const Sleef___m128_2 r = Sleef_cinz_sincosf4_u10sse2(x);
    *s = r.x;
    *c = r.y;
}
#else
CV_VINLINE vn v_exp(vn x) {
    for (int i = 0; i < VN; i++) x[i] = expf(x[i]);
    return x;
}
CV_VINLINE vn v_log(vn x) {
    for (int i = 0; i < VN; i++) x[i] = logf(x[i]);
    return x;
}
CV_VINLINE vn v_sqrt(vn x) {
    for (int i = 0; i < VN; i++) x[i] = sqrtf(x[i]);
    return x;
}
CV_VINLINE void v_sincos(vn x, vn *s, vn *c) {
    for (int i = 0; i < VN; i++) {
        (*s)[i] = sinf(x[i]);
        (*c)[i] = cosf(x[i]);
    }
}
#endif

#endif
