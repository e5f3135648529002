/* backend_cpu.c: the reference backend, OpenMP loops over the per-element kernels of
 * cpu_kernels.h (cv_math.h's formulas, vectorised) plus CBLAS GEMMs.
 *
 * It is what the tests trust. Loops are split over rows (per-sample work) or over
 * columns (reductions over the batch), never both, so every sum is taken in one fixed
 * order and results are bitwise reproducible whatever the thread count.
 */
#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "backend/backend_cpu.h"
#include "backend/cpu_kernels.h"
#include "cv_math.h"
#include "cvae/backend.h"
#include "cvae/rng.h"

/* Below this many elements a parallel region costs more than it saves. */
#define PAR_MIN 16384

/* OpenBLAS takes a 128 MiB buffer for each thread that calls it at once, at the first
 * GEMM (and glibc reserves 128 MiB more for a new thread's malloc arena), and when an
 * allocation fails it retries for ever: under an address-space limit (ulimit -v) a run
 * would hang instead of failing. So under such a limit the backend reserves that address
 * space per thread when it is created, failing with one line when it cannot, and hands
 * it back just before its first GEMM. Without a limit there is nothing to reserve. */
#define BLAS_SPACE_PER_THREAD ((size_t)256 << 20)

/* The backend's own state: the reservation above, the precision's GEMM operand scratch
 * (see cpu_gemm) and the kernels of this CPU's instruction set. */
typedef struct {
    const cv_cpu_kernels *k;
    void *blas_reserve; /* NULL when there is none, or once handed back */
    size_t reserve_bytes;
    float *scratch;
    size_t scratch_floats;
    cv_comm *comm; /* the run's ranks, for allreduce (NULL: one process) */
} cpu_ctx;

static cpu_ctx *cpu_of(cv_backend *be) { return (cpu_ctx *)be->impl; }

static void release_blas_reserve(cpu_ctx *ctx) {
    if (ctx->blas_reserve) munmap(ctx->blas_reserve, ctx->reserve_bytes);
    ctx->blas_reserve = NULL;
}

/* The reservation, when RLIMIT_AS is set: address space only (no memory, no swap). */
static cv_status reserve_blas_space(cpu_ctx *ctx, cv_err *err) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return CV_OK;
    const int threads = omp_get_max_threads();
    ctx->reserve_bytes = (size_t)threads * BLAS_SPACE_PER_THREAD;
    void *p = mmap(NULL, ctx->reserve_bytes, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return cv_fail(err, CV_ERR_NOMEM,
                       "out of host memory: OpenBLAS needs %.0f MiB of address space for each "
                       "of %d threads, more than the limit (ulimit -v) leaves; raise it or "
                       "lower OMP_NUM_THREADS", BLAS_SPACE_PER_THREAD / 1048576.0, threads);
    ctx->blas_reserve = p;
    return CV_OK;
}

static void cpu_destroy(cv_backend *be) {
    release_blas_reserve(cpu_of(be));
    free(cpu_of(be)->scratch);
    free(be->impl);
    free(be);
}

static cv_status cpu_alloc(cv_backend *be, void **ptr, size_t bytes, const char *what,
                           cv_err *err) {
    (void)be;
    /* 64-byte alignment suits AVX-512 loads and keeps buffers off shared cache lines */
    size_t rounded = (bytes + 63) / 64 * 64;
    *ptr = aligned_alloc(64, rounded ? rounded : 64);
    if (!*ptr)
        return cv_fail(err, CV_ERR_NOMEM, "out of host memory allocating %zu bytes for %s",
                       bytes, what);
    return CV_OK;
}

static void cpu_release(cv_backend *be, void *ptr) { (void)be; free(ptr); }

static void cpu_copy(cv_backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    memcpy(dst, src, bytes);
}

/* [lo, hi) of n items for this thread: its even share, the bounds rounded down to
 * multiples of `align` (but for n itself), so neighbours write different cache lines. */
