/* test_cuda_setup.c: the CUDA backend's setup on a GPU that is present but unusable.
 *
 * This file defines the CUDA runtime and cuBLAS entry points that the setup calls; the
 * library is linked statically into this program, so its calls bind to these fakes (the
 * test checks that they do), on any machine, with a GPU or without. The fakes hand out
 * host memory and tokens, count what is live, and make the n-th call fail, so every step
 * of the setup fails in turn: each must give one CV_ERR_DEVICE line naming the error and
 * leave nothing created behind, and --device auto must then fall back to the CPU.
 */
#include <criterion/criterion.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stdlib.h>
#include <string.h>

#include "cvae/backend.h"

static int calls, fail_at;          /* call number fail_at fails (0: none) */
static const char *injected;        /* the error string of the failure made */
static int streams, handles, buffers; /* live */
static int legacy_memsets;          /* cudaMemset calls: the legacy default stream */
static int memsets_on_our_stream, syncs_after_memset;
static cudaStream_t our_stream;
static char stream_token, handle_token;

static void reset(int n) {
    calls = streams = handles = buffers = legacy_memsets = 0;
    memsets_on_our_stream = syncs_after_memset = 0;
    fail_at = n;
    injected = NULL;
    our_stream = NULL;
}

static bool cuda_fails(cudaError_t e, cudaError_t *out) {
    if (++calls != fail_at) return false;
    injected = cudaGetErrorString(e);
    *out = e;
    return true;
}

static bool cublas_fails(cublasStatus_t s) {
    if (++calls != fail_at) return false;
    injected = cublasGetStatusString(s);
    return true;
}

cudaError_t CUDARTAPI cudaGetDeviceCount(int *count) {
    cudaError_t e;
    if (cuda_fails(cudaErrorNoDevice, &e)) return e;
    *count = 1;
    return cudaSuccess;
}

cudaError_t CUDARTAPI cudaSetDevice(int device) {
    (void)device;
    cudaError_t e;
    return cuda_fails(cudaErrorDevicesUnavailable, &e) ? e : cudaSuccess;
}

cudaError_t CUDARTAPI cudaGetDeviceProperties(struct cudaDeviceProp *prop, int device) {
    (void)device;
    cudaError_t e;
    if (cuda_fails(cudaErrorInitializationError, &e)) return e;
    memset(prop, 0, sizeof *prop);
    strcpy(prop->name, "Fake GPU");
    prop->multiProcessorCount = 1;
    prop->totalGlobalMem = (size_t)1 << 30;
    prop->major = 9;
    return cudaSuccess;
}

cudaError_t CUDARTAPI cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned int flags) {
    (void)flags;
    cudaError_t e;
    if (cuda_fails(cudaErrorDevicesUnavailable, &e)) return e;
    *stream = our_stream = (cudaStream_t)&stream_token;
    streams++;
    return cudaSuccess;
}

cudaError_t CUDARTAPI cudaStreamDestroy(cudaStream_t stream) {
    cr_assert_eq(stream, our_stream, "destroyed a stream never created");
    streams--;
    return cudaSuccess;
}

