/* test_cuda.c: every CUDA operation against the CPU operation (the reference), and the
 * whole training step CPU vs GPU. Each test skips when no CUDA device is usable, so on a
 * machine without one they show as skipped, never as passed.
 *
 * Comparisons: NaN/Inf parity, per element |gpu - cpu| <= atol + rtol |cpu|, the
 * whole tensor's normalised mean squared error, and guard bytes after every GPU output
 * left untouched. TF32 is off (the backend's default).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cv_math.h"
#include "cvae/generate.h"
#include "cvae/rng.h"
#include "cvae/train.h"
#include "helpers.h"

#define GUARD 64
static const uint32_t GUARD_BITS = 0x7fc0dead; /* a NaN no kernel would write */

static cv_backend *cpu, *gpu;

static void setup(void) {
    if (!cv_backend_cuda_available()) return;
    cv_err err;
    cr_assert_eq(cv_backend_cpu_create(&cpu, &err), CV_OK);
    cr_assert_eq(cv_backend_cuda_create(NULL, &gpu, &err), CV_OK, "%s", err.msg);
}
static void teardown(void) {
    if (cpu) cpu->destroy(cpu);
    if (gpu) gpu->destroy(gpu);
    cpu = gpu = NULL;
}

TestSuite(cuda, .init = setup, .fini = teardown, .timeout = 300);

#define NEED_GPU()                                                                   \
    do {                                                                             \
        if (!gpu) cr_skip_test("no usable CUDA device: GPU test not run");           \
    } while (0)

/* A GPU copy of n host values (bytes each), followed by guard bytes. */
static void *to_gpu(const void *host, size_t bytes) {
    void *d;
    cv_err err;
    cr_assert_eq(gpu->alloc(gpu, &d, bytes + GUARD * 4, "test buffer", &err), CV_OK);
    uint32_t guard[GUARD];
    for (int i = 0; i < GUARD; i++) guard[i] = GUARD_BITS;
    if (host) gpu->upload(gpu, d, host, bytes);
    gpu->upload(gpu, (char *)d + bytes, guard, sizeof guard);
    return d;
}

/* Downloads a GPU buffer, checks its guard, frees it. */
static void from_gpu(void *host, void *d, size_t bytes, const char *what) {
    uint32_t guard[GUARD];
    gpu->download(gpu, host, d, bytes);
    gpu->download(gpu, guard, (char *)d + bytes, sizeof guard);
    for (int i = 0; i < GUARD; i++)
        cr_assert_eq(guard[i], GUARD_BITS, "%s: the GPU wrote past the end (guard %d)", what, i);
    gpu->release(gpu, d);
}

static void compare(const char *what, const float *ref, const float *got, size_t n, double atol,
                    double rtol) {
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
        cr_assert(d <= atol + rtol * fabs(ref[i]), "%s[%zu]: gpu %.9g, cpu %.9g", what, i,
                  got[i], ref[i]);
        err2 += d * d;
        ref2 += (double)ref[i] * ref[i];
    }
    /* float results that agree element-wise to ~1e-5 have NMSE around 1e-10 */
    if (ref2 > 0) cr_assert(err2 / ref2 < 1e-8, "%s: NMSE %g", what, err2 / ref2);
}

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
                      *g = malloc(nc * 4);
                test_fill(&r, a, na, -1, 1);
                test_fill(&r, b, nb, -1, 1);
                test_fill(&r, c, nc, -1, 1);
                float *da = to_gpu(a, na * 4), *db = to_gpu(b, nb * 4), *dc = to_gpu(c, nc * 4);
                int lda = ta ? m : k, ldb = tb ? k : n;
                cpu->gemm(cpu, ta, tb, m, n, k, 1.5f, a, lda, b, ldb, 0.5f, c, n);
                gpu->gemm(gpu, ta, tb, m, n, k, 1.5f, da, lda, db, ldb, 0.5f, dc, n);
                from_gpu(g, dc, nc * 4, "gemm C");
                gpu->release(gpu, da);
                gpu->release(gpu, db);
                /* length-k float dot products: error grows like sqrt(k) eps |a||b| */
                compare("gemm", c, g, nc, 1e-5 * sqrt(k) * 4, 1e-5);
                free(a); free(b); free(c); free(g);
            }
}

