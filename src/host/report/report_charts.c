/* report_charts.c: the curves of a report page, one inline SVG chart per metric, each run
 * a polyline through one point per epoch (a circle with its value as a tooltip). Axes
 * have ticks at round numbers, the epoch below and the unit beside; nothing is scripted. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "report/report.h"

typedef struct {
    const char *key, *title, *unit;
} metric;

static const metric metrics[] = {
    {"train_loss", "Training loss", "nats / image"},
    {"test_neg_elbo", "Test -ELBO", "nats / image"},
    {"test_rec", "Test reconstruction term", "nats / image"},
    {"test_kl", "Test KL term", "nats / image"},
    {"beta", "KL weight beta", "dimensionless"},
    {"lr", "Learning rate", "per step, at the epoch's end"},
    {"grad_norm", "Gradient norm", "L2, before clipping, epoch mean"},
    {"samples_per_s", "Training throughput", "samples / s"},
};
#define N_METRICS (int)(sizeof metrics / sizeof metrics[0])

static const char *const palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e",
                                      "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"};

/* The chart's frame, in SVG user units. */
enum { WIDTH = 460, HEIGHT = 250, LEFT = 70, RIGHT = 14, TOP = 30, BOTTOM = 44, MAX_TICKS = 24 };

bool cv_report_metric(const char *line, const char *key, double *value) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\": ", key);
    const char *at = strstr(line, pattern);
    if (!at) return false;
    char *end;
    *value = strtod(at + strlen(pattern), &end);
    return end != at + strlen(pattern) && isfinite(*value);
}

/* One run's points: the epochs and each metric's value at them (NaN: none). */
typedef struct {
    int n;
    double *epoch;
    double *value[N_METRICS];
} points;

static bool parse_points(const char *text, points *p) {
    memset(p, 0, sizeof *p);
    int lines = 0;
    for (const char *c = text; c && *c; c++) lines += *c == '\n';
    p->epoch = malloc((size_t)(lines + 1) * sizeof(double));
    for (int m = 0; m < N_METRICS; m++) p->value[m] = malloc((size_t)(lines + 1) * sizeof(double));
    for (int m = 0; m < N_METRICS; m++)
        if (!p->value[m]) return false;
    if (!p->epoch) return false;
    for (const char *line = text; line && *line;) {
        const char *next = strchr(line, '\n');
        size_t len = next ? (size_t)(next - line) : strlen(line);
        char buf[1024];
        snprintf(buf, sizeof buf, "%.*s", (int)(len < sizeof buf ? len : sizeof buf - 1), line);
        double e;
        if (cv_report_metric(buf, "epoch", &e)) {
            p->epoch[p->n] = e;
            for (int m = 0; m < N_METRICS; m++)
                if (!cv_report_metric(buf, metrics[m].key, &p->value[m][p->n]))
                    p->value[m][p->n] = NAN;
            p->n++;
        }
        line = next ? next + 1 : NULL;
    }
    return true;
}

static void free_points(points *p) {
    free(p->epoch);
    for (int m = 0; m < N_METRICS; m++) free(p->value[m]);
}

/* A round step (1, 2 or 5 times a power of ten) giving about `target` ticks over span. */
static double nice_step(double span, int target) {
    double raw = span / target, mag = pow(10.0, floor(log10(raw))), f = raw / mag;
    return (f < 1.5 ? 1.0 : f < 3.0 ? 2.0 : f < 7.0 ? 5.0 : 10.0) * mag;
}

typedef struct {
    double x0, x1, y0, y1; /* data ranges shown */
} frame;

static double px(const frame *f, double x) {
    return LEFT + (x - f->x0) / (f->x1 - f->x0) * (WIDTH - LEFT - RIGHT);
}
static double py(const frame *f, double y) {
    return HEIGHT - BOTTOM - (y - f->y0) / (f->y1 - f->y0) * (HEIGHT - TOP - BOTTOM);
}

/* The axes: ticks at round numbers, the epoch below, the unit beside. */
static void axes(FILE *fp, const frame *f, double ystep, double xstep, const metric *m) {
    fprintf(fp, "<line class=\"axis\" x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\"/>", LEFT,
            HEIGHT - BOTTOM, WIDTH - RIGHT, HEIGHT - BOTTOM);
    fprintf(fp, "<line class=\"axis\" x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\"/>\n", LEFT, TOP,
            LEFT, HEIGHT - BOTTOM);
    /* each tick from its index, not by adding steps: a step below the values' ulp would
     * never move; MAX_TICKS bounds the loop whatever the values */
    for (int i = 0; i <= MAX_TICKS; i++) {
        const double y = f->y0 + i * ystep;
        if (!(y <= f->y1 + 1e-9 * ystep)) break;
        fprintf(fp, "<line class=\"grid\" x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\"/>"
                    "<text class=\"tick\" x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%.6g</text>\n",
                LEFT, py(f, y), WIDTH - RIGHT, py(f, y), LEFT - 5, py(f, y) + 4,
                fabs(y) < 1e-12 * ystep ? 0.0 : y);
    }
    for (int i = 0; i <= MAX_TICKS; i++) { /* at multiples of the step, as the y ticks */
        const double x = ceil(f->x0 / xstep) * xstep + i * xstep;
        if (!(x <= f->x1 + 1e-9)) break;
        fprintf(fp, "<text class=\"tick\" x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%g</text>\n",
                px(f, x), HEIGHT - BOTTOM + 16, x);
    }
    fprintf(fp, "<text class=\"label\" x=\"%d\" y=\"%d\" text-anchor=\"middle\">epoch</text>\n",
            (LEFT + WIDTH - RIGHT) / 2, HEIGHT - 8);
    fprintf(fp, "<text class=\"label\" transform=\"translate(14 %d) rotate(-90)\" "
                "text-anchor=\"middle\">", (TOP + HEIGHT - BOTTOM) / 2);
    cv_report_text(fp, m->unit);
    fprintf(fp, "</text>\n<text class=\"title\" x=\"%d\" y=\"18\">", LEFT);
    cv_report_text(fp, m->title);
    fputs("</text>\n", fp);
}

