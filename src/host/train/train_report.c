/* train_report.c: RUNDIR/report.html, rewritten at each epoch's end (rank 0's work): the
 * run's curves from its metrics lines, its pictures drawn from the model as it stands
 * (samples, reconstructions, a latent traversal), its settings as the run's header
 * prints them, the command, the device and the build. The pictures use the run's
 * workspace between steps and draw no random numbers from the training streams, so the
 * training itself is unchanged by the report. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "build_info.h"
#include "cvae/latent.h"
#include "cvae/version.h"
#include "data/png.h"
#include "report/report.h"
#include "train_run.h"

#define TRAVERSAL_UNITS 12 /* at most this many rows: the most active units */
#define TRAVERSAL_STEPS 9
#define ACTIVITY_IMAGES 500 /* the images the traversal's units are ranked over */

/* What this cvae was built with, in one line. */
static void build_line(char *buf, size_t size) {
    snprintf(buf, size, "cvae %s; CUDA backend %s%s; MPI %s%s; ONNX export %s; %s %s; "
             "OpenBLAS %s kernels", CVAE_VERSION_STRING,
             CV_BUILD_CUDA ? "built for " : "not built", CV_BUILD_CUDA ? CV_BUILD_CUDA_CODES : "",
             CV_BUILD_MPI ? "yes" : "no", CV_BUILD_NCCL ? " with NCCL" : "",
             CV_BUILD_ONNX ? "yes" : "no",
#ifdef __clang__
             "clang",
#else
             "gcc",
#endif
             __VERSION__, openblas_get_corename());
}

/* The run's settings as its header prints them (cv_run_print_header), into a string
 * (malloc'd; NULL out of memory). */
