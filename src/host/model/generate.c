/* generate.c: decoding images from the prior p(z|c) in chunks, and writing data sets,
 * sample grids and reconstruction pictures (order and noise streams in generate.h).
 *
 * A data set is written into a temporary folder and appears under its name only once every
 * file and the manifest are complete and fsynced (gen_folder.h), so an interrupted run
 * never leaves a half data set under the real name. A SIGINT or SIGTERM recorded by
 * util/interrupt.h stops the work between chunks and takes back what was made.
 */
#include <libgen.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cv_math.h"
#include "cvae/generate.h"
#include "cvae/latent.h"
#include "cvae/rng.h"
#include "data/png.h"
#include "gen_folder.h"
#include "gen_sink.h"
#include "util/fileio.h"
#include "util/interrupt.h"
#include "util/json.h"
#include "util/sha256.h"
#include "util/clock.h"

static const float *logits_of(cv_model *m, cv_workspace *ws) {
    return ws->act[m->layout.n_layers - 1];
}

/* Condition row of image i of a model of condition vectors. */
static const float *vector_of(const cv_gen_conditions *c, int K, long long i) {
    return c->conditions + (size_t)(i % c->n_rows) * K;
}

/* Host scratch for one block's conditions as ws takes them: int32 labels or float rows. */
typedef union {
    int32_t *labels;
    float *rows;
    void *any;
} cond_scratch;

static size_t cond_scratch_bytes(const cv_model *m, int rows) {
    const cv_model_config *c = &m->layout.cfg;
    return (size_t)rows * (c->condition == CV_COND_VECTORS ? (size_t)c->cond_width * sizeof(float)
                                                           : sizeof(int32_t));
}

/* The conditions of images [first, first + rows) into ws (labels or rows). Images past
 * the last (a block is decoded whole) take condition i % R like the others. */
static void upload_conditions(cv_model *m, cv_workspace *ws, const cv_gen_conditions *c,
                              long long first, int rows, cond_scratch sc) {
    cv_backend *be = m->be;
    const int K = m->layout.cfg.cond_width;
    if (m->layout.cfg.condition == CV_COND_VECTORS) {
        for (int r = 0; r < rows; r++)
            memcpy(sc.rows + (size_t)r * K, vector_of(c, K, first + r), (size_t)K * sizeof(float));
        be->upload(be, ws->cond, sc.rows, (size_t)rows * K * sizeof(float));
        return;
    }
    for (int r = 0; r < rows; r++) sc.labels[r] = cv_gen_class_of(c, first + r);
    be->upload(be, ws->labels, sc.labels, (size_t)rows * sizeof(int32_t));
}

/* z for the rows in ws: draws from p(z|c) of their conditions (ws->labels or ws->cond);
 * row r takes stream CV_STREAM_GEN_Z(stream_of[r]) when given, else (first + r). */
static void draw_z(cv_model *m, cv_workspace *ws, int rows, uint64_t seed, long long first,
                   const long long *stream_of) {
    cv_backend *be = m->be;
    const int L = m->layout.cfg.latent;
    if (stream_of)
        for (int r = 0; r < rows; r++)
            be->normal(be, ws->z + (size_t)r * L, 1, L, seed, CV_STREAM_GEN_Z(stream_of[r]));
    else
        be->normal(be, ws->z, rows, L, seed, CV_STREAM_GEN_Z(first));
    cv_prior prior; /* with a learned prior, each draw is placed in its row's prior */
    be->prior_transform(be, cv_model_batch_prior(m, ws, rows, &prior), ws->labels, ws->z, rows,
                        L);
}

/* Decodes the rows in ws->z with their conditions into dev_pixels; image `first` is row 0. */
static void decode_pixels(cv_model *m, cv_workspace *ws, int rows, bool mean, uint64_t seed,
                          long long first, uint8_t *dev_pixels) {
    cv_model_decode(m, ws, rows);
    /* a learned sigma is read from the parameters (the Gaussian --sample draws) */
    const float sigma = m->layout.log_sigma != CV_NO_COND && !mean ? cv_model_sigma(m)
                                                                   : m->layout.cfg.sigma;
    m->be->pixels_from_logits(m->be, m->layout.cfg.likelihood, sigma,
                              logits_of(m, ws), rows, m->layout.dim, mean, seed,
                              CV_STREAM_GEN_PIXELS(first), dev_pixels);
}

