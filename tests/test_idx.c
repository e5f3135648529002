/* test_idx.c: the IDX reader on valid files and on every malformation it must reject,
 * and the data folder's cross-file checks. All files are made here. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "cvae/data.h"
#include "helpers.h"

static char *dir;

static void setup(void) { dir = test_tmpdir(); }
static void teardown(void) {
    test_rmtree(dir);
    free(dir);
}

TestSuite(idx, .init = setup, .fini = teardown);

static void path_of(char *out, const char *name) { sprintf(out, "%s/%s", dir, name); }

/* Raw header bytes for n x h x w images (ndims 3) or n labels (ndims 1). */
static size_t header(uint8_t *buf, uint8_t type, int ndims, const uint32_t *dims) {
    buf[0] = buf[1] = 0;
    buf[2] = type;
    buf[3] = (uint8_t)ndims;
    for (int i = 0; i < ndims; i++) {
        buf[4 + 4 * i] = (uint8_t)(dims[i] >> 24);
        buf[5 + 4 * i] = (uint8_t)(dims[i] >> 16);
        buf[6 + 4 * i] = (uint8_t)(dims[i] >> 8);
        buf[7 + 4 * i] = (uint8_t)dims[i];
    }
    return 4 + 4 * (size_t)ndims;
}

static void expect_reject(const char *name, int ndims, const char *needle) {
    char p[4096];
    path_of(p, name);
    int dims[3];
    uint8_t *payload = (uint8_t *)0x1;
    cv_err err = {{0}};
    cv_status st = cv_idx_read(p, ndims, dims, &payload, &err);
    cr_assert_neq(st, CV_OK, "%s was accepted", name);
    cr_assert_null(payload, "a rejected file left a payload");
    cr_assert(strstr(err.msg, p) != NULL, "message does not name the file: %s", err.msg);
    cr_assert(strstr(err.msg, needle) != NULL, "expected '%s' in: %s", needle, err.msg);
    cr_assert(strchr(err.msg, '\n') == NULL, "message is more than one line: %s", err.msg);
}

Test(idx, round_trip_plain_and_gzip) {
    test_rng r = test_rng_new("idx round trip");
    for (int gz = 0; gz < 2; gz++) {
        int n = 1 + (int)test_uniform(&r, 0, 50), h = 1 + (int)test_uniform(&r, 0, 30),
            w = 1 + (int)test_uniform(&r, 0, 30);
        size_t total = (size_t)n * h * w;
        uint8_t *data = malloc(total);
        for (size_t i = 0; i < total; i++) data[i] = (uint8_t)test_uniform(&r, 0, 256);
        char p[4096];
        path_of(p, gz ? "img.gz" : "img");
        int dims[3] = {n, h, w}, got[3];
        cv_err err;
        cr_assert_eq(cv_idx_write(p, 3, dims, data, gz, &err), CV_OK, "%s", err.msg);
        uint8_t *back;
        cr_assert_eq(cv_idx_read(p, 3, got, &back, &err), CV_OK, "%s", err.msg);
        cr_assert(got[0] == n && got[1] == h && got[2] == w);
        cr_assert(memcmp(back, data, total) == 0, "payload differs after a round trip");
        free(back);
        free(data);
    }
}

Test(idx, plain_file_has_exact_standard_layout) {
    uint8_t data[6] = {1, 2, 3, 4, 5, 6};
    int dims[3] = {1, 2, 3};
    char p[4096];
    path_of(p, "std");
    cv_err err;
    cr_assert_eq(cv_idx_write(p, 3, dims, data, false, &err), CV_OK);
    size_t size;
    uint8_t *bytes = test_read_file(p, &size);
    const uint8_t expect[] = {0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6};
    cr_assert_eq(size, sizeof expect);
    cr_assert(memcmp(bytes, expect, size) == 0, "not the MNIST byte layout");
    free(bytes);
}

Test(idx, rejects_bad_magic) {
    uint8_t b[32];
    uint32_t d[3] = {1, 2, 2};
    size_t n = header(b, 8, 3, d);
    b[0] = 0x42;
    memset(b + n, 7, 4);
    char p[4096];
    path_of(p, "magic");
    test_write_file(p, b, n + 4);
    expect_reject("magic", 3, "bad magic");
}

Test(idx, rejects_non_byte_type) {
    uint8_t b[32];
    uint32_t d[3] = {1, 2, 2};
    size_t n = header(b, 0x0D, 3, d); /* float */
    memset(b + n, 7, 16);
    char p[4096];
    path_of(p, "float");
    test_write_file(p, b, n + 16);
    expect_reject("float", 3, "type code 0x0d");
}

