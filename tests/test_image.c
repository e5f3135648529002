/* test_image.c: PNG and JPEG files into data set images (src/host/data/image*.c): every
 * colour kind converted or refused by name, each of libpng's and libjpeg's error paths
 * (errors by longjmp, warnings, a file that ends early), the crop and the resize against
 * double-precision references, and libjpeg's DCT scaling against a full decode. */
#include <criterion/criterion.h>
#include <math.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "cvae/npy.h"
#include "data/image.h"
#include "helpers.h"
#include "image_files.h"

static cv_image_scratch scratch;

static void teardown(void) { cv_image_scratch_free(&scratch); }

TestSuite(image, .fini = teardown);

static cv_image_target native(int h, int w, int c) {
    return (cv_image_target){h, w, c, false, false, false, "first.png"};
}

/* Decodes bytes to target t into out; the status, with the message in err. */
static cv_status decode(const uint8_t *b, size_t n, const cv_image_target *t, uint8_t *out,
                        cv_err *err) {
    err->msg[0] = '\0';
    return cv_image_decode("img.x", b, n, t, &scratch, out, err);
}

static void expect_refused(const uint8_t *b, size_t n, const cv_image_target *t,
                           const char *needle) {
    uint8_t *out = malloc((size_t)t->height * t->width * t->channels);
    cv_err err;
    cr_assert_neq(decode(b, n, t, out, &err), CV_OK, "accepted; expected '%s'", needle);
    cr_assert(strstr(err.msg, "img.x") == err.msg, "the line does not start with the file: %s",
              err.msg);
    cr_assert(strstr(err.msg, needle), "expected '%s' in: %s", needle, err.msg);
    cr_assert(!strchr(err.msg, '\n'), "more than one line: %s", err.msg);
    free(out);
}

static uint8_t *random_bytes(test_rng *r, size_t n) {
    uint8_t *b = malloc(n);
    for (size_t i = 0; i < n; i++) b[i] = (uint8_t)test_uniform(r, 0, 256);
    return b;
}

Test(image, png_grey_and_rgb_decode_exactly) {
    test_rng r = test_rng_new("png exact");
    for (int c = 1; c <= 3; c += 2) {
        const int h = 13, w = 17;
        uint8_t *px = random_bytes(&r, (size_t)h * w * c), out[13 * 17 * 3];
        size_t n;
        test_png_kind k = {.color_type = c == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, .bit_depth = 8};
        uint8_t *file = test_png_bytes(&k, px, h, w, &n);
        const cv_image_target t = native(h, w, c);
        cv_err err;
        cr_assert_eq(decode(file, n, &t, out, &err), CV_OK, "%s", err.msg);
        cr_assert(memcmp(out, px, (size_t)h * w * c) == 0, "%d channels misread", c);
        k.interlace = true; /* Adam7: seven passes over the same rows */
        free(file);
        file = test_png_bytes(&k, px, h, w, &n);
        memset(out, 0, sizeof out);
        cr_assert_eq(decode(file, n, &t, out, &err), CV_OK, "%s", err.msg);
        cr_assert(memcmp(out, px, (size_t)h * w * c) == 0, "interlaced %d channels misread", c);
        free(file);
        free(px);
    }
}

