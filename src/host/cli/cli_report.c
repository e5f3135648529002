/* cli_report.c: `cvae report`, several runs' curves on one page. */
#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "report/report.h"
#include "util/fileio.h"

static const char *help =
    "usage: cvae report RUN... --out FILE.html [--title TEXT]\n"
    "\n"
    "Put several runs' curves on one page to compare them: train loss, test -ELBO, its\n"
    "reconstruction and KL terms, beta, learning rate, gradient norm and samples/s, one\n"
    "chart per figure and one line per run, with a table of each run's epochs, last\n"
    "figures and command. A RUN is a run folder (its report.html, which cvae train writes\n"
    "at each epoch's end with --out), a run's report.html, or a metrics file\n"
    "(--metrics FILE.jsonl). The page is one self-contained HTML file (inline SVG, no\n"
    "script, nothing fetched); FILE.html must not exist yet, and appears only when whole.\n"
    "\n"
    "  --out FILE.html   the page to write (required)\n"
    "  --title TEXT      its title (default: cvae runs)\n"
    "  -h, --help        this text\n";

enum { OPT_OUT = 256, OPT_TITLE };

/* A whole small text file (malloc'd). */
static cv_status read_text(const char *path, char **text, cv_err *err) {
    int fd;
    uint64_t size;
    cv_status st = cv_open_regular(path, "a metrics file", &fd, &size, err);
    if (st) return st;
    FILE *fp = fdopen(fd, "rb");
    *text = size < (256u << 20) ? malloc(size + 1) : NULL;
    bool ok = fp && *text && fread(*text, 1, size, fp) == size;
    if (fp) fclose(fp);
    if (!ok) {
        free(*text);
        *text = NULL;
        return cv_fail(err, CV_ERR_IO, "%s: cannot read", path);
    }
    (*text)[size] = '\0';
    return CV_OK;
}

/* One run from a folder, a report page or a metrics file, checked to hold epochs. */
static cv_status load_run(const char *arg, cv_report_run *run, cv_err *err) {
    char path[CV_PATH_MAX + 16], *metrics = NULL, *command = NULL;
    struct stat sb;
    const bool folder = stat(arg, &sb) == 0 && S_ISDIR(sb.st_mode);
    snprintf(path, sizeof path, folder ? "%s/report.html" : "%s", arg);
    cv_status st;
    if (folder && !cv_path_exists(path))
        return cv_fail(err, CV_ERR_IO, "%s: no report.html (cvae train writes it with --out); "
                       "give the run's --metrics file instead", arg);
    FILE *fp = fopen(path, "rb");
    const bool jsonl = fp && fgetc(fp) == '{';
    if (fp) fclose(fp);
    if (jsonl)
        st = read_text(path, &metrics, err);
    else
        st = cv_report_read(path, &metrics, &command, err);
    if (st) return st;
    double epoch;
    if (!cv_report_metric(metrics, "epoch", &epoch)) {
        free(metrics);
        free(command);
        return cv_fail(err, CV_ERR_FORMAT, "%s: no epochs in its metrics", arg);
    }
    *run = (cv_report_run){arg, metrics, command};
    return CV_OK;
}

static cv_status write_page(char **args, int n, const char *out, const char *title,
                            cv_err *err) {
    if (cv_path_exists(out))
        return cv_fail(err, CV_ERR_IO, "%s: exists already; choose a new file", out);
    cv_report_run *runs = calloc((size_t)n, sizeof *runs);
    if (!runs) return cv_fail(err, CV_ERR_NOMEM, "out of host memory");
    cv_status st = CV_OK;
    for (int i = 0; i < n && !st; i++) st = load_run(args[i], &runs[i], err);
    char made[CV_PATH_MAX];
    if (!st) st = cv_prepare_output_file(out, made, err);
    if (!st) {
        char note[64];
        snprintf(note, sizeof note, "%d run%s compared", n, n == 1 ? "" : "s");
        const cv_report_page page = {title, note, runs, n, NULL, 0, NULL, 0};
        st = cv_report_write(out, &page, err);
        char copy[CV_PATH_MAX];
        snprintf(copy, sizeof copy, "%s", out);
        if (st) cv_unmake_dirs(dirname(copy), made);
    }
    for (int i = 0; i < n; i++) {
        free((void *)runs[i].metrics);
        free((void *)runs[i].command);
    }
    free(runs);
    if (!st) printf("wrote %s: %d run%s\n", out, n, n == 1 ? "" : "s");
    return st;
}

int cv_cmd_report(int argc, char **argv) {
    static const struct option opts[] = {
        {"out", required_argument, 0, OPT_OUT},
        {"title", required_argument, 0, OPT_TITLE},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *cmd = "report", *out = NULL, *title = "cvae runs";
    char **runs = calloc((size_t)argc, sizeof *runs);
    if (!runs) return cv_report(cmd, CV_ERR_NOMEM, &(cv_err){"out of host memory"});
    int n = 0, rc = 0;
    opterr = 0;
    optind = 1;
    while (optind < argc && !rc) { /* the runs may come before, between or after the flags */
        int c = cv_next_flag(cmd, argc, argv, opts, &rc);
        if (c == -1) {
            runs[n++] = argv[optind++];
        } else if (c == 'h') {
            fputs(help, stdout);
            free(runs);
            return 0;
        } else if (c == OPT_OUT) {
            out = optarg;
        } else if (c == OPT_TITLE) {
            title = optarg;
        }
    }
    if (!rc && !n) rc = cv_usage_error(cmd, "name at least one run (a run folder, report.html "
                                       "or metrics file)");
    if (!rc && (!out || !out[0])) rc = cv_usage_error(cmd, "--out FILE.html is required");
    if (!rc) {
        cv_err err;
        cv_status st = write_page(runs, n, out, title, &err);
        if (st) rc = cv_report(cmd, st, &err);
    }
    free(runs);
    return rc;
}
