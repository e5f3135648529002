/* test_gen_output.c: what `cvae generate` leaves on disk whatever happens around it: the
 * same bytes with standard input, output or error closed (cron, systemd units), an
 * existing empty --out (a mount point) filled in place, a signal that takes back what the
 * command made, and leftovers of dead processes swept before a new set is written. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cvae/checkpoint.h"
#include "cvae/generate.h"
#include "helpers.h"
#include "util/fileio.h"

static char *dir;
static char ckpt[4300];

static void setup(void) {
    dir = test_tmpdir();
    char data[4200], run[4200];
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(run, sizeof run, "%s/run", dir);
    mkdir(data, 0777);
    test_write_dataset(data, 120, 20, 5, 6, 3, false, 33);
    test_train_small(data, run, 16, 3, 1, 8);
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", run);
}
static void teardown(void) {
    test_rmtree(dir);
    free(dir);
}

TestSuite(gen_output, .init = setup, .fini = teardown, .timeout = 180);

/* Starts cvae with args; the descriptor `closed` (-1: none) is closed in it, the other
 * standard ones go to /dev/null. */
static pid_t spawn_closing(const char *const *args, int closed) {
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR);
        for (int fd = 0; fd < 3; fd++) dup2(devnull, fd);
        if (devnull > 2) close(devnull);
        if (closed >= 0) close(closed);
        const char *argv[64] = {"cvae"};
        for (int i = 0; args[i]; i++) argv[i + 1] = args[i];
        execv(getenv("CVAE_BIN"), (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static int wait_exit(pid_t pid) {
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

/* The names under folder (recursively, sorted, "sub/name"), into list; returns the count. */
static int list_files(const char *folder, const char *prefix, char list[][512], int max) {
    struct dirent **names;
    int n = scandir(folder, &names, NULL, alphasort), count = 0;
    for (int i = 0; i < n; i++) {
        const char *name = names[i]->d_name;
        char path[8400], rel[512];
        snprintf(path, sizeof path, "%s/%s", folder, name);
        snprintf(rel, sizeof rel, "%s%s", prefix, name);
        struct stat sb;
        if (strcmp(name, ".") && strcmp(name, "..") && stat(path, &sb) == 0) {
            if (S_ISDIR(sb.st_mode)) {
                char sub[600];
                snprintf(sub, sizeof sub, "%s/", rel);
                count += list_files(path, sub, list + count, max - count);
            } else if (count < max) {
                snprintf(list[count++], 512, "%s", rel);
            }
        }
        free(names[i]);
    }
    free(names);
    return count;
}

/* Every file of b is the same bytes as a's, and b holds no other file. */
static void expect_same_files(const char *a, const char *b, const char *what) {
    static char la[512][512], lb[512][512];
    int na = list_files(a, "", la, 512), nb = list_files(b, "", lb, 512);
    cr_assert_eq(nb, na, "%s: %d files, the reference %d", what, nb, na);
    for (int i = 0; i < na; i++) {
        cr_assert_str_eq(lb[i], la[i], "%s: file %d", what, i);
        size_t sa, sb;
        uint8_t *x = test_read_file(test_path_in(a, la[i]), &sa);
        uint8_t *y = test_read_file(test_path_in(b, lb[i]), &sb);
        cr_assert(x && y && sa == sb && memcmp(x, y, sa) == 0, "%s: %s differs from the "
                  "reference (%zu bytes, the reference %zu)", what, la[i], sb, sa);
        free(x);
        free(y);
    }
}

/* Under cron or a systemd unit a standard descriptor may be closed; the next file cvae
 * opens then gets its number. Every format is written byte for byte as with all three
 * open (the images stream used to get fd 0, which counted as "never opened": idx.gz ended
 * without its gzip trailer, npy was never flushed before its manifest hash; with fd 1
 * closed the "device:" line would land in a data file). */
Test(gen_output, every_format_is_whole_with_a_standard_descriptor_closed) {
    const char *formats[] = {"idx", "idx.gz", "npy", "png", "grid"};
    for (int f = 0; f < 5; f++) {
        const bool grid = f == 4;
        char ref[4300];
        snprintf(ref, sizeof ref, "%s/ref-%d%s", dir, f, grid ? ".png" : "");
        for (int closed = -1; closed < 3; closed++) {
            char out[4300];
            if (closed < 0)
                snprintf(out, sizeof out, "%s", ref);
            else
                snprintf(out, sizeof out, "%s/closed%d-%d%s", dir, closed, f, grid ? ".png" : "");
            const char *args[] = {"generate", "--model", ckpt, "--per-class", "40", "--out",
                                  out, "--format", formats[f], "--sample", "--device", "cpu",
                                  "--batch", "7", NULL};
            int rc = wait_exit(spawn_closing(args, closed));
            cr_assert_eq(rc, 0, "--format %s with fd %d closed: exit %d", formats[f], closed,
                         rc);
            if (closed < 0) continue;
            char what[64];
            snprintf(what, sizeof what, "--format %s, fd %d closed", formats[f], closed);
            if (grid) {
                size_t sa, sb;
                uint8_t *x = test_read_file(ref, &sa), *y = test_read_file(out, &sb);
                cr_assert(x && y && sa == sb && memcmp(x, y, sa) == 0, "%s: the grid differs",
                          what);
                free(x);
                free(y);
            } else {
                expect_same_files(ref, out, what);
            }
        }
    }
}

/* The library itself, in a process whose fd 0 is closed: the data set's first stream
 * gets descriptor 0 and must be closed and fsynced like any other. */
Test(gen_output, the_library_writes_whole_files_on_descriptor_0) {
    cv_checkpoint ck;
    cv_err err;
    cr_assert_eq(cv_checkpoint_load(ckpt, &ck, &err), CV_OK, "%s", err.msg);
    cv_backend *be;
    cr_assert_eq(cv_backend_open("cpu", NULL, &be, &err), CV_OK, "%s", err.msg);
    cv_model m;
    cr_assert_eq(cv_model_from_checkpoint(be, &ck, &m, &err), CV_OK, "%s", err.msg);
    cv_workspace ws;
    cr_assert_eq(cv_workspace_create(&m, cv_generate_block_rows(&m), &ws, &err), CV_OK);
    const cv_gen_format formats[] = {CV_FMT_IDX, CV_FMT_IDX_GZ, CV_FMT_NPY};
    for (int f = 0; f < 3; f++) {
        char ref[4300], out[4300];
        snprintf(ref, sizeof ref, "%s/lib-ref-%d", dir, f);
        snprintf(out, sizeof out, "%s/lib-fd0-%d", dir, f);
        cv_generate_options o = {.cond = {.n_classes = 3, .classes = {0, 1, 2}}, .per = 50,
                                 .format = formats[f], .mean = false, .seed = 4, .batch = 9,
                                 .out = ref, .checkpoint = ckpt};
        cv_generate_result res;
        cr_assert_eq(cv_generate(&m, &ws, &o, &res, &err), CV_OK, "%s", err.msg);
        int saved = dup(0);
        close(0);
        o.out = out;
        cv_status st = cv_generate(&m, &ws, &o, &res, &err);
        dup2(saved, 0);
        close(saved);
        cr_assert_eq(st, CV_OK, "%s", err.msg);
        expect_same_files(ref, out, cv_gen_format_name(formats[f]));
    }
    cv_workspace_destroy(&m, &ws);
    cv_model_destroy(&m);
    be->destroy(be);
    cv_checkpoint_free(&ck);
}