int cv_generate_block_rows(const cv_model *m) {
    int rows = (1 << 22) / m->layout.dim; /* a block's logits stay within 16 MiB */
    return rows < 1 ? 1 : rows > 256 ? 256 : rows;
}

/* Rows [first, first + block) of the given latents into ws->z; the rows of a last block
 * past the last latent are zeros (decoded with the block, then dropped). */
static void upload_z(cv_model *m, cv_workspace *ws, const cv_generate_options *o,
                     long long first, int block) {
    const size_t L = (size_t)m->layout.cfg.latent;
    const long long have = o->z_rows - first < block ? o->z_rows - first : block;
    m->be->upload(m->be, ws->z, o->z + (size_t)first * L, (size_t)have * L * sizeof(float));
    if (have < block)
        m->be->zero(m->be, ws->z + (size_t)have * L, (size_t)(block - have) * L * sizeof(float));
}

/* Images [first, first + block) of the order into dev_pixels, and their decoded means
 * into the host's means (when not NULL); first is a multiple of the block, and a block
 * past the last image is decoded whole all the same. */
static void decode_block(cv_model *m, cv_workspace *ws, const cv_generate_options *o,
                         long long first, int block, cond_scratch sc, uint8_t *dev_pixels,
                         float *means) {
    upload_conditions(m, ws, &o->cond, first, block, sc);
    if (o->z)
        upload_z(m, ws, o, first, block);
    else
        draw_z(m, ws, block, o->seed, first, NULL);
    decode_pixels(m, ws, block, o->mean, o->seed, first, dev_pixels);
    if (means) cv_decoded_means(m, ws, block, means);
}

/* Host copies of one chunk's pixels, of its images' labels or condition rows, and (for
 * decoded.npy) of their decoded means. */
typedef struct {
    uint8_t *pixels, *labels;
    float *rows, *means;
} chunk_out;

/* Images [first, first + rows) to the host, block by block (dev_pixels holds rows
 * rounded up to whole blocks). */
static void decode_chunk(cv_model *m, cv_workspace *ws, const cv_generate_options *o,
                         long long first, int rows, uint8_t *dev_pixels, cond_scratch sc,
                         chunk_out *out) {
    const int block = cv_generate_block_rows(m), D = m->layout.dim, K = m->layout.cfg.cond_width;
    for (int b = 0; b < rows; b += block)
        decode_block(m, ws, o, first + b, block, sc, dev_pixels + (size_t)b * D,
                     out->means ? out->means + (size_t)b * D : NULL);
    for (int r = 0; r < rows; r++) {
        if (out->rows)
            memcpy(out->rows + (size_t)r * K, vector_of(&o->cond, K, first + r),
                   (size_t)K * sizeof(float));
        else
            out->labels[r] = (uint8_t)cv_gen_class_of(&o->cond, first + r);
    }
    m->be->download(m->be, out->pixels, dev_pixels, (size_t)rows * D);
}

/* The manifest's account of the conditions: the classes and their counts, or the rows. */
static void manifest_conditions(FILE *fp, const cv_model *m, const cv_generate_options *o) {
    const cv_gen_conditions *c = &o->cond;
    const long long R = cv_gen_condition_count(c), per = cv_generate_count(o) / R;
    const bool vectors = m->layout.cfg.condition == CV_COND_VECTORS;
    fprintf(fp, "  \"condition\": \"%s\",\n", vectors ? "vectors" : "labels");
    if (c->n_rows) {
        fprintf(fp, "  \"order\": \"image i has row i %% %lld of ", R);
        cv_json_escape(fp, c->source ? c->source : "the given rows");
        fprintf(fp, "\",\n  \"rows\": %lld,\n  \"images_per_row\": %lld,\n", R, per);
    } else {
        fprintf(fp, "  \"order\": \"interleaved: image i has class classes[i %% %lld]\",\n"
                    "  \"classes\": [", R);
        for (int a = 0; a < c->n_classes; a++) fprintf(fp, "%s%d", a ? ", " : "", c->classes[a]);
        fprintf(fp, "],\n");
    }
    if (!vectors && o->class_names) { /* the model's classes by name, in class order */
        fprintf(fp, "  \"class_names\": [");
        for (int k = 0; k < m->layout.cfg.cond_width; k++) {
            fprintf(fp, "%s\"", k ? ", " : "");
            cv_json_escape(fp, o->class_names[k]);
            fputc('"', fp);
        }
        fprintf(fp, "],\n");
    }
    if (vectors) {
        fprintf(fp, "  \"condition_width\": %d,\n", m->layout.cfg.cond_width);
        return;
    }
    long long count[CV_MAX_CLASSES] = {0};
    for (long long a = 0; a < R; a++) count[cv_gen_class_of(c, a)] += per;
    fprintf(fp, "  \"count_per_class\": {");
    for (int k = 0, first = 1; k < CV_MAX_CLASSES; k++)
        if (count[k]) {
            fprintf(fp, "%s\"%d\": %lld", first ? "" : ", ", k, count[k]);
            first = 0;
        }
    fprintf(fp, "},\n");
}

