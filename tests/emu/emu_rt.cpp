// emu_rt.cpp: the emulator's fiber scheduler (x86-64), and a fake CUDA runtime, cuBLAS and
// cuBLASLt over host memory: an allocation ends at a guard page (a read or write past it
// faults), fresh memory is 0xff bytes (NaN floats), cudaFree'd memory is unmapped (a use
// after free faults), stream capture records closures that a graph launch replays, and
// cudaMalloc, cudaFree or a synchronization during capture fail as they would on a GPU.
// cublasSgemm and cublasLtMatmul are OpenBLAS's column-major sgemm (cuBLASLt's bf16
// operands widened to float first, FAST_TF32 inputs rounded to TF32 as the tensor cores
// would); timing events read the clock when the stream reaches them.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cblas.h>
#include <execinfo.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <vector>
#include <algorithm>
#include <ctime>

#include "cv_math.h"

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

// ---- fibers -------------------------------------------------------------------------
extern "C" void emu_switch(void **save_sp, void *new_sp);
asm(R"(
.text
.globl emu_switch
.type emu_switch,@function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
)");

namespace {
const size_t STACK = 256 * 1024;
struct Fiber { void *sp; bool done; };
std::vector<Fiber> fib;
std::vector<char *> stacks;
void *sched_sp;
int cur = -1, live = 0;
const std::function<void()> *body;
// block barrier
int bar_count = 0; unsigned bar_gen = 0;
// warp exchange
struct Warp { int count = 0, size = 32; unsigned gen = 0; uint64_t val[32]; uint64_t out[32]; };
std::vector<Warp> warps;
long progress = 0;
const char *kname = "";

void yield_() { emu_switch(&fib[cur].sp, sched_sp); }

[[noreturn]] void trampoline() {
    (*body)();
    fib[cur].done = true;
    live--;
    progress++;
    if (bar_count > 0 && bar_count == live) { bar_count = 0; bar_gen++; }
    emu_switch(&fib[cur].sp, sched_sp);
    abort();
}

void *fresh_stack(int i) {
    while ((int)stacks.size() <= i) stacks.push_back((char *)malloc(STACK));
    uintptr_t top = ((uintptr_t)stacks[i] + STACK) & ~(uintptr_t)15;
    void **sp = (void **)top;
    *--sp = nullptr;             // fake return address of trampoline
    *--sp = (void *)&trampoline; // ret target
    for (int k = 0; k < 6; k++) *--sp = nullptr;
    return sp;
}
}

void emu_syncthreads() {
    unsigned g = bar_gen;
    progress++;
    if (++bar_count == live) { bar_count = 0; bar_gen++; return; }
    while (bar_gen == g) yield_();
}

void emu_warp_exchange(uint64_t v, uint64_t *all) {
    Warp &w = warps[cur / 32];
    int lane = cur & 31;
    w.val[lane] = v;
    unsigned g = w.gen;
    progress++;
    if (w.size != 32) { fprintf(stderr, "emu: warp op in a partial warp of %s\n", kname); abort(); }
    if (++w.count == 32) { memcpy(w.out, w.val, sizeof w.out); w.count = 0; w.gen++; }
    else while (w.gen == g) yield_();
    memcpy(all, w.out, sizeof w.out);
    // second phase: nobody may deposit the next value before all have read this one
    g = w.gen;
    if (++w.count == 32) { w.count = 0; w.gen++; }
    else while (w.gen == g) yield_();
}

static unsigned long launch_no = 0;
void emu_run(const std::function<void()> &b, dim3 g, dim3 bd, const char *name) {
    blockDim = bd; gridDim = g; kname = name;
    size_t nb = (size_t)g.x * g.y * g.z;
    int nt = (int)(bd.x * bd.y * bd.z);
    std::vector<size_t> order(nb);
    for (size_t i = 0; i < nb; i++) order[i] = i;
    // blocks in a shuffled order: which one is last must not matter
    std::mt19937_64 rng(++launch_no * 0x9E3779B97F4A7C15ull);
    std::shuffle(order.begin(), order.end(), rng);
    body = &b;
    for (size_t ob : order) {
        blockIdx = make_uint3((unsigned)(ob % g.x), (unsigned)(ob / g.x % g.y), (unsigned)(ob / g.x / g.y));
        fib.assign(nt, Fiber{nullptr, false});
        warps.assign((nt + 31) / 32, Warp());
        warps.back().size = nt - 32 * (int)(warps.size() - 1);
        for (int t = 0; t < nt; t++) fib[t].sp = fresh_stack(t);
        live = nt; bar_count = 0;
        while (live > 0) {
            long before = progress;
            for (int t = 0; t < nt; t++) {
                if (fib[t].done) continue;
                cur = t;
                threadIdx = make_uint3(t % bd.x, t / bd.x % bd.y, t / bd.x / bd.y);
                emu_switch(&sched_sp, fib[t].sp);
            }
            if (progress == before && live > 0) {
                fprintf(stderr, "emu: deadlock in %s block (%u,%u): %d threads live, %d at the barrier\n",
                        name, blockIdx.x, blockIdx.y, live, bar_count);
                abort();
            }
        }
        cur = -1;
    }
}