Test(idx, rejects_labels_given_as_images_and_back) {
    uint8_t b[32];
    uint32_t d[3] = {4, 0, 0};
    size_t n = header(b, 8, 1, d);
    memset(b + n, 1, 4);
    char p[4096];
    path_of(p, "labels");
    test_write_file(p, b, n + 4);
    expect_reject("labels", 3, "has 1 dimensions, expected 3");
    uint32_t d3[3] = {1, 2, 2};
    n = header(b, 8, 3, d3);
    memset(b + n, 1, 4);
    path_of(p, "images");
    test_write_file(p, b, n + 4);
    expect_reject("images", 1, "has 3 dimensions, expected 1");
}

Test(idx, rejects_zero_dimension) {
    uint8_t b[32];
    uint32_t d[3] = {3, 0, 5};
    size_t n = header(b, 8, 3, d);
    char p[4096];
    path_of(p, "zero");
    test_write_file(p, b, n);
    expect_reject("zero", 3, "dimension 1 is 0");
}

Test(idx, rejects_absurd_dimensions_without_allocating) {
    uint8_t b[32];
    uint32_t d[3] = {0x7fffffff, 0x7fffffff, 0x7fffffff};
    size_t n = header(b, 8, 3, d);
    char p[4096];
    path_of(p, "absurd");
    test_write_file(p, b, n + 10);
    expect_reject("absurd", 3, "absurd");
    /* large but representable: the size check must fire before any allocation */
    uint32_t big[3] = {100000, 1000, 1000};
    n = header(b, 8, 3, big);
    test_write_file(p, b, n + 10);
    expect_reject("absurd", 3, "truncated");
}

Test(idx, rejects_truncated_header) {
    uint8_t b[32];
    uint32_t d[3] = {3, 4, 5};
    header(b, 8, 3, d);
    char p[4096];
    path_of(p, "short");
    test_write_file(p, b, 9);
    expect_reject("short", 3, "truncated header");
    test_write_file(p, b, 2);
    expect_reject("short", 3, "truncated header");
    test_write_file(p, b, 0);
    expect_reject("short", 3, "truncated header");
}

Test(idx, rejects_truncated_and_overlong_payload) {
    uint8_t b[128];
    uint32_t d[3] = {2, 3, 4};
    size_t n = header(b, 8, 3, d);
    memset(b + n, 9, 30);
    char p[4096];
    path_of(p, "trunc");
    test_write_file(p, b, n + 23);
    expect_reject("trunc", 3, "truncated");
    test_write_file(p, b, n + 25);
    expect_reject("trunc", 3, "trailing bytes");
}

Test(idx, rejects_truncated_and_corrupt_gzip) {
    test_rng r = test_rng_new("gzip corruption");
    int dims[3] = {50, 20, 20};
    uint8_t *data = malloc(20000);
    for (int i = 0; i < 20000; i++) data[i] = (uint8_t)test_uniform(&r, 0, 256);
    char p[4096];
    path_of(p, "g.gz");
    cv_err err;
    cr_assert_eq(cv_idx_write(p, 3, dims, data, true, &err), CV_OK);
    size_t size;
    uint8_t *gz = test_read_file(p, &size);
    test_write_file(p, gz, size / 2);
    expect_reject("g.gz", 3, "truncated");
    gz[size / 2] ^= 0xff;
    gz[size / 2 + 1] ^= 0x55;
    test_write_file(p, gz, size);
    char q[4096];
    path_of(q, "g.gz");
    int got[3];
    uint8_t *payload;
    cr_assert_neq(cv_idx_read(q, 3, got, &payload, &err), CV_OK, "corrupt gzip accepted");
    free(gz);
    free(data);
}

Test(idx, rejects_gzip_whose_header_claims_more_than_it_can_hold) {
    uint8_t b[32];
    uint32_t d[3] = {60000, 2800, 2800}; /* 470 GB from a few bytes */
    size_t n = header(b, 8, 3, d);
    char p[4096];
    path_of(p, "bomb.gz");
    gzFile gz = gzopen(p, "wb");
    gzwrite(gz, b, (unsigned)n);
    gzclose(gz);
    expect_reject("bomb.gz", 3, "more than");
}

Test(idx, rejects_folder_and_missing_file) {
    char p[4096];
    path_of(p, "sub");
    mkdir(p, 0777);
    expect_reject("sub", 3, "is a folder");
    expect_reject("missing", 3, "cannot open");
}

