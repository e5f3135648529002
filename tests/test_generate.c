/* test_generate.c: `cvae generate` end to end on a small trained model: every format
 * parses and holds what was asked, the bytes are deterministic, labels are balanced and
 * interleaved, the manifest matches the files, and bad requests write nothing. */
#include <criterion/criterion.h>
#include <png.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cvae/data.h"
#include "util/fileio.h"
#include "util/sha256.h"
#include "cvae/train.h"
#include "helpers.h"

static char *dir;
static char ckpt[4300];

static void setup(void) {
    dir = test_tmpdir();
    char data[4200], run[4200];
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(run, sizeof run, "%s/run", dir);
    mkdir(data, 0777);
    test_write_dataset(data, 120, 20, 5, 6, 3, false, 21);
    test_train_small(data, run, 16, 3, 2, 4);
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", run);
}
static void teardown(void) {
    test_rmtree(dir);
    free(dir);
}

TestSuite(generate, .init = setup, .fini = teardown, .timeout = 120);

static int gen(const char *out, const char *format, const char *extra1, const char *extra2) {
    char *o, *e;
    const char *args[] = {"generate", "--model", ckpt, "--per-class", "7", "--classes", "0,2",
                          "--out", out, "--format", format, "--device", "cpu", extra1, extra2,
                          NULL};
    int rc = test_run_cvae(&o, &e, args);
    cr_assert_eq(rc, 0, "generate %s failed: %s", format, e);
    free(o);
    free(e);
    return rc;
}

static uint8_t *read_bytes(const char *folder, const char *name, size_t *size) {
    char p[8400];
    snprintf(p, sizeof p, "%s/%s", folder, name);
    uint8_t *b = test_read_file(p, size);
    cr_assert_not_null(b, "missing %s", p);
    return b;
}

Test(generate, idx_holds_balanced_interleaved_labels_and_round_trips) {
    char out[4200], p[8400];
    snprintf(out, sizeof out, "%s/idx", dir);
    gen(out, "idx", NULL, NULL);
    int dims[3];
    uint8_t *pix, *lab;
    cv_err err;
    snprintf(p, sizeof p, "%s/images-idx3-ubyte", out);
    cr_assert_eq(cv_idx_read(p, 3, dims, &pix, &err), CV_OK, "%s", err.msg);
    cr_assert(dims[0] == 14 && dims[1] == 5 && dims[2] == 6);
    snprintf(p, sizeof p, "%s/labels-idx1-ubyte", out);
    cr_assert_eq(cv_idx_read(p, 1, dims, &lab, &err), CV_OK, "%s", err.msg);
    for (int i = 0; i < 14; i++) cr_assert_eq(lab[i], i % 2 ? 2 : 0, "label %d", i);
    free(pix);
    free(lab);

    /* idx.gz holds the same bytes, compressed */
    char gz[4200];
    snprintf(gz, sizeof gz, "%s/idxgz", dir);
    gen(gz, "idx.gz", NULL, NULL);
    snprintf(p, sizeof p, "%s/images-idx3-ubyte.gz", gz);
    uint8_t *pix_gz;
    cr_assert_eq(cv_idx_read(p, 3, dims, &pix_gz, &err), CV_OK, "%s", err.msg);
    size_t n;
    uint8_t *plain = read_bytes(out, "images-idx3-ubyte", &n);
    cr_assert(memcmp(plain + 16, pix_gz, 14 * 30) == 0, "idx.gz differs from idx");
    free(pix_gz);
    free(plain);
}

Test(generate, npy_headers_are_version_1_and_match_idx) {
    char idx[4200], npy[4200];
    snprintf(idx, sizeof idx, "%s/a", dir);
    snprintf(npy, sizeof npy, "%s/b", dir);
    gen(idx, "idx", "--seed", "9");
    gen(npy, "npy", "--seed", "9");
    size_t ni, nn, nl;
    uint8_t *im = read_bytes(idx, "images-idx3-ubyte", &ni);
    uint8_t *np = read_bytes(npy, "images.npy", &nn);
    uint8_t *lb = read_bytes(npy, "labels.npy", &nl);
    cr_assert(memcmp(np, "\x93NUMPY\x01\x00", 8) == 0, "not a version 1.0 .npy");
    size_t hlen = np[8] | (size_t)np[9] << 8;
    cr_assert_eq((10 + hlen) % 64, 0, "data does not start on a 64-byte boundary");
    cr_assert_eq(np[10 + hlen - 1], '\n');
    char header[512] = {0};
    memcpy(header, np + 10, hlen);
    cr_assert(strstr(header, "'descr': '|u1'") && strstr(header, "'fortran_order': False") &&
                  strstr(header, "'shape': (14, 5, 6)"),
              "header: %s", header);
    cr_assert_eq(nn, 10 + hlen + 14 * 30);
    cr_assert(memcmp(np + 10 + hlen, im + 16, 14 * 30) == 0, "npy pixels differ from idx");
    size_t lh = lb[8] | (size_t)lb[9] << 8;
    cr_assert(strstr((char *)lb + 10, "'shape': (14,)") != NULL);
    cr_assert_eq(nl, 10 + lh + 14);
    free(im); free(np); free(lb);
}

