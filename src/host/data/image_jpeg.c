/* image_jpeg.c: JPEG files through libjpeg-turbo, from memory.
 *
 * libjpeg reports a fatal error by calling error_exit, which must not return: it longjmps
 * back here. It reports corrupt data it can decode around (a truncated file filled with
 * grey, bytes missing before a marker) as a warning through emit_message(-1); a data set
 * must not train on such an image, so a warning fails the decode the same way. Trace
 * messages (level >= 0) are ignored. libjpeg's own memory is bounded by
 * max_memory_to_use, so a header claiming a vast progressive image is refused, not
 * allocated; the rows arrive one at a time into a buffer that grows with them.
 */
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>

#include "data/image.h"

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
} jpeg_failure;

static void on_error(j_common_ptr c) {
    jpeg_failure *f = (jpeg_failure *)c->err;
    c->err->format_message(c, f->msg);
    longjmp(f->jump, 1);
}

/* A warning (level -1) means damaged data: fatal here. */
static void on_message(j_common_ptr c, int level) {
    if (level < 0) on_error(c);
}

/* The file's colour kind as cv_image_info counts channels; 0 for one cvae does not read. */
static int file_channels(const struct jpeg_decompress_struct *c) {
    switch (c->jpeg_color_space) {
    case JCS_GRAYSCALE: return 1;
    case JCS_YCbCr:
    case JCS_RGB:
    case JCS_CMYK:
    case JCS_YCCK: return 3;
    default: return 0;
    }
}

static bool is_cmyk(const struct jpeg_decompress_struct *c) {
    return c->jpeg_color_space == JCS_CMYK || c->jpeg_color_space == JCS_YCCK;
}

static cv_status unknown_colours(const char *path, const struct jpeg_decompress_struct *c,
                                 cv_err *err) {
    return cv_fail(err, CV_ERR_FORMAT, "%s: a JPEG of %d components in a colour space cvae "
                   "does not read (grey, YCbCr, RGB and CMYK are read)", path, c->num_components);
}

/* libjpeg set up on the bytes; the caller has armed f->jump. */
static void start(struct jpeg_decompress_struct *c, jpeg_failure *f, const uint8_t *bytes,
                  size_t len) {
    c->err = jpeg_std_error(&f->pub);
    f->pub.error_exit = on_error;
    f->pub.emit_message = on_message;
    jpeg_create_decompress(c);
    c->mem->max_memory_to_use = (long)CV_IMAGE_MAX_DECODED;
    jpeg_mem_src(c, bytes, (unsigned long)len);
}

cv_status cv_jpeg_probe(const char *path, const uint8_t *bytes, size_t len, cv_image_info *info,
                        cv_err *err) {
    struct jpeg_decompress_struct c;
    jpeg_failure f;
    if (setjmp(f.jump)) {
        jpeg_destroy_decompress(&c);
        return cv_fail(err, CV_ERR_FORMAT, "%s: corrupt JPEG: %s", path, f.msg);
    }
    start(&c, &f, bytes, len);
    jpeg_read_header(&c, TRUE);
    *info = (cv_image_info){CV_IMAGE_JPEG, (int)c.image_height, (int)c.image_width,
                            file_channels(&c)};
    cv_status st = info->channels ? CV_OK : unknown_colours(path, &c, err);
    jpeg_destroy_decompress(&c);
    return st;
}

/* CMYK (Adobe's inverted samples when the file says so) to RGB or grey, in place: the
 * plain conversion R = (255 - C)(255 - K) / 255, without a colour profile. */
