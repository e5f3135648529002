/* test_bad_input.c: the program against malformed inputs in bulk: truncated and corrupt
 * files, swapped files, mismatched counts, absurd dimensions, labels out of range,
 * folders where files belong, unreadable files, and nonsense flag values. For each: the
 * exit code, exactly one line on stderr, no crash, and no output file created. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fileio.h"
#include "cvae/train.h"
#include "helpers.h"
#include <zlib.h>

static char *root;

static void setup(void) { root = test_tmpdir(); }
static void teardown(void) {
    test_rmtree(root);
    free(root);
}

TestSuite(bad_input, .init = setup, .fini = teardown, .timeout = 240);

typedef void (*mutation)(const char *data, const char *scratch);

static void path2(char *out, const char *dir, const char *name) { sprintf(out, "%s/%s", dir, name); }

static void truncate_file(const char *dir, const char *name, long keep) {
    char p[8400];
    path2(p, dir, name);
    size_t n;
    uint8_t *b = test_read_file(p, &n);
    test_write_file(p, b, keep < 0 ? n + (size_t)keep : (size_t)keep);
    free(b);
}

static void patch_byte(const char *dir, const char *name, size_t at, uint8_t value) {
    char p[8400];
    path2(p, dir, name);
    size_t n;
    uint8_t *b = test_read_file(p, &n);
    b[at] = value;
    test_write_file(p, b, n);
    free(b);
}

#define TI "train-images-idx3-ubyte"
#define TL "train-labels-idx1-ubyte"
#define VI "t10k-images-idx3-ubyte"
#define VL "t10k-labels-idx1-ubyte"

static void m_none(const char *d, const char *s) { (void)d; (void)s; }
static void m_trunc_images(const char *d, const char *s) { (void)s; truncate_file(d, TI, -7); }
static void m_trunc_header(const char *d, const char *s) { (void)s; truncate_file(d, TI, 10); }
static void m_empty_labels(const char *d, const char *s) { (void)s; truncate_file(d, TL, 0); }
static void m_trailing(const char *d, const char *s) {
    (void)s;
    char p[8400];
    path2(p, d, VL);
    FILE *f = fopen(p, "ab");
    fputs("xyz", f);
    fclose(f);
}
static void m_magic(const char *d, const char *s) { (void)s; patch_byte(d, TI, 0, 0x42); }
static void m_type(const char *d, const char *s) { (void)s; patch_byte(d, TI, 2, 0x0D); }
static void m_ndims(const char *d, const char *s) { (void)s; patch_byte(d, TL, 3, 2); }
static void m_zero_dim(const char *d, const char *s) {
    (void)s;
    for (int i = 0; i < 4; i++) patch_byte(d, TI, 8 + i, 0);
}
static void m_absurd(const char *d, const char *s) {
    (void)s;
    for (int i = 4; i < 16; i++) patch_byte(d, TI, i, i % 4 ? 0xff : 0x7f);
}
static void m_count_mismatch(const char *d, const char *s) {
    (void)s;
    patch_byte(d, TL, 7, 59); /* header says 59 labels, file holds 60 */
    truncate_file(d, TL, -1);
}
static void m_swapped(const char *d, const char *s) {
    char a[8400], b[8400], t[8400];
    path2(a, d, TI);
    path2(b, d, TL);
    path2(t, s, "swap");
    rename(a, t);
    rename(b, a);
    rename(t, b);
}
static void m_test_label_range(const char *d, const char *s) { (void)s; patch_byte(d, VL, 8 + 5, 200); }
static void m_test_shape(const char *d, const char *s) {
    (void)s;
    char p[8400];
    path2(p, d, VI);
    remove(p);
    uint8_t img[20 * 5 * 4] = {0};
    int dims[3] = {20, 5, 4};
    cv_err err;
    cv_idx_write(p, 3, dims, img, false, &err);
}
static void m_folder_images(const char *d, const char *s) {
    (void)s;
    char p[8400];
    path2(p, d, TI);
    remove(p);
    mkdir(p, 0777);
}
static void m_dangling(const char *d, const char *s) {
    (void)s;
    char p[8400];
    path2(p, d, TL);
    remove(p);
    symlink("/nonexistent/labels", p);
}
static void m_no_test_labels(const char *d, const char *s) {
    (void)s;
    char p[8400];
    path2(p, d, VL);
    remove(p);
}
static void m_gzip_garbage(const char *d, const char *s) {
    (void)s;
    char p[8400];
    path2(p, d, TI);
    remove(p);
    strcat(p, ".gz");
    test_write_file(p, "\x1f\x8b\x08\x00garbage that does not inflate", 34);
}
static void m_gzip_bomb(const char *d, const char *s) {
    (void)s;
    char p[8400];
    path2(p, d, TI);
    remove(p);
    strcat(p, ".gz");
    uint8_t hdr[16] = {0, 0, 8, 3, 0x7f, 0, 0, 0, 0, 0, 0x0f, 0, 0, 0, 0x0f, 0};
    gzFile gz = gzopen(p, "wb");
    gzwrite(gz, hdr, 16);
    gzclose(gz);
}

