/* test_latent.c: `cvae encode`, `cvae decode` and `cvae export` on a small trained model:
 * the output does not depend on the batch size (any N goes through the backend in
 * batches), decoded.npy and the images agree, encode agrees with the encoder pass written
 * out here in double precision, and bad requests (latents of the wrong width or dtype, a
 * NaN, conditions that do not match the model or the rows, an existing output, an
 * unknown format) are one line, exit 1 or 2, and leave nothing behind. PyTorch and ONNX
 * Runtime are compared with these outputs by tests/export_check.py; the exported prior,
 * which no command outputs, against the backend's prior_transform here. */
#include <criterion/criterion.h>
#include <math.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cvae/checkpoint.h"
#include "cvae/export.h"
#include "cvae/latent.h"
#include "cvae/npy.h"
#include "helpers.h"
#include "util/fileio.h"

static char *dir, data[4200], ckpt[4300];
#define N_TEST 300 /* above the 256-row decoding block */

static void setup(void) {
    dir = test_tmpdir();
    char run[4200];
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(run, sizeof run, "%s/run", dir);
    mkdir(data, 0777);
    test_write_dataset(data, 200, N_TEST, 5, 6, 3, false, 31);
    test_train_small(data, run, 16, 3, 2, 7);
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", run);
}
static void teardown(void) {
    test_rmtree(dir);
    free(dir);
}

TestSuite(latent, .init = setup, .fini = teardown, .timeout = 120);

/* Runs cvae with args; returns the exit code, asserting one stderr line on failure. */
static int cvae(const char *const *args) {
    char *out, *err;
    int rc = test_run_cvae(&out, &err, args);
    if (rc != 0)
        cr_assert_eq(test_count_lines(err), 1, "expected one error line, got: %s", err);
    free(out);
    free(err);
    return rc;
}

static cv_npy_array load(const char *path) {
    cv_npy_array a;
    cv_err err;
    cr_assert_eq(cv_npy_read(path, &a, &err), CV_OK, "%s", err.msg);
    return a;
}

static void encode(const char *out, const char *batch) {
    const char *args[] = {"encode", "--model", ckpt, "--data", data, "--out", out, "--batch",
                          batch, "--device", "cpu", NULL};
    cr_assert_eq(cvae(args), 0);
}

/* The encoder in double precision on test image i (grey 5x6, K = 3 labels, one hidden
 * layer): [mean | clamp(logvar)]. */
static void encode_reference(const cv_checkpoint *ck, const uint8_t *pixels, int label,
                             double *out) {
    cv_layout lo;
    cv_err err;
    cr_assert_eq(cv_layout_init(&ck->cfg, &lo, &err), CV_OK);
    const cv_layer *l1 = &lo.layers[0], *head = &lo.layers[1];
    double h[16];
    for (int o = 0; o < l1->out; o++) {
        double s = ck->params[l1->b + o] + ck->params[l1->cond + (size_t)label * l1->out + o];
        for (int i = 0; i < l1->in; i++) s += ck->params[l1->w + (size_t)o * l1->in + i] * (pixels[i] / 255.0);
        h[o] = s > 0 ? s : 0;
    }
    for (int o = 0; o < head->out; o++) {
        double s = ck->params[head->b + o];
        for (int i = 0; i < head->in; i++) s += ck->params[head->w + (size_t)o * head->in + i] * h[i];
        out[o] = o >= head->out / 2 ? fmin(30, fmax(-30, s)) : s;
    }
}

