/* test_image_cache.c: the decoded cache (fresh, stale, corrupt, where it lives) and image
 * data that is refused: each bad input is one line naming the file (with the line and
 * column of a table), exit 1, before training, with nothing written (no run folder, no
 * cache file). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "data/png.h"
#include "helpers.h"
#include "image_files.h"
#include "util/fileio.h"

static char *dir, data[4400], cache[4400], run[4400];

/* data: train/{a,b}/<i>.png, 12 random 8 x 8 grey images a class */
static void setup(void) {
    dir = test_tmpdir();
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(cache, sizeof cache, "%s/cache", dir);
    snprintf(run, sizeof run, "%s/run", dir);
    test_rng r = test_rng_new("image cache");
    uint8_t px[64];
    char path[4600];
    mkdir(data, 0777);
    snprintf(path, sizeof path, "%s/train", data);
    mkdir(path, 0777);
    for (int c = 0; c < 2; c++) {
        snprintf(path, sizeof path, "%s/train/%c", data, 'a' + c);
        mkdir(path, 0777);
        for (int i = 0; i < 12; i++) {
            for (int j = 0; j < 64; j++) px[j] = (uint8_t)test_uniform(&r, 0, 256);
            snprintf(path, sizeof path, "%s/train/%c/%d.png", data, 'a' + c, i);
            cv_err err;
            cr_assert_eq(cv_png_write(path, px, 8, 8, 1, &err), CV_OK);
        }
    }
}

static void teardown(void) {
    test_rmtree(dir);
    free(dir);
}

TestSuite(image_cache, .init = setup, .fini = teardown, .timeout = 300);

static int run_train(char **out, char **err, const char *extra) {
    const char *args[] = {"train", "--data", data, "--cache", cache, "--out", run, "--epochs", "1",
                          "--hidden", "8", "--latent", "2", "--device", "cpu", extra, NULL};
    return test_run_cvae(out, err, args);
}

/* How many files in folder end in suffix. */
static int count_files(const char *folder, const char *suffix) {
    DIR *d = opendir(folder);
    if (!d) return 0;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += strlen(e->d_name) > strlen(suffix) &&
             strcmp(e->d_name + strlen(e->d_name) - strlen(suffix), suffix) == 0;
    closedir(d);
    return n;
}

/* The one .npy of the cache. */
static void cache_npy(char out[4700]) {
    DIR *d = opendir(cache);
    cr_assert_not_null(d);
    for (struct dirent *e; (e = readdir(d));)
        if (strstr(e->d_name, ".npy")) snprintf(out, 4700, "%s/%s", cache, e->d_name);
    closedir(d);
}

Test(image_cache, fresh_is_mapped_stale_is_rebuilt_corrupt_is_refused) {
    char *out, *err;
    cr_assert_eq(run_train(&out, &err, NULL), 0, "%s", err);
    cr_assert(strstr(out, "decoded 24 training images"), "%s", out);
    free(out);
    free(err);
    test_rmtree(run);
    cr_assert_eq(run_train(&out, &err, NULL), 0, "%s", err);
    cr_assert(!strstr(out, "decoded"), "a fresh cache was decoded again:\n%s", out);
    free(out);
    free(err);
    test_rmtree(run);
    /* a file's new modification time makes the entry stale: decoded again, in place */
    char path[4600];
    snprintf(path, sizeof path, "%s/train/b/3.png", data);
    struct timeval later[2] = {{2000000000, 0}, {2000000000, 0}};
    cr_assert_eq(utimes(path, later), 0);
    cr_assert_eq(run_train(&out, &err, NULL), 0, "%s", err);
    cr_assert(strstr(out, "stale") && strstr(out, "decoded 24 training images"), "%s", out);
    cr_assert_eq(count_files(cache, ".npy"), 1, "the stale entry was not replaced");
    free(out);
    free(err);
    test_rmtree(run);
    /* a cut .npy whose key still matches: corrupt, refused, nothing written */
    char npy[4700];
    cache_npy(npy);
    size_t n;
    uint8_t *b = test_read_file(npy, &n);
    test_write_file(npy, b, n - 10);
    free(b);
    cr_assert_eq(run_train(&out, &err, NULL), 1, "%s", err);
    cr_assert(strstr(err, "corrupt image cache") && strstr(err, npy) &&
              test_count_lines(err) == 1, "%s", err);
    cr_assert(!cv_path_exists(run), "a refused run left its folder");
    free(out);
    free(err);
    /* cvae data tells the same: the entry is not fresh but corrupt */
    const char *args[] = {"data", data, "--cache", cache, NULL};
    cr_assert_eq(test_run_cvae(&out, &err, args), 1, "%s%s", out, err);
    cr_assert(!strstr(out, "(fresh)"), "cvae data called a corrupt cache fresh:\n%s", out);
    cr_assert(strstr(err, "corrupt image cache") && strstr(err, npy) &&
              test_count_lines(err) == 1, "%s", err);
    free(out);
    free(err);
}

