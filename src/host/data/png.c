/* png.c: PNG output with libpng, into a file through cv_outfile (temporary name, renamed
 * when whole) or into memory. libpng reports errors by longjmp, so its state stays in
 * this file. */
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include "data/png.h"
#include "util/fileio.h"

/* The PNG colour type of 1 to 4 interleaved channels. */
static int color_type(int channels) {
    static const int types[CV_PNG_MAX_CHANNELS] = {PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA,
                                                   PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA};
    return types[channels - 1];
}

static void file_write(png_structp png, png_bytep data, png_size_t n) {
    if (fwrite(data, 1, n, png_get_io_ptr(png)) != n) png_error(png, "write failed");
}

/* A growing buffer in memory. */
typedef struct {
    uint8_t *data;
    size_t len, cap;
} membuf;

static void memory_write(png_structp png, png_bytep data, png_size_t n) {
    membuf *b = png_get_io_ptr(png);
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 65536;
        while (cap < b->len + n) cap *= 2;
        uint8_t *grown = realloc(b->data, cap);
        if (!grown) png_error(png, "out of memory");
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
}

static void no_flush(png_structp png) { (void)png; }

/* pixels as a PNG through write(io, ...): CV_OK, CV_ERR_NOMEM when libpng cannot start,
 * or CV_ERR_IO when a write failed (what has been written is the caller's to drop). */
static cv_status encode(void *io, png_rw_ptr write, const uint8_t *pixels, int height,
                        int width, int channels) {
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, NULL);
        return CV_ERR_NOMEM;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        return CV_ERR_IO;
    }
    png_set_write_fn(png, io, write, no_flush);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, color_type(channels),
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    const size_t row_bytes = (size_t)width * channels;
    for (int y = 0; y < height; y++) png_write_row(png, pixels + (size_t)y * row_bytes);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return CV_OK;
}

static cv_status check_channels(const char *what, int channels, cv_err *err) {
    if (channels >= 1 && channels <= CV_PNG_MAX_CHANNELS) return CV_OK;
    return cv_fail(err, CV_ERR_USAGE, "%s: a PNG holds 1 to %d channels, not %d", what,
                   CV_PNG_MAX_CHANNELS, channels);
}

cv_status cv_png_write(const char *path, const uint8_t *pixels, int height, int width,
                       int channels, cv_err *err) {
    cv_status st = check_channels(path, channels, err);
    if (st) return st;
    cv_outfile f;
    st = cv_outfile_open(&f, path, err);
    if (st) return st;
    st = encode(f.fp, file_write, pixels, height, width, channels);
    if (st) {
        cv_outfile_abort(&f);
        return st == CV_ERR_NOMEM ? cv_fail(err, st, "%s: libpng could not start", path)
                                  : cv_fail(err, st, "%s: writing the PNG failed", path);
    }
    return cv_outfile_commit(&f, err);
}

/* pixels as PNG bytes in memory: *png (malloc'd, *bytes long). */
static cv_status png_in_memory(const uint8_t *pixels, int height, int width, int channels,
                               uint8_t **png, size_t *bytes, cv_err *err) {
    membuf b = {0};
    if (encode(&b, memory_write, pixels, height, width, channels)) {
        free(b.data);
        return cv_fail(err, CV_ERR_NOMEM, "out of memory for a PNG of %dx%d", width, height);
    }
    *png = b.data;
    *bytes = b.len;
    return CV_OK;
}

/* The picture of a grid of tiles (malloc'd), its size in *H and *W; NULL out of memory. */
static uint8_t *compose_grid(const uint8_t *tiles, int rows, int cols, int h, int w,
                             int channels, int gap, int *H, int *W) {
    *H = rows * h + (rows + 1) * gap;
    *W = cols * w + (cols + 1) * gap;
    const size_t C = (size_t)channels, tile_row = (size_t)w * C, img_row = (size_t)*W * C;
    uint8_t *img = malloc((size_t)*H * img_row);
    if (!img) return NULL;
    memset(img, 128, (size_t)*H * img_row);
    if (channels == 2 || channels == 4) /* an opaque border */
        for (size_t i = C - 1; i < (size_t)*H * img_row; i += C) img[i] = 255;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            const uint8_t *t = tiles + ((size_t)r * cols + c) * h * tile_row;
            for (int y = 0; y < h; y++)
                memcpy(img + (size_t)(gap + r * (h + gap) + y) * img_row +
                           (size_t)(gap + c * (w + gap)) * C,
                       t + (size_t)y * tile_row, tile_row);
        }
    return img;
}

cv_status cv_png_write_grid(const char *path, const uint8_t *tiles, int rows, int cols, int h,
                            int w, int channels, int gap, cv_err *err) {
    cv_status st = check_channels(path, channels, err);
    if (st) return st;
    int H, W;
    uint8_t *img = compose_grid(tiles, rows, cols, h, w, channels, gap, &H, &W);
    if (!img) return cv_fail(err, CV_ERR_NOMEM, "%s: out of memory for the grid", path);
    st = cv_png_write(path, img, H, W, channels, err);
    free(img);
    return st;
}

cv_status cv_png_encode_grid(const uint8_t *tiles, int rows, int cols, int h, int w,
                             int channels, int gap, uint8_t **png, size_t *bytes, cv_err *err) {
    *png = NULL;
    *bytes = 0;
    cv_status st = check_channels("a picture", channels, err);
    if (st) return st;
    int H, W;
    uint8_t *img = compose_grid(tiles, rows, cols, h, w, channels, gap, &H, &W);
    if (!img) return cv_fail(err, CV_ERR_NOMEM, "out of memory for a grid of %dx%d tiles", rows, cols);
    st = png_in_memory(img, H, W, channels, png, bytes, err);
    free(img);
    return st;
}
