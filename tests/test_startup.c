/* test_startup.c: what cvae loads to start. The commands that use no device (--version,
 * info, a command's --help) load no CUDA library, so that they run where the CUDA
 * libraries are missing and under a small address-space limit, in every build. The
 * dynamic loader itself says what it loads (LD_DEBUG=files), dlopen included: a fact of
 * the run, not a time or a size that a busy machine could change. How long start-up takes
 * and how much memory it holds are measured by bench/startup.py. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "helpers.h"

#define KiB ((size_t)1 << 10)

static char *dir, *ckpt;

static void setup(void) {
    dir = test_tmpdir();
    char *data = test_path_in(dir, "data"), *run = test_path_in(dir, "run");
    cr_assert_eq(mkdir(data, 0777), 0);
    test_write_dataset(data, 64, 16, 6, 6, 3, false, 11);
    test_train_small(data, run, 4, 2, 1, 11);
    ckpt = strdup(test_path_in(run, "model.ckpt"));
}
static void teardown(void) {
    test_rmtree(dir);
    free(dir);
    free(ckpt);
}

TestSuite(startup, .init = setup, .fini = teardown, .timeout = 120);

/* The first line of the loader's report (LD_DEBUG=files) on a CUDA library or the CUDA
 * module, by name or by path, or NULL; *len gets its length. */
static const char *cuda_library_loaded(const char *report, int *len) {
    static const char *const names[] = {"libcuda.so", "libcudart", "libcublas", "libnccl",
                                        "libcvae-cuda"};
    for (const char *line = report; *line;) {
        const char *end = strchr(line, '\n');
        *len = end ? (int)(end - line) : (int)strlen(line);
        const char *file = strstr(line, "file=");
        for (size_t i = 0; file && file < line + *len && i < sizeof names / sizeof *names; i++) {
            const char *hit = strstr(file, names[i]);
            if (hit && hit < line + *len) return line;
        }
        line += *len + (end != NULL);
    }
    return NULL;
}

/* How many times the report says the loader loaded file: once per process image. */
static int loads(const char *report, const char *file) {
    int n = 0;
    for (const char *p = report; (p = strstr(p, file)) != NULL; p++) n++;
    return n;
}

/* They load no CUDA library, and start once: cvae starts itself again (with its OpenBLAS
 * and OpenMP settings, cli_main.c) only before a command that computes. */
Test(startup, version_info_and_help_load_no_cuda_library) {
    const char *version[] = {"--version", NULL}, *info[] = {"info", "--model", ckpt, NULL},
               *help[] = {"train", "--help", NULL};
    const char *const *commands[] = {version, info, help};
    const int images[] = {1, 1, 2};
    const char *settings[] = {"OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "GOMP_SPINCOUNT",
                              "OMP_WAIT_POLICY"};
    for (size_t i = 0; i < sizeof settings / sizeof *settings; i++) unsetenv(settings[i]);
    setenv("LD_DEBUG", "files", 1);
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++) {
        char *o, *e;
        cr_assert_eq(test_run_cvae(&o, &e, commands[i]), 0, "cvae %s: %s", commands[i][0], e);
        int len;
        const char *cuda = cuda_library_loaded(e, &len);
        cr_assert_null(cuda, "cvae %s %s loaded a CUDA library: %.*s", commands[i][0],
                       commands[i][1] ? commands[i][1] : "", len, cuda);
        const int started = loads(e, "file=libc.so.6 [0];  needed by");
        cr_assert_eq(started, images[i], "cvae %s started %d times, not %d", commands[i][0],
                     started, images[i]);
        free(o);
        free(e);
    }
}

/* `ulimit -v 400000; cvae --version`: the libraries cvae maps to start fit in 400,000 KiB
 * of address space (cuBLASLt alone maps 540 MB). OpenBLAS runs on one thread here
 * (test_run_cvae_limited), since each thread it starts at load reserves a stack, which on
 * a machine of many cores alone passes the limit. */
Test(startup, version_and_help_run_under_a_400000_kib_address_space_limit) {
#if defined(__SANITIZE_ADDRESS__)
    cr_skip_test("AddressSanitizer cannot run under an address-space limit");
#endif
    const char *version[] = {"--version", NULL}, *help[] = {"train", "--help", NULL};
    char *o, *e;
    cr_assert_eq(test_run_cvae_limited(&o, &e, version, 400000 * KiB), 0, "%s", e);
    cr_assert(strncmp(o, "cvae ", 5) == 0, "%s", o);
    cr_assert_eq(e[0], '\0', "--version wrote to stderr: %s", e);
    free(o);
    free(e);
    cr_assert_eq(test_run_cvae_limited(&o, &e, help, 400000 * KiB), 0, "%s", e);
    free(o);
    free(e);
}