Test(latent, encode_matches_a_double_reference_for_any_batch) {
    char a[4300], b[4300], images[4300], labels[4300];
    snprintf(a, sizeof a, "%s/enc1.npy", dir);
    snprintf(b, sizeof b, "%s/enc7.npy", dir);
    encode(a, "1");
    encode(b, "7");
    size_t na, nb;
    uint8_t *fa = test_read_file(a, &na), *fb = test_read_file(b, &nb);
    cr_assert(na == nb && memcmp(fa, fb, na) == 0, "--batch 1 and 7 wrote different bytes");
    free(fa);
    free(fb);
    cv_npy_array e = load(a);
    cr_assert(e.dtype == CV_NPY_F32 && e.ndims == 2 && e.dims[0] == N_TEST && e.dims[1] == 6);
    cv_checkpoint ck;
    cv_err err;
    cr_assert_eq(cv_checkpoint_load(ckpt, &ck, &err), CV_OK, "%s", err.msg);
    snprintf(images, sizeof images, "%s/t10k-images-idx3-ubyte", data);
    snprintf(labels, sizeof labels, "%s/t10k-labels-idx1-ubyte", data);
    int dims[3], ldims[1];
    uint8_t *px, *lab;
    cr_assert_eq(cv_idx_read(images, 3, dims, &px, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(cv_idx_read(labels, 1, ldims, &lab, &err), CV_OK, "%s", err.msg);
    const float *got = e.data;
    for (int i = 0; i < N_TEST; i++) {
        double ref[6];
        encode_reference(&ck, px + (size_t)i * 30, lab[i], ref);
        /* float sums of 30 + 3 and 16 terms of |a b| <= ~2 against double: 1e-5 */
        for (int j = 0; j < 6; j++) assert_close("posterior", i * 6 + j, got[i * 6 + j], ref[j], 1e-5, 1e-5);
    }
    free(px);
    free(lab);
    cv_checkpoint_free(&ck);
    cv_npy_free(&e);
}

/* Fresh latents (rows, 3) and labels below 3 written to dir. */
static void write_latents(const char *z, const char *labels, int rows, test_rng *rng) {
    float *v = malloc((size_t)rows * 3 * sizeof(float));
    uint8_t *lab = malloc((size_t)rows);
    for (int i = 0; i < rows * 3; i++) v[i] = (float)test_normal(rng);
    for (int i = 0; i < rows; i++) lab[i] = (uint8_t)(i * 7 % 3);
    test_write_npy(z, CV_NPY_F32, 2, (const int64_t[2]){rows, 3}, v);
    test_write_npy(labels, CV_NPY_U8, 1, (const int64_t[1]){rows}, lab);
    free(v);
    free(lab);
}

Test(latent, decode_any_count_in_any_batch_gives_the_same_bytes) {
    test_rng rng = test_rng_new("latents");
    const int counts[] = {1, 257, 600};
    for (int c = 0; c < 3; c++) {
        char z[4300], lab[4300], out1[4300], out2[4300];
        snprintf(z, sizeof z, "%s/z%d.npy", dir, c);
        snprintf(lab, sizeof lab, "%s/l%d.npy", dir, c);
        snprintf(out1, sizeof out1, "%s/dec%d_a", dir, c);
        snprintf(out2, sizeof out2, "%s/dec%d_b", dir, c);
        write_latents(z, lab, counts[c], &rng);
        const char *a1[] = {"decode", "--model", ckpt, "--z", z, "--labels", lab, "--out", out1,
                            "--batch", "1", "--device", "cpu", NULL};
        const char *a2[] = {"decode", "--model", ckpt, "--z", z, "--labels", lab, "--out", out2,
                            "--batch", "5000", "--device", "cpu", NULL};
        cr_assert_eq(cvae(a1), 0);
        cr_assert_eq(cvae(a2), 0);
        size_t n1, n2;
        uint8_t *f1 = test_read_file(test_path_in(out1, "decoded.npy"), &n1);
        uint8_t *f2 = test_read_file(test_path_in(out2, "decoded.npy"), &n2);
        cr_assert(f1 && f2 && n1 == n2 && memcmp(f1, f2, n1) == 0, "N %d: batches differ",
                  counts[c]);
        free(f1);
        free(f2);
        cv_npy_array d = load(test_path_in(out1, "decoded.npy"));
        cv_npy_array im = load(test_path_in(out1, "images.npy"));
        cr_assert(d.ndims == 3 && d.dims[0] == counts[c] && d.dims[1] == 5 && d.dims[2] == 6);
        const float *p = d.data;
        const uint8_t *px = im.data;
        for (size_t i = 0; i < (size_t)counts[c] * 30; i++) {
            cr_assert(p[i] >= 0 && p[i] <= 1, "p %g", p[i]);
            cr_assert_eq(px[i], (uint8_t)floorf(255 * p[i] + 0.5f), "pixel %zu", i);
        }
        cv_npy_free(&d);
        cv_npy_free(&im);
    }
}

/* A request that must fail with exit code rc, writing no `out`. */
static void refused(int rc, const char *out, const char *const *args) {
    cr_assert_eq(cvae(args), rc, "expected exit %d", rc);
    cr_assert(!cv_path_exists(out), "%s was written", out);
}

Test(latent, bad_requests_are_one_line_and_write_nothing) {
    test_rng rng = test_rng_new("bad latents");
    char z[4300], lab[4300], out[4300], wide[4300], f64[4300], nan[4300], few[4300], vec[4300];
    snprintf(z, sizeof z, "%s/z.npy", dir);
    snprintf(lab, sizeof lab, "%s/l.npy", dir);
    snprintf(few, sizeof few, "%s/few.npy", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(wide, sizeof wide, "%s/wide.npy", dir);
    snprintf(f64, sizeof f64, "%s/f64.npy", dir);
    snprintf(nan, sizeof nan, "%s/nan.npy", dir);
    snprintf(vec, sizeof vec, "%s/vec.npy", dir);
    write_latents(z, lab, 10, &rng);
    write_latents(wide, few, 4, &rng); /* 4 labels against 10 latents */
    float w[10 * 4] = {0}, v[10 * 3] = {0};
    test_write_npy(wide, CV_NPY_F32, 2, (const int64_t[2]){10, 4}, w);
    test_write_npy(vec, CV_NPY_F32, 2, (const int64_t[2]){10, 3}, v);
    double d[10 * 3] = {0};
    test_write_file(f64, d, sizeof d); /* not even a .npy */
    v[7] = NAN;
    test_write_npy(nan, CV_NPY_F32, 2, (const int64_t[2]){10, 3}, v);
#define DECODE(zf, flag, cf) \
    ((const char *[]){"decode", "--model", ckpt, "--z", zf, flag, cf, "--out", out, "--device", "cpu", NULL})
    refused(1, out, DECODE(wide, "--labels", lab));    /* latents of the wrong width */
    refused(1, out, DECODE(f64, "--labels", lab));     /* not a float32 .npy */
    refused(1, out, DECODE(nan, "--labels", lab));     /* a NaN */
    refused(1, out, DECODE(z, "--labels", few));       /* 4 conditions for 10 latents */
    refused(2, out, DECODE(z, "--conditions", vec));   /* vectors for a model of labels */
    refused(2, out, DECODE(z, "--class", "3"));        /* a class the model lacks */
    refused(2, out, ((const char *[]){"decode", "--model", ckpt, "--z", z, "--out", out, NULL}));
    refused(2, out, ((const char *[]){"decode", "--model", ckpt, "--z", z, "--class", "0",
                                      "--out", out, "--format", "grid", NULL}));
    /* an output folder that holds something is left as it was */
    mkdir(out, 0777);
    test_write_file(test_path_in(out, "keep"), "x", 1);
    cr_assert_eq(cvae(DECODE(z, "--labels", lab)), 1);
    cr_assert(cv_path_exists(test_path_in(out, "keep")) &&
              !cv_path_exists(test_path_in(out, "decoded.npy")));
#undef DECODE
    /* encode over an existing file, and into a folder that cannot be made */
    char enc[4300], blocked[8700];
    snprintf(enc, sizeof enc, "%s/enc.npy", dir);
    test_write_file(enc, "keep", 4);
    cr_assert_eq(cvae((const char *[]){"encode", "--model", ckpt, "--data", data, "--out", enc,
                                       NULL}), 1);
    size_t n;
    uint8_t *kept = test_read_file(enc, &n);
    cr_assert(n == 4 && memcmp(kept, "keep", 4) == 0, "encode overwrote a file");
    free(kept);
    snprintf(blocked, sizeof blocked, "%s/keep/enc.npy", out);
    refused(1, blocked, ((const char *[]){"encode", "--model", ckpt, "--data", data, "--out",
                                          blocked, NULL}));
    snprintf(enc, sizeof enc, "%s/enc2.npy", dir);
    refused(2, enc, ((const char *[]){"encode", "--model", ckpt, "--data", data, "--out", enc,
                                      "--split", "validation", NULL}));
}

/* The flags that would help, named by the refusal of a wrong kind of condition: those of
 * the command run, never another command's. */
static void refused_naming(const char *const *args, const char *flags, const char *foreign) {
    char *o, *e;
    cr_assert_eq(test_run_cvae(&o, &e, args), 2, "%s", e);
    cr_assert(strstr(e, flags) && !strstr(e, foreign), "%s: %s", args[0], e);
    free(o);
    free(e);
}

Test(latent, a_wrong_kind_of_condition_names_the_commands_own_flags) {
    char z[4300], lab[4300], vec[4300], out[4300];
    snprintf(z, sizeof z, "%s/zk.npy", dir);
    snprintf(lab, sizeof lab, "%s/lk.npy", dir);
    snprintf(vec, sizeof vec, "%s/vk.npy", dir);
    snprintf(out, sizeof out, "%s/kind.png", dir);
    test_rng rng = test_rng_new("kind");
    write_latents(z, lab, 4, &rng);
    float v[4 * 3];
    for (int i = 0; i < 4 * 3; i++) v[i] = (float)test_normal(&rng);
    test_write_npy(vec, CV_NPY_F32, 2, (const int64_t[2]){4, 3}, v);
    refused_naming((const char *[]){"decode", "--model", ckpt, "--z", z, "--conditions", vec,
                                    "--out", out, NULL}, "--class", "--per-class");
    refused_naming((const char *[]){"generate", "--model", ckpt, "--format", "traversal",
                                    "--conditions", vec, "--out", out, NULL}, "--classes",
                   "--per-class");
}

Test(latent, export_refuses_what_exists_and_unknown_formats) {
    char st[4300], onnx[4300];
    snprintf(st, sizeof st, "%s/m.safetensors", dir);
    snprintf(onnx, sizeof onnx, "%s/onnx", dir);
    test_write_file(st, "keep", 4);
    cr_assert_eq(cvae((const char *[]){"export", "--model", ckpt, "--format", "safetensors",
                                       "--out", st, NULL}), 1);
    size_t n;
    uint8_t *kept = test_read_file(st, &n);
    cr_assert(n == 4 && memcmp(kept, "keep", 4) == 0, "export overwrote a file");
    free(kept);
    refused(2, onnx, ((const char *[]){"export", "--model", ckpt, "--format", "tflite", "--out",
                                       onnx, NULL}));
    /* ONNX is all or nothing: with decoder.onnx there, no encoder.onnx appears either */
    mkdir(onnx, 0777);
    test_write_file(test_path_in(onnx, "decoder.onnx"), "keep", 4);
    cr_assert_eq(cvae((const char *[]){"export", "--model", ckpt, "--format", "onnx", "--out",
                                       onnx, NULL}), 1);
    cr_assert(!cv_path_exists(test_path_in(onnx, "encoder.onnx")));
    /* a fresh folder gets both, with their parents */
    char fresh[4300];
    snprintf(fresh, sizeof fresh, "%s/a/b", dir);
    cr_assert_eq(cvae((const char *[]){"export", "--model", ckpt, "--format", "onnx", "--out",
                                       fresh, NULL}), 0);
    cr_assert(cv_path_exists(test_path_in(fresh, "encoder.onnx")) &&
              cv_path_exists(test_path_in(fresh, "decoder.onnx")) &&
              !cv_path_exists(test_path_in(fresh, "prior.onnx")));
    /* what a killed export left in its folder (NAME.onnx.tmp.PID of a dead process) goes */
    char again[4300], left[4400];
    snprintf(again, sizeof again, "%s/again", dir);
    mkdir(again, 0777);
    snprintf(left, sizeof left, "%s/decoder.onnx.tmp.%ld", again, (long)test_dead_pid());
    test_write_file(left, "partial", 7);
    cr_assert_eq(cvae((const char *[]){"export", "--model", ckpt, "--format", "onnx", "--out",
                                       again, NULL}), 0);
    cr_assert(!cv_path_exists(left), "%s was not swept", left);
}

Test(latent, export_carries_the_class_names_it_is_given) {
    char st[4300], onnx[4300], bad[4300];
    snprintf(st, sizeof st, "%s/named.safetensors", dir);
    snprintf(onnx, sizeof onnx, "%s/named-onnx", dir);
    snprintf(bad, sizeof bad, "%s/bad.safetensors", dir);
    const char *names = "T-shirt/top,a \"quoted\" one,Ankle boot";
    cr_assert_eq(cvae((const char *[]){"export", "--model", ckpt, "--format", "safetensors",
                                       "--class-names", names, "--out", st, NULL}), 0);
    cr_assert_eq(cvae((const char *[]){"export", "--model", ckpt, "--format", "onnx",
                                       "--class-names", names, "--out", onnx, NULL}), 0);
    /* the configuration is a JSON string inside the header's JSON: escaped twice */
    const char *want = "\\\"class_names\\\": [\\\"T-shirt/top\\\", "
                       "\\\"a \\\\\\\"quoted\\\\\\\" one\\\", \\\"Ankle boot\\\"]";
    size_t n;
    char *file = (char *)test_read_file(st, &n);
    cr_assert(strstr(file + 8, want), "no class names in %.600s", file + 8); /* after its length */
    free(file);
    /* in ONNX's metadata_props the configuration is escaped once */
    file = (char *)test_read_file(test_path_in(onnx, "encoder.onnx"), &n);
    const char *once = "\"class_names\": [\"T-shirt/top\", \"a \\\"quoted\\\" one\", "
                       "\"Ankle boot\"]";
    cr_assert(memmem(file, n, once, strlen(once)), "no class names in encoder.onnx");
    free(file);
    /* a name per class, none empty */
    refused(2, bad, ((const char *[]){"export", "--model", ckpt, "--format", "safetensors",
                                      "--class-names", "a,b", "--out", bad, NULL}));
    refused(2, bad, ((const char *[]){"export", "--model", ckpt, "--format", "safetensors",
                                      "--class-names", "a,,c", "--out", bad, NULL}));
}

/* The floats of tensor `name` in a .safetensors file's bytes (file), count of them. */
static const float *safetensor(const uint8_t *file, const char *name, size_t count) {
    uint64_t header = 0;
    for (int i = 0; i < 8; i++) header |= (uint64_t)file[i] << (8 * i);
    char key[64];
    snprintf(key, sizeof key, "\"%s\": {", name);
    const char *at = strstr((const char *)file + 8, key);
    cr_assert(at && (const uint8_t *)at < file + 8 + header, "no tensor %s", name);
    unsigned long long begin, end;
    cr_assert(sscanf(strstr(at, "\"data_offsets\": ["), "\"data_offsets\": [%llu, %llu]", &begin,
                     &end) == 2);
    cr_assert_eq(end - begin, count * sizeof(float), "%s: %llu bytes", name, end - begin);
    return (const float *)(file + 8 + header + begin);
}

/* The prior of class c on the CPU backend: z (K, L) set to v, moved by prior_transform. */
static void prior_of_classes(cv_model *m, cv_workspace *ws, float v, float *z) {
    const int K = m->layout.cfg.cond_width, L = m->layout.cfg.latent;
    int32_t labels[8];
    for (int c = 0; c < K; c++) labels[c] = c;
    for (int i = 0; i < K * L; i++) z[i] = v;
    m->be->upload(m->be, ws->labels, labels, (size_t)K * sizeof(int32_t));
    m->be->upload(m->be, ws->z, z, (size_t)K * L * sizeof(float));
    cv_prior prior;
    m->be->prior_transform(m->be, cv_model_batch_prior(m, ws, K, &prior), ws->labels, ws->z, K, L);
    m->be->download(m->be, z, ws->z, (size_t)K * L * sizeof(float));
}

Test(latent, the_exported_prior_is_the_models_prior) {
    /* a model of K = 3 labels with the learned prior, L = 4 (the tables are not square),
     * random parameters: prior_mean.weight[j, c] must be the mean of unit j under class c,
     * prior_logvar.weight[j, c] its log-variance, as cvae's backend places z in the prior */
    const int K = 3, L = 4;
    cv_checkpoint ck = {.cfg = {.height = 5, .width = 6, .channels = 1,
                                .condition = CV_COND_LABELS, .cond_width = K, .latent = L,
                                .n_hidden = 1, .hidden = {8}, .prior = CV_PRIOR_CONDITIONAL}};
    cv_layout lo;
    cv_err err;
    cr_assert_eq(cv_layout_init(&ck.cfg, &lo, &err), CV_OK, "%s", err.msg);
    ck.n_params = lo.n_params;
    ck.params = malloc(lo.n_params * sizeof(float));
    ck.adam_m = calloc(lo.n_params, sizeof(float));
    ck.adam_v = calloc(lo.n_params, sizeof(float));
    test_rng rng = test_rng_new("exported prior");
    test_fill(&rng, ck.params, lo.n_params, -1, 1);
    char path[4300];
    snprintf(path, sizeof path, "%s/prior.safetensors", dir);
    cv_export_source src = {.ck = &ck, .checkpoint_sha256 = "0"};
    cr_assert_eq(cv_export_safetensors(&src, path, &err), CV_OK, "%s", err.msg);
    size_t n;
    uint8_t *file = test_read_file(path, &n);
    const float *mean_w = safetensor(file, "prior_mean.weight", (size_t)L * K);
    const float *logvar_w = safetensor(file, "prior_logvar.weight", (size_t)L * K);
    cv_backend *be;
    cv_model m;
    cv_workspace ws;
    cr_assert_eq(cv_backend_open("cpu", NULL, &be, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(cv_model_from_checkpoint(be, &ck, &m, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(cv_workspace_create(&m, K, &ws, &err), CV_OK, "%s", err.msg);
    float mean[3 * 4], moved[3 * 4];
    prior_of_classes(&m, &ws, 0.0f, mean);  /* z = 0: the mean */
    prior_of_classes(&m, &ws, 1.0f, moved); /* z = 1: the mean + exp(logvar / 2) */
    for (int c = 0; c < K; c++)
        for (int j = 0; j < L; j++) {
            const double logvar = 2 * log((double)moved[c * L + j] - mean[c * L + j]);
            assert_close("prior mean", c * L + j, mean_w[j * K + c], mean[c * L + j], 1e-6, 0);
            assert_close("prior logvar", c * L + j, logvar_w[j * K + c], logvar, 1e-5, 1e-5);
        }
    free(file);
    cv_workspace_destroy(&m, &ws);
    cv_model_destroy(&m);
    be->destroy(be);
    free(ck.params);
    free(ck.adam_m);
    free(ck.adam_v);
}

/* A grey grid PNG read back: tile (r, c) of tiles of 5 x 6 pixels with 2-pixel gaps. */
typedef struct {
    uint8_t *px;
    unsigned w, h;
} grid;

static grid read_grid(const char *path) {
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    cr_assert(png_image_begin_read_from_file(&img, path), "%s: %s", path, img.message);
    img.format = PNG_FORMAT_GRAY;
    grid g = {malloc(PNG_IMAGE_SIZE(img)), img.width, img.height};
    cr_assert(png_image_finish_read(&img, NULL, g.px, 0, NULL), "%s", img.message);
    return g;
}

/* Pixels of a picture row against cvae decode's: within 1, since decode runs its GEMMs on
 * blocks of 256 rows and a picture on a row's steps, which OpenBLAS may sum in other
 * orders (logits a rounding apart can round to neighbouring bytes). */
static void assert_pixels_close(const uint8_t *got, const uint8_t *want, const char *what, int k) {
    for (int i = 0; i < 30; i++)
        cr_assert(abs((int)got[i] - (int)want[i]) <= 1, "%s %d: pixel %d is %d, decode %d", what,
                  k, i, got[i], want[i]);
}

static void tile(const grid *g, int r, int c, uint8_t *out) {
    for (int y = 0; y < 5; y++)
        memcpy(out + y * 6, g->px + (size_t)(2 + r * 7 + y) * g->w + 2 + c * 8, 6);
}

/* cvae decode of z (rows, 3) under --class cls: its images.npy bytes (rows * 30). */
static uint8_t *decode_bytes(const float *z, int rows, const char *cls, const char *name) {
    char zf[4300], out[4300];
    snprintf(zf, sizeof zf, "%s/%s.npy", dir, name);
    snprintf(out, sizeof out, "%s/%s", dir, name);
    test_write_npy(zf, CV_NPY_F32, 2, (const int64_t[2]){rows, 3}, z);
    cr_assert_eq(cvae((const char *[]){"decode", "--model", ckpt, "--z", zf, "--class", cls,
                                       "--out", out, "--device", "cpu", NULL}), 0);
    size_t n;
    uint8_t *b = test_read_file(test_path_in(out, "images.npy"), &n);
    cr_assert(b && n >= (size_t)rows * 30);
    uint8_t *px = malloc((size_t)rows * 30);
    memcpy(px, b + n - (size_t)rows * 30, (size_t)rows * 30); /* the payload ends the file */
    free(b);
    return px;
}

Test(latent, a_traversal_row_is_its_unit_decoded_across_the_prior) {
    char png[4300], *o, *e;
    snprintf(png, sizeof png, "%s/trav.png", dir);
    const char *args[] = {"generate", "--model", ckpt, "--format", "traversal", "--classes",
                          "2,0", "--steps", "5", "--out", png, "--device", "cpu", NULL};
    cr_assert_eq(test_run_cvae(&o, &e, args), 0, "%s", e);
    int order[3];
    const char *at = strstr(o, "most active first:");
    cr_assert(at && sscanf(at, "most active first: %d %d %d", &order[0], &order[1],
                           &order[2]) == 3, "%s", o);
    cr_assert(order[0] != order[1] && order[1] != order[2] && order[0] != order[2]);
    free(o);
    free(e);
    grid g = read_grid(png);
    cr_assert(g.w == 5 * 8 + 2 && g.h == 6 * 7 + 2, "%ux%u: 2 classes x 3 units, 5 steps", g.w, g.h);
    /* row 1 of class 2 (the second most active unit) against cvae decode */
    float z[5 * 3] = {0};
    for (int k = 0; k < 5; k++) z[k * 3 + order[1]] = -3.0f + 6.0f * k / 4;
    uint8_t *want = decode_bytes(z, 5, "2", "trav_row"), got[30];
    for (int k = 0; k < 5; k++) {
        tile(&g, 1, k, got);
        assert_pixels_close(got, want + k * 30, "traversal tile (1, k)", k);
    }
    /* the middle column is every unit at 0: the same image down a class's rows */
    uint8_t first[30];
    for (int r = 0; r < 6; r++) {
        tile(&g, r, 2, got);
        if (r % 3 == 0) memcpy(first, got, 30);
        cr_assert(memcmp(got, first, 30) == 0, "middle of row %d", r);
    }
    free(want);
    free(g.px);
}

Test(latent, a_picture_refuses_the_flags_it_would_ignore) {
    char png[4300];
    snprintf(png, sizeof png, "%s/ignored.png", dir);
    /* pictures are decoded means in fixed rows: no seed or batch changes them */
    refused(2, png, ((const char *[]){"generate", "--model", ckpt, "--format", "traversal",
                                      "--seed", "3", "--out", png, NULL}));
    refused(2, png, ((const char *[]){"generate", "--model", ckpt, "--format", "interpolate",
                                      "--data", data, "--batch", "7", "--out", png, NULL}));
    /* a picture over an existing file: refused as a picture, not as a grid */
    test_write_file(png, "keep", 4);
    char *o, *e;
    const char *args[] = {"generate", "--model", ckpt, "--format", "traversal", "--out", png, NULL};
    cr_assert_eq(test_run_cvae(&o, &e, args), 1, "%s", e);
    cr_assert(strstr(e, "exists already") && !strstr(e, "grid"), "%s", e);
    free(o);
    free(e);
}

Test(latent, an_interpolation_decodes_the_path_between_two_posteriors) {
    char png[4300], enc[4300], *o, *e;
    snprintf(png, sizeof png, "%s/interp.png", dir);
    snprintf(enc, sizeof enc, "%s/interp_enc.npy", dir);
    encode(enc, "500");
    cv_npy_array post = load(enc);
    const float *mu = post.data;
    /* image 0 and the first image of another class: two rows */
    size_t n;
    uint8_t *labels = test_read_file(test_path_in(data, "t10k-labels-idx1-ubyte"), &n);
    int b = 1;
    while (labels[8 + b] == labels[8]) b++;
    char pair[32], cls[8];
    snprintf(pair, sizeof pair, "0,%d", b);
    snprintf(cls, sizeof cls, "%d", labels[8 + b]);
    const char *args[] = {"generate", "--model", ckpt, "--format", "interpolate", "--data", data,
                          "--images", pair, "--steps", "4", "--out", png, "--device", "cpu",
                          NULL};
    cr_assert_eq(test_run_cvae(&o, &e, args), 0, "%s", e);
    free(o);
    free(e);
    grid g = read_grid(png);
    cr_assert(g.w == 6 * 8 + 2 && g.h == 2 * 7 + 2, "%ux%u: 2 rows of 4 steps + 2 images", g.w, g.h);
    float z[4 * 3];
    for (int k = 0; k < 4; k++)
        for (int j = 0; j < 3; j++)
            z[k * 3 + j] = mu[j] + (float)k / 3 * (mu[b * 6 + j] - mu[j]);
    uint8_t *want = decode_bytes(z, 4, cls, "interp_row"), got[30];
    for (int k = 0; k < 4; k++) {
        tile(&g, 1, k + 1, got); /* row 1: under image b's class */
        assert_pixels_close(got, want + k * 30, "path tile", k);
    }
    uint8_t *images = test_read_file(test_path_in(data, "t10k-images-idx3-ubyte"), &n);
    tile(&g, 0, 0, got);
    cr_assert(memcmp(got, images + 16, 30) == 0, "the row does not start with image 0");
    tile(&g, 0, 5, got);
    cr_assert(memcmp(got, images + 16 + b * 30, 30) == 0, "the row does not end with image %d", b);
    free(labels);
    free(images);
    free(want);
    free(g.px);
    cv_npy_free(&post);
}
