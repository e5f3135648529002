/* test_run_saves.c: what a training run saves, and when, so that little is ever lost: a
 * checkpoint at least every --checkpoint-every T (by default a minute) at epoch ends, and
 * mid-epoch in epochs that last longer; RUNDIR/model-best.ckpt, the lowest test -ELBO so
 * far, across a resume; and a metrics or picture write that fails, which saves the
 * training before the run stops. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cvae/checkpoint.h"
#include "cvae/train.h"
#include "helpers.h"
#include "util/fileio.h"

static char *dir;

static void setup(void) { dir = test_tmpdir(); }
static void teardown(void) {
    test_rmtree(dir);
    free(dir);
}

TestSuite(run_saves, .init = setup, .fini = teardown, .timeout = 280);

static pid_t spawn_cvae(const char *const *args) {
    pid_t pid = test_fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR);
        for (int fd = 0; fd < 3; fd++) dup2(devnull, fd);
        const char *argv[64] = {"cvae"};
        for (int i = 0; args[i]; i++) argv[i + 1] = args[i];
        execv(getenv("CVAE_BIN"), (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* Waits until path is a file whose inode differs from *ino (0: any), up to 120 s, or the
 * process pid ends; its inode into *ino. */
static bool wait_for_new_file(const char *path, ino_t *ino, pid_t pid) {
    for (int i = 0; i < 24000; i++) {
        struct stat sb;
        if (stat(path, &sb) == 0 && sb.st_ino != *ino) {
            *ino = sb.st_ino;
            return true;
        }
        if (waitpid(pid, NULL, WNOHANG) == pid) return false;
        usleep(5000);
    }
    return false;
}

static void kill_and_reap(pid_t pid) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static void load(const char *path, cv_checkpoint *ck) {
    cv_err err;
    cr_assert_eq(cv_checkpoint_load(path, ck, &err), CV_OK, "%s", err.msg);
}

static char *in_dir(const char *name) { return test_path_in(dir, name); }

/* Whether process pid still runs (a zombie waiting for init to reap it does not). */
static bool still_runs(pid_t pid) {
    char path[64], state = 'Z';
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    FILE *fp = fopen(path, "r");
    if (!fp) return false;
    if (fscanf(fp, "%*d (%*[^)]) %c", &state) != 1) state = 'Z';
    fclose(fp);
    return state != 'Z';
}

/* A test that fails an assertion, or is killed at its timeout, ends its worker process
 * without reaching its kill_and_reap: the trainer it spawned (--epochs 1000000) ran on
 * forever, orphaned. A spawned cvae now dies with the process that spawned it. */
Test(run_saves, a_spawned_trainer_dies_with_the_test_that_spawned_it) {
    char data[4300], out[4300];
    snprintf(data, sizeof data, "%s", in_dir("data"));
    snprintf(out, sizeof out, "%s", in_dir("run"));
    mkdir(data, 0777);
    test_write_dataset(data, 300, 30, 6, 6, 3, false, 45);
    const char *args[] = {"train", "--data", data, "--out", out, "--epochs", "1000000",
                          "--hidden", "8", "--latent", "2", "--device", "cpu", NULL};
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t worker = fork(); /* stands for a test worker that fails after spawning */
    if (worker == 0) {
        pid_t trainer = spawn_cvae(args);
        if (write(fds[1], &trainer, sizeof trainer) != sizeof trainer) _exit(1);
        _exit(0);
    }
    pid_t trainer = 0;
    cr_assert_eq(read(fds[0], &trainer, sizeof trainer), (ssize_t)sizeof trainer);
    close(fds[0]);
    close(fds[1]);
    waitpid(worker, NULL, 0);
    bool alive = true;
    for (int i = 0; i < 2000 && (alive = still_runs(trainer)); i++) usleep(5000);
    if (alive) kill(trainer, SIGKILL); /* this test must not leave it either */
    cr_assert(!alive, "the trainer (pid %ld) outlived the test that spawned it", (long)trainer);
}

/* A run given a time (--checkpoint-every 1s) writes checkpoints as it goes, not only at its
 * end: killed with SIGKILL, it leaves one, which resumes. The default is the same rule
 * with a minute. */