Test(cuda, bias_act_matches_cpu) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda bias_act");
    for (int s = 0; s < NSHAPES; s++)
        for (int relu = 0; relu < 2; relu++) {
            int rows = ROWS[s], cols = COLS[s] == 784 ? 400 : COLS[s], K = 10;
            size_t n = (size_t)rows * cols;
            float *y = malloc(n * 4), *g = malloc(n * 4), *bias = malloc(cols * 4);
            float *cond = malloc((size_t)K * cols * 4), *dy = malloc(n * 4);
            float *db = calloc(cols, 4), *dc = calloc((size_t)K * cols, 4);
            int32_t *lab = malloc(rows * 4);
            test_fill(&r, y, n, -1, 1);
            test_fill(&r, bias, cols, -1, 1);
            test_fill(&r, cond, (size_t)K * cols, -1, 1);
            test_fill(&r, dy, n, -1, 1);
            test_fill(&r, db, cols, -1, 1); /* += into existing gradients */
            for (int i = 0; i < rows; i++) lab[i] = (int32_t)test_uniform(&r, 0, K);
            y[0] = NAN; /* NaN must flow through as on the CPU */
            float *d_y = to_gpu(y, n * 4), *d_bias = to_gpu(bias, cols * 4);
            float *d_cond = to_gpu(cond, (size_t)K * cols * 4), *d_dy = to_gpu(dy, n * 4);
            float *d_db = to_gpu(db, cols * 4), *d_dc = to_gpu(dc, (size_t)K * cols * 4);
            int32_t *d_lab = to_gpu(lab, rows * 4);
            cpu->bias_act_forward(cpu, y, bias, cond, lab, rows, cols, relu);
            gpu->bias_act_forward(gpu, d_y, d_bias, d_cond, d_lab, rows, cols, relu);
            cpu->bias_act_backward(cpu, dy, y, db, dc, lab, rows, cols, relu);
            gpu->bias_act_backward(gpu, d_dy, d_y, d_db, d_dc, d_lab, rows, cols, relu);
            from_gpu(g, d_y, n * 4, "y");
            compare("bias_act_forward", y, g, n, 1e-6, 1e-6);
            from_gpu(g, d_dy, n * 4, "dy");
            compare("masked dy", dy, g, n, 0, 0);
            float *gb = malloc(cols * 4), *gc = malloc((size_t)K * cols * 4);
            from_gpu(gb, d_db, cols * 4, "dbias");
            from_gpu(gc, d_dc, (size_t)K * cols * 4, "dcond");
            /* sums over rows in one order on each side, but the float order differs */
            compare("dbias", db, gb, cols, 1e-5 * sqrt(rows), 1e-5);
            compare("dcond", dc, gc, (size_t)K * cols, 1e-5 * sqrt(rows), 1e-5);
            gpu->release(gpu, d_bias);
            gpu->release(gpu, d_cond);
            gpu->release(gpu, d_lab);
            free(y); free(g); free(bias); free(cond); free(dy); free(db); free(dc); free(lab);
            free(gb); free(gc);
        }
}

