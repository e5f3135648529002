/* test_cuda.c: every CUDA operation against the CPU operation (the reference), and the
 * whole training step CPU vs GPU. Each test skips when no CUDA device is usable, so on a
 * machine without one they show as skipped, never as passed.
 *
 * Each comparison gives both backends identical inputs: the same host arrays are uploaded
 * (a GPU result that feeds a later operation is downloaded and handed to the CPU too), and
 * device buffers stay alive until the test (or one shape of it) is done with them
 * (gpu_free_all). Guard bytes after every GPU buffer must come back untouched. TF32 is off
 * (the backend's default).
 *
 * TOLERANCE POLICY. The GPU runs the same per-element formulas (cv_math.h) and the same
 * sums as the CPU, but not the same roundings:
 *   - nvcc contracts a*b + c into one fused multiply-add; gcc in ISO C11 mode rounds twice.
 *     One rounding per contracted pair may differ (Adam's m differs by 1 ulp in about a
 *     third of elements on the H100).
 *   - CUDA's expf and logf are within 2 ulp of the exact value, glibc's within 1, so a
 *     transcendental may differ by 3 ulp.
 *   - Sums run in other orders: trees, slabs, warp shuffles, cuBLAS's blocking.
 * So every comparison follows one of these rules, and each call says which and why:
 *   R1 exact (memcmp or ==): data movement, integers, flags, ReLU masks, Philox bits.
 *   R2 elementwise formula: |gpu - cpu| <= n EPS S, where EPS = FLT_EPSILON (2^-23), n
 *      twice the roundings that may differ (1 per basic operation or contracted FMA, 3 per
 *      expf or logf; doubled as a margin, since no count here has met a GPU yet), S the
 *      magnitude of the largest intermediate term, not of the result: a result near 0
 *      after cancellation keeps the absolute error of its terms. Computed per element on
 *      the host from the same inputs.
 *   R3 sum of k terms (column and row sums, dot products, norms): a k-term float sum in
 *      any order rounds by about sqrt(k) EPS times its partial sums, which never exceed
 *      sum |x|; the two sides differ by up to 2 sqrt(k) EPS sum|x| (DBL_EPSILON for
 *      double sums), sum|x| computed on the host. That is tight enough to see one term of
 *      k missing or added twice, for k up to ~40,000. Terms that are themselves computed
 *      add their R2 error once each.
 *   R4 noise drawn on the device: cuRAND's Box-Muller uses the __sincosf and __logf
 *      intrinsics (absolute error 2^-21.4 on [-pi, pi] and [0.5, 2], more outside),
 *      scaled by the radius sqrt(-2 log u) <= 6.8: drawn normals agree within 2e-5 +
 *      2e-5 |n|, the bound the first H100 run passed over a million draws. Everything
 *      computed from drawn noise is compared against a CPU run given the GPU's draws (R2,
 *      R3), so the noise difference is not compounded.
 *   R5 chains (a whole step, 200 steps): rounding passes through several GEMMs, a ReLU
 *      whose input is within rounding of 0 can switch, and Adam divides by sqrt(v); no
 *      per-element bound follows from R2/R3. These tests use bounds stated at the test.
 * Every float comparison also checks NaN/Inf parity and the whole tensor's normalised
 * mean squared error, sum (gpu - cpu)^2 / sum cpu^2 < NMSE_MAX: a backstop for errors
 * that each element's bound allows but that are systematic.
 */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cv_math.h"
#include "cvae/checkpoint.h"
#include "cvae/generate.h"
#include "cvae/latent.h"
#include "cvae/rng.h"
#include "cvae/train.h"
#include "cuda_harness.h"
#include "helpers.h"

TestSuite(cuda, .init = cuda_harness_setup, .fini = cuda_harness_teardown, .timeout = 600);

static const int ROWS[] = {1, 31, 32, 33, 257, 128};
static const int COLS[] = {1, 31, 32, 33, 257, 784};
#define NSHAPES 6

Test(cuda, gemm_matches_cpu) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda gemm");
    const int shapes[][3] = {{1, 1, 1}, {31, 33, 32}, {257, 33, 31}, {128, 400, 784},
                             {400, 784, 128}, {128, 784, 400}};
    for (int s = 0; s < 6; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
                size_t na = (size_t)m * k, nb = (size_t)k * n, nc = (size_t)m * n;
                float *a = malloc(na * 4), *b = malloc(nb * 4), *c = malloc(nc * 4),
                      *g = malloc(nc * 4), *aa = malloc(na * 4), *ab = malloc(nb * 4),
                      *ac = malloc(nc * 4);
                test_fill(&r, a, na, -1, 1);
                test_fill(&r, b, nb, -1, 1);
                test_fill(&r, c, nc, -1, 1);
                for (size_t i = 0; i < na; i++) aa[i] = fabsf(a[i]);
                for (size_t i = 0; i < nb; i++) ab[i] = fabsf(b[i]);
                for (size_t i = 0; i < nc; i++) ac[i] = fabsf(c[i]);
                float *da = to_gpu(a, na * 4), *db = to_gpu(b, nb * 4), *dc = to_gpu(c, nc * 4);
                int lda = ta ? m : k, ldb = tb ? k : n;
                cpu->gemm(cpu, ta, tb, m, n, k, 1.5f, a, lda, b, ldb, 0.5f, c, n);
                gpu->gemm(gpu, ta, tb, m, n, k, 1.5f, da, lda, db, ldb, 0.5f, dc, n);
                /* sum |x| of each output's k + 1 terms: 1.5 |A| |B| + 0.5 |C| */
                cpu->gemm(cpu, ta, tb, m, n, k, 1.5f, aa, lda, ab, ldb, 0.5f, ac, n);
                from_gpu(g, dc, nc * 4, "gemm C");
                /* R3 over k + 1 terms; the scaled products add 2 roundings each (R2) */
                double *tol = malloc(nc * sizeof *tol);
                for (size_t i = 0; i < nc; i++)
                    tol[i] = sum_tol(k + 1, ac[i], EPS) + 2 * EPS * ac[i];
                compare_each("gemm", c, g, nc, tol, NMSE_MAX);
                free(tol);
                gpu_free_all();
                free(a); free(b); free(c); free(g); free(aa); free(ab); free(ac);
            }
}

/* One bias_act forward (when `forward`) and backward, CPU vs GPU, on identical inputs,
 * then the backward again on the GPU from the same inputs: the same bits. K = 0: no
 * condition table. misalign: the GPU's y and dy start one float into their buffers, so
 * the backward takes its scalar path although cols % 4 == 0. */
static void bias_act_case(test_rng *r, int rows, int cols, int K, bool relu, bool misalign,
                          bool forward) {
    const size_t n = (size_t)rows * cols, nt = (size_t)(K ? K : 1) * cols;
    float *y = malloc(n * 4), *dy0 = malloc(n * 4), *dy = malloc(n * 4), *g = malloc(n * 4),
          *g2 = malloc(n * 4), *bias = malloc(cols * 4), *cond = malloc(nt * 4);
    float *db0 = malloc(cols * 4), *db = malloc(cols * 4), *gb = malloc(cols * 4),
          *gb2 = malloc(cols * 4);
    float *dc0 = malloc(nt * 4), *dc = malloc(nt * 4), *gc = malloc(nt * 4),
          *gc2 = malloc(nt * 4);
    int32_t *lab = malloc(rows * 4);
    test_fill(r, y, n, -1, 1);
    test_fill(r, bias, cols, -1, 1);
    test_fill(r, cond, nt, -1, 1);
    test_fill(r, dy0, n, -1, 1);
    test_fill(r, db0, cols, -1, 1); /* += into existing gradients */
    test_fill(r, dc0, nt, -1, 1);
    for (int i = 0; i < rows; i++) lab[i] = K ? (int32_t)test_uniform(r, 0, K) : 0;
    if (n > 1) y[n / 2] = NAN; /* NaN must flow through as on the CPU */
    const int off = misalign ? 1 : 0;
    float *d_y = (float *)to_gpu(NULL, (n + off) * 4) + off;
    float *d_dy = (float *)to_gpu(NULL, (n + off) * 4) + off;
    float *d_bias = to_gpu(bias, cols * 4), *d_cond = to_gpu(cond, nt * 4);
    float *d_db = to_gpu(db0, cols * 4), *d_dc = to_gpu(dc0, nt * 4);
    int32_t *d_lab = to_gpu(lab, rows * 4);
    gpu->upload(gpu, d_y, y, n * 4);
    if (forward) {
        cpu->bias_act_forward(cpu, y, bias, K ? cond : NULL, lab, rows, cols, relu);
        gpu->bias_act_forward(gpu, d_y, d_bias, K ? d_cond : NULL, d_lab, rows, cols, relu);
        from_gpu(g, d_y, n * 4, "y");
        /* R1: float additions and a max; no product, so nothing to contract */
        compare("bias_act_forward", y, g, n, 0, 0);
        gpu->upload(gpu, d_y, y, n * 4); /* identical inputs for the backward */
    }
    memcpy(dy, dy0, n * 4);
    memcpy(db, db0, cols * 4);
    memcpy(dc, dc0, nt * 4);
    gpu->upload(gpu, d_dy, dy0, n * 4);
    cpu->bias_act_backward(cpu, dy, y, db, K ? dc : NULL, lab, rows, cols, relu);
    gpu->bias_act_backward(gpu, d_dy, d_y, d_db, K ? d_dc : NULL, d_lab, rows, cols, relu);
    from_gpu(g, d_dy, n * 4, "masked dy");
    compare("masked dy", dy, g, n, 0, 0); /* R1: a copy or 0 */
    from_gpu(gb, d_db, cols * 4, "dbias");
    from_gpu(gc, d_dc, nt * 4, "dcond");
    /* R3: dbias[j] sums rows + 1 terms (its old value and the masked dy), dcond[c][j] the
     * old value and the rows of class c */
    double *ab = calloc(cols, sizeof *ab), *ac = calloc(nt, sizeof *ac), *kc = calloc(K + 1, 8);
    for (int j = 0; j < cols; j++) ab[j] = fabs(db0[j]);
    for (size_t i = 0; i < nt; i++) ac[i] = fabs(dc0[i]);
    for (int i = 0; i < rows; i++) {
        kc[lab[i]] += 1;
        for (int j = 0; j < cols; j++) {
            double a = fabs(dy[(size_t)i * cols + j]);
            ab[j] += a;
            ac[(size_t)lab[i] * cols + j] += a;
        }
    }
    for (int j = 0; j < cols; j++) ab[j] = sum_tol(rows + 1, ab[j], EPS);
    for (size_t i = 0; i < nt; i++) ac[i] = sum_tol(kc[i / cols] + 1, ac[i], EPS);
    char what[96];
    snprintf(what, sizeof what, "dbias (%dx%d, K %d, relu %d)", rows, cols, K, relu);
    compare_each(what, db, gb, cols, ab, NMSE_MAX);
    if (K) {
        snprintf(what, sizeof what, "dcond (%dx%d, K %d, relu %d)", rows, cols, K, relu);
        compare_each(what, dc, gc, nt, ac, NMSE_MAX);
    }
    /* run to run: the same inputs give the same bits */
    gpu->upload(gpu, d_dy, dy0, n * 4);
    gpu->upload(gpu, d_db, db0, cols * 4);
    gpu->upload(gpu, d_dc, dc0, nt * 4);
    gpu->bias_act_backward(gpu, d_dy, d_y, d_db, K ? d_dc : NULL, d_lab, rows, cols, relu);
    from_gpu(g2, d_dy, n * 4, "masked dy");
    from_gpu(gb2, d_db, cols * 4, "dbias");
    from_gpu(gc2, d_dc, nt * 4, "dcond");
    expect_same_bits("masked dy", g, g2, n * 4);
    expect_same_bits("dbias", gb, gb2, cols * 4);
    expect_same_bits("dcond", gc, gc2, nt * 4);
    gpu_free_all();
    free(y); free(dy0); free(dy); free(g); free(g2); free(bias); free(cond);
    free(db0); free(db); free(gb); free(gb2); free(dc0); free(dc); free(gc); free(gc2);
    free(lab); free(ab); free(ac); free(kc);
}

Test(cuda, bias_act_matches_cpu) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda bias_act");
    for (int s = 0; s < NSHAPES; s++)
        for (int relu = 0; relu < 2; relu++)
            bias_act_case(&r, ROWS[s], COLS[s] == 784 ? 400 : COLS[s], 10, relu, false, true);
}

Test(cuda, bias_act_backward_matches_cpu_on_awkward_and_large_shapes_and_repeats_its_bits) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda bias_act backward");
    /* every pair of awkward sizes, cycling through no table (ReLU or not), K = 10, 1, 256 */
    const int sizes[] = {1, 31, 32, 33, 257};
    const int Ks[] = {0, 0, 10, 1, 256};
    int v = 0;
    for (int a = 0; a < 5; a++)
        for (int b = 0; b < 5; b++, v++)
            bias_act_case(&r, sizes[a], sizes[b], Ks[v % 5], v % 5 != 1, false, false);
    /* the default model's layers, at batch 128 and at the largest slab counts */
    bias_act_case(&r, 128, 400, 10, true, false, false);  /* encoder and decoder layer 1 */
    bias_act_case(&r, 128, 40, 0, false, false, false);   /* encoder head */
    bias_act_case(&r, 128, 784, 0, false, false, false);  /* decoder output */
    bias_act_case(&r, 128, 400, 0, true, true, false);    /* 16-byte path refused */
    bias_act_case(&r, 500, 400, 256, true, false, false);
    bias_act_case(&r, 2048, 33, 3, true, false, false);
    if (quick()) return;
    bias_act_case(&r, 70001, 3, 10, true, false, false);  /* 32 slabs of 2188 rows */
    bias_act_case(&r, 70001, 5, 0, true, false, false);
    bias_act_case(&r, 20000, 256, 0, true, false, false);
    bias_act_case(&r, 100, 140001, 0, true, false, false); /* too many tiles: one slab */
    /* the large model's layers: 4096 x 4096, and K = 256 (fewer slabs: scratch bound) */
    bias_act_case(&r, 4096, 4096, 0, true, false, false);
    bias_act_case(&r, 4096, 4096, 10, true, false, false);
    bias_act_case(&r, 4096, 4096, 256, true, false, false);
}