Test(run_saves, a_time_interval_writes_checkpoints_as_the_run_goes) {
    char data[4300], out[4300], ckpt[4400];
    snprintf(data, sizeof data, "%s", in_dir("data"));
    snprintf(out, sizeof out, "%s", in_dir("run"));
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", out);
    mkdir(data, 0777);
    test_write_dataset(data, 300, 0, 6, 6, 3, false, 41);
    const char *args[] = {"train", "--data", data, "--out", out, "--epochs", "1000000",
                          "--hidden", "8", "--latent", "2", "--device", "cpu",
                          "--checkpoint-every", "1s", NULL};
    pid_t pid = spawn_cvae(args);
    ino_t ino = 0;
    cr_assert(wait_for_new_file(ckpt, &ino, pid), "no checkpoint appeared");
    cr_assert(wait_for_new_file(ckpt, &ino, pid), "the checkpoint was never written again");
    kill_and_reap(pid);
    cv_checkpoint ck;
    load(ckpt, &ck);
    cr_assert(ck.epoch >= 1 && ck.position == 0, "epoch %d, position %d: short epochs are "
              "checkpointed at their end", ck.epoch, ck.position);
    char epochs[32];
    snprintf(epochs, sizeof epochs, "%d", ck.epoch + 2);
    cv_checkpoint_free(&ck);
    const char *resume[] = {"train", "--data", data, "--epochs", epochs, "--hidden", "8",
                            "--latent", "2", "--device", "cpu", "--resume", ckpt, NULL};
    char *o, *e;
    cr_assert_eq(test_run_cvae(&o, &e, resume), 0, "%s", e);
    free(o);
    free(e);
    cv_train_options d = cv_train_defaults();
    cr_assert(d.checkpoint_every == 0 && d.checkpoint_seconds == 60.0,
              "the default is not a checkpoint a minute (every %d, %g s)", d.checkpoint_every,
              d.checkpoint_seconds);
    const char *bad[] = {"train", "--data", data, "--checkpoint-every", "0.5s", NULL};
    cr_assert_eq(test_run_cvae(&o, &e, bad), 2, "%s", e);
    cr_assert(strstr(e, "--checkpoint-every must be"), "%s", e);
    free(o);
    free(e);
}

/* An epoch that lasts longer than the interval is checkpointed mid-epoch (with its
 * position), and a run resumed from there ends bitwise as the uninterrupted one. */
Test(run_saves, a_long_epoch_is_checkpointed_mid_epoch_and_resumes_exactly) {
    char data[4300], out[4300], ref[4300], ckpt[4400], ref_ckpt[4400];
    snprintf(data, sizeof data, "%s", in_dir("data"));
    snprintf(out, sizeof out, "%s", in_dir("killed"));
    snprintf(ref, sizeof ref, "%s", in_dir("whole"));
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", out);
    snprintf(ref_ckpt, sizeof ref_ckpt, "%s/model.ckpt", ref);
    mkdir(data, 0777);
    test_write_dataset(data, 12000, 0, 16, 16, 4, false, 42);
    /* a step per image: an epoch of 12000 steps lasts seconds */
    const char *args[] = {"train", "--data", data, "--out", out, "--epochs", "1", "--batch",
                          "1", "--hidden", "64", "--latent", "4", "--device", "cpu",
                          "--checkpoint-every", "1s", NULL};
    pid_t pid = spawn_cvae(args);
    ino_t ino = 0;
    bool mid = false;
    while (!mid && wait_for_new_file(ckpt, &ino, pid)) {
        cv_checkpoint ck;
        load(ckpt, &ck);
        mid = ck.epoch == 0 && ck.position > 0;
        cv_checkpoint_free(&ck);
    }
    kill_and_reap(pid);
    cr_assert(mid, "no checkpoint mid-epoch");
    const char *resume[] = {"train", "--data", data, "--epochs", "1", "--batch", "1",
                            "--hidden", "64", "--latent", "4", "--device", "cpu", "--resume",
                            ckpt, NULL};
    char *o, *e;
    cr_assert_eq(test_run_cvae(&o, &e, resume), 0, "%s", e);
    free(o);
    free(e);
    args[4] = ref;
    args[16] = "1000"; /* no checkpoint but the last */
    cr_assert_eq(test_run_cvae(&o, &e, args), 0, "%s", e);
    free(o);
    free(e);
    size_t na, nb;
    uint8_t *a = test_read_file(ckpt, &na), *b = test_read_file(ref_ckpt, &nb);
    cr_assert(a && b && na == nb && memcmp(a, b, na) == 0,
              "the resumed run differs from the uninterrupted one");
    free(a);
    free(b);
}

