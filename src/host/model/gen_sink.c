/* gen_sink.c: the on-disk formats of a generated data set.
 *
 * idx, idx.gz: images-idx3-ubyte (N, H, W), or images-idx4-ubyte (N, H, W, C) for C > 1,
 *              and labels-idx1-ubyte (N), as MNIST ships them.
 * npy:         images.npy (N, H, W[, C]) uint8 and labels.npy (N,) uint8, .npy 1.0.
 * png:         <class>/<index>.png, grey or colour (1 to 4 channels); <class> is the
 *              class's name when the model has names, else its number.
 * A model of condition vectors writes conditions.npy (N, K) float32 in every format
 * instead of labels, and its PNGs as <index>.png. Decoded latents (cvae decode) add
 * decoded.npy (N, H, W[, C]) float32, the decoder's means. Files are streamed as images arrive, so
 * memory does not grow with N; they live in the caller's temporary folder and are
 * fsynced here before it is renamed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "cvae/npy.h"
#include "data/png.h"
#include "gen_sink.h"

typedef struct {
    int fd;   /* -1: not open (0, 1 and 2 are files like any other when closed at start) */
    FILE *fp; /* plain */
    gzFile gz;
    char path[4200];
} out_stream;

struct gen_sink {
    gen_layout layout;
    char dir[4096];
    out_stream images, labels; /* labels: labels or conditions.npy */
    out_stream means;          /* decoded.npy */
};

/* The writer (zlib or stdio) on a duplicate of o->fd, which stays open for the fsync
 * after the writer closes. On failure nothing more is open and errno says why (gzdopen,
 * given a valid descriptor and mode, fails only for want of memory). */
static bool writer_open(out_stream *o, bool gz) {
    int copy = dup(o->fd);
    if (copy < 0) return false;
    if (gz)
        o->gz = gzdopen(copy, "wb6");
    else
        o->fp = fdopen(copy, "wb");
    if (o->gz || o->fp) return true;
    int why = gz ? ENOMEM : errno;
    close(copy);
    errno = why;
    return false;
}

static cv_status stream_open(out_stream *o, const char *dir, const char *name, bool gz,
                             cv_err *err) {
    snprintf(o->path, sizeof o->path, "%s/%s", dir, name);
    o->fd = open(o->path, O_WRONLY | O_CREAT | O_EXCL, 0666);
    if (o->fd < 0)
        return cv_fail(err, CV_ERR_IO, "%s: cannot create: %s", o->path, strerror(errno));
    if (!writer_open(o, gz))
        return cv_fail(err, errno == ENOMEM ? CV_ERR_NOMEM : CV_ERR_IO,
                       "%s: cannot start writing: %s", o->path, strerror(errno));
    return CV_OK;
}

static cv_status stream_write(out_stream *o, const void *data, size_t n, cv_err *err) {
    const uint8_t *p = data;
    while (n) {
        unsigned chunk = n > (1u << 30) ? 1u << 30 : (unsigned)n;
        bool ok = o->gz ? gzwrite(o->gz, p, chunk) == (int)chunk
                        : fwrite(p, 1, chunk, o->fp) == chunk;
        if (!ok) return cv_fail(err, CV_ERR_IO, "%s: write failed: %s", o->path, strerror(errno));
        p += chunk;
        n -= chunk;
    }
    return CV_OK;
}

/* Closes and fsyncs; a stream never opened is a no-op. */
static cv_status stream_close(out_stream *o, cv_err *err) {
    if (o->fd < 0) return CV_OK;
    bool ok = true;
    if (o->gz) ok = gzclose(o->gz) == Z_OK;
    if (o->fp) ok = fclose(o->fp) == 0 && ok;
    ok = fsync(o->fd) == 0 && ok;
    ok = close(o->fd) == 0 && ok;
    o->gz = NULL;
    o->fp = NULL;
    o->fd = -1;
    if (!ok) return cv_fail(err, CV_ERR_IO, "%s: write failed: %s", o->path, strerror(errno));
    return CV_OK;
}

