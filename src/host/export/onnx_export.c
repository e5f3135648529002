/* onnx_export.c: the model as ONNX graphs for ONNX Runtime (cvae/export.h), through
 * protobuf-c and the onnx.proto that Debian's libonnx-dev ships (compiled by protoc-c at
 * build time), so the wire format is the maintained library's, not ours.
 *
 * encoder.onnx:  x (N, D), c (N, K)
 *                h = Relu(Gemm(Concat(x, c), enc.0.weight, enc.0.bias, transB=1)), ...
 *                head = Gemm(h, head.weight, head.bias, transB=1)          (N, 2L)
 *                mean = Slice(head, 0, L), logvar = Clip(Slice(head, L, 2L), -30, 30)
 * decoder.onnx:  z (N, L), c (N, K)
 *                g = Relu(Gemm(Concat(z, c), dec.0.weight, dec.0.bias, transB=1)), ...
 *                x_mean = Sigmoid(Gemm(g, out.weight, out.bias, transB=1))   (N, D)
 * prior.onnx (a learned prior only): c (N, K)
 *                prior_mean = Gemm(c, prior_mean.weight, transB=1)          (N, L)
 *                prior_logvar = Clip(Gemm(c, prior_logvar.weight, transB=1), -30, 30)
 * Opset 13, IR version 8; N is a dynamic dimension. Initializers point into one host copy
 * of the exported tensors (no copy per graph), and each file is packed straight into its
 * temporary file.
 */
#include <libgen.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cv_math.h"
#include "cvae/version.h"
#include "export_model.h"
#include "onnx.pb-c.h"
#include "util/fileio.h"

#define OPSET 13
#define IR_VERSION 8
#define MAX_GRAPH_ITEMS (4 * CV_MAX_LAYERS + 16) /* nodes, initializers: a generous bound */

/* The graphs' small structures come from one zeroed block, freed at once. */
typedef struct {
    unsigned char *mem;
    size_t used, cap;
} arena;

static void *take(arena *a, size_t bytes) {
    size_t at = (a->used + 15) & ~(size_t)15;
    CV_ASSERT(at + bytes <= a->cap); /* the block is sized for the largest graph */
    a->used = at + bytes;
    return a->mem + at;
}