/* By default the cache is $XDG_CACHE_HOME/cvae, else ~/.cache/cvae: never the data folder. */
Test(image_cache, the_default_folder_is_the_users_cache) {
    char home[4400], xdg[4400], path[4600];
    snprintf(home, sizeof home, "%s/home", dir);
    snprintf(xdg, sizeof xdg, "%s/xdg", dir);
    mkdir(home, 0777);
    setenv("HOME", home, 1);
    unsetenv("XDG_CACHE_HOME");
    const char *args[] = {"data", "--data", data, "--build-cache", NULL};
    char *out, *err;
    cr_assert_eq(test_run_cvae(&out, &err, args), 0, "%s", err);
    snprintf(path, sizeof path, "%s/.cache/cvae", home);
    cr_assert_eq(count_files(path, ".npy"), 1, "nothing in %s:\n%s", path, out);
    free(out);
    free(err);
    setenv("XDG_CACHE_HOME", xdg, 1);
    cr_assert_eq(test_run_cvae(&out, &err, args), 0, "%s", err);
    snprintf(path, sizeof path, "%s/cvae", xdg);
    cr_assert_eq(count_files(path, ".npy"), 1, "nothing in %s", path);
    cr_assert(strstr(out, path), "cvae data does not name the cache:\n%s", out);
    cr_assert_eq(count_files(data, ".npy") + count_files(data, ".key"), 0);
    unsetenv("XDG_CACHE_HOME");
    free(out);
    free(err);
}

/* One bad input: made by damage(), then training must exit 1 with one line holding each
 * needle, no run folder and no cache entry. */
typedef void (*damage_fn)(void);

static void expect_refused(damage_fn damage, const char *extra, const char *needle1,
                           const char *needle2) {
    damage();
    char *out, *err;
    const int rc = run_train(&out, &err, extra);
    cr_assert_eq(rc, 1, "exit %d, expected 1: %s", rc, err);
    cr_assert_eq(test_count_lines(err), 1, "not one line:\n%s", err);
    cr_assert(strstr(err, needle1), "expected '%s' in: %s", needle1, err);
    cr_assert(!needle2 || strstr(err, needle2), "expected '%s' in: %s", needle2, err);
    cr_assert(!cv_path_exists(run), "a refused run left %s", run);
    cr_assert(!cv_path_exists(cache), "a refused run left the cache folder it made");
    free(out);
    free(err);
}

static char *at(const char *rel) { return test_path_in(data, rel); }

static void cut_png(void) {
    size_t n;
    uint8_t *b = test_read_file(at("train/a/5.png"), &n);
    test_write_file(at("train/a/5.png"), b, n - 20);
    free(b);
}
Test(image_cache, a_truncated_png) { expect_refused(cut_png, NULL, "train/a/5.png: corrupt PNG", "truncated"); }