/* An IDX header of unsigned bytes of this shape, first in stream o. */
static cv_status write_idx_header(out_stream *o, int ndims, const uint32_t *dims, cv_err *err) {
    uint8_t b[20] = {0, 0, 0x08, (uint8_t)ndims};
    for (int i = 0; i < ndims; i++)
        for (int k = 0; k < 4; k++) b[4 + 4 * i + k] = (uint8_t)(dims[i] >> (24 - 8 * k));
    return stream_write(o, b, 4 + 4 * (size_t)ndims, err);
}

/* A .npy header of this dtype and shape, first in stream o. */
static cv_status write_npy_header(out_stream *o, cv_npy_dtype t, int ndims, const int64_t *dims,
                                  cv_err *err) {
    char head[CV_NPY_HEADER_MAX];
    size_t len = cv_npy_header(head, sizeof head, t, ndims, dims);
    return stream_write(o, head, len, err);
}

/* The folder of class c: its name, or its number. */
static void class_folder(const gen_layout *l, int c, char *name, size_t size) {
    if (l->class_names)
        snprintf(name, size, "%s", l->class_names[c]);
    else
        snprintf(name, size, "%d", c);
}

/* PNG image i's name: <class>/<index>.png (index within its class for distinct
 * interleaved classes, else the image's own), or <index>.png for condition vectors. */
static void png_name(const gen_layout *l, long long i, char *name, size_t size) {
    if (l->cond_width) {
        snprintf(name, size, "%lld.png", i);
        return;
    }
    const bool distinct = !l->cond->labels;
    char folder[256];
    class_folder(l, cv_gen_class_of(l->cond, i), folder, sizeof folder);
    snprintf(name, size, "%s/%lld.png", folder, distinct ? i / cv_gen_condition_count(l->cond) : i);
}

/* The images and their labels or conditions: file k of them, false past the last. */
static bool data_file_name(const gen_layout *l, long long k, char *name, size_t size) {
    const bool vectors = l->cond_width > 0;
    if (l->format == CV_FMT_PNG) {
        if (k < l->n) png_name(l, k, name, size);
        else if (k == l->n && vectors) snprintf(name, size, "conditions.npy");
        else return false;
        return true;
    }
    if (k > 1) return false;
    const char *gz = l->format == CV_FMT_IDX_GZ ? ".gz" : "";
    if (k == 1 && vectors)
        snprintf(name, size, "conditions.npy");
    else if (l->format == CV_FMT_NPY)
        snprintf(name, size, "%s", k ? "labels.npy" : "images.npy");
    else if (k == 1)
        snprintf(name, size, "labels-idx1-ubyte%s", gz);
    else
        snprintf(name, size, "images-idx%d-ubyte%s", l->channels > 1 ? 4 : 3, gz);
    return true;
}

bool gen_sink_file_name(const gen_layout *l, long long k, char *name, size_t size) {
    if (data_file_name(l, k, name, size)) return true;
    if (!l->decoded || (k > 0 && data_file_name(l, k - 1, name, size) == false)) return false;
    snprintf(name, size, "decoded.npy");
    return true;
}

/* The class folders of a PNG data set of labels: each class that occurs. */
static cv_status make_class_dirs(const gen_layout *l, const char *dir, cv_err *err) {
    bool made[CV_MAX_CLASSES] = {false};
    const long long R = cv_gen_condition_count(l->cond);
    for (long long a = 0; a < R && a < l->n; a++) {
        int c = cv_gen_class_of(l->cond, a);
        if (made[c]) continue;
        char sub[4400], folder[256];
        class_folder(l, c, folder, sizeof folder);
        snprintf(sub, sizeof sub, "%s/%s", dir, folder);
        if (mkdir(sub, 0777) != 0)
            return cv_fail(err, CV_ERR_IO, "%s: cannot create folder: %s", sub, strerror(errno));
        made[c] = true;
    }
    return CV_OK;
}

