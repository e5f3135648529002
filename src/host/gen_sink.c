/* gen_sink.c: the on-disk formats of a generated data set.
 *
 * idx, idx.gz: images-idx3-ubyte (N, H, W) and labels-idx1-ubyte (N), as MNIST ships them.
 * npy:         images.npy (N, H, W) uint8 and labels.npy (N,) uint8, .npy version 1.0.
 * png:         <class>/<index within class>.png, 8-bit grayscale.
 * Files are streamed as images arrive, so memory does not grow with N; they live in the
 * caller's temporary folder and are fsynced here before it is renamed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "cvae/png.h"
#include "gen_sink.h"

typedef struct {
    int fd;
    FILE *fp; /* plain */
    gzFile gz;
    char path[4200];
} out_stream;

struct gen_sink {
    cv_gen_format format;
    char dir[4096];
    int h, w, n_classes;
    const int *classes;
    out_stream images, labels;
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
    if (!o->path[0] || o->fd <= 0) return CV_OK;
    bool ok = true;
    if (o->gz) ok = gzclose(o->gz) == Z_OK;
    if (o->fp) ok = fclose(o->fp) == 0 && ok;
    ok = fsync(o->fd) == 0 && ok;
    ok = close(o->fd) == 0 && ok;
    o->gz = NULL;
    o->fp = NULL;
    o->fd = 0;
    if (!ok) return cv_fail(err, CV_ERR_IO, "%s: write failed: %s", o->path, strerror(errno));
    return CV_OK;
}

static size_t idx_header(uint8_t *b, int ndims, const uint32_t *dims) {
    b[0] = b[1] = 0;
    b[2] = 0x08;
    b[3] = (uint8_t)ndims;
    for (int i = 0; i < ndims; i++)
        for (int k = 0; k < 4; k++) b[4 + 4 * i + k] = (uint8_t)(dims[i] >> (24 - 8 * k));
    return 4 + 4 * (size_t)ndims;
}

/* .npy 1.0: magic, version, header length, a dict padded so the data starts at a
 * multiple of 64 bytes, ending in a newline. */
static size_t npy_header(char *b, const char *shape) {
    char dict[256];
    int n = snprintf(dict, sizeof dict, "{'descr': '|u1', 'fortran_order': False, 'shape': %s, }",
                     shape);
    size_t total = (10 + (size_t)n + 1 + 63) / 64 * 64;
    size_t hlen = total - 10;
    memcpy(b, "\x93NUMPY\x01\x00", 8);
    b[8] = (char)(hlen & 0xff);
    b[9] = (char)(hlen >> 8);
    memcpy(b + 10, dict, (size_t)n);
    memset(b + 10 + n, ' ', hlen - (size_t)n - 1);
    b[total - 1] = '\n';
    return total;
}

bool gen_sink_file_name(cv_gen_format f, long long k, long long n, const int *classes,
                        int n_classes, char *name, size_t size) {
    if (f == CV_FMT_PNG) {
        if (k >= n) return false;
        snprintf(name, size, "%d/%lld.png", classes[k % n_classes], k / n_classes);
        return true;
    }
    if (k > 1) return false;
    const char *base = f == CV_FMT_NPY ? (k ? "labels.npy" : "images.npy")
                                       : (k ? "labels-idx1-ubyte" : "images-idx3-ubyte");
    snprintf(name, size, "%s%s", base, f == CV_FMT_IDX_GZ ? ".gz" : "");
    return true;
}

cv_status gen_sink_open(gen_sink **out, cv_gen_format format, const char *dir, long long n,
                        int h, int w, const int *classes, int n_classes, cv_err *err) {
    gen_sink *s = calloc(1, sizeof *s);
    if (!s) return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    s->format = format;
    snprintf(s->dir, sizeof s->dir, "%s", dir);
    s->h = h;
    s->w = w;
    s->classes = classes;
    s->n_classes = n_classes;
    *out = s;
    char name[256];
    cv_status st = CV_OK;
    if (format == CV_FMT_PNG) {
        for (int c = 0; c < n_classes && !st; c++) {
            char sub[4200];
            snprintf(sub, sizeof sub, "%s/%d", dir, classes[c]);
            if (mkdir(sub, 0777) != 0)
                st = cv_fail(err, CV_ERR_IO, "%s: cannot create folder: %s", sub, strerror(errno));
        }
        return st;
    }
    bool gz = format == CV_FMT_IDX_GZ;
    gen_sink_file_name(format, 0, n, classes, n_classes, name, sizeof name);
    st = stream_open(&s->images, dir, name, gz, err);
    gen_sink_file_name(format, 1, n, classes, n_classes, name, sizeof name);
    if (!st) st = stream_open(&s->labels, dir, name, gz, err);
    if (st) return st;
    if (format == CV_FMT_NPY) {
        char hi[256], hl[256], shape[96];
        snprintf(shape, sizeof shape, "(%lld, %d, %d)", n, h, w);
        size_t a = npy_header(hi, shape);
        snprintf(shape, sizeof shape, "(%lld,)", n);
        size_t b = npy_header(hl, shape);
        st = stream_write(&s->images, hi, a, err);
        if (!st) st = stream_write(&s->labels, hl, b, err);
    } else {
        uint8_t hi[16], hl[8];
        uint32_t di[3] = {(uint32_t)n, (uint32_t)h, (uint32_t)w}, dl[1] = {(uint32_t)n};
        st = stream_write(&s->images, hi, idx_header(hi, 3, di), err);
        if (!st) st = stream_write(&s->labels, hl, idx_header(hl, 1, dl), err);
    }
    return st;
}

cv_status gen_sink_write(gen_sink *s, long long first, int rows, const uint8_t *pixels,
                         const uint8_t *labels, cv_err *err) {
    const size_t d = (size_t)s->h * s->w;
    if (s->format != CV_FMT_PNG) {
        cv_status st = stream_write(&s->images, pixels, (size_t)rows * d, err);
        if (!st) st = stream_write(&s->labels, labels, (size_t)rows, err);
        return st;
    }
    for (int r = 0; r < rows; r++) {
        char name[256], path[4400];
        long long i = first + r;
        gen_sink_file_name(CV_FMT_PNG, i, i + 1, s->classes, s->n_classes, name, sizeof name);
        snprintf(path, sizeof path, "%s/%s", s->dir, name);
        cv_status st = cv_png_write_gray(path, pixels + r * d, s->h, s->w, err);
        if (st) return st;
    }
    return CV_OK;
}

cv_status gen_sink_close(gen_sink *s, cv_err *err) {
    cv_err e2;
    cv_status a = stream_close(&s->images, err);
    cv_status b = stream_close(&s->labels, a ? &e2 : err);
    free(s);
    return a ? a : b;
}
