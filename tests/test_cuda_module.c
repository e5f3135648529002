/* test_cuda_module.c: a CUDA build where its CUDA module (libcvae-cuda.so) or a CUDA
 * library it needs cannot be loaded (src/host/cuda/cuda_module.h). The program still runs
 * --device cpu and auto (auto saying why it took the CPU), --device cuda is one line naming
 * what is missing and exit 2, and --version says it. CUDA builds only.
 *
 * The program is copied into a temporary folder, alone or with a module beside it. The
 * missing CUDA library is a copy of the module whose cuBLASLt is renamed libcublasLZ.so.13
 * (no such library exists), and a module of another build one whose build mark is
 * changed: the same bytes for the dynamic loader as the real cases. "Alone" assumes that
 * no cvae of this very build is installed on the library path (it would be found there);
 * LD_LIBRARY_PATH is unset for the copy.
 * Then, in this process: libcvae maps no CUDA library until a GPU is asked for, and then
 * the module brings them (found through this program's RUNPATH, the build folder).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cvae/backend.h"
#include "helpers.h"

static char *dir, *data, *program, *module;

static void setup(void) {
    dir = test_tmpdir();
    data = strdup(test_path_in(dir, "data"));
    cr_assert_eq(mkdir(data, 0777), 0);
    test_write_dataset(data, 48, 16, 6, 6, 3, false, 21);
    char *bin = test_path_in(dir, "bin");
    cr_assert_eq(mkdir(bin, 0777), 0);
    program = strdup(test_path_in(bin, "cvae"));
    module = strdup(test_path_in(bin, "libcvae-cuda.so"));
    size_t size;
    const char *built = getenv("CVAE_BIN");
    cr_assert_not_null(built, "CVAE_BIN is not set (meson test sets it)");
    uint8_t *bytes = test_read_file(built, &size);
    cr_assert_not_null(bytes, "cannot read %s", built);
    test_write_file(program, bytes, size);
    free(bytes);
    cr_assert_eq(chmod(program, 0755), 0);
    setenv("CVAE_BIN", program, 1); /* test_run_cvae runs the copy */
    /* meson test puts the build folder, and so the built module, on the library path */
    unsetenv("LD_LIBRARY_PATH");
}
static void teardown(void) {
    test_rmtree(dir);
    free(dir);
    free(data);
    free(program);
    free(module);
}

TestSuite(cuda_module, .init = setup, .fini = teardown, .timeout = 120);

/* The built module copied beside the program, every `from` in it replaced by `to` (the
 * same length); asserts that there was one. */
static void place_module(const char *from, const char *to) {
    const char *built = getenv("CVAE_MODULE");
    cr_assert_not_null(built, "CVAE_MODULE is not set (meson test sets it)");
    size_t size, len = strlen(from), hits = 0;
    cr_assert_eq(strlen(to), len);
    uint8_t *bytes = test_read_file(built, &size);
    cr_assert_not_null(bytes, "cannot read %s", built);
    for (size_t i = 0; i + len <= size; i++)
        if (memcmp(bytes + i, from, len) == 0) {
            memcpy(bytes + i, to, len);
            hits++;
        }
    cr_assert_gt(hits, 0, "%s holds no '%s'", built, from);
    test_write_file(module, bytes, size);
    free(bytes);
}

static int train_on(const char *device, char **out, char **err) {
    const char *args[] = {"train", "--data", data, "--epochs", "1", "--hidden", "8",
                          "--latent", "2", "--batch", "16", "--device", device, NULL};
    return test_run_cvae(out, err, args);
}

/* --device cuda fails with one line that says each of want; cpu trains; auto trains on
 * the CPU and says why. */
static void expect_cpu_only(const char *want1, const char *want2) {
    char *o, *e;
    cr_assert_eq(train_on("cuda", &o, &e), 2, "--device cuda: %s", e);
    cr_log_info("--device cuda: %s", e);
    cr_assert_eq(test_count_lines(e), 1, "not one line: %s", e);
    cr_assert(strncmp(e, "cvae train: ", 12) == 0, "%s", e);
    cr_assert(strstr(e, want1) && strstr(e, want2), "'%s' does not say '%s' and '%s'", e, want1,
              want2);
    free(o);
    free(e);
    cr_assert_eq(train_on("cpu", &o, &e), 0, "--device cpu: %s", e);
    cr_assert(strstr(o, "final test -ELBO"), "%s", o);
    free(o);
    free(e);
    cr_assert_eq(train_on("auto", &o, &e), 0, "--device auto: %s", e);
    cr_assert(strstr(o, "device: CPU") && strstr(o, "; auto chose the CPU: "),
              "auto does not say why it took the CPU: %s", o);
    cr_assert(strstr(o, "final test -ELBO"), "%s", o);
    free(o);
    free(e);
}

static char *version(void) {
    const char *args[] = {"--version", NULL};
    char *o, *e;
    cr_assert_eq(test_run_cvae(&o, &e, args), 0, "%s", e);
    free(e);
    return o;
}

Test(cuda_module, without_its_module_the_cpu_runs_and_cuda_says_so) {
    expect_cpu_only("libcvae-cuda.so", "is not in");
    char *o = version();
    cr_assert(strstr(o, "CUDA module: libcvae-cuda.so is not in"), "%s", o);
    free(o);
}

Test(cuda_module, without_a_cuda_library_the_cpu_runs_and_cuda_names_it) {
    place_module("libcublasLt.so.", "libcublasLZ.so.");
    expect_cpu_only("cannot be loaded", "libcublasLZ.so.");
    char *o = version();
    cr_assert(strstr(o, "cannot load") && strstr(o, "libcublasLZ.so."), "%s", o);
    free(o);
}

Test(cuda_module, a_module_of_another_build_is_passed_over) {
    place_module("backend %zu", "bAckend %zu");
    expect_cpu_only("belongs to another build of cvae", "libcvae-cuda.so");
}

/* Whether this process has mapped a file whose name holds name (/proc/self/maps, read
 * to its end: a procfs file has no size to seek to). */
static bool mapped(const char *name) {
    FILE *fp = fopen("/proc/self/maps", "r");
    cr_assert_not_null(fp);
    char line[4096];
    bool found = false, any = false;
    while (fgets(line, sizeof line, fp)) {
        any = true;
        found = found || strstr(line, name) != NULL;
    }
    fclose(fp);
    cr_assert(any, "/proc/self/maps read empty");
    return found;
}

Test(cuda_module, libcvae_maps_the_cuda_libraries_only_when_a_gpu_is_asked_for) {
    const char *cuda[] = {"libcvae-cuda.so", "libcudart", "libcublasLt"};
    cv_backend *be;
    cv_err err;
    cr_assert_eq(cv_backend_open("cpu", NULL, &be, &err), CV_OK, "%s", err.msg);
    be->destroy(be);
    for (int i = 0; i < 3; i++) cr_assert(!mapped(cuda[i]), "%s is mapped before any GPU", cuda[i]);
    const cv_status st = cv_backend_cuda_create(NULL, &be, &err);
    cr_log_info("--device cuda here: %s", st ? err.msg : be->description);
    if (!st) be->destroy(be);
    cr_assert(st == CV_OK || !strstr(err.msg, "cannot be loaded"), "%s", err.msg);
    for (int i = 0; i < 3; i++) cr_assert(mapped(cuda[i]), "%s is not mapped after", cuda[i]);
}