/* The headers of the images file (none for png) and of the labels or conditions file. */
static cv_status write_headers(gen_sink *s, cv_err *err) {
    const gen_layout *l = &s->layout;
    const int image_dims = l->channels > 1 ? 4 : 3;
    cv_status st = CV_OK;
    if (l->format == CV_FMT_NPY)
        st = write_npy_header(&s->images, CV_NPY_U8, image_dims,
                              (const int64_t[4]){l->n, l->h, l->w, l->channels}, err);
    else if (l->format != CV_FMT_PNG)
        st = write_idx_header(&s->images, image_dims,
                              (const uint32_t[4]){(uint32_t)l->n, (uint32_t)l->h,
                                                  (uint32_t)l->w, (uint32_t)l->channels},
                              err);
    if (st) return st;
    if (l->cond_width)
        return write_npy_header(&s->labels, CV_NPY_F32, 2, (const int64_t[2]){l->n, l->cond_width},
                                err);
    if (l->format == CV_FMT_NPY)
        return write_npy_header(&s->labels, CV_NPY_U8, 1, (const int64_t[1]){l->n}, err);
    return write_idx_header(&s->labels, 1, (const uint32_t[1]){(uint32_t)l->n}, err);
}

/* decoded.npy, opened with its header: (N, H, W) or (N, H, W, C) float32. */
static cv_status open_means(gen_sink *s, cv_err *err) {
    const gen_layout *l = &s->layout;
    cv_status st = stream_open(&s->means, s->dir, "decoded.npy", false, err);
    return st ? st : write_npy_header(&s->means, CV_NPY_F32, l->channels > 1 ? 4 : 3,
                                      (const int64_t[4]){l->n, l->h, l->w, l->channels}, err);
}

/* A png data set of labels has class folders and no stream; any other set streams its
 * labels or conditions, and all but png their images. */
cv_status gen_sink_open(gen_sink **out, const gen_layout *layout, const char *dir, cv_err *err) {
    gen_sink *s = calloc(1, sizeof *s);
    if (!s) return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    s->layout = *layout;
    s->images.fd = s->labels.fd = s->means.fd = -1;
    snprintf(s->dir, sizeof s->dir, "%s", dir);
    *out = s;
    const gen_layout *l = &s->layout;
    const bool png = l->format == CV_FMT_PNG, gz = l->format == CV_FMT_IDX_GZ;
    cv_status st = l->decoded ? open_means(s, err) : CV_OK;
    if (st) return st;
    if (png && !l->cond_width) return make_class_dirs(l, dir, err);
    char name[256];
    if (!png) {
        gen_sink_file_name(l, 0, name, sizeof name);
        st = stream_open(&s->images, dir, name, gz, err);
    }
    gen_sink_file_name(l, png ? l->n : 1, name, sizeof name);
    if (!st) st = stream_open(&s->labels, dir, name, gz && !l->cond_width, err);
    return st ? st : write_headers(s, err);
}

cv_status gen_sink_write(gen_sink *s, long long first, int rows, const uint8_t *pixels,
                         const uint8_t *labels, const float *conditions, const float *means,
                         cv_err *err) {
    const gen_layout *l = &s->layout;
    const size_t d = (size_t)l->h * l->w * l->channels;
    cv_status st = l->decoded ? stream_write(&s->means, means, (size_t)rows * d * sizeof(float), err)
                              : CV_OK;
    if (st) return st;
    if (l->cond_width)
        st = stream_write(&s->labels, conditions, (size_t)rows * l->cond_width * sizeof(float),
                          err);
    else if (l->format != CV_FMT_PNG)
        st = stream_write(&s->labels, labels, (size_t)rows, err);
    if (st || l->format != CV_FMT_PNG)
        return st ? st : stream_write(&s->images, pixels, (size_t)rows * d, err);
    for (int r = 0; r < rows && !st; r++) {
        char name[512], path[4700];
        png_name(l, first + r, name, sizeof name);
        snprintf(path, sizeof path, "%s/%s", s->dir, name);
        st = cv_png_write(path, pixels + r * d, l->h, l->w, l->channels, err);
    }
    return st;
}

cv_status gen_sink_close(gen_sink *s, cv_err *err) {
    cv_err e2;
    cv_status a = stream_close(&s->images, err);
    cv_status b = stream_close(&s->labels, a ? &e2 : err);
    cv_status c = stream_close(&s->means, a || b ? &e2 : err);
    free(s);
    return a ? a : b ? b : c;
}
