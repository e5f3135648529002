/* generate.c: decoding images from the prior p(z|c) in chunks, and writing data sets,
 * sample grids and reconstruction pictures (order and noise streams in generate.h).
 *
 * A data set is written into DIR.tmp.<pid> beside DIR and renamed to DIR only once every
 * file and the manifest are complete and fsynced, so an interrupted run never leaves a
 * half data set under the real name.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cvae/fileio.h"
#include "cvae/generate.h"
#include "cvae/png.h"
#include "cvae/rng.h"
#include "cvae/sha256.h"
#include "gen_sink.h"

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const float *logits_of(cv_model *m, cv_workspace *ws) {
    return ws->act[m->layout.n_layers - 1];
}

/* Decodes the rows in ws->z with ws->labels into dev_pixels; image `first` is row 0. */
static void decode_pixels(cv_model *m, cv_workspace *ws, int rows, bool mean, uint64_t seed,
                          long long first, uint8_t *dev_pixels) {
    cv_model_decode(m, ws, rows);
    m->be->pixels_from_logits(m->be, m->layout.cfg.likelihood, m->layout.cfg.sigma,
                              logits_of(m, ws), rows, m->layout.dim, mean, seed,
                              CV_STREAM_GEN_PIXELS(first), dev_pixels);
}

int cv_generate_block_rows(const cv_model *m) {
    int rows = (1 << 22) / m->layout.dim; /* a block's logits stay within 16 MiB */
    return rows < 1 ? 1 : rows > 256 ? 256 : rows;
}

/* Images [first, first + block) of the interleaved order into dev_pixels; first is a
 * multiple of the block, and a block past the last image is decoded whole all the same. */
static void decode_block(cv_model *m, cv_workspace *ws, const cv_generate_options *o,
                         long long first, int block, int32_t *labels32, uint8_t *dev_pixels) {
    cv_backend *be = m->be;
    for (int r = 0; r < block; r++) labels32[r] = o->classes[(first + r) % o->n_classes];
    be->upload(be, ws->labels, labels32, (size_t)block * sizeof(int32_t));
    be->normal(be, ws->z, block, m->layout.cfg.latent, o->seed, CV_STREAM_GEN_Z(first));
    cv_prior prior;
    be->prior_transform(be, cv_model_prior(m, &prior), ws->labels, ws->z, block,
                        m->layout.cfg.latent);
    decode_pixels(m, ws, block, o->mean, o->seed, first, dev_pixels);
}

/* Images [first, first + rows) to host pixels and labels, block by block (dev_pixels
 * holds rows rounded up to whole blocks). */
