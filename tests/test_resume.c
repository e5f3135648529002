/* test_resume.c: nothing lost, nothing crashes. A run killed with SIGKILL at random
 * moments (mid-epoch, mid-checkpoint-write) and resumed from its last checkpoint ends
 * bitwise equal to the run never interrupted, and so do runs on condition vectors and on
 * colour images (NumPy data) stopped and resumed; SIGINT and SIGTERM write a mid-epoch
 * checkpoint; a NaN stops training without replacing the last good checkpoint; a full
 * disk is one clear error with the previous checkpoint intact. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "cvae/checkpoint.h"
#include "util/fileio.h"
#include "cvae/npy.h"
#include "helpers.h"

static char *dir;
static char data[4200];

static void setup(void) {
    dir = test_tmpdir();
    snprintf(data, sizeof data, "%s/data", dir);
    mkdir(data, 0777);
    test_write_dataset(data, 3000, 200, 12, 12, 4, false, 77);
}
static void teardown(void) {
    test_rmtree(dir);
    free(dir);
}

TestSuite(resume, .init = setup, .fini = teardown, .timeout = 240);

/* argv of a training run on folder into out (4 epochs, a checkpoint after each), with
 * --resume when given, then the NULL-terminated extra flags (or none). */
static int train_args_on(const char **argv, const char *folder, const char *out,
                         const char *resume, const char *const *extra) {
    static const char *base[] = {"train", "--data", NULL, "--out", NULL, "--epochs", "4",
                                 "--checkpoint-every", "1", "--hidden", "96", "--latent", "6",
                                 "--batch", "32", "--device", "cpu", "--seed", "3"};
    int n = 0;
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++) argv[n++] = base[i];
    argv[2] = folder;
    argv[4] = out;
    if (resume) {
        argv[n++] = "--resume";
        argv[n++] = resume;
    }
    for (int i = 0; extra && extra[i]; i++) argv[n++] = extra[i];
    argv[n] = NULL;
    return n;
}

/* The same on the IDX data of the suite, without extra flags. */
static int train_args(const char **argv, const char *out, const char *resume) {
    return train_args_on(argv, data, out, resume, NULL);
}

/* Starts cvae with argv (argv[0] is the command), stdout to out_path and stderr to
 * err_path (NULL: /dev/null); optional file size limit in bytes (0: none). */
static pid_t spawn_logged(const char **argv, const char *out_path, const char *err_path,
                          long fsize_limit) {
    pid_t pid = test_fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        int fo = out_path ? open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0666) : devnull;
        int fe = err_path ? open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0666) : devnull;
        dup2(fo, 1);
        dup2(fe, 2);
        if (fsize_limit) {
            struct rlimit rl = {(rlim_t)fsize_limit, (rlim_t)fsize_limit};
            setrlimit(RLIMIT_FSIZE, &rl);
            signal(SIGXFSZ, SIG_IGN); /* writes then fail with EFBIG, as on a full disk */
        }
        const char *full[64] = {"cvae"};
        for (int i = 0; argv[i]; i++) full[i + 1] = argv[i];
        execv(getenv("CVAE_BIN"), (char *const *)full);
        _exit(127);
    }
    return pid;
}

static pid_t spawn(const char **argv, long fsize_limit) {
    return spawn_logged(argv, NULL, NULL, fsize_limit);
}