static void bad_jpeg(void) {
    uint8_t rgb[64 * 64 * 3];
    test_photo(1, 64, 64, rgb);
    size_t n;
    uint8_t *b = test_jpeg_bytes(rgb, 64, 64, 3, 90, &n);
    b[n - 60] = 0xff; /* a marker inside the entropy-coded data, where none can be */
    b[n - 59] = 0x01;
    test_write_file(at("train/b/7.jpg"), b, n);
    free(b);
}
Test(image_cache, a_corrupt_jpeg) {
    expect_refused(bad_jpeg, "--image-size=8x8", "train/b/7.jpg: corrupt JPEG", NULL);
}

static void other_size(void) {
    uint8_t px[9 * 8] = {0};
    cv_err err;
    cr_assert_eq(cv_png_write(at("train/b/2.png"), px, 9, 8, 1, &err), CV_OK);
}
Test(image_cache, an_image_of_another_size) {
    expect_refused(other_size, NULL, "train/b/2.png: is 9x8, but", "(the first image) is 8x8: "
                   "give --image-size");
}

static void dangling(void) {
    cr_assert_eq(symlink("/nonexistent/x.png", at("train/a/99.png")), 0);
}
Test(image_cache, an_unreadable_file) {
    expect_refused(dangling, NULL, "train/a/99.png: cannot read", NULL);
}

static void empty_class(void) { mkdir(at("train/c"), 0777); }
Test(image_cache, an_empty_class_folder) {
    expect_refused(empty_class, NULL, "train/c: an empty class folder", NULL);
}

static void colour_among_grey(void) {
    uint8_t px[8 * 8 * 3] = {0};
    cv_err err;
    cr_assert_eq(cv_png_write(at("train/b/4.png"), px, 8, 8, 3, &err), CV_OK);
}
Test(image_cache, colour_among_grey_without_channels) {
    expect_refused(colour_among_grey, NULL, "train/b/4.png: is colour, but", "--channels 1 or 3");
}

/* Tables: a row's missing or non-numeric value, a file that is not there. */
static void table(const char *text) {
    test_write_file(at("t.csv"), text, strlen(text));
}
static int run_table(char **out, char **err) {
    const char *args[] = {"train", "--train-csv", at("t.csv"), "--cache", cache, "--out", run,
                          "--epochs", "1", "--hidden", "8", "--latent", "2", "--device", "cpu",
                          NULL};
    return test_run_cvae(out, err, args);
}
static void expect_table_refused(const char *text, const char *needle) {
    table(text);
    char *out, *err;
    cr_assert_eq(run_table(&out, &err), 1, "%s", err);
    cr_assert(test_count_lines(err) == 1 && strstr(err, "t.csv: line ") && strstr(err, needle),
              "expected '%s' in one line naming t.csv: %s", needle, err);
    cr_assert(!cv_path_exists(run) && !cv_path_exists(cache));
    free(out);
    free(err);
}

Test(image_cache, table_rows_refused_by_line_and_column) {
    expect_table_refused("image,x,y\ntrain/a/0.png,1,2\ntrain/a/1.png,3\n",
                         "line 3: no value for column 'y'");
    expect_table_refused("image,x,y\ntrain/a/0.png,1,2\ntrain/a/1.png,3,four\n",
                         "line 3, column 'y': 'four' is not a finite number");
    expect_table_refused("image x\ntrain/a/0.png 1\ntrain/a/nope.png 2\n",
                         "line 3: ");
    char *out, *err;
    cr_assert_eq(run_table(&out, &err), 1);
    cr_assert(strstr(err, "train/a/nope.png: No such file"), "%s", err);
    free(out);
    free(err);
}

/* A test table of condition vectors beside a training table of named classes: the kinds
 * are named, not the class names called columns. */
