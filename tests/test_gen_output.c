/* test_gen_output.c: what `cvae generate` leaves on disk whatever happens around it: the
 * same bytes with standard input, output or error closed (cron, systemd units), an
 * existing empty --out (a mount point) filled in place, a signal that takes back what the
 * command made, and leftovers of dead processes swept before a new set is written. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sched.h>
#include <string.h>
#include <sys/mount.h>
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
    pid_t pid = test_fork();
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

/* cvae decode streams decoded.npy beside the images: with a standard descriptor closed
 * that stream may get its number, and every file must still come out whole. */
Test(gen_output, decode_is_whole_with_a_standard_descriptor_closed) {
    float z[37 * 3]; /* the setup's latent width is 3 */
    for (int i = 0; i < 37 * 3; i++) z[i] = (float)((i * 7919) % 101) / 25.0f - 2.0f;
    char zpath[4300];
    snprintf(zpath, sizeof zpath, "%s/z.npy", dir);
    test_write_npy(zpath, CV_NPY_F32, 2, (const int64_t[]){37, 3}, z);
    char ref[4300];
    snprintf(ref, sizeof ref, "%s/decoded-ref", dir);
    for (int closed = -1; closed < 3; closed++) {
        char out[4300];
        if (closed < 0)
            snprintf(out, sizeof out, "%s", ref);
        else
            snprintf(out, sizeof out, "%s/decoded-closed%d", dir, closed);
        const char *args[] = {"decode", "--model", ckpt, "--z", zpath, "--class", "2", "--out",
                              out, "--device", "cpu", "--batch", "7", NULL};
        int rc = wait_exit(spawn_closing(args, closed));
        cr_assert_eq(rc, 0, "decode with fd %d closed: exit %d", closed, rc);
        if (closed < 0) continue;
        char what[64];
        snprintf(what, sizeof what, "decode, fd %d closed", closed);
        expect_same_files(ref, out, what);
    }
    /* decoding draws nothing: its manifest names the latents and holds no seed */
    size_t n;
    char *manifest = (char *)test_read_file(test_path_in(ref, "manifest.json"), &n);
    cr_assert(strstr(manifest, "\"latents\": \"") && !strstr(manifest, "\"seed\""), "%s",
              manifest);
    free(manifest);
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

/* An existing empty --out is filled in place, not replaced: a mount point (a container's
 * volume) cannot be renamed over, and the folder a user made keeps its identity. */
Test(gen_output, an_existing_empty_out_is_filled_in_place) {
    char ref[4300], out[4300];
    snprintf(ref, sizeof ref, "%s/fresh", dir);
    snprintf(out, sizeof out, "%s/existing", dir);
    cr_assert_eq(mkdir(out, 0777), 0);
    struct stat before, after;
    cr_assert_eq(stat(out, &before), 0);
    for (int k = 0; k < 2; k++) {
        const char *args[] = {"generate", "--model", ckpt, "--per-class", "5", "--out",
                              k ? out : ref, "--format", "png", "--device", "cpu", NULL};
        cr_assert_eq(wait_exit(spawn_closing(args, -1)), 0, "generate into %s failed",
                     k ? out : ref);
    }
    cr_assert_eq(stat(out, &after), 0);
    cr_assert(before.st_ino == after.st_ino && before.st_dev == after.st_dev,
              "%s was replaced, not filled", out);
    expect_same_files(ref, out, "a set filled in place");
}

/* The folders of a path made by `cvae train` or `cvae generate` on a mount point of a
 * fresh tmpfs, in a mount namespace of this test's own: 0 when both wrote their files,
 * 77 where no namespace or mount can be had, else the step that failed. */
static int run_on_a_mount_point(const char *point) {
    pid_t pid = test_fork();
    if (pid == 0) {
        if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
            mkdir(point, 0777) != 0 || mount("cvae-test", point, "tmpfs", 0, NULL) != 0)
            _exit(77);
        char set[4400], run[4400], data[4300];
        snprintf(set, sizeof set, "%s/set", point);
        snprintf(run, sizeof run, "%s/run", point);
        snprintf(data, sizeof data, "%s/data", dir);
        mkdir(set, 0777);
        mkdir(run, 0777);
        /* each folder a mount point of its own, as `-v host:/out` makes it */
        if (mount("cvae-set", set, "tmpfs", 0, NULL) || mount("cvae-run", run, "tmpfs", 0, NULL))
            _exit(77);
        const char *gen[] = {"generate", "--model", ckpt, "--per-class", "3", "--out", set,
                             "--device", "cpu", NULL};
        const char *train[] = {"train", "--data", data, "--out", run, "--epochs", "1",
                               "--hidden", "8", "--latent", "2", "--device", "cpu", NULL};
        if (wait_exit(spawn_closing(gen, -1)) != 0) _exit(1);
        if (!cv_path_exists(test_path_in(set, "manifest.json"))) _exit(2);
        if (wait_exit(spawn_closing(train, -1)) != 0) _exit(3);
        if (!cv_path_exists(test_path_in(run, "model.ckpt"))) _exit(4);
        _exit(0);
    }
    return wait_exit(pid);
}