/* The reparameterization's tolerances for one element (R2), from its inputs: z (n = 8:
 * expf, and mu + e eps contracted, doubled); the KL and log-ratio terms' magnitudes *_s (their
 * sum |x| for R3) and errors *_n (the log-ratio also moves with the GPU's own z); dmu and
 * ds. pm, pr: the learned prior's tables (NULL: the standard normal), t the entry. */
typedef struct {
    double z, kl_n, kl_s, lr_n, lr_s, dmu, ds;
} reparam_tol;

static reparam_tol reparam_element_tol(float mu, float s_raw, float eps, float dz, float ks,
                                       const float *pm, const float *pr, size_t t) {
    const double s = cv_clamp_logvar(s_raw), es = exp(s), e2 = exp(0.5 * s);
    const double l2pi = CV_LOG_2PI;
    const double z = mu + e2 * eps, dzv = 8 * EPS * (fabs(mu) + fabs(e2 * eps));
    reparam_tol o;
    o.z = dzv;
    if (!pm) {
        o.kl_s = 0.5 * (mu * mu + es + 1 + fabs(s));
        o.kl_n = 10 * EPS * o.kl_s;
        o.lr_s = 0.5 * (z * z + eps * eps + fabs(s) + 2 * l2pi);
        o.lr_n = 8 * EPS * o.lr_s + fabs(z) * dzv; /* z^2 / 2 moves by |z| dz */
        o.dmu = 4 * EPS * (fabs(dz) + ks * fabs(mu));
        o.ds = 20 * EPS * (fabs(dz * eps * 0.5 * e2) + ks * 0.5 * (es + 1));
    } else {
        const double m = pm[t], rr = cv_clamp_logvar(pr[t]), er = exp(-rr);
        const double d = fabs(mu) + fabs(m), zm = fabs(z) + fabs(m);
        o.kl_s = 0.5 * (fabs(rr) + fabs(s) + (es + d * d) * er + 1);
        o.kl_n = 16 * EPS * o.kl_s;
        o.lr_s = 0.5 * (zm * zm * er + fabs(rr) + eps * eps + fabs(s) + 2 * l2pi);
        o.lr_n = 14 * EPS * o.lr_s + zm * er * dzv;
        o.dmu = 12 * EPS * (fabs(dz) + ks * d * er);
        o.ds = 20 * EPS * (fabs(dz * eps * 0.5 * e2) + ks * 0.5 * (exp(s - rr) + 1));
    }
    return o;
}

/* Tolerances of the prior tables' gradients (R3 over each class's rows plus the old
 * value; R2 per term: dm's term ks (mu - m) e^-r has n = 12, dr's term
 * ks/2 (1 - (e^s + (mu - m)^2) e^-r) n = 20). */
static void prior_grad_tols(const float *enc, const float *pm, const float *pr,
                            const float *dm0, const float *dr0, const int32_t *lab, float ks,
                            int rows, int L, int K, double *tm, double *tr) {
    const size_t nt = (size_t)K * L;
    double *am = calloc(nt, 8), *ar = calloc(nt, 8), *em = calloc(nt, 8), *er_ = calloc(nt, 8),
           *k = calloc(K, 8);
    for (size_t i = 0; i < nt; i++) {
        am[i] = fabs(dm0[i]);
        ar[i] = fabs(dr0[i]);
    }
    for (int r = 0; r < rows; r++) {
        k[lab[r]] += 1;
        for (int j = 0; j < L; j++) {
            const size_t t = (size_t)lab[r] * L + j;
            const double mu = enc[(size_t)r * 2 * L + j];
            const double s = cv_clamp_logvar(enc[(size_t)r * 2 * L + L + j]);
            const double rr = cv_clamp_logvar(pr[t]), e = exp(-rr), d = fabs(mu) + fabs(pm[t]);
            const double sm = ks * d * e, sr = ks * 0.5 * (1 + (exp(s) + d * d) * e);
            am[t] += sm;
            ar[t] += sr;
            em[t] += 12 * EPS * sm;
            er_[t] += 20 * EPS * sr;
        }
    }
    for (size_t i = 0; i < nt; i++) {
        tm[i] = sum_tol(k[i / L] + 1, am[i], EPS) + em[i];
        tr[i] = sum_tol(k[i / L] + 1, ar[i], EPS) + er_[i];
    }
    free(am); free(ar); free(em); free(er_); free(k);
}

/* The bounds of one reparam_forward and reparam_backward: z and denc per element (R2),
 * kl and the log-ratio per row (R3 over L terms plus each term's R2 error). The prior
 * (pm NULL: the standard normal) is row lab[i] of the tables, or row i itself without lab
 * (a per-row prior). */
typedef struct {
    double *z, *kl, *lr, *denc;
} reparam_bounds;

static reparam_bounds reparam_bounds_of(const float *enc, const float *eps, const float *dz,
                                        float ks, const float *pm, const float *pr,
                                        const int32_t *lab, int rows, int L) {
    const size_t nz = (size_t)rows * L;
    reparam_bounds b = {malloc(nz * 8), calloc(rows, 8), calloc(rows, 8), malloc(2 * nz * 8)};
    double *sk = calloc(rows, 8), *sl = calloc(rows, 8);
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < L; j++) {
            const size_t e = (size_t)i * L + j, m = (size_t)i * 2 * L + j;
            const size_t t = lab ? (size_t)lab[i] * L + j : e;
            reparam_tol q = reparam_element_tol(enc[m], enc[m + L], eps[e], dz[e], ks, pm, pr, t);
            b.z[e] = q.z;
            b.kl[i] += q.kl_n;
            sk[i] += q.kl_s;
            b.lr[i] += q.lr_n;
            sl[i] += q.lr_s;
            b.denc[m] = q.dmu;
            b.denc[m + L] = q.ds;
        }
    for (int i = 0; i < rows; i++) {
        b.kl[i] += sum_tol(L, sk[i], EPS);
        b.lr[i] += sum_tol(L, sl[i], EPS);
    }
    free(sk);
    free(sl);
    return b;
}

/* The GPU's z, kl, log-ratio and denc against the CPU's, within b; h: (2 rows L) scratch. */
static void compare_reparam(const reparam_bounds *b, const float *z, const float *kl,
                            const float *lr, const float *denc, const float *d_z,
                            const float *d_kl, const float *d_lr, const float *d_denc, int rows,
                            int L, float *h) {
    const size_t nz = (size_t)rows * L;
    from_gpu(h, d_z, nz * 4, "z");
    compare_each("z", z, h, nz, b->z, NMSE_MAX);
    from_gpu(h, d_kl, rows * 4, "kl");
    compare_each("kl", kl, h, rows, b->kl, NMSE_MAX);
    from_gpu(h, d_lr, rows * 4, "log_ratio");
    compare_each("log_ratio", lr, h, rows, b->lr, NMSE_MAX);
    from_gpu(h, d_denc, 2 * nz * 4, "denc");
    compare_each("denc", denc, h, 2 * nz, b->denc, NMSE_MAX);
}

static void reparam_bounds_free(reparam_bounds *b) {
    free(b->z);
    free(b->kl);
    free(b->lr);
    free(b->denc);
}

Test(cuda, reparam_matches_cpu_with_given_and_drawn_noise) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda reparam");
    const int latents[] = {1, 31, 32, 33, 20, 256};
    const float ks = 0.7f;
    for (int s = 0; s < NSHAPES; s++)
        for (int variant = 0; variant < 4; variant++) {
            const int draw = variant & 1, with_prior = variant >> 1;
            const int rows = ROWS[s], L = latents[s], K = 3;
            const size_t ne = (size_t)rows * 2 * L, nz = (size_t)rows * L, nt = (size_t)K * L;
            float *enc = malloc(ne * 4), *eps = malloc(nz * 4), *ce = malloc(nz * 4);
            float *z = malloc(nz * 4), *kl = malloc(rows * 4), *lr = malloc(rows * 4);
            float *dz = malloc(nz * 4), *denc = malloc(ne * 4), *h = malloc(ne * 4);
            float *pm = malloc(nt * 4), *pr = malloc(nt * 4), *dm0 = malloc(nt * 4),
                  *dr0 = malloc(nt * 4), *dm = malloc(nt * 4), *dr = malloc(nt * 4),
                  *gdm = malloc(nt * 4), *gdr = malloc(nt * 4);
            int32_t *lab = malloc(rows * 4);
            test_fill(&r, enc, ne, -3, 3);
            test_fill(&r, dz, nz, -1, 1);
            enc[L] = 40.0f; /* beyond the clamp */
            for (size_t i = 0; i < nz; i++) eps[i] = (float)test_normal(&r);
            test_fill(&r, pm, nt, -1, 1);
            test_fill(&r, pr, nt, -1, 1);
            pr[nt - 1] = -35.0f; /* beyond the clamp: no gradient */
            test_fill(&r, dm0, nt, -1, 1);
            test_fill(&r, dr0, nt, -1, 1);
            for (int i = 0; i < rows; i++) lab[i] = (int32_t)test_uniform(&r, 0, K);
            cv_step st = {.step = (int64_t)test_uniform(&r, 0, 1e6)};
            const uint64_t seed = r.s;
            float *d_enc = to_gpu(enc, ne * 4), *d_eps = to_gpu(eps, nz * 4);
            float *d_z = to_gpu(NULL, nz * 4), *d_kl = to_gpu(NULL, rows * 4);
            float *d_lr = to_gpu(NULL, rows * 4), *d_dz = to_gpu(dz, nz * 4);
            float *d_denc = to_gpu(NULL, ne * 4);
            cv_step *d_st = to_gpu(&st, sizeof st);
            float *d_pm = to_gpu(pm, nt * 4), *d_pr = to_gpu(pr, nt * 4);
            float *d_dm = to_gpu(dm0, nt * 4), *d_dr = to_gpu(dr0, nt * 4);
            int32_t *d_lab = to_gpu(lab, rows * 4);
            cv_prior cp = {pm, pr, false}, gp = {d_pm, d_pr, false};
            cv_prior_grad cg = {dm, dr, false}, gg = {d_dm, d_dr, false};
            const cv_prior *cpp = with_prior ? &cp : NULL, *gpp = with_prior ? &gp : NULL;
            /* drawn noise as a rank of a data-parallel run draws it: from row first on */
            const int first = draw ? 7 : 0;
            gpu->reparam_forward(gpu, d_enc, d_eps, draw, seed, 17, d_st, first, gpp, d_lab, d_z,
                                 d_kl, d_lr, rows, L);
            if (draw) {
                /* R4; then the CPU runs on the GPU's draws */
                cv_normal_fill_from(ce, nz, seed, 17 + (uint64_t)st.step, (uint64_t)first * L);
                from_gpu(eps, d_eps, nz * 4, "eps");
                compare("drawn eps", ce, eps, nz, 2e-5, 2e-5);
            }
            cpu->reparam_forward(cpu, enc, eps, false, seed, 17, &st, 0, cpp, lab, z, kl, lr, rows,
                                 L);
            memcpy(dm, dm0, nt * 4);
            memcpy(dr, dr0, nt * 4);
            cpu->reparam_backward(cpu, enc, eps, dz, ks, NULL, 0.0f, cpp, lab,
                                  with_prior ? &cg : NULL, denc,
                                  rows, L);
            gpu->reparam_backward(gpu, d_enc, d_eps, d_dz, ks, NULL, 0.0f, gpp, d_lab,
                                  with_prior ? &gg : NULL, d_denc, rows, L);
            reparam_bounds bounds = reparam_bounds_of(enc, eps, dz, ks, cpp ? pm : NULL, pr, lab,
                                                      rows, L);
            compare_reparam(&bounds, z, kl, lr, denc, d_z, d_kl, d_lr, d_denc, rows, L, h);
            reparam_bounds_free(&bounds);
            if (with_prior) {
                double *tm = malloc(nt * 8), *tr = malloc(nt * 8);
                prior_grad_tols(enc, pm, pr, dm0, dr0, lab, ks, rows, L, K, tm, tr);
                from_gpu(gdm, d_dm, nt * 4, "d prior mean");
                from_gpu(gdr, d_dr, nt * 4, "d prior log-variance");
                compare_each("d prior mean", dm, gdm, nt, tm, NMSE_MAX);
                compare_each("d prior log-variance", dr, gdr, nt, tr, NMSE_MAX);
                free(tm);
                free(tr);
            }
            gpu_free_all();
            free(enc); free(eps); free(ce); free(z); free(kl); free(lr); free(dz); free(denc);
            free(h); free(pm); free(pr); free(dm0); free(dr0); free(dm); free(dr); free(gdm);
            free(gdr); free(lab);
        }
}

