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

/* The scanlines into s->pixels, which grows as they arrive. */
static bool read_rows(struct jpeg_decompress_struct *c, cv_image_scratch *s) {
    const size_t row = (size_t)c->output_width * (size_t)c->output_components;
    while (c->output_scanline < c->output_height) {
        const size_t need = row * (c->output_scanline + 1);
        if (need > s->pixels_cap &&
            !cv_image_reserve(&s->pixels, &s->pixels_cap, need * 2 > row * c->output_height
                                                              ? row * c->output_height
                                                              : need * 2))
            return false;
        JSAMPROW at = s->pixels + row * c->output_scanline;
        jpeg_read_scanlines(c, &at, 1);
    }
    return true;
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
        if (!read_rows(&c, s))
            st = cv_fail(err, CV_ERR_NOMEM, "%s: out of memory decoding a %ux%u JPEG", path,
                         c.output_width, c.output_height);
        else
            jpeg_finish_decompress(&c);
    }
    if (!st) {
        if (cmyk) cmyk_to(s->pixels, (size_t)c.output_width * c.output_height,
                          c.saw_Adobe_marker, grey);
        *r = (cv_raster){(int)c.output_height, (int)c.output_width, grey ? 1 : 3, kind,
                         (int)c.image_height, (int)c.image_width, c.scale_num / 8.0};
    }
    jpeg_destroy_decompress(&c);
    return st;
}
