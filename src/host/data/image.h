/* image.h: one PNG or JPEG file into the pixels of a data set image (internal).
 *
 * A file is decoded to 8-bit samples (libpng; libjpeg-turbo, which decodes a large JPEG
 * at a reduced size by DCT scaling), its colours converted to the target's channels
 * (grey or RGB; an opaque alpha channel dropped, a transparent one refused), centre-
 * cropped to the target's aspect ratio when asked and resized: shrunk by an exact area
 * average (image_area.c), grown by stb_image_resize's Catmull-Rom filter. Every failure is one line
 * naming the file: libjpeg's and libpng's errors (longjmp from their error callbacks),
 * libjpeg's warnings (corrupt data it would paper over with grey), a truncated file, an
 * image of another size without resizing, or a colour kind that cannot be converted.
 * docs/design.md 4.8 gives the rules.
 */
#ifndef CVAE_DATA_IMAGE_H
#define CVAE_DATA_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cvae/status.h"

/* The most bytes one decoded image may take before resizing: a header that asks for more
 * is refused before anything is allocated. */
#define CV_IMAGE_MAX_DECODED (UINT64_C(1) << 28)

typedef enum { CV_IMAGE_PNG, CV_IMAGE_JPEG } cv_image_format;

/* What a file holds, from its header. */
typedef struct {
    cv_image_format format;
    int height, width;
    int channels; /* 1 grey, 2 grey + alpha, 3 colour (RGB, or CMYK converted), 4 RGBA */
} cv_image_info;

/* What each image becomes. */
typedef struct {
    int height, width;
    int channels;      /* 1 or 3 */
    bool resize;       /* false: every image must already be height x width */
    bool crop_center;  /* crop to the target's aspect ratio first (resize only) */
    bool convert;      /* grey and colour converted to channels; false: refused */
    const char *first; /* the image the size and channels came from (for messages) */
} cv_image_target;

/* Buffers one thread reuses from image to image. */
typedef struct {
    uint8_t *file;    /* the file's bytes */
    size_t file_cap;
    uint8_t *pixels;  /* the decoded image */
    size_t pixels_cap;
    uint8_t *grey;    /* a resized grey image before it becomes RGB */
    size_t grey_cap;
} cv_image_scratch;

/* A decoded image: (height, width, channels) samples in scratch->pixels. */
typedef struct {
    int height, width, channels;
    int file_channels; /* the file's own kind, as cv_image_info says it */
    int file_height, file_width; /* the file's size: a JPEG may decode smaller, */
    double scale;                /* at scale (M / 8) decoded pixels per pixel of the file, */
    int row0;                    /* and only the rows a crop needs: the first one kept */
} cv_raster;

/* The format (from the magic bytes), size and channels in a file's header. */
cv_status cv_image_probe(const char *path, const uint8_t *bytes, size_t len, cv_image_info *info,
                         cv_err *err);

/* The file's bytes into out (t->height, t->width, t->channels). */
cv_status cv_image_decode(const char *path, const uint8_t *bytes, size_t len,
                          const cv_image_target *t, cv_image_scratch *s, uint8_t *out,
                          cv_err *err);

/* The whole file at path into s->file; *len gets its length. */
cv_status cv_image_read_file(const char *path, cv_image_scratch *s, size_t *len, cv_err *err);

void cv_image_scratch_free(cv_image_scratch *s);

/* Room for n bytes in *buf (capacity *cap), kept between calls; false when out of memory. */
bool cv_image_reserve(uint8_t **buf, size_t *cap, size_t n);

/* The part of an image of h x w pixels that a target keeps: all of it, or with
 * crop_center the centred region of the target's aspect ratio, (y0, x0) its top left
 * corner and (ch, cw) its size, in pixels (fractions of one where the ratio asks). */
typedef struct {
    double y0, x0, ch, cw;
} cv_crop_region;

static inline cv_crop_region cv_image_crop(const cv_image_target *t, int h, int w) {
    cv_crop_region c = {0, 0, h, w};
    if (!t->resize || !t->crop_center) return c;
    if ((double)w * t->height > (double)h * t->width) { /* wider than the target: crop width */
        c.cw = (double)h * t->width / t->height;
        c.x0 = (w - c.cw) / 2;
    } else {
        c.ch = (double)w * t->height / t->width;
        c.y0 = (h - c.ch) / 2;
    }
    return c;
}

/* The region r of src (h, w, c) shrunk to dst (th, tw, c), th <= r->ch and tw <= r->cw, by
 * an exact area average (image_area.c); false when out of memory. */
bool cv_image_area_shrink(const uint8_t *src, int h, int w, int c, const cv_crop_region *r,
                          uint8_t *dst, int th, int tw);

/* The codecs (image_png.c, image_jpeg.c). A PNG decodes at its own size to 8-bit grey,
 * grey + alpha, RGB or RGBA (palettes expanded, 16-bit samples scaled, transparency
 * entries made alpha). A JPEG decodes at the smallest of the scales 1/8, 1/4 and 1/2
 * (libjpeg's DCT scaling) that keeps the target's crop at least twice the target's size,
 * else at its own size (and when t is NULL or does not resize); only the rows the target's
 * crop needs are kept (the others are skipped); as grey (the luma alone) when grey, else as
 * RGB (CMYK converted). */
cv_status cv_png_probe(const char *path, const uint8_t *bytes, size_t len, cv_image_info *info,
                       cv_err *err);
cv_status cv_png_decode(const char *path, const uint8_t *bytes, size_t len, cv_image_scratch *s,
                        cv_raster *r, cv_err *err);
cv_status cv_jpeg_probe(const char *path, const uint8_t *bytes, size_t len, cv_image_info *info,
                        cv_err *err);
cv_status cv_jpeg_decode(const char *path, const uint8_t *bytes, size_t len,
                         const cv_image_target *t, bool grey, cv_image_scratch *s, cv_raster *r,
                         cv_err *err);

#endif