/* Palettes, 16-bit samples and grey of 1 bit become 8-bit samples of their values. */
Test(image, png_palette_16_bit_and_1_bit_are_converted) {
    test_rng r = test_rng_new("png kinds");
    const int h = 9, w = 11, n_px = 9 * 11;
    uint8_t idx[9 * 11], out[9 * 11 * 3], palette[4 * 3];
    for (int i = 0; i < 12; i++) palette[i] = (uint8_t)test_uniform(&r, 0, 256);
    for (int i = 0; i < n_px; i++) idx[i] = (uint8_t)test_uniform(&r, 0, 4);
    size_t n;
    test_png_kind k = {.color_type = PNG_COLOR_TYPE_PALETTE, .bit_depth = 8, .palette = palette,
                       .n_palette = 4};
    uint8_t *file = test_png_bytes(&k, idx, h, w, &n);
    cv_image_target t = native(h, w, 3);
    cv_err err;
    cr_assert_eq(decode(file, n, &t, out, &err), CV_OK, "%s", err.msg);
    for (int i = 0; i < n_px; i++)
        cr_assert(memcmp(out + 3 * i, palette + 3 * idx[i], 3) == 0, "palette entry misread");
    free(file);
    /* 16 bits: scaled with rounding, v8 = round(v16 * 255 / 65535), never truncated */
    uint8_t be[9 * 11 * 3 * 2];
    uint16_t v16[9 * 11 * 3];
    for (int i = 0; i < n_px * 3; i++) {
        v16[i] = (uint16_t)test_uniform(&r, 0, 65536);
        be[2 * i] = (uint8_t)(v16[i] >> 8);
        be[2 * i + 1] = (uint8_t)v16[i];
    }
    k = (test_png_kind){.color_type = PNG_COLOR_TYPE_RGB, .bit_depth = 16};
    file = test_png_bytes(&k, be, h, w, &n);
    cr_assert_eq(decode(file, n, &t, out, &err), CV_OK, "%s", err.msg);
    for (int i = 0; i < n_px * 3; i++)
        cr_assert(abs(out[i] - (int)lround(v16[i] * 255.0 / 65535.0)) <= 0, "16-bit sample %u "
                  "became %u", v16[i], out[i]);
    free(file);
    /* 1-bit grey: 0 and 255 */
    for (int i = 0; i < n_px; i++) idx[i] = (uint8_t)test_uniform(&r, 0, 2);
    k = (test_png_kind){.color_type = PNG_COLOR_TYPE_GRAY, .bit_depth = 1};
    file = test_png_bytes(&k, idx, h, w, &n);
    t = native(h, w, 1);
    cr_assert_eq(decode(file, n, &t, out, &err), CV_OK, "%s", err.msg);
    for (int i = 0; i < n_px; i++) cr_assert_eq(out[i], idx[i] ? 255 : 0);
    free(file);
}

/* A flat palette or 1-bit image compresses near deflate's best ratio; expanded to 8-bit
 * RGB or grey it is far more bytes than its file could hold compressed, yet the file is
 * sound: the bound is on the file's own samples, not on the expanded ones. */
Test(image, flat_palette_and_1_bit_pngs_are_not_called_truncated) {
    test_rng r = test_rng_new("png flat");
    const int h = 600, w = 600;
    uint8_t palette[3], *samples = malloc((size_t)h * w), *out = malloc((size_t)h * w * 3);
    for (int i = 0; i < 3; i++) palette[i] = (uint8_t)test_uniform(&r, 0, 256);
    memset(samples, 0, (size_t)h * w); /* every pixel palette entry 0 */
    size_t n;
    test_png_kind k = {.color_type = PNG_COLOR_TYPE_PALETTE, .bit_depth = 8, .palette = palette,
                       .n_palette = 1};
    uint8_t *file = test_png_bytes(&k, samples, h, w, &n);
    cv_image_target t = native(h, w, 3);
    cv_err err;
    cr_assert_eq(decode(file, n, &t, out, &err), CV_OK, "a %zu-byte flat palette PNG: %s", n,
                 err.msg);
    for (size_t i = 0; i < (size_t)h * w; i++)
        cr_assert(memcmp(out + 3 * i, palette, 3) == 0, "palette entry misread at %zu", i);
    free(file);
    const int bit = (int)test_uniform(&r, 0, 2);
    memset(samples, bit, (size_t)h * w);
    k = (test_png_kind){.color_type = PNG_COLOR_TYPE_GRAY, .bit_depth = 1};
    file = test_png_bytes(&k, samples, h, w, &n);
    t = native(h, w, 1);
    cr_assert_eq(decode(file, n, &t, out, &err), CV_OK, "a %zu-byte flat 1-bit PNG: %s", n,
                 err.msg);
    for (size_t i = 0; i < (size_t)h * w; i++) cr_assert_eq(out[i], bit ? 255 : 0);
    free(file);
    free(samples);
    free(out);
}