static void cmyk_to(uint8_t *p, size_t pixels, bool inverted, bool grey) {
    for (size_t i = 0; i < pixels; i++) {
        const uint8_t *q = p + 4 * i;
        unsigned c = q[0], m = q[1], y = q[2], k = q[3];
        if (!inverted) c = 255 - c, m = 255 - m, y = 255 - y, k = 255 - k;
        const unsigned r = (c * k + 127) / 255, g = (m * k + 127) / 255, b = (y * k + 127) / 255;
        if (grey)
            p[i] = (uint8_t)((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16);
        else
            p[3 * i] = (uint8_t)r, p[3 * i + 1] = (uint8_t)g, p[3 * i + 2] = (uint8_t)b;
    }
}

/* The decoded rows [first, end) into s->pixels, which grows as they arrive; the rows
 * before and after are skipped (entropy-decoded, so damage there still counts, but neither
 * transformed nor kept). */
static bool read_rows(struct jpeg_decompress_struct *c, unsigned first, unsigned end,
                      cv_image_scratch *s) {
    const size_t row = (size_t)c->output_width * (size_t)c->output_components;
    const size_t all = row * (end - first);
    if (first) jpeg_skip_scanlines(c, first);
    while (c->output_scanline < end) {
        const size_t need = row * (c->output_scanline - first + 1);
        if (need > s->pixels_cap &&
            !cv_image_reserve(&s->pixels, &s->pixels_cap, need * 2 > all ? all : need * 2))
            return false;
        JSAMPROW at = s->pixels + row * (c->output_scanline - first);
        jpeg_read_scanlines(c, &at, 1);
    }
    /* libjpeg skips straight to the end without decoding the rest, where damage would go
     * unseen: skip all but the last row, and decode that one */
    if (c->output_scanline + 1 < c->output_height)
        jpeg_skip_scanlines(c, c->output_height - c->output_scanline - 1);
    if (c->output_scanline < c->output_height) { /* into the room past the kept rows */
        if (!cv_image_reserve(&s->pixels, &s->pixels_cap, all + row)) return false;
        JSAMPROW at = s->pixels + all;
        jpeg_read_scanlines(c, &at, 1);
    }
    return true;
}

/* The decoded rows a target's crop needs: [*first, *end) of the output (all without a
 * crop). */
static void needed_rows(const cv_image_target *t, const struct jpeg_decompress_struct *c,
                        unsigned *first, unsigned *end) {
    *first = 0;
    *end = c->output_height;
    if (!t || !t->resize || !t->crop_center) return;
    const cv_crop_region crop = cv_image_crop(t, (int)c->image_height, (int)c->image_width);
    const double k = (double)c->scale_num / c->scale_denom;
    const double lo = floor(crop.y0 * k), hi = ceil((crop.y0 + crop.ch) * k);
    *first = lo > 0 ? (unsigned)lo : 0;
    *end = hi < c->output_height ? (unsigned)hi : c->output_height;
}

/* The smallest DCT scale M / 8 of 1/8, 1/4 and 1/2 (those libjpeg-turbo decodes with SIMD;
 * the others take longer than the whole image) at which the target's crop of the image is
 * still at least twice the target's size: the area average that follows then covers at
 * least two decoded pixels an axis, and stays within a grey level of one from the whole
 * image (tests/test_image.c). */
static unsigned scale_eighths(const cv_image_target *t, const struct jpeg_decompress_struct *c) {
    if (!t || !t->resize) return 8;
    const cv_crop_region crop = cv_image_crop(t, (int)c->image_height, (int)c->image_width);
    for (unsigned m = 1; m < 8; m *= 2)
        if (crop.ch * m / 8 >= 2.0 * t->height && crop.cw * m / 8 >= 2.0 * t->width) return m;
    return 8;
}

cv_status cv_jpeg_decode(const char *path, const uint8_t *bytes, size_t len,
                         const cv_image_target *t, bool grey, cv_image_scratch *s, cv_raster *r,
                         cv_err *err) {
    struct jpeg_decompress_struct c;
    jpeg_failure f;
    if (setjmp(f.jump)) {
        jpeg_destroy_decompress(&c);
        return cv_fail(err, CV_ERR_FORMAT, "%s: corrupt JPEG: %s", path, f.msg);
    }
    start(&c, &f, bytes, len);
    jpeg_read_header(&c, TRUE);
    const int kind = file_channels(&c);
    cv_status st = kind ? CV_OK : unknown_colours(path, &c, err);
    const bool cmyk = is_cmyk(&c);
    unsigned first = 0, end = 0;
    c.out_color_space = cmyk ? JCS_CMYK : grey ? JCS_GRAYSCALE : JCS_RGB;
    c.scale_num = scale_eighths(t, &c);
    c.scale_denom = 8;
    if (!st) jpeg_calc_output_dimensions(&c);
    const uint64_t bytes_out = (uint64_t)c.output_width * c.output_height * 4;
    if (!st && bytes_out > CV_IMAGE_MAX_DECODED)
        st = cv_fail(err, CV_ERR_FORMAT, "%s: a JPEG of %ux%u pixels is more than cvae decodes "
                     "(%llu MiB)", path, c.image_width, c.image_height,
                     (unsigned long long)(CV_IMAGE_MAX_DECODED >> 20));
    if (!st) {
        jpeg_start_decompress(&c);
        needed_rows(t, &c, &first, &end);
        if (!read_rows(&c, first, end, s))
            st = cv_fail(err, CV_ERR_NOMEM, "%s: out of memory decoding a %ux%u JPEG", path,
                         c.output_width, c.output_height);
        else
            jpeg_finish_decompress(&c);
    }
    if (!st) {
        if (cmyk) cmyk_to(s->pixels, (size_t)c.output_width * (end - first), c.saw_Adobe_marker,
                          grey);
        *r = (cv_raster){(int)(end - first), (int)c.output_width, grey ? 1 : 3, kind,
                         (int)c.image_height, (int)c.image_width, c.scale_num / 8.0, (int)first};
    }
    jpeg_destroy_decompress(&c);
    return st;
}
