/* helpers.c: see helpers.h. */
#include "helpers.h"

#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cvae/data.h"
#include "cvae/train.h"

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

test_rng test_rng_new(const char *what) {
    static uint64_t counter;
    const char *env = getenv("CVAE_TEST_SEED");
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t seed = env ? strtoull(env, NULL, 10)
                        : (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^
                              ((uint64_t)getpid() << 40) ^ (++counter * 7919);
    cr_log_info("%s: random inputs from CVAE_TEST_SEED=%llu", what, (unsigned long long)seed);
    test_rng r = {seed};
    return r;
}

double test_uniform(test_rng *r, double lo, double hi) {
    return lo + (hi - lo) * ((double)(splitmix(&r->s) >> 11) * 0x1.0p-53);
}

double test_normal(test_rng *r) {
    double u = test_uniform(r, 1e-12, 1.0), v = test_uniform(r, 0.0, 1.0);
    return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

void test_fill(test_rng *r, float *x, size_t n, double lo, double hi) {
    for (size_t i = 0; i < n; i++) x[i] = (float)test_uniform(r, lo, hi);
}

char *test_tmpdir(void) {
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char *path = malloc(strlen(base) + 32);
    cr_assert_not_null(path);
    sprintf(path, "%s/cvae-test-XXXXXX", base);
    cr_assert_not_null(mkdtemp(path), "mkdtemp failed");
    return path;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void test_rmtree(const char *dir) { nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static void write_split(const char *dir, const char *prefix, int n, int h, int w,
                        int classes, bool gz, uint64_t *s) {
    uint8_t *pix = malloc((size_t)n * h * w), *lab = malloc((size_t)n);
    for (int i = 0; i < n; i++) {
        int c = (int)(splitmix(s) % (uint64_t)classes);
        lab[i] = (uint8_t)c;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                bool band = y * classes / h == c;
                int noise = (int)(splitmix(s) % 60);
                pix[(size_t)i * h * w + y * w + x] = (uint8_t)(band ? 195 + noise : noise);
            }
    }
    char path[4096];
    cv_err err;
    int idims[3] = {n, h, w}, ldims[3] = {n, 0, 0};
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte%s", dir, prefix, gz ? ".gz" : "");
    cr_assert_eq(cv_idx_write(path, 3, idims, pix, gz, &err), CV_OK, "%s", err.msg);
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte%s", dir, prefix, gz ? ".gz" : "");
    cr_assert_eq(cv_idx_write(path, 1, ldims, lab, gz, &err), CV_OK, "%s", err.msg);
    free(pix);
    free(lab);
}

void test_write_dataset(const char *dir, int n_train, int n_test, int h, int w, int classes,
                        bool gz, uint64_t seed) {
    uint64_t s = seed;
    write_split(dir, "train", n_train, h, w, classes, gz, &s);
    if (n_test) write_split(dir, "t10k", n_test, h, w, classes, gz, &s);
}

static char *slurp_fd(int fd) {
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    lseek(fd, 0, SEEK_SET);
    ssize_t got;
    while ((got = read(fd, buf + len, cap - len - 1)) > 0) {
        len += (size_t)got;
        if (cap - len < 2) buf = realloc(buf, cap *= 2);
    }
    buf[len] = 0;
    return buf;
}

/* Runs cvae; with as_bytes, under that address-space limit (see helpers.h). */
static int run_cvae(char **out, char **err, const char *const *args, size_t as_bytes) {
    const char *bin = getenv("CVAE_BIN");
    cr_assert_not_null(bin, "CVAE_BIN is not set (meson test sets it)");
    char tmpl_o[] = "/tmp/cvae-out-XXXXXX", tmpl_e[] = "/tmp/cvae-err-XXXXXX";
    int fo = mkstemp(tmpl_o), fe = mkstemp(tmpl_e);
    unlink(tmpl_o);
    unlink(tmpl_e);
    const char *argv[64];
    int n = 0;
    argv[n++] = bin;
    for (int i = 0; args[i]; i++) argv[n++] = args[i];
    argv[n] = NULL;
    pid_t pid = test_fork();
    if (pid == 0) {
        dup2(fo, 1);
        dup2(fe, 2);
        int devnull = open("/dev/null", O_RDONLY);
        dup2(devnull, 0);
        if (as_bytes) {
            setenv("OMP_NUM_THREADS", "1", 0); /* unless the test asks for more */
            unsetenv("MALLOC_PERTURB_"); /* meson's: it would write every page allocated */
            struct rlimit rl = {(rlim_t)as_bytes, (rlim_t)as_bytes}, no_core = {0, 0};
            setrlimit(RLIMIT_AS, &rl);
            setrlimit(RLIMIT_CORE, &no_core);
            alarm(60);
        }
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    int status;
    waitpid(pid, &status, 0);
    *out = slurp_fd(fo);
    *err = slurp_fd(fe);
    close(fo);
    close(fe);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

int test_run_cvae(char **out, char **err, const char *const *args) {
    return run_cvae(out, err, args, 0);
}

int test_run_cvae_limited(char **out, char **err, const char *const *args, size_t as_bytes) {
    return run_cvae(out, err, args, as_bytes);
}

pid_t test_fork(void) {
    const pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127); /* it ended before the request was in place */
    }
    return pid;
}

pid_t test_dead_pid(void) {
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    waitpid(pid, NULL, 0);
    return pid;
}

int test_count_lines(const char *s) {
    int n = 0;
    for (; *s; s++)
        if (*s == '\n') n++;
    return n;
}

uint8_t *test_read_file(const char *path, size_t *size) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    rewind(fp);
    uint8_t *buf = malloc((size_t)n + 1);
    *size = fread(buf, 1, (size_t)n, fp);
    buf[*size] = 0; /* text files can be used as strings */
    fclose(fp);
    return buf;
}

void test_write_file(const char *path, const void *data, size_t size) {
    FILE *fp = fopen(path, "wb");
    cr_assert_not_null(fp, "cannot write %s", path);
    fwrite(data, 1, size, fp);
    fclose(fp);
}

void assert_close(const char *what, int i, double got, double ref, double atol, double rtol) {
    cr_assert(fabs(got - ref) <= atol + rtol * fabs(ref), "%s[%d]: got %.9g, reference %.9g",
              what, i, got, ref);
}

void test_train_small(const char *data, const char *out, int hidden, int latent, int epochs,
                      uint64_t seed) {
    FILE *sink = fopen("/dev/null", "w");
    cv_train_options o = cv_train_defaults();
    o.data_dir = data;
    o.device = "cpu";
    o.out_dir = out;
    o.hidden[0] = hidden;
    o.latent = latent;
    o.batch = 16;
    o.epochs = epochs;
    o.lr = 3e-3f;
    o.seed = seed;
    o.log = sink;
    cv_train_result res;
    cv_err err;
    cr_assert_eq(cv_train_run(&o, &res, &err), CV_OK, "%s", err.msg);
    fclose(sink);
}

char *test_path_in(const char *folder, const char *name) {
    static char paths[8][8400];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, sizeof paths[0], "%s/%s", folder, name);
    return p;
}

void test_write_npy(const char *path, cv_npy_dtype t, int ndims, const int64_t *dims,
                    const void *values) {
    cv_err err;
    cr_assert_eq(cv_npy_write(path, t, ndims, dims, values, &err), CV_OK, "%s", err.msg);
}
