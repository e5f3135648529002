/* gemm_cuda.c: every GEMM of the CUDA backend, through cuBLASLt (see gemm_cuda.h).
 *
 * Row-major through column-major by swapping the operands: cuBLASLt computes
 * C^T (n, m) = op(B)^T (n, k) op(A)^T (k, m), so its A is our B and its B our A, with
 * the same transposes. Precisions (docs/design.md 2.7):
 *   fp32    one matmul, CUBLAS_COMPUTE_32F (no TF32: that takes COMPUTE_32F_FAST_TF32)
 *   tf32    one matmul, CUBLAS_COMPUTE_32F_FAST_TF32
 *   bf16    both operands rounded to bf16 into scratch (cv_round_bf16_cuda), then one
 *           matmul with A and B CUDA_R_16BF, C and D CUDA_R_32F, CUBLAS_COMPUTE_32F
 *   tf32x3  both operands split into TF32 hi and lo parts (cv_split_tf32_cuda), then
 *           C = A_hi B_lo + A_lo B_hi + A_hi B_hi: three COMPUTE_32F_FAST_TF32 matmuls,
 *           the second and third with beta = 1. Their inputs are TF32 values already,
 *           so the tensor cores' own conversion changes nothing.
 */
#include "gemm_cuda.h"

#include <cublasLt.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cv_cuda.h"

/* Plans kept: the default model meets about 30 configurations (3 GEMMs per layer, at the
 * batch, the last partial batch and the evaluation's 500 rows); past this many, a GEMM is
 * planned for that call alone and the plan released after it. */
#define CV_GEMM_PLANS 256

typedef enum { KIND_FP32 = 1, KIND_TF32 = 2, KIND_BF16 = 3 } matmul_kind;

/* What picks a plan, in cuBLASLt's column-major terms. All int32_t, so there is no
 * padding and keys compare with memcmp. Pointer alignments are part of it: the heuristic
 * is told them (it assumes 256 bytes otherwise), and an algorithm chosen for one
 * alignment may not run at a smaller one. */
typedef struct {
    int32_t kind, op_a, op_b, m, n, k, lda, ldb, ldc, align_a, align_b, align_c;
} plan_key;

typedef struct {
    plan_key key;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, c; /* c is also D: the matmul runs in place */
    cublasLtMatmulAlgo_t algo;
} gemm_plan;

struct cv_gemm {
    cv_precision precision;
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *workspace;      /* CV_GEMM_WORKSPACE_BYTES */
    void *scratch;        /* bf16 / tf32x3 operands, scratch_bytes */
    size_t scratch_bytes;
    bool recording;
    int n_plans;
    gemm_plan plans[CV_GEMM_PLANS];
};

/* ---------- setup: statuses, never aborts ---------- */

static void plan_release(gemm_plan *p) {
    if (p->c) cublasLtMatrixLayoutDestroy(p->c);
    if (p->b) cublasLtMatrixLayoutDestroy(p->b);
    if (p->a) cublasLtMatrixLayoutDestroy(p->a);
    if (p->desc) cublasLtMatmulDescDestroy(p->desc);
    memset(p, 0, sizeof *p);
}

void cv_gemm_destroy(cv_gemm *g) {
    if (!g) return;
    for (int i = 0; i < g->n_plans; i++) plan_release(&g->plans[i]);
    if (g->scratch) cudaFree(g->scratch);
    if (g->workspace) cudaFree(g->workspace);
    if (g->lt) cublasLtDestroy(g->lt);
    free(g);
}

/* The device the calling thread works on, for messages. */
static int current_device(void) {
    int d = -1;
    cudaGetDevice(&d);
    return d;
}