Test(cuda, reparam_matches_cpu_with_given_and_drawn_noise) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda reparam");
    const int latents[] = {1, 31, 32, 33, 20, 256};
    for (int s = 0; s < NSHAPES; s++)
        for (int variant = 0; variant < 4; variant++) {
            int draw = variant & 1, with_prior = variant >> 1;
            int rows = ROWS[s], L = latents[s], K = 3;
            size_t ne = (size_t)rows * 2 * L, nz = (size_t)rows * L;
            float *enc = malloc(ne * 4), *eps = malloc(nz * 4), *z = malloc(nz * 4);
            float *kl = malloc(rows * 4), *lr = malloc(rows * 4), *dz = malloc(nz * 4);
            float *denc = malloc(ne * 4), *h = malloc(ne * 4);
            test_fill(&r, enc, ne, -3, 3);
            test_fill(&r, dz, nz, -1, 1);
            enc[L] = 40.0f; /* beyond the clamp */
            for (size_t i = 0; i < nz; i++) eps[i] = (float)test_normal(&r);
            cv_step st = {.step = (int64_t)test_uniform(&r, 0, 1e6)};
            float *d_enc = to_gpu(enc, ne * 4), *d_eps = to_gpu(eps, nz * 4);
            float *d_z = to_gpu(NULL, nz * 4), *d_kl = to_gpu(NULL, rows * 4);
            float *d_lr = to_gpu(NULL, rows * 4), *d_dz = to_gpu(dz, nz * 4);
            float *d_denc = to_gpu(NULL, ne * 4);
            cv_step *d_st = to_gpu(&st, sizeof st);
            uint64_t seed = r.s;
            size_t nt = (size_t)K * L;
            float *pm = malloc(nt * 4), *pr = malloc(nt * 4), *dm = calloc(nt, 4),
                  *dr = calloc(nt, 4), *gdm = malloc(nt * 4), *gdr = malloc(nt * 4);
            int32_t *lab = malloc(rows * 4);
            test_fill(&r, pm, nt, -1, 1);
            test_fill(&r, pr, nt, -1, 1);
            for (int i = 0; i < rows; i++) lab[i] = (int32_t)test_uniform(&r, 0, K);
            float *d_pm = to_gpu(pm, nt * 4), *d_pr = to_gpu(pr, nt * 4);
            float *d_dm = to_gpu(dm, nt * 4), *d_dr = to_gpu(dr, nt * 4);
            int32_t *d_lab = to_gpu(lab, rows * 4);
            cv_prior cp = {pm, pr}, gp = {d_pm, d_pr};
            cv_prior_grad cg = {dm, dr}, gg = {d_dm, d_dr};
            cpu->reparam_forward(cpu, enc, eps, draw, seed, 17, &st, with_prior ? &cp : NULL, lab,
                                 z, kl, lr, rows, L);
            gpu->reparam_forward(gpu, d_enc, d_eps, draw, seed, 17, d_st,
                                 with_prior ? &gp : NULL, d_lab, d_z, d_kl, d_lr, rows, L);
            cpu->reparam_backward(cpu, enc, eps, dz, 0.7f, with_prior ? &cp : NULL, lab,
                                  with_prior ? &cg : NULL, denc, rows, L);
            gpu->reparam_backward(gpu, d_enc, d_eps, d_dz, 0.7f, with_prior ? &gp : NULL, d_lab,
                                  with_prior ? &gg : NULL, d_denc, rows, L);
            from_gpu(gdm, d_dm, nt * 4, "d prior mean");
            from_gpu(gdr, d_dr, nt * 4, "d prior log-variance");
            compare("d prior mean", dm, gdm, nt, 1e-4 * sqrt(rows), 1e-4);
            compare("d prior log-variance", dr, gdr, nt, 1e-4 * sqrt(rows), 1e-4);
            gpu->release(gpu, d_pm);
            gpu->release(gpu, d_pr);
            gpu->release(gpu, d_lab);
            free(pm); free(pr); free(dm); free(dr); free(gdm); free(gdr); free(lab);
            /* drawn noise: cuRAND's device Box-Muller uses __sincosf, a few ulps from
             * sinf/cosf, so eps and what follows agree to ~1e-5 rather than exactly */
            double tol = draw ? 2e-5 : 1e-6;
            from_gpu(h, d_eps, nz * 4, "eps");
            compare("eps", eps, h, nz, tol, tol);
            from_gpu(h, d_z, nz * 4, "z");
            compare("z", z, h, nz, tol * 4e3, tol); /* exp(s/2) up to e^1.5 * |eps| */
            from_gpu(h, d_kl, rows * 4, "kl");
            compare("kl", kl, h, rows, 1e-4, 1e-5);
            from_gpu(h, d_lr, rows * 4, "log_ratio");
            compare("log_ratio", lr, h, rows, 1e-3, 1e-4);
            from_gpu(h, d_denc, ne * 4, "denc");
            compare("denc", denc, h, ne, tol * 10, 1e-4);
            gpu->release(gpu, d_enc);
            gpu->release(gpu, d_dz);
            gpu->release(gpu, d_st);
            free(enc); free(eps); free(z); free(kl); free(lr); free(dz); free(denc); free(h);
        }
}

