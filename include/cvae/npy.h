/* npy.h: NumPy .npy arrays, read strictly and written as NumPy writes them.
 *
 * Read: versions 1.0, 2.0 and 3.0 of the format, C order, little-endian (or byte) integer
 * dtypes and float32, 1 to 4 dimensions of 1 to INT32_MAX each. The header dict is parsed
 * as the exact Python literal NumPy writes, and the shape and the file size are validated
 * before any allocation the file does not justify. Written: version 1.0, the data aligned
 * to 64 bytes, through a temporary file that is renamed into place.
 */
#ifndef CVAE_NPY_H
#define CVAE_NPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cvae/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CV_NPY_MAX_DIMS 4
/* cv_npy_header never needs a longer buffer than this */
#define CV_NPY_HEADER_MAX 256

typedef enum {
    CV_NPY_U8, CV_NPY_I8, CV_NPY_U16, CV_NPY_I16, CV_NPY_U32, CV_NPY_I32,
    CV_NPY_U64, CV_NPY_I64, CV_NPY_F32,
} cv_npy_dtype;               /* descr '|u1' '|i1' '<u2' '<i2' '<u4' '<i4' '<u8' '<i8' '<f4' */

typedef struct {
    cv_npy_dtype dtype;
    int ndims;                         /* 1..CV_NPY_MAX_DIMS */
    int64_t dims[CV_NPY_MAX_DIMS];
    void *data;                        /* C order, little-endian as in the file: malloc'd,
                                          or inside mapping */
    size_t bytes;                      /* product of dims * item size */
    void *mapping;                     /* cv_npy_map: the whole file, mapped private (copy
                                          on write); NULL when data is malloc'd */
    size_t mapping_bytes;
} cv_npy_array;

size_t cv_npy_item_size(cv_npy_dtype t);
const char *cv_npy_descr(cv_npy_dtype t);      /* "|u1", "<f4", ... */
bool cv_npy_is_integer(cv_npy_dtype t);

/* true when the file at path starts with the NumPy magic "\x93NUMPY", or is a non-empty
 * start of it (a truncated .npy, for cv_npy_read to say so); false if unreadable */
bool cv_npy_sniff(const char *path);

/* On failure *out is all zero (data NULL) and err holds one line naming path and the
 * reason: CV_ERR_FORMAT for a malformed or unsupported file, CV_ERR_IO when it cannot be
 * opened or read, CV_ERR_NOMEM. cv_npy_free releases a read array (and accepts a zeroed
 * one). */
cv_status cv_npy_read(const char *path, cv_npy_array *out, cv_err *err);
/* cv_npy_read's checks, then the file memory-mapped instead of read (private, copy on
 * write: pages stay shared with the page cache, and with every other process mapping the
 * file, until written). A payload not aligned to its item size is read instead. */
cv_status cv_npy_map(const char *path, cv_npy_array *out, cv_err *err);
void cv_npy_free(cv_npy_array *a);

/* The .npy 1.0 header for an array of this dtype and shape, padded with spaces and a final
 * '\n' so the data starts at a multiple of 64 bytes; returns its length, 0 if buf (size
 * bytes) is too small. For writers that stream the payload after it. */
size_t cv_npy_header(char *buf, size_t size, cv_npy_dtype t, int ndims, const int64_t *dims);

/* The whole array to path through cv_outfile (temp file, fsync, rename): never half-written.
 * data is little-endian (the host order on every machine cvae builds for). Dimensions
 * cv_npy_read would refuse (0, over INT32_MAX, a payload over its bound) are CV_ERR_USAGE
 * and write nothing. */
cv_status cv_npy_write(const char *path, cv_npy_dtype t, int ndims, const int64_t *dims,
                       const void *data, cv_err *err);

#ifdef __cplusplus
}
#endif

#endif