static void thread_share(size_t n, size_t align, size_t *lo, size_t *hi) {
    const size_t parts = (size_t)omp_get_num_threads(), id = (size_t)omp_get_thread_num();
    *lo = id == 0 ? 0 : n * id / parts / align * align;
    *hi = id + 1 == parts ? n : n * (id + 1) / parts / align * align;
}

/* One core alone cannot draw a server's memory bandwidth, so a large copy or zeroing is
 * split over the OpenMP threads (the bytes do not depend on who moves them). Zeroing the
 * gradients on one thread also left the other asleep for the step's first operation to
 * wake (docs/design.md 2.3). */
#define COPY_PAR_MIN (1u << 20)

static void cpu_zero(cv_backend *be, void *dst, size_t bytes) {
    (void)be;
#pragma omp parallel if (bytes > COPY_PAR_MIN)
    {
        size_t lo, hi;
        thread_share(bytes, 64, &lo, &hi);
        memset((char *)dst + lo, 0, hi - lo);
    }
}

/* OpenBLAS's own threads scale poorly on these thin GEMMs and spin against OpenMP's, so
 * OpenBLAS runs single-threaded and each GEMM is cut into blocks of rows (or columns) of
 * C that the OpenMP threads share out. The blocks depend on the shape alone, never on the
 * thread count: OpenBLAS picks its kernel (and so its summation order) by block size, and
 * the results must be the same bits for any OMP_NUM_THREADS. The count of blocks is the
 * largest power of two that leaves each at least GEMM_MIN_PART long (up to GEMM_PARTS),
 * so 2, 4, 8... threads share them evenly; each OpenBLAS call repacks the operand the
 * blocks share, so shorter blocks cost more than they spread (measured: blocks of 32
 * trained 12% slower than blocks of 100 on one thread). */
#define GEMM_SPLIT_MIN_FLOPS (2.0 * 64 * 64 * 64)
#define GEMM_PARTS 64
#define GEMM_MIN_PART 64

static void fp32_gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float *a,
                      int lda, const float *b, int ldb, float beta, float *c, int ldc) {
    const CBLAS_TRANSPOSE op_a = ta ? CblasTrans : CblasNoTrans;
    const CBLAS_TRANSPOSE op_b = tb ? CblasTrans : CblasNoTrans;
    const bool split_rows = m >= n;
    const int len = split_rows ? m : n;
    int parts = 1;
    while (parts < GEMM_PARTS && len / (2 * parts) >= GEMM_MIN_PART) parts *= 2;
#pragma omp parallel for if (2.0 * m * n * k > GEMM_SPLIT_MIN_FLOPS) schedule(static)
    for (int part = 0; part < parts; part++) {
        int lo = (int)((long)len * part / parts), hi = (int)((long)len * (part + 1) / parts);
        if (split_rows) {
            /* rows lo..hi of C need rows lo..hi of op(A) */
            const float *a_part = ta ? a + lo : a + (size_t)lo * lda;
            cblas_sgemm(CblasRowMajor, op_a, op_b, hi - lo, n, k, alpha, a_part, lda, b, ldb,
                        beta, c + (size_t)lo * ldc, ldc);
        } else {
            /* columns lo..hi of C need columns lo..hi of op(B) */
            const float *b_part = tb ? b + (size_t)lo * ldb : b + lo;
            cblas_sgemm(CblasRowMajor, op_a, op_b, m, hi - lo, k, alpha, a, lda, b_part, ldb,
                        beta, c + lo, ldc);
        }
    }
}

/* ---------- GEMMs at reduced input precision (docs/design.md 2.7) ----------
 * bf16: op(A) and op(B) rounded to bf16 (cv_round_bf16), then the fp32 GEMM above. A
 * product of two bf16 values is exact in float, so this is what a GPU's bf16 GEMM with
 * fp32 accumulation computes, up to the order of the sums.
 * tf32x3: each input split into hi + lo (cv_split_tf32), then C = A_hi B_lo + A_lo B_hi
 * + A_hi B_hi as three fp32 GEMMs accumulating into C, small terms first; the products of
 * TF32 values are exact in float too.
 * The rounded copies are packed (leading dimension = their width) into ctx->scratch,
 * sized by gemm_reserve; the rounding is per element and the GEMM blocks depend on the
 * shape alone, so the bits do not depend on the thread count. */

