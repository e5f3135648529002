/* sha256.h: SHA-256 (FIPS 180-4) for the generation manifest; none of cvae's
 * dependencies provides it. */
#ifndef CVAE_SHA256_H
#define CVAE_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "cvae/status.h"

typedef struct {
    uint32_t h[8];
    uint64_t bytes;
    uint8_t block[64];
    size_t used;
} cv_sha256;

void cv_sha256_init(cv_sha256 *s);
void cv_sha256_update(cv_sha256 *s, const void *data, size_t n);
/* hex: 65 bytes, the digest as lowercase hex and a NUL */
void cv_sha256_hex(cv_sha256 *s, char hex[65]);

/* The digest of a whole file, read in chunks. */
cv_status cv_sha256_file(const char *path, char hex[65], uint64_t *size, cv_err *err);

#endif