cv_status cv_gemm_create(cv_precision precision, cudaStream_t stream, cv_gemm **out,
                         cv_err *err) {
    *out = NULL;
    cv_gemm *g = calloc(1, sizeof *g);
    if (!g) return cv_fail(err, CV_ERR_NOMEM, "out of host memory");
    g->precision = precision;
    g->stream = stream;
    cublasLtHandle_t lt = NULL; /* stored only once created: a failed create may leave it undefined */
    cublasStatus_t s = cublasLtCreate(&lt);
    if (s != CUBLAS_STATUS_SUCCESS) {
        free(g);
        return cv_fail(err, CV_ERR_DEVICE, "CUDA device %d is unusable: starting cuBLASLt "
                       "failed: %s", current_device(), cublasLtGetStatusString(s));
    }
    g->lt = lt;
    cv_status st = cv_cuda_malloc(&g->workspace, CV_GEMM_WORKSPACE_BYTES, "the cuBLASLt workspace",
                                err);
    if (st) {
        cv_gemm_destroy(g);
        return st;
    }
    *out = g;
    return CV_OK;
}

/* ---------- operand scratch ---------- */

static size_t round256(size_t bytes) { return (bytes + 255) & ~(size_t)255; }

/* Bytes of scratch for operands of ea and eb elements: bf16 copies of both, or the hi
 * and lo float parts of both; each part starts on 256 bytes. */
static size_t scratch_need(cv_precision p, size_t ea, size_t eb) {
    if (p == CV_PRECISION_BF16) return round256(ea * 2) + round256(eb * 2);
    if (p == CV_PRECISION_TF32X3) return 2 * round256(ea * 4) + 2 * round256(eb * 4);
    return 0;
}

cv_status cv_gemm_reserve(cv_gemm *g, size_t elems, cv_err *err) {
    CV_ASSERT(!g->recording);
    const size_t need = scratch_need(g->precision, elems, elems);
    if (need <= g->scratch_bytes) return CV_OK;
    cudaError_t e = cudaStreamSynchronize(g->stream); /* nothing queued still reads it */
    if (e != cudaSuccess) {
        cudaGetLastError();
        return cv_fail(err, CV_ERR_DEVICE, "CUDA device %d is unusable: synchronizing failed: "
                       "%s", current_device(), cudaGetErrorString(e));
    }
    if (g->scratch) cudaFree(g->scratch);
    g->scratch = NULL;
    g->scratch_bytes = 0;
    char what[64];
    snprintf(what, sizeof what, "the %s GEMM operands", cv_precision_name(g->precision));
    cv_status st = cv_cuda_malloc(&g->scratch, need, what, err);
    if (!st) g->scratch_bytes = need;
    return st;
}

void cv_gemm_set_recording(cv_gemm *g, bool recording) { g->recording = recording; }

/* Room for this GEMM's operands: grown here only outside a recording (where it would be
 * an allocation the graph cannot hold); cv_workspace_create reserves what the model needs. */
static void scratch_ensure(cv_gemm *g, size_t need) {
    if (need <= g->scratch_bytes) return;
    if (g->recording) {
        fprintf(stderr, "cvae: internal error: a recorded %s GEMM needs %zu bytes of operand "
                "scratch, %zu reserved (gemm_reserve)\n", cv_precision_name(g->precision),
                need, g->scratch_bytes);
        abort();
    }
    CV_CUDA_CHECK(cudaStreamSynchronize(g->stream));
    if (g->scratch) CV_CUDA_CHECK(cudaFree(g->scratch));
    g->scratch = NULL;
    g->scratch_bytes = 0;
    CV_CUDA_CHECK(cudaMalloc(&g->scratch, need));
    g->scratch_bytes = need;
}

/* ---------- plans ---------- */

static int32_t align_of(const void *p) {
    uintptr_t a = (uintptr_t)p, low = a & (~a + 1); /* the lowest set bit */
    return low == 0 || low > 256 ? 256 : (int32_t)low;
}

static const char *kind_name(int32_t kind) {
    return kind == KIND_BF16 ? "bf16" : kind == KIND_TF32 ? "tf32" : "fp32";
}