// ---- graph capture --------------------------------------------------------------------
static bool capturing = false;
static std::vector<std::function<void()>> *captured = nullptr;
void emu_submit(std::function<void()> work) {
    if (capturing) captured->push_back(std::move(work));
    else work();
}

// ---- fake CUDA runtime -------------------------------------------------------------------
static std::map<void *, std::pair<void *, size_t>> allocs; // user ptr -> (map base, map len)
static size_t page() { return (size_t)sysconf(_SC_PAGESIZE); }
static int stream_token;
static cudaError_t last_error = cudaSuccess;
static cudaError_t fail(cudaError_t e, const char *what) {
    fprintf(stderr, "emu: %s\n", what);
    last_error = e;
    return e;
}

extern "C" {
cudaError_t cudaGetDeviceCount(int *n) { *n = getenv("EMU_NO_DEVICE") ? 0 : 1; return cudaSuccess; }
cudaError_t cudaSetDevice(int) { return cudaSuccess; }
cudaError_t cudaGetDevice(int *d) { *d = 0; return cudaSuccess; }
cudaError_t cudaDeviceGetPCIBusId(char *id, int len, int d) { snprintf(id, len, "0000:%02x:00.0", d); return cudaSuccess; }
cudaError_t cudaGetDeviceProperties_v2(cudaDeviceProp *p, int) {
    memset(p, 0, sizeof *p);
    strcpy(p->name, "Emulated GPU");
    p->multiProcessorCount = 2; p->totalGlobalMem = (size_t)8 << 30; p->major = 9;
    return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d) { return cudaGetDeviceProperties_v2(p, d); }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned) { *s = (cudaStream_t)&stream_token; return cudaSuccess; }
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) {
    if (capturing) return fail(cudaErrorStreamCaptureUnsupported, "synchronize during capture");
    return cudaSuccess;
}
cudaError_t cudaMalloc(void **ptr, size_t bytes) {
    if (capturing) return fail(cudaErrorStreamCaptureUnsupported, "cudaMalloc during capture");
    size_t ps = page(), body = (bytes + 15) / 16 * 16, len = (body + ps - 1) / ps * ps + 2 * ps;
    char *m = (char *)mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return cudaErrorMemoryAllocation;
    mprotect(m, ps, PROT_NONE);
    mprotect(m + len - ps, ps, PROT_NONE);
    char *p = m + len - ps - body;
    memset(p, 0xff, body);
    allocs[p] = {m, len};
    *ptr = p;
    return cudaSuccess;
}
cudaError_t cudaFree(void *p) {
    if (!p) return cudaSuccess;
    if (capturing) return fail(cudaErrorStreamCaptureUnsupported, "cudaFree during capture");
    auto it = allocs.find(p);
    if (it == allocs.end()) {
        fprintf(stderr, "emu: cudaFree of %p, never allocated; called from:\n", p);
        void *frames[32];
        backtrace_symbols_fd(frames, backtrace(frames, 32), 2);
        abort();
    }
    munmap(it->second.first, it->second.second);
    allocs.erase(it);
    return cudaSuccess;
}
cudaError_t cudaMallocHost(void **ptr, size_t bytes) {
    if (capturing) return fail(cudaErrorStreamCaptureUnsupported, "cudaMallocHost during capture");
    *ptr = malloc(bytes);
    return *ptr ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFreeHost(void *p) { free(p); return cudaSuccess; }
cudaError_t cudaMemGetInfo(size_t *f, size_t *t) { *f = (size_t)4 << 30; *t = (size_t)8 << 30; return cudaSuccess; }
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind, cudaStream_t) {
    emu_submit([=]() { memcpy(dst, src, n); });
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void *dst, int v, size_t n, cudaStream_t) {
    emu_submit([=]() { memset(dst, v, n); });
    return cudaSuccess;
}
cudaError_t cudaMemset(void *, int, size_t) { fprintf(stderr, "emu: legacy cudaMemset\n"); abort(); }
cudaError_t cudaGetLastError(void) { cudaError_t e = last_error; last_error = cudaSuccess; return e; }
cudaError_t cudaPeekAtLastError(void) { return last_error; }
const char *cudaGetErrorString(cudaError_t e) { static char b[64]; snprintf(b, sizeof b, "emulated CUDA error %d", (int)e); return b; }
cudaError_t cudaStreamBeginCapture(cudaStream_t, cudaStreamCaptureMode) {
    if (capturing) return fail(cudaErrorIllegalState, "nested capture");
    capturing = true;
    captured = new std::vector<std::function<void()>>();
    return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t *g) {
    capturing = false;
    *g = (cudaGraph_t)captured;
    captured = nullptr;
    return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *e, cudaGraph_t g, unsigned long long) {
    auto *v = (std::vector<std::function<void()>> *)g;
    *e = (cudaGraphExec_t) new std::vector<std::function<void()>>(*v);
    return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) { delete (std::vector<std::function<void()>> *)g; return cudaSuccess; }
cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t) {
    for (auto &f : *(std::vector<std::function<void()>> *)e) emu_submit(f);
    return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) { delete (std::vector<std::function<void()>> *)e; return cudaSuccess; }
cudaError_t cudaStreamIsCapturing(cudaStream_t, cudaStreamCaptureStatus *s) {
    *s = capturing ? cudaStreamCaptureStatusActive : cudaStreamCaptureStatusNone; return cudaSuccess;
}

// ---- fake cuBLAS (column-major Sgemm by OpenBLAS) ---------------------------------------
static int handle_token;
cublasStatus_t cublasCreate_v2(cublasHandle_t *h) { *h = (cublasHandle_t)&handle_token; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasDestroy_v2(cublasHandle_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetStream_v2(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t, void *, size_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }
const char *cublasGetStatusString(cublasStatus_t s) { static char b[64]; snprintf(b, sizeof b, "emulated cuBLAS status %d", (int)s); return b; }
cublasStatus_t cublasSgemm_v2(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                              const float *alpha, const float *A, int lda, const float *B, int ldb,
                              const float *beta, float *C, int ldc) {
    float al = *alpha, be = *beta;
    emu_submit([=]() {
        cblas_sgemm(CblasColMajor, ta == CUBLAS_OP_T ? CblasTrans : CblasNoTrans,
                    tb == CUBLAS_OP_T ? CblasTrans : CblasNoTrans, m, n, k, al, A, lda, B, ldb, be, C, ldc);
    });
    return CUBLAS_STATUS_SUCCESS;
}

// ---- fake cuBLASLt: descriptors in their opaque words, matmul by OpenBLAS -----------
enum { D_COMPUTE, D_TRANSA, D_TRANSB };   // matmul descriptor words
enum { L_TYPE, L_ROWS, L_COLS, L_LD };    // layout words
static int lt_token;
cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) { *h = (cublasLtHandle_t)&lt_token; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtDestroy(cublasLtHandle_t) { return CUBLAS_STATUS_SUCCESS; }
const char *cublasLtGetStatusString(cublasStatus_t s) { static char b[64]; snprintf(b, sizeof b, "emulated cuBLASLt status %d", (int)s); return b; }
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t compute, cudaDataType_t) {
    *d = (cublasLtMatmulDesc_t)calloc(1, sizeof **d);
    (*d)->data[D_COMPUTE] = (uint64_t)compute;
    (*d)->data[D_TRANSA] = (*d)->data[D_TRANSB] = CUBLAS_OP_N;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) { free(d); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr,
                                              const void *buf, size_t size) {
    if (attr != CUBLASLT_MATMUL_DESC_TRANSA && attr != CUBLASLT_MATMUL_DESC_TRANSB) {
        fprintf(stderr, "emu: matmul attribute %d is not emulated\n", (int)attr);
        abort();
    }
    int32_t op = 0;
    memcpy(&op, buf, size < sizeof op ? size : sizeof op);
    d->data[attr == CUBLASLT_MATMUL_DESC_TRANSA ? D_TRANSA : D_TRANSB] = (uint64_t)op;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
    *l = (cublasLtMatrixLayout_t)calloc(1, sizeof **l);
    (*l)->data[L_TYPE] = (uint64_t)type;
    (*l)->data[L_ROWS] = rows;
    (*l)->data[L_COLS] = cols;
    (*l)->data[L_LD] = (uint64_t)ld;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) { free(l); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) {
    *p = (cublasLtMatmulPreference_t)calloc(1, sizeof **p);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) { free(p); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t, cublasLtMatmulPreferenceAttributes_t,
                                                    const void *, size_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t, cublasLtMatrixLayout_t,
                                              cublasLtMatrixLayout_t, cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                                              cublasLtMatmulPreference_t, int requested,
                                              cublasLtMatmulHeuristicResult_t results[], int *returned) {
    if (requested < 1) return CUBLAS_STATUS_INVALID_VALUE;
    memset(&results[0], 0, sizeof results[0]);
    results[0].state = CUBLAS_STATUS_SUCCESS;
    *returned = 1;
    return CUBLAS_STATUS_SUCCESS;
}
// A matrix of layout l as column-major floats (bf16 widened, TF32-rounded when asked).
static std::vector<float> widened(const void *p, cublasLtMatrixLayout_t l, bool tf32) {
    // the last column ends at its last row: the ld padding past it is not the matrix's
    const size_t ld = l->data[L_LD], n = ld * (l->data[L_COLS] - 1) + l->data[L_ROWS];
    std::vector<float> out(n);
    for (size_t i = 0; i < n; i++) {
        float v = l->data[L_TYPE] == CUDA_R_16BF
                      ? cv_bits_float((uint32_t)((const uint16_t *)p)[i] << 16)
                      : ((const float *)p)[i];
        out[i] = tf32 ? cv_round_tf32(v) : v;
    }
    return out;
}
cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t desc, const void *alpha, const void *A,
                              cublasLtMatrixLayout_t a, const void *B, cublasLtMatrixLayout_t b,
                              const void *beta, const void *, cublasLtMatrixLayout_t c, void *D,
                              cublasLtMatrixLayout_t, const cublasLtMatmulAlgo_t *, void *, size_t,
                              cudaStream_t) {
    const bool ta = desc->data[D_TRANSA] == CUBLAS_OP_T, tb = desc->data[D_TRANSB] == CUBLAS_OP_T;
    const bool tf32 = desc->data[D_COMPUTE] == CUBLAS_COMPUTE_32F_FAST_TF32;
    const int m = (int)c->data[L_ROWS], n = (int)c->data[L_COLS];
    const int k = (int)(ta ? a->data[L_ROWS] : a->data[L_COLS]);
    const int lda = (int)a->data[L_LD], ldb = (int)b->data[L_LD], ldc = (int)c->data[L_LD];
    const float al = *(const float *)alpha, be = *(const float *)beta;
    cublasLtMatrixLayoutOpaque_t la = *a, lb = *b;
    emu_submit([=]() {
        std::vector<float> fa = widened(A, (cublasLtMatrixLayout_t)&la, tf32);
        std::vector<float> fb = widened(B, (cublasLtMatrixLayout_t)&lb, tf32);
        cblas_sgemm(CblasColMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, al,
                    fa.data(), lda, fb.data(), ldb, be, (float *)D, ldc);
    });
    return CUBLAS_STATUS_SUCCESS;
}

// ---- fake timing events: the clock when the stream reaches them ----------------------
cudaError_t cudaEventCreate(cudaEvent_t *e) { *e = (cudaEvent_t)calloc(1, sizeof(struct timespec)); return cudaSuccess; }
cudaError_t cudaEventDestroy(cudaEvent_t e) { free(e); return cudaSuccess; }
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
    emu_submit([=]() { clock_gettime(CLOCK_MONOTONIC, (struct timespec *)e); });
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    const struct timespec *a = (const struct timespec *)start, *b = (const struct timespec *)end;
    *ms = (float)(1e3 * (double)(b->tv_sec - a->tv_sec) + 1e-6 * (double)(b->tv_nsec - a->tv_nsec));
    return cudaSuccess;
}
}