Test(gen_output, a_mount_point_as_out_receives_the_set_and_the_run) {
    char point[4300];
    snprintf(point, sizeof point, "%s/mnt", dir);
    int rc = run_on_a_mount_point(point);
    if (rc == 77) cr_skip_test("no mount namespace here (needs CAP_SYS_ADMIN)");
    cr_assert_eq(rc, 0, "on a mount point: %s",
                 rc == 1 ? "generate failed" : rc == 2 ? "generate wrote no manifest"
                 : rc == 3 ? "train failed" : "train wrote no checkpoint");
}

/* Waits (up to 60 s) until path exists; false if it never does. */
static bool wait_for(const char *path) {
    for (int i = 0; i < 12000; i++) {
        if (cv_path_exists(path)) return true;
        usleep(5000);
    }
    return false;
}

/* A long generation signalled once its temporary folder exists: it exits 128 + the
 * signal and leaves what it found, and nothing it made (the folders above a new --out
 * included). */
Test(gen_output, a_signal_takes_back_what_generate_made) {
    const int signals[] = {SIGTERM, SIGINT, SIGINT};
    for (int k = 0; k < 3; k++) {
        const bool in_place = k == 2;
        char top[4300], out[4400], tmp[4500];
        snprintf(top, sizeof top, "%s/sig%d", dir, k);
        snprintf(out, sizeof out, "%s%s", top, in_place ? "" : "/new/set");
        if (in_place) mkdir(out, 0777);
        const char *args[] = {"generate", "--model", ckpt, "--per-class", "20000000", "--out",
                              out, "--format", k ? "idx.gz" : "npy", "--device", "cpu",
                              "--batch", "4096", NULL};
        pid_t pid = spawn_closing(args, -1);
        snprintf(tmp, sizeof tmp, in_place ? "%s/.tmp.%ld" : "%s.tmp.%ld", out, (long)pid);
        cr_assert(wait_for(tmp), "case %d: %s never appeared", k, tmp);
        kill(pid, signals[k]);
        int rc = wait_exit(pid);
        cr_assert_eq(rc, 128 + signals[k], "case %d: exit %d", k, rc);
        if (in_place) {
            static char names[8][512];
            cr_assert_eq(list_files(out, "", names, 8), 0, "case %d: %s holds files", k, out);
            cr_assert(!cv_path_exists(tmp), "case %d: %s was left", k, tmp);
        } else {
            cr_assert(!cv_path_exists(top), "case %d: %s was left", k, top);
        }
    }
}

/* A pid a container reuses: a leftover OUT.tmp.PID of an earlier process that had this
 * run's pid used to fail it ("OUT: cannot create the output folder: File exists", naming a
 * folder that did not exist). Leftovers of dead pids go too; a live process's stay. */