/* reparam_backward with the learned prior, CPU vs GPU, then the GPU again: the same bits. */
static void prior_grad_case(test_rng *r, int rows, int L, int K) {
    const size_t ne = (size_t)rows * 2 * L, nz = (size_t)rows * L, nt = (size_t)K * L;
    const float ks = 0.3f;
    float *enc = malloc(ne * 4), *eps = malloc(nz * 4), *dz = malloc(nz * 4);
    float *denc = malloc(ne * 4), *gdenc = malloc(ne * 4), *gdenc2 = malloc(ne * 4);
    float *pm = malloc(nt * 4), *pr = malloc(nt * 4), *dm0 = malloc(nt * 4), *dr0 = malloc(nt * 4);
    float *dm = malloc(nt * 4), *dr = malloc(nt * 4), *g[4];
    for (int i = 0; i < 4; i++) g[i] = malloc(nt * 4);
    int32_t *lab = malloc(rows * 4);
    test_fill(r, enc, ne, -3, 3);
    test_fill(r, dz, nz, -1, 1);
    for (size_t i = 0; i < nz; i++) eps[i] = (float)test_normal(r);
    test_fill(r, pm, nt, -1, 1);
    test_fill(r, pr, nt, -1, 1);
    test_fill(r, dm0, nt, -1, 1);
    test_fill(r, dr0, nt, -1, 1);
    for (int i = 0; i < rows; i++) lab[i] = (int32_t)test_uniform(r, 0, K);
    memcpy(dm, dm0, nt * 4);
    memcpy(dr, dr0, nt * 4);
    float *d_enc = to_gpu(enc, ne * 4), *d_eps = to_gpu(eps, nz * 4), *d_dz = to_gpu(dz, nz * 4);
    float *d_denc = to_gpu(NULL, ne * 4), *d_pm = to_gpu(pm, nt * 4), *d_pr = to_gpu(pr, nt * 4);
    float *d_dm = to_gpu(dm0, nt * 4), *d_dr = to_gpu(dr0, nt * 4);
    int32_t *d_lab = to_gpu(lab, rows * 4);
    cv_prior cp = {pm, pr, false}, gp = {d_pm, d_pr, false};
    cv_prior_grad cg = {dm, dr, false}, gg = {d_dm, d_dr, false};
    cpu->reparam_backward(cpu, enc, eps, dz, ks, NULL, 0.0f, &cp, lab, &cg, denc, rows, L);
    gpu->reparam_backward(gpu, d_enc, d_eps, d_dz, ks, NULL, 0.0f, &gp, d_lab, &gg, d_denc, rows,
                          L);
    from_gpu(g[0], d_dm, nt * 4, "d prior mean");
    from_gpu(g[1], d_dr, nt * 4, "d prior log-variance");
    from_gpu(gdenc, d_denc, ne * 4, "denc");
    double *tm = malloc(nt * 8), *tr = malloc(nt * 8), *td = malloc(ne * 8);
    prior_grad_tols(enc, pm, pr, dm0, dr0, lab, ks, rows, L, K, tm, tr);
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < L; j++) {
            const size_t e = (size_t)i * L + j, m = (size_t)i * 2 * L + j;
            reparam_tol t = reparam_element_tol(enc[m], enc[m + L], eps[e], dz[e], ks, pm, pr,
                                                (size_t)lab[i] * L + j);
            td[m] = t.dmu;
            td[m + L] = t.ds;
        }
    char what[96];
    snprintf(what, sizeof what, "d prior mean (%d rows, L %d, K %d)", rows, L, K);
    compare_each(what, dm, g[0], nt, tm, NMSE_MAX);
    snprintf(what, sizeof what, "d prior log-variance (%d rows, L %d, K %d)", rows, L, K);
    compare_each(what, dr, g[1], nt, tr, NMSE_MAX);
    compare_each("denc", denc, gdenc, ne, td, NMSE_MAX);
    gpu->upload(gpu, d_dm, dm0, nt * 4);
    gpu->upload(gpu, d_dr, dr0, nt * 4);
    gpu->reparam_backward(gpu, d_enc, d_eps, d_dz, ks, NULL, 0.0f, &gp, d_lab, &gg, d_denc, rows,
                          L);
    from_gpu(g[2], d_dm, nt * 4, "d prior mean");
    from_gpu(g[3], d_dr, nt * 4, "d prior log-variance");
    from_gpu(gdenc2, d_denc, ne * 4, "denc");
    expect_same_bits("d prior mean", g[0], g[2], nt * 4);
    expect_same_bits("d prior log-variance", g[1], g[3], nt * 4);
    expect_same_bits("denc", gdenc, gdenc2, ne * 4);
    gpu_free_all();
    free(enc); free(eps); free(dz); free(denc); free(gdenc); free(gdenc2); free(pm); free(pr);
    free(dm0); free(dr0); free(dm); free(dr); free(lab); free(tm); free(tr); free(td);
    for (int i = 0; i < 4; i++) free(g[i]);
}

Test(cuda, prior_table_gradients_match_cpu_for_any_classes_and_repeat_their_bits) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda prior grad");
    const int shapes[][3] = {{1, 1, 1},     {31, 20, 3},      {32, 16, 2},    {33, 33, 10},
                             {257, 20, 256}, {128, 20, 10},   {3000, 17, 1},  {4096, 256, 10},
                             {4096, 20, 256}, {70001, 20, 10}, {257, 257, 7}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        if (!quick() || shapes[s][0] <= 1000)
            prior_grad_case(&r, shapes[s][0], shapes[s][1], shapes[s][2]);
}

Test(cuda, reconstruction_matches_cpu_with_nan_and_inf) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda xent");
    const float sigma = 0.3f;
    for (int s = 0; s < NSHAPES; s++) {
        int rows = ROWS[s], cols = COLS[s];
        size_t n = (size_t)rows * cols;
        float *l = malloc(n * 4), *x = malloc(n * 4), *d = malloc(n * 4), *rec = malloc(rows * 4);
        float *h = malloc(n * 4);
        double *td = malloc(n * 8), *tr = malloc(rows * 8);
        test_fill(&r, l, n, -20, 20);
        test_fill(&r, x, n, 0, 1);
        if (rows > 2) {
            l[0] = NAN;                    /* row 0: NaN */
            l[(size_t)cols] = INFINITY;    /* row 1: an infinite logit */
            x[(size_t)cols] = 0.5f;
        }
        float *d_l = to_gpu(l, n * 4), *d_x = to_gpu(x, n * 4), *d_d = to_gpu(NULL, n * 4);
        float *d_rec = to_gpu(NULL, rows * 4);
        const float gs = 1.0f / rows;
        for (int lk = 0; lk < 2; lk++) {
            cv_likelihood like = lk ? CV_LIKELIHOOD_GAUSSIAN : CV_LIKELIHOOD_BERNOULLI;
            cpu->reconstruction(cpu, like, sigma, l, x, rec, d, gs, rows, cols);
            gpu->reconstruction(gpu, like, sigma, d_l, d_x, d_rec, d_d, gs, rows, cols);
            /* R2 per pixel, R3 over a row's cols pixels */
            const double iv = 1.0 / ((double)sigma * sigma);
            for (int i = 0; i < rows; i++) {
                double err = 0, abs_sum = 0;
                for (int j = 0; j < cols; j++) {
                    const size_t k = (size_t)i * cols + j;
                    const double lj = l[k], xj = x[k], p = 1 / (1 + exp(-lj));
                    float gj;
                    const double nll = lk ? cv_gaussian_nll(l[k], x[k], sigma, &gj)
                                          : cv_bernoulli_nll(l[k], x[k], &gj);
                    if (lk) {
                        /* p = sigmoid(l) moves by 5 ulp (expf, the division); d = p - x
                         * by that plus its own rounding; nll = d^2 iv / 2 + a constant
                         * (all counts doubled) */
                        const double dd = fabs(p - xj), ddv = 12 * EPS * (p + xj);
                        err += iv * dd * ddv + 6 * EPS * (0.5 * dd * dd * iv) +
                               4 * EPS * fabs(0.5 * (CV_LOG_2PI + 2 * log(sigma)));
                        /* dl = d iv p (1 - p): 1 - p loses p's error in absolute terms */
                        td[k] = gs * (iv * (p * (1 - p) * ddv + dd * 2 * 10 * EPS * p) +
                                      12 * EPS * fabs(gj));
                    } else {
                        /* max(l,0) - x l + log1p(exp(-|l|)): 8 roundings of terms up to
                         * |l|, doubled */
                        err += 16 * EPS * (2 * fabs(lj) + 1);
                        /* sigmoid(l) - x: 5 ulp of sigmoid, the subtraction's rounding,
                         * doubled */
                        td[k] = gs * 12 * EPS * (p + xj);
                    }
                    abs_sum += fabs(nll);
                }
                tr[i] = err + sum_tol(cols, abs_sum, EPS);
            }
            from_gpu(h, d_rec, rows * 4, "rec");
            compare_each(lk ? "gaussian rec" : "bernoulli rec", rec, h, rows, tr, NMSE_MAX);
            from_gpu(h, d_d, n * 4, "dlogits");
            compare_each(lk ? "gaussian dlogits" : "bernoulli dlogits", d, h, n, td, NMSE_MAX);
        }
        gpu_free_all();
        free(l); free(x); free(d); free(rec); free(h); free(td); free(tr);
    }
}

/* Adam's per-element bound (R2), in double from the inputs: m and v are one contracted
 * multiply-add each (the product folded into the FMA is not rounded), the step divides m
 * by sqrt(v) / sqrt(1 - b2^t) + eps (one more FMA), so p moves with both, plus the
 * rounding of p itself; each count doubled. */
static void adam_tols(const float *p1, const float *g, const float *m, const float *v, size_t n,
                      const cv_adam_config *c, const cv_step *st, double *tp, double *tm,
                      double *tv) {
    const double t = (double)st->step + 1;
    const double lr = cv_lr_at(c->lr, st->step, c->warmup_steps, c->total_steps, c->cosine);
    const double step = lr / (1 - pow(c->beta1, t)), ibc = 1 / sqrt(1 - pow(c->beta2, t));
    const double norm = sqrt(st->grad_sq);
    const double clip = c->clip_norm > 0 && norm > c->clip_norm ? (float)(c->clip_norm / norm) : 1;
    for (size_t i = 0; i < n; i++) {
        const double gc = clip * g[i];
        const double mn = c->beta1 * m[i] + (1 - c->beta1) * gc;
        const double vn = c->beta2 * v[i] + (1 - c->beta2) * gc * gc;
        tm[i] = 4 * EPS * (fabs(c->beta1 * m[i]) + fabs((1 - c->beta1) * gc));
        tv[i] = 4 * EPS * (fabs(c->beta2 * v[i]) + fabs((1 - c->beta2) * gc * gc));
        const double den = sqrt(vn) * ibc + c->eps, u = step * mn / den;
        const double dden = (vn > 0 ? ibc * tv[i] / (2 * sqrt(vn)) : 0) + EPS * den;
        const double du = step * tm[i] / den + fabs(u) * (dden / den + 4 * EPS);
        tp[i] = du + 2 * EPS * fabs(p1[i]);
    }
}

Test(cuda, adam_matches_cpu_and_repeats_its_bits) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda adam");
    const size_t sizes[] = {1, 31, 32, 33, 257, 660824};
    for (int s = 0; s < 6; s++) {
        const size_t n = sizes[s];
        float *p = malloc(n * 4), *g = malloc(n * 4), *m = malloc(n * 4), *v = malloc(n * 4);
        float *p0 = malloc(n * 4), *m0 = malloc(n * 4), *v0 = malloc(n * 4), *h[3], *h2[3];
        for (int k = 0; k < 3; k++) {
            h[k] = malloc(n * 4);
            h2[k] = malloc(n * 4);
        }
        double *tp = malloc(n * 8), *tm = malloc(n * 8), *tv = malloc(n * 8);
        test_fill(&r, p0, n, -1, 1);
        test_fill(&r, g, n, -1, 1);
        test_fill(&r, m0, n, -0.1, 0.1);
        test_fill(&r, v0, n, 0, 0.01);
        memcpy(p, p0, n * 4);
        memcpy(m, m0, n * 4);
        memcpy(v, v0, n * 4);
        /* warm-up, cosine and a clip that bites: grad_sq as the check would leave it */
        double sq = 0;
        for (size_t i = 0; i < n; i++) sq += (double)g[i] * g[i];
        cv_step st = {.step = (int64_t)test_uniform(&r, 0, 5000), .grad_sq = sq};
        cv_adam_config ac = {.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                             .cosine = 1, .warmup_steps = 100, .total_steps = 9000,
                             .clip_norm = (float)(0.5 * sqrt(sq))};
        float *d_p = to_gpu(p0, n * 4), *d_g = to_gpu(g, n * 4), *d_m = to_gpu(m0, n * 4),
              *d_v = to_gpu(v0, n * 4);
        cv_step *d_st = to_gpu(&st, sizeof st);
        cpu->adam(cpu, p, g, m, v, n, &ac, &st);
        gpu->adam(gpu, d_p, d_g, d_m, d_v, n, &ac, d_st);
        adam_tols(p, g, m0, v0, n, &ac, &st, tp, tm, tv);
        from_gpu(h[0], d_p, n * 4, "params");
        from_gpu(h[1], d_m, n * 4, "m");
        from_gpu(h[2], d_v, n * 4, "v");
        compare_each("adam p", p, h[0], n, tp, NMSE_MAX);
        compare_each("adam m", m, h[1], n, tm, NMSE_MAX);
        compare_each("adam v", v, h[2], n, tv, NMSE_MAX);
        /* the same inputs again: the same bits; and a skipped step changes nothing */
        gpu->upload(gpu, d_p, p0, n * 4);
        gpu->upload(gpu, d_m, m0, n * 4);
        gpu->upload(gpu, d_v, v0, n * 4);
        gpu->adam(gpu, d_p, d_g, d_m, d_v, n, &ac, d_st);
        from_gpu(h2[0], d_p, n * 4, "params");
        from_gpu(h2[1], d_m, n * 4, "m");
        from_gpu(h2[2], d_v, n * 4, "v");
        for (int k = 0; k < 3; k++) expect_same_bits("adam", h[k], h2[k], n * 4);
        st.skip = 1;
        gpu->upload(gpu, d_st, &st, sizeof st);
        gpu->adam(gpu, d_p, d_g, d_m, d_v, n, &ac, d_st);
        from_gpu(h2[0], d_p, n * 4, "params");
        expect_same_bits("a skipped step", h[0], h2[0], n * 4);
        gpu_free_all();
        free(p); free(g); free(m); free(v); free(p0); free(m0); free(v0);
        free(tp); free(tm); free(tv);
        for (int k = 0; k < 3; k++) {
            free(h[k]);
            free(h2[k]);
        }
    }
}