/* test_neg_elbo of each line of a metrics file, into v; returns the count. */
static int read_test_elbos(const char *path, double *v, int max) {
    size_t size;
    char *text = (char *)test_read_file(path, &size);
    cr_assert_not_null(text, "no metrics file %s", path);
    int n = 0;
    for (char *p = strstr(text, "\"test_neg_elbo\": "); p && n < max;
         p = strstr(p + 1, "\"test_neg_elbo\": "))
        v[n++] = strtod(p + 17, NULL);
    free(text);
    return n;
}

/* model-best.ckpt is the epoch of the lowest test -ELBO (a small training set overfits,
 * so it is not the last), evaluates to that figure, and a run resumed half way keeps the
 * same best, byte for byte. */
Test(run_saves, model_best_holds_the_lowest_test_elbo_across_a_resume) {
    char data[4300], a[4300], b[4300], metrics[4300], best_a[4400], best_b[4400];
    snprintf(data, sizeof data, "%s", in_dir("data"));
    snprintf(a, sizeof a, "%s", in_dir("straight"));
    snprintf(b, sizeof b, "%s", in_dir("halves"));
    snprintf(metrics, sizeof metrics, "%s", in_dir("m.jsonl"));
    snprintf(best_a, sizeof best_a, "%s/model-best.ckpt", a);
    snprintf(best_b, sizeof best_b, "%s/model-best.ckpt", b);
    mkdir(data, 0777);
    test_write_dataset(data, 48, 300, 8, 8, 4, false, 43);
    const char *args[] = {"train", "--data", data, "--out", a, "--epochs", "40", "--hidden",
                          "128", "--latent", "8", "--batch", "16", "--lr", "1e-2", "--seed",
                          "5", "--device", "cpu", "--metrics", metrics, NULL, NULL};
    char *o, *e;
    cr_assert_eq(test_run_cvae(&o, &e, args), 0, "%s", e);
    free(o);
    free(e);
    double elbo[64];
    int n = read_test_elbos(metrics, elbo, 64), best = 0;
    cr_assert_eq(n, 40);
    for (int i = 1; i < n; i++)
        if (elbo[i] < elbo[best]) best = i;
    cr_assert_lt(best, n - 1, "the test -ELBO fell to the last epoch: the test proves little");
    cv_checkpoint ck;
    load(best_a, &ck);
    cr_assert_eq(ck.epoch, best + 1, "model-best.ckpt holds epoch %d, the best was %d", ck.epoch,
                 best + 1);
    cv_checkpoint_free(&ck);
    const char *eval[] = {"eval", "--model", best_a, "--data", data, "--seed", "5", "--json",
                          "--device", "cpu", NULL};
    cr_assert_eq(test_run_cvae(&o, &e, eval), 0, "%s", e);
    const char *at = strstr(o, "\"test_neg_elbo\": ");
    cr_assert(at && fabs(strtod(at + 17, NULL) - elbo[best]) < 2e-6, "model-best evaluates to "
              "%s, the best epoch had %.6f", at ? at : o, elbo[best]);
    free(o);
    free(e);
    /* the same run in two halves: the best of the first half carried across the resume */
    args[4] = b;
    args[6] = "20";
    args[19] = NULL;
    cr_assert_eq(test_run_cvae(&o, &e, args), 0, "%s", e);
    free(o);
    free(e);
    char ckpt_b[4400];
    snprintf(ckpt_b, sizeof ckpt_b, "%s/model.ckpt", b);
    args[6] = "40";
    args[19] = "--resume";
    args[20] = ckpt_b;
    cr_assert_eq(test_run_cvae(&o, &e, args), 0, "%s", e);
    free(o);
    free(e);
    size_t sa, sb;
    uint8_t *x = test_read_file(best_a, &sa), *y = test_read_file(best_b, &sb);
    cr_assert(x && y && sa == sb && memcmp(x, y, sa) == 0, "the resumed run kept another best");
    free(x);
    free(y);
    /* a fresh run does not replace another run's best model */
    unlink(ckpt_b);
    args[19] = NULL;
    cr_assert_eq(test_run_cvae(&o, &e, args), 1, "%s", e);
    cr_assert(strstr(e, "model-best.ckpt already exists"), "%s", e);
    free(o);
    free(e);
}

