/* test_oom.c: running out of host memory is one line and exit 1 from the program, or a
 * status from the library, never an abort: cvae train, eval and generate under an
 * address-space limit (RLIMIT_AS), and the library calls that allocate host memory under
 * a limit set just above what the test process holds.
 *
 * AddressSanitizer reserves terabytes of address space for its shadow memory and aborts
 * instead of returning NULL from malloc, so these tests skip under it.
 */
#include <criterion/criterion.h>
#include <ctype.h>
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "cvae/eval.h"
#include "util/fileio.h"
#include "cvae/model.h"
#include "cvae/npy.h"
#include "helpers.h"

#define MiB ((size_t)1 << 20)
#define GiB ((size_t)1 << 30)

#if defined(__SANITIZE_ADDRESS__)
#define NEED_NO_ASAN() cr_skip_test("AddressSanitizer cannot run under an address-space limit")
#else
#define NEED_NO_ASAN() ((void)0)
#endif

static char *dir;
static char data[4096];

static void setup(void) {
    dir = test_tmpdir();
    snprintf(data, sizeof data, "%s/data", dir);
    mkdir(data, 0777);
    test_write_dataset(data, 40, 500, 6, 6, 3, false, 5);
}
static void teardown(void) {
    test_rmtree(dir);
    free(dir);
}

TestSuite(oom, .init = setup, .fini = teardown, .timeout = 240);

/* The smallest address-space limit (to 16 MiB) under which cvae starts and prints its
 * help: the shared libraries and what OpenBLAS and OpenMP reserve on one thread. It
 * differs between builds, so it is measured. */
static size_t startup_floor(void) {
    size_t lo = 16 * MiB, hi = 8 * GiB;
    const char *args[] = {"train", "--help", NULL};
    char *o, *e;
    cr_assert_eq(test_run_cvae_limited(&o, &e, args, hi), 0, "cvae does not start in 8 GiB: %s",
                 e);
    free(o);
    free(e);
    while (hi - lo > 16 * MiB) {
        size_t mid = lo + (hi - lo) / 2;
        int rc = test_run_cvae_limited(&o, &e, args, mid);
        free(o);
        free(e);
        *(rc == 0 ? &hi : &lo) = mid;
    }
    cr_log_info("cvae starts under an address-space limit of %zu MiB", hi / MiB);
    return hi;
}

/* Whether line names a size, e.g. "12.3 MiB" or "4096 bytes". */
static bool names_a_size(const char *line) {
    for (const char *p = line; *p; p++) {
        if (!isdigit((unsigned char)*p)) continue;
        while (isdigit((unsigned char)*p) || *p == '.') p++;
        if (strncmp(p, " MiB", 4) == 0 || strncmp(p, " bytes", 6) == 0) return true;
    }
    return false;
}

/* Exit 1, exactly one line on stderr saying what ran out and how much was wanted. */
static void expect_clean_oom(int rc, const char *err) {
    cr_assert_eq(rc, 1, "exit %d (negative: killed by that signal); stderr: %s", rc, err);
    cr_assert_eq(test_count_lines(err), 1, "stderr is not one line: %s", err);
    cr_assert(strstr(err, "out of") != NULL && names_a_size(err), "no size in: %s", err);
}

/* An --out folder a failed run left no file in (it may have been created up front). */
static void expect_nothing_written(const char *out) {
    DIR *d = opendir(out);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        cr_assert(strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0,
                  "a failed run wrote %s/%s", out, e->d_name);
    closedir(d);
}

Test(oom, train_that_cannot_initialise_its_model_exits_1_with_one_line) {
    NEED_NO_ASAN();
    char out[4200];
    snprintf(out, sizeof out, "%s/run", dir);
    /* --hidden 16384,16384 on 6x6 images: 539M parameters, 2.01 GiB per parameter-sized
     * buffer. The model's four (parameters, gradients, Adam m and v, 8.03 GiB) and its
     * 500-row workspace (0.25 GiB) fit under floor + 9.25 GiB; the host copy that the
     * initialisation fills, 2.01 GiB more, does not. */
    size_t limit = startup_floor() + 9 * GiB + GiB / 4;
    const char *args[] = {"train", "--data", data, "--out", out, "--hidden", "16384,16384",
                          "--epochs", "1", "--device", "cpu", NULL};
    char *o, *e;
    int rc = test_run_cvae_limited(&o, &e, args, limit);
    cr_log_info("train under %zu MiB: %s", limit / MiB, e);
    expect_clean_oom(rc, e);
    expect_nothing_written(out);
    free(o);
    free(e);
}

