/* model.c: the CVAE's layout, initialisation, forward and backward pass.
 *
 * Written once over the backend table; it never names a device. Shapes: x (B, D),
 * hidden activations (B, H_i), enc (B, 2L) = [mu | s], z (B, L), logits (B, D).
 * Gradient rule: parameter gradients +=, activation gradients =.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cv_math.h"
#include "cvae/model.h"
#include "cvae/rng.h"
#include "model/model_internal.h"

static void add_layer(cv_layout *lo, int in, int out, bool cond, bool relu) {
    CV_ASSERT(lo->n_layers < CV_MAX_LAYERS);
    cv_layer *l = &lo->layers[lo->n_layers++];
    l->in = in;
    l->out = out;
    l->relu = relu;
    l->w = lo->n_params;
    lo->n_params += (size_t)in * out;
    l->cond = CV_NO_COND;
    if (cond) {
        l->cond = lo->n_params;
        lo->n_params += (size_t)lo->cfg.cond_width * out;
    }
    l->b = lo->n_params;
    lo->n_params += (size_t)out;
}

/* The image shape and the condition of a config. */
static cv_status check_data_shape(const cv_model_config *cfg, cv_err *err) {
    if (cfg->height <= 0 || cfg->width <= 0 || cfg->channels <= 0 ||
        cfg->height > CV_MAX_IMAGE_SIDE || cfg->width > CV_MAX_IMAGE_SIDE ||
        cfg->channels > CV_MAX_IMAGE_SIDE)
        return cv_fail(err, CV_ERR_USAGE, "image size %dx%dx%d is out of range",
                       cfg->height, cfg->width, cfg->channels);
    /* 2^24 values (4096 x 4096) keep D and every per-image offset well inside an int;
     * offsets over rows of D are computed in size_t */
    if ((int64_t)cfg->height * cfg->width * cfg->channels > CV_MAX_IMAGE_VALUES)
        return cv_fail(err, CV_ERR_USAGE, "images of %dx%dx%d are over the 2^24 values "
                       "supported", cfg->height, cfg->width, cfg->channels);
    if (cfg->condition == CV_COND_LABELS &&
        (cfg->cond_width < 1 || cfg->cond_width > CV_MAX_CLASSES))
        return cv_fail(err, CV_ERR_USAGE, "number of classes %d is out of range 1..%d",
                       cfg->cond_width, CV_MAX_CLASSES);
    if (cfg->condition == CV_COND_VECTORS &&
        (cfg->cond_width < 1 || cfg->cond_width > CV_MAX_COND_WIDTH))
        return cv_fail(err, CV_ERR_USAGE, "condition width %d is out of range 1..%d",
                       cfg->cond_width, CV_MAX_COND_WIDTH);
    if (cfg->condition != CV_COND_LABELS && cfg->condition != CV_COND_VECTORS)
        return cv_fail(err, CV_ERR_USAGE, "unknown condition kind %d", (int)cfg->condition);
    return CV_OK;
}