Test(image_cache, a_test_table_of_another_kind) {
    table("image,label\ntrain/a/0.png,cat\ntrain/b/0.png,dog\n");
    const char *vectors = "image,x\ntrain/a/1.png,0.5\ntrain/b/1.png,-0.5\n";
    test_write_file(at("v.csv"), vectors, strlen(vectors));
    const char *args[] = {"train", "--train-csv", at("t.csv"), "--test-csv", at("v.csv"),
                          "--cache", cache, "--out", run, "--epochs", "1", "--hidden", "8",
                          "--latent", "2", "--device", "cpu", NULL};
    char *out, *err;
    cr_assert_eq(test_run_cvae(&out, &err, args), 1, "%s", err);
    cr_assert(test_count_lines(err) == 1 && strstr(err, "v.csv: holds condition vectors, but "
              "the training split has class labels"), "%s", err);
    cr_assert(!cv_path_exists(run) && !cv_path_exists(cache));
    free(out);
    free(err);
}

/* SIGINT while the images decode stops the decoding: exit 130, with no run folder and no
 * cache left. One large PNG linked 4000 times makes a long decode cheaply. */
Test(image_cache, a_signal_while_decoding_exits_130_and_leaves_nothing) {
    const int side = 1024;
    uint8_t *px = malloc((size_t)side * side);
    test_rng r = test_rng_new("big png");
    for (int i = 0; i < side * side; i++) px[i] = (uint8_t)test_uniform(&r, 0, 256);
    char big[4600], link_path[4700], tree[4600];
    snprintf(tree, sizeof tree, "%s/big", dir);
    mkdir(tree, 0777);
    snprintf(big, sizeof big, "%s/big/train", dir);
    mkdir(big, 0777);
    snprintf(big, sizeof big, "%s/big/train/a", dir);
    mkdir(big, 0777);
    snprintf(big, sizeof big, "%s/big/one.png", dir);
    cv_err err;
    cr_assert_eq(cv_png_write(big, px, side, side, 1, &err), CV_OK);
    free(px);
    for (int i = 0; i < 4000; i++) {
        snprintf(link_path, sizeof link_path, "%s/big/train/a/%04d.png", dir, i);
        cr_assert_eq(link(big, link_path), 0);
    }
    unlink(big);
    const char *args[] = {"cvae", "train", "--data", tree, "--cache", cache, "--out", run,
                          "--device", "cpu", NULL};
    pid_t pid = test_fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execv(getenv("CVAE_BIN"), (char *const *)args);
        _exit(127);
    }
    /* the decoding begins once the cache folder is made */
    bool decoding = false;
    for (int i = 0; i < 2400 && !decoding; i++) {
        decoding = cv_path_exists(cache);
        if (!decoding) usleep(25000);
    }
    cr_assert(decoding, "the decoding never started");
    usleep(200000);
    kill(pid, SIGINT);
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 130, "status %d, expected exit 130",
              status);
    cr_assert(!cv_path_exists(run), "the interrupted run left its folder");
    cr_assert(!cv_path_exists(cache), "the interrupted decoding left the cache folder");
}

/* The image flags mean nothing to IDX or .npy data: refused (exit 2), not ignored. */
Test(image_cache, image_flags_on_idx_data_are_a_usage_error) {
    char idx[4600];
    snprintf(idx, sizeof idx, "%s/idx", dir);
    mkdir(idx, 0777);
    test_write_dataset(idx, 40, 0, 4, 4, 2, false, 3);
    const char *flags[][2] = {{"--image-size", "8x8"}, {"--channels", "3"},
                              {"--condition-columns", "a"}};
    for (int i = 0; i < 3; i++) {
        const char *args[] = {"train", "--data", idx, "--out", run, flags[i][0], flags[i][1],
                              "--device", "cpu", NULL};
        char *out, *err;
        cr_assert_eq(test_run_cvae(&out, &err, args), 2, "%s", err);
        cr_assert(strstr(err, flags[i][0]) && strstr(err, "applies to PNG and JPEG images") &&
                  test_count_lines(err) == 1, "%s", err);
        cr_assert(!cv_path_exists(run));
        free(out);
        free(err);
    }
}