/* A FIFO has no writer to wait for: refused at once, not read. */
Test(idx, rejects_a_fifo_without_waiting, .timeout = 10) {
    char p[4096];
    path_of(p, "fifo");
    cr_assert_eq(mkfifo(p, 0666), 0);
    expect_reject("fifo", 3, "is not a regular file");
    expect_reject("fifo", 1, "is not a regular file");
}

/* --- the data folder --- */

Test(idx, data_folder_loads_train_and_test) {
    test_write_dataset(dir, 40, 12, 5, 6, 3, true, 11);
    cv_data d;
    cv_err err;
    cr_assert_eq(cv_data_load(dir, 0, &d, &err), CV_OK, "%s", err.msg);
    cr_assert(d.train.n == 40 && d.test.n == 12 && d.train.h == 5 && d.train.w == 6);
    cr_assert_leq(d.cond_width, 3);
    cv_data_free(&d);
}

Test(idx, data_folder_without_test_files_trains_without_them) {
    test_write_dataset(dir, 40, 0, 4, 4, 2, false, 3);
    cv_data d;
    cv_err err;
    cr_assert_eq(cv_data_load(dir, 0, &d, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(d.test.n, 0);
    cv_data_free(&d);
}

static void write_labels(const char *name, const uint8_t *labels, int n) {
    char p[4096];
    path_of(p, name);
    int dims[3] = {n, 0, 0};
    cv_err err;
    cr_assert_eq(cv_idx_write(p, 1, dims, labels, false, &err), CV_OK);
}

static void expect_folder_reject(int n_classes, const char *needle) {
    cv_data d;
    cv_err err;
    cr_assert_neq(cv_data_load(dir, n_classes, &d, &err), CV_OK, "folder was accepted");
    cr_assert(strstr(err.msg, needle) != NULL, "expected '%s' in: %s", needle, err.msg);
}

Test(idx, data_folder_rejects_mismatched_counts) {
    test_write_dataset(dir, 20, 10, 4, 4, 2, false, 5);
    uint8_t labels[19] = {0};
    write_labels("train-labels-idx1-ubyte", labels, 19);
    expect_folder_reject(0, "holds 19 labels but");
}

Test(idx, data_folder_rejects_test_labels_out_of_range) {
    test_write_dataset(dir, 20, 10, 4, 4, 2, false, 5);
    uint8_t labels[10] = {0, 1, 0, 1, 7, 0, 0, 0, 0, 0};
    write_labels("t10k-labels-idx1-ubyte", labels, 10);
    expect_folder_reject(0, "label 7 at index 4");
}

Test(idx, data_folder_rejects_training_labels_over_classes) {
    test_write_dataset(dir, 20, 0, 4, 4, 3, false, 5);
    uint8_t labels[20] = {0};
    labels[3] = 2;
    write_labels("train-labels-idx1-ubyte", labels, 20);
    expect_folder_reject(2, "not among the 2 classes (0..1) that --classes");
}

Test(idx, data_folder_rejects_test_shape_mismatch) {
    test_write_dataset(dir, 20, 0, 4, 4, 2, false, 5);
    char sub[4096];
    path_of(sub, "other");
    mkdir(sub, 0777);
    test_write_dataset(sub, 5, 5, 4, 5, 2, false, 6);
    char from[8192], to[8192];
    sprintf(from, "%s/t10k-images-idx3-ubyte", sub);
    path_of(to, "t10k-images-idx3-ubyte");
    rename(from, to);
    sprintf(from, "%s/t10k-labels-idx1-ubyte", sub);
    path_of(to, "t10k-labels-idx1-ubyte");
    rename(from, to);
    expect_folder_reject(0, "are 4x5x1 but training images are 4x4x1");
}

Test(idx, data_folder_rejects_half_a_test_set_and_missing_training_files) {
    test_write_dataset(dir, 20, 10, 4, 4, 2, false, 5);
    char p[4096];
    path_of(p, "t10k-labels-idx1-ubyte");
    remove(p);
    expect_folder_reject(0, "test images without test labels");
    path_of(p, "train-images-idx3-ubyte");
    remove(p);
    expect_folder_reject(0, "no training images (train-images-idx3-ubyte");
}

Test(idx, data_folder_rejects_swapped_files) {
    test_write_dataset(dir, 20, 0, 4, 4, 2, false, 5);
    char a[4096], b[4096], t[4096];
    path_of(a, "train-images-idx3-ubyte");
    path_of(b, "train-labels-idx1-ubyte");
    path_of(t, "tmp");
    rename(a, t);
    rename(b, a);
    rename(t, b);
    expect_folder_reject(0, "expected 3");
}