Test(generate, png_files_hold_the_same_images) {
    char idx[4200], pngdir[4200];
    snprintf(idx, sizeof idx, "%s/a", dir);
    snprintf(pngdir, sizeof pngdir, "%s/p", dir);
    gen(idx, "idx", NULL, NULL);
    gen(pngdir, "png", NULL, NULL);
    size_t ni;
    uint8_t *im = read_bytes(idx, "images-idx3-ubyte", &ni);
    for (int i = 0; i < 14; i++) {
        char p[8400];
        snprintf(p, sizeof p, "%s/%d/%d.png", pngdir, i % 2 ? 2 : 0, i / 2);
        png_image img;
        memset(&img, 0, sizeof img);
        img.version = PNG_IMAGE_VERSION;
        cr_assert(png_image_begin_read_from_file(&img, p), "%s: %s", p, img.message);
        cr_assert(img.width == 6 && img.height == 5, "%s is %ux%u", p, img.width, img.height);
        img.format = PNG_FORMAT_GRAY;
        uint8_t buf[30];
        cr_assert(png_image_finish_read(&img, NULL, buf, 0, NULL), "%s", img.message);
        cr_assert(memcmp(buf, im + 16 + i * 30, 30) == 0, "%s differs from image %d", p, i);
    }
    free(im);
}

/* The images of a run with mode (--mean or --sample), --batch and --seed. */
static uint8_t *images(const char *name, const char *mode, const char *batch, const char *seed,
                       size_t *size) {
    char out[4200];
    snprintf(out, sizeof out, "%s/%s", dir, name);
    char *o, *e;
    const char *args[] = {"generate", "--model", ckpt, "--per-class", "7", "--classes", "0,2",
                          "--out", out, mode, "--batch", batch, "--seed", seed,
                          "--device", "cpu", NULL};
    cr_assert_eq(test_run_cvae(&o, &e, args), 0, "%s", e);
    free(o);
    free(e);
    return read_bytes(out, "images-idx3-ubyte", size);
}

/* OpenBLAS picks kernels by shape, and with some kernel sets (Haswell's, which cvae uses on
 * AVX2 machines) a row of a GEMM comes out differently when other rows surround it. With
 * a model of the default size, each batch size must still give the same bytes: images are
 * decoded in fixed blocks. Run with the machine's kernels and, where the CPU has AVX2,
 * Haswell's. */
Test(generate, same_bytes_whatever_the_batch_with_default_sized_gemms) {
    char data[4300], run[4300], model[4400];
    snprintf(data, sizeof data, "%s/big-data", dir);
    snprintf(run, sizeof run, "%s/big-run", dir);
    snprintf(model, sizeof model, "%s/model.ckpt", run);
    mkdir(data, 0777);
    test_write_dataset(data, 300, 0, 28, 28, 10, false, 8);
    test_train_small(data, run, 400, 20, 1, 8);
    __builtin_cpu_init();
    const char *cores[] = {NULL, __builtin_cpu_supports("avx2") ? "Haswell" : NULL};
    const char *batches[] = {"1000", "64", "7"};
    for (int c = 0; c < 2; c++) {
        if (c && !cores[c]) continue;
        if (cores[c]) setenv("OPENBLAS_CORETYPE", cores[c], 1);
        uint8_t *first = NULL;
        size_t first_size = 0;
        for (int b = 0; b < 3; b++) {
            char out[4400];
            snprintf(out, sizeof out, "%s/big-%d-%s", dir, c, batches[b]);
            const char *args[] = {"generate", "--model", model, "--per-class", "100", "--out",
                                  out, "--batch", batches[b], "--device", "cpu", NULL};
            char *o, *e;
            cr_assert_eq(test_run_cvae(&o, &e, args), 0, "%s", e);
            free(o);
            free(e);
            size_t size;
            uint8_t *bytes = read_bytes(out, "images-idx3-ubyte", &size);
            if (!first) {
                first = bytes;
                first_size = size;
                continue;
            }
            cr_assert(size == first_size && memcmp(bytes, first, size) == 0,
                      "kernels %s: --batch %s gave other bytes than --batch 1000",
                      cores[c] ? cores[c] : "(the machine's)", batches[b]);
            free(bytes);
        }
        free(first);
        unsetenv("OPENBLAS_CORETYPE");
    }
}

