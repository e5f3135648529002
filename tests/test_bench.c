/* test_bench.c: `cvae bench` and what it is built from: the cost counts, the timing
 * backend (it forwards every operation, so steps, evaluation and generation through it
 * give the same bits; it counts a step's calls and FLOPs), the CPU's copy and events, the
 * JSON report (valid JSON, shares that add up to 100%, positive times), the table, and
 * bad flags (exit 2, one line). Performance figures are never asserted. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cvae/bench.h"
#include "cvae/eval.h"
#include "cvae/generate.h"
#include "cvae/rng.h"
#include "cvae/train.h"
#include "helpers.h"

static char *dir;

static void setup(void) { dir = test_tmpdir(); }
static void teardown(void) {
    test_rmtree(dir);
    free(dir);
}

TestSuite(bench, .init = setup, .fini = teardown, .timeout = 240);

/* ---- counting ---- */

Test(bench, gemm_cost_is_2mnk_flops_and_its_operands_bytes) {
    cv_op_cost c = cv_cost_gemm(3, 5, 7, false);
    cr_assert_eq(c.flops, 2.0 * 3 * 5 * 7);
    cr_assert_eq(c.bytes, 4.0 * (3 * 7 + 7 * 5 + 3 * 5));
    /* beta != 0 reads C as well */
    cr_assert_eq(cv_cost_gemm(3, 5, 7, true).bytes, 4.0 * (3 * 7 + 7 * 5 + 2 * 3 * 5));
    /* the GPU ceiling's shape: no int overflow */
    cr_assert_eq(cv_cost_gemm(4096, 4096, 4096, false).flops, 137438953472.0);
    /* the default model's first layer, forward: 128 x 400 x 784 */
    cr_assert_eq(cv_cost_gemm(128, 400, 784, false).flops, 80281600.0);
}

Test(bench, elementwise_costs_count_reads_and_writes) {
    /* Adam: p, g, m, v read; p, m, v written */
    cr_assert_eq(cv_cost_adam(1000).bytes, 7 * 4 * 1000.0);
    cr_assert_eq(cv_cost_adam(1000).flops, 0.0);
    /* y read and written, the bias once; a condition row and a label per row */
    cr_assert_eq(cv_cost_bias_act_forward(10, 6, false).bytes, 4.0 * (2 * 60 + 6));
    cr_assert_eq(cv_cost_bias_act_forward(10, 6, true).bytes, 4.0 * (3 * 60 + 6 + 10));
    /* a copy reads and writes each byte */
    cr_assert_eq(cv_cost_copy(100).bytes, 200.0);
    /* pixels as bytes in, floats out */
    cr_assert_eq(cv_cost_gather_batch(2, 3, false, 0).bytes, 6 + 2 + 8 + 24 + 8.0);
    /* float images: 4 bytes a value read; condition vectors: each row read and written */
    cr_assert_eq(cv_cost_gather_batch(2, 3, true, 5).bytes, 24 + 8 + 24 + 2 * 2 * 4 * 5.0);
}

Test(bench, image_shape_is_as_square_as_dim_allows) {
    const int cases[][3] = {{784, 28, 28}, {13, 1, 13}, {12, 3, 4}, {1, 1, 1},
                            {1 << 24, 4096, 4096}, {65537, 1, 65537}, {3072, 48, 64}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int h, w;
        cv_bench_image_shape(cases[i][0], &h, &w);
        cr_assert(h == cases[i][1] && w == cases[i][2], "dim %d: %d x %d", cases[i][0], h, w);
    }
}

Test(bench, rates_and_ceiling_percentages) {
    cv_bench_result r = {.copy_gbs = 10.0, .gemm_tflops = 4.0};
    r.family[CV_FAMILY_GEMM] = (cv_family_stats){.ms = 1.0, .flops = 2e9};
    r.family[CV_FAMILY_ADAM] = (cv_family_stats){.ms = 2.0, .bytes = 4e6};
    cr_assert_float_eq(cv_bench_rate(&r, CV_FAMILY_GEMM), 2.0, 1e-12);          /* TFLOP/s */
    cr_assert_float_eq(cv_bench_ceiling_pct(&r, CV_FAMILY_GEMM), 50.0, 1e-9);
    cr_assert_float_eq(cv_bench_rate(&r, CV_FAMILY_ADAM), 2.0, 1e-12);          /* GB/s */
    cr_assert_float_eq(cv_bench_ceiling_pct(&r, CV_FAMILY_ADAM), 20.0, 1e-9);
    cr_assert_eq(cv_bench_rate(&r, CV_FAMILY_GATHER), 0.0, "no time, no rate");
}