cv_status cv_layout_init(const cv_model_config *cfg, cv_layout *lo, cv_err *err) {
    memset(lo, 0, sizeof *lo);
    cv_status st = check_data_shape(cfg, err);
    if (st) return st;
    if (cfg->latent < 1 || cfg->latent > 65536)
        return cv_fail(err, CV_ERR_USAGE, "latent size %d is out of range 1..65536",
                       cfg->latent);
    if (cfg->prior != CV_PRIOR_STANDARD && cfg->prior != CV_PRIOR_CONDITIONAL)
        return cv_fail(err, CV_ERR_USAGE, "unknown prior %d", (int)cfg->prior);
    if (cfg->likelihood != CV_LIKELIHOOD_BERNOULLI && cfg->likelihood != CV_LIKELIHOOD_GAUSSIAN)
        return cv_fail(err, CV_ERR_USAGE, "unknown likelihood %d", (int)cfg->likelihood);
    if (cfg->likelihood == CV_LIKELIHOOD_GAUSSIAN && !(cfg->sigma > 0.0f && isfinite(cfg->sigma)))
        return cv_fail(err, CV_ERR_USAGE, "the Gaussian likelihood needs a sigma > 0");
    if (cfg->sigma_learned && cfg->likelihood != CV_LIKELIHOOD_GAUSSIAN)
        return cv_fail(err, CV_ERR_USAGE, "a learned sigma needs the Gaussian likelihood");
    if (cfg->n_hidden < 1 || cfg->n_hidden > CV_MAX_HIDDEN)
        return cv_fail(err, CV_ERR_USAGE, "between 1 and %d hidden layers are supported",
                       CV_MAX_HIDDEN);
    for (int i = 0; i < cfg->n_hidden; i++)
        if (cfg->hidden[i] < 1 || cfg->hidden[i] > 65536)
            return cv_fail(err, CV_ERR_USAGE, "hidden size %d is out of range 1..65536",
                           cfg->hidden[i]);
    lo->cfg = *cfg;
    lo->dim = cfg->height * cfg->width * cfg->channels;
    const int nh = cfg->n_hidden, L = cfg->latent;

    int in = lo->dim;
    for (int i = 0; i < nh; i++) {
        add_layer(lo, in, cfg->hidden[i], i == 0, true);
        in = cfg->hidden[i];
    }
    add_layer(lo, in, 2 * L, false, false);
    lo->n_enc = lo->n_layers;

    in = L;
    for (int i = nh - 1; i >= 0; i--) {
        add_layer(lo, in, cfg->hidden[i], i == nh - 1, true);
        in = cfg->hidden[i];
    }
    add_layer(lo, in, lo->dim, false, false);
    lo->prior_m = lo->prior_r = CV_NO_COND;
    if (cfg->prior == CV_PRIOR_CONDITIONAL) {
        lo->prior_m = lo->n_params;
        lo->prior_r = lo->prior_m + (size_t)cfg->cond_width * L;
        lo->n_params = lo->prior_r + (size_t)cfg->cond_width * L;
    }
    lo->log_sigma = CV_NO_COND;
    if (cfg->sigma_learned) lo->log_sigma = lo->n_params++;
    return CV_OK;
}

const char *cv_condition_kind_name(cv_condition_kind kind) {
    return kind == CV_COND_VECTORS ? "condition vectors" : "class labels";
}

cv_status cv_model_takes(const cv_model_config *c, const cv_data *d, const cv_split *s,
                         const char *name, cv_err *err) {
    if (s->h != c->height || s->w != c->width || s->channels != c->channels)
        /* the checkpoint keeps the size, not how PNG or JPEG files were cut to it */
        return cv_fail(err, CV_ERR_FORMAT, "%s: images are %dx%dx%d but the model takes "
                       "%dx%dx%d (PNG or JPEG files take the --image-size, --crop and "
                       "--channels of its training)", name, s->h, s->w, s->channels,
                       c->height, c->width, c->channels);
    if (d->condition != c->condition || d->cond_width != c->cond_width)
        return cv_fail(err, CV_ERR_FORMAT, "%s: the data has %s of width %d but the model "
                       "takes %s of width %d", name, cv_condition_kind_name(d->condition),
                       d->cond_width, cv_condition_kind_name(c->condition), c->cond_width);
    return CV_OK;
}

static cv_status labels_fit(const cv_split *s, const char *split, int classes,
                            const char *name, cv_err *err) {
    for (int i = 0; s->labels && i < s->n; i++)
        if (s->labels[i] >= classes)
            return cv_fail(err, CV_ERR_FORMAT, "%s: %s label %d at index %d is not among the "
                           "model's %d classes (0..%d)", name, split, s->labels[i], i, classes,
                           classes - 1);
    return CV_OK;
}

