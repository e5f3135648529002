/* test_fd_leak.c: when zlib or stdio cannot start on a file, or no descriptor is free
 * for the duplicate they get, the IDX reader and writer and the data set writer return
 * one clean line and leave no descriptor open.
 *
 * This program defines gzdopen and fdopen; the library is linked statically into it, so
 * the library's calls bind to these definitions (a test checks that they do), which fail
 * when a test asks and otherwise forward to the real ones.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "cvae/data.h"
#include "util/fileio.h"
#include "cvae/generate.h"
#include "helpers.h"

static bool fail_gzdopen, fail_fdopen;
static int gzdopen_calls, fdopen_calls;

gzFile gzdopen(int fd, const char *mode) {
    static gzFile (*real)(int, const char *);
    if (!real) *(void **)&real = dlsym(RTLD_NEXT, "gzdopen");
    gzdopen_calls++;
    if (fail_gzdopen) {
        errno = ENOMEM;
        return NULL;
    }
    return real(fd, mode);
}

FILE *fdopen(int fd, const char *mode) {
    static FILE *(*real)(int, const char *);
    if (!real) *(void **)&real = dlsym(RTLD_NEXT, "fdopen");
    fdopen_calls++;
    if (fail_fdopen) {
        errno = ENOMEM;
        return NULL;
    }
    return real(fd, mode);
}

static char *dir;
static char gz_file[4200];

static void setup(void) {
    dir = test_tmpdir();
    snprintf(gz_file, sizeof gz_file, "%s/labels.gz", dir);
    uint8_t labels[5] = {0, 1, 2, 1, 0};
    int dims[3] = {5, 0, 0};
    cv_err err;
    cr_assert_eq(cv_idx_write(gz_file, 1, dims, labels, true, &err), CV_OK, "%s", err.msg);
}
static void teardown(void) {
    test_rmtree(dir);
    free(dir);
}

TestSuite(fd_leak, .init = setup, .fini = teardown);

static int open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    int n = 0;
    while (readdir(d)) n++;
    closedir(d);
    return n;
}

static void expect_one_line(cv_status st, const cv_err *err, const char *needle) {
    cr_assert_neq(st, CV_OK, "the failure went unnoticed");
    cr_assert(strchr(err->msg, '\n') == NULL, "more than one line: %s", err->msg);
    cr_assert(strstr(err->msg, needle) != NULL, "expected '%s' in: %s", needle, err->msg);
}

Test(fd_leak, the_library_calls_these_definitions) {
    int dims[3], calls = gzdopen_calls;
    uint8_t *payload;
    cv_err err;
    cr_assert_eq(cv_idx_read(gz_file, 1, dims, &payload, &err), CV_OK, "%s", err.msg);
    free(payload);
    cr_assert_eq(gzdopen_calls, calls + 1, "cv_idx_read did not call this gzdopen");
}

Test(fd_leak, idx_read_whose_zlib_cannot_start_closes_everything) {
    int before = open_fds(), dims[3];
    uint8_t *payload;
    cv_err err;
    fail_gzdopen = true;
    cv_status st = cv_idx_read(gz_file, 1, dims, &payload, &err);
    fail_gzdopen = false;
    expect_one_line(st, &err, gz_file);
    cr_assert_eq(open_fds(), before, "%d descriptors left open", open_fds() - before);
}

Test(fd_leak, idx_write_whose_zlib_cannot_start_closes_everything_and_leaves_no_file) {
    char path[4300];
    snprintf(path, sizeof path, "%s/images.gz", dir);
    uint8_t pixels[12] = {0};
    int dims[3] = {3, 2, 2}, before = open_fds();
    cv_err err;
    fail_gzdopen = true;
    cv_status st = cv_idx_write(path, 3, dims, pixels, true, &err);
    fail_gzdopen = false;
    expect_one_line(st, &err, path);
    cr_assert_eq(open_fds(), before, "%d descriptors left open", open_fds() - before);
    DIR *d = opendir(dir);
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        cr_assert(strncmp(e->d_name, "images", 6) != 0, "%s was left behind", e->d_name);
    closedir(d);
}

/* Generates 2 images of each of 2 classes from an untrained model into dir/name. */
static cv_status generate(const char *name, cv_gen_format format, cv_err *err) {
    cv_backend *be;
    cr_assert_eq(cv_backend_cpu_create(&be, err), CV_OK);
    cv_model_config cfg = {.height = 4, .width = 3, .channels = 1, .cond_width = 2, .latent = 2,
                           .n_hidden = 1, .hidden = {8}};
    cv_model m;
    cv_workspace ws;
    cr_assert_eq(cv_model_create(be, &cfg, &m, err), CV_OK, "%s", err->msg);
    cr_assert_eq(cv_model_init_params(&m, 3, err), CV_OK, "%s", err->msg);
    cr_assert_eq(cv_workspace_create(&m, cv_generate_block_rows(&m), &ws, err), CV_OK, "%s",
                 err->msg);
    char out[4300];
    snprintf(out, sizeof out, "%s/%s", dir, name);
    cv_generate_options o = {.cond = {.n_classes = 2, .classes = {0, 1}}, .per = 2,
                             .format = format, .mean = true, .batch = 4, .out = out,
                             .checkpoint = "none"};
    cv_generate_result res;
    int before = open_fds();
    cv_status st = cv_generate(&m, &ws, &o, &res, err);
    cr_assert_eq(open_fds(), before, "%d descriptors left open", open_fds() - before);
    cv_workspace_destroy(&m, &ws);
    cv_model_destroy(&m);
    be->destroy(be);
    return st;
}

Test(fd_leak, generation_whose_writer_cannot_start_closes_everything) {
    cv_err err;
    cr_assert_eq(generate("ok", CV_FMT_IDX_GZ, &err), CV_OK, "%s", err.msg);
    fail_gzdopen = true;
    cv_status st = generate("gz", CV_FMT_IDX_GZ, &err);
    fail_gzdopen = false;
    expect_one_line(st, &err, "images-idx3-ubyte.gz");
    fail_fdopen = true;
    st = generate("npy", CV_FMT_NPY, &err);
    fail_fdopen = false;
    cr_assert_gt(fdopen_calls, 0, "cv_generate did not call this fdopen");
    expect_one_line(st, &err, "images.npy");
    DIR *d = opendir(dir);
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        cr_assert(strncmp(e->d_name, "gz", 2) && strncmp(e->d_name, "npy", 3),
                  "a failed run left %s", e->d_name);
    closedir(d);
}

Test(fd_leak, idx_read_without_a_descriptor_for_the_duplicate_says_so) {
    /* the two lowest free descriptors: fopen takes the first, dup would take the second */
    int first = open("/dev/null", O_RDONLY), second = open("/dev/null", O_RDONLY);
    close(first);
    close(second);
    struct rlimit saved, rl;
    getrlimit(RLIMIT_NOFILE, &saved);
    rl = saved;
    rl.rlim_cur = (rlim_t)second;
    int before = open_fds(), dims[3];
    uint8_t *payload;
    cv_err err;
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    cv_status st = cv_idx_read(gz_file, 1, dims, &payload, &err);
    setrlimit(RLIMIT_NOFILE, &saved);
    expect_one_line(st, &err, strerror(EMFILE));
    cr_assert_eq(open_fds(), before, "%d descriptors left open", open_fds() - before);
}