/* OpenBLAS retries a failed allocation for ever: with two threads and a limit that leaves
 * less than the backend reserves for them (256 MiB each), cvae must fail at once. */
Test(oom, train_whose_threads_cannot_get_blas_buffers_exits_1_instead_of_hanging) {
    NEED_NO_ASAN();
    char out[4200];
    snprintf(out, sizeof out, "%s/run", dir);
    size_t limit = startup_floor() + 300 * MiB;
    setenv("OMP_NUM_THREADS", "2", 1);
    const char *args[] = {"train", "--data", data, "--out", out, "--epochs", "1", "--device",
                          "cpu", NULL};
    char *o, *e;
    int rc = test_run_cvae_limited(&o, &e, args, limit);
    unsetenv("OMP_NUM_THREADS");
    cr_log_info("train with 2 threads under %zu MiB: %s", limit / MiB, e);
    expect_clean_oom(rc, e);
    cr_assert(strstr(e, "OpenBLAS") != NULL, "%s", e);
    expect_nothing_written(out);
    free(o);
    free(e);
}

Test(oom, eval_that_cannot_allocate_its_scratch_exits_1_with_one_line) {
    NEED_NO_ASAN();
    char run[4200], ckpt[4300];
    snprintf(run, sizeof run, "%s/run", dir);
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", run);
    test_train_small(data, run, 16, 65536, 1, 7);
    /* latent 65536, hidden 16, 6x6 images: 3.3M parameters (12.5 MiB). Before it
     * evaluates, cvae eval holds the checkpoint's three copies and the model's four (88
     * MiB) and a 500-row workspace (875 MiB: [mu | s] and its gradient, eps, z, dz); the
     * evaluation's host copy of a batch's [mu | s] then needs 250 MiB. floor + 1088 MiB
     * lies in the middle of that window (measured: 992..1184 MiB). Above it OpenBLAS cannot
     * get its 128 MiB GEMM buffer and retries forever, which the 60 s alarm ends. */
    size_t limit = startup_floor() + 1088 * MiB;
    const char *args[] = {"eval", "--model", ckpt, "--data", data, "--device", "cpu", NULL};
    char *o, *e;
    int rc = test_run_cvae_limited(&o, &e, args, limit);
    cr_log_info("eval under %zu MiB: %s", limit / MiB, e);
    expect_clean_oom(rc, e);
    cr_assert_eq(o[0], 0, "a failed eval printed figures: %s", o);
    free(o);
    free(e);
}

/* The host buffers of a chunk of generated images hold its pixels and, for condition
 * vectors, its rows (B x K floats): the message states what they all need. A model of
 * 4x4 images and conditions of width 65536, generating 2^20 images a chunk: 16 MiB of
 * pixels, 256 GiB of rows, 64 MiB of one block's scratch rows. */