#define SCRATCH_ALIGN 16 /* floats: each packed operand starts on a 64-byte line */

static size_t aligned_floats(size_t n) { return (n + SCRATCH_ALIGN - 1) / SCRATCH_ALIGN * SCRATCH_ALIGN; }

/* Floats of scratch a GEMM with operands of ea and eb elements needs at precision p. */
static size_t scratch_need(cv_precision p, size_t ea, size_t eb) {
    if (p == CV_PRECISION_BF16) return aligned_floats(ea) + aligned_floats(eb);
    if (p == CV_PRECISION_TF32X3) return 2 * (aligned_floats(ea) + aligned_floats(eb));
    return 0;
}

static bool scratch_grow(cpu_ctx *c, size_t floats) {
    if (floats <= c->scratch_floats) return true;
    float *p = aligned_alloc(64, floats * sizeof(float));
    if (!p) return false;
    free(c->scratch);
    c->scratch = p;
    c->scratch_floats = floats;
    return true;
}

static cv_status cpu_gemm_reserve(cv_backend *be, size_t elems, cv_err *err) {
    size_t need = scratch_need(be->precision, elems, elems);
    if (scratch_grow(be->impl, need)) return CV_OK;
    return cv_fail(err, CV_ERR_NOMEM,
                   "out of host memory: the %s GEMM operands need %.1f MiB of scratch",
                   cv_precision_name(be->precision), need * sizeof(float) / 1048576.0);
}

/* dst (rows, cols) packed = src (rows, cols, leading dimension ld), each element rounded
 * (bf16) or split (tf32x3, the lo parts to dst_lo). */
static void pack_rounded(cv_precision p, const float *src, int rows, int cols, int ld,
                         float *dst, float *dst_lo) {
#pragma omp parallel for if ((long)rows * cols > PAR_MIN) schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *s = src + (size_t)r * ld;
        float *d = dst + (size_t)r * cols;
        if (p == CV_PRECISION_BF16) {
            for (int j = 0; j < cols; j++) d[j] = cv_round_bf16(s[j]);
        } else {
            float *dl = dst_lo + (size_t)r * cols;
            for (int j = 0; j < cols; j++) cv_split_tf32(s[j], &d[j], &dl[j]);
        }
    }
}

