/* png.h: 8-bit PNG pictures through libpng (grey, grey + alpha, RGB or RGBA for 1 to 4
 * channels): files written whole or not at all, or PNG bytes in memory. */
#ifndef CVAE_PNG_H
#define CVAE_PNG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cvae/status.h"

#define CV_PNG_MAX_CHANNELS 4

/* pixels (height, width, channels), row-major with the channels interleaved. */
cv_status cv_png_write(const char *path, const uint8_t *pixels, int height, int width,
                       int channels, cv_err *err);

/* A grid of tiles (rows x cols tiles of h x w pixels of `channels` values each, tile t at
 * tiles + t*h*w*channels, row major over the grid) with a `gap`-pixel mid-grey border
 * (opaque for RGBA). */
cv_status cv_png_write_grid(const char *path, const uint8_t *tiles, int rows, int cols, int h,
                            int w, int channels, int gap, cv_err *err);

/* The same grid as PNG bytes in memory: *png (malloc'd, *bytes long). */
cv_status cv_png_encode_grid(const uint8_t *tiles, int rows, int cols, int h, int w,
                             int channels, int gap, uint8_t **png, size_t *bytes, cv_err *err);

#endif