cudaError_t CUDARTAPI cudaStreamSynchronize(cudaStream_t stream) {
    cudaError_t e;
    if (cuda_fails(cudaErrorLaunchFailure, &e)) return e;
    if (stream == our_stream && memsets_on_our_stream) syncs_after_memset++;
    return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMalloc(void **ptr, size_t bytes) {
    cudaError_t e;
    if (cuda_fails(cudaErrorDevicesUnavailable, &e)) return e;
    *ptr = malloc(bytes);
    buffers++;
    return cudaSuccess;
}

cudaError_t CUDARTAPI cudaFree(void *ptr) {
    free(ptr);
    buffers--;
    return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    *free_bytes = 0;
    *total_bytes = (size_t)1 << 30;
    return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMemset(void *ptr, int value, size_t bytes) {
    legacy_memsets++;
    memset(ptr, value, bytes);
    return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMemsetAsync(void *ptr, int value, size_t bytes, cudaStream_t stream) {
    cudaError_t e;
    if (cuda_fails(cudaErrorLaunchFailure, &e)) return e;
    memset(ptr, value, bytes);
    memsets_on_our_stream += stream == our_stream;
    return cudaSuccess;
}

cublasStatus_t CUBLASWINAPI cublasCreate_v2(cublasHandle_t *handle) {
    if (cublas_fails(CUBLAS_STATUS_NOT_INITIALIZED)) return CUBLAS_STATUS_NOT_INITIALIZED;
    *handle = (cublasHandle_t)&handle_token;
    handles++;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasDestroy_v2(cublasHandle_t handle) {
    cr_assert_eq((void *)handle, (void *)&handle_token, "destroyed a handle never created");
    handles--;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasSetStream_v2(cublasHandle_t handle, cudaStream_t stream) {
    (void)handle;
    cr_assert_eq(stream, our_stream);
    return cublas_fails(CUBLAS_STATUS_INTERNAL_ERROR) ? CUBLAS_STATUS_INTERNAL_ERROR
                                                      : CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasSetWorkspace_v2(cublasHandle_t handle, void *workspace,
                                                  size_t bytes) {
    (void)handle;
    (void)workspace;
    (void)bytes;
    return cublas_fails(CUBLAS_STATUS_ALLOC_FAILED) ? CUBLAS_STATUS_ALLOC_FAILED
                                                    : CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
    (void)handle;
    (void)mode;
    return cublas_fails(CUBLAS_STATUS_NOT_SUPPORTED) ? CUBLAS_STATUS_NOT_SUPPORTED
                                                     : CUBLAS_STATUS_SUCCESS;
}

static void expect_nothing_live(const char *when) {
    cr_assert(streams == 0 && handles == 0 && buffers == 0,
              "%s: %d streams, %d cuBLAS handles, %d buffers left", when, streams, handles,
              buffers);
}

Test(cuda_setup, the_fakes_are_what_the_library_calls) {
    reset(0);
    cv_backend *be = NULL;
    cv_err err = {{0}};
    cr_assert_eq(cv_backend_cuda_create(NULL, &be, &err), CV_OK, "%s", err.msg);
    cr_assert_gt(calls, 0, "the library did not call these fakes");
    cr_assert(strstr(be->description, "Fake GPU") != NULL, "%s", be->description);
    be->destroy(be);
    expect_nothing_live("after destroy");
}

Test(cuda_setup, every_failing_step_is_one_line_and_leaves_nothing) {
    int steps = 0;
    for (int n = 1;; n++) {
        reset(n);
        cv_backend *be = (cv_backend *)&stream_token;
        cv_err err = {{0}};
        cv_status st = cv_backend_cuda_create(NULL, &be, &err);
        if (calls < n) { /* no call failed: every step passed */
            cr_assert_eq(st, CV_OK, "%s", err.msg);
            be->destroy(be);
            break;
        }
        steps++;
        cr_log_info("call %d failing: %s", n, err.msg);
        cr_assert_eq(st, CV_ERR_DEVICE, "call %d failing gave status %d: %s", n, st, err.msg);
        cr_assert_null(be, "call %d failing left a backend", n);
        cr_assert(strchr(err.msg, '\n') == NULL, "more than one line: %s", err.msg);
        cr_assert(strstr(err.msg, injected) != NULL, "call %d: '%s' does not say '%s'", n,
                  err.msg, injected);
        char when[64];
        snprintf(when, sizeof when, "call %d failing", n);
        expect_nothing_live(when);
    }
    cr_assert_geq(steps, 11, "only %d calls in the setup", steps);
}

Test(cuda_setup, the_flag_reset_runs_on_the_backend_stream_and_is_waited_for) {
    reset(0);
    cv_backend *be = NULL;
    cv_err err;
    cr_assert_eq(cv_backend_cuda_create(NULL, &be, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(legacy_memsets, 0, "a cudaMemset on the legacy default stream");
    cr_assert_eq(memsets_on_our_stream, 1);
    cr_assert_geq(syncs_after_memset, 1, "the setup did not wait for its memset");
    be->destroy(be);
}

/* The call number of the first cublasCreate, counted on a setup that succeeds. */
static int cublas_create_call(void) {
    for (int n = 1;; n++) {
        reset(n);
        cv_backend *be;
        cv_err err;
        if (cv_backend_cuda_create(NULL, &be, &err) == CV_OK) {
            be->destroy(be);
            cr_assert_fail("no cuBLAS start in the setup");
        }
        if (strcmp(injected, cublasGetStatusString(CUBLAS_STATUS_NOT_INITIALIZED)) == 0) return n;
    }
}

Test(cuda_setup, auto_falls_back_to_the_cpu_and_cuda_exits_with_the_reason) {
    int n = cublas_create_call();
    reset(n);
    cv_backend *be;
    cv_err err;
    cr_assert_eq(cv_backend_open("auto", NULL, &be, &err), CV_OK, "%s", err.msg);
    cr_assert_str_eq(be->name, "cpu");
    cr_assert(strstr(be->description, "auto chose the CPU") && strstr(be->description, injected),
              "%s", be->description);
    be->destroy(be);
    expect_nothing_live("after the fallback");
    reset(n);
    cr_assert_eq(cv_backend_open("cuda", NULL, &be, &err), CV_ERR_DEVICE);
    cr_assert(strstr(err.msg, "cuBLAS") && strstr(err.msg, injected), "%s", err.msg);
    expect_nothing_live("after --device cuda");
}