cv_status cv_model_fit_labels(const cv_model_config *c, cv_data *d, const char *name,
                              cv_err *err) {
    if (c->condition != CV_COND_LABELS || d->condition != CV_COND_LABELS) return CV_OK;
    cv_status st = labels_fit(&d->train, "training", c->cond_width, name, err);
    if (!st) st = labels_fit(&d->test, "test", c->cond_width, name, err);
    if (!st) d->cond_width = c->cond_width;
    return st;
}

static bool has_vectors(const cv_model *m) { return m->layout.cfg.condition == CV_COND_VECTORS; }

/* The prior as the batch's operations read it: the tables (labels), or the rows in ws
 * that cv_model_batch_prior computed (condition vectors). */
const cv_prior *cv_model_prior_of(const cv_model *m, const cv_workspace *ws, cv_prior *p) {
    const cv_layout *lo = &m->layout;
    if (lo->prior_m == CV_NO_COND) return NULL;
    *p = has_vectors(m) ? (cv_prior){ws->prior_m, ws->prior_r, true}
                        : (cv_prior){m->params + lo->prior_m, m->params + lo->prior_r, false};
    return p;
}

const cv_prior *cv_model_batch_prior(cv_model *m, cv_workspace *ws, int rows,
                                     cv_prior *storage) {
    const cv_layout *lo = &m->layout;
    if (lo->prior_m != CV_NO_COND && has_vectors(m)) {
        /* M c and R c of each row: (rows, K) x (K, L) */
        const int K = lo->cfg.cond_width, L = lo->cfg.latent;
        cv_backend *be = m->be;
        be->gemm(be, false, false, rows, L, K, 1.0f, ws->cond, K, m->params + lo->prior_m, L,
                 0.0f, ws->prior_m, L);
        be->gemm(be, false, false, rows, L, K, 1.0f, ws->cond, K, m->params + lo->prior_r, L,
                 0.0f, ws->prior_r, L);
    }
    return cv_model_prior_of(m, ws, storage);
}

void cv_layout_describe(const cv_layout *lo, size_t index, char *buf, size_t size) {
    for (int i = 0; i < lo->n_layers; i++) {
        const cv_layer *l = &lo->layers[i];
        if (index < l->w || index >= l->b + (size_t)l->out) continue;
        char layer[64];
        if (i < lo->n_enc - 1)
            snprintf(layer, sizeof layer, "encoder layer %d", i + 1);
        else if (i == lo->n_enc - 1)
            snprintf(layer, sizeof layer, "encoder head (mu, logvar)");
        else if (i < lo->n_layers - 1)
            snprintf(layer, sizeof layer, "decoder layer %d", i - lo->n_enc + 1);
        else
            snprintf(layer, sizeof layer, "decoder output layer");
        const char *part = index >= l->b ? "bias" : (l->cond != CV_NO_COND && index >= l->cond)
                                                        ? "condition table" : "weight";
        size_t base = index >= l->b ? l->b : (l->cond != CV_NO_COND && index >= l->cond) ? l->cond : l->w;
        snprintf(buf, size, "%s %s [%zu]", layer, part, index - base);
        return;
    }
    if (index == lo->log_sigma) {
        snprintf(buf, size, "likelihood log-sigma");
        return;
    }
    if (lo->prior_m != CV_NO_COND && index >= lo->prior_m) {
        bool is_r = index >= lo->prior_r;
        snprintf(buf, size, "prior %s table [%zu]", is_r ? "log-variance" : "mean",
                 index - (is_r ? lo->prior_r : lo->prior_m));
        return;
    }
    snprintf(buf, size, "parameter %zu", index);
}