Test(cuda, bernoulli_xent_matches_cpu_with_nan_and_inf) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda xent");
    for (int s = 0; s < NSHAPES; s++) {
        int rows = ROWS[s], cols = COLS[s];
        size_t n = (size_t)rows * cols;
        float *l = malloc(n * 4), *x = malloc(n * 4), *d = malloc(n * 4), *rec = malloc(rows * 4);
        float *h = malloc(n * 4);
        test_fill(&r, l, n, -20, 20);
        test_fill(&r, x, n, 0, 1);
        if (rows > 2) {
            l[0] = NAN;                    /* row 0: NaN */
            l[(size_t)cols] = INFINITY;    /* row 1: +Inf with x < 1 costs +Inf */
            x[(size_t)cols] = 0.5f;
        }
        float *d_l = to_gpu(l, n * 4), *d_x = to_gpu(x, n * 4), *d_d = to_gpu(NULL, n * 4);
        float *d_rec = to_gpu(NULL, rows * 4);
        for (int lk = 0; lk < 2; lk++) {
            cv_likelihood like = lk ? CV_LIKELIHOOD_GAUSSIAN : CV_LIKELIHOOD_BERNOULLI;
            cpu->reconstruction(cpu, like, 0.3f, l, x, rec, d, 1.0f / rows, rows, cols);
            gpu->reconstruction(gpu, like, 0.3f, d_l, d_x, d_rec, d_d, 1.0f / rows, rows, cols);
            gpu->download(gpu, h, d_rec, rows * 4);
            compare("rec", rec, h, rows, 1e-4 * sqrt(cols), 1e-5);
            gpu->download(gpu, h, d_d, n * 4);
            compare("dlogits", d, h, n, 1e-7, 1e-5);
        }
        from_gpu(h, d_rec, rows * 4, "rec");
        from_gpu(h, d_d, n * 4, "dlogits");
        gpu->release(gpu, d_l);
        gpu->release(gpu, d_x);
        free(l); free(x); free(d); free(rec); free(h);
    }
}

