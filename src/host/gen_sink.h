/* gen_sink.h: where generated images go, one writer per on-disk format (internal). */
#ifndef CVAE_GEN_SINK_H
#define CVAE_GEN_SINK_H

#include "cvae/generate.h"

typedef struct gen_sink gen_sink;

/* Opens the files of a data set of n images (h x w) in the folder dir. */
cv_status gen_sink_open(gen_sink **out, cv_gen_format format, const char *dir, long long n,
                        int h, int w, const int *classes, int n_classes, cv_err *err);
/* Appends images [first, first + rows): pixels (rows, h*w), labels (rows). */
cv_status gen_sink_write(gen_sink *s, long long first, int rows, const uint8_t *pixels,
                         const uint8_t *labels, cv_err *err);
/* Flushes and fsyncs everything; frees the sink whatever happens. */
cv_status gen_sink_close(gen_sink *s, cv_err *err);

/* The relative name of file k of a finished data set, false past the last one. */
bool gen_sink_file_name(cv_gen_format format, long long k, long long n, const int *classes,
                        int n_classes, char *name, size_t size);

#endif