Test(oom, generate_states_the_memory_its_condition_rows_need) {
    NEED_NO_ASAN();
    char cdata[4200], run[4200], out[4200];
    snprintf(cdata, sizeof cdata, "%s/wide", dir);
    snprintf(run, sizeof run, "%s/wide-run", dir);
    snprintf(out, sizeof out, "%s/gen", dir);
    mkdir(cdata, 0777);
    enum { N = 4, K = 65536 };
    uint8_t px[N * 16] = {0};
    float *cond = calloc((size_t)N * K, sizeof(float));
    cv_err err;
    char path[4300];
    snprintf(path, sizeof path, "%s/train_images.npy", cdata);
    cr_assert_eq(cv_npy_write(path, CV_NPY_U8, 3, (const int64_t[3]){N, 4, 4}, px, &err), CV_OK);
    snprintf(path, sizeof path, "%s/train_conditions.npy", cdata);
    cr_assert_eq(cv_npy_write(path, CV_NPY_F32, 2, (const int64_t[2]){N, K}, cond, &err), CV_OK);
    snprintf(path, sizeof path, "%s/one-row.npy", dir);
    cr_assert_eq(cv_npy_write(path, CV_NPY_F32, 2, (const int64_t[2]){1, K}, cond, &err), CV_OK);
    free(cond);
    test_train_small(cdata, run, 2, 1, 1, 3);
    char ckpt[4300];
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", run);
    const char *args[] = {"generate", "--model", ckpt, "--conditions", path, "--per-row",
                          "1048576", "--batch", "1048576", "--out", out, "--format", "npy",
                          "--device", "cpu", NULL};
    char *o, *e;
    int rc = test_run_cvae_limited(&o, &e, args, startup_floor() + 2 * GiB);
    cr_log_info("generate: %s", e);
    expect_clean_oom(rc, e);
    const char *needs = strstr(e, "needs ");
    cr_assert(needs, "%s", e);
    const double mib = strtod(needs + 6, NULL);
    cr_assert(mib == 16 + 262144 + 64, "states %.1f MiB, not the 262224 its buffers need", mib);
    cr_assert(!cv_path_exists(out), "a failed generate left %s", out);
    free(o);
    free(e);
}

/* Lowers the address-space limit to what this process holds now plus headroom (the hard
 * limit stays, so unlimit can raise it again). */
static void limit_address_space(size_t headroom) {
    FILE *fp = fopen("/proc/self/status", "r");
    cr_assert_not_null(fp);
    char line[256];
    size_t held = 0;
    while (fgets(line, sizeof line, fp))
        if (strncmp(line, "VmSize:", 7) == 0) held = strtoull(line + 7, NULL, 10) * 1024;
    fclose(fp);
    cr_assert_gt(held, 0, "no VmSize in /proc/self/status");
    struct rlimit rl;
    getrlimit(RLIMIT_AS, &rl);
    rl.rlim_cur = held + headroom;
    cr_assert_eq(setrlimit(RLIMIT_AS, &rl), 0);
}

static void unlimit(void) {
    struct rlimit rl;
    getrlimit(RLIMIT_AS, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_AS, &rl);
}

static void expect_nomem(cv_status st, const cv_err *err) {
    cr_assert_eq(st, CV_ERR_NOMEM, "status %d: %s", st, err->msg);
    cr_assert(strstr(err->msg, "out of host memory") && names_a_size(err->msg), "%s",
              err->msg);
    cr_assert(strchr(err->msg, '\n') == NULL, "more than one line: %s", err->msg);
}

Test(oom, init_params_without_host_memory_returns_a_status) {
    NEED_NO_ASAN();
    cv_backend *be;
    cv_err err = {{0}};
    cr_assert_eq(cv_backend_cpu_create(&be, &err), CV_OK);
    /* 64x64 images and a hidden layer of 8192: 67M parameters, 256 MiB a buffer */
    cv_model_config cfg = {.height = 64, .width = 64, .channels = 1, .cond_width = 10, .latent = 20,
                           .n_hidden = 1, .hidden = {8192}};
    cv_model m;
    cr_assert_eq(cv_model_create(be, &cfg, &m, &err), CV_OK, "%s", err.msg);
    limit_address_space(64 * MiB);
    cv_status st = cv_model_init_params(&m, 1, &err);
    unlimit();
    expect_nomem(st, &err);
    cv_model_destroy(&m);
    be->destroy(be);
}