cv_status cv_model_create(cv_backend *be, const cv_model_config *cfg, cv_model *m,
                          cv_err *err) {
    memset(m, 0, sizeof *m);
    m->be = be;
    cv_status st = cv_layout_init(cfg, &m->layout, err);
    if (st) return st;
    size_t bytes = m->layout.n_params * sizeof(float);
    float **bufs[4] = {&m->params, &m->grads, &m->adam_m, &m->adam_v};
    const char *names[4] = {"parameters", "gradients", "Adam m", "Adam v"};
    for (int i = 0; i < 4; i++) {
        /* the gradients carry one float more: the loss flag a step sums over the ranks */
        st = be->alloc(be, (void **)bufs[i], bytes + (i == 1 ? sizeof(float) : 0), names[i],
                       err);
        if (st) {
            cv_model_destroy(m);
            return st;
        }
    }
    return CV_OK;
}

void cv_model_destroy(cv_model *m) {
    if (!m->be) return;
    float *bufs[4] = {m->params, m->grads, m->adam_m, m->adam_v};
    for (int i = 0; i < 4; i++)
        if (bufs[i]) m->be->release(m->be, bufs[i]);
    memset(m, 0, sizeof *m);
}

cv_status cv_model_init_params(cv_model *m, uint64_t seed, cv_err *err) {
    const cv_layout *lo = &m->layout;
    size_t bytes = lo->n_params * sizeof(float);
    float *host = malloc(bytes);
    if (!host)
        return cv_fail(err, CV_ERR_NOMEM,
                       "out of host memory: the initial parameters need %.1f MiB",
                       bytes / 1048576.0);
    cv_uniform_fill(host, lo->n_params, seed, CV_STREAM_INIT);
    for (int i = 0; i < lo->n_layers; i++) {
        const cv_layer *l = &lo->layers[i];
        int fan_in = l->in + (l->cond != CV_NO_COND ? lo->cfg.cond_width : 0);
        float bound = 1.0f / sqrtf((float)fan_in);
        /* w, cond and b of a layer are adjacent, from l->w to the end of b */
        for (size_t k = l->w; k < l->b + (size_t)l->out; k++)
            host[k] = (2.0f * host[k] - 1.0f) * bound;
    }
    if (lo->prior_m != CV_NO_COND) /* the learned prior starts as the standard normal */
        memset(host + lo->prior_m, 0, (lo->prior_r - lo->prior_m) * 2 * sizeof(float));
    if (lo->log_sigma != CV_NO_COND) host[lo->log_sigma] = logf(lo->cfg.sigma);
    m->be->upload(m->be, m->params, host, bytes);
    m->be->zero(m->be, m->grads, bytes);
    m->be->zero(m->be, m->adam_m, bytes);
    m->be->zero(m->be, m->adam_v, bytes);
    free(host);
    return CV_OK;
}

/* Every workspace buffer of a layout: its field, count and element size, for B images on
 * the encoder's side and S rows on the decoder's (draws of images), with the IWAE
 * objective's buffers when iwae; a count of 0 is a buffer not needed. */
typedef struct {
    void **field;
    size_t count, size;
    const char *what;
} ws_buffer;