static cv_status write_manifest(const char *tmpdir, const cv_model *m,
                                const cv_generate_options *o, const gen_layout *layout,
                                cv_err *err) {
    char path[4300];
    snprintf(path, sizeof path, "%s/manifest.json", tmpdir);
    cv_outfile f;
    cv_status st = cv_outfile_open(&f, path, err);
    if (st) return st;
    fprintf(f.fp, "{\n  \"checkpoint\": \"");
    cv_json_escape(f.fp, o->checkpoint ? o->checkpoint : "");
    fprintf(f.fp, "\",\n  \"checkpoint_crc32\": \"%08x\",\n", o->checkpoint_crc);
    if (!o->z) /* decoding given latents draws nothing */
        fprintf(f.fp, "  \"seed\": %llu,\n", (unsigned long long)o->seed);
    fprintf(f.fp,
            "  \"mode\": \"%s\",\n  \"format\": \"%s\",\n"
            "  \"height\": %d,\n  \"width\": %d,\n  \"channels\": %d,\n  \"images\": %lld,\n",
            o->mean ? "mean" : "sample", cv_gen_format_name(o->format), layout->h, layout->w,
            layout->channels, layout->n);
    if (o->z) {
        fprintf(f.fp, "  \"latents\": \"");
        cv_json_escape(f.fp, o->z_source ? o->z_source : "");
        fprintf(f.fp, "\",\n");
    }
    manifest_conditions(f.fp, m, o);
    fprintf(f.fp, "  \"files\": [");
    char name[512];
    for (long long k = 0; gen_sink_file_name(layout, k, name, sizeof name); k++) {
        char file[4700], hex[65];
        uint64_t size;
        snprintf(file, sizeof file, "%s/%s", tmpdir, name);
        st = cv_sha256_file(file, hex, &size, err);
        if (st) break;
        fprintf(f.fp, "%s\n    {\"name\": \"", k ? "," : "");
        cv_json_escape(f.fp, name);
        fprintf(f.fp, "\", \"bytes\": %llu, \"sha256\": \"%s\"}", (unsigned long long)size, hex);
    }
    fprintf(f.fp, "\n  ]\n}\n");
    if (st || ferror(f.fp)) {
        cv_outfile_abort(&f);
        return st ? st : cv_fail(err, CV_ERR_IO, "%s: write failed", path);
    }
    return cv_outfile_commit(&f, err);
}

/* The progress line, cleared when the last image is done or the work stops. */
static void show_progress(long long done, long long n, bool stopped, double t0, double *shown) {
    double t = cv_now_seconds();
    if (t - *shown <= 0.2 && done != n && !stopped) return;
    fprintf(stderr, "\rgenerated %lld/%lld images (%.0f images/s) ", done, n, done / (t - t0));
    if (done == n || stopped) fprintf(stderr, "\r%*s\r", 70, "");
    *shown = t;
}

/* A recorded SIGINT or SIGTERM, as the error that stops the work. */
static cv_status stop_if_signalled(long long done, long long n, cv_err *err) {
    int sig = cv_interrupt_pending();
    if (!sig) return CV_OK;
    return cv_fail(err, CV_ERR_INTERRUPTED, "interrupted by %s after %lld of %lld images; what "
                   "was written is removed", sig == SIGINT ? "SIGINT" : "SIGTERM", done, n);
}