static char *text(arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *text(arena *a, const char *fmt, ...) {
    char buf[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return strcpy(take(a, strlen(buf) + 1), buf);
}

/* One graph being built: its nodes and initializers in arrays of MAX_GRAPH_ITEMS. */
typedef struct {
    arena *a;
    Onnx__GraphProto *g;
} graph;

static graph graph_new(arena *a, const char *name) {
    Onnx__GraphProto *g = take(a, sizeof *g);
    *g = (Onnx__GraphProto)ONNX__GRAPH_PROTO__INIT;
    g->name = text(a, "%s", name);
    g->node = take(a, MAX_GRAPH_ITEMS * sizeof *g->node);
    g->initializer = take(a, MAX_GRAPH_ITEMS * sizeof *g->initializer);
    g->input = take(a, 4 * sizeof *g->input);
    g->output = take(a, 4 * sizeof *g->output);
    return (graph){a, g};
}

static Onnx__AttributeProto *int_attribute(arena *a, const char *name, int64_t value) {
    Onnx__AttributeProto *at = take(a, sizeof *at);
    *at = (Onnx__AttributeProto)ONNX__ATTRIBUTE_PROTO__INIT;
    at->name = text(a, "%s", name);
    at->has_type = 1;
    at->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
    at->has_i = 1;
    at->i = value;
    return at;
}

/* A node op(inputs) -> output, with at most one integer attribute (name NULL: none). */
static void node(graph *b, const char *op, const char *output, const char *attr, int64_t value,
                 int n_in, ...) {
    CV_ASSERT(b->g->n_node < MAX_GRAPH_ITEMS);
    Onnx__NodeProto *n = take(b->a, sizeof *n);
    *n = (Onnx__NodeProto)ONNX__NODE_PROTO__INIT;
    n->op_type = text(b->a, "%s", op);
    n->name = text(b->a, "%s", output);
    n->n_input = (size_t)n_in;
    n->input = take(b->a, (size_t)n_in * sizeof *n->input);
    va_list ap;
    va_start(ap, n_in);
    for (int i = 0; i < n_in; i++) n->input[i] = text(b->a, "%s", va_arg(ap, const char *));
    va_end(ap);
    n->n_output = 1;
    n->output = take(b->a, sizeof *n->output);
    n->output[0] = text(b->a, "%s", output);
    if (attr) {
        n->n_attribute = 1;
        n->attribute = take(b->a, sizeof *n->attribute);
        n->attribute[0] = int_attribute(b->a, attr, value);
    }
    b->g->node[b->g->n_node++] = n;
}

/* An initializer of n_dims dimensions whose bytes stay where they are. */
static void initializer(graph *b, const char *name, int32_t type, int n_dims,
                        const int64_t *dims, const void *data, size_t bytes) {
    CV_ASSERT(b->g->n_initializer < MAX_GRAPH_ITEMS);
    Onnx__TensorProto *t = take(b->a, sizeof *t);
    *t = (Onnx__TensorProto)ONNX__TENSOR_PROTO__INIT;
    t->name = text(b->a, "%s", name);
    t->has_data_type = 1;
    t->data_type = type;
    t->n_dims = (size_t)n_dims;
    t->dims = take(b->a, (n_dims ? (size_t)n_dims : 1) * sizeof *t->dims);
    if (n_dims) memcpy(t->dims, dims, (size_t)n_dims * sizeof *dims);
    t->has_raw_data = 1;
    t->raw_data.len = bytes;
    t->raw_data.data = (uint8_t *)data;
    b->g->initializer[b->g->n_initializer++] = t;
}

/* A constant copied into the arena: a float scalar or an int64 vector. */
static void float_scalar(graph *b, const char *name, float v) {
    float *p = take(b->a, sizeof *p);
    *p = v;
    initializer(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 0, NULL, p, sizeof *p);
}
static void int64_vector(graph *b, const char *name, int n, const int64_t *values) {
    int64_t *p = take(b->a, (size_t)n * sizeof *p);
    memcpy(p, values, (size_t)n * sizeof *p);
    initializer(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__INT64, 1, (const int64_t[1]){n}, p,
                (size_t)n * sizeof *p);
}

/* A float input or output of shape (N, width). */
static Onnx__ValueInfoProto *value(arena *a, const char *name, int64_t width) {
    Onnx__TensorShapeProto__Dimension *d = take(a, 2 * sizeof *d);
    d[0] = (Onnx__TensorShapeProto__Dimension)ONNX__TENSOR_SHAPE_PROTO__DIMENSION__INIT;
    d[0].value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
    d[0].dim_param = text(a, "N");
    d[1] = (Onnx__TensorShapeProto__Dimension)ONNX__TENSOR_SHAPE_PROTO__DIMENSION__INIT;
    d[1].value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
    d[1].dim_value = width;
    Onnx__TensorShapeProto *shape = take(a, sizeof *shape);
    *shape = (Onnx__TensorShapeProto)ONNX__TENSOR_SHAPE_PROTO__INIT;
    shape->n_dim = 2;
    shape->dim = take(a, 2 * sizeof *shape->dim);
    shape->dim[0] = &d[0];
    shape->dim[1] = &d[1];
    Onnx__TypeProto__Tensor *tt = take(a, sizeof *tt);
    *tt = (Onnx__TypeProto__Tensor)ONNX__TYPE_PROTO__TENSOR__INIT;
    tt->has_elem_type = 1;
    tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    tt->shape = shape;
    Onnx__TypeProto *type = take(a, sizeof *type);
    *type = (Onnx__TypeProto)ONNX__TYPE_PROTO__INIT;
    type->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    type->tensor_type = tt;
    Onnx__ValueInfoProto *v = take(a, sizeof *v);
    *v = (Onnx__ValueInfoProto)ONNX__VALUE_INFO_PROTO__INIT;
    v->name = text(a, "%s", name);
    v->type = type;
    return v;
}

static void input(graph *b, const char *name, int64_t width) {
    b->g->input[b->g->n_input++] = value(b->a, name, width);
}
static void output(graph *b, const char *name, int64_t width) {
    b->g->output[b->g->n_output++] = value(b->a, name, width);
}

/* The exported tensors, in one host buffer: tensor k at values + offset[k]. */
typedef struct {
    const cv_layout *lo;
    float *values;
    size_t offset[2 * CV_MAX_LAYERS + 2];
} tensors;

static void weight(graph *b, const tensors *t, int k) {
    export_tensor info;
    export_tensor_info(t->lo, k, &info);
    const int64_t dims[2] = {info.rows, info.cols};
    initializer(b, info.name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, info.cols ? 2 : 1, dims,
                t->values + t->offset[k], (size_t)export_tensor_size(&info) * sizeof(float));
}

/* Layers [first, last) over Concat(in, c): Gemm, and Relu where the model has one;
 * returns the name of the last output. */
static const char *layers(graph *b, const tensors *t, int first, int last, const char *in) {
    node(b, "Concat", "concat", "axis", 1, 2, in, "c");
    const char *x = "concat";
    for (int i = first; i < last; i++) {
        weight(b, t, 2 * i);
        weight(b, t, 2 * i + 1);
        export_tensor w;
        export_tensor_info(t->lo, 2 * i, &w);
        char layer[32];
        snprintf(layer, sizeof layer, "%.*s", (int)(strlen(w.name) - strlen(".weight")), w.name);
        const char *gemm = text(b->a, "%s.gemm", layer);
        node(b, "Gemm", gemm, "transB", 1, 3, x, w.name, text(b->a, "%s.bias", layer));
        x = gemm;
        if (t->lo->layers[i].relu) {
            const char *relu = text(b->a, "%s.relu", layer);
            node(b, "Relu", relu, NULL, 0, 1, x);
            x = relu;
        }
    }
    return x;
}

static void clip_constants(graph *b) {
    float_scalar(b, "logvar_min", CV_LOGVAR_MIN);
    float_scalar(b, "logvar_max", CV_LOGVAR_MAX);
}

static Onnx__GraphProto *encoder_graph(arena *a, const tensors *t) {
    const cv_layout *lo = t->lo;
    const int64_t L = lo->cfg.latent;
    graph b = graph_new(a, "cvae_encoder");
    input(&b, "x", lo->dim);
    input(&b, "c", lo->cfg.cond_width);
    const char *head = layers(&b, t, 0, lo->n_enc, "x");
    int64_vector(&b, "mean_start", 1, (const int64_t[]){0});
    int64_vector(&b, "logvar_start", 1, (const int64_t[]){L});
    int64_vector(&b, "logvar_end", 1, (const int64_t[]){2 * L});
    int64_vector(&b, "feature_axis", 1, (const int64_t[]){1});
    clip_constants(&b);
    node(&b, "Slice", "mean", NULL, 0, 4, head, "mean_start", "logvar_start", "feature_axis");
    node(&b, "Slice", "logvar_unclipped", NULL, 0, 4, head, "logvar_start", "logvar_end",
         "feature_axis");
    node(&b, "Clip", "logvar", NULL, 0, 3, "logvar_unclipped", "logvar_min", "logvar_max");
    output(&b, "mean", L);
    output(&b, "logvar", L);
    return b.g;
}

static Onnx__GraphProto *decoder_graph(arena *a, const tensors *t) {
    const cv_layout *lo = t->lo;
    graph b = graph_new(a, "cvae_decoder");
    input(&b, "z", lo->cfg.latent);
    input(&b, "c", lo->cfg.cond_width);
    const char *logits = layers(&b, t, lo->n_enc, lo->n_layers, "z");
    node(&b, "Sigmoid", "x_mean", NULL, 0, 1, logits);
    output(&b, "x_mean", lo->dim);
    return b.g;
}

static Onnx__GraphProto *prior_graph(arena *a, const tensors *t) {
    const cv_layout *lo = t->lo;
    const int k = 2 * lo->n_layers; /* prior_mean.weight, then prior_logvar.weight */
    graph b = graph_new(a, "cvae_prior");
    input(&b, "c", lo->cfg.cond_width);
    weight(&b, t, k);
    weight(&b, t, k + 1);
    clip_constants(&b);
    node(&b, "Gemm", "prior_mean", "transB", 1, 2, "c", "prior_mean.weight");
    node(&b, "Gemm", "prior_logvar_unclipped", "transB", 1, 2, "c", "prior_logvar.weight");
    node(&b, "Clip", "prior_logvar", NULL, 0, 3, "prior_logvar_unclipped", "logvar_min",
         "logvar_max");
    output(&b, "prior_mean", lo->cfg.latent);
    output(&b, "prior_logvar", lo->cfg.latent);
    return b.g;
}

static Onnx__ModelProto *model_of(arena *a, Onnx__GraphProto *g, const char *config) {
    Onnx__OperatorSetIdProto *opset = take(a, sizeof *opset);
    *opset = (Onnx__OperatorSetIdProto)ONNX__OPERATOR_SET_ID_PROTO__INIT;
    opset->domain = text(a, "%s", "");
    opset->has_version = 1;
    opset->version = OPSET;
    Onnx__StringStringEntryProto *meta = take(a, sizeof *meta);
    *meta = (Onnx__StringStringEntryProto)ONNX__STRING_STRING_ENTRY_PROTO__INIT;
    meta->key = text(a, "cvae");
    meta->value = (char *)config;
    Onnx__ModelProto *m = take(a, sizeof *m);
    *m = (Onnx__ModelProto)ONNX__MODEL_PROTO__INIT;
    m->has_ir_version = 1;
    m->ir_version = IR_VERSION;
    m->n_opset_import = 1;
    m->opset_import = take(a, sizeof *m->opset_import);
    m->opset_import[0] = opset;
    m->producer_name = text(a, "cvae");
    m->producer_version = text(a, "%s", CVAE_VERSION_STRING);
    m->graph = g;
    m->n_metadata_props = 1;
    m->metadata_props = take(a, sizeof *m->metadata_props);
    m->metadata_props[0] = meta;
    return m;
}

/* protobuf-c's output buffer, appending to a file. */
typedef struct {
    ProtobufCBuffer base;
    FILE *fp;
} file_buffer;

static void append_to_file(ProtobufCBuffer *buffer, size_t len, const uint8_t *data) {
    file_buffer *fb = (file_buffer *)buffer;
    if (len) (void)fwrite(data, 1, len, fb->fp); /* ferror() is checked after packing */
}

/* One model packed into the temporary file of f (opened here). */
static cv_status pack(const Onnx__ModelProto *m, const char *path, cv_outfile *f, cv_err *err) {
    /* protobuf parsers, ONNX Runtime's included, refuse messages of 2 GiB or more */
    const size_t bytes = onnx__model_proto__get_packed_size(m);
    if (bytes >= 2147483648u)
        return cv_fail(err, CV_ERR_USAGE, "%s: the graph holds %.2f GiB of weights; an ONNX "
                       "file holds less than 2 GiB (export --format safetensors instead)",
                       path, (double)bytes / 1073741824.0);
    cv_status st = cv_outfile_open(f, path, err);
    if (st) return st;
    file_buffer fb = {{append_to_file}, f->fp};
    onnx__model_proto__pack_to_buffer(m, &fb.base);
    if (ferror(f->fp)) {
        cv_outfile_abort(f);
        return cv_fail(err, CV_ERR_IO, "%s: write failed", path);
    }
    return CV_OK;
}

/* The exported tensors, all in one buffer (as many floats as the model's parameters). */
static cv_status fill_tensors(tensors *t, const float *params, cv_err *err) {
    const int n = export_tensor_count(t->lo);
    size_t total = 0;
    for (int k = 0; k < n; k++) {
        export_tensor info;
        export_tensor_info(t->lo, k, &info);
        t->offset[k] = total;
        total += (size_t)export_tensor_size(&info);
    }
    t->values = malloc(total * sizeof(float));
    if (!t->values)
        return cv_fail(err, CV_ERR_NOMEM, "out of host memory: the weights need %.1f MiB",
                       (double)total * sizeof(float) / 1048576.0);
    for (int k = 0; k < n; k++) export_tensor_values(t->lo, params, k, t->values + t->offset[k]);
    return CV_OK;
}

/* Writes the files (all to temporary names, then each renamed): all or none. */
static cv_status write_models(Onnx__ModelProto *const *models, char (*paths)[CV_PATH_MAX + 16],
                              int n, cv_err *err) {
    cv_outfile f[3];
    cv_status st = CV_OK;
    int opened = 0;
    for (; opened < n && !st; opened++) {
        st = pack(models[opened], paths[opened], &f[opened], err);
        if (st) break;
    }
    if (st) {
        for (int i = 0; i < opened; i++) cv_outfile_abort(&f[i]);
        return st;
    }
    int committed = 0;
    for (; committed < n && !st; committed++) st = cv_outfile_commit(&f[committed], err);
    if (st) { /* the one that failed removed its own temporary file */
        for (int i = 0; i < committed - 1; i++) unlink(paths[i]);
        for (int i = committed; i < n; i++) cv_outfile_abort(&f[i]);
    }
    return st;
}

cv_status cv_export_onnx(const cv_export_source *src, const char *dir, cv_err *err) {
    cv_layout lo;
    cv_status st = cv_layout_init(&src->ck->cfg, &lo, err);
    if (st) return st;
    const bool prior = lo.prior_m != CV_NO_COND;
    const int n = prior ? 3 : 2;
    static const char *const names[3] = {"encoder.onnx", "decoder.onnx", "prior.onnx"};
    char out[CV_PATH_MAX], paths[3][CV_PATH_MAX + 16], made[CV_PATH_MAX];
    st = cv_trim_path(out, dir, err);
    for (int i = 0; !st && i < n; i++) {
        snprintf(paths[i], sizeof paths[i], "%s/%s", out, names[i]);
        if (cv_path_exists(paths[i]))
            st = cv_fail(err, CV_ERR_IO, "%s: exists already; choose a new folder", paths[i]);
    }
    if (st) return st;
    tensors t = {.lo = &lo};
    arena a = {calloc(1, 65536 + (size_t)4096 * MAX_GRAPH_ITEMS), 0,
               65536 + (size_t)4096 * MAX_GRAPH_ITEMS};
    char *config = export_config_json(src);
    if (!a.mem || !config) st = cv_fail(err, CV_ERR_NOMEM, "out of host memory");
    if (!st) st = fill_tensors(&t, src->ck->params, err);
    if (!st) st = cv_make_dirs(out, made, err);
    for (int i = 0; !st && i < n; i++) cv_sweep_stale_temporaries(out, names[i]);
    if (!st) {
        Onnx__ModelProto *models[3] = {model_of(&a, encoder_graph(&a, &t), config),
                                       model_of(&a, decoder_graph(&a, &t), config),
                                       prior ? model_of(&a, prior_graph(&a, &t), config) : NULL};
        st = write_models(models, paths, n, err);
        if (st) cv_unmake_dirs(out, made);
    }
    free(t.values);
    free(config);
    free(a.mem);
    return st;
}