/* An alpha channel that is opaque everywhere is dropped; one transparent pixel refuses
 * the image, by name and place, as does a palette's transparent entry. */
Test(image, png_alpha_dropped_when_opaque_refused_when_not) {
    test_rng r = test_rng_new("png alpha");
    const int h = 6, w = 7;
    uint8_t *px = random_bytes(&r, (size_t)h * w * 4), out[6 * 7 * 3];
    for (int i = 0; i < h * w; i++) px[4 * i + 3] = 255;
    size_t n;
    test_png_kind k = {.color_type = PNG_COLOR_TYPE_RGB_ALPHA, .bit_depth = 8};
    uint8_t *file = test_png_bytes(&k, px, h, w, &n);
    const cv_image_target t = native(h, w, 3);
    cv_err err;
    cr_assert_eq(decode(file, n, &t, out, &err), CV_OK, "%s", err.msg);
    for (int i = 0; i < h * w; i++) cr_assert(memcmp(out + 3 * i, px + 4 * i, 3) == 0);
    free(file);
    px[4 * (2 * w + 5) + 3] = 200; /* row 2, column 5 */
    file = test_png_bytes(&k, px, h, w, &n);
    expect_refused(file, n, &t, "transparent pixels (alpha 200 at row 2, column 5)");
    free(file);
    const uint8_t palette[6] = {10, 20, 30, 40, 50, 60}, trns[2] = {255, 0}, idx[6 * 7] = {1};
    k = (test_png_kind){.color_type = PNG_COLOR_TYPE_PALETTE, .bit_depth = 8, .palette = palette,
                        .n_palette = 2, .trns = trns};
    file = test_png_bytes(&k, idx, h, w, &n);
    expect_refused(file, n, &t, "transparent");
    free(file);
    free(px);
}

/* libpng's errors reach the caller as one line through its longjmp: a header or a
 * critical chunk with a bad CRC, damaged compressed data, a file that ends early (the
 * read callback's error), and a header that claims more pixels than the file holds
 * (refused before anything is allocated). */
Test(image, png_errors_are_one_line_each) {
    test_rng r = test_rng_new("png errors");
    const int h = 32, w = 32;
    uint8_t *px = random_bytes(&r, (size_t)h * w);
    size_t n;
    test_png_kind k = {.color_type = PNG_COLOR_TYPE_GRAY, .bit_depth = 8};
    uint8_t *file = test_png_bytes(&k, px, h, w, &n), *b = malloc(n);
    const cv_image_target t = native(h, w, 1);
    memcpy(b, file, n);
    b[8 + 8 + 13] ^= 1; /* the IHDR chunk's CRC */
    expect_refused(b, n, &t, "corrupt PNG: IHDR: CRC error");
    memcpy(b, file, n);
    const size_t idat = 8 + 25; /* the IDAT chunk: length, type, then zlib data */
    b[idat + 8 + 2] ^= 0xff;     /* the first deflate block's header */
    expect_refused(b, n, &t, "corrupt PNG");
    for (size_t cut = 4; cut < n; cut += n / 7)
        expect_refused(file, cut, &t, cut < 8 ? "not an image" : "truncated");
    memcpy(b, file, n);
    b[16] = 0x7f; /* a width of 2^31 - 2^24 + 32: over cvae's limit */
    expect_refused(b, n, &t, "corrupt PNG");
    memcpy(b, file, n);
    b[18] = 0xfd; /* a width of 65000: within limits, but more than the file's bytes hold */
    b[19] = 0xe8;
    uint32_t crc = (uint32_t)crc32(0, b + 12, 17);
    for (int i = 0; i < 4; i++) b[29 + i] = (uint8_t)(crc >> (24 - 8 * i));
    expect_refused(b, n, &t, "more than its");
    free(b);
    free(file);
    free(px);
}

