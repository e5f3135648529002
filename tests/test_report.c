/* test_report.c: the run report. Writing it changes nothing in training (the metrics and
 * the checkpoint of a run with --out equal those of a run without, bitwise); the page
 * holds one point per epoch per chart and gives its metrics and command back whole,
 * however odd the command; the metrics' lr follows the schedule; and `cvae report` turns
 * bad requests into one line and exit 1 or 2, writing nothing. The page in a browser is
 * tests/report_check.py's. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cv_math.h"
#include "cvae/train.h"
#include "helpers.h"
#include "report/report.h"
#include "util/fileio.h"

static char *dir, data[4200];
static FILE *log_sink;

static void setup(void) {
    dir = test_tmpdir();
    snprintf(data, sizeof data, "%s/data", dir);
    mkdir(data, 0777);
    test_write_dataset(data, 150, 40, 5, 6, 3, false, 17);
    log_sink = fopen("/dev/null", "w");
}
static void teardown(void) {
    fclose(log_sink);
    test_rmtree(dir);
    free(dir);
}

TestSuite(report, .init = setup, .fini = teardown, .timeout = 120);

static cv_train_options options(const char *out, const char *metrics, const char *command) {
    cv_train_options o = cv_train_defaults();
    o.data_dir = data;
    o.device = "cpu";
    o.out_dir = out;
    o.metrics_path = metrics;
    o.hidden[0] = 16;
    o.latent = 3;
    o.batch = 16;
    o.epochs = 3;
    o.lr = 3e-3f;
    o.seed = 9;
    o.log = log_sink;
    o.command = command;
    o.train.cosine = 1;
    o.train.warmup_steps = 5;
    return o;
}

static void train(const cv_train_options *o, cv_train_result *res) {
    cv_err err;
    cr_assert_eq(cv_train_run(o, res, &err), CV_OK, "%s", err.msg);
}

/* The metrics lines without their timings (samples_per_s, seconds), which differ, in
 * value and in length. */
static char *without_timings(const char *text) {
    char *copy = strdup(text);
    for (char *p = strstr(copy, "\"samples_per_s\""); p; p = strstr(p + 1, "\"samples_per_s\"")) {
        const char *end = strstr(p, "\"beta\"");
        memmove(p, end, strlen(end) + 1);
    }
    return copy;
}

Test(report, writing_the_report_changes_no_training_bit) {
    char with[4300], m1[4300], m2[4300], other[4300];
    snprintf(with, sizeof with, "%s/with", dir);
    snprintf(other, sizeof other, "%s/other", dir);
    snprintf(m1, sizeof m1, "%s/m1.jsonl", dir);
    snprintf(m2, sizeof m2, "%s/m2.jsonl", dir);
    cv_train_result a, b;
    cv_train_options ow = options(with, m1, "cvae train (a test)");
    train(&ow, &a);
    cv_train_options o = options(NULL, m2, NULL);
    train(&o, &b);
    cr_assert(cv_path_exists(test_path_in(with, "report.html")));
    cr_assert(a.train_loss == b.train_loss && a.test.neg_elbo == b.test.neg_elbo,
              "with a report: loss %.9g, -ELBO %.9g; without: %.9g, %.9g", a.train_loss,
              a.test.neg_elbo, b.train_loss, b.test.neg_elbo);
    size_t n1, n2;
    char *t1 = (char *)test_read_file(m1, &n1), *t2 = (char *)test_read_file(m2, &n2);
    char *c1 = without_timings(t1), *c2 = without_timings(t2);
    cr_assert_str_eq(c1, c2, "the metrics differ with a report");
    /* and the checkpoint of a second run with a report is the first one's, byte for byte */
    cv_train_options again = options(other, NULL, NULL);
    train(&again, &b);
    uint8_t *k1 = test_read_file(test_path_in(with, "model.ckpt"), &n1);
    uint8_t *k2 = test_read_file(test_path_in(other, "model.ckpt"), &n2);
    cr_assert(n1 == n2 && memcmp(k1, k2, n1) == 0, "checkpoints differ");
    free(k1);
    free(k2);
    free(t1);
    free(t2);
    free(c1);
    free(c2);
}

