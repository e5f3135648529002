/* test_cuda_setup.c: the CUDA backend's setup on a GPU that is present but unusable.
 *
 * This file defines the CUDA runtime and cuBLASLt entry points that the setup calls; the
 * backend is linked statically into this program (the CUDA module's objects, not the
 * loader that other programs reach it by), so its calls bind to these fakes (the test
 * checks that they do), on any machine, with a GPU or without. The fakes hand out
 * host memory and tokens, count what is live, and make the n-th call fail, so every step
 * of the setup fails in turn: each must give one CV_ERR_DEVICE line naming the error and
 * leave nothing created behind, and --device auto must then fall back to the CPU.
 *
 * The cuBLASLt fakes go further: they keep what the descriptors say and compute a matmul
 * on the host, in double, from the layouts and transposes they were given, and the
 * operand conversion launchers of precision.cu are replaced by host loops over the same
 * cv_math.h functions. So the host side of every GEMM (gemm_cuda.c: the operand swap,
 * the layouts, the packing, the three tf32x3 passes, the plan table, the alignments the
 * heuristic is told, no allocation while recording) runs here against the CPU backend,
 * although no kernel and no real cuBLASLt call does.
 */
#include <criterion/criterion.h>
#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cuda/cuda_module.h"
#include "cv_math.h"
#include "cvae/backend.h"
#include "helpers.h"

static int calls, fail_at;          /* call number fail_at fails (0: none) */
static const char *injected;        /* the error string of the failure made */
static cudaError_t no_device_error; /* what a failing cudaGetDeviceCount returns */
static int device_count;            /* the devices cudaGetDeviceCount finds */
static int streams, handles, buffers; /* live (handles: cuBLASLt's) */
static int descriptors;             /* live cuBLASLt descriptors, layouts and preferences */
static int mallocs, heuristics, matmuls, packs;
static int legacy_memsets;          /* cudaMemset calls: the legacy default stream */
static int memsets_on_our_stream, syncs_after_memset;
static cudaStream_t our_stream;
static char stream_token, handle_token;

static void reset(int n) {
    calls = streams = handles = buffers = legacy_memsets = 0;
    descriptors = mallocs = heuristics = matmuls = packs = 0;
    memsets_on_our_stream = syncs_after_memset = 0;
    fail_at = n;
    injected = NULL;
    no_device_error = cudaErrorNoDevice;
    device_count = 1;
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
    injected = cublasLtGetStatusString(s);
    return true;
}

