/* image_png.c: PNG files through libpng, from memory.
 *
 * libpng reports an error by calling the error callback, which must not return: it
 * longjmps back here with libpng's message (a bad signature, a CRC error in a critical
 * chunk, damaged compressed data, or the file ending early, which the read callback
 * reports). Warnings concern ancillary chunks (a colour profile libpng dislikes, a CRC
 * error in a text chunk, which it then skips) and leave the pixels sound: they are
 * ignored, never printed. The samples become 8 bits: palettes expanded to RGB, grey of 1,
 * 2 or 4 bits widened, 16-bit samples scaled (rounded, not truncated), transparency
 * entries made an alpha channel. Compressed data holds at most 1032 times its size, so a
 * header that declares more pixels than the file can hold is refused before the image is
 * allocated.
 */
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include "cvae/data.h"
#include "data/image.h"

#define DEFLATE_MAX_RATIO 1032u
#define CHUNK_MALLOC_MAX (1u << 23) /* an ancillary chunk (a profile, text) of 8 MiB at most */

typedef struct {
    const uint8_t *bytes;
    size_t len, at;
    char msg[256];
} png_source;

static void on_error(png_structp png, png_const_charp msg) {
    png_source *src = png_get_error_ptr(png);
    snprintf(src->msg, sizeof src->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

static void read_bytes(png_structp png, png_bytep out, size_t n) {
    png_source *src = png_get_io_ptr(png);
    if (n > src->len - src->at) png_error(png, "the file ends early (truncated)");
    memcpy(out, src->bytes + src->at, n);
    src->at += n;
}

/* The channels of the file's colour type, counting a transparency chunk as alpha. */
static int file_channels(png_structp png, png_infop info) {
    const int type = png_get_color_type(png, info);
    const bool trns = png_get_valid(png, info, PNG_INFO_tRNS) != 0;
    switch (type) {
    case PNG_COLOR_TYPE_GRAY: return trns ? 2 : 1;
    case PNG_COLOR_TYPE_GRAY_ALPHA: return 2;
    case PNG_COLOR_TYPE_RGB_ALPHA: return 4;
    default: return trns ? 4 : 3; /* RGB, palette */
    }
}

static bool create(png_source *src, png_structp *png, png_infop *info) {
    *png = png_create_read_struct(PNG_LIBPNG_VER_STRING, src, on_error, on_warning);
    *info = *png ? png_create_info_struct(*png) : NULL;
    if (*info) return true;
    png_destroy_read_struct(png, info, NULL);
    return false;
}

/* libpng on the bytes, limited to the sizes cvae takes; the caller has armed the jump. */
static void start(png_structp png, png_infop info, png_source *src) {
    png_set_user_limits(png, CV_MAX_IMAGE_SIDE, CV_MAX_IMAGE_SIDE);
    png_set_chunk_malloc_max(png, CHUNK_MALLOC_MAX);
    png_set_read_fn(png, src, read_bytes);
    png_read_info(png, info);
}

cv_status cv_png_probe(const char *path, const uint8_t *bytes, size_t len, cv_image_info *info,
                       cv_err *err) {
    png_source src = {bytes, len, 0, ""};
    png_structp png;
    png_infop pi;
    if (!create(&src, &png, &pi))
        return cv_fail(err, CV_ERR_NOMEM, "%s: out of memory starting libpng", path);
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &pi, NULL);
        return cv_fail(err, CV_ERR_FORMAT, "%s: corrupt PNG: %s", path, src.msg);
    }
    start(png, pi, &src);
    *info = (cv_image_info){CV_IMAGE_PNG, (int)png_get_image_height(png, pi),
                            (int)png_get_image_width(png, pi), file_channels(png, pi)};
    png_destroy_read_struct(&png, &pi, NULL);
    return CV_OK;
}

/* The bytes the image's filtered rows take before compression. */
static uint64_t raw_bytes(png_structp png, png_infop info) {
    const uint64_t bits = (uint64_t)png_get_image_width(png, info) *
                          png_get_bit_depth(png, info) * png_get_channels(png, info);
    return (uint64_t)png_get_image_height(png, info) * (1 + (bits + 7) / 8);
}

/* Whether the header's image fits the file (its own samples, compressed: checked before the
 * 8-bit transforms, which may multiply them) and cvae's bound; *total gets its bytes. */
static cv_status check_size(const char *path, png_structp png, png_infop info, size_t len,
                            bool in_file, uint64_t *total, cv_err *err) {
    const unsigned h = png_get_image_height(png, info), w = png_get_image_width(png, info);
    if (in_file && raw_bytes(png, info) > (uint64_t)DEFLATE_MAX_RATIO * len)
        return cv_fail(err, CV_ERR_FORMAT, "%s: corrupt PNG: its header declares %ux%u pixels, "
                       "more than its %zu bytes can hold (truncated?)", path, w, h, len);
    *total = (uint64_t)png_get_rowbytes(png, info) * h;
    if (*total > CV_IMAGE_MAX_DECODED)
        return cv_fail(err, CV_ERR_FORMAT, "%s: a PNG of %ux%u pixels is more than cvae decodes "
                       "(%llu MiB)", path, w, h, (unsigned long long)(CV_IMAGE_MAX_DECODED >> 20));
    return CV_OK;
}

/* Every row (every pass of an interlaced file) into s->pixels. */
static void read_rows(png_structp png, png_infop info, int passes, uint8_t *pixels) {
    const unsigned h = png_get_image_height(png, info);
    const size_t row = png_get_rowbytes(png, info);
    for (int pass = 0; pass < passes; pass++)
        for (unsigned y = 0; y < h; y++) png_read_row(png, pixels + row * y, NULL);
    png_read_end(png, NULL);
}

cv_status cv_png_decode(const char *path, const uint8_t *bytes, size_t len, cv_image_scratch *s,
                        cv_raster *r, cv_err *err) {
    png_source src = {bytes, len, 0, ""};
    png_structp png;
    png_infop info;
    if (!create(&src, &png, &info))
        return cv_fail(err, CV_ERR_NOMEM, "%s: out of memory starting libpng", path);
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        return cv_fail(err, CV_ERR_FORMAT, "%s: corrupt PNG: %s", path, src.msg);
    }
    start(png, info, &src);
    const int kind = file_channels(png, info);
    uint64_t total = 0;
    int passes = 1;
    cv_status st = check_size(path, png, info, len, true, &total, err);
    if (!st) {
        png_set_expand(png);   /* palette to RGB, grey to 8 bits, tRNS to alpha */
        png_set_scale_16(png); /* 16-bit samples to 8, rounded */
        passes = png_set_interlace_handling(png);
        png_read_update_info(png, info);
        st = check_size(path, png, info, len, false, &total, err);
    }
    if (!st && !cv_image_reserve(&s->pixels, &s->pixels_cap, (size_t)total))
        st = cv_fail(err, CV_ERR_NOMEM, "%s: out of memory for a %llu-byte image", path,
                     (unsigned long long)total);
    if (!st) {
        read_rows(png, info, passes, s->pixels);
        const int h = (int)png_get_image_height(png, info), w = (int)png_get_image_width(png, info);
        *r = (cv_raster){h, w, png_get_channels(png, info), kind, h, w, 1.0, 0};
    }
    png_destroy_read_struct(&png, &info, NULL);
    return st;
}
