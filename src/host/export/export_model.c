/* export_model.c: the exported tensors and the configuration JSON (export_model.h).
 *
 * cvae keeps a first layer's condition weights as a (K, out) table beside its (out, in)
 * weight (docs/design.md 1.2); PyTorch's nn.Linear over [x, c] holds them as the last K
 * columns of one (out, in + K) weight, so a first layer's exported row o is W[o, :] then
 * T[:, o]. The prior's tables (K, L) are M^T and R^T; nn.Linear(K, L) holds (L, K).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cv_math.h"
#include "cvae/version.h"
#include "export_model.h"
#include "util/json.h"

int export_tensor_count(const cv_layout *lo) {
    return 2 * lo->n_layers + (lo->prior_m != CV_NO_COND ? 2 : 0);
}

/* PyTorch's module name of layer i: enc.i, head, dec.j or out. */
static void layer_name(const cv_layout *lo, int i, char *name, size_t size) {
    if (i < lo->n_enc - 1)
        snprintf(name, size, "enc.%d", i);
    else if (i == lo->n_enc - 1)
        snprintf(name, size, "head");
    else if (i < lo->n_layers - 1)
        snprintf(name, size, "dec.%d", i - lo->n_enc);
    else
        snprintf(name, size, "out");
}

void export_tensor_info(const cv_layout *lo, int k, export_tensor *t) {
    CV_ASSERT(k >= 0 && k < export_tensor_count(lo));
    const int K = lo->cfg.cond_width;
    if (k >= 2 * lo->n_layers) {
        snprintf(t->name, sizeof t->name, "%s.weight",
                 k == 2 * lo->n_layers ? "prior_mean" : "prior_logvar");
        t->rows = lo->cfg.latent;
        t->cols = K;
        return;
    }
    const cv_layer *l = &lo->layers[k / 2];
    char layer[16];
    layer_name(lo, k / 2, layer, sizeof layer);
    snprintf(t->name, sizeof t->name, "%s.%s", layer, k % 2 ? "bias" : "weight");
    t->rows = l->out;
    t->cols = k % 2 ? 0 : l->in + (l->cond != CV_NO_COND ? K : 0);
}

void export_tensor_values(const cv_layout *lo, const float *params, int k, float *out) {
    const size_t K = (size_t)lo->cfg.cond_width, L = (size_t)lo->cfg.latent;
    if (k >= 2 * lo->n_layers) { /* (L, K) = the table (K, L) transposed */
        const float *table = params + (k == 2 * lo->n_layers ? lo->prior_m : lo->prior_r);
        for (size_t j = 0; j < L; j++)
            for (size_t c = 0; c < K; c++) out[j * K + c] = table[c * L + j];
        return;
    }
    const cv_layer *l = &lo->layers[k / 2];
    const size_t in = (size_t)l->in, n_out = (size_t)l->out;
    if (k % 2) {
        memcpy(out, params + l->b, n_out * sizeof(float));
        return;
    }
    const bool cond = l->cond != CV_NO_COND;
    const size_t cols = in + (cond ? K : 0);
    for (size_t o = 0; o < n_out; o++) {
        memcpy(out + o * cols, params + l->w + o * in, in * sizeof(float));
        for (size_t c = 0; cond && c < K; c++) out[o * cols + in + c] = params[l->cond + c * n_out + o];
    }
}

/* "name": "text" with the text escaped. */
static void json_field(FILE *fp, const char *name, const char *text) {
    fprintf(fp, "\"%s\": \"", name);
    cv_json_escape(fp, text);
    fputc('"', fp);
}

/* n names as a JSON list of strings, or null when there are none. */
static void json_names(FILE *fp, const char *const *names, int n) {
    if (!names) {
        fputs("null", fp);
        return;
    }
    fputc('[', fp);
    for (int k = 0; k < n; k++) {
        fprintf(fp, "%s\"", k ? ", " : "");
        cv_json_escape(fp, names[k]);
        fputc('"', fp);
    }
    fputc(']', fp);
}

char *export_config_json(const cv_export_source *src) {
    const cv_checkpoint *ck = src->ck;
    const cv_model_config *c = &ck->cfg;
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    if (!fp) return NULL;
    fputc('{', fp);
    json_field(fp, "cvae_version", CVAE_VERSION_STRING);
    fputs(", ", fp);
    json_field(fp, "checkpoint_sha256", src->checkpoint_sha256);
    fprintf(fp, ", \"height\": %d, \"width\": %d, \"channels\": %d, \"hidden\": [", c->height,
            c->width, c->channels);
    for (int i = 0; i < c->n_hidden; i++) fprintf(fp, "%s%d", i ? ", " : "", c->hidden[i]);
    fprintf(fp, "], \"latent\": %d, \"condition\": \"%s\", \"condition_width\": %d, "
                "\"class_names\": ",
            c->latent, c->condition == CV_COND_VECTORS ? "vectors" : "labels", c->cond_width);
    json_names(fp, src->class_names, c->cond_width);
    fputs(", \"condition_columns\": ", fp);
    json_names(fp, c->condition == CV_COND_VECTORS ? (const char *const *)src->ck->names : NULL, c->cond_width);
    const bool gaussian = c->likelihood == CV_LIKELIHOOD_GAUSSIAN;
    fprintf(fp, ", \"prior\": \"%s\", \"likelihood\": \"%s\", \"sigma\": ",
            c->prior == CV_PRIOR_CONDITIONAL ? "conditional" : "standard",
            gaussian ? "gaussian" : "bernoulli");
    if (gaussian) fprintf(fp, "%.9g, \"sigma_learned\": %s", cv_checkpoint_sigma(ck),
                          c->sigma_learned ? "true" : "false");
    else fputs("null, \"sigma_learned\": false", fp);
    fprintf(fp, ", \"logvar_min\": %g, \"logvar_max\": %g, \"epochs\": %d, \"steps\": %lld, "
                "\"seed\": %llu}",
            (double)CV_LOGVAR_MIN, (double)CV_LOGVAR_MAX, ck->epoch, (long long)ck->step, (unsigned long long)ck->seed);
    bool ok = !ferror(fp);
    ok = fclose(fp) == 0 && ok;
    if (!ok) {
        free(text);
        return NULL;
    }
    return text;
}