/* A damaged ancillary chunk is a libpng warning: the pixels are sound, and decode. */
Test(image, png_warnings_leave_the_image_alone) {
    test_rng r = test_rng_new("png warning");
    const int h = 8, w = 8;
    uint8_t *px = random_bytes(&r, (size_t)h * w), out[64];
    size_t n;
    test_png_kind k = {.color_type = PNG_COLOR_TYPE_GRAY, .bit_depth = 8};
    uint8_t *file = test_png_bytes(&k, px, h, w, &n);
    /* a tEXt chunk with a wrong CRC after IHDR */
    const uint8_t text[] = {0, 0, 0, 5, 't', 'E', 'X', 't', 'a', 0, 'b', 'c', 'd', 1, 2, 3, 4};
    uint8_t *b = malloc(n + sizeof text);
    memcpy(b, file, 33);
    memcpy(b + 33, text, sizeof text);
    memcpy(b + 33 + sizeof text, file + 33, n - 33);
    const cv_image_target t = native(h, w, 1);
    cv_err err;
    cr_assert_eq(decode(b, n + sizeof text, &t, out, &err), CV_OK, "%s", err.msg);
    cr_assert(memcmp(out, px, 64) == 0);
    free(b);
    free(file);
    free(px);
}

Test(image, jpeg_colour_grey_and_cmyk) {
    const int h = 40, w = 48;
    uint8_t rgb[40 * 48 * 3], grey[40 * 48], out[40 * 48 * 3], cmyk[40 * 48 * 4];
    test_photo(7, h, w, rgb);
    size_t n;
    uint8_t *file = test_jpeg_bytes(rgb, h, w, 3, 100, &n);
    cv_image_target t = native(h, w, 3);
    cv_err err;
    cr_assert_eq(decode(file, n, &t, out, &err), CV_OK, "%s", err.msg);
    double diff = 0;
    for (int i = 0; i < h * w * 3; i++) diff += fabs((double)out[i] - rgb[i]);
    /* quality 100, but 4:2:0 chroma: measured 3.2 grey levels on average, from the
     * chroma at the edges; a misread image is off by tens */
    cr_assert(diff / (h * w * 3) < 5.0, "colour JPEG off by %g on average", diff / (h * w * 3));
    /* --channels 1: libjpeg's luma, the same weights as our RGB to grey */
    t.channels = 1;
    t.convert = true;
    cr_assert_eq(decode(file, n, &t, grey, &err), CV_OK, "%s", err.msg);
    diff = 0;
    for (int i = 0; i < h * w; i++) {
        const double y = 0.299 * out[3 * i] + 0.587 * out[3 * i + 1] + 0.114 * out[3 * i + 2];
        diff += fabs(grey[i] - y);
    }
    cr_assert(diff / (h * w) < 1.0, "luma off by %g", diff / (h * w));
    t.convert = false; /* without --channels, colour where grey is expected is refused */
    expect_refused(file, n, &t, "is colour, but first.png (the first image) is grey");
    free(file);
    file = test_jpeg_bytes(grey, h, w, 1, 95, &n);
    t = native(h, w, 3);
    expect_refused(file, n, &t, "is grey, but first.png (the first image) is colour");
    t.convert = true;
    cr_assert_eq(decode(file, n, &t, out, &err), CV_OK, "%s", err.msg);
    for (int i = 0; i < h * w; i++)
        cr_assert(out[3 * i] == out[3 * i + 1] && out[3 * i] == out[3 * i + 2]);
    free(file);
    /* CMYK as Adobe stores it (inverted: 255 no ink): pure colours come out as such */
    const uint8_t inks[3][4] = {{255, 0, 0, 255}, {0, 255, 0, 255}, {255, 255, 255, 0}};
    const uint8_t want[3][3] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 0}};
    for (int k = 0; k < 3; k++) {
        for (int i = 0; i < h * w; i++) memcpy(cmyk + 4 * i, inks[k], 4);
        file = test_jpeg_bytes(cmyk, h, w, 4, 100, &n);
        t = native(h, w, 3);
        cr_assert_eq(decode(file, n, &t, out, &err), CV_OK, "%s", err.msg);
        for (int c = 0; c < 3; c++)
            cr_assert(abs(out[3 * (h * w / 2) + c] - want[k][c]) <= 2, "CMYK %d: channel %d is %d",
                      k, c, out[3 * (h * w / 2) + c]);
        free(file);
    }
}