/* The descriptor, layouts and heuristic algorithm of one configuration. A failure here
 * is a failing cuBLASLt call at run time: one line, then abort, as every other one. */
static void plan_make(cv_gemm *g, const plan_key *key, gemm_plan *p) {
    memset(p, 0, sizeof *p);
    p->key = *key;
    const cublasComputeType_t compute =
        key->kind == KIND_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    const cudaDataType_t ab = key->kind == KIND_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    CV_CUBLASLT_CHECK(cublasLtMatmulDescCreate(&p->desc, compute, CUDA_R_32F));
    const int32_t op_a = key->op_a, op_b = key->op_b;
    CV_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA,
                                                     &op_a, sizeof op_a));
    CV_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB,
                                                     &op_b, sizeof op_b));
    /* the stored matrices: op(A) is (m, k), so A is (m, k) or, transposed, (k, m) */
    const bool na = op_a == CUBLAS_OP_N, nb = op_b == CUBLAS_OP_N;
    CV_CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&p->a, ab, (uint64_t)(na ? key->m : key->k),
                                                 (uint64_t)(na ? key->k : key->m), key->lda));
    CV_CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&p->b, ab, (uint64_t)(nb ? key->k : key->n),
                                                 (uint64_t)(nb ? key->n : key->k), key->ldb));
    CV_CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&p->c, CUDA_R_32F, (uint64_t)key->m,
                                                 (uint64_t)key->n, key->ldc));
    cublasLtMatmulPreference_t pref;
    CV_CUBLASLT_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t workspace = CV_GEMM_WORKSPACE_BYTES;
    CV_CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof workspace));
    const uint32_t align[4] = {(uint32_t)key->align_a, (uint32_t)key->align_b,
                               (uint32_t)key->align_c, (uint32_t)key->align_c};
    const cublasLtMatmulPreferenceAttributes_t align_attr[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (int i = 0; i < 4; i++)
        CV_CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, align_attr[i], &align[i],
                                                               sizeof align[i]));
    cublasLtMatmulHeuristicResult_t result;
    memset(&result, 0, sizeof result);
    int found = 0;
    cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(g->lt, p->desc, p->a, p->b, p->c, p->c,
                                                      pref, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (s != CUBLAS_STATUS_SUCCESS || found < 1 || result.state != CUBLAS_STATUS_SUCCESS) {
        int dev = -1;
        cudaGetDevice(&dev);
        fprintf(stderr, "cvae: cuBLASLt has no algorithm for a %s GEMM (column-major m %d n %d "
                "k %d, op %c%c, ld %d %d %d, alignment %d %d %d) on device %d: %s\n",
                kind_name(key->kind), key->m, key->n, key->k, na ? 'N' : 'T', nb ? 'N' : 'T',
                key->lda, key->ldb, key->ldc, key->align_a, key->align_b, key->align_c, dev,
                s != CUBLAS_STATUS_SUCCESS ? cublasLtGetStatusString(s)
                : found < 1 ? "none returned" : cublasLtGetStatusString(result.state));
        abort();
    }
    p->algo = result.algo;
}

/* The plan of key: from the table, or made now and kept there, or, with the table full,
 * made into *spare for this GEMM alone (the caller releases it: plan_done). */
static gemm_plan *plan_get(cv_gemm *g, const plan_key *key, gemm_plan *spare) {
    for (int i = 0; i < g->n_plans; i++)
        if (memcmp(&g->plans[i].key, key, sizeof *key) == 0) return &g->plans[i];
    gemm_plan *p = g->n_plans < CV_GEMM_PLANS ? &g->plans[g->n_plans++] : spare;
    plan_make(g, key, p);
    return p;
}

static void plan_done(gemm_plan *p, gemm_plan *spare) {
    if (p == spare) plan_release(spare);
}

