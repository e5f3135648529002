/* image.c: a PNG or JPEG file into a data set image: the format from its magic bytes,
 * then the codec, the colours, the crop and the resize (image.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <stb_image_resize.h>

#include "data/image.h"

static bool starts_with(const uint8_t *b, size_t len, const char *magic, size_t n) {
    return len >= n && memcmp(b, magic, n) == 0;
}

/* A format cvae does not read, named from its magic bytes, so the message can say which. */
static const char *other_format(const uint8_t *b, size_t len) {
    if (starts_with(b, len, "GIF8", 4)) return "a GIF";
    if (starts_with(b, len, "BM", 2)) return "a BMP";
    if (starts_with(b, len, "RIFF", 4) && len >= 12 && memcmp(b + 8, "WEBP", 4) == 0)
        return "a WebP";
    if (starts_with(b, len, "II*\0", 4) || starts_with(b, len, "MM\0*", 4)) return "a TIFF";
    if (len == 0) return "an empty file";
    return "not an image";
}

static bool is_png(const uint8_t *b, size_t len) {
    return starts_with(b, len, "\x89PNG\r\n\x1a\n", 8);
}
static bool is_jpeg(const uint8_t *b, size_t len) { return starts_with(b, len, "\xff\xd8\xff", 3); }

static cv_status unknown_format(const char *path, const uint8_t *b, size_t len, cv_err *err) {
    return cv_fail(err, CV_ERR_FORMAT, "%s: %s (cvae reads PNG and JPEG images)", path,
                   other_format(b, len));
}

cv_status cv_image_probe(const char *path, const uint8_t *bytes, size_t len, cv_image_info *info,
                         cv_err *err) {
    if (is_png(bytes, len)) return cv_png_probe(path, bytes, len, info, err);
    if (is_jpeg(bytes, len)) return cv_jpeg_probe(path, bytes, len, info, err);
    return unknown_format(path, bytes, len, err);
}

static const char *kind_name(int channels) { return channels >= 3 ? "colour" : "grey"; }

/* Without --channels, grey and colour images do not mix. */
static cv_status check_kind(const char *path, const cv_raster *r, const cv_image_target *t,
                            cv_err *err) {
    if (t->convert || (r->file_channels >= 3) == (t->channels == 3)) return CV_OK;
    return cv_fail(err, CV_ERR_FORMAT, "%s: is %s, but %s (the first image) is %s: give "
                   "--channels 1 or 3 to convert them all", path, kind_name(r->file_channels),
                   t->first, kind_name(t->channels));
}

/* An alpha channel every pixel of which is opaque is dropped, in place; transparency is
 * refused: cvae would have to invent the background. */
static cv_status drop_alpha(const char *path, cv_raster *r, uint8_t *p, cv_err *err) {
    if (r->channels != 2 && r->channels != 4) return CV_OK;
    const size_t n = (size_t)r->height * r->width, c = (size_t)r->channels;
    for (size_t i = 0; i < n; i++)
        if (p[i * c + c - 1] != 255)
            return cv_fail(err, CV_ERR_FORMAT, "%s: has transparent pixels (alpha %u at row %zu, "
                           "column %zu); cvae trains on opaque images: flatten it onto a "
                           "background first", path, p[i * c + c - 1], i / (size_t)r->width,
                           i % (size_t)r->width);
    for (size_t i = 0; i < n; i++) memmove(p + i * (c - 1), p + i * c, c - 1);
    r->channels--;
    return CV_OK;
}

/* RGB to grey in place, with PIL's weights (ITU-R 601-2 luma) and rounding. */
static void rgb_to_grey(cv_raster *r, uint8_t *p) {
    const size_t n = (size_t)r->height * r->width;
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)((p[3 * i] * 19595u + p[3 * i + 1] * 38470u + p[3 * i + 2] * 7471u +
                          0x8000u) >> 16);
    r->channels = 1;
}

static void grey_to_rgb(const uint8_t *grey, size_t n, uint8_t *rgb) {
    for (size_t i = 0; i < n; i++) rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = grey[i];
}