/* libjpeg's fatal errors (error_exit, longjmp) and its warnings (emit_message -1: data it
 * would fill with grey) both refuse the file in one line. */
Test(image, jpeg_errors_and_warnings_are_one_line_each) {
    const int h = 64, w = 64;
    uint8_t rgb[64 * 64 * 3];
    test_photo(3, h, w, rgb);
    size_t n;
    uint8_t *file = test_jpeg_bytes(rgb, h, w, 3, 90, &n), *b = malloc(n);
    const cv_image_target t = native(h, w, 3);
    expect_refused(file, n / 2, &t, "Premature end of JPEG file");       /* a warning */
    expect_refused(file, 3, &t, "corrupt JPEG");                          /* error_exit */
    memcpy(b, file, n);
    b[3] = 0x01; /* an invalid marker right after SOI */
    expect_refused(b, n, &t, "corrupt JPEG");
    memcpy(b, file, n);
    for (size_t i = n - 200; i < n - 100; i++) b[i] = 0xff; /* a run of fill bytes */
    expect_refused(b, n, &t, "corrupt JPEG");
    free(b);
    free(file);
}

Test(image, other_formats_are_named) {
    const cv_image_target t = native(4, 4, 1);
    expect_refused((const uint8_t *)"GIF89a......", 12, &t, "a GIF (cvae reads PNG and JPEG");
    expect_refused((const uint8_t *)"BM..........", 12, &t, "a BMP");
    expect_refused((const uint8_t *)"RIFF....WEBPVP8 ", 16, &t, "a WebP");
    expect_refused((const uint8_t *)"II*\0........", 12, &t, "a TIFF");
    expect_refused((const uint8_t *)"", 0, &t, "an empty file");
    expect_refused((const uint8_t *)"hello, world", 12, &t, "not an image");
}

/* Without --image-size every image must be the first one's size. */
Test(image, another_size_is_refused_without_resizing) {
    uint8_t px[5 * 6] = {0}, out[5 * 5];
    size_t n;
    test_png_kind k = {.color_type = PNG_COLOR_TYPE_GRAY, .bit_depth = 8};
    uint8_t *file = test_png_bytes(&k, px, 5, 6, &n);
    const cv_image_target t = native(5, 5, 1);
    expect_refused(file, n, &t, "is 5x6, but first.png (the first image) is 5x5: give "
                   "--image-size");
    (void)out;
    free(file);
}

/* The area average of a block of a (h, w) grey image, in double. */
static double block_mean(const uint8_t *p, int w, double y0, double x0, double bh, double bw) {
    double sum = 0, area = 0;
    for (int y = (int)y0; y < (int)ceil(y0 + bh); y++)
        for (int x = (int)x0; x < (int)ceil(x0 + bw); x++) {
            const double wy = fmin(y + 1, y0 + bh) - fmax(y, y0);
            const double wx = fmin(x + 1, x0 + bw) - fmax(x, x0);
            sum += wy * wx * p[y * w + x];
            area += wy * wx;
        }
    return sum / area;
}

/* Shrinking is an area average (exact to rounding for whole factors, within a grey level
 * for any factor); a constant stays constant both ways; --crop center keeps the middle. */