static int workspace_buffers(const cv_layout *lo, int max_rows, size_t sample_rows, bool iwae,
                             cv_workspace *ws, ws_buffer *out) {
    const size_t B = (size_t)max_rows, S = sample_rows, L = (size_t)lo->cfg.latent;
    const size_t K = (size_t)lo->cfg.cond_width;
    const bool vectors = lo->cfg.condition == CV_COND_VECTORS;
    const bool row_prior = vectors && lo->prior_m != CV_NO_COND;
    int n = 0;
#define WS_BUF(f, cnt, type, w) out[n++] = (ws_buffer){(void **)&ws->f, (cnt), sizeof(type), w}
    WS_BUF(x, S * lo->dim, float, "batch images");
    WS_BUF(labels, S, int32_t, "batch labels");
    WS_BUF(cond, vectors ? S * K : 0, float, "batch conditions");
    WS_BUF(prior_m, row_prior ? B * L : 0, float, "per-row prior means");
    WS_BUF(prior_r, row_prior ? B * L : 0, float, "per-row prior log-variances");
    WS_BUF(dprior_m, row_prior ? B * L : 0, float, "per-row prior mean gradients");
    WS_BUF(dprior_r, row_prior ? B * L : 0, float, "per-row prior log-variance gradients");
    for (int i = 0; i < lo->n_layers; i++) {
        const size_t rows = i < lo->n_enc ? B : S, out_cols = (size_t)lo->layers[i].out;
        WS_BUF(act[i], rows * out_cols, float, "activations");
        WS_BUF(dact[i], rows * out_cols, float, "activation gradients");
    }
    WS_BUF(eps, S * L, float, "noise");
    WS_BUF(z, S * L, float, "latents");
    WS_BUF(dz, S * L, float, "latent gradients");
    WS_BUF(kl, S, float, "per-sample KL");
    WS_BUF(rec, S, float, "per-sample reconstruction");
    WS_BUF(log_ratio, S, float, "per-sample log weights");
    WS_BUF(unit_kl, L, float, "per-unit KL sums");
    WS_BUF(dsigma, lo->log_sigma != CV_NO_COND ? S : 0, float, "log-sigma gradients");
    WS_BUF(weights, iwae ? S : 0, float, "importance weights");
    WS_BUF(iwae_loss, iwae ? B : 0, float, "IWAE losses");
    WS_BUF(zeros, iwae ? B : 0, float, "zeros");
    WS_BUF(sums, 1, cv_loss_sums, "loss sums");
    WS_BUF(step, 1, cv_step, "step state");
#undef WS_BUF
    return n;
}

#define WS_MAX_BUFFERS (2 * CV_MAX_LAYERS + 24)

/* The decoder side's rows: every draw of the largest batch the IWAE passes take, and at
 * least the encoder side's rows. */
static size_t sample_rows_of(int max_rows, int draw_rows, int samples) {
    const size_t s = (size_t)draw_rows * (size_t)samples;
    return s > (size_t)max_rows ? s : (size_t)max_rows;
}

size_t cv_workspace_bytes(const cv_layout *lo, int max_rows, int draw_rows, int samples) {
    cv_workspace ws;
    ws_buffer bufs[WS_MAX_BUFFERS];
    const int n = workspace_buffers(lo, max_rows, sample_rows_of(max_rows, draw_rows, samples),
                                    true, &ws, bufs);
    size_t bytes = 0;
    for (int i = 0; i < n; i++) bytes += bufs[i].count * bufs[i].size;
    return bytes;
}

static cv_status workspace_create(cv_model *m, int max_rows, int sample_rows, int samples,
                                  bool iwae, cv_workspace *ws, cv_err *err);

cv_status cv_workspace_create(cv_model *m, int max_rows, cv_workspace *ws, cv_err *err) {
    return workspace_create(m, max_rows, max_rows, 1, false, ws, err);
}

cv_status cv_workspace_create_samples(cv_model *m, int max_rows, int draw_rows, int samples,
                                      cv_workspace *ws, cv_err *err) {
    CV_ASSERT(samples >= 1 && draw_rows >= 1 && draw_rows <= max_rows);
    const size_t rows = sample_rows_of(max_rows, draw_rows, samples);
    if (rows > CV_MAX_SAMPLE_ROWS)
        return cv_fail(err, CV_ERR_USAGE, "batches of %d images drawn %d times are %zu rows, "
                       "over the %d one pass takes", draw_rows, samples, rows,
                       CV_MAX_SAMPLE_ROWS);
    return workspace_create(m, max_rows, (int)rows, samples, true, ws, err);
}

