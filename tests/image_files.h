/* image_files.h: PNG and JPEG files of every kind the image tests need, written with
 * libpng and libjpeg directly (so the decoder is not tested against itself). */
#ifndef CVAE_TEST_IMAGE_FILES_H
#define CVAE_TEST_IMAGE_FILES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A PNG of libpng's colour type and bit depth (samples: (h, w, channels of the type) of
 * 8 or 16 bits, big-endian for 16; for a palette, samples are indices into palette, a
 * (n_palette, 3) array, and trns (n_palette alphas) may be NULL). */
typedef struct {
    int color_type, bit_depth;
    bool interlace;
    const uint8_t *palette;
    int n_palette;
    const uint8_t *trns;
} test_png_kind;

/* The PNG's bytes (malloc'd) in *size; rows are packed for bit depths below 8. */
uint8_t *test_png_bytes(const test_png_kind *k, const uint8_t *samples, int h, int w,
                        size_t *size);

/* A JPEG of the samples (h, w, channels: 1 grey, 3 RGB, 4 CMYK as Adobe stores it) at
 * quality q, its bytes malloc'd in *size. */
uint8_t *test_jpeg_bytes(const uint8_t *samples, int h, int w, int channels, int q, size_t *size);

/* Smooth random colour images with some edges (a photo's statistics), (h, w, 3). */
void test_photo(uint64_t seed, int h, int w, uint8_t *rgb);

#endif
