/* latent.c: encoding images into their posteriors and reading back decoded means
 * (latent.h). Shapes: x (rows, D), [mean | logvar] (rows, 2L), means (rows, D). */
#include <stdlib.h>
#include <string.h>

#include "cv_math.h"
#include "cvae/latent.h"

cv_status cv_workspace_load_split(cv_model *m, cv_workspace *ws, const cv_split *s, int first,
                                  int rows, cv_err *err) {
    CV_ASSERT(rows >= 1 && rows <= ws->max_rows && first >= 0 && first + rows <= s->n);
    cv_backend *be = m->be;
    const size_t D = (size_t)m->layout.dim, n = (size_t)rows, at = (size_t)first;
    float *x = malloc(n * D * sizeof(float));
    int32_t *lab = malloc(n * sizeof(int32_t));
    if (!x || !lab) {
        free(x);
        free(lab);
        return cv_fail(err, CV_ERR_NOMEM, "out of host memory: %zu images need %.1f MiB", n,
                       (double)(n * D * sizeof(float)) / 1048576.0);
    }
    for (size_t i = 0; i < n * D; i++) x[i] = cv_pixel_value(s->pixels, s->fpixels, at * D + i);
    for (size_t i = 0; i < n && s->labels; i++) lab[i] = s->labels[at + i];
    be->upload(be, ws->x, x, n * D * sizeof(float));
    if (s->labels) be->upload(be, ws->labels, lab, n * sizeof(int32_t));
    if (s->conditions)
        be->upload(be, ws->cond, s->conditions + at * (size_t)s->cond_width,
                   n * (size_t)s->cond_width * sizeof(float));
    free(x);
    free(lab);
    return CV_OK;
}

cv_status cv_encode_split(cv_model *m, cv_workspace *ws, const cv_split *s, float *out,
                          cv_err *err) {
    const int L = m->layout.cfg.latent;
    for (int first = 0; first < s->n; first += ws->max_rows) {
        const int rows = s->n - first < ws->max_rows ? s->n - first : ws->max_rows;
        cv_status st = cv_workspace_load_split(m, ws, s, first, rows, err);
        if (st) return st;
        cv_model_encode(m, ws, rows);
        float *dst = out + (size_t)first * 2 * L;
        m->be->download(m->be, dst, ws->act[m->layout.n_enc - 1],
                        (size_t)rows * 2 * L * sizeof(float));
        for (int r = 0; r < rows; r++) /* the log-variance half, clamped as reparam does */
            for (int j = L; j < 2 * L; j++)
                dst[(size_t)r * 2 * L + j] = cv_clamp_logvar(dst[(size_t)r * 2 * L + j]);
    }
    return CV_OK;
}

void cv_decoded_means(cv_model *m, cv_workspace *ws, int rows, float *out) {
    const size_t n = (size_t)rows * m->layout.dim;
    m->be->download(m->be, out, ws->act[m->layout.n_layers - 1], n * sizeof(float));
    for (size_t i = 0; i < n; i++) out[i] = cv_sigmoid(out[i]);
}