static cv_status workspace_create(cv_model *m, int max_rows, int sample_rows, int samples,
                                  bool iwae, cv_workspace *ws, cv_err *err) {
    memset(ws, 0, sizeof *ws);
    ws->max_rows = max_rows;
    ws->sample_rows = sample_rows;
    ws->samples = samples;
    cv_backend *be = m->be;
    const cv_layout *lo = &m->layout;
    ws_buffer bufs[WS_MAX_BUFFERS];
    const int n = workspace_buffers(lo, max_rows, sample_rows, iwae, ws, bufs);
    cv_status st = CV_OK;
    for (int i = 0; i < n && !st; i++)
        if (bufs[i].count) st = be->alloc(be, bufs[i].field, bufs[i].count * bufs[i].size,
                                          bufs[i].what, err);
    if (!st && ws->zeros) be->zero(be, ws->zeros, (size_t)max_rows * sizeof(float));
    /* the largest GEMM operand: a layer's input (rows, in), its output gradient (rows, out)
     * and its weight (out, in); with condition vectors also C (rows, K), the tables (K, out)
     * of the conditioned layers, and M and R (K, L) of the learned prior (its rows, (B, L),
     * are the size of the decoder's input) */
    const size_t B = (size_t)max_rows, S = (size_t)sample_rows, L = (size_t)lo->cfg.latent;
    const size_t K = (size_t)lo->cfg.cond_width;
    const bool vectors = has_vectors(m), row_prior = vectors && lo->prior_m != CV_NO_COND;
    size_t operand = vectors ? S * K : 0;
    if (row_prior && K * L > operand) operand = K * L;
    for (int i = 0; i < lo->n_layers; i++) {
        const cv_layer *l = &lo->layers[i];
        const size_t in = (size_t)l->in, out = (size_t)l->out, rows = i < lo->n_enc ? B : S;
        const bool table = vectors && l->cond != CV_NO_COND;
        const size_t sizes[4] = {rows * in, rows * out, in * out, table ? K * out : 0};
        for (int j = 0; j < 4; j++) operand = sizes[j] > operand ? sizes[j] : operand;
    }
    if (!st && be->gemm_reserve) st = be->gemm_reserve(be, operand, err);
    if (st) cv_workspace_destroy(m, ws);
    return st;
}

void cv_workspace_destroy(cv_model *m, cv_workspace *ws) {
    ws_buffer bufs[WS_MAX_BUFFERS];
    const int n = workspace_buffers(&m->layout, ws->max_rows, ws->sample_rows, true, ws, bufs);
    for (int i = 0; i < n; i++)
        if (*bufs[i].field) m->be->release(m->be, *bufs[i].field);
    memset(ws, 0, sizeof *ws);
}

/* y = act(x W^T + b + c T) for layers [first, last): a label's row of the condition
 * table T gathered by bias_act_forward, or condition vectors C (rows, K) times T. */
void cv_model_layers_forward(cv_model *m, cv_workspace *ws, int rows, int first, int last,
                             const float *in) {
    cv_backend *be = m->be;
    const int K = m->layout.cfg.cond_width;
    for (int i = first; i < last; i++) {
        const cv_layer *l = &m->layout.layers[i];
        const bool cond = l->cond != CV_NO_COND, gathered = cond && !has_vectors(m);
        be->gemm(be, false, true, rows, l->out, l->in, 1.0f, in, l->in,
                 m->params + l->w, l->in, 0.0f, ws->act[i], l->out);
        if (cond && !gathered)
            be->gemm(be, false, false, rows, l->out, K, 1.0f, ws->cond, K,
                     m->params + l->cond, l->out, 1.0f, ws->act[i], l->out);
        be->bias_act_forward(be, ws->act[i], m->params + l->b,
                             gathered ? m->params + l->cond : NULL, ws->labels, rows, l->out,
                             l->relu);
        in = ws->act[i];
    }
}

void cv_model_encode(cv_model *m, cv_workspace *ws, int rows) {
    CV_ASSERT(rows >= 1 && rows <= ws->max_rows);
    cv_model_layers_forward(m, ws, rows, 0, m->layout.n_enc, ws->x);
}

