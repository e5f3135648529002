/* cuda_harness.c: see cuda_harness.h. */
#include "cuda_harness.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

cv_backend *cpu, *gpu;

/* The device buffers of the test, released together by gpu_free_all. */
#define MAX_LIVE 512
static void *live[MAX_LIVE];
static int n_live;

void gpu_free_all(void) {
    while (n_live > 0) gpu->release(gpu, live[--n_live]);
}

void cuda_harness_setup(void) {
    if (!cv_backend_cuda_available()) return;
    cv_err err;
    cr_assert_eq(cv_backend_cpu_create(&cpu, &err), CV_OK);
    cr_assert_eq(cv_backend_cuda_create(NULL, &gpu, &err), CV_OK, "%s", err.msg);
}
void cuda_harness_teardown(void) {
    if (gpu) gpu_free_all();
    if (cpu) cpu->destroy(cpu);
    if (gpu) gpu->destroy(gpu);
    cpu = gpu = NULL;
}

/* A GPU copy of `bytes` host bytes (uninitialised when host is NULL), followed by guard
 * bytes; it lives until gpu_free_all. */
void *to_gpu(const void *host, size_t bytes) {
    void *d;
    cv_err err;
    cr_assert_lt(n_live, MAX_LIVE, "too many test buffers");
    cr_assert_eq(gpu->alloc(gpu, &d, bytes + GUARD * 4, "test buffer", &err), CV_OK, "%s",
                 err.msg);
    live[n_live++] = d;
    uint32_t guard[GUARD];
    for (int i = 0; i < GUARD; i++) guard[i] = GUARD_BITS;
    if (host) gpu->upload(gpu, d, host, bytes);
    gpu->upload(gpu, (char *)d + bytes, guard, sizeof guard);
    return d;
}

/* Downloads a GPU buffer and checks its guard; the buffer stays alive. */
void from_gpu(void *host, const void *d, size_t bytes, const char *what) {
    uint32_t guard[GUARD];
    gpu->download(gpu, host, d, bytes);
    gpu->download(gpu, guard, (const char *)d + bytes, sizeof guard);
    for (int i = 0; i < GUARD; i++)
        cr_assert_eq(guard[i], GUARD_BITS, "%s: the GPU wrote past the end (guard %d)", what, i);
}

/* NaN/Inf parity, |gpu - cpu| <= tol[i] for each element, and NMSE < nmse. */
void compare_each(const char *what, const float *ref, const float *got, size_t n,
                         const double *tol, double nmse) {
    double err2 = 0, ref2 = 0;
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(isnan(ref[i]), isnan(got[i]), "%s[%zu]: NaN parity (cpu %g, gpu %g)", what,
                     i, ref[i], got[i]);
        if (isnan(ref[i])) continue;
        if (isinf(ref[i])) {
            cr_assert_eq(ref[i], got[i], "%s[%zu]: Inf parity", what, i);
            continue;
        }
        double d = fabs((double)got[i] - ref[i]);
        cr_assert(d <= tol[i], "%s[%zu]: gpu %.9g, cpu %.9g, differ by %.3g > %.3g", what, i,
                  got[i], ref[i], d, tol[i]);
        err2 += d * d;
        ref2 += (double)ref[i] * ref[i];
    }
    if (ref2 > 0) cr_assert(err2 / ref2 < nmse, "%s: NMSE %g", what, err2 / ref2);
}

/* compare_each with tol[i] = atol + rtol |cpu[i]|. */
void compare(const char *what, const float *ref, const float *got, size_t n, double atol,
                    double rtol) {
    double *tol = malloc((n ? n : 1) * sizeof *tol);
    for (size_t i = 0; i < n; i++) tol[i] = atol + rtol * fabs(ref[i]);
    compare_each(what, ref, got, n, tol, NMSE_MAX);
    free(tol);
}

/* R3: the bound on two k-term sums taken in different orders. */
double sum_tol(double k, double abs_sum, double eps) {
    return 2.0 * sqrt(k) * eps * abs_sum;
}

/* CVAE_TEST_QUICK=1 (tests/gpu.sh sets it under compute-sanitizer, which runs kernels
 * tens of times slower): the largest shapes and most training steps are left out. */
bool quick(void) {
    const char *q = getenv("CVAE_TEST_QUICK");
    return q && *q && strcmp(q, "0") != 0;
}

void expect_same_bits(const char *what, const void *a, const void *b, size_t bytes) {
    cr_assert(memcmp(a, b, bytes) == 0, "%s: two GPU runs on the same inputs differ", what);
}

int cuda_test_main(int argc, char *argv[]) {
    struct criterion_test_set *tests = criterion_initialize();
    int result = 0;
    if (criterion_handle_args(argc, argv, true)) result = !criterion_run_all_tests(tests);
    criterion_finalize(tests);
    if (result == 0 && !cv_backend_cuda_available()) {
        fprintf(stderr, "no usable CUDA device: every GPU test was skipped\n");
        return 77;
    }
    return result;
}
