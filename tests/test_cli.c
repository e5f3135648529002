/* test_cli.c: the cvae program as a user meets it: --help, bad flags and nonsense values
 * (exit 2, one line on stderr, nothing written), data and file errors (exit 1, one line,
 * no output left behind), and a small train -> info -> eval run end to end. */
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <pty.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cvae/comm.h"
#include "util/fileio.h"
#include "cvae/version.h"
#include "helpers.h"

static char *dir;
static char data[4096], out[4096];

static void setup(void) {
    dir = test_tmpdir();
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(out, sizeof out, "%s/run", dir);
    mkdir(data, 0777);
    test_write_dataset(data, 150, 40, 6, 6, 3, true, 99);
}
static void teardown(void) {
    test_rmtree(dir);
    free(dir);
}

TestSuite(cli, .init = setup, .fini = teardown, .timeout = 120);

/* Runs cvae, checks the exit code and that stderr is exactly one line. */
static void expect_error(int code, const char *needle, const char *const *args) {
    char *o, *e;
    int rc = test_run_cvae(&o, &e, args);
    cr_assert_eq(rc, code, "exit %d (wanted %d) for %s %s %s; stderr: %s", rc, code, args[0],
                 args[1] ? args[1] : "", args[1] && args[2] ? args[2] : "", e);
    cr_assert_eq(test_count_lines(e), 1, "stderr is not one line: %s", e);
    cr_assert(strstr(e, needle) != NULL, "expected '%s' in: %s", needle, e);
    cr_assert(strstr(e, "cvae") == e, "error line does not start with cvae: %s", e);
    cr_assert(!cv_path_exists(out), "a failed run created %s", out);
    free(o);
    free(e);
}

Test(cli, every_command_has_help) {
    const char *cmds[] = {"train", "eval", "info"};
    for (int i = 0; i < 3; i++) {
        char *o, *e;
        const char *args[] = {cmds[i], "--help", NULL};
        cr_assert_eq(test_run_cvae(&o, &e, args), 0);
        cr_assert(strstr(o, "usage: cvae") != NULL, "%s --help: %s", cmds[i], o);
        free(o);
        free(e);
    }
    char *o, *e;
    const char *top[] = {"--help", NULL};
    cr_assert_eq(test_run_cvae(&o, &e, top), 0);
    cr_assert(strstr(o, "train") && strstr(o, "eval") && strstr(o, "info"));
    free(o);
    free(e);
}

/* The first line is "cvae VERSION" with meson's project version, which version.h carries
 * too; then what the build holds. */
Test(cli, version_prints_the_project_version) {
    const char *want = getenv("CVAE_VERSION");
    cr_assert_not_null(want, "CVAE_VERSION is not set (meson test sets it)");
    char parts[64];
    snprintf(parts, sizeof parts, "%d.%d.%d", CVAE_VERSION_MAJOR, CVAE_VERSION_MINOR,
             CVAE_VERSION_PATCH);
    cr_assert_str_eq(parts, want);
    cr_assert_str_eq(CVAE_VERSION_STRING, want);

    char *o, *e;
    const char *args[] = {"--version", NULL};
    cr_assert_eq(test_run_cvae(&o, &e, args), 0, "stderr: %s", e);
    char first[128];
    snprintf(first, sizeof first, "cvae %s\n", want);
    cr_assert(strncmp(o, first, strlen(first)) == 0, "cvae --version printed: %s", o);
    cr_assert(strstr(o, "\nCUDA backend: ") && strstr(o, "\nOpenMP threads: ") &&
                  strstr(o, "\nOpenBLAS core: ") && strstr(o, "\nprecisions: fp32"),
              "cvae --version printed: %s", o);
    free(o);
    free(e);
    const char *extra[] = {"--version", "now", NULL};
    expect_error(2, "--version takes no arguments", extra);
}