/* The data range of metric m over every run, false when no run has a value. */
static bool range(const points *runs, int n_runs, int m, frame *f) {
    bool any = false;
    f->x0 = f->y0 = INFINITY;
    f->x1 = f->y1 = -INFINITY;
    for (int r = 0; r < n_runs; r++)
        for (int i = 0; i < runs[r].n; i++) {
            double v = runs[r].value[m][i], e = runs[r].epoch[i];
            if (isnan(v)) continue;
            any = true;
            f->y0 = fmin(f->y0, v);
            f->y1 = fmax(f->y1, v);
            f->x0 = fmin(f->x0, e);
            f->x1 = fmax(f->x1, e);
        }
    return any;
}

static void chart(FILE *fp, const points *runs, const cv_report_run *info, int n_runs, int m) {
    fprintf(fp, "<figure class=\"chart\" data-metric=\"%s\"><svg "
                "width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"",
            metrics[m].key, WIDTH, HEIGHT, WIDTH, HEIGHT);
    cv_report_text(fp, metrics[m].title);
    fputs(" by epoch\">\n", fp);
    frame f;
    if (!range(runs, n_runs, m, &f)) {
        axes(fp, &(frame){0, 1, 0, 1}, 1, 1, &metrics[m]);
        fprintf(fp, "<text class=\"empty\" x=\"%d\" y=\"%d\" text-anchor=\"middle\">no values "
                    "(a run without a test split has no test figures)</text>\n",
                (LEFT + WIDTH - RIGHT) / 2, (TOP + HEIGHT - BOTTOM) / 2);
        fputs("</svg></figure>\n", fp);
        return;
    }
    const double pad = f.y1 > f.y0 ? 0.05 * (f.y1 - f.y0) : fmax(fabs(f.y0) * 0.05, 1e-6);
    double ystep = nice_step(f.y1 - f.y0 + 2 * pad, 5);
    const bool positive = f.y0 >= 0; /* then no axis below 0 */
    f.y0 = floor((f.y0 - pad) / ystep) * ystep;
    if (positive && f.y0 < 0) f.y0 = 0;
    f.y1 = ceil((f.y1 + pad) / ystep) * ystep;
    const double xstep = f.x1 - f.x0 <= 12 ? 1 : ceil(nice_step(f.x1 - f.x0, 8));
    f.x0 -= 0.5;
    f.x1 += 0.5;
    axes(fp, &f, ystep, xstep, &metrics[m]);
    for (int r = 0; r < n_runs; r++) {
        const char *colour = palette[r % (int)(sizeof palette / sizeof palette[0])];
        fprintf(fp, "<polyline class=\"line\" stroke=\"%s\" points=\"", colour);
        for (int i = 0; i < runs[r].n; i++)
            if (!isnan(runs[r].value[m][i]))
                fprintf(fp, "%.1f,%.1f ", px(&f, runs[r].epoch[i]), py(&f, runs[r].value[m][i]));
        fprintf(fp, "\"/>\n<g class=\"points\" data-run=\"%d\" fill=\"%s\">", r, colour);
        for (int i = 0; i < runs[r].n; i++) {
            double v = runs[r].value[m][i];
            if (isnan(v)) continue;
            fprintf(fp, "<circle class=\"pt\" cx=\"%.1f\" cy=\"%.1f\" r=\"3\"><title>",
                    px(&f, runs[r].epoch[i]), py(&f, v));
            cv_report_text(fp, info[r].label);
            fprintf(fp, ", epoch %g: %.6g</title></circle>", runs[r].epoch[i], v);
        }
        fputs("</g>\n", fp);
    }
    fputs("</svg></figure>\n", fp);
}

cv_status cv_report_charts(FILE *fp, const cv_report_run *runs, int n_runs, cv_err *err) {
    points *p = calloc((size_t)n_runs, sizeof *p);
    bool ok = p != NULL;
    for (int r = 0; ok && r < n_runs; r++) ok = parse_points(runs[r].metrics, &p[r]);
    if (ok) {
        fputs("<div class=\"charts\">\n", fp);
        for (int m = 0; m < N_METRICS; m++) chart(fp, p, runs, n_runs, m);
        fputs("</div>\n", fp);
    }
    for (int r = 0; p && r < n_runs; r++) free_points(&p[r]);
    free(p);
    return ok ? CV_OK : cv_fail(err, CV_ERR_NOMEM, "out of host memory for the curves");
}
