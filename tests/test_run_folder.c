/* test_run_folder.c: a run is never lost to its output paths. --out and --metrics (and
 * generate's --out) get their missing parent folders, and a path that cannot be written
 * fails before any data is read; a live trainer locks its run
 * folder, so a second one on the same folder stops at once, naming the first one's pid,
 * and writes nothing. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cvae/checkpoint.h"
#include "cvae/train.h"
#include "util/fileio.h"
#include "helpers.h"

static char *dir;
static char data[4200];

static void setup(void) {
    dir = test_tmpdir();
    snprintf(data, sizeof data, "%s/data", dir);
    mkdir(data, 0777);
    test_write_dataset(data, 400, 50, 6, 6, 3, false, 5);
}
static void teardown(void) {
    test_rmtree(dir);
    free(dir);
}

TestSuite(run_folder, .init = setup, .fini = teardown, .timeout = 120);

static void expect_exists(const char *folder, const char *name) {
    char path[8400];
    snprintf(path, sizeof path, "%s/%s", folder, name);
    cr_assert(cv_path_exists(path), "%s was not written", path);
}

Test(run_folder, train_creates_the_missing_parents_of_out_and_metrics) {
    char out[4300], metrics[4300];
    snprintf(out, sizeof out, "%s/runs/fashion/first", dir);
    snprintf(metrics, sizeof metrics, "%s/logs/2026/m.jsonl", dir);
    const char *args[] = {"train", "--data", data, "--out", out, "--metrics", metrics,
                          "--epochs", "1", "--hidden", "16", "--latent", "2", "--device",
                          "cpu", NULL};
    char *o, *e;
    cr_assert_eq(test_run_cvae(&o, &e, args), 0, "%s", e);
    expect_exists(out, "model.ckpt");
    expect_exists(out, "samples.png");
    expect_exists(out, "reconstructions.png");
    cr_assert(cv_path_exists(metrics), "no metrics file");
    free(o);
    free(e);
}

/* Opens of the files in a folder, seen through inotify (which stat() does not trigger). */
static int watch_reads(const char *folder) {
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    cr_assert(fd >= 0 && inotify_add_watch(fd, folder, IN_OPEN | IN_ACCESS) >= 0,
              "inotify on %s", folder);
    return fd;
}

/* How many opens or reads of files in the folder the watch saw since the last call. */
static int reads_seen(int fd) {
    char buf[65536] __attribute__((aligned(__alignof__(struct inotify_event))));
    int events = 0;
    for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;)
        for (char *p = buf; p < buf + n; p += sizeof(struct inotify_event) +
                                              ((struct inotify_event *)p)->len)
            events += ((struct inotify_event *)p)->len > 0; /* a file in it, not the folder */
    return events;
}

/* A path under a regular file cannot be a folder, root or not. The outputs are checked
 * before the data is read, shown by order, not by a clock: the data folder is a real one,
 * and the run fails without opening any file in it (inotify would see it), naming the
 * output. The same watch sees a run that does read it. */
Test(run_folder, unwritable_outputs_fail_at_once_before_the_data_is_read) {
    char file[4300], bad[4400], good[4400];
    snprintf(file, sizeof file, "%s/plain-file", dir);
    test_write_file(file, "x", 1);
    snprintf(bad, sizeof bad, "%s/sub/run", file);
    snprintf(good, sizeof good, "%s/good", dir);
    char bad_metrics[4400];
    snprintf(bad_metrics, sizeof bad_metrics, "%s/m.jsonl", file);
    const int watch = watch_reads(data);
    const char *cases[][2] = {{"--out", bad}, {"--metrics", bad_metrics}};
    for (int k = 0; k < 2; k++) {
        const char *args[] = {"train", "--data", data, "--out", good, cases[k][0], cases[k][1],
                              "--device", "cpu", NULL};
        char *o, *e;
        int rc = test_run_cvae(&o, &e, args);
        cr_assert_eq(rc, 1, "%s %s: exit %d: %s", cases[k][0], cases[k][1], rc, e);
        cr_assert_eq(test_count_lines(e), 1, "%s", e);
        cr_assert(strstr(e, file) != NULL, "the error does not name the output: %s", e);
        cr_assert_eq(reads_seen(watch), 0, "%s %s: the data was read before the output "
                     "failed", cases[k][0], cases[k][1]);
        cr_assert(!cv_path_exists(good), "a failed run left %s behind", good);
        free(o);
        free(e);
    }
    const char *reads[] = {"train", "--data", data, "--epochs", "1", "--hidden", "8",
                           "--latent", "2", "--device", "cpu", NULL};
    char *o, *e;
    cr_assert_eq(test_run_cvae(&o, &e, reads), 0, "%s", e);
    cr_assert_gt(reads_seen(watch), 0, "the watch saw no read of the data: it proves nothing");
    free(o);
    free(e);
    close(watch);
}