/* ---- copy and events ---- */

/* Milliseconds on the monotonic clock (the CPU backend's events read the same clock). */
static double host_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

/* be's copy moves exactly the bytes asked for, and its events time a busy wait. */
static void check_copy_and_events(cv_backend *be) {
    cv_err err;
    const size_t sizes[] = {0, 1, 4097, (3u << 20) + 5}; /* the last is split over threads */
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        unsigned char *host = malloc(n + 1), *back = malloc(n + 1);
        void *src, *dst;
        cr_assert_eq(be->alloc(be, &src, n + 1, "test source", &err), CV_OK);
        cr_assert_eq(be->alloc(be, &dst, n + 1, "test destination", &err), CV_OK);
        for (size_t j = 0; j < n; j++) host[j] = (unsigned char)(j * 131 + 7);
        host[n] = 0xAB;
        be->upload(be, src, host, n);
        be->upload(be, (char *)dst + n, &host[n], 1);
        be->copy(be, dst, src, n);
        be->download(be, back, dst, n + 1);
        cr_assert(memcmp(back, host, n) == 0, "copy of %zu bytes", n);
        cr_assert_eq(back[n], 0xAB, "copy of %zu bytes wrote past the end", n);
        be->release(be, src);
        be->release(be, dst);
        free(host);
        free(back);
    }
    void *a, *b, *buf;
    const size_t big = (size_t)64 << 20;
    cr_assert_eq(be->event_create(be, &a, &err), CV_OK);
    cr_assert_eq(be->event_create(be, &b, &err), CV_OK);
    cr_assert_eq(be->alloc(be, &buf, big, "test buffer", &err), CV_OK);
    /* no clock bound (a busy machine takes what it takes): the events' interval lies
     * inside the one the host saw around them */
    const double t0 = host_ms();
    be->event_record(be, a);
    be->zero(be, buf, big);
    be->event_record(be, b);
    double ms = be->event_elapsed_ms(be, a, b);
    const double host = host_ms() - t0;
    cr_assert(ms > 0.0 && ms <= host + 1e-3, "zeroing 64 MiB: events %g ms, the host saw %g ms",
              ms, host);
    be->release(be, buf);
    be->event_destroy(be, a);
    be->event_destroy(be, b);
}

Test(bench, cpu_copy_and_events) {
    cv_backend *be;
    cv_err err;
    cr_assert_eq(cv_backend_cpu_create(&be, &err), CV_OK);
    check_copy_and_events(be);
    be->destroy(be);
}

Test(bench, cuda_copy_and_events) {
    if (!cv_backend_cuda_available()) cr_skip_test("no usable CUDA device: GPU test not run");
    cv_backend *be;
    cv_err err;
    cr_assert_eq(cv_backend_cuda_create(NULL, &be, &err), CV_OK, "%s", err.msg);
    check_copy_and_events(be);
    be->destroy(be);
}

/* ---- the timing backend ---- */

/* Every operation of struct cv_backend, from destroy to the end of the struct, as the
 * bytes of a function pointer: the members there are all pointers to functions, of one
 * size and alignment, so they lie without gaps. An operation added to the table later is
 * covered too. */
#define OPS_BEGIN offsetof(cv_backend, destroy)
#define OP_SIZE sizeof(void (*)(void))
#define N_OPS ((sizeof(cv_backend) - OPS_BEGIN) / OP_SIZE)

static bool has_op(const cv_backend *be, size_t i) {
    void (*fn)(void);
    memcpy(&fn, (const char *)be + OPS_BEGIN + i * OP_SIZE, OP_SIZE);
    return fn != NULL;
}