Test(cuda, accumulate_loss_matches_cpu_with_and_without_a_step) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda accumulate");
    const int sizes[] = {1, 31, 256, 257, 4096, 100003};
    for (int s = 0; s < 6; s++) {
        const int rows = sizes[s];
        float *rec = malloc(rows * 4), *kl = malloc(rows * 4);
        test_fill(&r, rec, rows, 0, 300);
        test_fill(&r, kl, rows, 0, 50);
        double abs_rec = 0, abs_kl = 0;
        for (int i = 0; i < rows; i++) {
            abs_rec += rec[i];
            abs_kl += kl[i];
        }
        float *d_rec = to_gpu(rec, rows * 4), *d_kl = to_gpu(kl, rows * 4);
        /* no step (evaluation), a step, a skipped step */
        cv_step st = {.grad_sq = test_uniform(&r, 0, 100)};
        cv_step *d_st = to_gpu(&st, sizeof st);
        const cv_loss_sums acc0 = {1.25, 0.5, 3, 2.0, 7};
        for (int k = 0; k < 3; k++) {
            st.skip = k == 2;
            gpu->upload(gpu, d_st, &st, sizeof st);
            const cv_step *cs = k ? &st : NULL, *gs = k ? d_st : NULL;
            cv_loss_sums acc = acc0, got, again;
            cv_loss_sums *d_acc = to_gpu(&acc0, sizeof acc0);
            cpu->accumulate_loss(cpu, &acc, rec, kl, rows, cs);
            gpu->accumulate_loss(gpu, d_acc, d_rec, d_kl, rows, gs);
            from_gpu(&got, d_acc, sizeof got, "sums");
            /* R3 in double over rows + 1 terms; rows, the norm's sqrt and the count: R1 */
            cr_assert(fabs(got.rec - acc.rec) <= sum_tol(rows + 1, abs_rec + 1.25, DBL_EPSILON),
                      "rec sum (case %d): gpu %.17g, cpu %.17g", k, got.rec, acc.rec);
            cr_assert(fabs(got.kl - acc.kl) <= sum_tol(rows + 1, abs_kl + 0.5, DBL_EPSILON),
                      "kl sum (case %d): gpu %.17g, cpu %.17g", k, got.kl, acc.kl);
            cr_assert(got.rows == acc.rows && got.grad_norm == acc.grad_norm &&
                          got.steps == acc.steps,
                      "case %d: rows %g/%g, grad_norm %.17g/%.17g, steps %g/%g", k, got.rows,
                      acc.rows, got.grad_norm, acc.grad_norm, got.steps, acc.steps);
            if (k == 1)
                cr_assert(got.steps == 8 && got.grad_norm == 2.0 + sqrt(st.grad_sq),
                          "a step adds its norm and 1");
            if (k == 2) cr_assert(memcmp(&got, &acc0, sizeof got) == 0, "a skipped step added");
            gpu->upload(gpu, d_acc, &acc0, sizeof acc0);
            gpu->accumulate_loss(gpu, d_acc, d_rec, d_kl, rows, gs);
            from_gpu(&again, d_acc, sizeof again, "sums");
            expect_same_bits("loss sums", &got, &again, sizeof got);
        }
        gpu_free_all();
        free(rec);
        free(kl);
    }
}

/* check_finite on both backends from the same step state; the GPU's result. */
static cv_step check_both(const float *rec, const float *kl, const float *d_rec,
                          const float *d_kl, int rows, const float *g, const float *d_g,
                          size_t n, cv_step *cs, cv_step *d_cs) {
    cv_step gs;
    gpu->upload(gpu, d_cs, cs, sizeof *cs);
    cpu->check_finite(cpu, rec, kl, rows, g, n, cs);
    gpu->check_finite(gpu, d_rec, d_kl, rows, d_g, n, d_cs);
    from_gpu(&gs, d_cs, sizeof gs, "step state");
    cr_assert(gs.skip == cs->skip && gs.nonfinite_steps == cs->nonfinite_steps &&
                  gs.first_bad_step == cs->first_bad_step &&
                  gs.first_bad_index == cs->first_bad_index && gs.halted == cs->halted &&
                  gs.step == cs->step,
              "check (n %zu): gpu skip %d bad %lld at %lld halted %d, cpu skip %d bad %lld at "
              "%lld halted %d", n, gs.skip, (long long)gs.first_bad_index,
              (long long)gs.first_bad_step, gs.halted, cs->skip, (long long)cs->first_bad_index,
              (long long)cs->first_bad_step, cs->halted);
    return gs;
}

Test(cuda, check_finite_flags_like_the_cpu_and_repeats_its_norm) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda check");
    const size_t sizes[] = {1, 33, 257, 262145, 660824};
    for (int s = 0; s < 5; s++) {
        const size_t n = sizes[s];
        const int rows = 129;
        float *g = malloc(n * 4), *rec = malloc(rows * 4), *kl = malloc(rows * 4);
        test_fill(&r, g, n, -1, 1);
        test_fill(&r, rec, rows, 0, 300);
        test_fill(&r, kl, rows, 0, 50);
        float *d_g = to_gpu(g, n * 4), *d_rec = to_gpu(rec, rows * 4), *d_kl = to_gpu(kl, rows * 4);
        const cv_step fresh = {.step = 5, .first_bad_step = -1, .first_bad_index = -1,
                               .allowed_nonfinite = 1};
        cv_step cs = fresh, *d_cs = to_gpu(&cs, sizeof cs);
        /* all finite: the norm, R3 in double over n exact squares */
        cv_step gs = check_both(rec, kl, d_rec, d_kl, rows, g, d_g, n, &cs, d_cs);
        cr_assert(fabs(gs.grad_sq - cs.grad_sq) <= sum_tol(n, cs.grad_sq, DBL_EPSILON),
                  "squared norm: gpu %.17g, cpu %.17g", gs.grad_sq, cs.grad_sq);
        cv_step again = fresh;
        gpu->upload(gpu, d_cs, &again, sizeof again);
        gpu->check_finite(gpu, d_rec, d_kl, rows, d_g, n, d_cs);
        from_gpu(&again, d_cs, sizeof again, "step state");
        expect_same_bits("squared norm", &gs.grad_sq, &again.grad_sq, sizeof gs.grad_sq);
        /* a bad gradient: the first bad index, whatever the thread order */
        g[n / 2] = NAN;
        if (n > 2) g[n - 1] = INFINITY;
        gpu->upload(gpu, d_g, g, n * 4);
        cs = fresh;
        check_both(rec, kl, d_rec, d_kl, rows, g, d_g, n, &cs, d_cs);
        cr_assert(cs.skip && cs.first_bad_index == (int64_t)(n / 2));
        /* finite, but too large for Adam's float state: flagged alike, first one named */
        g[n / 2] = -CV_GRAD_LIMIT;
        if (n > 2) g[n - 1] = 3e38f;
        gpu->upload(gpu, d_g, g, n * 4);
        cs = fresh;
        check_both(rec, kl, d_rec, d_kl, rows, g, d_g, n, &cs, d_cs);
        cr_assert(cs.skip && cs.first_bad_index == (int64_t)(n / 2), "a gradient of 2^63 "
                  "passed (n %zu)", n);
        g[n / 2] = NAN;
        if (n > 2) g[n - 1] = INFINITY;
        gpu->upload(gpu, d_g, g, n * 4);
        /* a bad loss as well: the loss is named (-1); the second bad step crosses the
         * limit of 1 and halts */
        rec[rows - 1] = INFINITY;
        gpu->upload(gpu, d_rec, rec, rows * 4);
        cs.step = 6;
        cs.skip = 0;
        check_both(rec, kl, d_rec, d_kl, rows, g, d_g, n, &cs, d_cs);
        cr_assert(cs.halted && cs.nonfinite_steps == 2 && cs.first_bad_step == 5);
        cs = fresh;
        check_both(rec, kl, d_rec, d_kl, rows, g, d_g, n, &cs, d_cs);
        cr_assert(cs.first_bad_index == -1, "the loss comes first");
        /* halted: skipped, not counted */
        cs.halted = 1;
        cs.skip = 0;
        check_both(rec, kl, d_rec, d_kl, rows, g, d_g, n, &cs, d_cs);
        /* finite again: the flags of the last call are gone */
        g[n / 2] = 0.25f;
        if (n > 2) g[n - 1] = 0.5f;
        rec[rows - 1] = 1;
        gpu->upload(gpu, d_g, g, n * 4);
        gpu->upload(gpu, d_rec, rec, rows * 4);
        cs = fresh;
        gs = check_both(rec, kl, d_rec, d_kl, rows, g, d_g, n, &cs, d_cs);
        cr_assert(!gs.skip);
        gpu_free_all();
        free(g); free(rec); free(kl);
    }
}

Test(cuda, gather_batch_and_advance_step_match_cpu_exactly) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda gather");
    /* gather from the uint8 set, in a shuffled order, from a batch start on the device */
    const int N = 1000, D = 784, B = 257;
    uint8_t *pix = malloc((size_t)N * D), lab[1000];
    int32_t perm[1000], lab_cpu[257], lab_gpu[257];
    for (size_t i = 0; i < (size_t)N * D; i++) pix[i] = (uint8_t)test_uniform(&r, 0, 256);
    for (int i = 0; i < N; i++) lab[i] = (uint8_t)test_uniform(&r, 0, 10);
    cv_shuffle(perm, N, r.s, 1);
    cv_step st = {.step = 12, .start = 700};
    float *x = malloc((size_t)B * D * 4), *gx = malloc((size_t)B * D * 4);
    uint8_t *d_pix = to_gpu(pix, (size_t)N * D), *d_lab = to_gpu(lab, N);
    int32_t *d_perm = to_gpu(perm, N * 4), *d_lo = to_gpu(NULL, B * 4);
    cv_step *d_st = to_gpu(&st, sizeof st);
    float *d_x = to_gpu(NULL, (size_t)B * D * 4);
    const cv_device_split src = {.pixels = pix, .labels = lab, .perm = perm, .n = N, .dim = D};
    const cv_device_split d_src = {.pixels = d_pix, .labels = d_lab, .perm = d_perm, .n = N,
                                   .dim = D};
    /* the whole batch, and a rank's rows of it (from row 7 on) */
    for (int variant = 0; variant < 4; variant++) {
        const int binarize = variant & 1, first = variant >> 1 ? 7 : 0, rows = B - first;
        cpu->gather_batch(cpu, &src, &st, first, rows, binarize, r.s, x, lab_cpu, NULL);
        gpu->gather_batch(gpu, &d_src, d_st, first, rows, binarize, r.s, d_x, d_lo, NULL);
        from_gpu(gx, d_x, (size_t)B * D * 4, "x");
        from_gpu(lab_gpu, d_lo, B * 4, "labels");
        /* R1: a division by 255 (correctly rounded on both) or a Philox comparison */
        cr_assert(memcmp(x, gx, (size_t)rows * D * 4) == 0,
                  "gathered batches differ (binarize %d, first row %d)", binarize, first);
        cr_assert(memcmp(lab_cpu, lab_gpu, rows * 4) == 0, "gathered labels differ");
    }
    cpu->advance_step(cpu, &st, 77);
    gpu->advance_step(gpu, d_st, 77);
    cv_step back;
    from_gpu(&back, d_st, sizeof back, "step");
    cr_assert(memcmp(&back, &st, sizeof st) == 0, "advance_step: step %lld start %d skip %d",
              (long long)back.step, back.start, back.skip);
    gpu_free_all();
    free(pix); free(x); free(gx);
}

/* The flag a rank adds to the gradients it sums: 0, or NaN when a row's loss is not
 * finite, from any of the kernel's threads (rows past one block's). */
Test(cuda, loss_flag_matches_cpu) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda loss flag");
    const int rows = 1500;
    float *rec = malloc(rows * 4), *kl = malloc(rows * 4);
    test_fill(&r, rec, rows, 50, 300);
    test_fill(&r, kl, rows, 0, 20);
    for (int variant = 0; variant < 3; variant++) {
        const int bad = (int)test_uniform(&r, 0, rows);
        if (variant == 1) rec[bad] = INFINITY;
        if (variant == 2) kl[bad] = NAN;
        float *d_rec = to_gpu(rec, rows * 4), *d_kl = to_gpu(kl, rows * 4);
        float *d_flag = to_gpu(NULL, 4), flag = 0.0f, gflag = 1.0f;
        cpu->loss_flag(cpu, rec, kl, rows, &flag);
        gpu->loss_flag(gpu, d_rec, d_kl, rows, d_flag);
        from_gpu(&gflag, d_flag, 4, "flag");
        cr_assert(variant ? isnan(flag) && isnan(gflag) : flag == 0.0f && gflag == 0.0f,
                  "variant %d (row %d): CPU %g, GPU %g", variant, bad, flag, gflag);
        gpu_free_all();
        rec[bad] = 100.0f;
        kl[bad] = 1.0f;
    }
    free(rec); free(kl);
}

Test(cuda, curand_normals_follow_the_cpu_stream_and_are_normal) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda normal");
    const size_t n = 1000003;
    float *c = malloc(n * 4), *g = malloc(n * 4);
    float *d = to_gpu(NULL, n * 4);
    cv_normal_fill(c, n, r.s, 42);
    gpu->normal(gpu, d, 1, (int)n, r.s, 42);
    from_gpu(g, d, n * 4, "normals");
    compare("normal", c, g, n, 2e-5, 2e-5); /* R4 */
    double mean = 0, var = 0;
    for (size_t i = 0; i < n; i++) mean += g[i];
    mean /= n;
    for (size_t i = 0; i < n; i++) var += (g[i] - mean) * (g[i] - mean);
    var /= n - 1;
    /* 6 standard errors */
    cr_assert(fabs(mean) < 6.0 / sqrt(n), "mean %g", mean);
    cr_assert(fabs(var - 1) < 6.0 * sqrt(2.0 / n), "variance %g", var);
    gpu_free_all();
    free(c);
    free(g);
}

/* Pixels that differ between the devices: none by more than 1, at most `allowed`. */
static void expect_pixels_close(const uint8_t *c, const uint8_t *g, size_t n, size_t allowed,
                                const char *what) {
    size_t differ = 0;
    for (size_t i = 0; i < n; i++) {
        cr_assert_leq(abs((int)c[i] - (int)g[i]), 1, "%s: pixel %zu is %d and %d", what, i, c[i],
                      g[i]);
        differ += c[i] != g[i];
    }
    cr_assert_leq(differ, allowed, "%s: %zu of %zu pixels differ", what, differ, n);
}

