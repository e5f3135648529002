/* png.c: PNG output with libpng, through cv_outfile (temporary name, renamed when whole).
 * libpng reports errors by longjmp, so its state stays in this file. */
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

cv_status cv_png_write(const char *path, const uint8_t *pixels, int height, int width,
                       int channels, cv_err *err) {
    if (channels < 1 || channels > CV_PNG_MAX_CHANNELS)
        return cv_fail(err, CV_ERR_USAGE, "%s: a PNG holds 1 to %d channels, not %d", path,
                       CV_PNG_MAX_CHANNELS, channels);
    cv_outfile f;
    cv_status st = cv_outfile_open(&f, path, err);
    if (st) return st;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, NULL);
        cv_outfile_abort(&f);
        return cv_fail(err, CV_ERR_NOMEM, "%s: libpng could not start", path);
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        cv_outfile_abort(&f);
        return cv_fail(err, CV_ERR_IO, "%s: writing the PNG failed", path);
    }
    png_init_io(png, f.fp);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, color_type(channels),
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    const size_t row_bytes = (size_t)width * channels;
    for (int y = 0; y < height; y++) png_write_row(png, pixels + (size_t)y * row_bytes);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return cv_outfile_commit(&f, err);
}

cv_status cv_png_write_grid(const char *path, const uint8_t *tiles, int rows, int cols, int h,
                            int w, int channels, int gap, cv_err *err) {
    if (channels < 1 || channels > CV_PNG_MAX_CHANNELS)
        return cv_fail(err, CV_ERR_USAGE, "%s: a PNG holds 1 to %d channels, not %d", path,
                       CV_PNG_MAX_CHANNELS, channels);
    const int H = rows * h + (rows + 1) * gap, W = cols * w + (cols + 1) * gap;
    const size_t C = (size_t)channels, tile_row = (size_t)w * C, img_row = (size_t)W * C;
    uint8_t *img = malloc((size_t)H * img_row);
    if (!img) return cv_fail(err, CV_ERR_NOMEM, "%s: out of memory for the grid", path);
    memset(img, 128, (size_t)H * img_row);
    if (channels == 2 || channels == 4) /* an opaque border */
        for (size_t i = C - 1; i < (size_t)H * img_row; i += C) img[i] = 255;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            const uint8_t *t = tiles + ((size_t)r * cols + c) * h * tile_row;
            for (int y = 0; y < h; y++)
                memcpy(img + (size_t)(gap + r * (h + gap) + y) * img_row +
                           (size_t)(gap + c * (w + gap)) * C,
                       t + (size_t)y * tile_row, tile_row);
        }
    cv_status st = cv_png_write(path, img, H, W, channels, err);
    free(img);
    return st;
}
