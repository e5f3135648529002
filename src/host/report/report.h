/* report.h: the run report page (internal to the library and the program): one
 * self-contained HTML file, no script and nothing fetched, with a run's curves drawn as
 * inline SVG, its pictures as PNG data URIs, and its configuration; or several runs'
 * curves on one page. A run's own page also carries its metrics lines, which
 * cv_report_read takes back (for a resumed run, and for `cvae report`). */
#ifndef CVAE_REPORT_H
#define CVAE_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cvae/status.h"

/* One run: its label in legends and tables, its metrics lines (the JSON objects of
 * --metrics, one a line: epoch, train_loss, test_neg_elbo, test_rec, test_kl,
 * samples_per_s, seconds, beta, grad_norm, lr), and the command that ran it (or NULL). */
typedef struct {
    const char *label;
    const char *metrics;
    const char *command;
} cv_report_run;

typedef struct {
    const char *caption;
    const uint8_t *png;
    size_t bytes;
    int width; /* the width to show it at, in CSS pixels */
} cv_report_picture;

typedef struct {
    const char *key, *value;
} cv_report_item;

typedef struct {
    const char *title;
    const char *note;                    /* a line under the title, or NULL */
    const cv_report_run *runs;           /* one run: its page, with its data embedded */
    int n_runs;
    const cv_report_picture *pictures;
    int n_pictures;
    const cv_report_item *items;         /* the run's configuration, device, build ... */
    int n_items;
} cv_report_page;

/* Writes the page to path under a temporary name, fsynced and renamed: a reader sees the
 * previous page or the new one, whole. */
cv_status cv_report_write(const char *path, const cv_report_page *page, cv_err *err);

/* The curves of the runs as SVG charts, one per metric, appended to fp (report_charts.c). */
cv_status cv_report_charts(FILE *fp, const cv_report_run *runs, int n_runs, cv_err *err);

/* s as HTML or SVG text: &, <, > and quotes escaped (report_text.c). */
void cv_report_text(FILE *fp, const char *s);

/* The metrics lines and the command a run's page embeds (malloc'd; *command NULL when the
 * page has none). CV_ERR_FORMAT for a file that is no run page of cvae. */
cv_status cv_report_read(const char *path, char **metrics, char **command, cv_err *err);

/* The value of "key" in a metrics line: false when absent or null. */
bool cv_report_metric(const char *line, const char *key, double *value);

#endif