Test(cuda, pixels_and_row_streams_match_cpu) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda pixels");
    const float sigma = 0.3f;
    for (int s = 0; s < NSHAPES; s++) {
        int rows = ROWS[s], cols = COLS[s];
        size_t n = (size_t)rows * cols;
        float *l = malloc(n * 4), *z = malloc(n * 4), *gz = malloc(n * 4);
        uint8_t *p = malloc(n), *gp = malloc(n);
        test_fill(&r, l, n, -8, 8);
        float *d_l = to_gpu(l, n * 4), *d_z = to_gpu(NULL, n * 4);
        uint8_t *d_p = to_gpu(NULL, n);
        for (int lk = 0; lk < 2; lk++)
            for (int mean = 0; mean < 2; mean++) {
                cv_likelihood like = lk ? CV_LIKELIHOOD_GAUSSIAN : CV_LIKELIHOOD_BERNOULLI;
                cpu->pixels_from_logits(cpu, like, sigma, l, rows, cols, mean, r.s, 9, p);
                gpu->pixels_from_logits(gpu, like, sigma, d_l, rows, cols, mean, r.s, 9, d_p);
                from_gpu(gp, d_p, n, "pixels");
                /* A pixel flips where its value is within the devices' difference of a
                 * boundary. Mean: 255 sigmoid(l) moves by ~1 ulp (expf), so a pixel
                 * rounds differently with probability ~1e-5; a Bernoulli draw flips with
                 * probability |p_cpu - p_gpu| ~ 1e-7 (the uniforms are the same bits).
                 * Gaussian draw: 255 sigma n also moves (sinf, logf: a few ulp of |n| <= 6.8,
                 * ~2e-4 of a pixel): a flip by 1 with probability up to ~5e-4. */
                size_t allowed = lk && !mean ? n / 1000 + 1 : n / 10000 + 1;
                char what[64];
                snprintf(what, sizeof what, "%s %s pixels", lk ? "gaussian" : "bernoulli",
                         mean ? "mean" : "sampled");
                expect_pixels_close(p, gp, n, allowed, what);
            }
        cpu->normal(cpu, z, rows, cols, r.s, 1000);
        gpu->normal(gpu, d_z, rows, cols, r.s, 1000);
        from_gpu(gz, d_z, n * 4, "row normals");
        compare("row normals", z, gz, n, 2e-5, 2e-5); /* R4 */
        gpu_free_all();
        free(l); free(z); free(gz); free(p); free(gp);
    }
}

Test(cuda, prior_transform_matches_cpu) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda prior transform");
    const int shapes[][3] = {{1, 1, 1}, {31, 20, 10}, {33, 33, 3}, {257, 256, 10}, {1000, 20, 256}};
    for (int s = 0; s < 5; s++) {
        const int rows = shapes[s][0], L = shapes[s][1], K = shapes[s][2];
        const size_t nz = (size_t)rows * L, nt = (size_t)K * L;
        float *z0 = malloc(nz * 4), *z = malloc(nz * 4), *h = malloc(nz * 4);
        float *pm = malloc(nt * 4), *pr = malloc(nt * 4);
        double *tol = malloc(nz * 8);
        int32_t *lab = malloc(rows * 4);
        for (size_t i = 0; i < nz; i++) z0[i] = (float)test_normal(&r);
        test_fill(&r, pm, nt, -2, 2);
        test_fill(&r, pr, nt, -3, 3);
        pr[0] = 45.0f; /* beyond the clamp */
        for (int i = 0; i < rows; i++) lab[i] = (int32_t)test_uniform(&r, 0, K);
        memcpy(z, z0, nz * 4);
        float *d_z = to_gpu(z0, nz * 4), *d_pm = to_gpu(pm, nt * 4), *d_pr = to_gpu(pr, nt * 4);
        int32_t *d_lab = to_gpu(lab, rows * 4);
        /* the standard prior leaves z alone */
        gpu->prior_transform(gpu, NULL, d_lab, d_z, rows, L);
        from_gpu(h, d_z, nz * 4, "z");
        cr_assert(memcmp(h, z0, nz * 4) == 0, "the standard prior changed z");
        cv_prior cp = {pm, pr, false}, gp = {d_pm, d_pr, false};
        cpu->prior_transform(cpu, &cp, lab, z, rows, L);
        gpu->prior_transform(gpu, &gp, d_lab, d_z, rows, L);
        from_gpu(h, d_z, nz * 4, "z");
        /* R2: m + exp(r/2) z, expf and a contracted multiply-add: 4 roundings, doubled */
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < L; j++) {
                const size_t t = (size_t)lab[i] * L + j, e = (size_t)i * L + j;
                tol[e] = 8 * EPS *
                         (fabs(pm[t]) + exp(0.5 * cv_clamp_logvar(pr[t])) * fabs(z0[e]));
            }
        compare_each("prior_transform", z, h, nz, tol, NMSE_MAX);
        gpu_free_all();
        free(z0); free(z); free(h); free(pm); free(pr); free(tol); free(lab);
    }
}

/* cv_generate's images (idx file, header included) on backend be from the parameters
 * params: 500 of each of 10 classes, seed 11. */