static void cpu_gemm(cv_backend *be, bool ta, bool tb, int m, int n, int k, float alpha,
                     const float *a, int lda, const float *b, int ldb, float beta, float *c,
                     int ldc) {
    release_blas_reserve(cpu_of(be));
    const cv_precision p = be->precision;
    if (p == CV_PRECISION_FP32 || m <= 0 || n <= 0 || k <= 0) {
        fp32_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    /* A as stored: (ta ? k : m) rows of (ta ? m : k); B: (tb ? n : k) rows of (tb ? k : n) */
    const int a_rows = ta ? k : m, a_cols = ta ? m : k;
    const int b_rows = tb ? n : k, b_cols = tb ? k : n;
    const size_t ea = (size_t)m * k, eb = (size_t)k * n;
    cpu_ctx *ctx = be->impl;
    const size_t need = scratch_need(p, ea, eb);
    if (!scratch_grow(ctx, need)) {
        fprintf(stderr, "cvae: out of host memory: a %s GEMM (%d x %d x %d) needs %.1f MiB of "
                "scratch\n", cv_precision_name(p), m, n, k, need * sizeof(float) / 1048576.0);
        abort();
    }
    float *a_hi = ctx->scratch, *a_lo = a_hi + aligned_floats(ea);
    if (p == CV_PRECISION_BF16) {
        float *b_r = a_lo; /* no lo parts */
        pack_rounded(p, a, a_rows, a_cols, lda, a_hi, NULL);
        pack_rounded(p, b, b_rows, b_cols, ldb, b_r, NULL);
        fp32_gemm(ta, tb, m, n, k, alpha, a_hi, a_cols, b_r, b_cols, beta, c, ldc);
        return;
    }
    CV_ASSERT(p == CV_PRECISION_TF32X3);
    float *b_hi = a_lo + aligned_floats(ea), *b_lo = b_hi + aligned_floats(eb);
    pack_rounded(p, a, a_rows, a_cols, lda, a_hi, a_lo);
    pack_rounded(p, b, b_rows, b_cols, ldb, b_hi, b_lo);
    fp32_gemm(ta, tb, m, n, k, alpha, a_hi, a_cols, b_lo, b_cols, beta, c, ldc);
    fp32_gemm(ta, tb, m, n, k, alpha, a_lo, a_cols, b_hi, b_cols, 1.0f, c, ldc);
    fp32_gemm(ta, tb, m, n, k, alpha, a_hi, a_cols, b_hi, b_cols, 1.0f, c, ldc);
}

static void cpu_bias_act_forward(cv_backend *be, float *y, const float *bias,
                                 const float *cond, const int32_t *labels, int rows,
                                 int cols, bool relu) {
    const cv_cpu_kernels *k = cpu_of(be)->k;
#pragma omp parallel for if ((long)rows * cols > PAR_MIN) schedule(static)
    for (int r = 0; r < rows; r++)
        k->bias_act_forward_row(y + (size_t)r * cols, bias,
                                cond ? cond + (size_t)labels[r] * cols : NULL, cols, relu);
}

static void cpu_bias_act_backward(cv_backend *be, float *dy, const float *y, float *dbias,
                                  float *dcond, const int32_t *labels, int rows, int cols,
                                  bool relu) {
    const cv_cpu_kernels *k = cpu_of(be)->k;
    /* each thread owns a block of columns and walks the rows in order: contiguous loads,
     * and every column's sum is taken in one fixed order */
#pragma omp parallel if ((long)rows * cols > PAR_MIN)
    {
        size_t lo, hi;
        thread_share((size_t)cols, 16, &lo, &hi);
        k->bias_act_backward_cols(dy, y, dbias, dcond, labels, rows, cols, (int)lo, (int)hi,
                                  relu);
    }
}

/* out[i] = element first + i of the normal stream (seed, stream), in chunks over the
 * threads: each element is drawn alone, so any split gives the same values. */
#define NORMAL_CHUNK 4096

static void normal_fill(const cv_cpu_kernels *k, float *out, size_t n, uint64_t seed,
                        uint64_t stream, uint64_t first) {
    const long chunks = (long)((n + NORMAL_CHUNK - 1) / NORMAL_CHUNK);
#pragma omp parallel for if (chunks > 1) schedule(static)
    for (long c = 0; c < chunks; c++) {
        const size_t lo = (size_t)c * NORMAL_CHUNK;
        const size_t len = n - lo < NORMAL_CHUNK ? n - lo : NORMAL_CHUNK;
        k->normal_fill(out + lo, len, seed, stream, first + lo);
    }
}

/* The prior row of batch row r: its label's (tables), or its own (per row). */
static int prior_row(bool per_row, const int32_t *labels, int r) {
    return per_row ? r : labels[r];
}

static void cpu_reparam_forward(cv_backend *be, const float *enc, float *eps, bool draw_eps,
                                uint64_t seed, uint64_t stream_base, const cv_step *st,
                                int first_row, const cv_prior *prior, const int32_t *labels,
                                float *z, float *kl, float *log_ratio, int rows, int latent) {
    const cv_cpu_kernels *k = cpu_of(be)->k;
    if (draw_eps)
        normal_fill(k, eps, (size_t)rows * latent, seed, stream_base + (st ? st->step : 0),
                    (uint64_t)first_row * latent);
#pragma omp parallel for if ((long)rows * latent > 1024) schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *mu = enc + (size_t)r * 2 * latent;
        const size_t row = prior ? (size_t)prior_row(prior->per_row, labels, r) * latent : 0;
        k->reparam_forward_row(mu, mu + latent, eps + (size_t)r * latent,
                               prior ? prior->m + row : NULL, prior ? prior->r + row : NULL,
                               z + (size_t)r * latent, &kl[r], log_ratio ? &log_ratio[r] : NULL,
                               latent);
    }
}