/* A metrics file that cannot be written mid-run (its folder removed) used to end the run
 * without a checkpoint and remove the run folder. The training is saved, the run stops
 * with one line naming the file and how to continue, and the checkpoint resumes. */
Test(run_saves, a_failing_metrics_write_saves_the_training) {
    char data[4300], out[4300], logs[4300], metrics[4400], ckpt[4400];
    snprintf(data, sizeof data, "%s", in_dir("data"));
    snprintf(out, sizeof out, "%s", in_dir("run"));
    snprintf(logs, sizeof logs, "%s", in_dir("logs"));
    snprintf(metrics, sizeof metrics, "%s/m.jsonl", logs);
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", out);
    mkdir(data, 0777);
    test_write_dataset(data, 300, 30, 6, 6, 3, false, 44);
    char errpath[4400];
    snprintf(errpath, sizeof errpath, "%s", in_dir("stderr"));
    const char *args[] = {"train", "--data", data, "--out", out, "--metrics", metrics,
                          "--epochs", "1000000", "--hidden", "8", "--latent", "2",
                          "--checkpoint-every", "1000000", "--device", "cpu", NULL};
    pid_t pid = test_fork();
    if (pid == 0) {
        int err_fd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0666);
        int devnull = open("/dev/null", O_RDWR);
        dup2(devnull, 0);
        dup2(devnull, 1);
        dup2(err_fd, 2);
        const char *argv[64] = {"cvae"};
        for (int i = 0; args[i]; i++) argv[i + 1] = args[i];
        execv(getenv("CVAE_BIN"), (char *const *)argv);
        _exit(127);
    }
    ino_t ino = 0;
    cr_assert(wait_for_new_file(metrics, &ino, pid), "no metrics were written");
    char gone[4400]; /* moved away whole, at once: the next epoch's write fails */
    snprintf(gone, sizeof gone, "%s-gone", logs);
    cr_assert_eq(rename(logs, gone), 0);
    int status;
    waitpid(pid, &status, 0);
    size_t n;
    char *e = (char *)test_read_file(errpath, &n);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1, "status %d: %s", status, e);
    cr_assert_eq(test_count_lines(e), 1, "%s", e);
    cr_assert(strstr(e, metrics) && strstr(e, "continue it with --resume"), "%s", e);
    cv_checkpoint ck;
    load(ckpt, &ck);
    cr_assert_geq(ck.epoch, 1);
    char epochs[32];
    snprintf(epochs, sizeof epochs, "%d", ck.epoch + 1);
    cv_checkpoint_free(&ck);
    free(e);
    char *o;
    const char *resume[] = {"train", "--data", data, "--epochs", epochs, "--hidden", "8",
                            "--latent", "2", "--device", "cpu", "--resume", ckpt, NULL};
    cr_assert_eq(test_run_cvae(&o, &e, resume), 0, "%s", e);
    free(o);
    free(e);
}

/* A picture that cannot be written (samples.png is a folder) fails the run after the
 * training is saved, and the line says so. */
Test(run_saves, a_failing_picture_write_says_the_training_is_saved) {
    char data[4300], out[4300], blocker[4400];
    snprintf(data, sizeof data, "%s", in_dir("data"));
    snprintf(out, sizeof out, "%s", in_dir("run"));
    snprintf(blocker, sizeof blocker, "%s/samples.png", out);
    mkdir(data, 0777);
    test_write_dataset(data, 200, 30, 6, 6, 3, false, 45);
    mkdir(out, 0777);
    mkdir(blocker, 0777);
    test_write_file(test_path_in(blocker, "x"), "x", 1);
    const char *args[] = {"train", "--data", data, "--out", out, "--epochs", "2", "--hidden",
                          "8", "--latent", "2", "--device", "cpu", NULL};
    char *o, *e;
    cr_assert_eq(test_run_cvae(&o, &e, args), 1, "%s", e);
    cr_assert_eq(test_count_lines(e), 1, "%s", e);
    cr_assert(strstr(e, "samples.png") && strstr(e, "the trained model is saved in"), "%s", e);
    cv_checkpoint ck;
    load(test_path_in(out, "model.ckpt"), &ck);
    cr_assert_eq(ck.epoch, 2);
    cv_checkpoint_free(&ck);
    free(o);
    free(e);
}