void cv_model_sample_decode(cv_model *m, cv_workspace *ws, int rows, const cv_noise *noise,
                            int loss_rows, bool want_log_ratio) {
    CV_ASSERT(rows >= 1 && rows <= ws->max_rows);
    cv_backend *be = m->be;
    const cv_layout *lo = &m->layout;
    cv_prior prior;
    be->reparam_forward(be, ws->act[lo->n_enc - 1], ws->eps, noise->draw, noise->seed,
                        noise->stream_base, noise->st, noise->first_row,
                        cv_model_batch_prior(m, ws, rows, &prior), ws->labels,
                        ws->z, ws->kl, want_log_ratio ? ws->log_ratio : NULL, rows,
                        lo->cfg.latent);
    cv_model_layers_forward(m, ws, rows, lo->n_enc, lo->n_layers, ws->z);
    cv_model_reconstruction(m, ws, rows, loss_rows);
}

void cv_model_reconstruction(cv_model *m, cv_workspace *ws, int rows, int loss_rows) {
    cv_backend *be = m->be;
    const cv_layout *lo = &m->layout;
    const int out = lo->n_layers - 1;
    float *dlogits = loss_rows > 0 ? ws->dact[out] : NULL;
    const float scale = loss_rows > 0 ? 1.0f / (float)loss_rows : 0.0f;
    if (lo->log_sigma != CV_NO_COND)
        be->reconstruction_learned(be, m->params + lo->log_sigma, ws->act[out], ws->x, ws->rec,
                                   dlogits, ws->dsigma, scale, rows, lo->dim);
    else
        be->reconstruction(be, lo->cfg.likelihood, lo->cfg.sigma, ws->act[out], ws->x, ws->rec,
                           dlogits, scale, rows, lo->dim);
}

void cv_model_sigma_backward(cv_model *m, cv_workspace *ws, int rows) {
    const cv_layout *lo = &m->layout;
    if (lo->log_sigma == CV_NO_COND) return;
    /* the log sigma's gradient: the rows' gradients summed in row order, as a bias's are */
    m->be->bias_act_backward(m->be, ws->dsigma, ws->dsigma, m->grads + lo->log_sigma, NULL,
                             NULL, rows, 1, false);
}

float cv_model_sigma(cv_model *m) {
    const cv_layout *lo = &m->layout;
    if (lo->log_sigma == CV_NO_COND) return lo->cfg.sigma;
    float log_sigma;
    m->be->download(m->be, &log_sigma, m->params + lo->log_sigma, sizeof log_sigma);
    return expf(0.5f * cv_clamp_logvar(2.0f * log_sigma));
}

void cv_model_forward(cv_model *m, cv_workspace *ws, int rows, const cv_noise *noise,
                      int loss_rows, bool want_log_ratio) {
    cv_model_encode(m, ws, rows);
    cv_model_sample_decode(m, ws, rows, noise, loss_rows, want_log_ratio);
}

void cv_model_decode(cv_model *m, cv_workspace *ws, int rows) {
    CV_ASSERT(rows >= 1 && rows <= ws->max_rows);
    cv_model_layers_forward(m, ws, rows, m->layout.n_enc, m->layout.n_layers, ws->z);
}

/* Backward through layers (first, last] given dact[last-1]; dx of layer `first` goes to
 * dx_first (NULL: not needed). */
void cv_model_layers_backward(cv_model *m, cv_workspace *ws, int rows, int first, int last,
                              const float *in_first, float *dx_first) {
    cv_backend *be = m->be;
    const int K = m->layout.cfg.cond_width;
    for (int i = last - 1; i >= first; i--) {
        const cv_layer *l = &m->layout.layers[i];
        float *dy = ws->dact[i];
        const float *in = i == first ? in_first : ws->act[i - 1];
        float *dx = i == first ? dx_first : ws->dact[i - 1];
        const bool cond = l->cond != CV_NO_COND, gathered = cond && !has_vectors(m);
        be->bias_act_backward(be, dy, ws->act[i], m->grads + l->b,
                              gathered ? m->grads + l->cond : NULL, ws->labels, rows, l->out,
                              l->relu);
        /* dT (K, out) += C^T (K, B) x dy (B, out) */
        if (cond && !gathered)
            be->gemm(be, true, false, K, l->out, rows, 1.0f, ws->cond, K, dy, l->out, 1.0f,
                     m->grads + l->cond, l->out);
        /* dW (out, in) += dy^T (out, B) x in (B, in) */
        be->gemm(be, true, false, l->out, l->in, rows, 1.0f, dy, l->out, in, l->in, 1.0f,
                 m->grads + l->w, l->in);
        /* dx (B, in) = dy (B, out) x W (out, in) */
        if (dx)
            be->gemm(be, false, false, rows, l->in, l->out, 1.0f, dy, l->out,
                     m->params + l->w, l->in, 0.0f, dx, l->in);
    }
}