/* How many times needle occurs in s. */
static int count(const char *s, const char *needle) {
    int n = 0;
    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

Test(report, the_page_has_a_point_per_epoch_and_gives_back_its_data) {
    char out[4300];
    snprintf(out, sizeof out, "%s/run", dir);
    const char *odd = "cvae train --out 'a b' --note \"</script><b>\" \\ é \t end";
    cv_train_options o = options(out, NULL, odd);
    cv_train_result res;
    train(&o, &res);
    char *page_path = test_path_in(out, "report.html");
    size_t n;
    char *page = (char *)test_read_file(page_path, &n);
    cr_assert_eq(count(page, "<figure class=\"chart\""), 8);
    cr_assert_eq(count(page, "<circle class=\"pt\""), 8 * 3, "8 charts of 3 epochs");
    cr_assert_eq(count(page, "src=\"data:image/png;base64,"), 3, "3 pictures");
    cr_assert_eq(count(page, "<b>"), 0, "the command's markup reached the page");
    cr_assert(!strstr(page, "http:") && !strstr(page, "https:") && !strstr(page, "<script src"),
              "the page refers to something outside itself");
    char *metrics, *command;
    cv_err err;
    cr_assert_eq(cv_report_read(page_path, &metrics, &command, &err), CV_OK, "%s", err.msg);
    cr_assert_str_eq(command, odd);
    cr_assert_eq(count(metrics, "\n"), 3);
    /* lr: the schedule's value at each epoch's last step (10 steps an epoch of 150 rows) */
    for (int e = 1; e <= 3; e++) {
        char key[32];
        snprintf(key, sizeof key, "\"epoch\": %d,", e);
        const char *line = strstr(metrics, key);
        double lr;
        cr_assert(line && cv_report_metric(line, "lr", &lr));
        const float want = cv_lr_at(3e-3f, 10 * e - 1, 5, 30, 1);
        /* printed with 6 significant digits */
        cr_assert(fabs(lr - want) <= 1e-5 * fabs(want), "epoch %d: lr %g, schedule %g", e, lr,
                  (double)want);
    }
    free(metrics);
    free(command);
    free(page);
}

static int cvae(const char *const *args) {
    char *o, *e;
    int rc = test_run_cvae(&o, &e, args);
    if (rc) cr_assert_eq(test_count_lines(e), 1, "expected one error line: %s", e);
    free(o);
    free(e);
    return rc;
}

Test(report, cvae_report_refuses_what_it_cannot_use) {
    char run[4300], page[4300], junk[4300], empty[4300], metrics[4300];
    snprintf(run, sizeof run, "%s/run", dir);
    snprintf(page, sizeof page, "%s/cmp.html", dir);
    snprintf(junk, sizeof junk, "%s/junk.html", dir);
    snprintf(empty, sizeof empty, "%s/empty", dir);
    snprintf(metrics, sizeof metrics, "%s/m.jsonl", dir);
    cv_train_options o = options(run, metrics, NULL);
    cv_train_result res;
    train(&o, &res);
    mkdir(empty, 0777);
    test_write_file(junk, "<html>no run here</html>", 24);
    cr_assert_eq(cvae((const char *[]){"report", run, NULL}), 2);                /* no --out */
    cr_assert_eq(cvae((const char *[]){"report", "--out", page, NULL}), 2);       /* no run */
    cr_assert_eq(cvae((const char *[]){"report", empty, "--out", page, NULL}), 1); /* no page */
    cr_assert_eq(cvae((const char *[]){"report", junk, "--out", page, NULL}), 1);
    cr_assert_eq(cvae((const char *[]){"report", run, "--output", page, NULL}), 2);
    cr_assert(!cv_path_exists(page), "a refused request wrote the page");
    /* a folder, its page and its metrics file are the same run */
    cr_assert_eq(cvae((const char *[]){"report", run, test_path_in(run, "report.html"),
                                       metrics, "--out", page, NULL}), 0);
    size_t n;
    char *text = (char *)test_read_file(page, &n);
    cr_assert_eq(count(text, "<circle class=\"pt\""), 8 * 3 * 3, "3 runs of 3 epochs");
    free(text);
    /* an existing page stays as it was */
    cr_assert_eq(cvae((const char *[]){"report", run, "--out", page, NULL}), 1);
    char *again = (char *)test_read_file(page, &n);
    cr_assert_eq(count(again, "<circle class=\"pt\""), 8 * 3 * 3);
    free(again);
}

Test(report, a_resume_that_starts_a_metrics_file_keeps_the_pages_epochs) {
    char out[4300], metrics[4300];
    snprintf(out, sizeof out, "%s/run", dir);
    snprintf(metrics, sizeof metrics, "%s/late.jsonl", dir);
    cv_train_options o = options(out, NULL, NULL);
    o.epochs = 2;
    cv_train_result res;
    train(&o, &res);
    /* resumed to 3 epochs with a --metrics file the first run did not have */
    cv_train_options again = options(out, metrics, NULL);
    again.resume_path = test_path_in(out, "model.ckpt");
    train(&again, &res);
    char *page_path = test_path_in(out, "report.html"), *lines, *command;
    cv_err err;
    cr_assert_eq(cv_report_read(page_path, &lines, &command, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(count(lines, "\"epoch\": "), 3, "the page lost epochs: %s", lines);
    size_t n;
    char *file = (char *)test_read_file(metrics, &n);
    cr_assert_eq(count(file, "\"epoch\": "), 3, "the metrics file lacks epochs: %s", file);
    free(file);
    free(lines);
    free(command);
}

Test(report, epoch_ticks_fall_on_round_numbers) {
    /* 60 epochs: a tick every 10 epochs, at 10, 20, ..., 60 (not at 1, 11, 21, ...) */
    char *metrics = NULL, *svg = NULL;
    size_t len = 0, svg_len = 0;
    FILE *fp = open_memstream(&metrics, &len);
    test_rng rng = test_rng_new("ticks");
    for (int e = 1; e <= 60; e++)
        fprintf(fp, "{\"epoch\": %d, \"train_loss\": %.6f}\n", e, test_uniform(&rng, 80, 120));
    fclose(fp);
    const cv_report_run run = {"run", metrics, NULL};
    fp = open_memstream(&svg, &svg_len);
    cv_err err;
    cr_assert_eq(cv_report_charts(fp, &run, 1, &err), CV_OK, "%s", err.msg);
    fclose(fp);
    const char *chart = strstr(svg, "data-metric=\"train_loss\"");
    const char *end = strstr(chart, "</svg>");
    int ticks = 0;
    for (const char *t = strstr(chart, "<text class=\"tick\""); t && t < end;
         t = strstr(t + 1, "<text class=\"tick\"")) {
        const char *label = strchr(t, '>') + 1;
        if (!strstr(t, "text-anchor=\"middle\"") || strstr(t, "text-anchor=\"middle\"") > label)
            continue; /* a value tick, at the end of its line */
        const double x = atof(label);
        cr_assert(fmod(x, 10) == 0, "an epoch tick at %g", x);
        ticks++;
    }
    cr_assert_eq(ticks, 6, "%d epoch ticks", ticks);
    free(metrics);
    free(svg);
}