static void decode_chunk(cv_model *m, cv_workspace *ws, const cv_generate_options *o,
                         long long first, int rows, uint8_t *dev_pixels, int32_t *labels32,
                         uint8_t *pixels, uint8_t *labels) {
    const int block = cv_generate_block_rows(m), D = m->layout.dim;
    for (int b = 0; b < rows; b += block)
        decode_block(m, ws, o, first + b, block, labels32, dev_pixels + (size_t)b * D);
    for (int r = 0; r < rows; r++) labels[r] = (uint8_t)o->classes[(first + r) % o->n_classes];
    m->be->download(m->be, pixels, dev_pixels, (size_t)rows * D);
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Refuses an output that holds anything; an empty folder is fine: rename() replaces it
 * with the finished one. */
static cv_status check_output_dir(const char *dir, cv_err *err) {
    struct stat st;
    if (stat(dir, &st) != 0) return CV_OK;
    if (!S_ISDIR(st.st_mode)) return cv_fail(err, CV_ERR_IO, "%s: exists and is not a folder", dir);
    DIR *d = opendir(dir);
    if (!d) return cv_fail(err, CV_ERR_IO, "%s: cannot read: %s", dir, strerror(errno));
    int entries = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        entries += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    if (entries)
        return cv_fail(err, CV_ERR_IO, "%s: exists and is not empty; choose a new output folder",
                       dir);
    return CV_OK;
}

static cv_status write_manifest(const char *tmpdir, const cv_generate_options *o, int h, int w,
                                cv_err *err) {
    const long long n = o->per_class * o->n_classes;
    char path[4300];
    snprintf(path, sizeof path, "%s/manifest.json", tmpdir);
    cv_outfile f;
    cv_status st = cv_outfile_open(&f, path, err);
    if (st) return st;
    static const char *formats[] = {"idx", "idx.gz", "npy", "png", "grid"};
    fprintf(f.fp,
            "{\n  \"checkpoint\": \"%s\",\n  \"checkpoint_crc32\": \"%08x\",\n"
            "  \"seed\": %llu,\n  \"mode\": \"%s\",\n  \"format\": \"%s\",\n"
            "  \"height\": %d,\n  \"width\": %d,\n  \"images\": %lld,\n"
            "  \"order\": \"interleaved: image i has class classes[i %% %d]\",\n"
            "  \"classes\": [",
            o->checkpoint, o->checkpoint_crc, (unsigned long long)o->seed,
            o->mean ? "mean" : "sample", formats[o->format], h, w, n, o->n_classes);
    for (int c = 0; c < o->n_classes; c++) fprintf(f.fp, "%s%d", c ? ", " : "", o->classes[c]);
    fprintf(f.fp, "],\n  \"count_per_class\": {");
    for (int c = 0; c < o->n_classes; c++)
        fprintf(f.fp, "%s\"%d\": %lld", c ? ", " : "", o->classes[c], o->per_class);
    fprintf(f.fp, "},\n  \"files\": [");
    char name[256];
    for (long long k = 0; gen_sink_file_name(o->format, k, n, o->classes, o->n_classes, name,
                                             sizeof name); k++) {
        char file[4500], hex[65];
        uint64_t size;
        snprintf(file, sizeof file, "%s/%s", tmpdir, name);
        st = cv_sha256_file(file, hex, &size, err);
        if (st) break;
        fprintf(f.fp, "%s\n    {\"name\": \"%s\", \"bytes\": %llu, \"sha256\": \"%s\"}",
                k ? "," : "", name, (unsigned long long)size, hex);
    }
    fprintf(f.fp, "\n  ]\n}\n");
    if (st || ferror(f.fp)) {
        cv_outfile_abort(&f);
        return st ? st : cv_fail(err, CV_ERR_IO, "%s: write failed", path);
    }
    return cv_outfile_commit(&f, err);
}

static cv_status generate_into(cv_model *m, cv_workspace *ws, const cv_generate_options *o,
                               const char *tmpdir, cv_generate_result *res, cv_err *err) {
    const cv_model_config *c = &m->layout.cfg;
    const long long n = o->per_class * o->n_classes;
    const int D = m->layout.dim, block = cv_generate_block_rows(m);
    const int B = (o->batch + block - 1) / block * block; /* whole blocks a chunk */
    uint8_t *dev_pixels = NULL;
    cv_status st = m->be->alloc(m->be, (void **)&dev_pixels, (size_t)B * D, "generated pixels", err);
    if (st) return st;
    uint8_t *pixels = malloc((size_t)B * D), *labels = malloc((size_t)B);
    int32_t *labels32 = malloc((size_t)block * sizeof(int32_t));
    gen_sink *sink = NULL;
    if (!pixels || !labels || !labels32)
        st = cv_fail(err, CV_ERR_NOMEM, "out of host memory: generating %d images at a time "
                     "needs %.1f MiB", B, (double)B * (D + 1) / 1048576.0);
    if (!st) st = gen_sink_open(&sink, o->format, tmpdir, n, c->height, c->width, o->classes,
                                o->n_classes, err);
    double t0 = now_seconds(), shown = t0;
    for (long long first = 0; !st && first < n; first += B) {
        int rows = n - first < B ? (int)(n - first) : B;
        decode_chunk(m, ws, o, first, rows, dev_pixels, labels32, pixels, labels);
        st = gen_sink_write(sink, first, rows, pixels, labels, err);
        double t = now_seconds();
        if (o->progress && (t - shown > 0.2 || first + rows == n)) {
            fprintf(stderr, "\rgenerated %lld/%lld images (%.0f images/s) ", first + rows, n,
                    (first + rows) / (t - t0));
            if (first + rows == n) fprintf(stderr, "\r%*s\r", 70, "");
            shown = t;
        }
    }
    if (sink) {
        cv_err close_err;
        cv_status cs = gen_sink_close(sink, st ? &close_err : err);
        if (!st) st = cs;
    }
    res->images = n;
    res->seconds = now_seconds() - t0;
    if (!st) st = write_manifest(tmpdir, o, c->height, c->width, err);
    m->be->release(m->be, dev_pixels);
    free(pixels);
    free(labels);
    free(labels32);
    return st;
}

/* A grid picture: its folder made and proven writable before any image is decoded. */
static cv_status generate_grid_file(cv_model *m, cv_workspace *ws,
                                    const cv_generate_options *o, cv_generate_result *res,
                                    cv_err *err) {
    char made[CV_PATH_MAX], copy[CV_PATH_MAX];
    cv_status st = cv_prepare_output_file(o->out, made, err);
    if (st) return st;
    double t0 = now_seconds();
    st = cv_generate_grid(m, ws, o->classes, o->n_classes, (int)o->per_class, o->same_z,
                          o->mean, o->seed, o->out, err);
    res->images = o->per_class * o->n_classes;
    res->seconds = now_seconds() - t0;
    snprintf(copy, sizeof copy, "%s", o->out);
    if (st) cv_unmake_dirs(dirname(copy), made);
    return st;
}

/* The finished set is renamed into place beside its temporary folder, so the folders
 * above it are made first; creating the temporary folder proves they are writable. */
static cv_status generate_data_set(cv_model *m, cv_workspace *ws, const cv_generate_options *o,
                                   const char *out, cv_generate_result *res, cv_err *err) {
    cv_status st = check_output_dir(out, err);
    if (st) return st;
    char made[CV_PATH_MAX], copy[CV_PATH_MAX], tmpdir[CV_PATH_MAX + 32];
    snprintf(copy, sizeof copy, "%s", out);
    const char *parent = dirname(copy);
    st = cv_make_dirs(parent, made, err);
    if (st) return st;
    snprintf(tmpdir, sizeof tmpdir, "%s.tmp.%ld", out, (long)getpid());
    if (mkdir(tmpdir, 0777) != 0) {
        st = cv_fail(err, CV_ERR_IO, "%s: cannot create the output folder: %s", out,
                     strerror(errno));
        cv_unmake_dirs(parent, made);
        return st;
    }
    st = generate_into(m, ws, o, tmpdir, res, err);
    if (!st && rename(tmpdir, out) != 0)
        st = cv_fail(err, CV_ERR_IO, "%s: cannot rename the finished data set into place: %s",
                     out, strerror(errno));
    if (st) {
        nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
        cv_unmake_dirs(parent, made);
        return st;
    }
    int dfd = open(parent, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return CV_OK;
}

cv_status cv_generate(cv_model *m, cv_workspace *ws, const cv_generate_options *o,
                      cv_generate_result *res, cv_err *err) {
    memset(res, 0, sizeof *res);
    if (o->format == CV_FMT_GRID) return generate_grid_file(m, ws, o, res, err);
    CV_ASSERT(ws->max_rows >= cv_generate_block_rows(m));
    char out[CV_PATH_MAX]; /* "DIR/" names DIR: the temporary folder goes beside it */
    cv_status st = cv_trim_path(out, o->out, err);
    return st ? st : generate_data_set(m, ws, o, out, res, err);
}

cv_status cv_generate_grid(cv_model *m, cv_workspace *ws, const int *classes, int n_classes,
                           int cols, bool same_z, bool mean, uint64_t seed, const char *path,
                           cv_err *err) {
    cv_backend *be = m->be;
    const int K = n_classes, D = m->layout.dim, L = m->layout.cfg.latent;
    CV_ASSERT(ws->max_rows >= K);
    uint8_t *tiles = malloc((size_t)K * cols * D), *col = malloc((size_t)K * D);
    uint8_t *dev_pixels = NULL;
    int32_t labels[256];
    cv_status st = tiles && col ? CV_OK : cv_fail(err, CV_ERR_NOMEM, "out of host memory");
    if (!st) st = be->alloc(be, (void **)&dev_pixels, (size_t)K * D, "grid pixels", err);
    for (int k = 0; k < cols && !st; k++) {
        /* column k holds images k*K .. k*K + K-1 of the interleaved order */
        long long first = (long long)k * K;
        for (int a = 0; a < K; a++) labels[a] = classes[a];
        be->upload(be, ws->labels, labels, (size_t)K * sizeof(int32_t));
        if (same_z)
            for (int a = 0; a < K; a++)
                be->normal(be, ws->z + (size_t)a * L, 1, L, seed, CV_STREAM_GEN_Z(first));
        else
            be->normal(be, ws->z, K, L, seed, CV_STREAM_GEN_Z(first));
        cv_prior prior; /* with a learned prior, the shared draw is placed in each class's */
        be->prior_transform(be, cv_model_prior(m, &prior), ws->labels, ws->z, K, L);
        decode_pixels(m, ws, K, mean, seed, first, dev_pixels);
        be->download(be, col, dev_pixels, (size_t)K * D);
        for (int a = 0; a < K; a++)
            memcpy(tiles + ((size_t)a * cols + k) * D, col + (size_t)a * D, (size_t)D);
    }
    if (!st)
        st = cv_png_write_grid(path, tiles, K, cols, m->layout.cfg.height, m->layout.cfg.width,
                               2, err);
    if (dev_pixels) be->release(be, dev_pixels);
    free(tiles);
    free(col);
    return st;
}

cv_status cv_reconstructions_png(cv_model *m, cv_workspace *ws, const uint8_t *pixels,
                                 const uint8_t *labels, int count, const char *path,
                                 cv_err *err) {
    cv_backend *be = m->be;
    const int D = m->layout.dim, L = m->layout.cfg.latent;
    CV_ASSERT(ws->max_rows >= count);
    float *x = malloc((size_t)count * D * sizeof(float));
    int32_t *lab = malloc((size_t)count * sizeof(int32_t));
    uint8_t *tiles = malloc((size_t)2 * count * D), *dev_pixels = NULL;
    cv_status st = x && lab && tiles ? CV_OK : cv_fail(err, CV_ERR_NOMEM, "out of host memory");
    if (!st) st = be->alloc(be, (void **)&dev_pixels, (size_t)count * D, "pixels", err);
    if (!st) {
        for (size_t i = 0; i < (size_t)count * D; i++) x[i] = (float)pixels[i] / 255.0f;
        for (int i = 0; i < count; i++) lab[i] = labels[i];
        be->upload(be, ws->x, x, (size_t)count * D * sizeof(float));
        be->upload(be, ws->labels, lab, (size_t)count * sizeof(int32_t));
        cv_model_encode(m, ws, count);
        /* z = mu: the posterior mean, with the noise set to zero */
        be->zero(be, ws->eps, (size_t)count * L * sizeof(float));
        cv_prior prior;
        be->reparam_forward(be, ws->act[m->layout.n_enc - 1], ws->eps, false, 0, 0, NULL,
                            cv_model_prior(m, &prior), ws->labels, ws->z, ws->kl, NULL, count,
                            L);
        decode_pixels(m, ws, count, true, 0, 0, dev_pixels);
        memcpy(tiles, pixels, (size_t)count * D);
        be->download(be, tiles + (size_t)count * D, dev_pixels, (size_t)count * D);
        st = cv_png_write_grid(path, tiles, 2, count, m->layout.cfg.height,
                               m->layout.cfg.width, 2, err);
    }
    if (dev_pixels) be->release(be, dev_pixels);
    free(x);
    free(lab);
    free(tiles);
    return st;
}