Test(cuda, adam_gather_accumulate_and_step_match_cpu) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda adam etc");
    const size_t sizes[] = {1, 31, 32, 33, 257, 660824};
    for (int s = 0; s < 6; s++) {
        size_t n = sizes[s];
        float *p = malloc(n * 4), *g = malloc(n * 4), *m = malloc(n * 4), *v = malloc(n * 4);
        float *h = malloc(n * 4);
        test_fill(&r, p, n, -1, 1);
        test_fill(&r, g, n, -1, 1);
        test_fill(&r, m, n, -0.1, 0.1);
        test_fill(&r, v, n, 0, 0.01);
        cv_step st = {.step = (int64_t)test_uniform(&r, 0, 5000)};
        float *d_p = to_gpu(p, n * 4), *d_g = to_gpu(g, n * 4), *d_m = to_gpu(m, n * 4),
              *d_v = to_gpu(v, n * 4);
        cv_step *d_st = to_gpu(&st, sizeof st);
        /* warm-up, cosine and a clip that bites: grad_sq as the check would leave it */
        double sq = 0;
        for (size_t i = 0; i < n; i++) sq += (double)g[i] * g[i];
        st.grad_sq = sq;
        gpu->upload(gpu, d_st, &st, sizeof st);
        cv_adam_config ac = {.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                             .cosine = 1, .warmup_steps = 100, .total_steps = 9000,
                             .clip_norm = (float)(0.5 * sqrt(sq))};
        cpu->adam(cpu, p, g, m, v, n, &ac, &st);
        gpu->adam(gpu, d_p, d_g, d_m, d_v, n, &ac, d_st);
        from_gpu(h, d_p, n * 4, "params");
        compare("adam p", p, h, n, 1e-6, 1e-5);
        from_gpu(h, d_m, n * 4, "m");
        compare("adam m", m, h, n, 1e-7, 1e-6);
        from_gpu(h, d_v, n * 4, "v");
        compare("adam v", v, h, n, 1e-9, 1e-6);
        cv_loss_sums acc = {1.25, 0.5, 3, 0, 0}, gacc;
        cv_loss_sums *d_acc = to_gpu(&acc, sizeof acc);
        cpu->accumulate_loss(cpu, &acc, g, m, (int)n, NULL);
        gpu->accumulate_loss(gpu, d_acc, d_g, d_m, (int)n, NULL);
        from_gpu(&gacc, d_acc, sizeof gacc, "acc");
        const double a[5] = {acc.rec, acc.kl, acc.rows, acc.grad_norm, acc.steps};
        const double ga[5] = {gacc.rec, gacc.kl, gacc.rows, gacc.grad_norm, gacc.steps};
        for (int k = 0; k < 5; k++)
            cr_assert(fabs(a[k] - ga[k]) < 1e-9 * (double)n + 1e-12, "sums[%d] %g vs %g", k,
                      a[k], ga[k]);
        /* the non-finite check finds the same first bad element */
        cv_step cs = {.step = 5, .first_bad_step = -1, .first_bad_index = -1}, gs;
        cv_step *d_cs = to_gpu(&cs, sizeof cs);
        g[n / 2] = NAN;
        if (n > 2) g[n - 1] = INFINITY;
        gpu->upload(gpu, d_g, g, n * 4);
        cpu->check_finite(cpu, v, v, 1, g, n, &cs);
        gpu->check_finite(gpu, d_v, d_v, 1, d_g, n, d_cs);
        from_gpu(&gs, d_cs, sizeof gs, "step state");
        cr_assert(gs.skip == cs.skip && gs.nonfinite_steps == cs.nonfinite_steps &&
                  gs.first_bad_index == cs.first_bad_index, "check: gpu index %lld, cpu %lld",
                  (long long)gs.first_bad_index, (long long)cs.first_bad_index);
        g[n / 2] = 0.25f;
        if (n > 2) g[n - 1] = 0.5f;
        gpu->upload(gpu, d_g, g, n * 4);
        cs.halted = gs.halted = 0;
        d_cs = to_gpu(&cs, sizeof cs);
        cpu->check_finite(cpu, v, v, 1, g, n, &cs);
        gpu->check_finite(gpu, d_v, d_v, 1, d_g, n, d_cs);
        from_gpu(&gs, d_cs, sizeof gs, "step state");
        cr_assert(fabs(gs.grad_sq - cs.grad_sq) <= 1e-12 * (double)n + 1e-9 * cs.grad_sq,
                  "squared norm: gpu %.17g, cpu %.17g", gs.grad_sq, cs.grad_sq);
        cpu->advance_step(cpu, &st, 77);
        gpu->advance_step(gpu, d_st, 77);
        cv_step back;
        from_gpu(&back, d_st, sizeof back, "step");
        cr_assert(back.step == st.step && back.start == st.start);
        gpu->release(gpu, d_g);
        free(p); free(g); free(m); free(v); free(h);
    }
    /* gather from the uint8 set, in a shuffled order, from a batch start on the device */
    const int N = 1000, D = 784, B = 257;
    uint8_t *pix = malloc((size_t)N * D), lab[1000];
    int32_t perm[1000], lab_cpu[257], lab_gpu[257];
    for (size_t i = 0; i < (size_t)N * D; i++) pix[i] = (uint8_t)test_uniform(&r, 0, 256);
    for (int i = 0; i < N; i++) lab[i] = (uint8_t)test_uniform(&r, 0, 10);
    cv_shuffle(perm, N, r.s, 1);
    cv_step st = {.start = 700};
    float *x = malloc((size_t)B * D * 4), *gx = malloc((size_t)B * D * 4);
    uint8_t *d_pix = to_gpu(pix, (size_t)N * D), *d_lab = to_gpu(lab, N);
    int32_t *d_perm = to_gpu(perm, N * 4), *d_lo = to_gpu(NULL, B * 4);
    cv_step *d_st = to_gpu(&st, sizeof st);
    float *d_x = to_gpu(NULL, (size_t)B * D * 4);
    for (int binarize = 0; binarize < 2; binarize++) {
        cpu->gather_batch(cpu, pix, lab, perm, &st, B, D, binarize, r.s, x, lab_cpu);
        gpu->gather_batch(gpu, d_pix, d_lab, d_perm, d_st, B, D, binarize, r.s, d_x, d_lo);
        gpu->download(gpu, gx, d_x, (size_t)B * D * 4);
        gpu->download(gpu, lab_gpu, d_lo, B * 4);
        cr_assert(memcmp(x, gx, (size_t)B * D * 4) == 0, "gathered batches differ (binarize %d)",
                  binarize);
        cr_assert(memcmp(lab_cpu, lab_gpu, B * 4) == 0, "gathered labels differ");
    }
    from_gpu(gx, d_x, (size_t)B * D * 4, "x");
    from_gpu(lab_gpu, d_lo, B * 4, "labels");
    gpu->release(gpu, d_pix);
    gpu->release(gpu, d_lab);
    gpu->release(gpu, d_perm);
    gpu->release(gpu, d_st);
    free(pix); free(x); free(gx);
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
    compare("normal", c, g, n, 2e-5, 2e-5); /* __sincosf vs sinf/cosf, see reparam */
    double mean = 0, var = 0;
    for (size_t i = 0; i < n; i++) mean += g[i];
    mean /= n;
    for (size_t i = 0; i < n; i++) var += (g[i] - mean) * (g[i] - mean);
    var /= n - 1;
    /* 6 standard errors */
    cr_assert(fabs(mean) < 6.0 / sqrt(n), "mean %g", mean);
    cr_assert(fabs(var - 1) < 6.0 * sqrt(2.0 / n), "variance %g", var);
    free(c);
    free(g);
}