static cv_status generate_into(cv_model *m, cv_workspace *ws, const cv_generate_options *o,
                               const char *tmpdir, cv_generate_result *res, cv_err *err) {
    const cv_model_config *c = &m->layout.cfg;
    const bool vectors = c->condition == CV_COND_VECTORS;
    const gen_layout layout = {o->format, cv_generate_count(o), c->height, c->width,
                               c->channels, vectors ? c->cond_width : 0, &o->cond, o->decoded,
                               vectors ? NULL : o->class_names};
    const long long n = layout.n;
    const int D = m->layout.dim, block = cv_generate_block_rows(m), K = c->cond_width;
    const int B = (o->batch + block - 1) / block * block; /* whole blocks a chunk */
    uint8_t *dev_pixels = NULL;
    cv_status st = m->be->alloc(m->be, (void **)&dev_pixels, (size_t)B * D, "generated pixels", err);
    if (st) return st;
    /* a chunk's pixels, its labels or condition rows, and one block's conditions */
    const size_t px_bytes = (size_t)B * D, scratch_bytes = cond_scratch_bytes(m, block);
    const size_t cond_bytes = vectors ? (size_t)B * K * sizeof(float) : (size_t)B;
    const size_t means_bytes = o->decoded ? px_bytes * sizeof(float) : 0;
    chunk_out out = {malloc(px_bytes), vectors ? NULL : malloc(cond_bytes),
                     vectors ? malloc(cond_bytes) : NULL, o->decoded ? malloc(means_bytes) : NULL};
    cond_scratch sc = {.any = malloc(scratch_bytes)};
    gen_sink *sink = NULL;
    if (!out.pixels || !(out.labels || out.rows) || !sc.any || (o->decoded && !out.means))
        st = cv_fail(err, CV_ERR_NOMEM, "out of host memory: generating %d images at a time "
                     "needs %.1f MiB", B,
                     (double)(px_bytes + cond_bytes + scratch_bytes + means_bytes) / 1048576.0);
    if (!st) st = gen_sink_open(&sink, &layout, tmpdir, err);
    double t0 = cv_now_seconds(), shown = t0;
    for (long long first = 0; !st && first < n; first += B) {
        int rows = n - first < B ? (int)(n - first) : B;
        decode_chunk(m, ws, o, first, rows, dev_pixels, sc, &out);
        st = gen_sink_write(sink, first, rows, out.pixels, out.labels, out.rows, out.means, err);
        if (!st) st = stop_if_signalled(first + rows, n, err);
        if (o->progress) show_progress(first + rows, n, st != CV_OK, t0, &shown);
    }
    if (sink) {
        cv_err close_err;
        cv_status cs = gen_sink_close(sink, st ? &close_err : err);
        if (!st) st = cs;
    }
    res->images = n;
    res->seconds = cv_now_seconds() - t0;
    if (!st) st = write_manifest(tmpdir, m, o, &layout, err);
    m->be->release(m->be, dev_pixels);
    free(out.pixels);
    free(out.labels);
    free(out.rows);
    free(out.means);
    free(sc.any);
    return st;
}

cv_status cv_generate_images(cv_model *m, cv_workspace *ws, const cv_generate_options *o,
                             uint8_t *pixels, uint8_t *labels, float *rows, cv_err *err) {
    const long long n = cv_gen_condition_count(&o->cond) * o->per;
    const int D = m->layout.dim, block = cv_generate_block_rows(m);
    const int K = m->layout.cfg.cond_width, B = (o->batch + block - 1) / block * block;
    uint8_t *dev_pixels = NULL;
    cv_status st = m->be->alloc(m->be, (void **)&dev_pixels, (size_t)B * D, "generated pixels", err);
    cond_scratch sc = {.any = st ? NULL : malloc(cond_scratch_bytes(m, block))};
    if (!st && !sc.any) st = cv_fail(err, CV_ERR_NOMEM, "out of host memory for the conditions");
    for (long long first = 0; !st && first < n; first += B) {
        const int count = n - first < B ? (int)(n - first) : B;
        chunk_out out = {.pixels = pixels + (size_t)first * D,
                         .labels = labels ? labels + first : NULL,
                         .rows = rows ? rows + (size_t)first * K : NULL};
        decode_chunk(m, ws, o, first, count, dev_pixels, sc, &out);
    }
    if (dev_pixels) m->be->release(m->be, dev_pixels);
    free(sc.any);
    return st;
}