Test(cli, bad_commands_and_flags_exit_2) {
    const char *none[] = {NULL};
    expect_error(2, "missing command", none);
    const char *unknown[] = {"trian", NULL};
    expect_error(2, "unknown command", unknown);
    const char *flag[] = {"train", "--data", data, "--out", out, "--bogus", NULL};
    expect_error(2, "unknown flag '--bogus'", flag);
    const char *missing[] = {"train", "--out", out, NULL};
    expect_error(2, "--data DIR (or --train-images FILE, or --train-csv FILE) is required", missing);
    const char *novalue[] = {"train", "--out", out, "--data", NULL};
    expect_error(2, "--data needs a value", novalue);
    const char *extra[] = {"train", "--data", data, "--out", out, "stray", NULL};
    expect_error(2, "unexpected argument 'stray'", extra);
    /* one dash: the word itself is named, not the one before it */
    const char *one_dash[] = {"train", "--data", data, "--out", out, "-epochs", "1", NULL};
    expect_error(2, "unknown flag '-epochs' (flags take two dashes, as in --epochs)", one_dash);
    /* getopt_long's abbreviations are refused: --warmup might have meant --kl-warmup */
    const char *abbreviated[] = {"train", "--data", data, "--out", out, "--warmup", "2", NULL};
    expect_error(2, "unknown flag '--warmup' (did you mean --warmup-steps?)", abbreviated);
    const char *eval_dash[] = {"eval", "--model", out, "-json", NULL};
    expect_error(2, "unknown flag '-json'", eval_dash);
}

/* Without MPI, a launcher's N processes would be N copies of one training racing for one
 * run folder; rank 0 says so, the others exit quietly. */
Test(cli, a_build_without_mpi_refuses_a_launchers_job) {
    if (cv_comm_mpi_built()) cr_skip_test("this build has MPI (tests/mpi.sh runs it under mpirun)");
    setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
    const char *args[] = {"train", "--data", data, "--out", out, "--epochs", "1", NULL};
    for (int rank = 0; rank < 2; rank++) {
        setenv("OMPI_COMM_WORLD_RANK", rank ? "1" : "0", 1);
        char *o = NULL, *e = NULL;
        cr_assert_eq(test_run_cvae(&o, &e, args), 2, "rank %d: %s", rank, e);
        if (rank == 0)
            cr_assert(strstr(e, "cvae: started as one of 2 processes by an MPI launcher, but "
                                "this cvae was built without MPI"), "%s", e);
        else
            cr_assert_str_empty(e, "rank 1 should leave the message to rank 0: %s", e);
        free(o);
        free(e);
    }
    struct stat sb;
    cr_assert(stat(out, &sb) != 0, "a refused job made %s", out);
}