/* A metrics path that is a folder cannot become the metrics file: found before training,
 * not after the first epoch. */
Test(run_folder, metrics_naming_a_folder_fails_at_once) {
    char out[4300], folder[4300];
    snprintf(out, sizeof out, "%s/run", dir);
    snprintf(folder, sizeof folder, "%s/metrics-folder", dir);
    mkdir(folder, 0777);
    const char *args[] = {"train", "--data", data, "--out", out, "--metrics", folder,
                          "--epochs", "1", "--device", "cpu", NULL};
    char *o, *e;
    cr_assert_eq(test_run_cvae(&o, &e, args), 1, "%s", e);
    cr_assert_eq(test_count_lines(e), 1, "%s", e);
    cr_assert(strstr(e, "is a folder") != NULL, "%s", e);
    cr_assert(strstr(o, "epoch") == NULL, "it trained first: %s", o);
    cr_assert(!cv_path_exists(out), "a failed run left %s", out);
    free(o);
    free(e);
}

/* The C API has no command line to refuse an empty --out: the library must. */
Test(run_folder, an_empty_out_dir_is_refused_by_the_library) {
    cv_train_options o = cv_train_defaults();
    o.data_dir = data;
    o.device = "cpu";
    o.out_dir = "";
    o.epochs = 1;
    o.log = fopen("/dev/null", "w");
    cv_train_result res;
    cv_err err;
    cr_assert_eq(cv_train_run(&o, &res, &err), CV_ERR_USAGE, "%s", err.msg);
    cr_assert(strstr(err.msg, "empty") != NULL, "%s", err.msg);
    o.out_dir = NULL;
    o.metrics_path = "";
    cr_assert_eq(cv_train_run(&o, &res, &err), CV_ERR_USAGE, "%s", err.msg);
    fclose(o.log);
}

/* "DIR/" names DIR: the folders are made, the lock taken and a failed run's folders
 * removed the same way, metrics folders inside the run folder included. */
Test(run_folder, trailing_slashes_name_the_folder) {
    char top[4300], out[4400], metrics[4400], none[4300];
    snprintf(top, sizeof top, "%s/slashed", dir);
    snprintf(out, sizeof out, "%s/a/b/", top);
    snprintf(metrics, sizeof metrics, "%s/a/b/logs/m.jsonl", top);
    snprintf(none, sizeof none, "%s/no-such-data", dir);
    const char *fail[] = {"train", "--data", none, "--out", out, "--metrics", metrics,
                          "--device", "cpu", NULL};
    char *o, *e;
    cr_assert_eq(test_run_cvae(&o, &e, fail), 1, "%s", e);
    cr_assert(!cv_path_exists(top), "a failed run left %s", top);
    free(o);
    free(e);
    const char *ok[] = {"train", "--data", data, "--out", out, "--metrics", metrics,
                        "--epochs", "1", "--hidden", "16", "--latent", "2", "--device", "cpu",
                        NULL};
    cr_assert_eq(test_run_cvae(&o, &e, ok), 0, "%s", e);
    expect_exists(out, "model.ckpt");
    free(o);
    free(e);
    char ckpt[4500], gen_new[4400], gen_empty[4400];
    snprintf(ckpt, sizeof ckpt, "%smodel.ckpt", out);
    snprintf(gen_new, sizeof gen_new, "%s/sets/new/", dir);
    snprintf(gen_empty, sizeof gen_empty, "%s/empty/", dir);
    mkdir(gen_empty, 0777);
    const char *targets[] = {gen_new, gen_empty};
    for (int k = 0; k < 2; k++) {
        const char *gen[] = {"generate", "--model", ckpt, "--per-class", "2", "--out",
                             targets[k], "--device", "cpu", NULL};
        cr_assert_eq(test_run_cvae(&o, &e, gen), 0, "--out %s: %s", targets[k], e);
        expect_exists(targets[k], "images-idx3-ubyte");
        free(o);
        free(e);
    }
}

