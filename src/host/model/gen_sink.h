/* gen_sink.h: where generated images go, one writer per on-disk format (internal). */
#ifndef CVAE_GEN_SINK_H
#define CVAE_GEN_SINK_H

#include "cvae/generate.h"

typedef struct gen_sink gen_sink;

/* What a generated data set holds; its files' names follow from it. */
typedef struct {
    cv_gen_format format;
    long long n; /* images */
    int h, w, channels;
    int cond_width;                /* K of condition vectors; 0 for labels */
    const cv_gen_conditions *cond; /* image i has condition i % R of it */
    bool decoded;                  /* also decoded.npy: float32 means (N, H, W[, C]) */
    char *const *class_names;      /* the png folders' names (NULL: class numbers) */
} gen_layout;

/* Opens the files of a data set in the folder dir. */
cv_status gen_sink_open(gen_sink **out, const gen_layout *layout, const char *dir, cv_err *err);
/* Appends images [first, first + rows): pixels (rows, h*w*channels), labels (rows) or
 * condition vectors (rows, K), and with decoded.npy their means (rows, h*w*channels), as
 * the layout says. */
cv_status gen_sink_write(gen_sink *s, long long first, int rows, const uint8_t *pixels,
                         const uint8_t *labels, const float *conditions, const float *means,
                         cv_err *err);
/* Flushes and fsyncs everything; frees the sink whatever happens. */
cv_status gen_sink_close(gen_sink *s, cv_err *err);

/* The relative name of file k of a finished data set, false past the last one. */
bool gen_sink_file_name(const gen_layout *layout, long long k, char *name, size_t size);

#endif