Test(cli, nonsense_values_exit_2) {
    const struct {
        const char *flag, *value, *needle;
    } cases[] = {
        {"--batch", "0", "--batch must be"},        {"--batch", "-5", "--batch must be"},
        {"--batch", "12x", "--batch must be"},      {"--batch", "", "--batch must be"},
        {"--lr", "-1e-3", "--lr must be"},          {"--lr", "nan", "--lr must be"},
        {"--lr", "inf", "--lr must be"},            {"--lr", "0", "--lr must be"},
        {"--lr", "fast", "--lr must be"},           {"--latent", "0", "--latent must be"},
        {"--hidden", "400,,3", "--hidden must be"}, {"--hidden", ",", "--hidden must be"},
        {"--hidden", "0", "--hidden must be"},      {"--hidden", "400,", "--hidden must be"},
        {"--hidden", "1,2,3,4,5,6,7,8,9", "--hidden must be"},
        {"--device", "tpu", "--device must be"},    {"--epochs", "0", "--epochs must be"},
        {"--device", "cuda:256", "--device cuda:N takes a GPU number N in 0..255"},
        {"--seed", "-3", "--seed must be"},         {"--checkpoint-every", "0", "--checkpoint-every"},
        {"--classes", "300", "--classes must be"}, {"--precision", "fp16", "--precision must be"},
        {"--prior", "uniform", "--prior must be"},   {"--likelihood", "poisson", "--likelihood must be"},
        {"--sigma", "0", "--sigma must be"},         {"--sigma", "-1", "--sigma must be"},
        {"--beta", "-1", "--beta must be"},          {"--beta", "nan", "--beta must be"},
        {"--kl-warmup", "-2", "--kl-warmup must be"}, {"--lr-schedule", "step", "--lr-schedule must be"},
        {"--warmup-steps", "x", "--warmup-steps must be"}, {"--clip-grad", "0", "--clip-grad must be"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *args[] = {"train", "--data", data, "--out", out, cases[i].flag,
                              cases[i].value, NULL};
        expect_error(2, cases[i].needle, args);
    }
    const char *iwae[] = {"eval", "--model", "x", "--data", data, "--iwae", "0", NULL};
    expect_error(2, "--iwae must be", iwae);
    const char *nomodel[] = {"eval", "--data", data, NULL};
    expect_error(2, "--model CKPT is required", nomodel);
    const char *noinfo[] = {"info", NULL};
    expect_error(2, "--model CKPT is required", noinfo);
}

Test(cli, data_and_file_errors_exit_1_and_write_nothing) {
    char missing[8192], bad[8192], metrics[8192];
    snprintf(missing, sizeof missing, "%s/none", dir);
    snprintf(metrics, sizeof metrics, "%s/m.jsonl", dir);
    const char *nodata[] = {"train", "--data", missing, "--out", out, "--metrics", metrics, NULL};
    expect_error(1, "no such data folder", nodata);
    cr_assert(!cv_path_exists(metrics));

    /* a truncated training file */
    snprintf(bad, sizeof bad, "%s/train-labels-idx1-ubyte.gz", data);
    size_t size;
    uint8_t *b = test_read_file(bad, &size);
    test_write_file(bad, b, size / 2);
    free(b);
    const char *trunc[] = {"train", "--data", data, "--out", out, NULL};
    expect_error(1, "train-labels-idx1-ubyte.gz", trunc);

    const char *evalmissing[] = {"eval", "--model", missing, "--data", data, NULL};
    expect_error(1, "cannot open", evalmissing);
    snprintf(bad, sizeof bad, "%s/garbage.ckpt", dir);
    test_write_file(bad, "not a checkpoint at all", 23);
    const char *info[] = {"info", "--model", bad, NULL};
    expect_error(1, "not a cvae checkpoint", info);
}

Test(cli, train_info_eval_end_to_end) {
    char metrics[8192], ckpt[8192];
    snprintf(metrics, sizeof metrics, "%s/m.jsonl", dir);
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", out);
    char *o, *e;
    const char *train[] = {"train", "--data", data, "--out", out, "--metrics", metrics,
                           "--hidden", "24,16", "--latent", "3", "--batch", "16",
                           "--epochs", "2", "--device", "cpu", "--seed", "5", NULL};
    cr_assert_eq(test_run_cvae(&o, &e, train), 0, "train failed: %s", e);
    cr_assert(strstr(o, "epoch   1/2") && strstr(o, "epoch   2/2"), "%s", o);
    cr_assert(strstr(o, "checkpoint: ") && strstr(o, "final test -ELBO"), "%s", o);
    char report[8300];
    snprintf(report, sizeof report, "report: %s/report.html\n", out);
    cr_assert(strstr(o, report), "the run does not say where its report page is: %s", o);
    const char *final = strstr(o, "final test -ELBO ");
    double trained = strtod(final + strlen("final test -ELBO "), NULL);
    free(o);
    free(e);

    size_t size;
    char *m = (char *)test_read_file(metrics, &size);
    cr_assert_eq(test_count_lines(m), 2);
    const char *keys[] = {"\"epoch\"", "\"train_loss\"", "\"test_neg_elbo\"", "\"test_rec\"",
                          "\"test_kl\"", "\"samples_per_s\"", "\"seconds\""};
    for (int i = 0; i < 7; i++) cr_assert(strstr(m, keys[i]), "metrics lack %s", keys[i]);
    free(m);

    const char *info[] = {"info", "--model", ckpt, NULL};
    cr_assert_eq(test_run_cvae(&o, &e, info), 0, "%s", e);
    cr_assert(strstr(o, "hidden 24,16") && strstr(o, "2 epochs done") && strstr(o, "seed 5"), "%s", o);
    free(o);
    free(e);

    const char *eval[] = {"eval", "--model", ckpt, "--data", data, "--iwae", "20", "--json",
                          "--device", "cpu", "--seed", "5", NULL};
    cr_assert_eq(test_run_cvae(&o, &e, eval), 0, "%s", e);
    cr_assert_eq(test_count_lines(o), 1, "--json must print one line: %s", o);
    const char *ekeys[] = {"\"test_neg_elbo\"", "\"test_rec\"", "\"test_kl\"", "\"iwae_nll\""};
    for (int i = 0; i < 4; i++) cr_assert(strstr(o, ekeys[i]), "eval json lacks %s: %s", ekeys[i], o);
    /* with the training seed, eval reproduces training's last test figure (printed to 4
     * decimals) from the checkpoint */
    const char *v = strstr(o, "\"test_neg_elbo\": ");
    double evaluated = strtod(v + strlen("\"test_neg_elbo\": "), NULL);
    cr_assert(fabs(evaluated - trained) < 1e-4, "eval %.6f vs training %.4f", evaluated, trained);
    free(o);
    free(e);

    /* a second train into the same folder must not overwrite the checkpoint */
    const char *again[] = {"train", "--data", data, "--out", out, "--epochs", "1", NULL};
    cr_assert_eq(test_run_cvae(&o, &e, again), 1);
    cr_assert(strstr(e, "already exists"), "%s", e);
    free(o);
    free(e);
}

Test(cli, sigma_without_the_gaussian_likelihood_exits_2) {
    const char *args[] = {"train", "--data", data, "--out", out, "--sigma", "0.2", NULL};
    expect_error(2, "--sigma applies to --likelihood gaussian only", args);
    const char *m[] = {"eval", "--model", "x", "--data", data, "--marginal", NULL};
    expect_error(2, "--marginal needs --iwae K", m);
}

Test(cli, help_documents_every_option) {
    char *o, *e;
    const char *args[] = {"train", "--help", NULL};
    cr_assert_eq(test_run_cvae(&o, &e, args), 0);
    const char *flags[] = {"--prior", "--likelihood", "--sigma", "--binarize", "--beta",
                           "--kl-warmup", "--lr-schedule", "--warmup-steps", "--clip-grad",
                           "--resume", "--skip-nonfinite", "--precision", "[-30, 30]",
                           "--train-images", "--train-labels", "--train-conditions",
                           "--test-images", "--test-labels", "--test-conditions"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        cr_assert(strstr(o, flags[i]), "train --help does not mention %s", flags[i]);
    free(o);
    free(e);
    const char *ev[] = {"eval", "--help", NULL};
    cr_assert_eq(test_run_cvae(&o, &e, ev), 0);
    cr_assert(strstr(o, "--marginal") && strstr(o, "active") && strstr(o, "bits per dimension"));
    free(o);
    free(e);
}

/* The manual page (docs/cvae.1) names every long flag of every command's --help. */
Test(cli, the_man_page_documents_every_flag_of_every_help) {
    const char *root = getenv("CVAE_SOURCE_ROOT");
    cr_assert_not_null(root, "CVAE_SOURCE_ROOT is not set (meson test sets it)");
    char path[4200];
    snprintf(path, sizeof path, "%s/docs/cvae.1", root);
    size_t size;
    char *man = (char *)test_read_file(path, &size);
    cr_assert_not_null(man, "no %s", path);
    const char *commands[] = {"train", "eval", "generate", "score", "info", "bench", "encode",
                              "decode", "export", "report"};
    for (int c = 0; c < 10; c++) {
        char *o, *e;
        const char *args[] = {commands[c], "--help", NULL};
        cr_assert_eq(test_run_cvae(&o, &e, args), 0);
        for (const char *p = strstr(o, "--"); p; p = strstr(p + 2, "--")) {
            char flag[64], roff[128];
            size_t n = 2;
            while (n < sizeof flag - 1 && (p[n] == '-' || (p[n] >= 'a' && p[n] <= 'z'))) n++;
            if (n == 2) continue;
            memcpy(flag, p, n);
            flag[n] = '\0';
            /* roff writes each '-' of a flag as "\-" */
            size_t k = 0;
            for (size_t i = 0; i < n && k < sizeof roff - 3; i++) {
                if (flag[i] == '-') roff[k++] = '\\';
                roff[k++] = flag[i];
            }
            roff[k] = '\0';
            cr_assert(strstr(man, roff), "cvae %s --help has %s, docs/cvae.1 does not",
                      commands[c], flag);
        }
        free(o);
        free(e);
    }
    free(man);
}

/* --beta 0 (a plain autoencoder) however the zero is written; 0.0 was a usage error. */
Test(cli, beta_zero_is_taken_however_it_is_written) {
    const char *zeros[] = {"0", "0.0", "0e0", ".0"};
    for (int k = 0; k < 4; k++) {
        const char *args[] = {"train", "--data", data, "--epochs", "1", "--hidden", "8",
                              "--latent", "2", "--device", "cpu", "--beta", zeros[k], NULL};
        char *o, *e;
        cr_assert_eq(test_run_cvae(&o, &e, args), 0, "--beta %s: %s", zeros[k], e);
        cr_assert(strstr(o, "prior, beta 0"), "--beta %s: %s", zeros[k], o);
        free(o);
        free(e);
    }
}

Test(cli, tf32_on_the_cpu_exits_2) {
    const char *args[] = {"train", "--data", data, "--out", out, "--device", "cpu",
                          "--precision", "tf32", NULL};
    expect_error(2, "--precision tf32 needs a GPU", args);
}

/* bf16 and tf32x3 run on the CPU (its emulations are the GPU's reference), say so in the
 * header, and a checkpoint of one precision resumes in another. */
Test(cli, bf16_and_tf32x3_train_on_the_cpu_and_resume_in_fp32) {
    const char *precisions[] = {"bf16", "tf32x3"};
    for (int p = 0; p < 2; p++) {
        char run[4200], ckpt[4300], header[64];
        snprintf(run, sizeof run, "%s-%s", out, precisions[p]);
        snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", run);
        snprintf(header, sizeof header, "\nprecision %s: ", precisions[p]);
        char *o, *e;
        const char *train[] = {"train", "--data", data, "--out", run, "--hidden", "24",
                               "--latent", "3", "--batch", "16", "--epochs", "1", "--device",
                               "cpu", "--precision", precisions[p], NULL};
        cr_assert_eq(test_run_cvae(&o, &e, train), 0, "%s: %s", precisions[p], e);
        cr_assert(strstr(o, header) && strstr(o, "final test -ELBO"), "%s", o);
        free(o);
        free(e);
        const char *resume[] = {"train", "--data", data, "--out", run, "--hidden", "24",
                                "--latent", "3", "--batch", "16", "--epochs", "2", "--device",
                                "cpu", "--resume", ckpt, NULL};
        cr_assert_eq(test_run_cvae(&o, &e, resume), 0, "%s: %s", precisions[p], e);
        cr_assert(strstr(o, "\nprecision fp32: ") && strstr(o, "epoch   2/2"), "%s", o);
        free(o);
        free(e);
    }
}

Test(cli, cuda_without_a_usable_gpu_exits_2) {
    char *o, *e;
    const char *args[] = {"train", "--data", data, "--out", out, "--device", "cuda",
                          "--epochs", "1", NULL};
    int rc = test_run_cvae(&o, &e, args);
    if (rc == 0) {
        free(o);
        free(e);
        cr_skip_test("a GPU is present: this checks the machines without one");
    }
    cr_assert_eq(rc, 2, "exit %d: %s", rc, e);
    cr_assert_eq(test_count_lines(e), 1, "%s", e);
    cr_assert(!cv_path_exists(out));
    free(o);
    free(e);
}

/* The messages a new user met (issue 19): the nearest real flag, or none; a run folder
 * given as a checkpoint; a folder `generate` wrote given to eval as test data; a grid file
 * without .png; a test split of the other kind of condition. */
Test(cli, messages_point_at_what_was_meant) {
    const char *date[] = {"train", "--date", data, "--out", out, NULL};
    expect_error(2, "unknown flag '--date' (did you mean --data?)", date);
    const char *d[] = {"train", "-d", data, "--out", out, NULL};
    char *o, *e;
    cr_assert_eq(test_run_cvae(&o, &e, d), 2);
    cr_assert(strstr(e, "unknown flag '-d'") && !strstr(e, "--d)") && !strstr(e, "--d?"),
              "a flag that does not exist was suggested: %s", e);
    free(o);
    free(e);
    const char *hiden[] = {"train", "--data", data, "--hiden", "8", NULL};
    expect_error(2, "(did you mean --hidden?)", hiden);
    const char *per[] = {"generate", "-per-class", "3", NULL};
    expect_error(2, "flags take two dashes, as in --per-class", per);
    const char *nonsense[] = {"train", "--data", data, "--zzzzzz", NULL};
    cr_assert_eq(test_run_cvae(&o, &e, nonsense), 2);
    cr_assert(!strstr(e, "did you mean"), "a far-off flag was suggested: %s", e);
    free(o);
    free(e);

    /* a trained run folder given as --model */
    const char *train[] = {"train", "--data", data, "--out", out, "--epochs", "1", "--hidden",
                           "8", "--latent", "2", "--device", "cpu", NULL};
    cr_assert_eq(test_run_cvae(&o, &e, train), 0, "%s", e);
    free(o);
    free(e);
    char ckpt[4200], want[4300];
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", out);
    snprintf(want, sizeof want, "is a folder; give the checkpoint in it, %s", ckpt);
    const char *cmds[][8] = {{"info", "--model", out, NULL},
                             {"eval", "--model", out, "--data", data, NULL},
                             {"generate", "--model", out, "--per-class", "2", "--out", "g"}};
    for (int k = 0; k < 3; k++) {
        cr_assert_eq(test_run_cvae(&o, &e, cmds[k]), 1, "%s", e);
        cr_assert(strstr(e, want), "cvae %s: no '%s' in: %s", cmds[k][0], want, e);
        free(o);
        free(e);
    }

    /* a folder generate wrote is a training split: eval is told how to pass it */
    char gen[4200], flags[9000];
    snprintf(gen, sizeof gen, "%s/generated", dir);
    const char *g[] = {"generate", "--model", ckpt, "--per-class", "3", "--out", gen,
                       "--device", "cpu", NULL};
    cr_assert_eq(test_run_cvae(&o, &e, g), 0, "%s", e);
    free(o);
    free(e);
    snprintf(flags, sizeof flags, "--test-images %s/images-idx3-ubyte --test-labels "
             "%s/labels-idx1-ubyte", gen, gen);
    const char *ev[] = {"eval", "--model", ckpt, "--data", gen, "--device", "cpu", NULL};
    cr_assert_eq(test_run_cvae(&o, &e, ev), 1, "%s", e);
    cr_assert(strstr(e, flags), "no '%s' in: %s", flags, e);
    free(o);
    free(e);

    /* a grid is a PNG file: an --out without .png is refused before anything is made */
    char grid[4200];
    snprintf(grid, sizeof grid, "%s/g8", dir);
    const char *gr[] = {"generate", "--model", ckpt, "--format", "grid", "--out", grid,
                        "--device", "cpu", NULL};
    cr_assert_eq(test_run_cvae(&o, &e, gr), 2, "%s", e);
    cr_assert(strstr(e, ".png") && !cv_path_exists(grid), "%s", e);
    free(o);
    free(e);

    /* training labels beside test condition vectors: the kinds are named */
    char mixed[4200];
    snprintf(mixed, sizeof mixed, "%s/mixed", dir);
    mkdir(mixed, 0777);
    uint8_t pix[4 * 4 * 4] = {0}, labels[4] = {0, 1, 0, 1};
    float cond[4 * 2] = {0};
    test_write_npy(test_path_in(mixed, "train_images.npy"), CV_NPY_U8, 3,
                   (const int64_t[]){4, 4, 4}, pix);
    test_write_npy(test_path_in(mixed, "train_labels.npy"), CV_NPY_U8, 1,
                   (const int64_t[]){4}, labels);
    test_write_npy(test_path_in(mixed, "test_images.npy"), CV_NPY_U8, 3,
                   (const int64_t[]){4, 4, 4}, pix);
    test_write_npy(test_path_in(mixed, "test_conditions.npy"), CV_NPY_F32, 2,
                   (const int64_t[]){4, 2}, cond);
    const char *mix[] = {"train", "--data", mixed, "--device", "cpu", NULL};
    cr_assert_eq(test_run_cvae(&o, &e, mix), 1, "%s", e);
    cr_assert(strstr(e, "the test split holds the other kind of condition") &&
                  !strstr(e, "without test labels"), "%s", e);
    free(o);
    free(e);
}

/* On a terminal, the progress line is cleared before the line that says the run was
 * interrupted; it used to be glued to the end of it. */
Test(cli, an_interrupt_message_starts_its_own_line_on_a_terminal) {
    char big[4200];
    snprintf(big, sizeof big, "%s/big", dir);
    mkdir(big, 0777);
    test_write_dataset(big, 12000, 0, 16, 16, 4, false, 7);
    const char *bin = getenv("CVAE_BIN");
    int master;
    pid_t pid = forkpty(&master, NULL, NULL, NULL);
    cr_assert(pid >= 0, "forkpty: %s", strerror(errno));
    if (pid == 0) { /* a step per image: the progress line is up for seconds */
        execl(bin, bin, "train", "--data", big, "--batch", "1", "--hidden", "64", "--latent",
              "4", "--epochs", "5", "--device", "cpu", (char *)NULL);
        _exit(127);
    }
    static char buf[1 << 20];
    size_t len = 0;
    bool signalled = false;
    for (;;) { /* until the child closes the terminal (EIO on Linux) */
        ssize_t n = read(master, buf + len, sizeof buf - 1 - len);
        if (n > 0) len += (size_t)n;
        else if (n < 0 && errno == EINTR) continue;
        else break;
        buf[len] = 0;
        if (!signalled && strstr(buf, "epoch 1/5 [")) { /* the progress line is drawn */
            kill(pid, SIGINT);
            signalled = true;
        }
        if (len == sizeof buf - 1) break;
    }
    buf[len] = 0;
    close(master);
    int status;
    waitpid(pid, &status, 0);
    cr_assert(signalled && WIFEXITED(status) && WEXITSTATUS(status) == 130, "status %d: %s",
              status, buf);
    const char *msg = strstr(buf, "cvae train: interrupted by SIGINT");
    cr_assert(msg, "no interrupt message in: %s", buf);
    /* what the terminal shows before it on its line: after the last \r or \n */
    const char *line = msg;
    while (line > buf && line[-1] != '\n' && line[-1] != '\r') line--;
    cr_assert(line == msg, "the message is glued to '%.*s'", (int)(msg - line), line);
}