static uint8_t *generate_on(cv_backend *be, const cv_model_config *cfg, const float *params,
                            bool mean, int batch, const char *out, size_t *size) {
    cv_model m;
    cv_workspace ws;
    cv_err err;
    cr_assert_eq(cv_model_create(be, cfg, &m, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(cv_workspace_create(&m, cv_generate_block_rows(&m), &ws, &err), CV_OK, "%s",
                 err.msg);
    be->upload(be, m.params, params, m.layout.n_params * sizeof(float));
    cv_generate_options o = {.cond = {.n_classes = 10}, .per = 500, .format = CV_FMT_IDX,
                             .mean = mean, .seed = 11, .batch = batch, .out = out,
                             .checkpoint = "test"};
    for (int c = 0; c < 10; c++) o.cond.classes[c] = c;
    cv_generate_result res;
    cr_assert_eq(cv_generate(&m, &ws, &o, &res, &err), CV_OK, "%s", err.msg);
    cv_workspace_destroy(&m, &ws);
    cv_model_destroy(&m);
    char path[4300];
    snprintf(path, sizeof path, "%s/images-idx3-ubyte", out);
    uint8_t *bytes = test_read_file(path, size);
    cr_assert_not_null(bytes, "no %s", path);
    return bytes;
}

/* How many pixels of two generated files differ; with mean, asserts none by more than 1
 * (the bounds cvae generate --help states). */
static size_t pixels_differing(const uint8_t *a, const uint8_t *b, size_t size, bool mean,
                               const char *what) {
    cr_assert(memcmp(a, b, 16) == 0, "%s: the headers differ", what);
    size_t differ = 0;
    for (size_t i = 16; i < size; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        differ += d != 0;
        if (mean) cr_assert_leq(d, 1, "%s: pixel %zu is %d and %d", what, i - 16, a[i], b[i]);
    }
    return differ;
}

Test(cuda, generated_images_agree_with_the_cpu_within_the_documented_bounds) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda generate");
    /* a trained model: its logits spread far wider than an untrained one's, as a user's do */
    char *dir = test_tmpdir(), out[4200], data[4200], run[4200], ckpt_path[4300];
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(run, sizeof run, "%s/run", dir);
    snprintf(ckpt_path, sizeof ckpt_path, "%s/model.ckpt", run);
    mkdir(data, 0777);
    test_write_dataset(data, 2000, 0, 28, 28, 10, false, r.s);
    test_train_small(data, run, 400, 20, 3, r.s);
    cv_checkpoint ck;
    cv_err err;
    cr_assert_eq(cv_checkpoint_load(ckpt_path, &ck, &err), CV_OK, "%s", err.msg);
    const cv_model_config cfg = ck.cfg;
    for (int mean = 1; mean >= 0; mean--) {
        const char *mode = mean ? "--mean" : "--sample";
        size_t nc, ng, nb;
        snprintf(out, sizeof out, "%s/cpu%d", dir, mean);
        uint8_t *c = generate_on(cpu, &cfg, ck.params, mean, 1000, out, &nc);
        snprintf(out, sizeof out, "%s/gpu%d", dir, mean);
        uint8_t *g = generate_on(gpu, &cfg, ck.params, mean, 1000, out, &ng);
        snprintf(out, sizeof out, "%s/gpu%d-batch7", dir, mean);
        uint8_t *b = generate_on(gpu, &cfg, ck.params, mean, 7, out, &nb);
        cr_assert(nc == ng && ng == nb);
        size_t pixels = nc - 16;
        size_t devices = pixels_differing(c, g, nc, mean, "CPU vs GPU");
        cr_log_info("%s: %zu of %zu pixels differ between the CPU and the GPU", mode, devices,
                    pixels);
        /* one device: fixed decoding blocks make --batch irrelevant to the bytes */
        cr_assert(memcmp(g, b, ng) == 0, "%s: GPU --batch 1000 and 7 gave other bytes", mode);
        /* a --sample pixel flips with probability |p_cpu - p_gpu|: fewer than 1 in 10,000 */
        if (!mean)
            cr_assert_leq(devices * 10000, pixels, "%s: %zu of %zu pixels flipped", mode,
                          devices, pixels);
        free(c);
        free(g);
        free(b);
    }
    cv_checkpoint_free(&ck);
    test_rmtree(dir);
    free(dir);
}

/* A small model and data set on one backend, for whole-step comparisons. */
typedef struct {
    cv_backend *be;
    cv_model m;
    cv_workspace ws;
    cv_device_split split;
} rig;

/* The rig's model: hidden 400, 257, latent 20, 10 classes (or the data's condition
 * vectors), with prior and likelihood, for the data's image shape. */
static void rig_make(rig *g, cv_backend *be, const cv_split *data, uint64_t seed, int batch,
                     cv_prior_kind prior, cv_likelihood likelihood) {
    const bool vectors = data->conditions != NULL;
    cv_model_config cfg = {.height = data->h, .width = data->w, .channels = data->channels,
                           .condition = vectors ? CV_COND_VECTORS : CV_COND_LABELS,
                           .cond_width = vectors ? data->cond_width : 10, .latent = 20,
                           .n_hidden = 2, .hidden = {400, 257}, .prior = prior,
                           .likelihood = likelihood, .sigma = 0.1f};
    cv_err err;
    g->be = be;
    cr_assert_eq(cv_model_create(be, &cfg, &g->m, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(cv_workspace_create(&g->m, batch, &g->ws, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(cv_device_split_upload(be, data, &g->split, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(cv_model_init_params(&g->m, seed, &err), CV_OK, "%s", err.msg);
}

/* Random learned-prior tables, the same in every rig (they start at 0, where a bug in
 * their gradient would hide). */
static void rig_random_prior(rig **rigs, int n, test_rng *r) {
    const cv_layout *lo = &rigs[0]->m.layout;
    if (lo->prior_m == CV_NO_COND) return;
    const size_t nt = (size_t)lo->cfg.cond_width * lo->cfg.latent;
    float *t = malloc(2 * nt * 4);
    test_fill(r, t, 2 * nt, -0.5, 0.5);
    for (int k = 0; k < n; k++) {
        cv_backend *be = rigs[k]->be;
        be->upload(be, rigs[k]->m.params + lo->prior_m, t, nt * 4);
        be->upload(be, rigs[k]->m.params + lo->prior_r, t + nt, nt * 4);
    }
    free(t);
}

static void rig_free(rig *g) {
    cv_device_split_free(g->be, &g->split);
    cv_workspace_destroy(&g->m, &g->ws);
    cv_model_destroy(&g->m);
}

/* Forward and backward of B rows from st's batch start, with the noise eps (B, 20) given,
 * into the rig's gradients (zeroed first). */
static void step_with_given_noise(rig *x, const cv_step *st, const float *eps, int B) {
    cv_backend *be = x->be;
    be->upload(be, x->ws.step, st, sizeof *st);
    be->upload(be, x->ws.eps, eps, (size_t)B * 20 * 4);
    be->gather_batch(be, &x->split, x->ws.step, 0, B, false, 0, x->ws.x, x->ws.labels, x->ws.cond);
    be->zero(be, x->m.grads, x->m.layout.n_params * 4);
    cv_noise given = {.draw = false};
    cv_model_forward(&x->m, &x->ws, B, &given, B, false);
    cv_model_backward(&x->m, &x->ws, B, B, 1.0f);
}

static cv_split random_split(test_rng *r, int n) {
    cv_split s = {.pixels = malloc((size_t)n * 784), .labels = malloc(n), .n = n, .h = 28,
                  .w = 28, .channels = 1};
    for (size_t i = 0; i < (size_t)n * 784; i++) s.pixels[i] = (uint8_t)test_uniform(r, 0, 256);
    for (int i = 0; i < n; i++) s.labels[i] = (uint8_t)test_uniform(r, 0, 10);
    return s;
}


Test(cuda, whole_step_matches_cpu_with_the_same_noise) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda step");
    const int B = 128;
    cv_split data = random_split(&r, 300);
    for (int pk = 0; pk < 2; pk++) {
        const cv_prior_kind prior = pk ? CV_PRIOR_CONDITIONAL : CV_PRIOR_STANDARD;
        rig c, g;
        rig_make(&c, cpu, &data, r.s, B, prior, CV_LIKELIHOOD_BERNOULLI);
        rig_make(&g, gpu, &data, r.s, B, prior, CV_LIKELIHOOD_BERNOULLI);
        rig *both[2] = {&c, &g};
        rig_random_prior(both, 2, &r);
        cv_step st = {.step = 3, .start = 50};
        float *eps = malloc(B * 20 * 4);
        for (int i = 0; i < B * 20; i++) eps[i] = (float)test_normal(&r);
        for (int k = 0; k < 2; k++) step_with_given_noise(both[k], &st, eps, B);
        const cv_layout *lo = &c.m.layout;
        const size_t n = lo->n_params;
        float *h = malloc(n * 4);
        float rec[128], kl[128];
        gpu->download(gpu, rec, g.ws.rec, sizeof rec);
        gpu->download(gpu, kl, g.ws.kl, sizeof kl);
        /* R5: bounds the first GPU run (H100, 2026-11-25) passed; from R2/R3 alone the
         * per-sample sums would be ~1e-4 (rec) and ~1e-5 (kl), but they sit at the end of
         * two float GEMM chains */
        compare("per-sample rec", c.ws.rec, rec, B, 1e-3, 1e-5);
        compare("per-sample kl", c.ws.kl, kl, B, 1e-4, 1e-4);
        gpu->download(gpu, h, g.m.grads, n * 4);
        for (int i = 0; i < lo->n_layers; i++) {
            const cv_layer *l = &lo->layers[i];
            size_t len = l->b + l->out - l->w;
            /* R5: gradients through up to six layers of float GEMMs in other orders; a
             * ReLU input within rounding of 0 switches a unit's gradient on one side */
            compare("layer gradient", c.m.grads + l->w, h + l->w, len, 1e-5, 1e-3);
        }
        if (lo->prior_m != CV_NO_COND)
            compare("prior gradient", c.m.grads + lo->prior_m, h + lo->prior_m,
                    2 * (size_t)lo->cfg.cond_width * lo->cfg.latent, 1e-5, 1e-3);
        cv_adam_config ac = {.lr = 1e-3f, .beta1 = CV_ADAM_BETA1, .beta2 = CV_ADAM_BETA2,
                             .eps = CV_ADAM_EPS};
        for (int k = 0; k < 2; k++)
            both[k]->be->adam(both[k]->be, both[k]->m.params, both[k]->m.grads,
                              both[k]->m.adam_m, both[k]->m.adam_v, n, &ac, both[k]->ws.step);
        gpu->download(gpu, h, g.m.params, n * 4);
        /* R5: Adam's first steps move each weight by about lr whatever the gradient's size,
         * so a gradient near zero can flip a step: allow one lr */
        compare("params after Adam", c.m.params, h, n, 1.01e-3, 1e-4);
        rig_free(&c);
        rig_free(&g);
        free(eps);
        free(h);
    }
    cv_split_free(&data);
}

/* n float images of 14 x 14 x channels with condition vectors of width K: the first
 * coordinate of the condition sets the brightness of the image's top half, so a model
 * has something to learn; the other coordinates are noise. */
static cv_split random_vector_split(test_rng *r, int n, int channels, int K) {
    const int D = 14 * 14 * channels;
    cv_split s = {.fpixels = malloc((size_t)n * D * 4), .conditions = malloc((size_t)n * K * 4),
                  .n = n, .h = 14, .w = 14, .channels = channels, .cond_width = K};
    test_fill(r, s.conditions, (size_t)n * K, -2, 2);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < D; j++) {
            const double bright = 1 / (1 + exp(-s.conditions[(size_t)i * K]));
            s.fpixels[(size_t)i * D + j] =
                (float)(j < D / 2 ? bright * test_uniform(r, 0.8, 1) : test_uniform(r, 0, 0.2));
        }
    return s;
}

/* Steps [0, steps) in windows of `window`, on the CPU, on the GPU eagerly and on the GPU
 * recorded once and replayed: the replayed and eager GPU runs must give the same bits,
 * and the windowed losses stay within 1% of the CPU's. With vectors, on RGB float
 * images with condition vectors of width 6. */
static void recorded_steps_of(test_rng *r, cv_prior_kind prior, cv_likelihood likelihood,
                              bool binarize, float clip, int steps, int window, bool vectors) {
    const int B = 100, N = 2000;
    cv_split data = vectors ? random_vector_split(r, N, 3, 6) : random_split(r, N);
    /* learnable structure: the class decides which quarter of the image is bright */
    for (int i = 0; i < N && !vectors; i++)
        for (int j = 0; j < 784; j++)
            data.pixels[(size_t)i * 784 + j] =
                (uint8_t)(j / 196 == data.labels[i] % 4 ? 200 + j % 50 : j % 40);
    rig c, g, e;
    rig_make(&c, cpu, &data, r->s, B, prior, likelihood);
    rig_make(&g, gpu, &data, r->s, B, prior, likelihood);
    rig_make(&e, gpu, &data, r->s, B, prior, likelihood);
    int32_t *perm = malloc(N * 4);
    cv_shuffle(perm, N, r->s, 0);
    rig *all[3] = {&c, &g, &e};
    rig_random_prior(all, 3, r);
    for (int k = 0; k < 3; k++) all[k]->be->upload(all[k]->be, all[k]->split.perm, perm, N * 4);
    void *rec = NULL;
    double worst = 0;
    const cv_adam_config adam = {.lr = 1e-3f, .beta1 = CV_ADAM_BETA1, .beta2 = CV_ADAM_BETA2,
                                 .eps = CV_ADAM_EPS, .clip_norm = clip};
    for (int w = 0; w < steps / window; w++) {
        double loss[3];
        for (int k = 0; k < 3; k++) {
            rig *x = all[k];
            cv_step st = {.step = w * window, .first_bad_step = -1, .first_bad_index = -1};
            x->be->upload(x->be, x->ws.step, &st, sizeof st);
            x->be->zero(x->be, x->ws.sums, sizeof(cv_loss_sums));
            for (int s = 0; s < window; s++) {
                if (k == 1) { /* recorded once, replayed */
                    if (!rec) {
                        cr_assert(gpu->capture_begin(gpu));
                        cv_train_step(&x->m, &x->ws, &x->split, TEST_WHOLE_BATCH(B), r->s, &adam,
                                      1.0f, binarize);
                        rec = gpu->capture_end(gpu);
                    }
                    gpu->replay(gpu, rec);
                } else {
                    cv_train_step(&x->m, &x->ws, &x->split, TEST_WHOLE_BATCH(B), r->s, &adam,
                                  1.0f, binarize);
                }
            }
            cv_loss_sums sums;
            x->be->download(x->be, &sums, x->ws.sums, sizeof sums);
            loss[k] = (sums.rec + sums.kl) / sums.rows;
        }
        cr_assert_eq(loss[1], loss[2], "replayed and eager GPU steps differ: %.9g vs %.9g",
                     loss[1], loss[2]);
        double rel = fabs(loss[1] - loss[0]) / fabs(loss[0]);
        worst = fmax(worst, rel);
        /* R5: float rounding differs between cuBLAS and OpenBLAS and compounds through
         * Adam; over 200 steps the windowed losses stay within 1% */
        cr_assert_lt(rel, 1e-2, "steps %d-%d: gpu loss %.6f vs cpu %.6f", w * window,
                     (w + 1) * window, loss[1], loss[0]);
    }
    cr_log_info("largest relative loss difference over %d steps: %.3g", steps, worst);
    const size_t n = c.m.layout.n_params;
    float *pg = malloc(n * 4), *pe = malloc(n * 4);
    gpu->download(gpu, pg, g.m.params, n * 4);
    gpu->download(gpu, pe, e.m.params, n * 4);
    cr_assert(memcmp(pg, pe, n * 4) == 0, "the recorded step drifted from the eager one");
    gpu->recording_free(gpu, rec);
    for (int k = 0; k < 3; k++) rig_free(all[k]);
    cv_split_free(&data);
    free(perm); free(pg); free(pe);
}

static void recorded_steps(test_rng *r, cv_prior_kind prior, cv_likelihood likelihood,
                           bool binarize, float clip, int steps, int window) {
    recorded_steps_of(r, prior, likelihood, binarize, clip, steps, window, false);
}

Test(cuda, recorded_step_replays_bit_for_bit_and_follows_the_cpu_loss) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda 200 steps");
    recorded_steps(&r, CV_PRIOR_STANDARD, CV_LIKELIHOOD_BERNOULLI, false, 0, quick() ? 40 : 200,
                   20);
}

Test(cuda, recorded_step_replays_bit_for_bit_with_every_option) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda steps, all options");
    /* learned prior, Gaussian pixels, binarized batches, a clip that bites */
    recorded_steps(&r, CV_PRIOR_CONDITIONAL, CV_LIKELIHOOD_GAUSSIAN, true, 5.0f, 40, 10);
}

int main(int argc, char *argv[]) { return cuda_test_main(argc, argv); }

/* ---------- precision modes (docs/design.md 2.7): each GPU precision against the CPU
 * reference of the same precision ---------- */

static cv_backend *open_precision(bool on_gpu, cv_precision p) {
    cv_backend_options opt = {.precision = p};
    cv_backend *be;
    cv_err err;
    cv_status st = on_gpu ? cv_backend_cuda_create(&opt, &be, &err)
                          : cv_backend_cpu_create_with(&opt, &be, &err);
    cr_assert_eq(st, CV_OK, "%s", err.msg);
    cr_assert_eq(be->precision, p);
    return be;
}

/* A copy of host on be (its own stream: a backend's GEMM and the copies that read its
 * result must share one), `offset` floats into an allocation with guard bytes after. */
static float *dev_copy(cv_backend *be, const float *host, size_t n, int offset, void **base) {
    cv_err err;
    uint32_t guard[GUARD];
    for (int i = 0; i < GUARD; i++) guard[i] = GUARD_BITS;
    cr_assert_eq(be->alloc(be, base, (n + offset) * 4 + sizeof guard, "test buffer", &err), CV_OK);
    float *d = (float *)*base + offset;
    be->upload(be, d, host, n * 4);
    be->upload(be, d + n, guard, sizeof guard);
    return d;
}

static void dev_fetch(cv_backend *be, float *host, const float *d, size_t n, void *base) {
    uint32_t guard[GUARD];
    be->download(be, host, d, n * 4);
    be->download(be, guard, d + n, sizeof guard);
    for (int i = 0; i < GUARD; i++)
        cr_assert_eq(guard[i], GUARD_BITS, "the GPU wrote past the end (guard %d)", i);
    be->release(be, base);
}

/* Over awkward shapes, padded leading dimensions, every transpose, and A and C one float
 * past 256-byte alignment on odd shapes:
 * - fp32, bf16, tf32x3: against the CPU backend of the same precision. Both feed the
 *   products the same rounded inputs (cv_math.h), whose products are exact in float, so
 *   only the order of the float sums differs: the fp32 GEMM tolerance of section 3.4,
 *   4e-5 sqrt(k), times 3 for tf32x3's three sums into C;
 * - tf32 (no CPU emulation): against the CPU's fp32, within what TF32 inputs can move a
 *   product, 2^-9 sum|a b| (two inputs, each within 2^-10 relative even if the tensor
 *   cores truncate), plus the fp32 tolerance. */
Test(cuda, every_precision_gemm_matches_its_cpu_reference) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda precision gemm");
    const int shapes[][3] = {{1, 1, 1},      {31, 33, 32},   {257, 33, 31}, {128, 400, 784},
                             {400, 784, 128}, {128, 784, 400}, {500, 40, 400}, {13, 20, 128}};
    for (int p = 0; p < CV_PRECISION_COUNT; p++) {
        const cv_precision prec = (cv_precision)p;
        cv_backend *g = open_precision(true, prec);
        cv_backend *c = open_precision(false, prec == CV_PRECISION_TF32 ? CV_PRECISION_FP32 : prec);
        cv_err err;
        for (int s = 0; s < 8; s++)
            for (int t = 0; t < 4; t++) {
                const bool ta = t & 1, tb = t >> 1;
                const int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
                const int lda = (ta ? m : k) + (s & 1), ldb = (tb ? k : n) + 3, ldc = n + (s & 1);
                const size_t na = (size_t)(ta ? k : m) * lda, nb = (size_t)(tb ? n : k) * ldb;
                const size_t nc = (size_t)m * ldc;
                float *a = malloc(na * 4), *b = malloc(nb * 4), *cc = malloc(nc * 4),
                      *c0 = malloc(nc * 4), *h = malloc(nc * 4);
                test_fill(&r, a, na, -1, 1);
                test_fill(&r, b, nb, -1, 1);
                test_fill(&r, c0, nc, -1, 1);
                memcpy(cc, c0, nc * 4);
                const size_t most = (size_t)m * k > (size_t)k * n ? (size_t)m * k : (size_t)k * n;
                cr_assert_eq(g->gemm_reserve(g, most, &err), CV_OK, "%s", err.msg);
                void *ba, *bb, *bc;
                float *da = dev_copy(g, a, na, s & 1, &ba), *db = dev_copy(g, b, nb, 0, &bb);
                float *dc = dev_copy(g, c0, nc, s & 1, &bc);
                c->gemm(c, ta, tb, m, n, k, 1.5f, a, lda, b, ldb, 0.5f, cc, ldc);
                g->gemm(g, ta, tb, m, n, k, 1.5f, da, lda, db, ldb, 0.5f, dc, ldc);
                dev_fetch(g, h, dc, nc, bc);
                g->release(g, ba);
                g->release(g, bb);
                const double fp32_tol = 4e-5 * sqrt(k) * (prec == CV_PRECISION_TF32X3 ? 3 : 1);
                for (int i = 0; i < m; i++)
                    for (int j = 0; j < ldc; j++) {
                        const size_t x = (size_t)i * ldc + j;
                        if (j >= n) {
                            cr_assert_eq(h[x], c0[x], "padding of C was written");
                            continue;
                        }
                        double mag = 0;
                        if (prec == CV_PRECISION_TF32)
                            for (int q = 0; q < k; q++)
                                mag += fabs((double)(ta ? a[(size_t)q * lda + i] : a[(size_t)i * lda + q]) *
                                            (tb ? b[(size_t)j * ldb + q] : b[(size_t)q * ldb + j]));
                        const double tol = fp32_tol + 1e-5 * fabs(cc[x]) + 1.5 * 0x1p-9 * mag;
                        cr_assert(fabs((double)h[x] - cc[x]) <= tol,
                                  "%s %dx%dx%d t%d (%d,%d): gpu %.9g, cpu %.9g",
                                  cv_precision_name(prec), m, n, k, t, i, j, h[x], cc[x]);
                    }
                free(a); free(b); free(cc); free(c0); free(h);
            }
        g->destroy(g);
        c->destroy(c);
    }
}

/* Element-wise as compare(), with the normalised mean squared error bound given. */
static void compare_nmse(const char *what, const float *ref, const float *got, size_t n,
                         double atol, double rtol, double nmse) {
    double err2 = 0, ref2 = 0;
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(isnan(ref[i]), isnan(got[i]), "%s[%zu]: NaN parity", what, i);
        if (isnan(ref[i])) continue;
        double d = fabs((double)got[i] - ref[i]);
        cr_assert(d <= atol + rtol * fabs(ref[i]), "%s[%zu]: gpu %.9g, cpu %.9g", what, i,
                  got[i], ref[i]);
        err2 += d * d;
        ref2 += (double)ref[i] * ref[i];
    }
    if (ref2 > 0) cr_assert(err2 / ref2 < nmse, "%s: NMSE %g", what, err2 / ref2);
    cr_log_info("%s: NMSE %.3g", what, ref2 > 0 ? err2 / ref2 : 0.0);
}

/* One bf16 training step on the GPU against the CPU's bf16 step, with the same noise.
 * The GEMM inputs are rounded the same way on both, but an fp32 activation that differs
 * by an ulp between the devices can round to the neighbouring bf16 value (2^-8 apart):
 * rare (about 1 in 1,000 inputs), each moving a sum by 2^-8 of one of its terms. So the
 * bounds are those of the fp32 step (section 3.4) widened about tenfold. */
Test(cuda, bf16_whole_step_matches_the_cpu_bf16_step) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda bf16 step");
    const int B = 128;
    cv_split data = random_split(&r, 300);
    cv_backend *cb = open_precision(false, CV_PRECISION_BF16);
    cv_backend *gb = open_precision(true, CV_PRECISION_BF16);
    rig c, g;
    rig_make(&c, cb, &data, r.s, B, CV_PRIOR_STANDARD, CV_LIKELIHOOD_BERNOULLI);
    rig_make(&g, gb, &data, r.s, B, CV_PRIOR_STANDARD, CV_LIKELIHOOD_BERNOULLI);
    cv_step st = {.step = 3, .start = 50};
    float *eps = malloc(B * 20 * 4);
    for (int i = 0; i < B * 20; i++) eps[i] = (float)test_normal(&r);
    rig *both[2] = {&c, &g};
    for (int k = 0; k < 2; k++) step_with_given_noise(both[k], &st, eps, B);
    const size_t n = c.m.layout.n_params;
    float *h = malloc(n * 4);
    float rec[128], kl[128];
    gb->download(gb, rec, g.ws.rec, sizeof rec);
    gb->download(gb, kl, g.ws.kl, sizeof kl);
    compare_nmse("bf16 per-sample rec", c.ws.rec, rec, B, 1e-2, 1e-4, 1e-8);
    compare_nmse("bf16 per-sample kl", c.ws.kl, kl, B, 1e-3, 1e-3, 1e-6);
    gb->download(gb, h, g.m.grads, n * 4);
    for (int i = 0; i < c.m.layout.n_layers; i++) {
        const cv_layer *l = &c.m.layout.layers[i];
        size_t len = l->b + l->out - l->w;
        compare_nmse("bf16 layer gradient", c.m.grads + l->w, h + l->w, len, 1e-4, 1e-2, 1e-6);
    }
    rig_free(&c);
    rig_free(&g);
    cb->destroy(cb);
    gb->destroy(gb);
    cv_split_free(&data);
    free(eps);
    free(h);
}