static int clamp_int(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Where an image grows along one axis at least: Catmull-Rom there, box where it shrinks. */
static stbir_filter filter_for(double from, int to) {
    return from >= to ? STBIR_FILTER_BOX : STBIR_FILTER_CATMULLROM;
}

/* The raster's crop into dst (t->height, t->width, r->channels). */
static cv_status resample(const char *path, const cv_raster *r, const uint8_t *p,
                          const cv_image_target *t, uint8_t *dst, cv_err *err) {
    const size_t row = (size_t)t->width * r->channels;
    if (!t->resize && (r->height != t->height || r->width != t->width))
        return cv_fail(err, CV_ERR_FORMAT, "%s: is %dx%d, but %s (the first image) is %dx%d: "
                       "give --image-size HxW to resize them all", path, r->height, r->width,
                       t->first, t->height, t->width);
    if (r->height == t->height && r->width == t->width) {
        memcpy(dst, p, row * t->height);
        return CV_OK;
    }
    /* the crop in the file's pixels, then in the raster's: a JPEG decoded at M/8 has a pixel
     * per 8/M of the file's (its last one partly past the edge), and from row row0 on */
    const cv_crop_region f = cv_image_crop(t, r->file_height, r->file_width);
    const double k = r->scale;
    const cv_crop_region c = {f.y0 * k - r->row0, f.x0 * k, f.ch * k, f.cw * k};
    if (c.ch >= t->height && c.cw >= t->width)
        return cv_image_area_shrink(p, r->height, r->width, r->channels, &c, dst, t->height,
                                    t->width)
                   ? CV_OK
                   : cv_fail(err, CV_ERR_NOMEM, "%s: out of memory resizing", path);
    /* growing: the crop to whole pixels (half a pixel at most off, where the image is
     * stretched anyway), then stb's resize of that region: its sub-pixel regions trip an
     * assertion of its own for some scales (found by tests/fuzz/fuzz_image.c) */
    const int x0 = clamp_int((int)lround(c.x0), 0, r->width - 1);
    const int y0 = clamp_int((int)lround(c.y0), 0, r->height - 1);
    const int cw = clamp_int((int)lround(c.cw), 1, r->width - x0);
    const int ch = clamp_int((int)lround(c.ch), 1, r->height - y0);
    const int ok = stbir_resize(
        p + ((size_t)y0 * r->width + x0) * r->channels, cw, ch, r->width * r->channels, dst,
        t->width, t->height, (int)row, STBIR_TYPE_UINT8, r->channels, STBIR_ALPHA_CHANNEL_NONE, 0,
        STBIR_EDGE_CLAMP, STBIR_EDGE_CLAMP, filter_for(cw, t->width), filter_for(ch, t->height),
        STBIR_COLORSPACE_LINEAR, NULL);
    return ok ? CV_OK : cv_fail(err, CV_ERR_NOMEM, "%s: out of memory resizing", path);
}

cv_status cv_image_decode(const char *path, const uint8_t *bytes, size_t len,
                          const cv_image_target *t, cv_image_scratch *s, uint8_t *out,
                          cv_err *err) {
    CV_ASSERT(t->channels == 1 || t->channels == 3);
    cv_raster r;
    cv_status st;
    if (is_png(bytes, len))
        st = cv_png_decode(path, bytes, len, s, &r, err);
    else if (is_jpeg(bytes, len))
        st = cv_jpeg_decode(path, bytes, len, t, t->channels == 1, s, &r, err);
    else
        st = unknown_format(path, bytes, len, err);
    if (!st) st = check_kind(path, &r, t, err);
    if (!st) st = drop_alpha(path, &r, s->pixels, err);
    if (st) return st;
    if (r.channels == 3 && t->channels == 1) rgb_to_grey(&r, s->pixels);
    if (r.channels == t->channels) return resample(path, &r, s->pixels, t, out, err);
    /* grey to colour: resized as grey, a third of the work */
    const size_t n = (size_t)t->height * t->width;
    if (!cv_image_reserve(&s->grey, &s->grey_cap, n))
        return cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", path);
    st = resample(path, &r, s->pixels, t, s->grey, err);
    if (!st) grey_to_rgb(s->grey, n, out);
    return st;
}