Test(bench, timing_backend_fills_every_operation_the_cpu_has) {
    cr_assert_eq((sizeof(cv_backend) - OPS_BEGIN) % OP_SIZE, 0);
    cv_backend *cpu, *timed;
    cv_err err;
    cr_assert_eq(cv_backend_cpu_create(&cpu, &err), CV_OK);
    cr_assert_eq(cv_backend_timed_create(cpu, 8, &timed, &err), CV_OK, "%s", err.msg);
    for (size_t i = 0; i < N_OPS; i++)
        cr_assert(!has_op(cpu, i) || has_op(timed, i),
                  "operation %zu of struct cv_backend is not forwarded by the timing backend", i);
    cr_assert_str_eq(timed->name, "cpu");
    cr_assert_not(timed->capture_begin(timed), "the timing backend must run steps eagerly");
    timed->destroy(timed);
    cpu->destroy(cpu);
}

/* A small model with every optional path (two hidden layers, the learned prior,
 * binarization) on a backend, with random data on it. */
typedef struct {
    cv_model m;
    cv_workspace ws;
    cv_split host;
    cv_device_split data;
    cv_adam_config adam;
} small_run;

static const int ROWS = 64, BATCH = 16, H = 6, W = 6, CLASSES = 3;

static void small_open(cv_backend *be, small_run *r, uint64_t seed) {
    cv_err err;
    cv_model_config cfg = {.height = H, .width = W, .channels = 1, .cond_width = CLASSES, .latent = 4,
                           .n_hidden = 2, .hidden = {16, 8}, .prior = CV_PRIOR_CONDITIONAL};
    cr_assert_eq(cv_model_create(be, &cfg, &r->m, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(cv_model_init_params(&r->m, seed, &err), CV_OK);
    cr_assert_eq(cv_workspace_create(&r->m, CV_EVAL_BATCH, &r->ws, &err), CV_OK);
    r->host = (cv_split){.n = ROWS, .h = H, .w = W, .channels = 1};
    r->host.pixels = malloc((size_t)ROWS * H * W);
    r->host.labels = malloc(ROWS);
    uint64_t s = seed;
    for (int i = 0; i < ROWS * H * W; i++) {
        s = s * 6364136223846793005u + 1442695040888963407u; /* Knuth's LCG */
        r->host.pixels[i] = (uint8_t)(s >> 56);
    }
    for (int i = 0; i < ROWS; i++) r->host.labels[i] = (uint8_t)(i % CLASSES);
    cr_assert_eq(cv_device_split_upload(be, &r->host, &r->data, &err), CV_OK);
    cv_step st = {.first_bad_step = -1, .first_bad_index = -1};
    cv_loss_sums sums = {0};
    be->upload(be, r->ws.step, &st, sizeof st);
    be->upload(be, r->ws.sums, &sums, sizeof sums);
    r->adam = (cv_adam_config){.lr = 1e-2f, .beta1 = CV_ADAM_BETA1, .beta2 = CV_ADAM_BETA2,
                               .eps = CV_ADAM_EPS, .clip_norm = 1.0f};
}

static void small_close(small_run *r) {
    cv_backend *be = r->m.be;
    cv_device_split_free(be, &r->data);
    cv_workspace_destroy(&r->m, &r->ws);
    cv_model_destroy(&r->m);
    cv_split_free(&r->host);
}

static void small_steps(small_run *r, int steps, uint64_t seed) {
    for (int i = 0; i < steps; i++)
        cv_train_step(&r->m, &r->ws, &r->data, TEST_WHOLE_BATCH(BATCH), seed, &r->adam, 0.5f, true);
}

static void assert_same_bytes(const char *what, const void *a, const void *b, size_t n) {
    cr_assert(memcmp(a, b, n) == 0, "%s differs through the timing backend", what);
}

/* The model's four buffers, the step state and the loss sums of two runs are the same. */
static void assert_same_state(small_run *a, small_run *b) {
    const size_t n = a->m.layout.n_params;
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    float *bufs_a[4] = {a->m.params, a->m.grads, a->m.adam_m, a->m.adam_v};
    float *bufs_b[4] = {b->m.params, b->m.grads, b->m.adam_m, b->m.adam_v};
    static const char *const names[4] = {"params", "grads", "Adam m", "Adam v"};
    for (int i = 0; i < 4; i++) {
        a->m.be->download(a->m.be, x, bufs_a[i], n * sizeof(float));
        b->m.be->download(b->m.be, y, bufs_b[i], n * sizeof(float));
        assert_same_bytes(names[i], x, y, n * sizeof(float));
    }
    free(x);
    free(y);
    cv_step sa, sb;
    cv_loss_sums la, lb;
    a->m.be->download(a->m.be, &sa, a->ws.step, sizeof sa);
    b->m.be->download(b->m.be, &sb, b->ws.step, sizeof sb);
    a->m.be->download(a->m.be, &la, a->ws.sums, sizeof la);
    b->m.be->download(b->m.be, &lb, b->ws.sums, sizeof lb);
    assert_same_bytes("the step state", &sa, &sb, sizeof sa);
    assert_same_bytes("the loss sums", &la, &lb, sizeof la);
    cr_assert_eq(sa.step, 3, "three steps were taken");
}

/* Steps, evaluation and generation on `plain`, and on the timing backend over `inner` (a
 * second backend of the same kind), give the same bits. */
static void expect_same_bits(cv_backend *plain, cv_backend *inner, uint64_t seed) {
    cv_backend *timed;
    cv_err err;
    cr_assert_eq(cv_backend_timed_create(inner, 256, &timed, &err), CV_OK);
    small_run a, b;
    small_open(plain, &a, seed);
    small_open(timed, &b, seed);
    small_steps(&a, 3, seed);
    small_steps(&b, 3, seed);
    assert_same_state(&a, &b);

    /* evaluation: reparam with its log-ratio, IWAE and latent statistics */
    cv_eval_options eo = {.iwae_k = 3, .latent_stats = true};
    cv_eval_result ea, eb;
    cr_assert_eq(cv_evaluate(&a.m, &a.ws, &a.data, seed, &eo, &ea, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(cv_evaluate(&b.m, &b.ws, &b.data, seed, &eo, &eb, &err), CV_OK, "%s", err.msg);
    cr_assert(ea.neg_elbo == eb.neg_elbo && ea.iwae_nll == eb.iwae_nll &&
                  ea.active_units == eb.active_units,
              "evaluation differs through the timing backend");
    assert_same_bytes("the KL per dimension", ea.kl_per_dim, eb.kl_per_dim, 4 * sizeof(double));
    cv_eval_result_free(&ea);
    cv_eval_result_free(&eb);

    /* generation: normal draws, the prior transform, decoding and pixels */
    char pa[4200], pb[4200];
    snprintf(pa, sizeof pa, "%s/a.png", dir);
    snprintf(pb, sizeof pb, "%s/b.png", dir);
    const cv_gen_conditions classes = {.n_classes = 3, .classes = {0, 1, 2}};
    cr_assert_eq(cv_generate_grid(&a.m, &a.ws, &classes, 4, false, false, seed, pa, &err),
                 CV_OK, "%s", err.msg);
    cr_assert_eq(cv_generate_grid(&b.m, &b.ws, &classes, 4, false, false, seed, pb, &err),
                 CV_OK, "%s", err.msg);
    size_t na, nb;
    uint8_t *fa = test_read_file(pa, &na), *fb = test_read_file(pb, &nb);
    cr_assert(na == nb && memcmp(fa, fb, na) == 0, "generated images differ");
    free(fa);
    free(fb);

    small_close(&a);
    small_close(&b);
    timed->destroy(timed);
}

Test(bench, training_through_the_timing_backend_gives_the_same_bits) {
    test_rng rng = test_rng_new("timed vs plain");
    cv_backend *plain, *inner;
    cv_err err;
    cr_assert_eq(cv_backend_cpu_create(&plain, &err), CV_OK);
    cr_assert_eq(cv_backend_cpu_create(&inner, &err), CV_OK);
    expect_same_bits(plain, inner, rng.s);
    inner->destroy(inner);
    plain->destroy(plain);
}

/* A GPU repeats itself for the same calls (docs/design.md 3.4), timed or not. */
Test(bench, training_through_the_timing_backend_gives_the_same_bits_on_a_gpu) {
    if (!cv_backend_cuda_available()) cr_skip_test("no usable CUDA device: GPU test not run");
    test_rng rng = test_rng_new("timed vs plain, GPU");
    cv_backend *plain, *inner;
    cv_err err;
    cr_assert_eq(cv_backend_cuda_create(NULL, &plain, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(cv_backend_cuda_create(NULL, &inner, &err), CV_OK, "%s", err.msg);
    expect_same_bits(plain, inner, rng.s);
    inner->destroy(inner);
    plain->destroy(plain);
}

/* One step's calls per family and its GEMM FLOPs, for the model of small_open. */
Test(bench, timing_backend_counts_a_steps_calls_and_flops) {
    cv_backend *inner, *timed;
    cv_err err;
    cr_assert_eq(cv_backend_cpu_create(&inner, &err), CV_OK);
    cr_assert_eq(cv_backend_timed_create(inner, 256, &timed, &err), CV_OK);
    small_run r;
    small_open(timed, &r, 5);
    cv_family_stats s[CV_FAMILY_COUNT] = {{0}};
    cr_assert_eq(cv_backend_timed_read(timed, s, &err), CV_OK); /* the set-up's zeroing */
    memset(s, 0, sizeof s);
    small_steps(&r, 1, 5);
    cr_assert_eq(cv_backend_timed_read(timed, s, &err), CV_OK, "%s", err.msg);

    /* six layers: 36->16->8->8 (the head, 2L) and 4->8->16->36 */
    const int in[6] = {36, 16, 8, 4, 8, 16}, out[6] = {16, 8, 8, 8, 16, 36};
    double flops = 0;
    for (int i = 0; i < 6; i++) flops += 3 * 2.0 * BATCH * in[i] * out[i];
    flops -= 2.0 * BATCH * in[0] * out[0]; /* the first layer has no input gradient */
    const double calls[CV_FAMILY_COUNT] = {
        [CV_FAMILY_GEMM] = 6 + 6 + 5, [CV_FAMILY_BIAS_ACT_FORWARD] = 6,
        [CV_FAMILY_BIAS_ACT_BACKWARD] = 6, [CV_FAMILY_REPARAM_FORWARD] = 1,
        [CV_FAMILY_REPARAM_BACKWARD] = 1, [CV_FAMILY_RECONSTRUCTION] = 1, [CV_FAMILY_ADAM] = 1,
        [CV_FAMILY_CHECK_ACCUMULATE] = 2, [CV_FAMILY_GATHER] = 1,
        [CV_FAMILY_OTHER] = 2 /* zero the gradients, advance the step */};
    for (int f = 0; f < CV_FAMILY_COUNT; f++) {
        cr_assert_eq(s[f].calls, calls[f], "%s: %g calls", cv_op_family_name(f), s[f].calls);
        cr_assert_geq(s[f].ms, 0.0);
    }
    cr_assert_eq(s[CV_FAMILY_GEMM].flops, flops);
    cr_assert_eq(s[CV_FAMILY_ADAM].bytes, 7 * 4.0 * r.m.layout.n_params);
    small_close(&r);
    timed->destroy(timed);
    inner->destroy(inner);
}

Test(bench, calls_beyond_the_timed_limit_still_run_and_the_read_says_so) {
    cv_backend *plain, *inner, *timed;
    cv_err err;
    cr_assert_eq(cv_backend_cpu_create(&plain, &err), CV_OK);
    cr_assert_eq(cv_backend_cpu_create(&inner, &err), CV_OK);
    cr_assert_eq(cv_backend_timed_create(inner, 4, &timed, &err), CV_OK);
    small_run a, b;
    small_open(plain, &a, 9);
    small_open(timed, &b, 9);
    small_steps(&a, 3, 9);
    small_steps(&b, 3, 9);
    assert_same_state(&a, &b);
    cv_family_stats s[CV_FAMILY_COUNT] = {{0}};
    cr_assert_eq(cv_backend_timed_read(timed, s, &err), CV_ERR_USAGE);
    cr_assert(strstr(err.msg, "untimed") != NULL, "%s", err.msg);
    cr_assert_eq(cv_backend_timed_read(timed, s, &err), CV_OK, "a read starts afresh");
    small_close(&a);
    small_close(&b);
    timed->destroy(timed);
    inner->destroy(inner);
    plain->destroy(plain);
}

/* ---- the command ---- */

static const char *const SMALL[] = {"--steps", "5", "--hidden", "16,8", "--latent", "4",
                                    "--batch", "8", "--classes", "3", "--dim", "36"};
#define N_SMALL (sizeof SMALL / sizeof SMALL[0])

/* cvae bench --device DEVICE SMALL... extra; its stdout, after asserting exit 0 and a
 * quiet stderr. */
static char *run_small(const char *device, const char *extra) {
    const char *args[32] = {"bench", "--device", device};
    int n = 3;
    for (size_t i = 0; i < N_SMALL; i++) args[n++] = SMALL[i];
    if (extra) args[n++] = extra;
    args[n] = NULL;
    char *o, *e;
    int rc = test_run_cvae(&o, &e, args);
    cr_assert_eq(rc, 0, "cvae bench exited %d: %s", rc, e);
    cr_assert_str_empty(e, "stderr: %s", e);
    free(e);
    return o;
}

/* Checks the report in python3's JSON parser; prints what is wrong and exits 1. */
static const char *check_json =
    "import json, sys\n"
    "r = json.load(open(sys.argv[1]))\n"
    "mode, gemm_n, device = sys.argv[2], int(sys.argv[3]), sys.argv[4]\n"
    "names = ['gemm', 'bias_act_forward', 'bias_act_backward', 'reparam_forward',\n"
    "         'reparam_backward', 'reconstruction', 'adam', 'check_accumulate', 'gather',\n"
    "         'other']\n"
    "fam = r['families']\n"
    "assert [f['family'] for f in fam] == names, fam\n"
    "share = sum(f['share_pct'] for f in fam)\n"
    "assert abs(share - 100) < 0.01, share\n"
    "assert all(f['ms_per_step'] > 0 and f['calls_per_step'] > 0 for f in fam), fam\n"
    "total = sum(f['ms_per_step'] for f in fam)\n"
    "assert abs(total - r['eager_step_ms']) < 1e-3 * total, (total, r['eager_step_ms'])\n"
    "assert r['step_ms'] > 0 and r['samples_per_s'] > 0 and r['step_mode'] == mode, r\n"
    "c = r['ceilings']\n"
    "assert c['copy_gb_per_s'] > 0 and c['gemm_tflop_per_s'] > 0 and c['gemm_n'] == gemm_n, c\n"
    "s = r['shape']\n"
    "assert s == {'hidden': [16, 8], 'latent': 4, 'batch': 8, 'classes': 3, 'dim': 36,\n"
    "             'height': 6, 'width': 6, 'params': 1668}, s\n"
    "assert r['precision'] == 'fp32' and r['steps'] == 5 and r['device'].startswith(device)\n"
    "g = fam[0]\n"
    "assert g['rate_unit'] == 'TFLOP/s' and g['flops_per_step'] > 0\n"
    "assert all(f['rate_unit'] == 'GB/s' and f['bytes_per_step'] > 0 for f in fam[1:]), fam\n";

/* cvae bench --json on the small shape passes check_json with the given step mode, GEMM
 * ceiling size and start of the device's description. */
static void check_json_report(const char *device, const char *mode, const char *gemm_n,
                              const char *description) {
    char *o = run_small(device, "--json");
    cr_assert_eq(test_count_lines(o), 1, "not one line: %s", o);
    char json[4200], script[4200], cmd[9000];
    snprintf(json, sizeof json, "%s/bench.json", dir);
    snprintf(script, sizeof script, "%s/check.py", dir);
    test_write_file(json, o, strlen(o));
    test_write_file(script, check_json, strlen(check_json));
    snprintf(cmd, sizeof cmd, "python3 '%s' '%s' %s %s '%s' 1>&2", script, json, mode, gemm_n,
             description);
    cr_assert_eq(system(cmd), 0, "the JSON report fails its checks (above): %s", o);
    free(o);
}

Test(bench, json_report_parses_and_its_shares_add_up) {
    check_json_report("cpu", "eager", "2048", "CPU");
}

Test(bench, json_report_on_a_gpu_times_the_replayed_graph) {
    if (!cv_backend_cuda_available()) cr_skip_test("no usable CUDA device: GPU test not run");
    check_json_report("cuda", "graph", "4096", "");
}

Test(bench, table_has_a_header_and_a_row_per_family) {
    char *o = run_small("cpu", NULL);
    cr_assert(strncmp(o, "device: CPU", 11) == 0, "%s", o);
    const char *first_end = strchr(o, '\n');
    cr_assert(strstr(o, "GB/s") < first_end && strstr(o, "TFLOP/s") < first_end,
              "the header line names the ceilings: %s", o);
    for (int f = 0; f < CV_FAMILY_COUNT; f++) {
        if (f == CV_FAMILY_ALLREDUCE) continue; /* a data-parallel run's alone */
        char row[64];
        snprintf(row, sizeof row, "\n%s ", cv_op_family_name(f));
        cr_assert(strstr(o, row) != NULL, "no row for %s: %s", cv_op_family_name(f), o);
    }
    cr_assert(strstr(o, "samples/s") && strstr(o, "eager (non-graph)"), "%s", o);
    free(o);
}

Test(bench, help_and_usage) {
    char *o, *e;
    const char *help[] = {"bench", "--help", NULL};
    cr_assert_eq(test_run_cvae(&o, &e, help), 0);
    cr_assert(strstr(o, "usage: cvae bench") && strstr(o, "--precision"), "%s", o);
    free(o);
    free(e);
    const char *top[] = {"--help", NULL};
    cr_assert_eq(test_run_cvae(&o, &e, top), 0);
    cr_assert(strstr(o, "\n  bench ") != NULL, "cvae --help does not list bench: %s", o);
    free(o);
    free(e);
}

/* Runs cvae bench with args; exit 2, one line naming the problem, nothing on stdout. */
static void expect_usage(const char *needle, const char *const *args) {
    const char *argv[16] = {"bench"};
    int n = 1;
    for (int i = 0; args[i]; i++) argv[n++] = args[i];
    argv[n] = NULL;
    char *o, *e;
    int rc = test_run_cvae(&o, &e, argv);
    cr_assert_eq(rc, 2, "exit %d for %s %s; stderr: %s", rc, args[0], args[1] ? args[1] : "",
                 e);
    cr_assert_eq(test_count_lines(e), 1, "stderr is not one line: %s", e);
    cr_assert(strncmp(e, "cvae bench: ", 12) == 0, "%s", e);
    cr_assert(strstr(e, needle) != NULL, "expected '%s' in: %s", needle, e);
    cr_assert_str_empty(o, "stdout: %s", o);
    free(o);
    free(e);
}

Test(bench, bad_flags_and_values_exit_2_with_one_line) {
    const struct {
        const char *args[5], *needle;
    } cases[] = {
        {{"--bogus"}, "unknown flag '--bogus'"},
        {{"--steps"}, "--steps needs a value"},
        {{"--steps", "0"}, "--steps must be"},
        {{"--batch", "x"}, "--batch must be"},
        {{"--batch", "0"}, "--batch must be"},
        {{"--latent", "-1"}, "--latent must be"},
        {{"--classes", "257"}, "--classes must be"},
        {{"--hidden", "1,,2"}, "--hidden must be"},
        {{"--dim", "0"}, "--dim must be"},
        {{"--dim", "65537"}, "1 x 65537"},
        {{"--precision", "fp16"}, "--precision must be fp32, tf32, bf16 or tf32x3"},
        {{"--device", "tpu"}, "--device must be"},
        {{"--device", "cpu", "--precision", "tf32"}, "needs a GPU"},
        {{"stray"}, "unexpected argument 'stray'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_usage(cases[i].needle, cases[i].args);
    if (!cv_backend_cuda_available()) {
        const char *cuda[] = {"--device", "cuda", NULL};
        expect_usage("CUDA", cuda);
    }
}
