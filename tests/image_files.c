/* image_files.c: test images written with libpng and libjpeg (image_files.h). */
#include <criterion/criterion.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

#include "image_files.h"

static int channels_of(int color_type) {
    switch (color_type) {
    case PNG_COLOR_TYPE_GRAY:
    case PNG_COLOR_TYPE_PALETTE: return 1;
    case PNG_COLOR_TYPE_GRAY_ALPHA: return 2;
    case PNG_COLOR_TYPE_RGB: return 3;
    default: return 4;
    }
}

uint8_t *test_png_bytes(const test_png_kind *k, const uint8_t *samples, int h, int w,
                        size_t *size) {
    char *buf = NULL;
    FILE *fp = open_memstream(&buf, size);
    cr_assert_not_null(fp);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    cr_assert(png && info);
    cr_assert_eq(setjmp(png_jmpbuf(png)), 0, "libpng failed writing a test image");
    png_init_io(png, fp);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, k->bit_depth, k->color_type,
                 k->interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (k->palette) {
        png_color pal[256];
        for (int i = 0; i < k->n_palette; i++)
            pal[i] = (png_color){k->palette[3 * i], k->palette[3 * i + 1], k->palette[3 * i + 2]};
        png_set_PLTE(png, info, pal, k->n_palette);
        if (k->trns) png_set_tRNS(png, info, k->trns, k->n_palette, NULL);
    }
    png_write_info(png, info);
    const size_t bits = (size_t)w * channels_of(k->color_type) * (size_t)k->bit_depth;
    const size_t in_row = k->bit_depth < 8 ? (size_t)w : bits / 8, out_row = (bits + 7) / 8;
    uint8_t *row = calloc(out_row, 1);
    png_bytep *rows = malloc((size_t)h * sizeof *rows);
    uint8_t *packed = calloc((size_t)h, out_row);
    for (int y = 0; y < h; y++) {
        const uint8_t *src = samples + (size_t)y * in_row;
        uint8_t *dst = packed + (size_t)y * out_row;
        if (k->bit_depth >= 8) {
            memcpy(dst, src, out_row);
        } else { /* one sample a byte in, packed high bits first out */
            for (int x = 0; x < w; x++) {
                const int at = x * k->bit_depth;
                dst[at / 8] |= (uint8_t)(src[x] << (8 - k->bit_depth - at % 8));
            }
        }
        rows[y] = dst;
    }
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    fclose(fp);
    free(row);
    free(rows);
    free(packed);
    return (uint8_t *)buf;
}

uint8_t *test_jpeg_bytes(const uint8_t *samples, int h, int w, int channels, int q, size_t *size) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    unsigned char *buf = NULL;
    unsigned long len = 0;
    jpeg_mem_dest(&c, &buf, &len);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = channels;
    c.in_color_space = channels == 1 ? JCS_GRAYSCALE : channels == 3 ? JCS_RGB : JCS_CMYK;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, q, TRUE);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(samples + (size_t)c.next_scanline * w * channels);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    *size = len;
    return buf;
}

void test_photo(uint64_t seed, int h, int w, uint8_t *rgb) {
    uint64_t s = seed * 6364136223846793005ULL + 1442695040888963407ULL;
#define NEXT() ((s = s * 6364136223846793005ULL + 1442695040888963407ULL) >> 11) * 0x1p-53
    double base[3], gx[3], gy[3], cy[4], cx[4], r[4], col[4][3];
    for (int c = 0; c < 3; c++) base[c] = 40 + 170 * NEXT(), gx[c] = NEXT() - 0.5, gy[c] = NEXT() - 0.5;
    for (int e = 0; e < 4; e++) {
        cy[e] = h * NEXT(), cx[e] = w * NEXT(), r[e] = (0.1 + 0.3 * NEXT()) * (h < w ? h : w);
        for (int c = 0; c < 3; c++) col[e][c] = 255 * NEXT();
    }
#undef NEXT
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                double v = base[c] + gx[c] * (x - w / 2.0) + gy[c] * (y - h / 2.0);
                for (int e = 0; e < 4; e++)
                    if ((y - cy[e]) * (y - cy[e]) + (x - cx[e]) * (x - cx[e]) < r[e] * r[e])
                        v = 0.4 * v + 0.6 * col[e][c];
                v += 4 * sin(0.7 * x + 0.9 * y + c);
                rgb[((size_t)y * w + x) * 3 + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v + 0.5);
            }
}