/* A grid's file: new, its folders made, the temporaries dead processes left beside it
 * swept and the place proven writable; `made` is the shallowest folder made. */
static cv_status prepare_grid_file(const char *path, char made[CV_PATH_MAX], cv_err *err) {
    made[0] = '\0';
    if (cv_path_exists(path))
        return cv_fail(err, CV_ERR_IO, "%s: exists already; choose a new file", path);
    return cv_prepare_output_file(path, made, err);
}

/* The folders a grid's preparation made above it, and with `file`, the grid itself. */
static void take_back_grid(const char *path, const char *made, bool file) {
    char copy[CV_PATH_MAX];
    snprintf(copy, sizeof copy, "%s", path);
    if (file) unlink(path);
    cv_unmake_dirs(dirname(copy), made);
}

/* A grid picture: its folder made and proven writable before any image is decoded; a
 * signal during the work takes the picture back. */
static cv_status generate_grid_file(cv_model *m, cv_workspace *ws,
                                    const cv_generate_options *o, cv_generate_result *res,
                                    cv_err *err) {
    char made[CV_PATH_MAX];
    const long long n = o->per * cv_gen_condition_count(&o->cond);
    cv_status st = prepare_grid_file(o->out, made, err);
    double t0 = cv_now_seconds();
    if (!st)
        st = cv_generate_grid(m, ws, &o->cond, (int)o->per, o->same_z, o->mean, o->seed, o->out,
                              err);
    const bool written = !st;
    if (!st) st = stop_if_signalled(n, n, err);
    res->images = n;
    res->seconds = cv_now_seconds() - t0;
    if (st) take_back_grid(o->out, made, written);
    return st;
}

/* The set written into its folder's temporary one, which then takes its name. */
static cv_status generate_data_set(cv_model *m, cv_workspace *ws, const cv_generate_options *o,
                                   cv_generate_result *res, cv_err *err) {
    gen_folder f;
    cv_status st = gen_folder_open(&f, o->out, err);
    if (st) return st;
    st = generate_into(m, ws, o, f.tmp, res, err);
    if (!st) st = stop_if_signalled(res->images, res->images, err);
    if (!st) st = gen_folder_commit(&f, err);
    if (st) gen_folder_abort(&f);
    return st;
}

cv_status cv_generate_check_output(const cv_generate_options *o, cv_err *err) {
    char made[CV_PATH_MAX];
    if (o->format == CV_FMT_GRID) {
        cv_status st = prepare_grid_file(o->out, made, err);
        take_back_grid(o->out, made, false);
        return st;
    }
    gen_folder f;
    cv_status st = gen_folder_open(&f, o->out, err);
    if (!st) gen_folder_abort(&f);
    return st;
}

/* The classes of a model of K labels: rows of labels each below K; interleaved classes
 * each below K and each once. */
static cv_status check_classes(const cv_gen_conditions *c, int K, const char *src,
                               cv_err *err) {
    for (long long a = 0; c->labels && a < c->n_rows; a++)
        if (c->labels[a] >= K)
            return cv_fail(err, CV_ERR_FORMAT, "%s: class %d (row %lld) is not among the "
                           "model's %d classes (0..%d)", src, c->labels[a], a, K, K - 1);
    for (int a = 0; !c->labels && a < c->n_classes; a++) {
        if (c->classes[a] >= K)
            return cv_fail(err, CV_ERR_USAGE, "class %d is not among the model's %d classes "
                           "(0..%d)", c->classes[a], K, K - 1);
        for (int b = 0; b < a; b++)
            if (c->classes[b] == c->classes[a])
                return cv_fail(err, CV_ERR_USAGE, "class %d is listed twice in --classes",
                               c->classes[a]);
    }
    return CV_OK;
}

/* Given latents (cvae decode): finite, a data set's rows, each with its own condition
 * row or all with one. */
