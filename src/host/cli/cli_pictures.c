/* cli_pictures.c: cvae generate's pictures of the latent space, --format traversal and
 * --format interpolate (cv_latent_traversal, cv_latent_interpolation). */
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "cvae/eval.h"
#include "cvae/latent.h"
#include "data/png.h"
#include "util/fileio.h"

/* The test split of the request's data, checked against the model and the two images. */
static cv_status load_test_split(const cv_picture_request *q, const cv_checkpoint *ck,
                                 const char *model, cv_data *d, cv_err *err) {
    const cv_model_config *cfg = &ck->cfg;
    cv_data_files files = q->files;
    files.test_only = true;
    cv_data_files_for_model(&files, ck);
    const char *name = q->data ? q->data : q->files.test_table ? q->files.test_table
                                                               : q->files.test_images;
    cv_status st = cv_data_load_files(q->data, &files, 0, d, err);
    if (!st) st = cv_data_names_fit(d, ck, name, model, err);
    if (!st && !d->test.n)
        st = cv_fail(err, CV_ERR_IO, "%s: no test images to interpolate between", name);
    if (!st) st = cv_model_fit_labels(cfg, d, name, err);
    if (!st) st = cv_model_takes(cfg, d, &d->test, name, err);
    for (int i = 0; !st && i < 2; i++)
        if (q->images[i] >= d->test.n)
            st = cv_fail(err, CV_ERR_USAGE, "--images: image %d is not among the %d test images",
                         q->images[i], d->test.n);
    return st;
}

/* The request checked before the device is opened: a traversal's conditions (as a grid's:
 * the model's kind, at most 256 rows), the picture's channels, the output file. */
static cv_status check_request(const cv_checkpoint *ck, const cv_generate_options *o,
                               const cv_picture_request *q, cv_err *err) {
    cv_generate_options as_grid = *o;
    as_grid.format = CV_FMT_GRID;
    if (!q->interpolate && o->cond.conditions && ck->cfg.condition == CV_COND_LABELS)
        return cv_fail(err, CV_ERR_USAGE, "the model takes class labels (%d classes): give "
                       "--classes LIST or --labels FILE, not --conditions", ck->cfg.cond_width);
    cv_status st = q->interpolate ? CV_OK : cv_generate_check(&ck->cfg, &as_grid, err);
    if (!st && ck->cfg.channels > CV_PNG_MAX_CHANNELS)
        st = cv_fail(err, CV_ERR_USAGE, "images of %d channels do not fit a PNG (1 to %d)",
                     ck->cfg.channels, CV_PNG_MAX_CHANNELS);
    if (!st && q->units > ck->cfg.latent)
        st = cv_fail(err, CV_ERR_USAGE, "--units %d: the model has %d latent units", q->units,
                     ck->cfg.latent);
    return st ? st : cv_generate_check_output(&as_grid, err);
}

/* The picture drawn into tiles; a traversal prints its units' order. */
static cv_status draw(cv_model *m, cv_workspace *ws, const cv_generate_options *o,
                      const cv_picture_request *q, const cv_split *test, cv_tiles *tiles,
                      cv_err *err) {
    if (q->interpolate)
        return cv_latent_interpolation(m, ws, test, q->images[0], q->images[1], q->steps, tiles,
                                       err);
    const int L = m->layout.cfg.latent;
    const int units = q->units ? q->units : L < 64 ? L : 64;
    int *order = malloc((size_t)L * sizeof(int));
    if (!order) return cv_fail(err, CV_ERR_NOMEM, "out of host memory");
    cv_status st = cv_latent_traversal(m, ws, &o->cond, units, q->steps, NULL, tiles, order, err);
    if (!st) {
        printf("rows: units, most active first:");
        for (int u = 0; u < units; u++) printf(" %d", order[u]);
        printf("\n");
    }
    free(order);
    return st;
}

int cv_generate_picture(const char *device, cv_checkpoint *ck, cv_generate_options *o,
                        const cv_picture_request *q) {
    const char *cmd = "generate";
    cv_err err;
    cv_data d = {0};
    cv_status st = check_request(ck, o, q, &err);
    if (!st && q->interpolate) st = load_test_split(q, ck, o->checkpoint ? o->checkpoint : "the model", &d, &err);
    if (st) {
        cv_data_free(&d);
        return cv_report(cmd, st, &err);
    }
    cv_backend *be = NULL;
    cv_model m = {0};
    cv_workspace ws = {0};
    cv_tiles tiles = {0};
    char made[CV_PATH_MAX], copy[CV_PATH_MAX];
    st = cv_backend_open(device, NULL, &be, &err);
    if (!st) st = cv_model_from_checkpoint(be, ck, &m, &err);
    if (!st) st = cv_workspace_create(&m, q->steps, &ws, &err);
    if (!st) {
        printf("device: %s\n", be->description);
        st = draw(&m, &ws, o, q, &d.test, &tiles, &err);
    }
    const cv_model_config *c = &ck->cfg;
    if (!st) st = cv_prepare_output_file(o->out, made, &err);
    if (!st) {
        st = cv_png_write_grid(o->out, tiles.pixels, tiles.rows, tiles.cols, c->height, c->width,
                               c->channels, 2, &err);
        snprintf(copy, sizeof copy, "%s", o->out);
        if (st) cv_unmake_dirs(dirname(copy), made);
    }
    if (!st)
        printf("wrote %s: %d rows x %d columns\n", o->out, tiles.rows, tiles.cols);
    free(tiles.pixels);
    if (ws.max_rows) cv_workspace_destroy(&m, &ws);
    cv_model_destroy(&m);
    if (be) be->destroy(be);
    cv_data_free(&d);
    return st ? cv_report(cmd, st, &err) : 0;
}