Test(generate, same_seed_same_bytes_whatever_the_batch) {
    const char *modes[] = {"--mean", "--sample"}, *batches[] = {"1000", "3", "1"};
    for (int m = 0; m < 2; m++) {
        size_t na, nb, nc;
        char name[64];
        snprintf(name, sizeof name, "%s-1000", modes[m] + 2);
        uint8_t *x = images(name, modes[m], batches[0], "0", &na);
        for (int b = 1; b < 3; b++) {
            snprintf(name, sizeof name, "%s-%s", modes[m] + 2, batches[b]);
            uint8_t *y = images(name, modes[m], batches[b], "0", &nb);
            cr_assert(na == nb && memcmp(x, y, na) == 0, "%s: --batch %s changed the bytes",
                      modes[m], batches[b]);
            free(y);
        }
        snprintf(name, sizeof name, "%s-seed1", modes[m] + 2);
        uint8_t *z = images(name, modes[m], batches[0], "1", &nc);
        cr_assert(memcmp(x, z, na) != 0, "%s: another seed gave the same images", modes[m]);
        if (m == 1)
            for (size_t i = 16; i < na; i++)
                cr_assert(x[i] == 0 || x[i] == 255, "--sample pixel %d", x[i]);
        free(x);
        free(z);
    }
}

Test(generate, help_is_printed_as_written) {
    char *o, *e;
    const char *args[] = {"generate", "--help", NULL};
    cr_assert_eq(test_run_cvae(&o, &e, args), 0, "%s", e);
    cr_assert(strstr(o, "usage: cvae generate") != NULL, "%s", o);
    cr_assert(strstr(o, "%%") == NULL, "the help prints a doubled %%: %s", o);
    cr_assert(strstr(o, "classes[i % K]") != NULL, "%s", o);
    /* a block is 256 images only while D <= 16384 (cv_generate_block_rows) */
    cr_assert(strstr(o, "blocks of 256") == NULL && strstr(o, "min(256, 4194304 / D)"), "%s", o);
    free(o);
    free(e);
}

Test(generate, manifest_matches_the_files) {
    char out[4200];
    snprintf(out, sizeof out, "%s/m", dir);
    gen(out, "npy", NULL, NULL);
    size_t n;
    char *m = (char *)read_bytes(out, "manifest.json", &n);
    cr_assert(strstr(m, "\"seed\": 0") && strstr(m, "\"mode\": \"mean\"") &&
              strstr(m, "\"count_per_class\": {\"0\": 7, \"2\": 7}"), "%s", m);
    int files = 0;
    for (char *p = strstr(m, "{\"name\": \""); p; p = strstr(p + 1, "{\"name\": \"")) {
        char name[64], hex[65];
        unsigned long long bytes;
        cr_assert_eq(sscanf(p, "{\"name\": \"%63[^\"]\", \"bytes\": %llu, \"sha256\": \"%64[0-9a-f]\"",
                            name, &bytes, hex), 3, "unparsable entry: %.80s", p);
        char path[8400], actual[65];
        uint64_t size;
        cv_err err;
        snprintf(path, sizeof path, "%s/%s", out, name);
        cr_assert_eq(cv_sha256_file(path, actual, &size, &err), CV_OK, "%s", err.msg);
        cr_assert_eq(size, bytes, "%s: manifest says %llu bytes, file has %llu", name, bytes,
                     (unsigned long long)size);
        cr_assert_str_eq(actual, hex, "%s: SHA-256 differs", name);
        files++;
    }
    cr_assert_eq(files, 2);
    /* the checkpoint's checksum as cvae info reports it */
    char *o, *e;
    const char *info[] = {"info", "--model", ckpt, NULL};
    cr_assert_eq(test_run_cvae(&o, &e, info), 0);
    char *crc = strstr(o, "crc32 ");
    cr_assert_not_null(crc);
    char want[32];
    snprintf(want, sizeof want, "\"checkpoint_crc32\": \"%.8s\"", crc + 6);
    cr_assert(strstr(m, want) != NULL, "manifest lacks %s", want);
    free(o); free(e); free(m);
}