Test(image, resize_is_an_area_average_and_the_crop_centred) {
    test_rng r = test_rng_new("resize");
    const int h = 60, w = 90;
    uint8_t *px = random_bytes(&r, (size_t)h * w), out[60 * 90], big[200 * 200];
    size_t n;
    test_png_kind k = {.color_type = PNG_COLOR_TYPE_GRAY, .bit_depth = 8};
    uint8_t *file = test_png_bytes(&k, px, h, w, &n);
    cv_image_target t = {20, 30, 1, true, false, false, "first.png"};
    cv_err err;
    cr_assert_eq(decode(file, n, &t, out, &err), CV_OK, "%s", err.msg);
    for (int y = 0; y < 20; y++)
        for (int x = 0; x < 30; x++) {
            const double ref = block_mean(px, w, 3 * y, 3 * x, 3, 3);
            cr_assert(fabs(out[y * 30 + x] - ref) <= 0.5 + 1e-9, "(%d, %d): %d, area mean %g", y,
                      x, out[y * 30 + x], ref);
        }
    t = (cv_image_target){17, 23, 1, true, false, false, "first.png"}; /* 3.53 and 3.91 */
    cr_assert_eq(decode(file, n, &t, out, &err), CV_OK, "%s", err.msg);
    double diff = 0;
    for (int y = 0; y < 17; y++)
        for (int x = 0; x < 23; x++)
            diff += fabs(out[y * 23 + x] - block_mean(px, w, y * 60.0 / 17, x * 90.0 / 23,
                                                      60.0 / 17, 90.0 / 23));
    cr_assert(diff / (17 * 23) < 1.0, "a fractional area average off by %g", diff / (17 * 23));
    free(file);
    /* 0, 128 and 255 across: the centred square of a 60 x 90 image is columns 15 to 74 */
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) px[y * w + x] = x < 15 ? 0 : x < 75 ? 128 : 255;
    file = test_png_bytes(&k, px, h, w, &n);
    t = (cv_image_target){10, 10, 1, true, true, false, "first.png"};
    cr_assert_eq(decode(file, n, &t, out, &err), CV_OK, "%s", err.msg);
    for (int i = 0; i < 100; i++) cr_assert_eq(out[i], 128, "pixel %d of the crop is %d", i, out[i]);
    free(file);
    memset(px, 77, (size_t)h * w);
    file = test_png_bytes(&k, px, h, w, &n);
    t = (cv_image_target){200, 200, 1, true, false, false, "first.png"};
    cr_assert_eq(decode(file, n, &t, big, &err), CV_OK, "%s", err.msg);
    for (int i = 0; i < 200 * 200; i++) cr_assert_eq(big[i], 77, "grown constant changed");
    free(file);
    free(px);
}

/* Tiny images grown to extreme aspect ratios, with and without the crop: stb_image_resize
 * asserted on the sub-pixel region of a 1 x 24 image cropped to 3 x 70 (fuzz_image found
 * it); the crop now goes to whole pixels before stb grows the image. */
Test(image, tiny_images_grow_to_any_shape) {
    test_rng r = test_rng_new("tiny");
    const int shapes[][2] = {{1, 24}, {24, 1}, {1, 1}, {2, 3}};
    const cv_image_target targets[] = {{3, 70, 3, true, true, true, "first.png"},
                                       {70, 3, 3, true, true, true, "first.png"},
                                       {40, 24, 1, true, false, true, "first.png"},
                                       {5, 5, 3, true, true, true, "first.png"}};
    uint8_t out[70 * 70 * 3];
    for (int i = 0; i < 4; i++) {
        const int h = shapes[i][0], w = shapes[i][1];
        uint8_t *px = random_bytes(&r, (size_t)h * w * 3);
        size_t n_png, n_jpg;
        test_png_kind k = {.color_type = PNG_COLOR_TYPE_RGB, .bit_depth = 8};
        uint8_t *png = test_png_bytes(&k, px, h, w, &n_png);
        uint8_t *jpg = test_jpeg_bytes(px, h, w, 3, 90, &n_jpg);
        for (int j = 0; j < 4; j++) {
            cv_err err;
            cr_assert_eq(decode(png, n_png, &targets[j], out, &err), CV_OK, "%s", err.msg);
            cr_assert_eq(decode(jpg, n_jpg, &targets[j], out, &err), CV_OK, "%s", err.msg);
        }
        free(png);
        free(jpg);
        free(px);
    }
}

/* A large JPEG shrunk to a small target decodes at a reduced DCT scale: the result stays
 * within a grey level, on average, of the area average of the full decode. */