/* The learned prior's gradient targets: the tables' gradients (labels), or each row's
 * (condition vectors), which prior_tables_backward then carries into the tables. */
cv_prior_grad *cv_model_prior_grad_target(cv_model *m, cv_workspace *ws, cv_prior_grad *g) {
    const cv_layout *lo = &m->layout;
    if (lo->prior_m == CV_NO_COND) return NULL;
    if (has_vectors(m))
        *g = (cv_prior_grad){ws->dprior_m, ws->dprior_r, true};
    else
        *g = (cv_prior_grad){m->grads + lo->prior_m, m->grads + lo->prior_r, false};
    return g;
}

/* dM (K, L) += C^T (K, B) x dm (B, L), and the same for R. */
void cv_model_prior_tables_backward(cv_model *m, cv_workspace *ws, int rows) {
    const cv_layout *lo = &m->layout;
    const int K = lo->cfg.cond_width, L = lo->cfg.latent;
    cv_backend *be = m->be;
    be->gemm(be, true, false, K, L, rows, 1.0f, ws->cond, K, ws->dprior_m, L, 1.0f,
             m->grads + lo->prior_m, L);
    be->gemm(be, true, false, K, L, rows, 1.0f, ws->cond, K, ws->dprior_r, L, 1.0f,
             m->grads + lo->prior_r, L);
}

void cv_model_backward_objective(cv_model *m, cv_workspace *ws, int rows, int loss_rows,
                                 const cv_objective *obj) {
    const cv_layout *lo = &m->layout;
    cv_backend *be = m->be;
    const int L = lo->cfg.latent;
    cv_model_sigma_backward(m, ws, rows);
    cv_model_layers_backward(m, ws, rows, lo->n_enc, lo->n_layers, ws->z, ws->dz);
    /* the forward pass left the batch's prior rows in ws (condition vectors) */
    cv_prior prior;
    const cv_prior *p = cv_model_prior_of(m, ws, &prior);
    cv_prior_grad dprior;
    cv_prior_grad *dp = cv_model_prior_grad_target(m, ws, &dprior);
    CV_ASSERT(loss_rows >= rows);
    const float *enc = ws->act[lo->n_enc - 1];
    const bool free_bits = obj->free_bits > 0.0f;
    if (free_bits) { /* each unit's KL over the whole batch, every rank's rows */
        be->kl_unit_sums(be, enc, p, ws->labels, rows, L, ws->unit_kl);
        if (obj->sum_ranks) be->allreduce(be, ws->unit_kl, (size_t)L);
    }
    be->reparam_backward(be, enc, ws->eps, ws->dz, obj->beta / (float)loss_rows,
                         free_bits ? ws->unit_kl : NULL, obj->free_bits * (float)loss_rows, p,
                         ws->labels, dp, ws->dact[lo->n_enc - 1], rows, L);
    if (dp && dp->per_row) cv_model_prior_tables_backward(m, ws, rows);
    cv_model_layers_backward(m, ws, rows, 0, lo->n_enc, ws->x, NULL);
}

void cv_model_backward(cv_model *m, cv_workspace *ws, int rows, int loss_rows, float beta) {
    const cv_objective elbo = {.beta = beta, .samples = 1};
    cv_model_backward_objective(m, ws, rows, loss_rows, &elbo);
}