/* The reduced precisions inside a CUDA graph: their conversions and matmuls are recorded
 * with the reserved scratch, and replaying gives the eager steps' bits. */
Test(cuda, recorded_bf16_and_tf32x3_steps_replay_bit_for_bit) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda precision replay");
    /* every step takes the next B rows: N holds all of them (the emulator caught 1000 rows
     * read 1200 deep) */
    const int B = 100, steps = 12, N = B * steps;
    cv_split data = random_split(&r, N);
    const cv_adam_config adam = {.lr = 1e-3f, .beta1 = CV_ADAM_BETA1, .beta2 = CV_ADAM_BETA2,
                                 .eps = CV_ADAM_EPS};
    const cv_precision ps[2] = {CV_PRECISION_BF16, CV_PRECISION_TF32X3};
    for (int q = 0; q < 2; q++) {
        cv_backend *be = open_precision(true, ps[q]);
        rig rec_rig, eager;
        rig_make(&rec_rig, be, &data, r.s, B, CV_PRIOR_STANDARD, CV_LIKELIHOOD_BERNOULLI);
        rig_make(&eager, be, &data, r.s, B, CV_PRIOR_STANDARD, CV_LIKELIHOOD_BERNOULLI);
        rig *all[2] = {&rec_rig, &eager};
        void *rec = NULL;
        for (int k = 0; k < 2; k++) {
            cv_step st = {.first_bad_step = -1, .first_bad_index = -1};
            be->upload(be, all[k]->ws.step, &st, sizeof st);
            be->zero(be, all[k]->ws.sums, sizeof(cv_loss_sums));
            for (int s = 0; s < steps; s++) {
                if (k == 0) {
                    if (!rec) {
                        cr_assert(be->capture_begin(be));
                        cv_train_step(&rec_rig.m, &rec_rig.ws, &rec_rig.split,
                                      TEST_WHOLE_BATCH(B), r.s, &adam, 1.0f, false);
                        rec = be->capture_end(be);
                    }
                    be->replay(be, rec);
                } else {
                    cv_train_step(&eager.m, &eager.ws, &eager.split, TEST_WHOLE_BATCH(B), r.s,
                                  &adam, 1.0f, false);
                }
            }
        }
        const size_t n = eager.m.layout.n_params;
        float *pr = malloc(n * 4), *pe = malloc(n * 4);
        be->download(be, pr, rec_rig.m.params, n * 4);
        be->download(be, pe, eager.m.params, n * 4);
        cr_assert(memcmp(pr, pe, n * 4) == 0, "%s: the recorded step drifted from the eager one",
                  cv_precision_name(ps[q]));
        be->recording_free(be, rec);
        rig_free(&rec_rig);
        rig_free(&eager);
        be->destroy(be);
        free(pr);
        free(pe);
    }
    cv_split_free(&data);
}

/* Evaluation's running log-sum-exps on the GPU (logsumexp.cu) against the CPU's. Rows of
 * typical log weights, with a few rows given a -inf, a NaN or a +inf term, over the shapes
 * above and a full evaluation batch. */
Test(cuda, logsumexp_accumulate_and_merge_match_cpu) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda logsumexp");
    const int K = 200;
    const int shapes[] = {1, 31, 32, 33, 257, CV_EVAL_BATCH};
    for (int s = 0; s < 6; s++) {
        const int rows = shapes[s];
        const size_t fb = (size_t)rows * sizeof(float), db = (size_t)rows * sizeof(double);
        float *rec = malloc(fb), *lr = malloc(fb);
        double *c_max = malloc(db), *c_sum = malloc(db), *m_max = malloc(db), *m_sum = malloc(db);
        double *g_max = malloc(db), *g_sum = malloc(db), *gm_max = malloc(db),
               *gm_sum = malloc(db);
        float *d_rec = to_gpu(NULL, fb), *d_lr = to_gpu(NULL, fb);
        double *d_max = to_gpu(NULL, db), *d_sum = to_gpu(NULL, db);
        double *d_mmax = to_gpu(NULL, db), *d_msum = to_gpu(NULL, db);
        for (int k = 0; k < K; k++) {
            for (int i = 0; i < rows; i++) {
                rec[i] = (float)test_uniform(&r, 100, 900);
                lr[i] = (float)test_uniform(&r, -40, 40);
            }
            if (rows > 3) {
                if (k == 3) lr[1] = -INFINITY; /* adds nothing */
                if (k == 5) rec[2] = NAN;      /* the row becomes NaN */
                if (k == 7) rec[3] = -INFINITY; /* the row becomes +inf */
            }
            gpu->upload(gpu, d_rec, rec, fb);
            gpu->upload(gpu, d_lr, lr, fb);
            cpu->logsumexp_accumulate(cpu, c_max, c_sum, rec, lr, rows, k == 0);
            gpu->logsumexp_accumulate(gpu, d_max, d_sum, d_rec, d_lr, rows, k == 0);
        }
        /* two classes' terms merged: the state itself, at two log priors */
        const double log_k = log((double)K);
        cpu->logsumexp_merge(cpu, m_max, m_sum, c_max, c_sum, log_k, log(0.25), rows, true);
        cpu->logsumexp_merge(cpu, m_max, m_sum, c_max, c_sum, log_k, log(0.75), rows, false);
        gpu->logsumexp_merge(gpu, d_mmax, d_msum, d_max, d_sum, log_k, log(0.25), rows, true);
        gpu->logsumexp_merge(gpu, d_mmax, d_msum, d_max, d_sum, log_k, log(0.75), rows, false);
        from_gpu(g_max, d_max, db, "lse max");
        from_gpu(g_sum, d_sum, db, "lse sum");
        from_gpu(gm_max, d_mmax, db, "marginal max");
        from_gpu(gm_sum, d_msum, db, "marginal sum");
        /* every buffer lives until gpu_free_all: a release here freed them twice */
        gpu_free_all();
        for (int i = 0; i < rows; i++) {
            double want[2] = {cv_lse_log_mean(c_max[i], c_sum[i], log_k), m_max[i] + log(m_sum[i])};
            double got[2] = {cv_lse_log_mean(g_max[i], g_sum[i], log_k),
                             gm_max[i] + log(gm_sum[i])};
            for (int j = 0; j < 2; j++) {
                cr_assert_eq(isnan(want[j]), isnan(got[j]), "row %d of %d (%d): NaN parity, "
                             "cpu %g gpu %g", i, rows, j, want[j], got[j]);
                if (isnan(want[j])) continue;
                if (isinf(want[j])) {
                    cr_assert_eq(want[j], got[j], "row %d of %d (%d): Inf parity", i, rows, j);
                    continue;
                }
                /* double exp and log within an ulp or two of glibc's, and FMA contraction:
                 * a few ulps per term over K = 200 terms, 1e-13 relative in the sum */
                cr_assert(fabs(got[j] - want[j]) <= 1e-10 + 1e-14 * fabs(want[j]),
                          "row %d of %d (%d): gpu %.17g, cpu %.17g", i, rows, j, got[j],
                          want[j]);
            }
        }
        free(rec); free(lr); free(c_max); free(c_sum); free(m_max); free(m_sum);
        free(g_max); free(g_sum); free(gm_max); free(gm_sum);
    }
}

/* The whole evaluation on the GPU (IWAE on the device, marginal over classes) against the
 * CPU's, the same parameters and noise streams. */
Test(cuda, iwae_and_marginal_evaluation_match_cpu) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda iwae eval");
    cv_split data = random_split(&r, 650); /* two batches: 500 + 150 */
    rig c, g;
    rig_make(&c, cpu, &data, r.s, CV_EVAL_BATCH, CV_PRIOR_STANDARD, CV_LIKELIHOOD_BERNOULLI);
    rig_make(&g, gpu, &data, r.s, CV_EVAL_BATCH, CV_PRIOR_STANDARD, CV_LIKELIHOOD_BERNOULLI);
    double log_prior[10];
    for (int k = 0; k < 10; k++) log_prior[k] = k == 4 ? -INFINITY : log(1.0 / 9.0);
    cv_eval_options eo = {.iwae_k = 12, .marginal = true, .class_log_prior = log_prior,
                          .latent_stats = true};
    cv_eval_result rc, rg;
    cv_err err;
    cr_assert_eq(cv_evaluate(&c.m, &c.ws, &c.split, r.s, &eo, &rc, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(cv_evaluate(&g.m, &g.ws, &g.split, r.s, &eo, &rg, &err), CV_OK, "%s", err.msg);
    const double got[4] = {rg.neg_elbo, rg.iwae_nll, rg.marginal_nll, rg.kl};
    const double want[4] = {rc.neg_elbo, rc.iwae_nll, rc.marginal_nll, rc.kl};
    static const char *const names[4] = {"-ELBO", "IWAE NLL", "marginal NLL", "KL"};
    for (int i = 0; i < 4; i++) {
        cr_assert(isfinite(got[i]), "%s on the GPU: %g", names[i], got[i]);
        /* per-sample rec agrees within 1e-3 + 1e-5 |rec| (whole_step_matches_cpu), about
         * 7e-3 nats at this random model's ~550; a log-sum-exp moves by at most its terms'
         * largest change, and the means over images by no more */
        cr_assert(fabs(got[i] - want[i]) <= 1e-2 + 1e-5 * fabs(want[i]),
                  "%s: gpu %.9g, cpu %.9g", names[i], got[i], want[i]);
    }
    cv_eval_result_free(&rc);
    cv_eval_result_free(&rg);
    rig_free(&c);
    rig_free(&g);
    cv_split_free(&data);
}

/* ---------- condition vectors, float and colour images (docs/design.md 1.2) ---------- */

Test(cuda, gather_batch_of_float_images_and_condition_vectors_matches_cpu_exactly) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda gather vectors");
    /* K wider and narrower than the image, so each of the kernel's loops is the longer */
    const int shapes[][3] = {{1000, 588, 11}, {300, 3, 257}, {33, 1, 1}};
    for (int s = 0; s < 3; s++) {
        const int N = shapes[s][0], D = shapes[s][1], K = shapes[s][2], B = N / 3 + 1;
        float *pix = malloc((size_t)N * D * 4), *cond = malloc((size_t)N * K * 4);
        float *x = malloc((size_t)B * D * 4), *gx = malloc((size_t)B * D * 4);
        float *c = malloc((size_t)B * K * 4), *gc = malloc((size_t)B * K * 4);
        int32_t *perm = malloc(N * 4);
        test_fill(&r, pix, (size_t)N * D, 0, 1);
        test_fill(&r, cond, (size_t)N * K, -5, 5);
        cv_shuffle(perm, N, r.s, 2);
        cv_step st = {.step = 5, .start = N - B};
        float *d_pix = to_gpu(pix, (size_t)N * D * 4), *d_cond = to_gpu(cond, (size_t)N * K * 4);
        int32_t *d_perm = to_gpu(perm, N * 4);
        cv_step *d_st = to_gpu(&st, sizeof st);
        float *d_x = to_gpu(NULL, (size_t)B * D * 4), *d_c = to_gpu(NULL, (size_t)B * K * 4);
        const cv_device_split src = {.fpixels = pix, .conditions = cond, .perm = perm, .n = N,
                                     .dim = D, .cond_width = K};
        const cv_device_split d_src = {.fpixels = d_pix, .conditions = d_cond, .perm = d_perm,
                                       .n = N, .dim = D, .cond_width = K};
        /* the whole batch, and a rank's rows of it (from row 1 on) */
        for (int variant = 0; variant < 4; variant++) {
            const int binarize = variant & 1, first = variant >> 1, rows = B - first;
            cpu->gather_batch(cpu, &src, &st, first, rows, binarize, r.s, x, NULL, c);
            gpu->gather_batch(gpu, &d_src, d_st, first, rows, binarize, r.s, d_x, NULL, d_c);
            from_gpu(gx, d_x, (size_t)B * D * 4, "x");
            from_gpu(gc, d_c, (size_t)B * K * 4, "conditions");
            /* R1: copies, or a Philox comparison */
            cr_assert(memcmp(x, gx, (size_t)rows * D * 4) == 0, "gathered images differ (shape "
                      "%d, binarize %d, first row %d)", s, binarize, first);
            cr_assert(memcmp(c, gc, (size_t)rows * K * 4) == 0, "gathered conditions differ "
                      "(shape %d, first row %d)", s, first);
        }
        gpu_free_all();
        free(pix); free(cond); free(x); free(gx); free(c); free(gc); free(perm);
    }
}