typedef struct {
    const char *name;
    mutation mutate;
    int code;
    const char *needle;
    const char *args[24]; /* $DATA, $OUT, $METRICS, $CKPT, $BAD, $FILE are filled in */
} bad_case;

#define TRAIN "train", "--data", "$DATA", "--out", "$OUT", "--metrics", "$METRICS", "--epochs", "1"

static const bad_case cases[] = {
    {"truncated images", m_trunc_images, 1, "truncated", {TRAIN}},
    {"truncated header", m_trunc_header, 1, "truncated header", {TRAIN}},
    {"empty labels file", m_empty_labels, 1, "truncated header", {TRAIN}},
    {"trailing bytes in test labels", m_trailing, 1, "trailing bytes", {TRAIN}},
    {"wrong magic", m_magic, 1, "bad magic", {TRAIN}},
    {"float type code", m_type, 1, "type code 0x0d", {TRAIN}},
    {"labels with two dimensions", m_ndims, 1, "expected 1", {TRAIN}},
    {"zero dimension", m_zero_dim, 1, "dimension 1 is 0", {TRAIN}},
    {"absurd dimensions", m_absurd, 1, "absurd", {TRAIN}},
    {"mismatched counts", m_count_mismatch, 1, "holds 59 labels", {TRAIN}},
    {"swapped image and label files", m_swapped, 1, "dimensions, expected", {TRAIN}},
    {"test label out of range", m_test_label_range, 1, "label 200", {TRAIN}},
    {"test images of another shape", m_test_shape, 1, "are 5x4", {TRAIN}},
    {"a folder where images belong", m_folder_images, 1, "is a folder", {TRAIN}},
    {"a dangling labels link", m_dangling, 1, "no training labels or conditions", {TRAIN}},
    {"test images without labels", m_no_test_labels, 1, "test images without test labels", {TRAIN}},
    {"gzip garbage", m_gzip_garbage, 1, "train-images-idx3-ubyte.gz", {TRAIN}},
    {"gzip header promising terabytes", m_gzip_bomb, 1, "absurd", {TRAIN}},
    {"data folder missing", m_none, 1, "no such data folder",
     {"train", "--data", "$BAD/none", "--out", "$OUT", "--metrics", "$METRICS", NULL}},
    {"data folder is a file", m_none, 1, "is not a folder",
     {"train", "--data", "$FILE", "--out", "$OUT", "--metrics", "$METRICS", NULL}},
    {"batch 0", m_none, 2, "--batch must be", {TRAIN, "--batch", "0"}},
    {"negative learning rate", m_none, 2, "--lr must be", {TRAIN, "--lr", "-0.1"}},
    {"NaN learning rate", m_none, 2, "--lr must be", {TRAIN, "--lr", "NaN"}},
    {"latent 0", m_none, 2, "--latent must be", {TRAIN, "--latent", "0"}},
    {"malformed hidden list", m_none, 2, "--hidden must be", {TRAIN, "--hidden", "12;4"}},
    {"unknown device", m_none, 2, "--device must be", {TRAIN, "--device", "gpu0"}},
    {"epochs -1", m_none, 2, "--epochs must be", {TRAIN, "--epochs", "-1"}},
    {"seed not a number", m_none, 2, "--seed must be", {TRAIN, "--seed", "0x"}},
    {"negative skip-nonfinite", m_none, 2, "--skip-nonfinite must be", {TRAIN, "--skip-nonfinite", "-1"}},
    {"unknown flag", m_none, 2, "unknown flag '--learning-rate'", {TRAIN, "--learning-rate", "1"}},
    {"resume from a missing file", m_none, 1, "cannot open", {TRAIN, "--resume", "$BAD/none.ckpt"}},
    {"resume from garbage", m_none, 1, "not a cvae checkpoint", {TRAIN, "--resume", "$FILE"}},
    {"resume with another latent", m_none, 2, "--latent differs",
     {TRAIN, "--epochs", "3", "--resume", "$CKPT", "--latent", "5", "--hidden", "8"}},
    {"eval of garbage", m_none, 1, "not a cvae checkpoint",
     {"eval", "--model", "$FILE", "--data", "$DATA", NULL}},
    {"eval without test files", m_no_test_labels, 1, "test images without test labels",
     {"eval", "--model", "$CKPT", "--data", "$DATA", NULL}},
    {"generate a class the model lacks", m_none, 2, "class 9 is not among",
     {"generate", "--model", "$CKPT", "--per-class", "3", "--classes", "9", "--out", "$OUT", NULL}},
    {"generate into a file's folder", m_none, 1, "cannot create",
     {"generate", "--model", "$CKPT", "--per-class", "3", "--out", "$FILE/sub", NULL}},
    {"info of a folder", m_none, 1, "is a folder, not a checkpoint",
     {"info", "--model", "$DATA", NULL}},
};

