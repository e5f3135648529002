/* png.c: grayscale PNG output with libpng, through cv_outfile (temporary name, renamed
 * when whole). libpng reports errors by longjmp, so its state stays in this file. */
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include "cvae/fileio.h"
#include "cvae/png.h"

cv_status cv_png_write_gray(const char *path, const uint8_t *pixels, int height, int width,
                            cv_err *err) {
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
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, PNG_COLOR_TYPE_GRAY,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < height; y++) png_write_row(png, pixels + (size_t)y * width);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return cv_outfile_commit(&f, err);
}

cv_status cv_png_write_grid(const char *path, const uint8_t *tiles, int rows, int cols, int h,
                            int w, int gap, cv_err *err) {
    int H = rows * h + (rows + 1) * gap, W = cols * w + (cols + 1) * gap;
    uint8_t *img = malloc((size_t)H * W);
    if (!img) return cv_fail(err, CV_ERR_NOMEM, "%s: out of memory for the grid", path);
    memset(img, 128, (size_t)H * W);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            const uint8_t *t = tiles + ((size_t)r * cols + c) * h * w;
            for (int y = 0; y < h; y++)
                memcpy(img + (size_t)(gap + r * (h + gap) + y) * W + gap + c * (w + gap),
                       t + (size_t)y * w, (size_t)w);
        }
    cv_status st = cv_png_write_gray(path, img, H, W, err);
    free(img);
    return st;
}