/* One matmul C = alpha op(A) op(B) + beta C in column-major terms, in place. */
static void matmul(cv_gemm *g, const gemm_plan *p, float alpha, const void *a, const void *b,
                   float beta, float *c) {
    CV_CUBLASLT_CHECK(cublasLtMatmul(g->lt, p->desc, &alpha, a, p->a, b, p->b, &beta, c, p->c,
                                     c, p->c, &p->algo, g->workspace, CV_GEMM_WORKSPACE_BYTES,
                                     g->stream));
}

void cv_gemm_run(cv_gemm *g, bool ta, bool tb, int m, int n, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta, float *c,
                 int ldc) {
    if (m <= 0 || n <= 0) return;
    CV_ASSERT(k > 0);
    /* column-major: C^T (n, m) = op(B)^T op(A)^T; its first operand is our b */
    plan_key key;
    memset(&key, 0, sizeof key);
    key.op_a = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    key.op_b = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    key.m = n;
    key.n = m;
    key.k = k;
    key.ldc = ldc;
    key.align_c = align_of(c);
    const cv_precision p = g->precision;
    if (p == CV_PRECISION_FP32 || p == CV_PRECISION_TF32) {
        key.kind = p == CV_PRECISION_TF32 ? KIND_TF32 : KIND_FP32;
        key.lda = ldb;
        key.ldb = lda;
        key.align_a = align_of(b);
        key.align_b = align_of(a);
        gemm_plan spare, *plan = plan_get(g, &key, &spare);
        matmul(g, plan, alpha, b, a, beta, c);
        plan_done(plan, &spare);
        return;
    }
    /* the stored matrices, column-major: b is (n, k) untransposed, (k, n) transposed; a is
     * (k, m) untransposed, (m, k) transposed. Packed, their leading dimension is their rows. */
    const int b_rows = tb ? k : n, b_cols = tb ? n : k;
    const int a_rows = ta ? m : k, a_cols = ta ? k : m;
    const size_t eb = (size_t)n * k, ea = (size_t)m * k;
    scratch_ensure(g, scratch_need(p, eb, ea));
    key.lda = b_rows;
    key.ldb = a_rows;
    char *s = g->scratch;
    if (p == CV_PRECISION_BF16) {
        uint16_t *pb = (uint16_t *)s, *pa = (uint16_t *)(s + round256(eb * 2));
        cv_round_bf16_cuda(b, b_rows, b_cols, ldb, pb, a, a_rows, a_cols, lda, pa, g->stream);
        key.kind = KIND_BF16;
        key.align_a = align_of(pb);
        key.align_b = align_of(pa);
        gemm_plan spare, *plan = plan_get(g, &key, &spare);
        matmul(g, plan, alpha, pb, pa, beta, c);
        plan_done(plan, &spare);
        return;
    }
    CV_ASSERT(p == CV_PRECISION_TF32X3);
    float *b_hi = (float *)s, *b_lo = (float *)(s + round256(eb * 4));
    float *a_hi = (float *)(s + 2 * round256(eb * 4));
    float *a_lo = (float *)(s + 2 * round256(eb * 4) + round256(ea * 4));
    cv_split_tf32_cuda(b, b_rows, b_cols, ldb, b_hi, b_lo, a, a_rows, a_cols, lda, a_hi, a_lo,
                       g->stream);
    key.kind = KIND_TF32;
    key.align_a = align_of(b_hi); /* every part starts on 256 bytes: one plan for all three */
    key.align_b = align_of(a_hi);
    /* row-major A_hi B_lo + A_lo B_hi + A_hi B_hi, as the CPU emulation sums them */
    gemm_plan spare, *plan = plan_get(g, &key, &spare);
    matmul(g, plan, alpha, b_lo, a_hi, beta, c);
    matmul(g, plan, alpha, b_hi, a_lo, 1.0f, c);
    matmul(g, plan, alpha, b_hi, a_hi, 1.0f, c);
    plan_done(plan, &spare);
}
