/* rng.c: host-side draws from the Philox streams of rng.h. */
#include <stddef.h>

#include "cv_math.h"
#include "cvae/rng.h"

/* Sequential uint32 values of one stream. */
typedef struct {
    uint64_t seed, stream, block;
    cv_u32x4 buf;
    int used;
} philox_reader;

static uint32_t next_u32(philox_reader *r) {
    if (r->used == 4) {
        r->buf = cv_philox_block(r->seed, r->stream, r->block++);
        r->used = 0;
    }
    return r->buf.v[r->used++];
}

void cv_shuffle(int32_t *perm, int n, uint64_t seed, uint64_t stream) {
    philox_reader r = {seed, stream, 0, {{0, 0, 0, 0}}, 4};
    for (int i = 0; i < n; i++) perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        /* uniform j in [0, i] by rejection, so no index is favoured */
        uint32_t bound = (uint32_t)i + 1;
        uint32_t limit = UINT32_MAX - UINT32_MAX % bound;
        uint32_t u;
        do u = next_u32(&r); while (u >= limit);
        int j = (int)(u % bound);
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

void cv_uniform_fill(float *out, size_t n, uint64_t seed, uint64_t stream) {
    for (size_t i = 0; i < n; i++) out[i] = cv_philox_uniform(seed, stream, i);
}

void cv_normal_fill_from(float *out, size_t n, uint64_t seed, uint64_t stream, uint64_t first) {
    /* counter-based: every element is independent, so threads can split them */
#pragma omp parallel for if (n > 1024) schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = cv_philox_normal(seed, stream, first + i);
}

void cv_normal_fill(float *out, size_t n, uint64_t seed, uint64_t stream) {
    cv_normal_fill_from(out, n, seed, stream, 0);
}