static int wait_status(pid_t pid) {
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

/* Waits (up to 20 s) for path to exist: a run's first checkpoint says it is training, its
 * signal handlers installed. */
static void wait_until_exists(const char *path) {
    for (int i = 0; i < 2000 && !cv_path_exists(path); i++) usleep(10000);
    cr_assert(cv_path_exists(path), "%s never appeared", path);
}

/* A finished one-epoch run in dir/NAME: its folder and checkpoint paths. */
static void one_epoch_run(const char *name, char out[4300], char ckpt[4400]) {
    snprintf(out, 4300, "%s/%s", dir, name);
    snprintf(ckpt, 4400, "%s/model.ckpt", out);
    const char *argv[32];
    train_args(argv, out, NULL);
    argv[6] = "1";
    cr_assert_eq(wait_status(spawn(argv, 0)), 0, "the one-epoch run failed");
}

static uint8_t *reference_checkpoint(size_t *size) {
    char out[4300], ckpt[4400];
    snprintf(out, sizeof out, "%s/reference", dir);
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", out);
    const char *argv[32];
    train_args(argv, out, NULL);
    cr_assert_eq(wait_status(spawn(argv, 0)), 0, "the reference run failed");
    return test_read_file(ckpt, size);
}

Test(resume, sigkill_at_random_moments_then_resume_is_bitwise_exact) {
    test_rng r = test_rng_new("kill points");
    size_t ref_size;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint8_t *ref = reference_checkpoint(&ref_size);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    const double whole_run = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
    char out[4300], ckpt[4400];
    char errpath[4400];
    snprintf(errpath, sizeof errpath, "%s/stderr", dir);
    int kills = 0, rc = -1, restarts = 0;
    double scale = whole_run; /* the uninterrupted run's time; halved after each restart */
    snprintf(out, sizeof out, "%s/killed%d", dir, restarts);
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", out);
    for (int attempt = 0; attempt < 60 && rc != 0; attempt++) {
        const char *argv[32];
        train_args(argv, out, cv_path_exists(ckpt) ? ckpt : NULL);
        pid_t pid = spawn_logged(argv, NULL, errpath, 0);
        /* kill somewhere in the first 10% to 70% of an uninterrupted run's time: before,
         * during and after epochs and their checkpoint writes, on a fast machine or a slow */
        usleep((useconds_t)(1e6 * scale * test_uniform(&r, 0.1, 0.7)));
        kill(pid, SIGKILL); /* a process that already ended is a zombie: this still succeeds */
        rc = wait_status(pid);
        if (rc == -SIGKILL) kills++;
        size_t n;
        char *e = (char *)test_read_file(errpath, &n);
        /* killed after its last checkpoint (while drawing the pictures): training is done,
         * and a resume rightly refuses to add nothing */
        if (rc == 2 && e && strstr(e, "already trained 4 epochs")) rc = 0;
        if (rc != 0 && rc != -SIGKILL)
            cr_assert_fail("a resumed run failed with exit %d: %s", rc, e ? e : "");
        free(e);
        if (rc == 0 && kills < 2) {
            /* the machine sped up since the reference run (a busy CI machine): the run ended
             * before enough kills; start over in a new folder, killing sooner */
            restarts++;
            kills = 0;
            rc = -1;
            scale /= 2;
            snprintf(out, sizeof out, "%s/killed%d", dir, restarts);
            snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", out);
        }
    }
    if (rc != 0) { /* the last resume must be allowed to finish */
        const char *argv[32];
        train_args(argv, out, cv_path_exists(ckpt) ? ckpt : NULL);
        rc = wait_status(spawn(argv, 0));
    }
    cr_assert_eq(rc, 0);
    cr_assert_geq(kills, 2, "only %d kills landed", kills);
    cr_log_info("finished after %d kills", kills);
    size_t size;
    uint8_t *got = test_read_file(ckpt, &size);
    cr_assert(size == ref_size && memcmp(got, ref, size) == 0,
              "the resumed run's checkpoint differs from the uninterrupted run's");
    free(got);
    free(ref);
}

static void interrupt_with(int sig, int expect_rc) {
    size_t ref_size;
    uint8_t *ref = reference_checkpoint(&ref_size);
    char out[4300], ckpt[4400];
    snprintf(out, sizeof out, "%s/stopped", dir);
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", out);
    const char *argv[32];
    train_args(argv, out, NULL);
    char *o, *e;
    /* with stderr captured: the one line saying where the checkpoint is */
    pid_t pid = spawn(argv, 0);
    wait_until_exists(ckpt);
    kill(pid, sig);
    int rc = wait_status(pid);
    if (rc == 0) cr_skip_test("the run ended before the signal landed; machine too fast");
    cr_assert_eq(rc, expect_rc, "exit %d after signal %d", rc, sig);
    cv_checkpoint ck;
    cv_err err;
    cr_assert_eq(cv_checkpoint_load(ckpt, &ck, &err), CV_OK, "%s", err.msg);
    cr_log_info("stopped at epoch %d + %d images, step %lld", ck.epoch, ck.position,
                (long long)ck.step);
    cv_checkpoint_free(&ck);
    const char *argv2[32];
    train_args(argv2, out, ckpt);
    cr_assert_eq(test_run_cvae(&o, &e, argv2), 0, "resume failed: %s", e);
    cr_assert(strstr(o, "resuming") != NULL, "%s", o);
    free(o);
    free(e);
    size_t size;
    uint8_t *got = test_read_file(ckpt, &size);
    cr_assert(size == ref_size && memcmp(got, ref, size) == 0,
              "resuming after signal %d did not reproduce the uninterrupted run", sig);
    free(got);
    free(ref);
}

Test(resume, sigint_checkpoints_mid_epoch_and_exits_130) { interrupt_with(SIGINT, 130); }
Test(resume, sigterm_checkpoints_mid_epoch_and_exits_143) { interrupt_with(SIGTERM, 143); }

Test(resume, the_signal_line_says_where_the_checkpoint_is) {
    char out[4300];
    snprintf(out, sizeof out, "%s/line", dir);
    const char *argv[32];
    train_args(argv, out, NULL);
    char errpath[4400];
    snprintf(errpath, sizeof errpath, "%s/stderr", dir);
    pid_t pid = spawn_logged(argv, NULL, errpath, 0);
    char ckpt[4400];
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", out);
    wait_until_exists(ckpt);
    kill(pid, SIGINT);
    int rc = wait_status(pid);
    if (rc == 0) cr_skip_test("the run ended before the signal landed");
    size_t n;
    char *e = (char *)test_read_file(errpath, &n);
    cr_assert_eq(test_count_lines(e), 1, "%s", e);
    cr_assert(strstr(e, "interrupted by SIGINT") && strstr(e, "--resume") &&
              strstr(e, "model.ckpt"), "%s", e);
    free(e);
}

/* A copy of a checkpoint with parameter `index` set to NaN (the CRC fixed up). */
static void poison(const char *from, const char *to, size_t index, size_t n_params) {
    size_t size;
    uint8_t *b = test_read_file(from, &size);
    const size_t header = size - 4 - 3 * n_params * sizeof(float); /* params come first */
    float nan = NAN;
    memcpy(b + header + 4 * index, &nan, 4);
    uint32_t c = (uint32_t)crc32(0L, b, (uInt)(size - 4));
    for (int i = 0; i < 4; i++) b[size - 4 + i] = (uint8_t)(c >> (8 * i));
    test_write_file(to, b, size);
    free(b);
}

Test(resume, a_nan_stops_training_and_keeps_the_last_good_checkpoint) {
    char out[4300], ckpt[4400], bad[4400];
    one_epoch_run("run", out, ckpt);
    snprintf(bad, sizeof bad, "%s/poisoned.ckpt", dir);
    /* the decoder's last bias: every logit of pixel 0 becomes NaN */
    cv_checkpoint ck;
    cv_err err;
    cr_assert_eq(cv_checkpoint_load(ckpt, &ck, &err), CV_OK);
    size_t last_bias = ck.n_params - 144, n_params = ck.n_params;
    int64_t step = ck.step;
    cv_checkpoint_free(&ck);
    poison(ckpt, bad, last_bias, n_params);
    size_t good_size;
    uint8_t *good = test_read_file(ckpt, &good_size);

    /* resume the poisoned copy into the same folder: it must stop at its first step and
     * leave the good checkpoint there as it was */
    char *o, *e;
    const char *argv[32];
    train_args(argv, out, bad);
    const char *args2[40];
    int k = 0;
    for (; argv[k]; k++) args2[k] = argv[k];
    args2[k] = NULL;
    /* --out holds a checkpoint that is not the one resumed: write elsewhere instead */
    char out2[4300];
    snprintf(out2, sizeof out2, "%s/run2", dir);
    args2[4] = out2;
    int rc = test_run_cvae(&o, &e, args2);
    cr_assert_eq(rc, 1, "exit %d: %s", rc, e);
    cr_assert_eq(test_count_lines(e), 1, "%s", e);
    char want[64];
    snprintf(want, sizeof want, "step %lld: NaN or Inf in the loss", (long long)step);
    cr_assert(strstr(e, want) != NULL, "expected '%s' in %s", want, e);
    char ckpt2[4400];
    snprintf(ckpt2, sizeof ckpt2, "%s/model.ckpt", out2);
    cr_assert(!cv_path_exists(ckpt2), "a poisoned run wrote a checkpoint");
    free(o);
    free(e);

    /* --skip-nonfinite 5: the sixth bad step stops it */
    const char *more[] = {"--skip-nonfinite", "5"};
    args2[k] = more[0];
    args2[k + 1] = more[1];
    args2[k + 2] = NULL;
    rc = test_run_cvae(&o, &e, args2);
    cr_assert_eq(rc, 1, "exit %d: %s", rc, e);
    cr_assert(strstr(e, "(6 such steps, --skip-nonfinite allows 5)"), "%s", e);
    /* the step named is the first bad one, not the sixth where the run stopped: it says so
     * (it read "step S: ...", as if the run had stopped at the first) */
    snprintf(want, sizeof want, "step %lld (the first such step): NaN or Inf in the loss",
             (long long)step);
    cr_assert(strstr(e, want) != NULL, "expected '%s' in %s", want, e);
    cr_assert(!cv_path_exists(ckpt2));
    free(o);
    free(e);

    /* allowed to skip every step, it still refuses to save a NaN model */
    args2[k + 1] = "100000";
    rc = test_run_cvae(&o, &e, args2);
    cr_assert_eq(rc, 1, "exit %d: %s", rc, e);
    cr_assert(strstr(e, "holds a NaN or Inf") && strstr(e, "decoder output layer bias"), "%s", e);
    cr_assert(!cv_path_exists(ckpt2));
    free(o);
    free(e);

    size_t now_size;
    uint8_t *now = test_read_file(ckpt, &now_size);
    cr_assert(now_size == good_size && memcmp(now, good, now_size) == 0);
    free(now);
    free(good);
}

Test(resume, a_full_disk_is_one_error_and_the_old_checkpoint_survives) {
    char out[4300], ckpt[4400];
    one_epoch_run("run", out, ckpt);
    size_t before;
    uint8_t *old = test_read_file(ckpt, &before);
    /* resume for a second epoch with files limited to 4 KiB: the new checkpoint cannot be
     * written */
    char errpath[4400];
    snprintf(errpath, sizeof errpath, "%s/stderr", dir);
    const char *argv[32];
    train_args(argv, out, ckpt);
    argv[6] = "2";
    pid_t pid = spawn_logged(argv, NULL, errpath, 4096);
    int rc = wait_status(pid);
    size_t n;
    char *e = (char *)test_read_file(errpath, &n);
    cr_assert_eq(rc, 1, "exit %d: %s", rc, e);
    cr_assert_eq(test_count_lines(e), 1, "%s", e);
    cr_assert(strstr(e, "model.ckpt") && strstr(e, "write failed"), "%s", e);
    size_t after;
    uint8_t *now = test_read_file(ckpt, &after);
    cr_assert(before == after && memcmp(old, now, before) == 0, "the old checkpoint changed");
    /* and no temporary file is left beside it */
    char tmp[4500];
    snprintf(tmp, sizeof tmp, "%s/model.ckpt.tmp.%d", out, (int)pid);
    cr_assert(!cv_path_exists(tmp), "%s was left behind", tmp);
    free(e);
    free(old);
    free(now);
}

Test(resume, resume_refuses_other_flags_and_finished_runs) {
    char out[4300], ckpt[4400];
    one_epoch_run("run", out, ckpt);
    char *o, *e;
    const char *argv[32];
    train_args(argv, out, ckpt);
    argv[12] = "7"; /* --latent 6 -> 7 */
    cr_assert_eq(test_run_cvae(&o, &e, argv), 2, "%s", e);
    cr_assert(strstr(e, "--latent differs from the checkpoint's"), "%s", e);
    free(o);
    free(e);
    train_args(argv, out, ckpt);
    argv[6] = "1";
    cr_assert_eq(test_run_cvae(&o, &e, argv), 2, "%s", e);
    cr_assert(strstr(e, "already trained 1 epoch;"), "%s", e);
    free(o);
    free(e);
}

/* One step an epoch: a signal always lands in an epoch's last step, after which the
 * position would be the whole set. The run must stop at the epoch's end with a checkpoint
 * that resumes. */
Test(resume, a_signal_in_an_epochs_last_step_leaves_a_resumable_checkpoint) {
    char small[4300], out[4300], ckpt[4400];
    snprintf(small, sizeof small, "%s/one-batch", dir);
    snprintf(out, sizeof out, "%s/last-step", dir);
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", out);
    mkdir(small, 0777);
    test_write_dataset(small, 32, 0, 12, 12, 4, false, 78);
    const char *argv[] = {"train", "--data", small, "--out", out, "--epochs", "1000000",
                          "--batch", "32", "--hidden", "256", "--latent", "6", "--device",
                          "cpu", "--checkpoint-every", "1", NULL};
    pid_t pid = spawn(argv, 0);
    wait_until_exists(ckpt);
    kill(pid, SIGINT);
    cr_assert_eq(wait_status(pid), 130);
    cv_checkpoint ck;
    cv_err err;
    cr_assert_eq(cv_checkpoint_load(ckpt, &ck, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(ck.position, 0, "stopped %d images into an epoch of 32", ck.position);
    char epochs[32];
    snprintf(epochs, sizeof epochs, "%d", ck.epoch + 2);
    cv_checkpoint_free(&ck);
    const char *again[] = {"train", "--data", small, "--out", out, "--epochs", epochs,
                           "--batch", "32", "--hidden", "256", "--latent", "6", "--device",
                           "cpu", "--resume", ckpt, NULL};
    char *o, *e;
    cr_assert_eq(test_run_cvae(&o, &e, again), 0, "the resume failed: %s", e);
    free(o);
    free(e);
}

/* A signal after the last step (here, in the one epoch's test evaluation, which is most of
 * the run) stops nothing: the run completes, writes its final checkpoint, says so and
 * exits 0. */
Test(resume, a_signal_after_the_last_step_lets_the_run_complete) {
    char folder[4300], out[4300], ckpt[4400], outpath[4400];
    snprintf(folder, sizeof folder, "%s/eval-heavy", dir);
    snprintf(out, sizeof out, "%s/late", dir);
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", out);
    snprintf(outpath, sizeof outpath, "%s/late.stdout", dir);
    mkdir(folder, 0777);
    test_write_dataset(folder, 32, 20000, 28, 28, 4, false, 79);
    const char *argv[] = {"train", "--data", folder, "--out", out, "--epochs", "1",
                          "--batch", "32", "--hidden", "2048", "--latent", "6", "--device",
                          "cpu", NULL};
    pid_t pid = spawn_logged(argv, outpath, NULL, 0);
    /* the header is flushed when training starts; its one step takes milliseconds */
    bool started = false;
    for (int i = 0; i < 4000 && !started; i++) {
        size_t n;
        char *text = (char *)test_read_file(outpath, &n);
        started = text && strstr(text, "objective:");
        free(text);
        if (!started) usleep(5000);
    }
    cr_assert(started, "the run never printed its header");
    usleep(20000);
    kill(pid, SIGTERM);
    cr_assert_eq(wait_status(pid), 0);
    size_t n;
    char *text = (char *)test_read_file(outpath, &n);
    cr_assert(text && strstr(text, "note: SIGTERM came after the last step") &&
              strstr(text, "final test -ELBO"), "%s", text ? text : "(no stdout)");
    free(text);
    cv_checkpoint ck;
    cv_err err;
    cr_assert_eq(cv_checkpoint_load(ckpt, &ck, &err), CV_OK, "%s", err.msg);
    cr_assert(ck.epoch == 1 && ck.position == 0, "epoch %d, position %d", ck.epoch,
              ck.position);
    cv_checkpoint_free(&ck);
}

/* The value of "key" in each line of a metrics file, as printed, into vals (the caller
 * frees each). Returns the count. */
static int metric_texts(const char *path, const char *key, char **vals, int max) {
    size_t size;
    char *text = (char *)test_read_file(path, &size);
    cr_assert(text, "no metrics file %s", path);
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    int n = 0;
    for (char *p = text; n < max && (p = strstr(p, pat)) != NULL; n++) {
        p += strlen(pat);
        size_t len = strcspn(p, ",}");
        vals[n] = strndup(p, len);
    }
    free(text);
    return n;
}

/* The partial epoch's sums (loss, rows, gradient norms and steps) travel in the
 * checkpoint, so the epoch a resume finishes reports what the uninterrupted one did. */
Test(resume, a_resumed_epoch_reports_the_uninterrupted_loss_and_gradient_norm) {
    char out[2][4300], metrics[2][4400];
    const char *extra[] = {"--clip-grad", "1", "--metrics", NULL};
    for (int k = 0; k < 2; k++) {
        snprintf(out[k], sizeof out[k], "%s/%s", dir, k ? "stopped" : "whole");
        snprintf(metrics[k], sizeof metrics[k], "%s/%s.jsonl", dir, k ? "stopped" : "whole");
    }
    const char *argv[40];
    int n = train_args(argv, out[0], NULL);
    argv[n++] = extra[0];
    argv[n++] = extra[1];
    argv[n++] = extra[2];
    argv[n++] = metrics[0];
    argv[n] = NULL;
    cr_assert_eq(wait_status(spawn(argv, 0)), 0, "the uninterrupted run failed");

    char ckpt[4400];
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", out[1]);
    argv[4] = out[1];
    argv[n - 1] = metrics[1];
    /* the signal goes a little after epoch 1's checkpoint appears, so that it lands inside
     * epoch 2; one that lands at an epoch's end stops there (position 0) and tests nothing,
     * so that attempt is thrown away and the next one waits longer */
    int position = 0;
    for (int attempt = 0; attempt < 8 && position == 0; attempt++) {
        test_rmtree(out[1]);
        unlink(metrics[1]);
        pid_t pid = spawn(argv, 0);
        for (int i = 0; i < 400 && !cv_path_exists(ckpt); i++) usleep(10000);
        usleep((useconds_t)(20000 + 15000 * attempt));
        kill(pid, SIGINT);
        int rc = wait_status(pid);
        if (rc == 0) cr_skip_test("the run ended before the signal landed; machine too fast");
        cr_assert_eq(rc, 130);
        cv_checkpoint ck;
        cv_err err;
        cr_assert_eq(cv_checkpoint_load(ckpt, &ck, &err), CV_OK, "%s", err.msg);
        position = ck.position;
        cv_checkpoint_free(&ck);
    }
    cr_assert_gt(position, 0, "every signal landed at an epoch's end");
    argv[n++] = "--resume";
    argv[n++] = ckpt;
    argv[n] = NULL;
    cr_assert_eq(wait_status(spawn(argv, 0)), 0, "the resumed run failed");

    const char *keys[] = {"train_loss", "grad_norm", "test_neg_elbo"};
    for (int k = 0; k < 3; k++) {
        char *want[8], *got[8];
        int nw = metric_texts(metrics[0], keys[k], want, 8);
        int ng = metric_texts(metrics[1], keys[k], got, 8);
        cr_assert_eq(nw, 4);
        cr_assert_eq(ng, 4, "the resumed metrics file has %d lines", ng);
        for (int i = 0; i < 4; i++) {
            cr_assert_str_eq(got[i], want[i], "epoch %d: %s %s after the resume, %s without",
                             i + 1, keys[k], got[i], want[i]);
            free(got[i]);
            free(want[i]);
        }
    }
}

/* The gradient norm under --clip-grad is summed in a fixed order: the same checkpoint
 * bits with one thread as with two. */
Test(resume, clipped_training_is_the_same_bits_for_one_or_two_threads) {
    uint8_t *ckpts[2];
    size_t sizes[2];
    for (int k = 0; k < 2; k++) {
        char out[4300], ckpt[4400];
        snprintf(out, sizeof out, "%s/threads%d", dir, k + 1);
        snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", out);
        const char *argv[40];
        int n = train_args(argv, out, NULL);
        argv[6] = "2";
        argv[n++] = "--clip-grad";
        argv[n++] = "1";
        argv[n] = NULL;
        setenv("OMP_NUM_THREADS", k ? "2" : "1", 1);
        cr_assert_eq(wait_status(spawn(argv, 0)), 0, "the run with %d threads failed", k + 1);
        ckpts[k] = test_read_file(ckpt, &sizes[k]);
    }
    unsetenv("OMP_NUM_THREADS");
    cr_assert(sizes[0] == sizes[1] && memcmp(ckpts[0], ckpts[1], sizes[0]) == 0,
              "--clip-grad with 1 and 2 threads gave different checkpoints");
    free(ckpts[0]);
    free(ckpts[1]);
}

/* A folder of NumPy files, a training split of 2000 and a test split of 200: with
 * vectors, grey float images 16 x 16 and condition vectors of width 5 that set their
 * brightness; else RGB byte images 8 x 8 x 3 and 4 classes that set their colour. */
static void write_npy_data(const char *folder, bool vectors) {
    test_rng r = test_rng_new("resume npy data");
    mkdir(folder, 0777);
    const int D = vectors ? 256 : 192, K = 5, splits[2] = {2000, 200};
    const char *names[2][2] = {{"train_images.npy", "test_images.npy"},
                               {vectors ? "train_conditions.npy" : "train_labels.npy",
                                vectors ? "test_conditions.npy" : "test_labels.npy"}};
    for (int s = 0; s < 2; s++) {
        const int n = splits[s];
        float *fx = malloc((size_t)n * D * sizeof(float)), *cond = malloc((size_t)n * K * 4);
        uint8_t *bx = malloc((size_t)n * D), *labels = malloc((size_t)n);
        test_fill(&r, cond, (size_t)n * K, 0, 1);
        for (int i = 0; i < n; i++) {
            labels[i] = (uint8_t)(i % 4);
            for (int j = 0; j < D; j++) {
                double level = vectors ? cond[i * K + j % K] : (labels[i] + j % 3) % 4 / 3.0;
                fx[(size_t)i * D + j] = (float)(0.8 * level + test_uniform(&r, 0, 0.2));
                bx[(size_t)i * D + j] = (uint8_t)(255 * fx[(size_t)i * D + j]);
            }
        }
        char path[4400];
        cv_err err;
        snprintf(path, sizeof path, "%s/%s", folder, names[0][s]);
        cr_assert_eq(vectors ? cv_npy_write(path, CV_NPY_F32, 3, (const int64_t[3]){n, 16, 16}, fx, &err)
                             : cv_npy_write(path, CV_NPY_U8, 4, (const int64_t[4]){n, 8, 8, 3}, bx, &err),
                     CV_OK, "%s", err.msg);
        snprintf(path, sizeof path, "%s/%s", folder, names[1][s]);
        cr_assert_eq(vectors ? cv_npy_write(path, CV_NPY_F32, 2, (const int64_t[2]){n, K}, cond, &err)
                             : cv_npy_write(path, CV_NPY_U8, 1, (const int64_t[1]){n}, labels, &err),
                     CV_OK, "%s", err.msg);
        free(fx);
        free(cond);
        free(bx);
        free(labels);
    }
}

/* Asserts that the checkpoint at path is ref (size bytes), bit for bit. */
static void expect_checkpoint(const char *path, const uint8_t *ref, size_t size, const char *how) {
    size_t n;
    uint8_t *got = test_read_file(path, &n);
    cr_assert(got && n == size && memcmp(got, ref, size) == 0,
              "%s did not reproduce the uninterrupted run", how);
    free(got);
}

/* On the NumPy data of write_npy_data, with the extra flags: a run stopped after epoch 2
 * and resumed to 4, and a run stopped by SIGINT after its first checkpoint (mid-epoch,
 * most times) and resumed, both end with the uninterrupted run's checkpoint. */
static void npy_resume_is_bitwise_exact(bool vectors, const char *const *extra) {
    char folder[4300], ref[4300], cut[4300], sig[4300], ckpt[3][4400];
    snprintf(folder, sizeof folder, "%s/npy", dir);
    write_npy_data(folder, vectors);
    snprintf(ref, sizeof ref, "%s/whole", dir);
    snprintf(cut, sizeof cut, "%s/cut", dir);
    snprintf(sig, sizeof sig, "%s/signalled", dir);
    const char *outs[3] = {ref, cut, sig};
    for (int k = 0; k < 3; k++) snprintf(ckpt[k], sizeof ckpt[k], "%s/model.ckpt", outs[k]);
    const char *argv[48];
    train_args_on(argv, folder, ref, NULL, extra);
    cr_assert_eq(wait_status(spawn(argv, 0)), 0, "the uninterrupted run failed");
    size_t size;
    uint8_t *want = test_read_file(ckpt[0], &size);

    train_args_on(argv, folder, cut, NULL, extra);
    argv[6] = "2";
    cr_assert_eq(wait_status(spawn(argv, 0)), 0, "the two-epoch run failed");
    train_args_on(argv, folder, cut, ckpt[1], extra);
    cr_assert_eq(wait_status(spawn(argv, 0)), 0, "the resume after epoch 2 failed");
    expect_checkpoint(ckpt[1], want, size, "resuming after epoch 2");

    train_args_on(argv, folder, sig, NULL, extra);
    pid_t pid = spawn(argv, 0);
    wait_until_exists(ckpt[2]);
    usleep(20000);
    kill(pid, SIGINT);
    int rc = wait_status(pid);
    cr_assert(rc == 130 || rc == 0, "exit %d after SIGINT", rc);
    cv_checkpoint ck;
    cv_err err;
    cr_assert_eq(cv_checkpoint_load(ckpt[2], &ck, &err), CV_OK, "%s", err.msg);
    cr_log_info("stopped at epoch %d + %d images", ck.epoch, ck.position);
    cv_checkpoint_free(&ck);
    if (rc == 130) {
        train_args_on(argv, folder, sig, ckpt[2], extra);
        cr_assert_eq(wait_status(spawn(argv, 0)), 0, "the resume after SIGINT failed");
    }
    expect_checkpoint(ckpt[2], want, size, "resuming after SIGINT");
    free(want);
}

Test(resume, a_run_on_condition_vectors_resumes_bitwise_exact) {
    npy_resume_is_bitwise_exact(true, (const char *[]){"--prior", "conditional",
                                                       "--likelihood", "gaussian", NULL});
}

Test(resume, a_run_on_colour_images_resumes_bitwise_exact) {
    npy_resume_is_bitwise_exact(false, (const char *[]){"--prior", "conditional", NULL});
}

/* The objectives resume exactly too: a KL warm-up rising every step across the cut and
 * the signal, with free bits; the IWAE objective with a learned sigma. */
Test(resume, a_run_with_a_per_step_warm_up_and_free_bits_resumes_bitwise_exact) {
    npy_resume_is_bitwise_exact(true, (const char *[]){"--prior", "conditional", "--kl-warmup",
                                                       "3", "--free-bits", "0.05", NULL});
}

Test(resume, an_iwae_run_with_a_learned_sigma_resumes_bitwise_exact) {
    npy_resume_is_bitwise_exact(false, (const char *[]){"--objective", "iwae", "--samples", "3",
                                                        "--likelihood", "gaussian", "--sigma",
                                                        "learned", NULL});
}