Test(cuda, pixels_and_row_streams_match_cpu) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda pixels");
    for (int s = 0; s < NSHAPES; s++) {
        int rows = ROWS[s], cols = COLS[s];
        size_t n = (size_t)rows * cols;
        float *l = malloc(n * 4), *z = malloc(n * 4), *gz = malloc(n * 4);
        uint8_t *p = malloc(n), *gp = malloc(n);
        test_fill(&r, l, n, -8, 8);
        float *d_l = to_gpu(l, n * 4), *d_z = to_gpu(NULL, n * 4);
        for (int mean = 0; mean < 2; mean++) {
            uint8_t *d_p = to_gpu(NULL, n);
            cpu->pixels_from_logits(cpu, CV_LIKELIHOOD_BERNOULLI, 0, l, rows, cols, mean, r.s, 9, p);
            gpu->pixels_from_logits(gpu, CV_LIKELIHOOD_BERNOULLI, 0, d_l, rows, cols, mean, r.s, 9,
                                    d_p);
            from_gpu(gp, d_p, n, "pixels");
            size_t differ = 0;
            for (size_t i = 0; i < n; i++) differ += p[i] != gp[i];
            /* expf differs by an ulp between libm and CUDA: a pixel at a rounding or
             * sampling boundary may flip, nothing more */
            cr_assert_leq(differ, n / 10000 + 1, "%zu of %zu pixels differ", differ, n);
        }
        cpu->normal(cpu, z, rows, cols, r.s, 1000);
        gpu->normal(gpu, d_z, rows, cols, r.s, 1000);
        from_gpu(gz, d_z, n * 4, "row normals");
        compare("row normals", z, gz, n, 2e-5, 2e-5);
        gpu->release(gpu, d_l);
        free(l); free(z); free(gz); free(p); free(gp);
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
    cv_generate_options o = {.n_classes = 10, .per_class = 500, .format = CV_FMT_IDX,
                             .mean = mean, .seed = 11, .batch = batch, .out = out,
                             .checkpoint = "test"};
    for (int c = 0; c < 10; c++) o.classes[c] = c;
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
    cv_model_config cfg = {.height = 28, .width = 28, .n_classes = 10, .latent = 20,
                           .n_hidden = 2, .hidden = {400, 257}};
    cv_model host; /* the CPU backend's parameters are host memory */
    cv_err err;
    cr_assert_eq(cv_model_create(cpu, &cfg, &host, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(cv_model_init_params(&host, r.s, &err), CV_OK, "%s", err.msg);
    char *dir = test_tmpdir(), out[4200];
    for (int mean = 1; mean >= 0; mean--) {
        const char *mode = mean ? "--mean" : "--sample";
        size_t nc, ng, nb;
        snprintf(out, sizeof out, "%s/cpu%d", dir, mean);
        uint8_t *c = generate_on(cpu, &cfg, host.params, mean, 1000, out, &nc);
        snprintf(out, sizeof out, "%s/gpu%d", dir, mean);
        uint8_t *g = generate_on(gpu, &cfg, host.params, mean, 1000, out, &ng);
        snprintf(out, sizeof out, "%s/gpu%d-batch7", dir, mean);
        uint8_t *b = generate_on(gpu, &cfg, host.params, mean, 7, out, &nb);
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
    test_rmtree(dir);
    free(dir);
    cv_model_destroy(&host);
}

/* A small model and data set on one backend, for whole-step comparisons. */
typedef struct {
    cv_backend *be;
    cv_model m;
    cv_workspace ws;
    cv_device_split split;
} rig;

static void rig_make(rig *g, cv_backend *be, const cv_split *data, uint64_t seed, int batch) {
    cv_model_config cfg = {.height = data->h, .width = data->w, .n_classes = 10, .latent = 20,
                           .n_hidden = 2, .hidden = {400, 257}};
    cv_err err;
    g->be = be;
    cr_assert_eq(cv_model_create(be, &cfg, &g->m, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(cv_workspace_create(&g->m, batch, &g->ws, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(cv_device_split_upload(be, data, &g->split, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(cv_model_init_params(&g->m, seed, &err), CV_OK, "%s", err.msg);
}

static void rig_free(rig *g) {
    cv_device_split_free(g->be, &g->split);
    cv_workspace_destroy(&g->m, &g->ws);
    cv_model_destroy(&g->m);
}

static cv_split random_split(test_rng *r, int n) {
    cv_split s = {malloc((size_t)n * 784), malloc(n), n, 28, 28};
    for (size_t i = 0; i < (size_t)n * 784; i++) s.pixels[i] = (uint8_t)test_uniform(r, 0, 256);
    for (int i = 0; i < n; i++) s.labels[i] = (uint8_t)test_uniform(r, 0, 10);
    return s;
}

Test(cuda, whole_step_matches_cpu_with_the_same_noise) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda step");
    const int B = 128;
    cv_split data = random_split(&r, 300);
    rig c, g;
    rig_make(&c, cpu, &data, r.s, B);
    rig_make(&g, gpu, &data, r.s, B);
    cv_step st = {.step = 3, .start = 50};
    float *eps = malloc(B * 20 * 4);
    for (int i = 0; i < B * 20; i++) eps[i] = (float)test_normal(&r);
    rig *both[2] = {&c, &g};
    for (int k = 0; k < 2; k++) {
        rig *x = both[k];
        cv_backend *be = x->be;
        be->upload(be, x->ws.step, &st, sizeof st);
        be->upload(be, x->ws.eps, eps, B * 20 * 4);
        be->gather_batch(be, x->split.pixels, x->split.labels, x->split.perm, x->ws.step, B,
                         784, false, 0, x->ws.x, x->ws.labels);
        be->zero(be, x->m.grads, x->m.layout.n_params * 4);
        cv_noise given = {.draw = false};
        cv_model_forward(&x->m, &x->ws, B, &given, true, false);
        cv_model_backward(&x->m, &x->ws, B, 1.0f);
    }
    const size_t n = c.m.layout.n_params;
    float *h = malloc(n * 4);
    float rec[128], kl[128];
    gpu->download(gpu, rec, g.ws.rec, sizeof rec);
    gpu->download(gpu, kl, g.ws.kl, sizeof kl);
    compare("per-sample rec", c.ws.rec, rec, B, 1e-3, 1e-5);
    compare("per-sample kl", c.ws.kl, kl, B, 1e-4, 1e-4);
    gpu->download(gpu, h, g.m.grads, n * 4);
    for (int i = 0; i < c.m.layout.n_layers; i++) {
        const cv_layer *l = &c.m.layout.layers[i];
        size_t len = l->b + l->out - l->w;
        /* gradients through up to six layers of float GEMMs in different orders */
        compare("layer gradient", c.m.grads + l->w, h + l->w, len, 1e-5, 1e-3);
    }
    cv_adam_config ac = {.lr = 1e-3f, .beta1 = CV_ADAM_BETA1, .beta2 = CV_ADAM_BETA2,
                         .eps = CV_ADAM_EPS};
    for (int k = 0; k < 2; k++)
        both[k]->be->adam(both[k]->be, both[k]->m.params, both[k]->m.grads, both[k]->m.adam_m,
                          both[k]->m.adam_v, n, &ac, both[k]->ws.step);
    gpu->download(gpu, h, g.m.params, n * 4);
    /* Adam's first steps move each weight by about lr whatever the gradient's size, so a
     * gradient near zero can flip a step: allow one lr */
    compare("params after Adam", c.m.params, h, n, 1.01e-3, 1e-4);
    rig_free(&c);
    rig_free(&g);
    cv_split_free(&data);
    free(eps);
    free(h);
}

Test(cuda, recorded_step_replays_bit_for_bit_and_follows_the_cpu_loss) {
    NEED_GPU();
    test_rng r = test_rng_new("cuda 200 steps");
    const int B = 100, N = 2000, steps = 200, window = 20;
    cv_split data = random_split(&r, N);
    /* learnable structure: the class decides which quarter of the image is bright */
    for (int i = 0; i < N; i++)
        for (int j = 0; j < 784; j++)
            data.pixels[(size_t)i * 784 + j] =
                (uint8_t)(j / 196 == data.labels[i] % 4 ? 200 + j % 50 : j % 40);
    rig c, g, e;
    rig_make(&c, cpu, &data, r.s, B);
    rig_make(&g, gpu, &data, r.s, B);
    rig_make(&e, gpu, &data, r.s, B);
    int32_t *perm = malloc(N * 4);
    cv_shuffle(perm, N, r.s, 0);
    rig *all[3] = {&c, &g, &e};
    for (int k = 0; k < 3; k++) all[k]->be->upload(all[k]->be, all[k]->split.perm, perm, N * 4);
    void *rec = NULL;
    double worst = 0;
    const cv_adam_config adam = {.lr = 1e-3f, .beta1 = CV_ADAM_BETA1, .beta2 = CV_ADAM_BETA2,
                                 .eps = CV_ADAM_EPS};
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
                        cv_train_step(&x->m, &x->ws, &x->split, B, r.s, &adam, 1.0f, false);
                        rec = gpu->capture_end(gpu);
                    }
                    gpu->replay(gpu, rec);
                } else {
                    cv_train_step(&x->m, &x->ws, &x->split, B, r.s, &adam, 1.0f, false);
                }
            }
            cv_loss_sums sums;
            x->be->download(x->be, &sums, x->ws.sums, sizeof sums);
            loss[k] = (sums.rec + sums.kl) / sums.rows;
        }
        cr_assert_eq(loss[1], loss[2], "replayed and eager GPU steps differ: %.9g vs %.9g",
                     loss[1], loss[2]);
        double rel = fabs(loss[1] - loss[0]) / loss[0];
        worst = fmax(worst, rel);
        /* float rounding differs between cuBLAS and OpenBLAS and compounds through Adam;
         * over 200 steps the windowed losses stay within 1% */
        cr_assert_lt(rel, 1e-2, "steps %d-%d: gpu loss %.6f vs cpu %.6f", w * window,
                     (w + 1) * window, loss[1], loss[0]);
    }
    cr_log_info("largest relative loss difference over 200 steps: %.3g", worst);
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

/* Criterion counts a skipped test as neither run nor failed, and meson would show the
 * binary as OK: exit 77, meson's SKIP, when no device is usable, so the suite reads
 * "skipped" on machines without a GPU. */
int main(int argc, char *argv[]) {
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
        gpu->release(gpu, d_rec);
        gpu->release(gpu, d_lr);
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
    rig_make(&c, cpu, &data, r.s, CV_EVAL_BATCH);
    rig_make(&g, gpu, &data, r.s, CV_EVAL_BATCH);
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