static void cpu_reparam_backward(cv_backend *be, const float *enc, const float *eps,
                                 const float *dz, float kl_scale, const float *unit_kl,
                                 float kl_floor, const cv_prior *prior, const int32_t *labels,
                                 cv_prior_grad *dprior, float *denc, int rows, int latent) {
    const cv_cpu_kernels *k = cpu_of(be)->k;
    /* rows are independent, except that the learned prior's table gradients are sums over
     * rows: with tables, one thread takes the rows in order; a per-row prior's gradients
     * are the rows' own, written */
    const bool tables = prior && !prior->per_row;
#pragma omp parallel for if (!tables && (long)rows * latent > 1024) schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *mu = enc + (size_t)r * 2 * latent;
        float *dmu = denc + (size_t)r * 2 * latent;
        const size_t row = prior ? (size_t)prior_row(prior->per_row, labels, r) * latent : 0;
        k->reparam_backward_row(mu, mu + latent, eps + (size_t)r * latent, dz + (size_t)r * latent,
                                kl_scale, unit_kl, kl_floor, prior ? prior->m + row : NULL,
                                prior ? prior->r + row : NULL, dmu, dmu + latent,
                                prior ? dprior->m + row : NULL, prior ? dprior->r + row : NULL,
                                tables, latent);
    }
}

static void cpu_prior_transform(cv_backend *be, const cv_prior *prior, const int32_t *labels,
                                float *z, int rows, int latent) {
    (void)be;
    if (!prior) return;
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < latent; j++) {
            size_t t = (size_t)prior_row(prior->per_row, labels, r) * latent + j;
            size_t i = (size_t)r * latent + j;
            z[i] = cv_reparam_z(prior->m[t], cv_clamp_logvar(prior->r[t]), z[i]);
        }
}

static void cpu_reconstruction(cv_backend *be, cv_likelihood likelihood, float sigma,
                               const float *logits, const float *x, float *rec,
                               float *dlogits, float grad_scale, int rows, int cols) {
    const cv_cpu_kernels *k = cpu_of(be)->k;
    const bool gauss = likelihood == CV_LIKELIHOOD_GAUSSIAN;
#pragma omp parallel for if ((long)rows * cols > PAR_MIN) schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *l = logits + (size_t)r * cols, *xr = x + (size_t)r * cols;
        float *d = dlogits ? dlogits + (size_t)r * cols : NULL;
        rec[r] = gauss ? k->gaussian_row(l, xr, sigma, d, grad_scale, cols)
                       : k->bernoulli_row(l, xr, d, grad_scale, cols);
    }
}

static void cpu_normal(cv_backend *be, float *out, int rows, int cols, uint64_t seed,
                       uint64_t first_stream) {
    const cv_cpu_kernels *k = cpu_of(be)->k;
#pragma omp parallel for if ((long)rows * cols > PAR_MIN) schedule(static)
    for (int r = 0; r < rows; r++)
        k->normal_fill(out + (size_t)r * cols, (size_t)cols, seed, first_stream + (uint64_t)r, 0);
}

static void cpu_pixels_from_logits(cv_backend *be, cv_likelihood likelihood, float sigma,
                                   const float *logits, int rows, int cols, bool mean,
                                   uint64_t seed, uint64_t first_stream, uint8_t *pixels) {
    (void)be;
#pragma omp parallel for if ((long)rows * cols > PAR_MIN) schedule(static)
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < cols; j++) {
            size_t i = (size_t)r * cols + j;
            uint64_t stream = first_stream + (uint64_t)r;
            pixels[i] = mean ? cv_pixel_mean(logits[i])
                        : likelihood == CV_LIKELIHOOD_GAUSSIAN
                            ? cv_pixel_gaussian(logits[i], sigma,
                                                cv_philox_normal(seed, stream, (uint64_t)j))
                            : cv_pixel_sample(logits[i],
                                              cv_philox_uniform(seed, stream, (uint64_t)j));
        }
}