cudaError_t CUDARTAPI cudaGetDeviceCount(int *count) {
    cudaError_t e;
    if (cuda_fails(no_device_error, &e)) {
        /* the backend says this one in a user's words rather than the runtime's */
        if (e == cudaErrorNoDevice) injected = "no NVIDIA GPU found";
        return e;
    }
    *count = device_count;
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
    *ptr = aligned_alloc(256, (bytes + 255) / 256 * 256); /* as cudaMalloc aligns */
    buffers++;
    mallocs++;
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

cublasStatus_t CUBLASWINAPI cublasLtCreate(cublasLtHandle_t *handle) {
    if (cublas_fails(CUBLAS_STATUS_NOT_INITIALIZED)) return CUBLAS_STATUS_NOT_INITIALIZED;
    *handle = (cublasLtHandle_t)&handle_token;
    handles++;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtDestroy(cublasLtHandle_t handle) {
    cr_assert_eq((void *)handle, (void *)&handle_token, "destroyed a handle never created");
    handles--;
    return CUBLAS_STATUS_SUCCESS;
}

/* The NVIDIA driver that --device auto looks for before it tries the GPU (cuda_module.h):
 * these fakes are it. */
cv_status cv_cuda_driver_check(cv_err *err) {
    (void)err;
    return CV_OK;
}

static void expect_nothing_live(const char *when) {
    cr_assert(streams == 0 && handles == 0 && buffers == 0 && descriptors == 0,
              "%s: %d streams, %d cuBLASLt handles, %d buffers, %d descriptors left", when,
              streams, handles, buffers, descriptors);
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
    cr_assert_geq(steps, 9, "only %d calls in the setup", steps);
}

Test(cuda_setup, a_machine_without_the_nvidia_driver_is_told_so) {
    reset(1);
    no_device_error = cudaErrorInsufficientDriver;
    cv_backend *be = NULL;
    cv_err err = {{0}};
    cr_assert_eq(cv_backend_cuda_create(NULL, &be, &err), CV_ERR_DEVICE, "%s", err.msg);
    /* "insufficient driver" reads as "upgrade it"; only a loaded driver can be too old */
    const bool driver_loaded = access("/proc/driver/nvidia/version", F_OK) == 0;
    const char *expected = driver_loaded ? cudaGetErrorString(cudaErrorInsufficientDriver)
                                         : "no NVIDIA driver is loaded on this machine";
    cr_assert(strstr(err.msg, "no usable CUDA device") && strstr(err.msg, expected),
              "'%s' does not say '%s'", err.msg, expected);
    expect_nothing_live("after the failed device count");
}

Test(cuda_setup, a_runtime_that_counts_no_devices_is_told_so) {
    reset(0);
    device_count = 0;
    cv_backend *be = (cv_backend *)&stream_token;
    cv_err err = {{0}};
    cr_assert_eq(cv_backend_cuda_create(NULL, &be, &err), CV_ERR_DEVICE, "%s", err.msg);
    cr_assert(strstr(err.msg, "no usable CUDA device (no NVIDIA GPU found)"), "%s", err.msg);
    cr_assert_null(be);
    expect_nothing_live("after counting no devices");
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

/* The call number of cublasLtCreate, counted on a setup that succeeds. */
static int cublas_create_call(void) {
    for (int n = 1;; n++) {
        reset(n);
        cv_backend *be;
        cv_err err;
        if (cv_backend_cuda_create(NULL, &be, &err) == CV_OK) {
            be->destroy(be);
            cr_assert_fail("no cuBLASLt start in the setup");
        }
        if (strcmp(injected, cublasLtGetStatusString(CUBLAS_STATUS_NOT_INITIALIZED)) == 0)
            return n;
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

/* Every precision sets up the same way, and the operand scratch of bf16 and tf32x3 is
 * reserved outside the setup: its failure is a status too, and leaves the backend whole. */
Test(cuda_setup, every_precision_sets_up_and_a_failed_reserve_is_a_status) {
    for (int p = 0; p < CV_PRECISION_COUNT; p++) {
        reset(0);
        cv_backend_options opt = {.precision = (cv_precision)p};
        cv_backend *be = NULL;
        cv_err err = {{0}};
        cr_assert_eq(cv_backend_cuda_create(&opt, &be, &err), CV_OK, "%s", err.msg);
        cr_assert_eq(be->precision, (cv_precision)p);
        const int before = buffers;
        cr_assert_eq(be->gemm_reserve(be, 1000, &err), CV_OK, "%s", err.msg);
        const bool rounds = p == CV_PRECISION_BF16 || p == CV_PRECISION_TF32X3;
        cr_assert_eq(buffers, before + rounds, "precision %d: %d buffers, %d before", p,
                     buffers, before);
        /* growing it: the stream is synchronised, then the allocation fails */
        fail_at = calls + 2;
        cv_status st = be->gemm_reserve(be, 1000000, &err);
        if (rounds) {
            cr_assert_eq(st, CV_ERR_DEVICE, "precision %d: status %d", p, st);
            cr_assert(strstr(err.msg, injected) && strstr(err.msg, cv_precision_name(p)), "%s",
                      err.msg);
            cr_assert(strchr(err.msg, '\n') == NULL, "more than one line: %s", err.msg);
            fail_at = 0;
            cr_assert_eq(be->gemm_reserve(be, 1000, &err), CV_OK, "%s", err.msg);
        } else {
            cr_assert_eq(st, CV_OK, "precision %d needs no scratch: %s", p, err.msg);
            fail_at = 0;
        }
        be->destroy(be);
        expect_nothing_live("after destroy");
    }
}

/* ---------- the GEMMs' host side, on fake cuBLASLt ---------- */

cudaError_t CUDARTAPI cudaMemcpyAsync(void *dst, const void *src, size_t count,
                                      enum cudaMemcpyKind kind, cudaStream_t stream) {
    (void)kind;
    cr_assert_eq(stream, our_stream);
    memcpy(dst, src, count);
    return cudaSuccess;
}

static bool capturing;
static char graph_token, exec_token;

cudaError_t CUDARTAPI cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode) {
    (void)mode;
    cr_assert_eq(stream, our_stream);
    capturing = true;
    return cudaSuccess;
}

cudaError_t CUDARTAPI cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *graph) {
    cr_assert_eq(stream, our_stream);
    capturing = false;
    *graph = (cudaGraph_t)&graph_token;
    return cudaSuccess;
}

cudaError_t CUDARTAPI cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph,
                                           unsigned long long flags) {
    (void)graph;
    (void)flags;
    *exec = (cudaGraphExec_t)&exec_token;
    return cudaSuccess;
}

cudaError_t CUDARTAPI cudaGraphDestroy(cudaGraph_t graph) {
    (void)graph;
    return cudaSuccess;
}

cudaError_t CUDARTAPI cudaGraphExecDestroy(cudaGraphExec_t exec) {
    (void)exec;
    return cudaSuccess;
}

/* What the descriptors hold, in their opaque words. */
enum { D_COMPUTE, D_SCALE, D_TRANSA, D_TRANSB };           /* matmul descriptor */
enum { L_TYPE, L_ROWS, L_COLS, L_LD };                     /* layout */
enum { P_WORKSPACE, P_ALIGN_A, P_ALIGN_B, P_ALIGN_C, P_ALIGN_D }; /* preference */
#define ALGO_MAGIC 0xa160a160u

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *desc,
                                                     cublasComputeType_t compute,
                                                     cudaDataType_t scale) {
    *desc = calloc(1, sizeof **desc);
    (*desc)->data[D_COMPUTE] = (uint64_t)compute;
    (*desc)->data[D_SCALE] = (uint64_t)scale;
    (*desc)->data[D_TRANSA] = (*desc)->data[D_TRANSB] = CUBLAS_OP_N;
    descriptors++;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
    free(desc);
    descriptors--;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                                           cublasLtMatmulDescAttributes_t attr,
                                                           const void *buf, size_t size) {
    cr_assert(attr == CUBLASLT_MATMUL_DESC_TRANSA || attr == CUBLASLT_MATMUL_DESC_TRANSB,
              "unexpected matmul attribute %d", (int)attr);
    cr_assert_eq(size, sizeof(int32_t));
    int32_t op;
    memcpy(&op, buf, sizeof op);
    cr_assert(op == CUBLAS_OP_N || op == CUBLAS_OP_T);
    desc->data[attr == CUBLASLT_MATMUL_DESC_TRANSA ? D_TRANSA : D_TRANSB] = (uint64_t)op;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *layout,
                                                       cudaDataType type, uint64_t rows,
                                                       uint64_t cols, int64_t ld) {
    cr_assert(rows >= 1 && cols >= 1 && ld >= (int64_t)rows, "layout %llu x %llu, ld %lld",
              (unsigned long long)rows, (unsigned long long)cols, (long long)ld);
    *layout = calloc(1, sizeof **layout);
    (*layout)->data[L_TYPE] = (uint64_t)type;
    (*layout)->data[L_ROWS] = rows;
    (*layout)->data[L_COLS] = cols;
    (*layout)->data[L_LD] = (uint64_t)ld;
    descriptors++;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
    free(layout);
    descriptors--;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *pref) {
    *pref = calloc(1, sizeof **pref);
    for (int i = P_ALIGN_A; i <= P_ALIGN_D; i++) (*pref)->data[i] = 256; /* the defaults */
    descriptors++;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
    free(pref);
    descriptors--;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceSetAttribute(
    cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attr, const void *buf,
    size_t size) {
    if (attr == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES) {
        cr_assert_eq(size, sizeof(uint64_t));
        memcpy(&pref->data[P_WORKSPACE], buf, size);
        return CUBLAS_STATUS_SUCCESS;
    }
    const int slot = attr == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES   ? P_ALIGN_A
                     : attr == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES ? P_ALIGN_B
                     : attr == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES ? P_ALIGN_C
                     : attr == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES ? P_ALIGN_D
                                                                          : -1;
    cr_assert(slot >= 0, "unexpected preference attribute %d", (int)attr);
    cr_assert_eq(size, sizeof(uint32_t));
    uint32_t v;
    memcpy(&v, buf, sizeof v);
    cr_assert(v >= 4 && v <= 256 && (v & (v - 1)) == 0, "alignment %u", v);
    pref->data[slot] = v;
    return CUBLAS_STATUS_SUCCESS;
}

/* The data, scale and compute types must be a combination cuBLASLt runs. */
static void expect_supported(cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a,
                             cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c) {
    const uint64_t compute = desc->data[D_COMPUTE], ab = a->data[L_TYPE];
    cr_assert_eq(desc->data[D_SCALE], (uint64_t)CUDA_R_32F);
    cr_assert_eq(b->data[L_TYPE], ab);
    cr_assert_eq(c->data[L_TYPE], (uint64_t)CUDA_R_32F);
    cr_assert(compute == CUBLAS_COMPUTE_32F || compute == CUBLAS_COMPUTE_32F_FAST_TF32,
              "compute type %llu", (unsigned long long)compute);
    cr_assert(ab == CUDA_R_32F || (ab == CUDA_R_16BF && compute == CUBLAS_COMPUTE_32F),
              "A/B type %llu with compute type %llu", (unsigned long long)ab,
              (unsigned long long)compute);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulAlgoGetHeuristic(
    cublasLtHandle_t lt, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a,
    cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
    cublasLtMatmulPreference_t pref, int requested, cublasLtMatmulHeuristicResult_t results[],
    int *returned) {
    cr_assert_eq((void *)lt, (void *)&handle_token);
    cr_assert_geq(requested, 1);
    cr_assert_eq(c, d, "D must be C's layout for an in-place matmul");
    cr_assert_eq(pref->data[P_WORKSPACE], (uint64_t)32 << 20, "the workspace is not offered");
    expect_supported(desc, a, b, c);
    heuristics++;
    memset(&results[0], 0, sizeof results[0]);
    results[0].algo.data[0] = ALGO_MAGIC;
    for (int i = P_ALIGN_A; i <= P_ALIGN_D; i++) results[0].algo.data[i] = pref->data[i];
    results[0].state = CUBLAS_STATUS_SUCCESS;
    results[0].workspaceSize = 4096;
    *returned = 1;
    return CUBLAS_STATUS_SUCCESS;
}

static float element(const void *p, cublasLtMatrixLayout_t l, uint64_t r, uint64_t c) {
    const size_t i = r + c * l->data[L_LD];
    if (l->data[L_TYPE] == CUDA_R_16BF) return cv_bits_float((uint32_t)((const uint16_t *)p)[i] << 16);
    return ((const float *)p)[i];
}

/* D = alpha op(A) op(B) + beta C in double, column-major, as the layouts say; FAST_TF32
 * rounds the inputs to TF32 first, as the tensor cores would. */
cublasStatus_t CUBLASWINAPI cublasLtMatmul(
    cublasLtHandle_t lt, cublasLtMatmulDesc_t desc, const void *alpha, const void *A,
    cublasLtMatrixLayout_t a, const void *B, cublasLtMatrixLayout_t b, const void *beta,
    const void *C, cublasLtMatrixLayout_t c, void *D, cublasLtMatrixLayout_t d,
    const cublasLtMatmulAlgo_t *algo, void *workspace, size_t workspace_bytes,
    cudaStream_t stream) {
    cr_assert_eq((void *)lt, (void *)&handle_token);
    cr_assert_eq(stream, our_stream);
    cr_assert(workspace != NULL && workspace_bytes >= 4096);
    cr_assert(C == D && c == d, "not in place");
    cr_assert_eq(algo->data[0], ALGO_MAGIC, "an algorithm not from the heuristic");
    const void *ptrs[4] = {A, B, C, D};
    for (int i = 0; i < 4; i++)
        cr_assert_eq((uintptr_t)ptrs[i] % algo->data[P_ALIGN_A + i], 0,
                     "matrix %d at %p is less aligned than the %llu bytes the algorithm was "
                     "chosen for", i, ptrs[i], (unsigned long long)algo->data[P_ALIGN_A + i]);
    expect_supported(desc, a, b, c);
    matmuls++;
    const bool na = desc->data[D_TRANSA] == CUBLAS_OP_N, nb = desc->data[D_TRANSB] == CUBLAS_OP_N;
    const uint64_t m = c->data[L_ROWS], n = c->data[L_COLS];
    const uint64_t k = na ? a->data[L_COLS] : a->data[L_ROWS];
    cr_assert_eq(na ? a->data[L_ROWS] : a->data[L_COLS], m, "op(A) rows vs C");
    cr_assert_eq(nb ? b->data[L_ROWS] : b->data[L_COLS], k, "op(B) rows vs op(A) columns");
    cr_assert_eq(nb ? b->data[L_COLS] : b->data[L_ROWS], n, "op(B) columns vs C");
    const bool tf32 = desc->data[D_COMPUTE] == CUBLAS_COMPUTE_32F_FAST_TF32;
    const double al = *(const float *)alpha, be = *(const float *)beta;
    for (uint64_t j = 0; j < n; j++)
        for (uint64_t i = 0; i < m; i++) {
            double s = 0;
            for (uint64_t p = 0; p < k; p++) {
                float x = na ? element(A, a, i, p) : element(A, a, p, i);
                float y = nb ? element(B, b, p, j) : element(B, b, j, p);
                if (tf32) {
                    x = cv_round_tf32(x);
                    y = cv_round_tf32(y);
                }
                s += (double)x * y;
            }
            float *out = (float *)D + i + j * c->data[L_LD];
            /* beta == 0: C is not read, as in cuBLASLt */
            *out = (float)(al * s + (be != 0 ? be * *out : 0.0));
        }
    return CUBLAS_STATUS_SUCCESS;
}

/* precision.cu's launchers, as host loops over the same per-element functions */
void cv_round_bf16_cuda(const float *a, int a_rows, int a_cols, int lda, uint16_t *a_out,
                        const float *b, int b_rows, int b_cols, int ldb, uint16_t *b_out,
                        cudaStream_t stream) {
    cr_assert_eq(stream, our_stream);
    packs++;
    for (int c = 0; c < a_cols; c++)
        for (int r = 0; r < a_rows; r++)
            a_out[(size_t)c * a_rows + r] = cv_bf16_bits(a[(size_t)c * lda + r]);
    for (int c = 0; c < b_cols; c++)
        for (int r = 0; r < b_rows; r++)
            b_out[(size_t)c * b_rows + r] = cv_bf16_bits(b[(size_t)c * ldb + r]);
}

void cv_split_tf32_cuda(const float *a, int a_rows, int a_cols, int lda, float *a_hi,
                        float *a_lo, const float *b, int b_rows, int b_cols, int ldb,
                        float *b_hi, float *b_lo, cudaStream_t stream) {
    cr_assert_eq(stream, our_stream);
    packs++;
    for (int c = 0; c < a_cols; c++)
        for (int r = 0; r < a_rows; r++)
            cv_split_tf32(a[(size_t)c * lda + r], &a_hi[(size_t)c * a_rows + r],
                          &a_lo[(size_t)c * a_rows + r]);
    for (int c = 0; c < b_cols; c++)
        for (int r = 0; r < b_rows; r++)
            cv_split_tf32(b[(size_t)c * ldb + r], &b_hi[(size_t)c * b_rows + r],
                          &b_lo[(size_t)c * b_rows + r]);
}

static cv_backend *fake_gpu(cv_precision p) {
    reset(0);
    cv_backend_options opt = {.precision = p};
    cv_backend *be;
    cv_err err;
    cr_assert_eq(cv_backend_cuda_create(&opt, &be, &err), CV_OK, "%s", err.msg);
    return be;
}

static double gamma_n(double n) { return n * 0x1p-24 / (1 - n * 0x1p-24); }

/* Row-major GEMMs with padded leading dimensions, every transpose, on the fake GPU of
 * precision p against the CPU backend at cpu_p: with the same rounded inputs, the two
 * differ only by the CPU's float sums (the fake sums in double), within
 * 2 gamma(k + 4) (|alpha| sum|a b| + |beta c0|) (1.01 for the rounded inputs' size). */
static void gemms_match_cpu(cv_precision p, cv_precision cpu_p, bool tf32_inputs) {
    test_rng r = test_rng_new("fake cuBLASLt gemm");
    cv_backend *gpu = fake_gpu(p), *cpu;
    cv_backend_options copt = {.precision = cpu_p};
    cv_err err;
    cr_assert_eq(cv_backend_cpu_create_with(&copt, &cpu, &err), CV_OK, "%s", err.msg);
    const int shapes[][3] = {{1, 1, 1}, {3, 5, 7}, {31, 33, 32}, {57, 33, 31}, {16, 40, 70}};
    for (int s = 0; s < 5; s++)
        for (int t = 0; t < 4; t++) {
            const bool ta = t & 1, tb = t >> 1;
            const int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
            const int lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 1, ldc = n + 2;
            const size_t na = (size_t)(ta ? k : m) * lda, nb = (size_t)(tb ? n : k) * ldb;
            const size_t nc = (size_t)m * ldc;
            float *a = malloc(na * 4), *b = malloc(nb * 4), *c0 = malloc(nc * 4);
            float *c = malloc(nc * 4), *g = malloc(nc * 4);
            test_fill(&r, a, na, -1, 1);
            test_fill(&r, b, nb, -1, 1);
            test_fill(&r, c0, nc, -1, 1);
            if (tf32_inputs) /* tf32 has no CPU backend: its inputs made TF32 already */
                for (size_t i = 0; i < na || i < nb; i++) {
                    if (i < na) a[i] = cv_round_tf32(a[i]);
                    if (i < nb) b[i] = cv_round_tf32(b[i]);
                }
            memcpy(c, c0, nc * 4);
            const float alpha = (float)test_uniform(&r, 0.5, 2);
            const float beta = s == 1 ? 0.0f : (float)test_uniform(&r, -1, 1);
            void *da, *db, *dc;
            cr_assert_eq(gpu->alloc(gpu, &da, na * 4 + 4, "a", &err), CV_OK);
            cr_assert_eq(gpu->alloc(gpu, &db, nb * 4, "b", &err), CV_OK);
            cr_assert_eq(gpu->alloc(gpu, &dc, nc * 4 + 4, "c", &err), CV_OK);
            /* A and C at 4 bytes past an allocation: alignments below 256 are planned for */
            float *a_dev = (float *)da + (s & 1), *c_dev = (float *)dc + (s & 1);
            gpu->upload(gpu, a_dev, a, na * 4);
            gpu->upload(gpu, db, b, nb * 4);
            gpu->upload(gpu, c_dev, c0, nc * 4);
            if (beta == 0.0f) /* C is not read: NaN stays out of the result */
                for (int i = 0; i < m; i++) c_dev[(size_t)i * ldc] = NAN;
            cpu->gemm(cpu, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
            gpu->gemm(gpu, ta, tb, m, n, k, alpha, a_dev, lda, db, ldb, beta, c_dev, ldc);
            gpu->download(gpu, g, c_dev, nc * 4);
            for (int i = 0; i < m; i++)
                for (int j = 0; j < ldc; j++) {
                    const size_t x = (size_t)i * ldc + j;
                    if (j >= n) {
                        cr_assert_eq(cv_float_bits(g[x]), cv_float_bits(c0[x]), "padding written");
                        continue;
                    }
                    double mag = 0;
                    for (int q = 0; q < k; q++)
                        mag += fabs((double)(ta ? a[(size_t)q * lda + i] : a[(size_t)i * lda + q]) *
                                    (tb ? b[(size_t)j * ldb + q] : b[(size_t)q * ldb + j]));
                    const double tol = 2 * gamma_n(k + 4) * (alpha * 1.01 * mag + fabs(beta * c0[x]));
                    cr_assert_leq(fabs((double)g[x] - c[x]), tol,
                                  "%s %dx%dx%d t%d (%d,%d): fake GPU %.9g, CPU %.9g",
                                  cv_precision_name(p), m, n, k, t, i, j, g[x], c[x]);
                }
            gpu->release(gpu, da);
            gpu->release(gpu, db);
            gpu->release(gpu, dc);
            free(a); free(b); free(c0); free(c); free(g);
        }
    cpu->destroy(cpu);
    gpu->destroy(gpu);
    expect_nothing_live("after the GEMMs");
}

Test(cuda_setup, fp32_gemms_on_fake_cublaslt_match_the_cpu) {
    gemms_match_cpu(CV_PRECISION_FP32, CV_PRECISION_FP32, false);
    cr_assert_eq(packs, 0, "fp32 converted its operands");
}

Test(cuda_setup, tf32_gemms_on_fake_cublaslt_match_the_cpu_on_tf32_inputs) {
    gemms_match_cpu(CV_PRECISION_TF32, CV_PRECISION_FP32, true);
}

Test(cuda_setup, bf16_gemms_on_fake_cublaslt_match_the_cpu_emulation) {
    gemms_match_cpu(CV_PRECISION_BF16, CV_PRECISION_BF16, false);
    cr_assert_eq(packs, matmuls, "one conversion launch per bf16 matmul");
}

Test(cuda_setup, tf32x3_gemms_on_fake_cublaslt_match_the_cpu_emulation) {
    gemms_match_cpu(CV_PRECISION_TF32X3, CV_PRECISION_TF32X3, false);
    cr_assert_eq(matmuls, 3 * packs, "three matmuls per tf32x3 GEMM");
}

/* Plans: one heuristic call per configuration; the C pointer's alignment is part of it;
 * the three tf32x3 passes share one; past the table's size, plans are made per call and
 * released, and the backend's destruction releases the rest. */
Test(cuda_setup, gemm_plans_are_made_once_per_configuration) {
    for (int q = 0; q < 2; q++) {
        const cv_precision p = q ? CV_PRECISION_TF32X3 : CV_PRECISION_FP32;
        cv_backend *be = fake_gpu(p);
        cv_err err;
        const int m = 8, n = 8, k = 8, LDC = 300;
        void *a, *b, *c;
        cr_assert_eq(be->alloc(be, &a, m * k * 4, "a", &err), CV_OK);
        cr_assert_eq(be->alloc(be, &b, k * n * 4, "b", &err), CV_OK);
        cr_assert_eq(be->alloc(be, &c, (size_t)m * LDC * 4 + 4, "c", &err), CV_OK);
        memset(a, 0, m * k * 4);
        memset(b, 0, k * n * 4);
        memset(c, 0, (size_t)m * LDC * 4 + 4);
        cr_assert_eq(be->gemm_reserve(be, 1000, &err), CV_OK, "%s", err.msg);
        const int per = q ? 3 : 1;
        be->gemm(be, false, true, m, n, k, 1.0f, a, k, b, k, 0.0f, c, n);
        be->gemm(be, false, true, m, n, k, 1.0f, a, k, b, k, 1.0f, c, n);
        cr_assert_eq(heuristics, 1, "%s: %d heuristic calls for one configuration",
                     cv_precision_name(p), heuristics);
        cr_assert_eq(matmuls, 2 * per);
        be->gemm(be, false, true, m, n, k, 1.0f, a, k, b, k, 0.0f, (float *)c + 1, n);
        cr_assert_eq(heuristics, 2, "a C 4 bytes off must be planned for its alignment");
        const int base = descriptors;
        for (int ldc = n + 1; ldc <= LDC; ldc++) /* 292 more configurations */
            be->gemm(be, false, true, m, n, k, 1.0f, a, k, b, k, 0.0f, c, ldc);
        cr_assert_eq(heuristics, 2 + (LDC - n), "%d heuristic calls", heuristics);
        cr_assert_eq(descriptors, 4 * 256, "%s: %d descriptors live (%d before)",
                     cv_precision_name(p), descriptors, base);
        be->gemm(be, false, true, m, n, k, 1.0f, a, k, b, k, 0.0f, c, LDC); /* past the table */
        cr_assert_eq(heuristics, 3 + (LDC - n));
        be->gemm(be, false, true, m, n, k, 1.0f, a, k, b, k, 0.0f, c, n); /* in the table */
        cr_assert_eq(heuristics, 3 + (LDC - n));
        be->release(be, a);
        be->release(be, b);
        be->release(be, c);
        be->destroy(be);
        expect_nothing_live("after the plans");
    }
}

/* A recorded GEMM allocates nothing: the reserved room serves it. */
Test(cuda_setup, a_recorded_gemm_allocates_nothing) {
    cv_backend *be = fake_gpu(CV_PRECISION_BF16);
    cv_err err;
    void *a, *b, *c;
    cr_assert_eq(be->alloc(be, &a, 64 * 4, "a", &err), CV_OK);
    cr_assert_eq(be->alloc(be, &b, 64 * 4, "b", &err), CV_OK);
    cr_assert_eq(be->alloc(be, &c, 64 * 4, "c", &err), CV_OK);
    memset(a, 0, 64 * 4);
    memset(b, 0, 64 * 4);
    cr_assert_eq(be->gemm_reserve(be, 64, &err), CV_OK, "%s", err.msg);
    const int before = mallocs;
    cr_assert(be->capture_begin(be));
    be->gemm(be, false, false, 8, 8, 8, 1.0f, a, 8, b, 8, 0.0f, c, 8);
    void *rec = be->capture_end(be);
    cr_assert_eq(mallocs, before, "the recorded GEMM allocated");
    be->recording_free(be, rec);
    /* outside a recording, a larger GEMM makes its own room */
    void *big;
    cr_assert_eq(be->alloc(be, &big, 4096 * 4, "big", &err), CV_OK);
    memset(big, 0, 4096 * 4);
    be->gemm(be, false, false, 64, 64, 64, 1.0f, big, 64, big, 64, 0.0f, big, 64);
    cr_assert_eq(mallocs, before + 2);
    be->release(be, a);
    be->release(be, b);
    be->release(be, c);
    be->release(be, big);
    be->destroy(be);
    expect_nothing_live("after recording");
}

/* A recorded GEMM larger than what was reserved cannot allocate: one line, abort. */
Test(cuda_setup, a_recorded_gemm_past_the_reserve_aborts, .signal = SIGABRT) {
    cv_backend *be = fake_gpu(CV_PRECISION_TF32X3);
    cv_err err;
    void *a;
    cr_assert_eq(be->alloc(be, &a, 4096 * 4, "a", &err), CV_OK);
    memset(a, 0, 4096 * 4);
    cr_assert_eq(be->gemm_reserve(be, 64, &err), CV_OK, "%s", err.msg);
    cr_assert(be->capture_begin(be));
    be->gemm(be, false, false, 64, 64, 64, 1.0f, a, 64, a, 64, 0.0f, a, 64);
}