Test(bad_input, every_case_exits_cleanly_with_one_line_and_writes_nothing) {
    /* one small valid checkpoint for the eval, generate and resume cases */
    char good[4200], ckpt[4400], file[4200];
    snprintf(good, sizeof good, "%s/good", root);
    mkdir(good, 0777);
    test_write_dataset(good, 60, 20, 4, 4, 3, false, 5);
    snprintf(file, sizeof file, "%s/a-file", root);
    test_write_file(file, "just some text\n", 15);
    char run[4300];
    snprintf(run, sizeof run, "%s/run", root);
    test_train_small(good, run, 8, 2, 1, 0);
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", run);
    size_t ck_size;
    uint8_t *ck_before = test_read_file(ckpt, &ck_size);

    const int n_cases = (int)(sizeof cases / sizeof cases[0]);
    cr_assert_geq(n_cases, 30);
    for (int c = 0; c < n_cases; c++) {
        char data[4300], out[4300], metrics[4300], bad[4300];
        snprintf(data, sizeof data, "%s/case%d", root, c);
        snprintf(bad, sizeof bad, "%s/scratch%d", root, c);
        snprintf(out, sizeof out, "%s/out%d", root, c);
        snprintf(metrics, sizeof metrics, "%s/metrics%d.jsonl", root, c);
        mkdir(data, 0777);
        mkdir(bad, 0777);
        test_write_dataset(data, 60, 20, 4, 4, 3, false, 5);
        cases[c].mutate(data, bad);
        const char *args[32];
        int n = 0;
        for (; cases[c].args[n]; n++) {
            const char *a = cases[c].args[n];
            static char expanded[32][4400];
            if (strncmp(a, "$BAD", 4) == 0)
                snprintf(expanded[n], sizeof expanded[n], "%s%s", bad, a + 4);
            else if (strncmp(a, "$FILE", 5) == 0)
                snprintf(expanded[n], sizeof expanded[n], "%s%s", file, a + 5);
            else
                snprintf(expanded[n], sizeof expanded[n], "%s",
                         !strcmp(a, "$DATA") ? data : !strcmp(a, "$OUT") ? out
                         : !strcmp(a, "$METRICS") ? metrics : !strcmp(a, "$CKPT") ? ckpt : a);
            args[n] = expanded[n];
        }
        args[n] = NULL;
        char *so, *se;
        int rc = test_run_cvae(&so, &se, args);
        cr_assert(rc >= 0, "case '%s': crashed with signal %d", cases[c].name, -rc);
        cr_assert_eq(rc, cases[c].code, "case '%s': exit %d, wanted %d; stderr: %s",
                     cases[c].name, rc, cases[c].code, se);
        cr_assert_eq(test_count_lines(se), 1, "case '%s': stderr is not one line: %s",
                     cases[c].name, se);
        cr_assert(strstr(se, cases[c].needle) != NULL, "case '%s': expected '%s' in: %s",
                  cases[c].name, cases[c].needle, se);
        cr_assert(!cv_path_exists(out), "case '%s': created %s", cases[c].name, out);
        cr_assert(!cv_path_exists(metrics), "case '%s': created %s", cases[c].name, metrics);
        free(so);
        free(se);
    }
    size_t now_size;
    uint8_t *ck_now = test_read_file(ckpt, &now_size);
    cr_assert(now_size == ck_size && memcmp(ck_now, ck_before, ck_size) == 0,
              "a refused run changed the checkpoint it was given");
    free(ck_now);
    free(ck_before);
}