Test(image, dct_scaling_stays_close_to_the_full_decode) {
    const int h = 512, w = 640;
    uint8_t *rgb = malloc((size_t)h * w * 3), out[48 * 48 * 3];
    test_photo(11, h, w, rgb);
    size_t n;
    uint8_t *file = test_jpeg_bytes(rgb, h, w, 3, 92, &n);
    cv_raster full;
    cv_err err;
    cr_assert_eq(cv_jpeg_decode("img.x", file, n, NULL, false, &scratch, &full, &err), CV_OK);
    cr_assert(full.height == h && full.width == w && full.scale == 1.0);
    uint8_t *ref = malloc((size_t)h * w * 3);
    memcpy(ref, scratch.pixels, (size_t)h * w * 3);
    const cv_image_target t = {48, 48, 3, true, true, false, "first.png"};
    cv_raster scaled;
    cr_assert_eq(cv_jpeg_decode("img.x", file, n, &t, false, &scratch, &scaled, &err), CV_OK);
    cr_assert(scaled.scale < 1.0, "no DCT scaling for a 512 x 640 JPEG shrunk to 48 x 48");
    cr_assert_eq(decode(file, n, &t, out, &err), CV_OK, "%s", err.msg);
    uint8_t *plane = malloc((size_t)h * w);
    double diff = 0;
    for (int c = 0; c < 3; c++) {
        for (int i = 0; i < h * w; i++) plane[i] = ref[3 * i + c];
        for (int y = 0; y < 48; y++)
            for (int x = 0; x < 48; x++)
                diff += fabs(out[(y * 48 + x) * 3 + c] -
                             block_mean(plane, w, y * 512.0 / 48, 64 + x * 512.0 / 48,
                                        512.0 / 48, 512.0 / 48));
    }
    cr_assert(diff / (48 * 48 * 3) < 1.0, "DCT-scaled decode off the full one by %g on average",
              diff / (48 * 48 * 3));
    free(plane);
    free(ref);
    free(file);
    free(rgb);
}

/* A centre crop decodes only the rows it needs (the others skipped by libjpeg): the same
 * bytes as shrinking the crop of the whole decode, at full scale and DCT-scaled. */
Test(image, jpeg_rows_outside_the_crop_are_skipped_exactly) {
    const int h = 300, w = 180;
    uint8_t *rgb = malloc((size_t)h * w * 3);
    test_photo(5, h, w, rgb);
    size_t n;
    uint8_t *file = test_jpeg_bytes(rgb, h, w, 3, 90, &n);
    const cv_image_target targets[2] = {{70, 70, 3, true, true, false, "first.png"},
                                        {21, 21, 3, true, true, false, "first.png"}};
    uint8_t out[70 * 70 * 3], ref[70 * 70 * 3];
    for (int k = 0; k < 2; k++) {
        const cv_image_target *t = &targets[k];
        cv_raster part, all;
        cv_err err;
        cr_assert_eq(cv_jpeg_decode("img.x", file, n, t, false, &scratch, &part, &err), CV_OK);
        cr_assert(part.row0 > 0 && part.height < (int)ceil(h * part.scale),
                  "no rows were skipped (%d from %d)", part.height, part.row0);
        cr_assert_eq(decode(file, n, t, out, &err), CV_OK, "%s", err.msg);
        /* the whole image at the same scale: the target without its crop keeps every row */
        const cv_image_target whole = {t->height, t->width, 3, true, false, false, "first.png"};
        cr_assert_eq(cv_jpeg_decode("img.x", file, n, &whole, false, &scratch, &all, &err), CV_OK);
        cr_assert(all.row0 == 0 && all.scale == part.scale, "another scale: %g and %g",
                  all.scale, part.scale);
        const cv_crop_region c = cv_image_crop(t, h, w);
        const cv_crop_region scaled = {c.y0 * all.scale, c.x0 * all.scale, c.ch * all.scale,
                                       c.cw * all.scale};
        cr_assert(cv_image_area_shrink(scratch.pixels, all.height, all.width, 3, &scaled, ref,
                                       t->height, t->width));
        cr_assert(memcmp(out, ref, (size_t)t->height * t->width * 3) == 0,
                  "the skipped rows changed the crop (scale %g)", part.scale);
        /* a file cut short in the rows below the crop is still refused */
        expect_refused(file, n * 9 / 10, t, "Premature end of JPEG file");
    }
    free(file);
    free(rgb);
}

