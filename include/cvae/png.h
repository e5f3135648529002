/* png.h: 8-bit grayscale PNG files through libpng, written whole or not at all. */
#ifndef CVAE_PNG_H
#define CVAE_PNG_H

#include <stdint.h>

#include "cvae/status.h"

/* pixels (height, width), row-major. */
cv_status cv_png_write_gray(const char *path, const uint8_t *pixels, int height, int width,
                            cv_err *err);

/* A grid of tiles (rows x cols tiles of h x w pixels each, tile t at tiles + t*h*w, row
 * major over the grid) with a `gap`-pixel mid-grey border. */
cv_status cv_png_write_grid(const char *path, const uint8_t *tiles, int rows, int cols, int h,
                            int w, int gap, cv_err *err);

#endif