Test(oom, evaluate_without_host_memory_returns_a_status) {
    NEED_NO_ASAN();
    cv_backend *be;
    cv_err err = {{0}};
    cr_assert_eq(cv_backend_cpu_create(&be, &err), CV_OK);
    /* latent 16384: the host copy of a 500-row batch's [mu | s] is 62.5 MiB */
    cv_model_config cfg = {.height = 6, .width = 6, .channels = 1, .cond_width = 3, .latent = 16384,
                           .n_hidden = 1, .hidden = {16}};
    cv_model m;
    cv_workspace ws;
    cv_device_split ds;
    cr_assert_eq(cv_model_create(be, &cfg, &m, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(cv_model_init_params(&m, 1, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(cv_workspace_create(&m, CV_EVAL_BATCH, &ws, &err), CV_OK, "%s", err.msg);
    cv_split s = {.pixels = calloc(500, 36), .labels = calloc(500, 1), .n = 500, .h = 6, .w = 6,
                  .channels = 1};
    cr_assert_eq(cv_device_split_upload(be, &s, &ds, &err), CV_OK, "%s", err.msg);
    cv_eval_options opt = {.latent_stats = true};
    cv_eval_result res;
    limit_address_space(16 * MiB);
    cv_status st = cv_evaluate(&m, &ws, &ds, 1, &opt, &res, &err);
    unlimit();
    expect_nomem(st, &err);
    cr_assert_null(res.kl_per_dim);
    cv_device_split_free(be, &ds);
    cv_split_free(&s);
    cv_workspace_destroy(&m, &ws);
    cv_model_destroy(&m);
    be->destroy(be);
}

Test(oom, split_upload_without_host_memory_returns_a_status) {
    NEED_NO_ASAN();
    cv_backend *be;
    cv_err err = {{0}};
    cr_assert_eq(cv_backend_cpu_create(&be, &err), CV_OK);
    /* 50M one-pixel images: the backend's copies take 300 MB (pixels, labels, order), and
     * the host's identity order 200 MB more */
    const int n = 50000000;
    cv_split s = {.pixels = calloc((size_t)n, 1), .labels = calloc((size_t)n, 1), .n = n, .h = 1,
                  .w = 1, .channels = 1};
    cr_assert(s.pixels && s.labels);
    cv_device_split ds;
    limit_address_space(300000000 + 64 * MiB);
    cv_status st = cv_device_split_upload(be, &s, &ds, &err);
    unlimit();
    expect_nomem(st, &err);
    cr_assert(ds.pixels == NULL && ds.labels == NULL && ds.perm == NULL,
              "a failed upload kept its buffers");
    cv_split_free(&s);
    be->destroy(be);
}

/* A device's allocation as cv_cuda_malloc refuses one: the request and the free memory. */
static cv_status gpu_full(cv_backend *be, void **ptr, size_t bytes, const char *what,
                          cv_err *err) {
    (void)be;
    *ptr = NULL;
    return cv_fail(err, CV_ERR_NOMEM, "out of GPU memory: %s needs %.1f MiB, 100.0 MiB free of "
                   "80000.0 MiB", what, bytes / 1048576.0);
}

/* On the CPU a data set is used where it lies (the host's arrays, freed by their owner);
 * a device that cannot hold it refuses it in one line with both sizes and why. */
Test(oom, a_data_set_is_borrowed_on_the_cpu_and_refused_by_a_full_gpu) {
    cv_backend *be;
    cv_err err = {{0}};
    cr_assert_eq(cv_backend_cpu_create(&be, &err), CV_OK);
    cr_assert(be->host_memory);
    cv_split s = {.pixels = calloc(300, 36), .labels = calloc(300, 1), .n = 300, .h = 6, .w = 6,
                  .channels = 1};
    cv_device_split ds;
    cr_assert_eq(cv_device_split_use(be, &s, &ds, &err), CV_OK, "%s", err.msg);
    cr_assert(ds.borrowed && ds.pixels == s.pixels && ds.labels == s.labels && ds.perm &&
              ds.perm[299] == 299);
    cv_device_split_free(be, &ds);
    s.pixels[35 * 300 - 1] = 7; /* still the host's to write, and to free */
    be->host_memory = false;
    be->alloc = gpu_full;
    cr_assert_eq(cv_device_split_use(be, &s, &ds, &err), CV_ERR_NOMEM);
    cr_assert(strstr(err.msg, "out of GPU memory: data set images needs 0.0 MiB, 100.0 MiB free") &&
              strstr(err.msg, "does not stream a data set to the GPU") && !strchr(err.msg, '\n'),
              "%s", err.msg);
    cr_assert(ds.pixels == NULL && ds.perm == NULL);
    cv_split_free(&s);
    be->destroy(be);
}