static cv_status check_latents(const cv_model_config *cfg, const cv_generate_options *o,
                               long long R, cv_err *err) {
    const char *src = o->z_source ? o->z_source : "the latents";
    if (o->format == CV_FMT_GRID)
        return cv_fail(err, CV_ERR_USAGE, "decoded latents go to a data set, not a grid");
    if (R != 1 && R != o->z_rows)
        return cv_fail(err, CV_ERR_FORMAT, "%s: %lld rows of latents but %lld condition rows "
                       "(give one per latent row, or one for all)", src, o->z_rows, R);
    const size_t L = (size_t)cfg->latent;
    for (size_t i = 0; i < (size_t)o->z_rows * L; i++)
        if (!isfinite(o->z[i]))
            return cv_fail(err, CV_ERR_FORMAT, "%s: row %zu holds a NaN or Inf (column %zu)",
                           src, i / L, i % L);
    return CV_OK;
}

cv_status cv_generate_check(const cv_model_config *cfg, const cv_generate_options *o,
                            cv_err *err) {
    const cv_gen_conditions *c = &o->cond;
    const char *src = c->source ? c->source : "the conditions";
    const long long R = cv_gen_condition_count(c);
    const bool vectors = cfg->condition == CV_COND_VECTORS;
    if (vectors != (c->conditions != NULL))
        return cv_fail(err, CV_ERR_USAGE, vectors
                       ? "the model takes condition vectors of width %d: give them with "
                         "--conditions FILE.npy"
                       : "the model takes class labels (%d classes): give --per-class N "
                         "(with --classes LIST for some of them) or --labels FILE, not "
                         "condition vectors",
                       cfg->cond_width);
    if (R < 1) return cv_fail(err, CV_ERR_USAGE, "%s: no conditions to generate", src);
    if (vectors && c->width != cfg->cond_width)
        return cv_fail(err, CV_ERR_FORMAT, "%s: rows have width %d but the model's condition "
                       "vectors have %d", src, c->width, cfg->cond_width);
    if (o->format == CV_FMT_GRID && R > CV_GRID_MAX_ROWS)
        return cv_fail(err, CV_ERR_USAGE, "%s: %lld rows; a grid holds at most %d", src, R,
                       CV_GRID_MAX_ROWS);
    if ((o->format == CV_FMT_GRID || o->format == CV_FMT_PNG) &&
        cfg->channels > CV_PNG_MAX_CHANNELS)
        return cv_fail(err, CV_ERR_USAGE, "images of %d channels do not fit a PNG (1 to %d)",
                       cfg->channels, CV_PNG_MAX_CHANNELS);
    cv_status st = o->z ? check_latents(cfg, o, R, err) : CV_OK;
    if (st) return st;
    if (!vectors) return check_classes(c, cfg->cond_width, src, err);
    for (size_t i = 0; i < (size_t)R * cfg->cond_width; i++)
        if (!isfinite(c->conditions[i]))
            return cv_fail(err, CV_ERR_FORMAT, "%s: row %zu holds a NaN or Inf (column %zu)",
                           src, i / (size_t)cfg->cond_width, i % (size_t)cfg->cond_width);
    return CV_OK;
}

cv_status cv_generate(cv_model *m, cv_workspace *ws, const cv_generate_options *o,
                      cv_generate_result *res, cv_err *err) {
    memset(res, 0, sizeof *res);
    cv_status st = cv_generate_check(&m->layout.cfg, o, err);
    if (st) return st;
    if (o->format == CV_FMT_GRID) return generate_grid_file(m, ws, o, res, err);
    CV_ASSERT(ws->max_rows >= cv_generate_block_rows(m));
    return generate_data_set(m, ws, o, res, err);
}