static void cpu_adam(cv_backend *be, float *p, const float *g, float *m, float *v, size_t n,
                     const cv_adam_config *c, const cv_step *st) {
    if (st->skip) return;
    const int64_t t = st->step + 1;
    const float lr = cv_lr_at(c->lr, st->step, c->warmup_steps, c->total_steps, c->cosine);
    const float step_size = lr / (1.0f - powf(c->beta1, (float)t));
    const float inv_bc2_sqrt = 1.0f / sqrtf(1.0f - powf(c->beta2, (float)t));
    const double norm = sqrt(st->grad_sq);
    const float clip = c->clip_norm > 0.0f && norm > c->clip_norm ? (float)(c->clip_norm / norm)
                                                                   : 1.0f;
    const cv_adam_consts ac = {clip, c->beta1, c->beta2, c->eps, step_size, inv_bc2_sqrt};
    const cv_cpu_kernels *k = cpu_of(be)->k;
#pragma omp parallel if (n > PAR_MIN)
    {
        size_t lo, hi;
        thread_share(n, 16, &lo, &hi);
        k->adam(p + lo, g + lo, m + lo, v + lo, hi - lo, &ac);
    }
}

/* The squared norm scales every step under --clip-grad, so it is summed in an order that
 * does not depend on the thread count: NORM_PARTS fixed slices, each summed alone, then
 * the slices' sums in slice order. */
#define NORM_PARTS 64

static double squared_norm(const cv_cpu_kernels *k, const float *x, size_t n) {
    double part[NORM_PARTS];
#pragma omp parallel for if (n > PAR_MIN) schedule(static)
    for (int p = 0; p < NORM_PARTS; p++) {
        size_t lo = n * (size_t)p / NORM_PARTS, hi = n * (size_t)(p + 1) / NORM_PARTS;
        part[p] = k->sum_squares(x + lo, hi - lo);
    }
    double sq = 0.0;
    for (int p = 0; p < NORM_PARTS; p++) sq += part[p];
    return sq;
}

static void cpu_check_finite(cv_backend *be, const float *rec, const float *kl, int rows,
                             const float *grads, size_t n, cv_step *st) {
    if (st->halted) {
        st->skip = 1;
        return;
    }
    /* the squared norm (in double) is NaN or Inf when some element is, and reaches
     * CV_GRAD_LIMIT^2 when some element is too large for Adam: one vectorised pass, and a
     * second only to find the first bad element */
    const double sq = squared_norm(cpu_of(be)->k, grads, n);
    st->grad_sq = sq;
    int64_t bad = INT64_MAX;
    for (int r = 0; r < rows; r++)
        if (!isfinite(rec[r]) || !isfinite(kl[r])) bad = -1;
    if (bad == INT64_MAX && !(sq < (double)CV_GRAD_LIMIT * CV_GRAD_LIMIT))
        for (size_t i = 0; i < n; i++)
            if (!cv_grad_usable(grads[i])) {
                bad = (int64_t)i;
                break;
            }
    if (bad == INT64_MAX) return;
    st->skip = 1;
    st->nonfinite_steps++;
    if (st->first_bad_step < 0) {
        st->first_bad_step = st->step;
        st->first_bad_index = bad;
    }
    if (st->nonfinite_steps > st->allowed_nonfinite) st->halted = 1;
}

static void cpu_accumulate_loss(cv_backend *be, cv_loss_sums *sums, const float *rec,
                                const float *kl, int rows, const cv_step *st) {
    (void)be;
    if (st && st->skip) return;
    double a = 0.0, b = 0.0;
    for (int i = 0; i < rows; i++) {
        a += rec[i];
        b += kl[i];
    }
    sums->rec += a;
    sums->kl += b;
    sums->rows += rows;
    if (st) {
        sums->grad_norm += sqrt(st->grad_sq);
        sums->steps += 1.0;
    }
}