/* The per-row prior (M c, R c of condition vectors): forward, backward with each row's
 * own prior gradients (written, R2 per element), and the prior transform. */
Test(cuda, reparam_and_prior_transform_with_a_per_row_prior_match_cpu) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda per-row prior");
    const int latents[] = {1, 31, 32, 33, 20, 256};
    const float ks = 0.6f;
    for (int s = 0; s < NSHAPES; s++) {
        const int rows = ROWS[s], L = latents[s];
        const size_t ne = (size_t)rows * 2 * L, nz = (size_t)rows * L;
        float *enc = malloc(ne * 4), *eps = malloc(nz * 4), *dz = malloc(nz * 4);
        float *pm = malloc(nz * 4), *pr = malloc(nz * 4), *z = malloc(nz * 4), *h = malloc(ne * 4);
        float *kl = malloc(rows * 4), *lr = malloc(rows * 4), *denc = malloc(ne * 4);
        float *dm = malloc(nz * 4), *dr = malloc(nz * 4), *t0 = malloc(nz * 4), *t = malloc(nz * 4);
        test_fill(&r, enc, ne, -3, 3);
        test_fill(&r, dz, nz, -1, 1);
        test_fill(&r, pm, nz, -1, 1);
        test_fill(&r, pr, nz, -1, 1);
        pr[nz - 1] = 35.0f; /* beyond the clamp: no gradient */
        for (size_t i = 0; i < nz; i++) eps[i] = (float)test_normal(&r);
        for (size_t i = 0; i < nz; i++) t0[i] = (float)test_normal(&r);
        float *d_enc = to_gpu(enc, ne * 4), *d_eps = to_gpu(eps, nz * 4), *d_dz = to_gpu(dz, nz * 4);
        float *d_pm = to_gpu(pm, nz * 4), *d_pr = to_gpu(pr, nz * 4);
        float *d_z = to_gpu(NULL, nz * 4), *d_kl = to_gpu(NULL, rows * 4);
        float *d_lr = to_gpu(NULL, rows * 4), *d_denc = to_gpu(NULL, ne * 4);
        float *d_dm = to_gpu(t0, nz * 4), *d_dr = to_gpu(t0, nz * 4); /* overwritten */
        float *d_t = to_gpu(t0, nz * 4);
        const cv_prior cp = {pm, pr, true}, gp = {d_pm, d_pr, true};
        cv_prior_grad cg = {dm, dr, true}, gg = {d_dm, d_dr, true};
        cpu->reparam_forward(cpu, enc, eps, false, 0, 0, NULL, 0, &cp, NULL, z, kl, lr, rows, L);
        gpu->reparam_forward(gpu, d_enc, d_eps, false, 0, 0, NULL, 0, &gp, NULL, d_z, d_kl, d_lr,
                             rows, L);
        cpu->reparam_backward(cpu, enc, eps, dz, ks, NULL, 0.0f, &cp, NULL, &cg, denc, rows, L);
        gpu->reparam_backward(gpu, d_enc, d_eps, d_dz, ks, NULL, 0.0f, &gp, NULL, &gg, d_denc,
                              rows, L);
        reparam_bounds bounds = reparam_bounds_of(enc, eps, dz, ks, pm, pr, NULL, rows, L);
        compare_reparam(&bounds, z, kl, lr, denc, d_z, d_kl, d_lr, d_denc, rows, L, h);
        reparam_bounds_free(&bounds);
        /* the per-row gradients: R2 per element, as prior_grad_tols counts each term (n = 12
         * and 20); the transform: m + exp(r/2) z, 4 roundings doubled */
        double *tm = malloc(nz * 8), *tr = malloc(nz * 8), *tt = malloc(nz * 8);
        for (size_t e = 0; e < nz; e++) {
            const size_t m = (e / L) * 2 * L + e % L;
            const double mu = enc[m], sv = cv_clamp_logvar(enc[m + L]);
            const double rr = cv_clamp_logvar(pr[e]), ex = exp(-rr), d = fabs(mu) + fabs(pm[e]);
            tm[e] = 12 * EPS * ks * d * ex;
            tr[e] = 20 * EPS * ks * 0.5 * (1 + (exp(sv) + d * d) * ex);
            tt[e] = 8 * EPS * (fabs(pm[e]) + exp(0.5 * rr) * fabs(t0[e]));
        }
        from_gpu(h, d_dm, nz * 4, "per-row d prior mean");
        compare_each("per-row d prior mean", dm, h, nz, tm, NMSE_MAX);
        from_gpu(h, d_dr, nz * 4, "per-row d prior log-variance");
        compare_each("per-row d prior log-variance", dr, h, nz, tr, NMSE_MAX);
        cr_assert_eq(h[nz - 1], 0.0f, "a clamped log-variance has a gradient");
        memcpy(t, t0, nz * 4);
        cpu->prior_transform(cpu, &cp, NULL, t, rows, L);
        gpu->prior_transform(gpu, &gp, NULL, d_t, rows, L);
        from_gpu(h, d_t, nz * 4, "prior transform");
        compare_each("per-row prior transform", t, h, nz, tt, NMSE_MAX);
        gpu_free_all();
        free(enc); free(eps); free(dz); free(pm); free(pr); free(z); free(h); free(kl); free(lr);
        free(denc); free(dm); free(dr); free(t0); free(t); free(tm); free(tr); free(tt);
    }
}

/* A whole step with condition vectors on float RGB images, with the linear prior: the
 * condition GEMMs, M c and R c, and their gradients, CPU vs GPU with the same noise. The
 * bounds are those of whole_step_matches_cpu_with_the_same_noise (R5). */
Test(cuda, whole_step_with_condition_vectors_matches_cpu) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda step vectors");
    const int B = 128;
    cv_split data = random_vector_split(&r, 300, 3, 7);
    for (int pk = 0; pk < 2; pk++) {
        const cv_prior_kind prior = pk ? CV_PRIOR_CONDITIONAL : CV_PRIOR_STANDARD;
        rig c, g;
        rig_make(&c, cpu, &data, r.s, B, prior, CV_LIKELIHOOD_GAUSSIAN);
        rig_make(&g, gpu, &data, r.s, B, prior, CV_LIKELIHOOD_GAUSSIAN);
        rig *both[2] = {&c, &g};
        rig_random_prior(both, 2, &r);
        cv_step st = {.step = 4, .start = 100};
        float *eps = malloc(B * 20 * 4);
        for (int i = 0; i < B * 20; i++) eps[i] = (float)test_normal(&r);
        for (int k = 0; k < 2; k++) step_with_given_noise(both[k], &st, eps, B);
        const cv_layout *lo = &c.m.layout;
        const size_t n = lo->n_params;
        float *h = malloc(n * 4), rec[128], kl[128];
        gpu->download(gpu, rec, g.ws.rec, sizeof rec);
        gpu->download(gpu, kl, g.ws.kl, sizeof kl);
        /* Gaussian rec sums 588 terms of up to 1 / (2 sigma^2) = 50 each: 1e-3 absolute is
         * the Bernoulli bound's margin over its R3 estimate kept */
        compare("per-sample rec", c.ws.rec, rec, B, 1e-2, 1e-5);
        compare("per-sample kl", c.ws.kl, kl, B, 1e-4, 1e-4);
        gpu->download(gpu, h, g.m.grads, n * 4);
        for (int i = 0; i < lo->n_layers; i++) {
            const cv_layer *l = &lo->layers[i];
            compare("layer gradient", c.m.grads + l->w, h + l->w, l->b + l->out - l->w, 1e-5,
                    1e-3);
        }
        if (lo->prior_m != CV_NO_COND)
            compare("prior table gradient", c.m.grads + lo->prior_m, h + lo->prior_m,
                    2 * (size_t)lo->cfg.cond_width * lo->cfg.latent, 1e-5, 1e-3);
        rig_free(&c);
        rig_free(&g);
        free(eps);
        free(h);
    }
    cv_split_free(&data);
}

Test(cuda, recorded_step_with_condition_vectors_replays_bit_for_bit) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda steps, condition vectors");
    /* the condition GEMMs and the linear prior inside the CUDA graph, binarized floats */
    recorded_steps_of(&r, CV_PRIOR_CONDITIONAL, CV_LIKELIHOOD_BERNOULLI, true, 0, 40, 10, true);
}

/* A model of cfg on be with the parameters params (host). */
static void model_with(cv_backend *be, const cv_model_config *cfg, const float *params,
                       int rows, cv_model *m, cv_workspace *ws) {
    cv_err err;
    cr_assert_eq(cv_model_create(be, cfg, m, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(cv_workspace_create(m, rows, ws, &err), CV_OK, "%s", err.msg);
    be->upload(be, m->params, params, m->layout.n_params * 4);
}

Test(cuda, encode_decode_and_latent_pictures_match_cpu) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda latent");
    const int n = quick() ? 45 : 257, L = 20, D = 784, rows = 100; /* batches 100, 100, 57 */
    cv_split s = random_split(&r, n);
    const cv_model_config cfg = {.height = 28, .width = 28, .channels = 1,
                                 .condition = CV_COND_LABELS, .cond_width = 10, .latent = L,
                                 .n_hidden = 2, .hidden = {400, 257},
                                 .prior = CV_PRIOR_CONDITIONAL,
                                 .likelihood = CV_LIKELIHOOD_BERNOULLI};
    cv_layout lo;
    cv_err err;
    cr_assert_eq(cv_layout_init(&cfg, &lo, &err), CV_OK);
    float *params = malloc(lo.n_params * 4);
    test_fill(&r, params, lo.n_params, -0.06, 0.06); /* prior tables included: not at 0 */
    cv_model mc, mg;
    cv_workspace wc, wg;
    model_with(cpu, &cfg, params, rows, &mc, &wc);
    model_with(gpu, &cfg, params, rows, &mg, &wg);
    /* R5 chains: three GEMMs; the first sums 794 terms of |a b| <= 0.06 (R3: 2 sqrt(794)
     * EPS 48 < 3.2e-4 at worst, ~1e-5 for these random signs), later layers less. */
    float *pc = malloc((size_t)n * 2 * L * 4), *pg = malloc((size_t)n * 2 * L * 4);
    cr_assert_eq(cv_encode_split(&mc, &wc, &s, pc, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(cv_encode_split(&mg, &wg, &s, pg, &err), CV_OK, "%s", err.msg);
    compare("posterior [mean | logvar]", pc, pg, (size_t)n * 2 * L, 3e-4, 1e-4);
    /* decoding given latents, in the same batches on both */
    float *z = malloc((size_t)n * L * 4), *dc = malloc((size_t)n * D * 4);
    float *dg = malloc((size_t)n * D * 4);
    test_fill(&r, z, (size_t)n * L, -3, 3);
    int32_t lab[100];
    for (int first = 0; first < n; first += rows) {
        const int k = n - first < rows ? n - first : rows;
        for (int i = 0; i < k; i++) lab[i] = s.labels[first + i];
        cv_model *ms[2] = {&mc, &mg};
        cv_workspace *ws[2] = {&wc, &wg};
        float *out[2] = {dc + (size_t)first * D, dg + (size_t)first * D};
        for (int b = 0; b < 2; b++) {
            cv_backend *be = ms[b]->be;
            be->upload(be, ws[b]->z, z + (size_t)first * L, (size_t)k * L * 4);
            be->upload(be, ws[b]->labels, lab, (size_t)k * 4);
            cv_model_decode(ms[b], ws[b], k);
            cv_decoded_means(ms[b], ws[b], k, out[b]);
        }
    }
    /* sigmoid's slope is at most 1/4: the logits' bound carries over */
    compare("decoded means", dc, dg, (size_t)n * D, 3e-4, 1e-4);
    /* the posterior activity ranks the units alike; the traversal's pixels within 1 */
    double ac[20], ag[20];
    cr_assert_eq(cv_posterior_activity(&mc, &wc, &s, n, ac, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(cv_posterior_activity(&mg, &wg, &s, n, ag, &err), CV_OK, "%s", err.msg);
    for (int j = 0; j < L; j++) assert_close("activity", j, ag[j], ac[j], 1e-5, 1e-3);
    const cv_gen_conditions two = {.n_classes = 2, .classes = {3, 7}};
    cv_tiles tc, tg;
    int oc[20], og[20];
    cr_assert_eq(cv_latent_traversal(&mc, &wc, &two, 5, 9, ac, &tc, oc, &err), CV_OK);
    cr_assert_eq(cv_latent_traversal(&mg, &wg, &two, 5, 9, ac, &tg, og, &err), CV_OK);
    cr_assert(memcmp(oc, og, sizeof oc) == 0, "the same activity ranked the units otherwise");
    for (size_t i = 0; i < (size_t)2 * 5 * 9 * D; i++)
        cr_assert(abs((int)tc.pixels[i] - (int)tg.pixels[i]) <= 1, "traversal pixel %zu: cpu %d, "
                  "gpu %d", i, tc.pixels[i], tg.pixels[i]);
    free(tc.pixels);
    free(tg.pixels);
    cv_workspace_destroy(&mc, &wc);
    cv_workspace_destroy(&mg, &wg);
    cv_model_destroy(&mc);
    cv_model_destroy(&mg);
    cv_split_free(&s);
    free(params);
    free(pc);
    free(pg);
    free(z);
    free(dc);
    free(dg);
}