Test(generate, sha256_known_answers) {
    const char *in[] = {"", "abc", "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"};
    const char *want[] = {
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"};
    for (int i = 0; i < 3; i++) {
        cv_sha256 s;
        char hex[65];
        cv_sha256_init(&s);
        cv_sha256_update(&s, in[i], strlen(in[i]));
        cv_sha256_hex(&s, hex);
        cr_assert_str_eq(hex, want[i]);
    }
    /* a million 'a', fed in uneven pieces */
    cv_sha256 s;
    char hex[65], chunk[997];
    memset(chunk, 'a', sizeof chunk);
    cv_sha256_init(&s);
    for (int left = 1000000; left > 0; left -= 997) cv_sha256_update(&s, chunk, left < 997 ? (size_t)left : 997);
    cv_sha256_hex(&s, hex);
    cr_assert_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

Test(generate, grid_has_a_row_per_class) {
    char out[4200];
    snprintf(out, sizeof out, "%s/grid.png", dir);
    char *o, *e;
    const char *args[] = {"generate", "--model", ckpt, "--format", "grid", "--out", out,
                          "--same-z", "--device", "cpu", NULL};
    cr_assert_eq(test_run_cvae(&o, &e, args), 0, "%s", e);
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    cr_assert(png_image_begin_read_from_file(&img, out), "%s", img.message);
    /* 3 classes x 10 columns of 5x6 tiles with 2-pixel borders */
    cr_assert(img.height == 3 * 5 + 4 * 2 && img.width == 10 * 6 + 11 * 2, "%ux%u", img.width,
              img.height);
    png_image_free(&img);
    free(o);
    free(e);
    /* training wrote its pictures beside the checkpoint */
    char p[8400];
    snprintf(p, sizeof p, "%s/run/samples.png", dir);
    cr_assert(cv_path_exists(p));
    snprintf(p, sizeof p, "%s/run/reconstructions.png", dir);
    cr_assert(cv_path_exists(p));
}

static void expect_refusal(int code, const char *needle, const char *out, const char *const *args) {
    char *o, *e;
    int rc = test_run_cvae(&o, &e, args);
    cr_assert_eq(rc, code, "exit %d, wanted %d: %s", rc, code, e);
    cr_assert_eq(test_count_lines(e), 1, "stderr: %s", e);
    cr_assert(strstr(e, needle) != NULL, "expected '%s' in %s", needle, e);
    if (out) cr_assert(!cv_path_exists(out), "%s was created", out);
    free(o);
    free(e);
}

Test(generate, bad_requests_write_nothing) {
    char out[4200], bad[4200];
    snprintf(out, sizeof out, "%s/never", dir);
    snprintf(bad, sizeof bad, "%s/bad.ckpt", dir);
    test_write_file(bad, "CVAECKPT garbage", 16);
    const char *a1[] = {"generate", "--model", bad, "--per-class", "2", "--out", out, NULL};
    expect_refusal(1, "bad.ckpt", out, a1);
    const char *a2[] = {"generate", "--model", ckpt, "--per-class", "2", "--out", out,
                        "--classes", "0,0", NULL};
    expect_refusal(2, "listed twice", out, a2);
    const char *a3[] = {"generate", "--model", ckpt, "--per-class", "2", "--out", out,
                        "--classes", "1,5", NULL};
    expect_refusal(2, "class 5 is not among", out, a3);
    const char *a4[] = {"generate", "--model", ckpt, "--per-class", "2", "--out", out,
                        "--classes", "1,x", NULL};
    expect_refusal(2, "'x' is not a class number (the model names none)", out, a4);
    const char *a5[] = {"generate", "--model", ckpt, "--per-class", "0", "--out", out, NULL};
    expect_refusal(2, "--per-class must be", out, a5);
    const char *a6[] = {"generate", "--model", ckpt, "--per-class", "2", "--out", out,
                        "--same-z", NULL};
    expect_refusal(2, "--same-z applies to --format grid", out, a6);
    const char *a7[] = {"generate", "--model", ckpt, "--per-class", "2", "--out", out,
                        "--format", "jpeg", NULL};
    expect_refusal(2, "--format must be", out, a7);
    char under_file[8400];
    snprintf(under_file, sizeof under_file, "%s/out", bad); /* a folder inside a file */
    const char *a8[] = {"generate", "--model", ckpt, "--per-class", "2", "--out", under_file,
                        "--device", "cpu", NULL};
    expect_refusal(1, "cannot create", NULL, a8);

    /* an existing non-empty folder is left exactly as it was */
    char full[4200], keep[8400];
    snprintf(full, sizeof full, "%s/full", dir);
    mkdir(full, 0777);
    snprintf(keep, sizeof keep, "%s/keep.txt", full);
    test_write_file(keep, "precious", 8);
    const char *a9[] = {"generate", "--model", ckpt, "--per-class", "2", "--out", full,
                        "--device", "cpu", NULL};
    expect_refusal(1, "not empty", NULL, a9);
    size_t n;
    uint8_t *k = test_read_file(keep, &n);
    cr_assert(n == 8 && memcmp(k, "precious", 8) == 0);
    free(k);
    /* nor is a temporary folder left behind by a refused run */
    char tmp[8400];
    snprintf(tmp, sizeof tmp, "%s.tmp", full);
    cr_assert(!cv_path_exists(tmp));
}

/* An --out that cannot be written fails before the device is opened and the model
 * loaded ("device:" is never printed), with one line, leaving no folder it made. A name
 * too long for the file system makes the temporary folder (or file) fail where the
 * missing parents above it could still be made. */
Test(generate, an_unwritable_out_fails_before_the_device_is_opened) {
    char file[4200], under_file[4300], grid_under_file[4300], full[4200], keep[4300], top[4200];
    snprintf(file, sizeof file, "%s/plain", dir);
    test_write_file(file, "x", 1);
    snprintf(under_file, sizeof under_file, "%s/set", file);
    snprintf(grid_under_file, sizeof grid_under_file, "%s/set.png", file);
    char old_grid[4300]; /* a grid that exists: the file, not a folder, is the refusal */
    snprintf(old_grid, sizeof old_grid, "%s/old.png", dir);
    test_write_file(old_grid, "precious", 8);
    snprintf(full, sizeof full, "%s/full", dir);
    mkdir(full, 0777);
    snprintf(keep, sizeof keep, "%s/keep.txt", full);
    test_write_file(keep, "precious", 8);
    snprintf(top, sizeof top, "%s/new", dir);
    char long_set[4600], long_grid[4600];
    snprintf(long_set, sizeof long_set, "%s/deeper/%0300d", top, 0);
    snprintf(long_grid, sizeof long_grid, "%s/deeper/%0300d.png", top, 0);
    const struct {
        const char *out, *format, *needle;
    } cases[] = {
        {under_file, "idx", "plain"},       {full, "npy", "not empty"},
        {long_set, "idx", "File name too long"}, {grid_under_file, "grid", "plain"},
        {long_grid, "grid", "File name too long"}, {old_grid, "grid", "exists already"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const char *args[] = {"generate", "--model", ckpt, "--per-class", "2", "--out",
                              cases[k].out, "--format", cases[k].format, "--device", "cpu",
                              NULL};
        char *o, *e;
        int rc = test_run_cvae(&o, &e, args);
        cr_assert_eq(rc, 1, "case %zu: exit %d: %s", k, rc, e);
        cr_assert_eq(test_count_lines(e), 1, "case %zu: %s", k, e);
        cr_assert(strstr(e, cases[k].needle), "case %zu: no '%s' in %s", k, cases[k].needle, e);
        cr_assert_eq(o[0], '\0', "case %zu printed before failing: %s", k, o);
        cr_assert(!cv_path_exists(top), "case %zu left %s", k, top);
        free(o);
        free(e);
    }
    const char *kept_files[] = {keep, old_grid};
    for (int k = 0; k < 2; k++) {
        size_t n;
        uint8_t *kept = test_read_file(kept_files[k], &n);
        cr_assert(n == 8 && memcmp(kept, "precious", 8) == 0, "a refused run changed %s",
                  kept_files[k]);
        free(kept);
    }
}

Test(generate, killed_run_leaves_no_data_set_under_the_real_name) {
    char out[4200];
    snprintf(out, sizeof out, "%s/big", dir);
    pid_t pid = test_fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execl(getenv("CVAE_BIN"), "cvae", "generate", "--model", ckpt, "--per-class",
              "20000000", "--out", out, "--format", "npy", "--device", "cpu", "--batch", "4096",
              (char *)NULL);
        _exit(127);
    }
    usleep(300000);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    cr_assert(WIFSIGNALED(status), "the run finished before it could be killed");
    cr_assert(!cv_path_exists(out), "a killed run left %s", out);
}