static void cpu_gather_batch(cv_backend *be, const cv_device_split *s, const cv_step *st,
                             int first, int rows, bool binarize, uint64_t seed, float *x,
                             int32_t *labels_out, float *cond_out) {
    const cv_cpu_kernels *k = cpu_of(be)->k;
    const int start = st->start + first, dim = s->dim, K = s->cond_width;
    const uint64_t stream = CV_STREAM_BINARIZE(st->step);
#pragma omp parallel for if ((long)rows * dim > PAR_MIN) schedule(static)
    for (int r = 0; r < rows; r++) {
        size_t src = (size_t)s->perm[start + r];
        k->gather_row(s->pixels ? s->pixels + src * dim : NULL,
                      s->fpixels ? s->fpixels + src * dim : NULL, x + (size_t)r * dim, dim,
                      binarize, seed, stream, (uint64_t)(first + r) * dim);
        if (s->labels) labels_out[r] = s->labels[src];
        if (s->conditions)
            memcpy(cond_out + (size_t)r * K, s->conditions + src * K, (size_t)K * sizeof(float));
    }
}

static void cpu_advance_step(cv_backend *be, cv_step *st, int rows) {
    (void)be;
    st->step += 1;
    st->start += rows;
    st->skip = 0;
}

static void cpu_allreduce(cv_backend *be, float *buf, size_t n) {
    cv_comm_sum_f32(cpu_of(be)->comm, buf, n);
}

static void cpu_loss_flag(cv_backend *be, const float *rec, const float *kl, int rows,
                          float *flag) {
    (void)be;
    bool finite = true;
    for (int r = 0; r < rows; r++) finite = finite && isfinite(rec[r]) && isfinite(kl[r]);
    *flag = finite ? 0.0f : NAN;
}

static bool cpu_capture_begin(cv_backend *be) {
    (void)be;
    return false;
}

static void cpu_copy_within(cv_backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
#pragma omp parallel if (bytes > COPY_PAR_MIN)
    {
        size_t lo, hi;
        thread_share(bytes, 64, &lo, &hi);
        memcpy((char *)dst + lo, (const char *)src + lo, hi - lo);
    }
}

/* The running log-sum-exps of evaluation: per row, so any split over rows gives the same
 * bits; libm's exp and log, not a vector variant. */
static void cpu_logsumexp_accumulate(cv_backend *be, double *lse_max, double *lse_sum,
                                     const float *rec, const float *log_ratio, int rows,
                                     bool reset) {
    (void)be;
#pragma omp parallel for if (rows > 4096) schedule(static)
    for (int r = 0; r < rows; r++) {
        double m = reset ? -INFINITY : lse_max[r], s = reset ? 0.0 : lse_sum[r];
        cv_lse_add(&m, &s, -(double)rec[r] + (double)log_ratio[r]);
        lse_max[r] = m;
        lse_sum[r] = s;
    }
}

static void cpu_logsumexp_merge(cv_backend *be, double *dst_max, double *dst_sum,
                                const double *src_max, const double *src_sum, double log_count,
                                double log_prior, int rows, bool reset) {
    (void)be;
#pragma omp parallel for if (rows > 4096) schedule(static)
    for (int r = 0; r < rows; r++) {
        double m = reset ? -INFINITY : dst_max[r], s = reset ? 0.0 : dst_sum[r];
        cv_lse_add(&m, &s, log_prior + cv_lse_log_mean(src_max[r], src_sum[r], log_count));
        dst_max[r] = m;
        dst_sum[r] = s;
    }
}

/* Every CPU operation has finished when it returns, so an event is a clock reading. */
static cv_status cpu_event_create(cv_backend *be, void **event, cv_err *err) {
    (void)be;
    *event = calloc(1, sizeof(struct timespec));
    if (!*event) return cv_fail(err, CV_ERR_NOMEM, "out of host memory for a timing event");
    return CV_OK;
}