/* A run that fails after creating its folders (here: bad data) leaves none of them. */
Test(run_folder, a_failed_run_leaves_no_folders_behind) {
    char top[4300], out[4400], none[4300];
    snprintf(top, sizeof top, "%s/new", dir);
    snprintf(out, sizeof out, "%s/deeper/run", top);
    snprintf(none, sizeof none, "%s/no-such-data", dir);
    const char *args[] = {"train", "--data", none, "--out", out, "--device", "cpu", NULL};
    char *o, *e;
    cr_assert_eq(test_run_cvae(&o, &e, args), 1, "%s", e);
    cr_assert(strstr(e, "no-such-data"), "%s", e);
    cr_assert(!cv_path_exists(top), "%s was left behind", top);
    free(o);
    free(e);
}

static pid_t spawn_cvae(const char *const *args) {
    pid_t pid = test_fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        const char *argv[64] = {"cvae"};
        for (int i = 0; args[i]; i++) argv[i + 1] = args[i];
        execv(getenv("CVAE_BIN"), (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* Whether the trainer pid takes the lock (within 10 s): the lock file holds its pid once
 * it holds the lock. */
static bool takes_the_lock(const char *lock, pid_t pid) {
    char want[32];
    snprintf(want, sizeof want, "%ld\n", (long)pid);
    bool locked = false;
    for (int i = 0; i < 20000 && !locked; i++) {
        size_t n;
        char *text = (char *)test_read_file(lock, &n);
        locked = text && strcmp(text, want) == 0;
        free(text);
        if (!locked) usleep(500);
    }
    return locked;
}

/* The names in a folder, sorted, as one string. */
/* The names in folder, but for the report page (and its temporary file) that a live
 * trainer rewrites at each epoch's end. */
static char *listing(const char *folder) {
    struct dirent **names;
    int n = scandir(folder, &names, NULL, alphasort);
    cr_assert_geq(n, 0, "cannot list %s", folder);
    char *s = calloc(1, 8192);
    for (int i = 0; i < n; i++) {
        if (strncmp(names[i]->d_name, "report.html", 11) == 0) {
            free(names[i]);
            continue;
        }
        strncat(s, names[i]->d_name, 8191 - strlen(s));
        strncat(s, "\n", 8191 - strlen(s));
        free(names[i]);
    }
    free(names);
    return s;
}

Test(run_folder, a_second_trainer_on_a_live_run_folder_names_the_first_and_writes_nothing) {
    char out[4300], lock[4400], ckpt[4400];
    snprintf(out, sizeof out, "%s/busy", dir);
    snprintf(lock, sizeof lock, "%s/%s", out, CV_LOCK_FILE);
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", out);
    const char *first[] = {"train", "--data", data, "--out", out, "--epochs", "1000000",
                           "--hidden", "16", "--latent", "2", "--device", "cpu", NULL};
    pid_t pid = spawn_cvae(first);
    cr_assert(takes_the_lock(lock, pid), "the first trainer never took the lock");
    char *before = listing(out);
    char pid_text[48];
    snprintf(pid_text, sizeof pid_text, "pid %ld", (long)pid);
    const char *again[] = {"train", "--data", data, "--out", out, "--hidden", "16",
                           "--latent", "2", "--device", "cpu", NULL};
    const char *resumed[] = {"train", "--data", data, "--out", out, "--hidden", "16",
                             "--latent", "2", "--device", "cpu", "--resume", ckpt, NULL};
    const char *const *seconds[] = {again, resumed};
    for (int k = 0; k < 2; k++) {
        char *o, *e;
        int rc = test_run_cvae(&o, &e, seconds[k]);
        cr_assert_eq(rc, 1, "second trainer (%s): exit %d: %s", k ? "--resume" : "fresh", rc, e);
        cr_assert_eq(test_count_lines(e), 1, "%s", e);
        cr_assert(strstr(e, pid_text) && strstr(e, "in use"), "no '%s' in: %s", pid_text, e);
        free(o);
        free(e);
    }
    char *after = listing(out);
    cr_assert_str_eq(after, before, "the second trainers changed the folder");
    free(before);
    free(after);
    /* the first one stops cleanly, writing its checkpoint; the lock goes with it */
    kill(pid, SIGTERM);
    int status;
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 143, "first trainer status %d",
              status);
    cr_assert(cv_path_exists(ckpt));
}

Test(run_folder, generate_creates_the_missing_parents_of_out) {
    char run[4300], set[4400], grid[4400];
    snprintf(run, sizeof run, "%s/run", dir);
    test_train_small(data, run, 16, 2, 1, 9);
    char ckpt[4400];
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", run);
    snprintf(set, sizeof set, "%s/sets/june/small", dir);
    snprintf(grid, sizeof grid, "%s/pictures/new/grid.png", dir);
    const char *gen[] = {"generate", "--model", ckpt, "--per-class", "2", "--out", set,
                         "--device", "cpu", NULL};
    const char *pic[] = {"generate", "--model", ckpt, "--format", "grid", "--out", grid,
                         "--device", "cpu", NULL};
    char *o, *e;
    cr_assert_eq(test_run_cvae(&o, &e, gen), 0, "%s", e);
    expect_exists(set, "images-idx3-ubyte");
    expect_exists(set, "manifest.json");
    free(o);
    free(e);
    cr_assert_eq(test_run_cvae(&o, &e, pic), 0, "%s", e);
    cr_assert(cv_path_exists(grid), "no grid");
    free(o);
    free(e);

    /* under a regular file: one line, exit 1, before any image is made */
    char file[4300], bad[4400];
    snprintf(file, sizeof file, "%s/plain-file", dir);
    test_write_file(file, "x", 1);
    snprintf(bad, sizeof bad, "%s/set", file);
    gen[6] = bad;
    cr_assert_eq(test_run_cvae(&o, &e, gen), 1, "%s", e);
    cr_assert_eq(test_count_lines(e), 1, "%s", e);
    cr_assert(strstr(e, file) && !strstr(o, "wrote"), "%s / %s", o, e);
    free(o);
    free(e);
}

/* A fresh run does not replace another run's metrics file: one line, exit 1, before any
 * training, the old file's bytes untouched. A --resume continues its file (test_resume). */
Test(run_folder, an_existing_metrics_file_is_not_overwritten_by_a_fresh_run) {
    char out[4300], metrics[4300];
    snprintf(out, sizeof out, "%s/second-run", dir);
    snprintf(metrics, sizeof metrics, "%s/old.jsonl", dir);
    const char old[] = "{\"epoch\": 1, \"train_loss\": 123.0}\n";
    test_write_file(metrics, old, sizeof old - 1);
    const char *args[] = {"train", "--data", data, "--out", out, "--metrics", metrics,
                          "--epochs", "1", "--hidden", "16", "--latent", "2", "--device",
                          "cpu", NULL};
    char *o, *e;
    cr_assert_eq(test_run_cvae(&o, &e, args), 1, "%s", e);
    cr_assert_eq(test_count_lines(e), 1, "%s", e);
    cr_assert(strstr(e, metrics) && strstr(e, "already exists"), "%s", e);
    cr_assert(strstr(o, "epoch") == NULL, "it trained first: %s", o);
    size_t n;
    char *text = (char *)test_read_file(metrics, &n);
    cr_assert(text && n == sizeof old - 1 && memcmp(text, old, n) == 0,
              "the old metrics file changed");
    cr_assert(!cv_path_exists(out), "a refused run left %s", out);
    free(text);
    free(o);
    free(e);
}

/* A signal while the data loads (after the run folder is made, before training) ends the
 * run with 130 like any interrupted run, and takes back the folders it made: it used to
 * kill the process, leaving them. Fashion-MNIST is large enough to take a while to load. */
Test(run_folder, a_signal_before_training_exits_130_and_leaves_no_folders) {
    const char *fashion = "/usr/share/datasets/fashion-mnist";
    if (!cv_path_exists(fashion)) cr_skip_test("no %s (Debian's dataset-fashion-mnist)", fashion);
    char top[4300], out[4400], lock[4500];
    snprintf(top, sizeof top, "%s/early", dir);
    snprintf(out, sizeof out, "%s/run", top);
    snprintf(lock, sizeof lock, "%s/%s", out, CV_LOCK_FILE);
    const char *args[] = {"train", "--data", fashion, "--out", out, "--epochs", "1",
                          "--device", "cpu", NULL};
    pid_t pid = spawn_cvae(args);
    cr_assert(takes_the_lock(lock, pid), "the trainer never took the lock");
    kill(pid, SIGINT);
    int status;
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status), "killed by signal %d instead of exiting",
              WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    cr_assert_eq(WEXITSTATUS(status), 130);
    cr_assert(!cv_path_exists(top), "an interrupted run left %s", top);
}

/* A trainer killed while writing leaves NAME.tmp.PID; the next run in that folder (which
 * holds its lock) removes those of processes no longer running, of cvae's own files and
 * of its metrics file; a live process's, and names cvae never writes, stay. */
Test(run_folder, the_next_run_sweeps_temporaries_of_dead_trainers) {
    char out[4300], logs[4300], metrics[4400];
    snprintf(out, sizeof out, "%s/run", dir);
    snprintf(logs, sizeof logs, "%s/logs", dir);
    snprintf(metrics, sizeof metrics, "%s/m.jsonl", logs);
    mkdir(out, 0777);
    mkdir(logs, 0777);
    const pid_t gone = test_dead_pid();
    char dead[4][64], kept[3][64];
    const char *dead_names[] = {"model.ckpt", "samples.png", "reconstructions.png",
                                "model-best.ckpt"};
    for (int i = 0; i < 4; i++) {
        snprintf(dead[i], sizeof dead[i], "%s.tmp.%ld", dead_names[i], (long)gone);
        test_write_file(test_path_in(out, dead[i]), "half", 4);
    }
    snprintf(kept[0], sizeof kept[0], "model.ckpt.tmp.%ld", (long)getpid());
    snprintf(kept[1], sizeof kept[1], "notes.txt.tmp.%ld", (long)gone);
    snprintf(kept[2], sizeof kept[2], "other.jsonl.tmp.%ld", (long)gone);
    test_write_file(test_path_in(out, kept[0]), "live", 4);
    test_write_file(test_path_in(out, kept[1]), "user", 4);
    test_write_file(test_path_in(logs, kept[2]), "user", 4);
    char dead_metrics[4500];
    snprintf(dead_metrics, sizeof dead_metrics, "%s.tmp.%ld", metrics, (long)gone);
    test_write_file(dead_metrics, "half", 4);
    const char *args[] = {"train", "--data", data, "--out", out, "--metrics", metrics,
                          "--epochs", "1", "--hidden", "8", "--latent", "2", "--device",
                          "cpu", NULL};
    char *o, *e;
    cr_assert_eq(test_run_cvae(&o, &e, args), 0, "%s", e);
    for (int i = 0; i < 4; i++)
        cr_assert(!cv_path_exists(test_path_in(out, dead[i])), "%s was not swept", dead[i]);
    cr_assert(!cv_path_exists(dead_metrics), "%s was not swept", dead_metrics);
    cr_assert(cv_path_exists(test_path_in(out, kept[0])), "a live process's %s went", kept[0]);
    cr_assert(cv_path_exists(test_path_in(out, kept[1])), "%s, no file of cvae's, went", kept[1]);
    cr_assert(cv_path_exists(test_path_in(logs, kept[2])), "%s, no file of cvae's, went",
              kept[2]);
    free(o);
    free(e);
}

/* Ctrl-C twice while the data loads: the first asks for a clean stop, which comes only
 * once the data is read; the second ends the process at once. It used to leave the run
 * folder it made, holding only cvae.lock; the second signal now takes back the folders
 * the run made (and their lock file) before it ends the process. */
Test(run_folder, two_quick_signals_before_training_leave_no_folders) {
    const char *fashion = "/usr/share/datasets/fashion-mnist";
    if (!cv_path_exists(fashion)) cr_skip_test("no %s (Debian's dataset-fashion-mnist)", fashion);
    char top[4300], out[4400], lock[4500], metrics[4500];
    snprintf(top, sizeof top, "%s/twice", dir);
    snprintf(out, sizeof out, "%s/run", top);
    snprintf(lock, sizeof lock, "%s/%s", out, CV_LOCK_FILE);
    snprintf(metrics, sizeof metrics, "%s/logs/m.jsonl", out);
    const char *args[] = {"train", "--data", fashion, "--out", out, "--metrics", metrics,
                          "--epochs", "1", "--device", "cpu", NULL};
    pid_t pid = spawn_cvae(args);
    cr_assert(takes_the_lock(lock, pid), "the trainer never took the lock");
    kill(pid, SIGINT);
    usleep(20000);
    kill(pid, SIGINT);
    int status;
    waitpid(pid, &status, 0);
    cr_assert((WIFSIGNALED(status) && WTERMSIG(status) == SIGINT) ||
              (WIFEXITED(status) && WEXITSTATUS(status) == 130), "status %d", status);
    cr_assert(!cv_path_exists(top), "two signals left %s%s", top,
              cv_path_exists(lock) ? " (with its lock file)" : "");
}

/* --resume without --out used to train and throw the result away. It writes back beside
 * the checkpoint it resumed, under the folder's lock (a live trainer there stops it, named)
 * and by the same atomic rules. */
Test(run_folder, resume_without_out_writes_beside_the_checkpoint) {
    char out[4300], ckpt[4400];
    snprintf(out, sizeof out, "%s/run", dir);
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", out);
    const char *first[] = {"train", "--data", data, "--out", out, "--epochs", "1", "--hidden",
                           "8", "--latent", "2", "--device", "cpu", NULL};
    char *o, *e;
    cr_assert_eq(test_run_cvae(&o, &e, first), 0, "%s", e);
    free(o);
    free(e);
    const char *resume[] = {"train", "--data", data, "--epochs", "2", "--hidden", "8",
                            "--latent", "2", "--device", "cpu", "--resume", ckpt, NULL};
    /* the folder locked by a live process (this one): refused, nothing changed */
    int fd = open(test_path_in(out, CV_LOCK_FILE), O_RDWR);
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    cr_assert(fd >= 0 && fcntl(fd, F_SETLK, &fl) == 0);
    char pid_text[48];
    snprintf(pid_text, sizeof pid_text, "pid %ld", (long)getpid());
    cr_assert_eq(test_run_cvae(&o, &e, resume), 1, "%s", e);
    cr_assert(strstr(e, pid_text) && strstr(e, "in use"), "%s", e);
    free(o);
    free(e);
    close(fd);
    cr_assert_eq(test_run_cvae(&o, &e, resume), 0, "%s", e);
    char said[4500];
    snprintf(said, sizeof said, "checkpoints to %s", ckpt);
    cr_assert(strstr(o, said) && !strstr(o, "will not be saved"), "%s", o);
    free(o);
    free(e);
    cv_checkpoint ck;
    cv_err err;
    cr_assert_eq(cv_checkpoint_load(ckpt, &ck, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(ck.epoch, 2, "the resumed run's result was not written back");
    cv_checkpoint_free(&ck);
}