static char *settings_text(const cv_train_options *o, const run_state *r,
                           const progress_state *p) {
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    if (!fp) return NULL;
    run_state printing = *r; /* the same state, printing into the string */
    printing.log = fp;
    cv_run_print_header(o, &printing, p);
    if (fclose(fp) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

/* The header's lines as items: "key: value" split at the first ": ". */
static int settings_items(char *text, cv_report_item *items, int max) {
    int n = 0;
    for (char *line = strtok(text, "\n"); line && n < max; line = strtok(NULL, "\n")) {
        char *sep = strstr(line, ": ");
        if (sep) *sep = '\0';
        items[n++] = (cv_report_item){sep ? line : "", sep ? sep + 2 : line};
    }
    return n;
}

typedef struct {
    cv_report_picture pictures[3];
    int n;
    char captions[3][256];
} picture_set;

/* One picture's tiles encoded as PNG into the set; the tiles are freed. */
static cv_status add_picture(picture_set *s, const cv_model_config *c, cv_tiles *t,
                             const char *caption, cv_err *err) {
    uint8_t *png;
    size_t bytes;
    cv_status st = cv_png_encode_grid(t->pixels, t->rows, t->cols, c->height, c->width,
                                      c->channels, 2, &png, &bytes, err);
    free(t->pixels);
    if (st) return st;
    snprintf(s->captions[s->n], sizeof s->captions[s->n], "%s", caption);
    /* small grids shown larger, pixels kept sharp by the page's style */
    const int width = t->cols * (c->width + 2) + 2;
    const int shown = width < 200 ? 3 * width : width < 400 ? width * 3 / 2 : width;
    s->pictures[s->n] = (cv_report_picture){s->captions[s->n], png, bytes, shown};
    s->n++;
    return CV_OK;
}

/* The samples grid and reconstructions of cv_run_write_pictures, and a traversal under
 * the first condition, from the model as it stands. */
static cv_status draw_pictures(const cv_train_options *o, run_state *r, picture_set *s,
                               cv_err *err) {
    const cv_model_config *c = &r->model.layout.cfg;
    if (c->channels > CV_PNG_MAX_CHANNELS) return CV_OK; /* no pictures: see the header */
    const cv_split *src = r->data.test.n ? &r->data.test : &r->data.train;
    const int count = src->n < 10 ? src->n : 10;
    const cv_gen_conditions rows = cv_run_picture_conditions(r, src, count);
    cv_tiles t;
    cv_status st = cv_generate_grid_tiles(&r->model, &r->ws, &rows, 10, false, true, o->seed,
                                          &t, err);
    if (!st)
        st = add_picture(s, c, &t, r->data.condition == CV_COND_LABELS
                                       ? "Samples: a row per class, decoded means of z ~ p(z|c)"
                                       : "Samples: a row per condition of the first images, "
                                         "decoded means of z ~ p(z|c)", err);
    if (!st) st = cv_reconstruction_tiles(&r->model, &r->ws, src, count, &t, err);
    if (!st)
        st = add_picture(s, c, &t, r->data.test.n ? "Reconstructions: test images above "
                                                    "their decoded posterior means"
                                                  : "Reconstructions: training images above "
                                                    "their decoded posterior means", err);
    const cv_gen_conditions first = r->data.condition == CV_COND_LABELS
        ? (cv_gen_conditions){.n_classes = 1, .classes = {0}}
        : (cv_gen_conditions){.conditions = src->conditions, .n_rows = 1};
    const int units = c->latent < TRAVERSAL_UNITS ? c->latent : TRAVERSAL_UNITS;
    int *order = malloc((size_t)c->latent * sizeof(int));
    double *activity = malloc((size_t)c->latent * sizeof(double));
    if (!st && (!order || !activity)) st = cv_fail(err, CV_ERR_NOMEM, "out of host memory");
    /* ranked by the posterior means' variance over some images: as cheap for any latent
     * size, where decoding every unit's row grows with its square */
    if (!st) st = cv_posterior_activity(&r->model, &r->ws, src, ACTIVITY_IMAGES, activity, err);
    if (!st)
        st = cv_latent_traversal(&r->model, &r->ws, &first, units, TRAVERSAL_STEPS, activity, &t,
                                 order, err);
    char caption[256];
    snprintf(caption, sizeof caption, "Traversal under %s: a row per latent unit, the %d most "
             "active (by the variance of their posterior means over %d %s images; first: unit "
             "%d), across -3..3 prior standard deviations",
             r->data.condition == CV_COND_LABELS ? "class 0" : "the first condition row", units,
             src->n < ACTIVITY_IMAGES ? src->n : ACTIVITY_IMAGES,
             r->data.test.n ? "test" : "training", order && !st ? order[0] : 0);
    if (!st) st = add_picture(s, c, &t, caption, err);
    free(order);
    free(activity);
    return st;
}

cv_status cv_run_write_report(const cv_train_options *o, run_state *r, const progress_state *p,
                              cv_err *err) {
    char path[4200], note[256], build[512], when[64];
    snprintf(path, sizeof path, "%s/report.html", o->out_dir);
    const time_t now = time(NULL);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", gmtime(&now));
    snprintf(note, sizeof note, "Written after epoch %d of %d, %s; the page is rewritten at "
             "each epoch's end: reload it to follow the run.", p->epoch, o->epochs, when);
    build_line(build, sizeof build);
    picture_set pics = {.n = 0};
    char *settings = settings_text(o, r, p);
    cv_status st = settings ? draw_pictures(o, r, &pics, err)
                            : cv_fail(err, CV_ERR_NOMEM, "out of host memory for the report");
    if (!st) {
        cv_report_item items[24];
        int n = 0;
        items[n++] = (cv_report_item){"command", o->command ? o->command : "not recorded "
                                                 "(started through the C API)"};
        n += settings_items(settings, items + n, 20);
        items[n++] = (cv_report_item){"build", build};
        char title[4300];
        snprintf(title, sizeof title, "cvae run %s", o->out_dir);
        const cv_report_run run = {o->out_dir, r->metrics ? r->metrics : "", o->command};
        const cv_report_page page = {title, note, &run, 1, pics.pictures, pics.n, items, n};
        st = cv_report_write(path, &page, err);
    }
    for (int i = 0; i < pics.n; i++) free((void *)pics.pictures[i].png);
    free(settings);
    return st;
}

void cv_run_print_report_path(const cv_train_options *o, run_state *r) {
    char path[4200];
    snprintf(path, sizeof path, "%s/report.html", o->out_dir);
    if (cv_path_exists(path)) fprintf(r->log, "report: %s\n", path);
}

void cv_run_load_report_metrics(const char *out_dir, int epochs_done, run_state *r) {
    char path[4200], *metrics, *command;
    snprintf(path, sizeof path, "%s/report.html", out_dir);
    cv_err err;
    if (cv_report_read(path, &metrics, &command, &err)) return; /* none: the epochs to come */
    FILE *fp = fmemopen(metrics, strlen(metrics), "r");
    if (fp) {
        cv_run_keep_metrics(fp, epochs_done, r);
        fclose(fp);
    }
    free(metrics);
    free(command);
}