static void cpu_event_record(cv_backend *be, void *event) {
    (void)be;
    clock_gettime(CLOCK_MONOTONIC, (struct timespec *)event);
}

static double cpu_event_elapsed_ms(cv_backend *be, void *start, void *end) {
    (void)be;
    const struct timespec *a = start, *b = end;
    return 1e3 * (double)(b->tv_sec - a->tv_sec) + 1e-6 * (double)(b->tv_nsec - a->tv_nsec);
}

static void cpu_event_destroy(cv_backend *be, void *event) {
    (void)be;
    free(event);
}

void cv_backend_cpu_set_kernels(cv_backend *be, const cv_cpu_kernels *k) {
    cpu_of(be)->k = k;
    snprintf(be->description, sizeof be->description,
             "CPU (%d thread%s, OpenBLAS %s kernels, %s loops)", omp_get_max_threads(),
             omp_get_max_threads() == 1 ? "" : "s", openblas_get_corename(), k->name);
}

cv_status cv_backend_cpu_create_with(const cv_backend_options *opt, cv_backend **out,
                                     cv_err *err) {
    *out = NULL;
    const cv_precision p = cv_backend_options_precision(opt);
    if (p != CV_PRECISION_FP32 && p != CV_PRECISION_BF16 && p != CV_PRECISION_TF32X3)
        return cv_fail(err, CV_ERR_USAGE, "--precision %s needs a GPU (--device cuda)",
                       cv_precision_name(p));
    cv_backend *be = calloc(1, sizeof *be);
    cpu_ctx *ctx = calloc(1, sizeof *ctx);
    cv_status st = be && ctx ? reserve_blas_space(ctx, err)
                             : cv_fail(err, CV_ERR_NOMEM, "out of host memory");
    if (st) {
        free(ctx);
        free(be);
        return st;
    }
    openblas_set_num_threads(1);
    be->impl = ctx;
    ctx->comm = opt ? opt->comm : NULL;
    be->precision = p;
    be->name = "cpu";
    be->host_memory = true;
    cv_backend_cpu_set_kernels(be, cv_cpu_kernels_best());
    be->destroy = cpu_destroy;
    be->alloc = cpu_alloc;
    be->release = cpu_release;
    be->upload = cpu_copy;
    be->download = cpu_copy;
    be->zero = cpu_zero;
    be->gemm = cpu_gemm;
    be->gemm_reserve = cpu_gemm_reserve;
    be->bias_act_forward = cpu_bias_act_forward;
    be->bias_act_backward = cpu_bias_act_backward;
    be->reparam_forward = cpu_reparam_forward;
    be->reparam_backward = cpu_reparam_backward;
    be->reconstruction = cpu_reconstruction;
    be->prior_transform = cpu_prior_transform;
    be->normal = cpu_normal;
    be->pixels_from_logits = cpu_pixels_from_logits;
    be->adam = cpu_adam;
    be->check_finite = cpu_check_finite;
    be->accumulate_loss = cpu_accumulate_loss;
    be->gather_batch = cpu_gather_batch;
    be->advance_step = cpu_advance_step;
    be->allreduce = cpu_allreduce;
    be->loss_flag = cpu_loss_flag;
    be->capture_begin = cpu_capture_begin;
    be->copy = cpu_copy_within;
    be->event_create = cpu_event_create;
    be->event_record = cpu_event_record;
    be->event_elapsed_ms = cpu_event_elapsed_ms;
    be->event_destroy = cpu_event_destroy;
    be->logsumexp_accumulate = cpu_logsumexp_accumulate;
    be->logsumexp_merge = cpu_logsumexp_merge;
    cv_backend_cpu_objectives(be);
    *out = be;
    return CV_OK;
}

cv_status cv_backend_cpu_create(cv_backend **out, cv_err *err) {
    return cv_backend_cpu_create_with(NULL, out, err);
}
