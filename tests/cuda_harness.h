/* cuda_harness.h: what the GPU tests share (test_cuda.c, test_cuda_objectives.c): the CPU
 * and GPU backends, device buffers with guard bytes, and comparisons under the tolerance
 * policy written at the top of test_cuda.c (R1 to R5). */
#ifndef CVAE_TEST_CUDA_HARNESS_H
#define CVAE_TEST_CUDA_HARNESS_H

#include <float.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cvae/backend.h"

#define EPS ((double)FLT_EPSILON)
/* an RMS relative error of 1e-4: 1000x what R2 and R3 give these tests' inputs */
#define NMSE_MAX 1e-8

/* Guard words after every test buffer on the GPU: a NaN no kernel would write. */
#define GUARD 64
#define GUARD_BITS UINT32_C(0x7fc0dead)

/* The backends of a test: both NULL without a usable CUDA device. */
extern cv_backend *cpu, *gpu;

/* The suite's init and fini. */
void cuda_harness_setup(void);
void cuda_harness_teardown(void);

/* A GPU test starts with it: skipped (never passed) without a device. */
#define NEED_GPU()                                                                   \
    do {                                                                             \
        if (!gpu) cr_skip_test("no usable CUDA device: GPU test not run");           \
    } while (0)

/* A GPU copy of `bytes` host bytes (uninitialised when host is NULL), followed by guard
 * bytes; it lives until gpu_free_all. */
void *to_gpu(const void *host, size_t bytes);
/* Downloads a GPU buffer and checks its guard; the buffer stays alive. */
void from_gpu(void *host, const void *d, size_t bytes, const char *what);
void gpu_free_all(void);
/* NaN/Inf parity, |gpu - cpu| <= tol[i] for each element, and NMSE < nmse. */
void compare_each(const char *what, const float *ref, const float *got, size_t n,
                  const double *tol, double nmse);
/* compare_each with tol[i] = atol + rtol |cpu[i]|. */
void compare(const char *what, const float *ref, const float *got, size_t n, double atol,
             double rtol);
/* R3: the bound on two k-term sums taken in different orders. */
double sum_tol(double k, double abs_sum, double eps);
/* CVAE_TEST_QUICK=1 (tests/gpu.sh sets it under compute-sanitizer): leave out the largest
 * shapes and most steps. */
bool quick(void);
void expect_same_bits(const char *what, const void *a, const void *b, size_t bytes);

/* A GPU test program's main: Criterion counts a skipped test as neither run nor failed,
 * and meson would show the binary as OK; it exits 77, meson's SKIP, when no device is
 * usable, so the suite reads "skipped" on machines without a GPU. */
int cuda_test_main(int argc, char *argv[]);

#endif