/* Runs tests/pil_reference.py out n (PIL and NumPy: python3-pil, python3-numpy). */
static void pil_reference(const char *out, int n) {
    const char *root = getenv("CVAE_SOURCE_ROOT");
    cr_assert_not_null(root, "CVAE_SOURCE_ROOT is not set (meson test sets it)");
    char script[4200], count[16];
    snprintf(script, sizeof script, "%s/tests/pil_reference.py", root);
    snprintf(count, sizeof count, "%d", n);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/usr/bin/python3", "python3", script, out, count, (char *)NULL);
        _exit(127);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s failed (exit %d): it needs "
              "python3-pil and python3-numpy (apt-get install python3-pil python3-numpy)", script,
              WEXITSTATUS(status));
}

/* The mean absolute difference, in grey levels, of cvae's decode of each JPEG to t from
 * the reference array (uint8 or float32, n images of t's shape). */
static double mean_diff(const char *dir, int n, const cv_image_target *t, const char *ref) {
    cv_npy_array a;
    cv_err err;
    cr_assert_eq(cv_npy_read(test_path_in(dir, ref), &a, &err), CV_OK, "%s", err.msg);
    const size_t D = (size_t)t->height * t->width * t->channels;
    cr_assert_eq(a.bytes / cv_npy_item_size(a.dtype), (size_t)n * D, "%s has another shape", ref);
    uint8_t *out = malloc(D);
    double sum = 0;
    for (int i = 0; i < n; i++) {
        char name[16];
        snprintf(name, sizeof name, "%03d.jpg", i);
        size_t len;
        uint8_t *file = test_read_file(test_path_in(dir, name), &len);
        cr_assert_eq(decode(file, len, t, out, &err), CV_OK, "%s", err.msg);
        for (size_t j = 0; j < D; j++) {
            const double r = a.dtype == CV_NPY_F32 ? ((const float *)a.data)[i * D + j]
                                                   : ((const uint8_t *)a.data)[i * D + j];
            sum += fabs(out[j] - r);
        }
        free(file);
    }
    free(out);
    cv_npy_free(&a);
    return sum / ((double)n * D);
}

/* CelebA-sized JPEGs decoded and shrunk (to 64 x 64 from the centred square, and to half
 * size in colour and in grey) come within a grey level, on average, of PIL's decode and
 * an exact area average of it. */
Test(image, jpeg_decode_and_resize_match_pil) {
    char *dir = test_tmpdir();
    const int n = 24;
    pil_reference(dir, n);
    const cv_image_target square = {64, 64, 3, true, true, true, "000.jpg"};
    const cv_image_target half = {109, 89, 3, true, false, true, "000.jpg"};
    const cv_image_target grey = {109, 89, 1, true, false, true, "000.jpg"};
    const double d_square = mean_diff(dir, n, &square, "ref_area.npy");
    const double d_half = mean_diff(dir, n, &half, "ref_half.npy");
    const double d_grey = mean_diff(dir, n, &grey, "ref_grey.npy");
    cr_log_info("mean |cvae - PIL|: %.3f (64 x 64 square), %.3f (half, RGB), %.3f (half, grey)",
                d_square, d_half, d_grey);
    cr_assert(d_square < 1.0, "64 x 64 centred square off PIL's by %g grey levels", d_square);
    cr_assert(d_half < 1.0, "half size off PIL's reduce(2) by %g grey levels", d_half);
    cr_assert(d_grey < 1.0, "grey half size off PIL's by %g grey levels", d_grey);
    test_rmtree(dir);
    free(dir);
}