cv_status cv_generate_grid_tiles(cv_model *m, cv_workspace *ws, const cv_gen_conditions *cond,
                                 int cols, bool same_z, bool mean, uint64_t seed, cv_tiles *out,
                                 cv_err *err) {
    cv_backend *be = m->be;
    const int R = (int)cv_gen_condition_count(cond), D = m->layout.dim;
    CV_ASSERT(R <= CV_GRID_MAX_ROWS && ws->max_rows >= R);
    uint8_t *tiles = malloc((size_t)R * cols * D), *col = malloc((size_t)R * D);
    cond_scratch sc = {.any = malloc(cond_scratch_bytes(m, R))};
    long long streams[CV_GRID_MAX_ROWS];
    uint8_t *dev_pixels = NULL;
    cv_status st = tiles && col && sc.any ? CV_OK : cv_fail(err, CV_ERR_NOMEM, "out of host memory");
    if (!st) st = be->alloc(be, (void **)&dev_pixels, (size_t)R * D, "grid pixels", err);
    for (int k = 0; k < cols && !st; k++) {
        /* column k holds images k*R .. k*R + R-1 of the order; with same_z every row takes
         * the first one's draw, placed in its own prior */
        long long first = (long long)k * R;
        for (int a = 0; a < R; a++) streams[a] = first;
        upload_conditions(m, ws, cond, first, R, sc);
        draw_z(m, ws, R, seed, first, same_z ? streams : NULL);
        decode_pixels(m, ws, R, mean, seed, first, dev_pixels);
        be->download(be, col, dev_pixels, (size_t)R * D);
        for (int a = 0; a < R; a++)
            memcpy(tiles + ((size_t)a * cols + k) * D, col + (size_t)a * D, (size_t)D);
    }
    if (dev_pixels) be->release(be, dev_pixels);
    free(col);
    free(sc.any);
    if (st) {
        free(tiles);
        return st;
    }
    *out = (cv_tiles){tiles, R, cols};
    return CV_OK;
}

/* A picture's tiles to a PNG file, freed whatever happens. */
static cv_status write_tiles(const cv_model *m, cv_tiles *t, const char *path, cv_err *err) {
    const cv_model_config *c = &m->layout.cfg;
    cv_status st = cv_png_write_grid(path, t->pixels, t->rows, t->cols, c->height, c->width,
                                     c->channels, 2, err);
    free(t->pixels);
    return st;
}

cv_status cv_generate_grid(cv_model *m, cv_workspace *ws, const cv_gen_conditions *cond,
                           int cols, bool same_z, bool mean, uint64_t seed, const char *path,
                           cv_err *err) {
    cv_tiles t;
    cv_status st = cv_generate_grid_tiles(m, ws, cond, cols, same_z, mean, seed, &t, err);
    return st ? st : write_tiles(m, &t, path, err);
}

cv_status cv_reconstruction_tiles(cv_model *m, cv_workspace *ws, const cv_split *s, int count,
                                  cv_tiles *out, cv_err *err) {
    cv_backend *be = m->be;
    const int D = m->layout.dim, L = m->layout.cfg.latent;
    CV_ASSERT(ws->max_rows >= count && count <= s->n);
    uint8_t *tiles = malloc((size_t)2 * count * D), *dev_pixels = NULL;
    cv_status st = tiles ? CV_OK : cv_fail(err, CV_ERR_NOMEM, "out of host memory");
    if (!st) st = be->alloc(be, (void **)&dev_pixels, (size_t)count * D, "pixels", err);
    if (!st) st = cv_workspace_load_split(m, ws, s, 0, count, err);
    if (!st) {
        cv_model_encode(m, ws, count);
        /* z = mu: the posterior mean, with the noise set to zero */
        be->zero(be, ws->eps, (size_t)count * L * sizeof(float));
        cv_prior prior;
        be->reparam_forward(be, ws->act[m->layout.n_enc - 1], ws->eps, false, 0, 0, NULL, 0,
                            cv_model_batch_prior(m, ws, count, &prior), ws->labels, ws->z,
                            ws->kl, NULL, count, L);
        decode_pixels(m, ws, count, true, 0, 0, dev_pixels);
        for (size_t i = 0; i < (size_t)count * D; i++)
            tiles[i] = s->pixels ? s->pixels[i] : (uint8_t)floorf(255.0f * s->fpixels[i] + 0.5f);
        be->download(be, tiles + (size_t)count * D, dev_pixels, (size_t)count * D);
    }
    if (dev_pixels) be->release(be, dev_pixels);
    if (st) {
        free(tiles);
        return st;
    }
    *out = (cv_tiles){tiles, 2, count};
    return CV_OK;
}

cv_status cv_reconstructions_png(cv_model *m, cv_workspace *ws, const cv_split *s, int count,
                                 const char *path, cv_err *err) {
    cv_tiles t;
    cv_status st = cv_reconstruction_tiles(m, ws, s, count, &t, err);
    return st ? st : write_tiles(m, &t, path, err);
}