Test(gen_output, leftovers_of_dead_processes_are_swept_live_ones_kept) {
    char out[4300], grid[4300], mine[4400], live[4400], dead_grid[4400];
    snprintf(out, sizeof out, "%s/set", dir);
    snprintf(grid, sizeof grid, "%s/g.png", dir);
    const pid_t gone = test_dead_pid();
    char dead[4400];
    snprintf(dead, sizeof dead, "%s.tmp.%ld", out, (long)gone);
    snprintf(live, sizeof live, "%s.tmp.%ld", out, (long)getpid());
    snprintf(dead_grid, sizeof dead_grid, "%s.tmp.%ld", grid, (long)gone);
    mkdir(dead, 0777);
    mkdir(live, 0777);
    test_write_file(test_path_in(dead, "images-idx3-ubyte"), "partial", 7);
    test_write_file(dead_grid, "partial", 7);
    pid_t pid = test_fork();
    if (pid == 0) { /* this pid's leftover, then cvae itself under the same pid */
        snprintf(mine, sizeof mine, "%s.tmp.%ld", out, (long)getpid());
        mkdir(mine, 0777);
        test_write_file(test_path_in(mine, "labels-idx1-ubyte"), "partial", 7);
        int devnull = open("/dev/null", O_RDWR);
        dup2(devnull, 1);
        execl(getenv("CVAE_BIN"), "cvae", "generate", "--model", ckpt, "--per-class", "4",
              "--out", out, "--device", "cpu", (char *)NULL);
        _exit(127);
    }
    int rc = wait_exit(pid);
    cr_assert_eq(rc, 0, "generate failed (exit %d) over a leftover of its own pid", rc);
    snprintf(mine, sizeof mine, "%s.tmp.%ld", out, (long)pid);
    cr_assert(!cv_path_exists(mine), "%s was not swept", mine);
    cr_assert(!cv_path_exists(dead), "%s was not swept", dead);
    cr_assert(cv_path_exists(live), "a live process's %s was removed", live);
    const char *args[] = {"generate", "--model", ckpt, "--format", "grid", "--out", grid,
                          "--device", "cpu", NULL};
    cr_assert_eq(wait_exit(spawn_closing(args, -1)), 0);
    cr_assert(!cv_path_exists(dead_grid), "%s was not swept", dead_grid);
}

/* Every single-file output (encode's .npy, export's files, report's page, the metrics
 * file, a grid) is prepared by cv_prepare_output_file: the temporaries that dead processes
 * left of that file go then. encode, export and report left theirs of a killed run for
 * good; only generate's grids and the metrics file were swept. Another file's leftover
 * and a live process's stay. */
Test(gen_output, preparing_an_output_file_sweeps_its_dead_leftovers) {
    char path[4300], dead[4400], live[4400], other[4400], made[CV_PATH_MAX];
    snprintf(path, sizeof path, "%s/latents.npy", dir);
    const pid_t gone = test_dead_pid();
    snprintf(dead, sizeof dead, "%s.tmp.%ld", path, (long)gone);
    snprintf(live, sizeof live, "%s.tmp.%ld", path, (long)getppid());
    snprintf(other, sizeof other, "%s/other.npy.tmp.%ld", dir, (long)gone);
    test_write_file(dead, "partial", 7);
    test_write_file(live, "partial", 7);
    test_write_file(other, "partial", 7);
    cv_err err;
    cr_assert_eq(cv_prepare_output_file(path, made, &err), CV_OK, "%s", err.msg);
    cr_assert(!cv_path_exists(dead), "%s was not swept", dead);
    cr_assert(cv_path_exists(live), "a live process's %s was removed", live);
    cr_assert(cv_path_exists(other), "another file's %s was removed", other);
    cr_assert(!cv_path_exists(path), "preparing %s made it", path);
    /* a bare name: its folder is the working one */
    cr_assert_eq(chdir(dir), 0);
    snprintf(dead, sizeof dead, "bare.npy.tmp.%ld", (long)gone);
    test_write_file(dead, "partial", 7);
    cr_assert_eq(cv_prepare_output_file("bare.npy", made, &err), CV_OK, "%s", err.msg);
    cr_assert(!cv_path_exists(dead), "%s was not swept", dead);
}
